"""One attack job: load a collection and a victim, build a surrogate, sample targets, attack.

:func:`run_attack_job` takes an :class:`AttackConfig` (the one definition of the job's
parameters, from which the ``ranklab attack`` flags and the sweep's checks derive). In order:

1. loads the collection and the victim ranker; first-stage candidates (BM25 top-``k``);
2. draws a seeded sample of ``queries`` attack queries (queries with >= 2 candidates) and,
   disjoint from them, ``surrogate_queries`` attacker queries for imitation;
3. the victim's original run on the attack queries: ``victim.transform(candidates)`` (the
   experiment owner's scores; not counted as attacker queries);
4. the surrogate: ``"imitation"`` trains a cross-encoder on the victim's rankings of the attacker
   queries (counted victim queries, reported as ``imitation_victim_queries``), cached on disk
   under ``$RANKLAB_CACHE/surrogates/<config hash>`` (default ``~/.cache/ranklab``) so reruns
   reuse it; ``"victim"`` uses the victim itself (white-box; it must be differentiable);
   anything else is a ranker spec/path (``load_ranker``);
5. samples targets (``easy5`` | ``hard5`` | ``mixture`` | ``ranks:R1,R2,...``), attacks each
   through an :class:`~rankers.oracle.Oracle` (access ``rank`` for the lab's attack, ``score``
   for TextAttack), appends each result row to ``out`` (JSONL) as soon as it is ready, and
   returns ``(results_frame, summary)``.

Bad targets (empty document, no substitutable word) are recorded as unchanged rows with their
``error`` message rather than stopping the job.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import pandas as pd

from ranklab.config import ConfigError, RankingConfig, fingerprint, param

METHODS = ("word-substitution", "textattack", "trigger", "query-plus", "keyword-stuffing",
           "random-trigger")
INSERTIONS = ("query-plus", "keyword-stuffing", "random-trigger")
WS_SEARCHES = ("greedy", "beam", "prada")
TA_SEARCHES = ("greedy-wir", "greedy-wir-delete")  # and "greedy", shared with word substitution
_SURROGATE_CACHE_VERSION = 4  # 2: early stopping, new defaults; 3: batch size; 4: glove vocabulary


def cache_dir() -> Path:
    """``$RANKLAB_CACHE`` or ``~/.cache/ranklab``."""
    return Path(os.environ.get("RANKLAB_CACHE") or Path.home() / ".cache" / "ranklab").expanduser()


def _parse_targets(targets: str) -> tuple[str, list[int] | None]:
    if targets.startswith("ranks:"):
        try:
            ranks = [int(x) for x in targets[len("ranks:"):].split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"targets {targets!r}: write explicit ranks as 'ranks:51,75,100'") from None
        return "ranks", ranks
    return targets, None


def imitation_surrogate(victim, victim_spec: str, col, qids: list[str], *, recipe: str,
                        k: int | None, base: str, loss: str, epochs: int, seed: int,
                        tail: int = 3, first_stage: str, candidates_k: int,
                        max_pairs: int | None, lr: float, max_length: int,
                        batch_size: int | None = None, progress: bool = True,
                        cache: bool = True):
    """Train (or load from the disk cache) an imitation surrogate; returns ``(model, info)``."""
    from rankers.imitation import train_surrogate
    from rankers.loading import load_ranker
    from rankers.oracle import Oracle
    from rankers.training import save_cross_encoder

    config = {"version": _SURROGATE_CACHE_VERSION, "victim": victim_spec,
              "victim_name": victim.name, "dataset": col.name, "dataset_fp": col.fingerprint,
              "qids": sorted(qids), "recipe": recipe, "k": k, "tail": tail, "base": base,
              "loss": loss,
              "epochs": epochs, "seed": seed, "first_stage": first_stage,
              "candidates_k": candidates_k, "max_pairs": max_pairs, "lr": lr,
              "max_length": max_length, "batch_size": batch_size}
    key = fingerprint(config)
    path = cache_dir() / "surrogates" / key
    meta = path / "ranklab_training.json"
    if cache and meta.is_file():
        try:
            model = load_ranker(str(path))
            info = json.loads(meta.read_text()).get("imitation_info", {})
        except Exception as e:  # truncated weights, broken JSON: rebuild, never fail the job
            warnings.warn(f"the cached surrogate {path} is unreadable ({type(e).__name__}: {e}); "
                          "training it again", stacklevel=2)
            shutil.rmtree(path, ignore_errors=True)
        else:
            model.max_length = min(model.max_length, int(max_length))
            info = {**info, "cached": True, "path": str(path)}
            model.imitation_info = info
            return model, info
    oracle = Oracle(victim, access="rank")
    model = train_surrogate(oracle, col, qids, recipe=recipe, base=base, loss=loss, epochs=epochs,
                            seed=seed, k=k, tail=tail, first_stage=first_stage,
                            candidates_k=candidates_k,
                            max_pairs=max_pairs, lr=lr, max_length=max_length,
                            batch_size=batch_size, progress=progress)
    info = {**model.imitation_info, "cached": False, "path": str(path), "config_hash": key}
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=path.parent))
        try:
            meta_obj = {"config": config, "imitation_info": info}
            if hasattr(model, "save"):  # a bag-of-embeddings surrogate writes its own folder
                model.save(tmp, meta_obj)
            else:
                save_cross_encoder(model, tmp, meta_obj)
            try:
                os.rename(tmp, path)
            except OSError:
                pass  # another job cached the same surrogate first
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    model.imitation_info = info
    return model, info


def _per_base(key: str) -> str:
    from rankers.imitation import IMITATION_DEFAULTS

    return ", ".join(f"{v[key]} ({k})" for k, v in IMITATION_DEFAULTS.items())


@dataclasses.dataclass(frozen=True)
class AttackConfig(RankingConfig):
    """An attack job: sample target documents from the victim's lists and attack each one.

    ``ranker`` is the victim; ``queries`` the number of attack queries (a seeded sample of the
    queries with >= 2 candidates); ``k`` the length of the list a target competes in.
    """

    kind = "attack"
    queries: int | None = param(20, "attack queries (seeded sample)", unit="queries", min=1)
    method: str = param("word-substitution", "attack: word substitution (the lab's search), "
                        "textattack (the same problem through TextAttack), trigger (PAT-style "
                        "imitation triggers inserted into the target), or an insertion baseline: "
                        "query-plus, keyword-stuffing, random-trigger", choices=METHODS)
    targets: str = param("easy5", "target protocol: easy5 | hard5 | mixture | ranks:R1,R2,... "
                         "(1-based ranks)")
    threat: str = param("wordnet+glove", "threat-model spec (attacks.threat.load_threat_model)")
    surrogate: str = param("imitation", "the attacker's model: imitation (trained on the "
                           "victim's rankings) | victim (white-box) | a ranker spec or path")
    surrogate_base: str | None = param(None, "imitation surrogate: glove (a bag-of-embeddings "
                                       "bi-encoder from GloVe, no weights shared with any "
                                       "victim) or the encoder a cross-encoder starts from "
                                       "(minilm, a folder or hub id); default: glove for "
                                       "trigger, minilm otherwise")
    surrogate_queries: int | None = param(None, "attacker queries for imitation, disjoint from "
                                          "the attack queries (victim rankings are counted); "
                                          "default per base: " + _per_base("queries"),
                                          unit="queries", min=1)
    surrogate_recipe: str = param("top25_plus_tail", "imitation pair sampling",
                                  choices=("topk_all_pairs", "top25_plus_tail"))
    surrogate_k: int | None = param(None, "imitation: top-k of the victim's ranking paired; "
                                    "default per base: " + _per_base("k"),
                                    unit="documents", min=2)
    surrogate_tail: int | None = param(None, "imitation (top25_plus_tail): tail negatives per "
                                       "document; default per base: " + _per_base("tail"),
                                       unit="documents", min=0)
    surrogate_candidates: int | None = param(None, "imitation: first-stage candidates the victim "
                                             "ranks per attacker query (counted victim queries); "
                                             "default per base: " + _per_base("candidates_k"),
                                             unit="documents", min=2)
    surrogate_loss: str = param("ranknet", "imitation loss", choices=("ranknet", "hinge"))
    surrogate_epochs: int | None = param(None, "imitation training epochs; default per base: "
                                         + _per_base("epochs"), min=1)
    surrogate_max_pairs: int | None = param(None, "cap on imitation training groups; default per "
                                            "base: " + _per_base("max_pairs"),
                                            unit="groups", min=1)
    surrogate_lr: float | None = param(None, "imitation learning rate; default per base: "
                                       + _per_base("lr"), gt=0)
    surrogate_batch_size: int | None = param(None, "imitation groups per step; default per base: "
                                             + _per_base("batch_size"), min=1)
    surrogate_max_length: int | None = param(None, "imitation input length (word pieces; words "
                                             "for glove); default per base: "
                                             + _per_base("max_length"), unit="tokens", min=16)
    max_words: int = param(10, "most words changed per document", unit="words", min=1)
    max_pp: float | None = param(0.1, "most words changed as a share of the document's words "
                                 "(no cap when not given)", unit="fraction, 0-1", gt=0, max=1)
    budget: int | None = param(None, "victim queries per target (unlimited when not given)",
                               unit="queries", min=1)
    position: str = param("start", "insertion attacks: where the inserted text goes (sentence: a "
                          "random sentence boundary)", choices=("start", "end", "sentence"))
    trigger_len: int = param(6, "trigger and random-trigger: words inserted; keyword-stuffing: "
                             "the budget of repeated query terms", unit="words", min=1)
    beams: int = param(10, "trigger: beam width of the left-to-right search", min=1)
    trigger_candidates: int = param(128, "trigger: vocabulary words tried per position",
                                    unit="words", min=1)
    relevance: str = param("passage", "trigger: score triggers inside the target (passage) or "
                           "alone (query, as the reference code)", choices=("passage", "query"))
    adapt_epochs: int | None = param(None, "trigger: epochs of list adaptation (a copy of the "
                                     "surrogate fine-tuned on the victim's ordering of each "
                                     "attacked list, paid by the anchor look-up; 0: off); "
                                     "default: 3 for a glove imitation surrogate, else 0",
                                     min=0)
    victim_checks: int = param(5, "trigger: final triggers shown to the victim per target "
                               "(counted; 0 chooses on the surrogate only)", unit="queries", min=0)
    lm: str = param("ngram", "trigger fluency model: ngram (Kneser-Ney on the collection), none, "
                    "or causal:PATH (a causal LM folder)")
    competitors_k: int = param(99, "competitors in the surrogate's hinge loss (word substitution)",
                               unit="documents", min=1)
    goal: str | None = param(None, "improve (stop at any rank gain) | topk (stop at rank <= "
                             "goal_k) | max (largest gain within the budgets); default: max for "
                             "greedy/beam, every important word for prada, improve for textattack",
                             choices=("improve", "topk", "max"))
    goal_k: int = param(10, "rank the topk goal must reach (1-based)", min=1)
    search: str | None = param(None, "search strategy. word-substitution: greedy (exact lazy "
                               "greedy, default) | beam | prada (the faithful PRADA loop); "
                               "textattack: greedy-wir (default) | greedy-wir-delete | greedy",
                               choices=WS_SEARCHES + TA_SEARCHES)
    rescore: int | None = param(30, "greedy/beam: candidates re-scored per step by last-known "
                                "gain (all when not given: full exact greedy)", min=1)
    beam_width: int = param(3, "beam: documents kept per step", min=1)
    n_candidates: int = param(50, "neighbours considered per word", min=1)
    max_screen: int | None = param(None, "greedy/beam: most candidates screened per target (all "
                                   "when not given)", min=1)
    tie_rule: str = param("pessimistic", "ties with other documents: pessimistic ranks the target "
                          "below them", choices=("pessimistic", "optimistic"))
    similarity: bool = param(True, "compute the sentence-embedding similarity of original and "
                             "adversarial documents (loads MiniLM)")
    agreement: bool = param(True, "report the surrogate's agreement with the victim on the attack "
                            "queries (overlap@10, RBO p=0.7)")

    def imitation_options(self) -> dict:
        """The keyword arguments of :func:`imitation_surrogate` this config sets (recipe, sizes,
        learning rate, ...), so scripts train the same surrogate as the job."""
        from rankers.imitation import imitation_defaults

        base = self.imitation_base()
        d = imitation_defaults(base)

        def pick(value, key):
            return d[key] if value is None else value

        return dict(recipe=self.surrogate_recipe, k=pick(self.surrogate_k, "k"),
                    tail=pick(self.surrogate_tail, "tail"), base=base,
                    loss=self.surrogate_loss, epochs=pick(self.surrogate_epochs, "epochs"),
                    seed=self.seed, first_stage=self.first_stage,
                    candidates_k=pick(self.surrogate_candidates, "candidates_k"),
                    max_pairs=pick(self.surrogate_max_pairs, "max_pairs"),
                    lr=pick(self.surrogate_lr, "lr"),
                    batch_size=pick(self.surrogate_batch_size, "batch_size"),
                    max_length=pick(self.surrogate_max_length, "max_length"))

    def imitation_queries(self) -> int:
        """Attacker queries for imitation (``surrogate_queries`` or its base's default)."""
        from rankers.imitation import imitation_defaults

        return int(self.surrogate_queries or imitation_defaults(self.imitation_base())["queries"])

    def trigger_adapt_epochs(self) -> int:
        """``adapt_epochs``, or its default: 3 with a glove imitation surrogate, else 0."""
        if self.adapt_epochs is not None:
            return int(self.adapt_epochs)
        return 3 if self.surrogate == "imitation" and self.imitation_base() == "glove" else 0

    def imitation_base(self) -> str:
        """``surrogate_base``, or its default for the method (glove for trigger, else minilm)."""
        return self.surrogate_base or ("glove" if self.method == "trigger" else "minilm")

    def check(self) -> None:
        valid = {"word-substitution": WS_SEARCHES,
                 "textattack": TA_SEARCHES + ("greedy",)}.get(self.method, ())
        if self.search is not None and self.search not in valid:
            raise ConfigError(f"search (--search) {self.search!r} is not a {self.method} search; "
                              f"use one of {list(valid)}")
        if self.method == "textattack" and self.goal == "max":
            raise ConfigError("goal (--goal) max is not available with method (--method) "
                              "textattack; use improve or topk")


def run_attack_job(config: AttackConfig | None = None, *, out: str | None = None,
                   progress: bool = True, **params) -> tuple[pd.DataFrame, dict]:
    """Run one attack job; returns ``(results_frame, summary_dict)`` (see the module doc).

    ``config`` is an :class:`AttackConfig` (its fields document every parameter); keyword
    ``params`` build or override one (``run_attack_job(ranker="bm25", queries=5)``). ``out``: a
    JSONL file that gets one row per target, appended as each target finishes.
    """
    from attacks.base import sample_targets
    from attacks.metrics import summarize
    from attacks.threat import load_threat_model
    from rankers.oracle import Oracle
    from ranklab.collections import load_collection

    cfg = config if config is not None else AttackConfig.from_params(params)
    if params and config is not None:
        cfg = cfg.replace(**params)
    t0 = time.perf_counter()
    col = load_collection(cfg.dataset)
    victim = col.ranker(cfg.ranker, **cfg.ranker_kwargs())
    cands = col.candidates(cfg.first_stage, k=cfg.k)
    attack_qids, rest = col.split_queries(cands, cfg.queries, seed=cfg.seed)
    n_usable = len(attack_qids) + len(rest)
    if len(attack_qids) < cfg.queries:
        warnings.warn(f"{col.name} has {n_usable} usable queries; attacking all of them",
                      stacklevel=2)
    run = victim.transform(cands[cands["qid"].isin(attack_qids)])

    info: dict = {}
    sur = None
    search = cfg.search or {"word-substitution": "greedy",
                            "textattack": "greedy-wir"}.get(cfg.method)
    if cfg.method == "textattack" or cfg.method in INSERTIONS:
        pass  # black-box search on the victim / a fixed insertion: no surrogate
    elif cfg.surrogate == "imitation":
        sur_qids = sorted(rest[: cfg.imitation_queries()])
        if not sur_qids:
            raise ValueError(
                f"no queries left for imitation: {col.name} has {n_usable} usable queries "
                f"and {len(attack_qids)} are attacked. Lower queries, or use "
                "surrogate='victim' (white-box) or a surrogate model path")
        if len(sur_qids) < cfg.imitation_queries():
            warnings.warn(f"imitation uses only {len(sur_qids)} attacker queries "
                          f"({cfg.imitation_queries()} asked)", stacklevel=2)
        sur, info = imitation_surrogate(
            victim, cfg.ranker, col, sur_qids, **cfg.imitation_options(), progress=progress)
    elif cfg.surrogate == "victim":
        if search == "prada" and not getattr(victim, "differentiable", False):
            raise ValueError(f"search 'prada' with surrogate 'victim' needs a differentiable "
                             f"victim; {cfg.ranker!r} is not. Use --search greedy (white-box "
                             "search through the oracle), an imitation surrogate or a model path")
        sur = victim
    else:
        from rankers import load_ranker

        sur = load_ranker(cfg.surrogate)

    threat_model = load_threat_model(cfg.threat)
    protocol, ranks = _parse_targets(cfg.targets)
    tsamp = sample_targets(run, protocol, seed=cfg.seed, ranks=ranks)

    if cfg.method == "word-substitution":
        from attacks.word_substitution import WordSubstitutionAttack

        # white-box (surrogate 'victim'): greedy/beam search on the victim's scores through the
        # oracle, every scored document counted; prada takes the victim's gradients instead
        white = cfg.surrogate == "victim" and search != "prada"
        attack = WordSubstitutionAttack(
            None if white else sur, threat_model, search=search, white_box=white,
            max_words=cfg.max_words, max_pp=cfg.max_pp, n_candidates=cfg.n_candidates,
            rescore=cfg.rescore, beam_width=cfg.beam_width, max_screen=cfg.max_screen,
            competitors_k=cfg.competitors_k, query_budget=cfg.budget, tie_rule=cfg.tie_rule,
            goal=cfg.goal, goal_k=cfg.goal_k, seed=cfg.seed)
        oracle = Oracle(victim, access="score" if white else "rank", tie_rule=cfg.tie_rule)
    elif cfg.method == "trigger":
        from attacks.imitation_trigger import TriggerAttack

        attack = TriggerAttack(sur, lm=cfg.lm, trigger_len=cfg.trigger_len, beams=cfg.beams,
                               candidates=cfg.trigger_candidates, position=cfg.position,
                               relevance=cfg.relevance, victim_checks=cfg.victim_checks,
                               adapt_epochs=cfg.trigger_adapt_epochs(),
                               adapt_lr=cfg.imitation_options()["lr"],
                               tie_rule=cfg.tie_rule, seed=cfg.seed)
        oracle = Oracle(victim, access="rank", tie_rule=cfg.tie_rule)
    elif cfg.method in INSERTIONS:
        from attacks.insertion import InsertionAttack

        attack = InsertionAttack(cfg.method, position=cfg.position,
                                 max_tokens=cfg.trigger_len if cfg.method == "keyword-stuffing"
                                 else None, trigger_len=cfg.trigger_len, tie_rule=cfg.tie_rule,
                                 seed=cfg.seed)
        oracle = Oracle(victim, access="rank", tie_rule=cfg.tie_rule)
    else:
        from attacks.textattack_backend import TextAttackWordSubstitution

        attack = TextAttackWordSubstitution(threat_model, max_words=cfg.max_words, max_pp=cfg.max_pp,
                                            query_budget=cfg.budget, search=search,
                                            goal=cfg.goal or "improve", goal_k=cfg.goal_k,
                                            tie_rule=cfg.tie_rule, seed=cfg.seed)
        oracle = Oracle(victim, access="score", tie_rule=cfg.tie_rule)

    job_id = cfg.job_id()
    writer = None
    if out is not None:
        out_path = Path(out).expanduser()
        out_path.parent.mkdir(parents=True, exist_ok=True)

        def writer(res):
            row = {"job": job_id, "ranker": cfg.ranker, "dataset": col.name, **res.to_row()}
            with open(out_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, default=str) + "\n")

    frame = attack.run(oracle, col, tsamp, run=run, progress=progress, errors="record",
                       on_result=writer)
    extra = {}
    if cfg.method == "trigger" or cfg.method in INSERTIONS:
        # detectability next to success: fluency (n-gram perplexity ratio, span perplexity)
        # and spamicity (TF-IDF overlap of the inserted text with the query)
        from attacks.lm import NGramLM
        from attacks.metrics import TfIdf

        extra = {"fluency": NGramLM.from_collection(col), "tfidf": TfIdf.from_collection(col)}
    summary = summarize(frame, similarity=cfg.similarity, **extra)
    summary.update({"job": job_id, "config": cfg.to_params(), "command": cfg.command(), "victim": victim.name,
                    "surrogate": getattr(sur, "name", None) if cfg.method == "word-substitution"
                    else None, "threat_name": getattr(threat_model, "name", str(cfg.threat)),
                    "threat_fingerprint": threat_model.fingerprint,
                    "attack_qids": attack_qids, "victim_queries_attack": int(oracle.queries_used),
                    "wall_s_job": round(time.perf_counter() - t0, 2)})
    if info:
        summary["imitation"] = {k_: v for k_, v in info.items() if k_ != "qids"}
        summary["imitation_victim_queries"] = int(info.get("victim_queries", 0))
        if cfg.agreement and cfg.method == "word-substitution":
            from rankers.imitation import run_agreement

            summary["agreement"] = run_agreement(run, sur.score)
    return frame, summary

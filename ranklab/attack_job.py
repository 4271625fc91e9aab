"""One attack job: load a collection and a victim, build a surrogate, sample targets, attack.

:func:`run_attack_job` takes plain (JSON-friendly) arguments so sweeps and the ``ranklab attack``
command can call it directly. What it does, in order:

1. loads the collection and the victim ranker; first-stage candidates (BM25 top-``k``);
2. draws a seeded sample of ``n_queries`` attack queries (queries with >= 2 candidates) and,
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

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

METHODS = ("word-substitution", "textattack")
_SURROGATE_CACHE_VERSION = 1


def cache_dir() -> Path:
    """``$RANKLAB_CACHE`` or ``~/.cache/ranklab``."""
    return Path(os.environ.get("RANKLAB_CACHE") or Path.home() / ".cache" / "ranklab").expanduser()


def config_hash(config: dict) -> str:
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _load_victim(spec: str, col):
    from rankers import load_ranker

    if spec == "bm25":
        return col.bm25()
    return load_ranker(spec)


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
                        tail: int = 4,
                        first_stage: str, candidates_k: int, max_pairs: int | None, lr: float,
                        max_length: int, progress: bool = True, cache: bool = True):
    """Train (or load from the disk cache) an imitation surrogate; returns ``(model, info)``."""
    from rankers.encoders import CrossEncoder
    from rankers.imitation import train_surrogate
    from rankers.oracle import Oracle
    from rankers.training import save_cross_encoder

    config = {"version": _SURROGATE_CACHE_VERSION, "victim": victim_spec,
              "victim_name": victim.name, "dataset": col.name, "dataset_fp": col.fingerprint,
              "qids": sorted(qids), "recipe": recipe, "k": k, "tail": tail, "base": base,
              "loss": loss,
              "epochs": epochs, "seed": seed, "first_stage": first_stage,
              "candidates_k": candidates_k, "max_pairs": max_pairs, "lr": lr,
              "max_length": max_length}
    key = config_hash(config)
    path = cache_dir() / "surrogates" / key
    meta = path / "ranklab_training.json"
    if cache and meta.is_file():
        model = CrossEncoder(str(path))
        model.max_length = min(model.max_length, int(max_length))
        info = json.loads(meta.read_text()).get("imitation_info", {})
        info = {**info, "cached": True, "path": str(path)}
        model.imitation_info = info
        return model, info
    oracle = Oracle(victim, access="rank")
    model = train_surrogate(oracle, col, qids, recipe=recipe, base=base, loss=loss, epochs=epochs,
                            seed=seed, k=k, tail=tail, first_stage=first_stage,
                            candidates_k=candidates_k,
                            max_pairs=max_pairs, lr=lr, max_length=max_length, progress=progress)
    info = {**model.imitation_info, "cached": False, "path": str(path), "config_hash": key}
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=path.parent))
        try:
            save_cross_encoder(model, tmp, {"config": config, "imitation_info": info})
            try:
                os.rename(tmp, path)
            except OSError:
                pass  # another job cached the same surrogate first
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    model.imitation_info = info
    return model, info


def run_attack_job(ranker: str = "minilm", dataset: str = "demo",
                   method: str = "word-substitution", targets: str = "easy5",
                   n_queries: int = 20, seed: int = 0, threat: str = "wordnet+glove",
                   surrogate: str = "imitation", surrogate_queries: int = 20,
                   surrogate_recipe: str = "topk_all_pairs", surrogate_k: int | None = None,
                   surrogate_tail: int = 4,
                   surrogate_base: str = "minilm", surrogate_loss: str = "ranknet",
                   surrogate_epochs: int = 1, surrogate_max_pairs: int | None = None,
                   surrogate_lr: float = 3e-5, surrogate_max_length: int = 256,
                   max_words: int = 10, max_pp: float | None = 0.1, budget: int | None = None,
                   k: int = 100, competitors_k: int = 99, goal: str | None = None,
                   goal_k: int = 10, search: str = "greedy-wir", tie_rule: str = "pessimistic",
                   first_stage: str = "bm25", similarity: bool = True,
                   agreement: bool = True, out: str | None = None,
                   progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Run one attack job; returns ``(results_frame, summary_dict)`` (see the module doc).

    Parameters (all plain values)
    -----------------------------
    ranker : victim spec (``minilm``, ``bm25``, ``cross-encoder:PATH``, a model folder).
    dataset : ``demo``, a BEIR folder or ``irds:ID``.
    method : ``word-substitution`` (the lab's PRADA-style attack) or ``textattack``.
    targets : ``easy5`` | ``hard5`` | ``mixture`` | ``ranks:R1,R2,...`` (1-based ranks).
    n_queries : attack queries (seeded sample); ``seed`` drives every random choice.
    threat : threat-model spec (``attacks.threat.load_threat_model``).
    surrogate : ``imitation`` | ``victim`` (white-box) | a ranker spec/path.
    surrogate_queries : attacker queries for imitation (disjoint from the attack queries).
    surrogate_recipe, surrogate_k, surrogate_tail, surrogate_base, surrogate_loss, surrogate_epochs,
    surrogate_max_pairs, surrogate_lr, surrogate_max_length : imitation training
        (``rankers.imitation.train_surrogate``).
    max_words, max_pp : caps on changed words (count; fraction of the document's words).
    budget : victim queries per target (``None`` = unlimited).
    k : first-stage candidates per query (the list the target competes in).
    competitors_k : K competitors in the surrogate loss (word-substitution only).
    goal, goal_k : early stop (word-substitution: ``None`` = try every important word; TextAttack
        needs a goal: ``None`` means ``improve``).
    search : TextAttack search (``greedy-wir`` | ``greedy-wir-delete`` | ``greedy``).
    similarity : compute the sentence-embedding similarity metric (loads MiniLM).
    agreement : report the surrogate's agreement with the victim on the attack queries
        (overlap@10, RBO p=0.7; victim scores from the run, not counted).
    out : JSONL file; one row per target is appended as each target finishes.
    """
    from attacks.base import sample_targets
    from attacks.metrics import summarize
    from attacks.threat import load_threat_model
    from rankers.oracle import Oracle
    from ranklab.collections import load_collection

    if method not in METHODS:
        raise ValueError(f"unknown attack method {method!r}; use one of {METHODS}")
    t0 = time.perf_counter()
    col = load_collection(dataset)
    victim = _load_victim(ranker, col)
    cands = col.candidates(first_stage, k=k)
    sizes = cands.groupby("qid").size()
    eligible = sorted(sizes[sizes >= 2].index.astype(str))
    if not eligible:
        raise ValueError(f"{col.name}: no query has >= 2 first-stage candidates")
    rng = np.random.default_rng(seed)
    perm = [eligible[i] for i in rng.permutation(len(eligible))]
    attack_qids = sorted(perm[: int(n_queries)])
    rest = perm[int(n_queries):]
    if len(attack_qids) < n_queries:
        warnings.warn(f"{col.name} has {len(eligible)} usable queries; attacking all of them",
                      stacklevel=2)
    run = victim.transform(cands[cands["qid"].isin(attack_qids)])

    info: dict = {}
    sur = None
    if method == "textattack":
        pass  # black-box search on the victim: no surrogate
    elif surrogate == "imitation":
        sur_qids = sorted(rest[: int(surrogate_queries)])
        if not sur_qids:
            raise ValueError(
                f"no queries left for imitation: {col.name} has {len(eligible)} usable queries "
                f"and {len(attack_qids)} are attacked. Lower n_queries, or use "
                "surrogate='victim' (white-box) or a surrogate model path")
        if len(sur_qids) < surrogate_queries:
            warnings.warn(f"imitation uses only {len(sur_qids)} attacker queries "
                          f"({surrogate_queries} asked)", stacklevel=2)
        sur, info = imitation_surrogate(
            victim, ranker, col, sur_qids, recipe=surrogate_recipe, k=surrogate_k,
            tail=surrogate_tail,
            base=surrogate_base, loss=surrogate_loss, epochs=surrogate_epochs, seed=seed,
            first_stage=first_stage, candidates_k=k, max_pairs=surrogate_max_pairs,
            lr=surrogate_lr, max_length=surrogate_max_length, progress=progress)
    elif surrogate == "victim":
        if not getattr(victim, "differentiable", False):
            raise ValueError(f"surrogate='victim' needs a differentiable victim; {ranker!r} is "
                             "not. Use surrogate='imitation' or a model path")
        sur = victim
    else:
        from rankers import load_ranker

        sur = load_ranker(surrogate)

    threat_model = load_threat_model(threat)
    protocol, ranks = _parse_targets(targets)
    tsamp = sample_targets(run, protocol, seed=seed, ranks=ranks)

    if method == "word-substitution":
        from attacks.word_substitution import WordSubstitutionAttack

        attack = WordSubstitutionAttack(sur, threat_model, max_words=max_words, max_pp=max_pp,
                                        competitors_k=competitors_k, query_budget=budget,
                                        tie_rule=tie_rule, goal=goal, goal_k=goal_k, seed=seed)
        oracle = Oracle(victim, access="rank", tie_rule=tie_rule)
    else:
        from attacks.textattack_backend import TextAttackWordSubstitution

        attack = TextAttackWordSubstitution(threat_model, max_words=max_words, max_pp=max_pp,
                                            query_budget=budget, search=search,
                                            goal=goal or "improve", goal_k=goal_k,
                                            tie_rule=tie_rule, seed=seed)
        oracle = Oracle(victim, access="score", tie_rule=tie_rule)

    config = {"ranker": ranker, "dataset": dataset, "method": method, "targets": targets,
              "n_queries": n_queries, "seed": seed, "threat": threat, "surrogate": surrogate,
              "surrogate_queries": surrogate_queries, "surrogate_recipe": surrogate_recipe,
              "surrogate_k": surrogate_k, "surrogate_tail": surrogate_tail,
              "surrogate_base": surrogate_base,
              "surrogate_loss": surrogate_loss, "surrogate_epochs": surrogate_epochs,
              "surrogate_max_pairs": surrogate_max_pairs, "max_words": max_words,
              "max_pp": max_pp, "budget": budget, "k": k, "competitors_k": competitors_k,
              "goal": goal, "goal_k": goal_k, "search": search, "tie_rule": tie_rule,
              "first_stage": first_stage}
    job_id = config_hash(config)
    writer = None
    if out is not None:
        out_path = Path(out).expanduser()
        out_path.parent.mkdir(parents=True, exist_ok=True)

        def writer(res):
            row = {"job": job_id, "ranker": ranker, "dataset": col.name, **res.to_row()}
            with open(out_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, default=str) + "\n")

    frame = attack.run(oracle, col, tsamp, run=run, progress=progress, errors="record",
                       on_result=writer)
    summary = summarize(frame, similarity=similarity)
    summary.update({"job": job_id, "config": config, "victim": victim.name,
                    "surrogate": getattr(sur, "name", None) if method == "word-substitution"
                    else None, "threat_name": getattr(threat_model, "name", str(threat)),
                    "threat_fingerprint": threat_model.fingerprint,
                    "attack_qids": attack_qids, "victim_queries_attack": int(oracle.queries_used),
                    "wall_s_job": round(time.perf_counter() - t0, 2)})
    if info:
        summary["imitation"] = {k_: v for k_, v in info.items() if k_ != "qids"}
        summary["imitation_victim_queries"] = int(info.get("victim_queries", 0))
        if agreement and method == "word-substitution":
            from rankers.imitation import run_agreement

            summary["agreement"] = run_agreement(run, sur.score)
    return frame, summary

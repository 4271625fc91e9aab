"""One certification job: certify a ranker's top-K lists on a collection and write the report.

:func:`run_certify_job` takes a :class:`CertifyConfig` (the one definition of the job's parameters;
the ``ranklab certify`` flags, sweep checks, job id and reproduce command derive from it). In order:

1. loads the collection (``demo``, a BEIR folder, ``irds:ID``), draws a seeded sample of
   ``queries`` queries (all when ``None``) and the first-stage candidates (top ``k``);
2. scores the candidates with the base ranker (clean run);
3. builds the threat model (optionally closed under symmetry on the collection's vocabulary) and
   the smoothed ranker ``g(q, d) = mean_n sigmoid((f(q, d~_n) - center) / temperature)``;
4. certifies every list (:func:`defenses.certify.certify`) at the cut-offs ``ks`` below ``k``;
5. evaluates base and smoothed rankers on the same candidate lists (:data:`MEASURES`);
6. optionally attacks outside documents of certified and uncertified lists (the smoothed ranker
   is the victim: the certificate speaks about its lists) and checks no certified list broke;
7. writes ``report.html``/``report.md``/``report.json`` to ``out_dir`` (:mod:`ranklab.report`).

It returns a flat dict (one row of a sweep's ``results.jsonl``): ``CRQ@K`` per K, ``n_queries``,
base and smoothed effectiveness, forward passes, timings (``*_s``) and the report's path. The same
arguments and seed give the same numbers (timings aside).
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time

import numpy as np
import pandas as pd

from ranklab.config import ConfigError, RankingConfig, param
from ranklab.evaluate import DEFAULT_MEASURES

__all__ = ["CertifyConfig", "run_certify_job", "attack_certified_lists", "MEASURES"]

#: Clean effectiveness of base and smoothed rankers on the certified lists (the lab's default
#: measures, :data:`ranklab.evaluate.DEFAULT_MEASURES`).
MEASURES = DEFAULT_MEASURES


@dataclasses.dataclass(frozen=True)
class CertifyConfig(RankingConfig):
    """A certification job: smooth ``ranker`` and certify its top-K lists on ``dataset``."""

    kind = "certify"
    k: int = param(20, "first-stage candidates per query (the certified list's length m)",
                   unit="documents", min=2)
    n_samples: int = param(200, "smoothing draws per document, N (the adaptive mode's cap)",
                         unit="draws", min=1)
    ks: tuple[int, ...] | None = param(None, "cut-offs K to certify, each < k (default: those of "
                                       "1 3 5 10 20 below k)", unit="ranks, 1-based", min=1)
    alpha: float = param(0.05, "error level: all certificates of a query hold together with "
                         "probability >= 1 - alpha (rigorous, adaptive)", gt=0, max=0.5)
    mode: str = param("rigorous", "rigorous (all documents bounded at once), certdr (the paper's "
                      "two-estimate test) or adaptive (sequential looks)",
                      choices=("rigorous", "certdr", "adaptive"))
    bound: str = param("hoeffding", "confidence bound: hoeffding, bernstein (empirical) or kl "
                       "(Chernoff-KL, tight for saturated scores); certdr is Hoeffding only",
                       choices=("hoeffding", "bernstein", "kl"))
    R: int | None = param(None, "attacker's budget of substituted words per document (every word "
                          "when not given, the paper's setting)", unit="words", min=0, flag="--R")
    threat: str = param("wordnet+glove", "threat-model spec (attacks.threat.load_threat_model)")
    symmetric: bool = param(True, "certify against the threat closed under symmetry on the "
                            "collection's vocabulary (a superset, so certificates hold against "
                            "the threat itself); --no-symmetric: the threat as given (radii "
                            "near 1 on long documents)")
    temperature: float | None = param(None, "sigmoid temperature of the squash (default by "
                                      "ranker family: 0.05 bi-encoders, 1.0 others)",
                                      unit="raw-score units", gt=0)
    center: str = param("auto", "constant subtracted from raw scores before the squash: auto "
                        "(median clean score of the lists) or a number", unit="raw-score units")
    n0: int | None = param(None, "adaptive mode: draws at the first look (default min(32, N))",
                           unit="draws", min=1)
    futility: float = param(3.0, "adaptive mode: give up on a list when estimates moved this many "
                            "SDs still cannot separate at the cap (<= 0: never give up)",
                            unit="standard deviations")
    max_set_size: int = param(100, "largest smoothing set (published construction: 100) or "
                              "cluster (clustered sets)", unit="words", min=1)
    smoothing: str = param("synonym", "smoothing noise: synonym (random substitutions from the "
                           "smoothing sets, certificates against the threat) or mask (random "
                           "maskings keeping a share of the words, certificates against ANY "
                           "substitution of r words)", choices=("synonym", "mask"))
    sets: str = param("published", "synonym smoothing sets: published (components / most similar "
                      "members) or clustered (a bounded partition of the neighbour graph, so most "
                      "substitutions stay inside one set)", choices=("published", "clustered"))
    keep: float = param(0.3, "mask smoothing: share of a document's words each masking keeps",
                        unit="fraction, 0-1", gt=0, max=1)
    mask: str = param("token", "mask smoothing: masked words become the tokenizer's mask token "
                      "(token) or are removed (drop)", choices=("token", "drop"))
    r_share: float | None = param(None, "attacker's budget as a share of each document's words "
                                  "(r = floor(share x n)); instead of --R", unit="fraction, 0-1",
                                  min=0, max=1)
    attack: dict | None = param(None, "attack outside documents of certified lists after "
                                "certifying (see attack_certified_lists for keys)", cli=False)

    def check(self) -> None:
        if self.ks is not None:
            big = [K for K in self.ks if K >= self.k]
            if big:
                raise ConfigError(
                    f"ks (--ks) {big} >= k (--k) {self.k}: a list of k documents is trivially "
                    f"certified at K >= k. Use cut-offs below {self.k}, or a larger --k")
        if self.center != "auto":
            try:
                c = float(self.center)
            except ValueError:
                raise ConfigError(f"center (--center) must be 'auto' or a number, got "
                                  f"{self.center!r}") from None
            if not math.isfinite(c):
                raise ConfigError(f"center (--center) must be finite, got {self.center!r}")
        if self.smoothing == "mask" and self.R is None and self.r_share is None:
            raise ConfigError("mask smoothing (--smoothing mask) certifies against r substituted "
                              "words of each document: give the budget as --R WORDS or "
                              "--r-share SHARE (with every word changeable the radius is 1)")
        if self.R is not None and self.r_share is not None:
            raise ConfigError("give the attacker's budget once: R (--R, words) or r_share "
                              "(--r-share, a share of each document's words)")
        if self.bound != "hoeffding" and self.mode == "certdr":
            raise ConfigError(f"bound (--bound) {self.bound} does not go with mode (--mode) "
                              "certdr (the paper's test is Hoeffding's)")

    @property
    def cutoffs(self) -> list[int]:
        """The K values certified (1-based, ascending, each < k)."""
        if self.ks is None:
            return [K for K in (1, 3, 5, 10, 20) if K < self.k]
        return sorted(set(self.ks))


def _eval(run: pd.DataFrame, qrels: pd.DataFrame, measures) -> tuple[dict, pd.DataFrame]:
    from ranklab.evaluate import evaluate, evaluate_per_query

    judged = run[run["qid"].isin(set(qrels["qid"]))]
    if judged.empty:
        return {m: None for m in measures}, pd.DataFrame(columns=["qid", "measure", "value"])
    return evaluate(judged, qrels, measures), evaluate_per_query(judged, qrels, ["nDCG@10"])


def run_certify_job(config: CertifyConfig | None = None, *, out_dir: str | None = None,
                    progress: bool = True, **params) -> dict:
    """Certify ``config.ranker``'s top-K lists on ``config.dataset``; returns a flat summary.

    ``config`` is a :class:`CertifyConfig` (its fields document every parameter); keyword
    ``params`` build or override one. ``out_dir``: folder for ``report.html``, ``report.md``,
    ``report.json`` (no report when None); ``progress``: progress bars and the forward-pass
    estimate on stderr.

    Returns a flat dict: ``CRQ@K`` for each K, ``n_queries``, ``<measure>_base`` and
    ``<measure>_smoothed``, ``n_forward`` (base forward passes of the certificate),
    ``n_forward_per_query``, ``median_radius``, attack counts when attacked, ``wall_s``,
    ``certify_s``, ``report`` (the HTML path or None) and the main parameters.
    """
    from attacks.threat import load_threat_model, symmetric_closure
    from defenses.certify import certify, smoothing_params
    from defenses.smoothing import SmoothedRanker, SmoothingSets, default_temperature
    from ranklab.collections import load_collection

    cfg = config if config is not None else CertifyConfig.from_params(params)
    if params and config is not None:
        cfg = cfg.replace(**params)
    t0 = time.perf_counter()
    kept = cfg.cutoffs
    if not kept:
        raise ConfigError(f"no cut-off K below k (--k) {cfg.k}: pass --ks")
    col = load_collection(cfg.dataset).sample_queries(cfg.queries, cfg.seed)
    cands = col.candidates(cfg.first_stage, k=cfg.k)
    if cands.empty:
        raise ValueError(f"{col.name}: the first stage {cfg.first_stage!r} returned no candidates")
    base = col.ranker(cfg.ranker, **cfg.ranker_kwargs())
    same = cfg.ranker == "bm25" and cfg.first_stage == "bm25"
    base_run = cands.copy() if same else base.transform(cands)

    c = float(np.median(base_run["score"].to_numpy(dtype=float))) if cfg.center == "auto" \
        else float(cfg.center)
    T = default_temperature(base) if cfg.temperature is None else cfg.temperature
    threat_model = sets = None
    if cfg.smoothing == "mask":  # certifies against any substitution: no threat model needed
        from defenses.masking import MaskedSmoothedRanker

        smoothed = MaskedSmoothedRanker(base, keep=cfg.keep, mask=cfg.mask,
                                        n_samples=cfg.n_samples, seed=cfg.seed, temperature=T,
                                        center=c)
    else:
        threat_model = load_threat_model(cfg.threat)
        if cfg.symmetric:
            threat_model = symmetric_closure(threat_model, col)
        if cfg.sets == "clustered":
            from defenses.clusters import cluster_sets

            sets = cluster_sets(threat_model, texts=col.documents["text"].tolist(),
                                max_size=cfg.max_set_size, seed=cfg.seed)
        else:
            sets = SmoothingSets(threat_model, max_set_size=cfg.max_set_size)
        smoothed = SmoothedRanker(base, sets, n_samples=cfg.n_samples, seed=cfg.seed,
                                  temperature=T, center=c)
    if progress:
        sizes = cands.groupby("qid").size()
        print(f"certifying {len(sizes)} lists of up to {int(sizes.max())} documents with up to "
              f"{cfg.n_samples} draws each: at most {int(sizes.sum()) * cfg.n_samples:,} forward "
              f"passes{' (adaptive mode usually needs far fewer)' if cfg.mode == 'adaptive' else ''}",
              file=sys.stderr)

    t1 = time.perf_counter()
    cert = certify(smoothed, cands, ks=kept, alpha=cfg.alpha, mode=cfg.mode, R=cfg.R, n0=cfg.n0,
                   bound=cfg.bound, futility=cfg.futility if cfg.futility > 0 else None,
                   progress=progress, r_share=cfg.r_share)
    certify_s = time.perf_counter() - t1
    n_forward = int(cert.frame.drop_duplicates("qid")["n_forward"].sum())

    # clean effectiveness of both rankers on the same lists
    g = cert.docs.rename(columns={"g": "score"})[["qid", "docno", "score"]]
    sm_run = cands[["qid", "query", "docno", "text"]].astype({"qid": str, "docno": str}).merge(
        g.astype({"qid": str, "docno": str}), on=["qid", "docno"], how="left")
    eff_b, pq_b = _eval(base_run, col.qrels, MEASURES)
    eff_s, pq_s = _eval(sm_run, col.qrels, MEASURES)
    per_query = pd.DataFrame({"qid": sorted(cands["qid"].astype(str).unique())})
    for name, pq in (("base", pq_b), ("smoothed", pq_s)):
        per_query = per_query.merge(
            pq[["qid", "value"]].rename(columns={"value": f"nDCG@10_{name}"}), on="qid",
            how="left")
    clean = {"base": eff_b, "smoothed": eff_s, "per_query": per_query,
             "note": ("Smoothed scores are the certificate's estimates: in adaptive mode "
                      "documents far from the boundary have fewer than N samples.")
             if cfg.mode == "adaptive" else None}

    attack_frame, attack_info = None, {}
    if cfg.attack:
        attack_frame, attack_info = attack_certified_lists(
            cert, smoothed, base, col, cands, cfg.attack, seed=cfg.seed, R=cfg.R,
            progress=progress, threat=threat_model or load_threat_model(cfg.threat))

    wall_s = time.perf_counter() - t0
    meta = {
        "ranker": cfg.ranker, "ranker_name": base.name, "smoothed": smoothed.name,
        "collection": col.name, "dataset": cfg.dataset,
        "collection_fingerprint": col.fingerprint, "first_stage": cfg.first_stage, "k": cfg.k,
        "n_queries": int(cands["qid"].nunique()), "query_seed": cfg.seed,
        **smoothing_params(smoothed), "threat_spec": cfg.threat, "symmetric": cfg.symmetric,
        "sets": cfg.sets if sets is not None else None,
        "cluster_info": getattr(sets, "cluster_info", None), "r_share": cfg.r_share,
        "squash": "sigmoid", "temperature": T, "dtype": cfg.dtype, "center": c,
        "mode": cfg.mode, "bound": cfg.bound, "alpha": cfg.alpha, "N": cfg.n_samples,
        "n0": cert.params.get("n0"), "futility": cert.params.get("futility"), "R": cfg.R,
        "seed": cfg.seed, "ks": kept, "n_forward": n_forward, "certify_s": round(certify_s, 2),
        "wall_s": round(wall_s, 2), "job_id": cfg.job_id(), "config": cfg.to_params(),
        "command": cfg.command(),
        "qids": sorted(cands["qid"].astype(str).unique()),
        "query_text": dict(zip(col.queries["qid"].astype(str), col.queries["query"])),
    }
    if attack_info:
        meta["attack"] = attack_info

    summary = {f"CRQ@{int(K)}": float(v) for K, v in zip(cert.crq["K"], cert.crq["CRQ"])}
    summary.update({"n_queries": meta["n_queries"], "k": cfg.k, "n_samples": cfg.n_samples,
                    "mode": cfg.mode, "bound": cfg.bound, "alpha": cfg.alpha, "R": cfg.R,
                    "temperature": T, "center": c, "smoothing": cfg.smoothing,
                    "r_share": cfg.r_share,
                    "threat_fingerprint": meta["threat_fingerprint"]})
    for m in MEASURES:
        summary[f"{m}_base"] = eff_b.get(m)
        summary[f"{m}_smoothed"] = eff_s.get(m)
    summary.update({"n_forward": n_forward,
                    "n_forward_per_query": n_forward / max(meta["n_queries"], 1),
                    "median_radius": float(cert.docs["delta"].median())})
    for K in kept:  # the lists' certified radii (largest certified budget), median over lists
        rows = cert.frame[(cert.frame["K"] == K) & ~cert.frame["trivial"]]
        if "radius_share" in rows and len(rows):
            summary[f"radius_share@{K}"] = float(rows["radius_share"].median())
    paths = None
    if out_dir is not None:
        from ranklab.report import write_report

        paths = write_report(out_dir, cert, meta=meta, clean=clean, attack_results=attack_frame)
        att = paths["data"].get("attack")
        if att:
            summary.update(_attack_summary(att, attack_info.get("K")))
    elif attack_frame is not None:
        from ranklab.report import attack_outcome

        summary.update(_attack_summary(attack_outcome(cert, attack_frame), attack_info.get("K")))
    summary.update({"wall_s": meta["wall_s"], "certify_s": meta["certify_s"],
                    "report_s": round(time.perf_counter() - t0 - wall_s, 2),
                    "report": paths["html"] if paths else None,
                    "report_json": paths["json"] if paths else None})
    return summary


def _attack_summary(att: dict, K: int | None) -> dict:
    out = {"attack_targets": att["n_attacks"], "attack_success": att["success_rate"],
           "attack_checks": att["checks"], "broken_certified": len(att["broken"])}
    row = next((r for r in att["per_k"] if r["K"] == K), None)
    if row is not None:
        out.update({"attack_K": K, "attack_entered_certified": row["certified_entered"],
                    "attack_targets_certified": row["certified_targets"],
                    "attack_entered_uncertified": row["uncertified_entered"],
                    "attack_targets_uncertified": row["uncertified_targets"]})
    return out


_ATTACK_KEYS = {"K", "per_list", "max_lists", "max_words", "max_pp", "surrogate", "results",
                "competitors_k", "qids"}


def attack_certified_lists(cert, smoothed, base, col, cands, params: dict, seed: int = 0,
                           R: int | None = None, progress: bool = True, threat=None):
    """Attack outside documents of certified and uncertified lists of the smoothed ranker.

    The victim is the smoothed ranker itself (through a rank-access :class:`rankers.Oracle`,
    every victim query costs N base forward passes); its original lists are the certificate's
    (scores ``g``; re-estimated with N draws in adaptive mode). The attack is
    :class:`attacks.WordSubstitutionAttack` with the certification threat model (it may change
    words of the target only, with the same substitutes the certificate covers), stopping once
    the target reaches rank <= K. Keys of ``params``:

    ``K`` the cut-off (default: the K with the most non-trivially certified lists, ties to the
    smallest); ``per_list`` targets per list, the documents ranked K+1, K+2, ... (default 1);
    ``max_lists`` lists attacked, half certified and half uncertified where possible, picked
    with ``seed`` (default 6); ``qids`` explicit lists instead; ``max_words`` (10, capped at R)
    and ``max_pp`` (None: no cap) limit changed words; ``surrogate`` the white-box model the
    attack plans with (``"base"``: the base ranker, which must be differentiable, or a ranker
    spec); ``competitors_k`` (99); ``results`` a saved attack-results file (``.jsonl``/``.csv``)
    to check instead of attacking. Returns ``(attack-results frame, info dict)``.
    """
    from attacks import WordSubstitutionAttack
    from ranklab.report import load_attack_results
    from rankers import load_ranker
    from rankers.oracle import Oracle

    if not isinstance(params, dict):
        raise ValueError(f"attack must be a dict of attack parameters, got {params!r}")
    unknown = sorted(set(params) - _ATTACK_KEYS)
    if unknown:
        raise ValueError(f"unknown attack parameter(s) {unknown}; allowed: {sorted(_ATTACK_KEYS)}")
    if params.get("results"):
        frame = load_attack_results(params["results"])
        return frame, {"results": str(params["results"]), "n_targets": int(len(frame))}

    fr = cert.frame.assign(qid=cert.frame["qid"].astype(str))
    ks = sorted(fr["K"].unique())
    K = params.get("K")
    if K is None:
        counts = {int(x): int((fr[fr["K"] == x]["certified"] & ~fr[fr["K"] == x]["trivial"]).sum())
                  for x in ks}
        K = max(counts, key=lambda x: (counts[x], -x))
    K = int(K)
    if K not in set(int(x) for x in ks):
        raise ValueError(f"attack K={K} is not a certified cut-off; use one of {list(map(int, ks))}")
    per_list = int(params.get("per_list", 1))
    max_lists = int(params.get("max_lists", 6))
    if per_list < 1 or max_lists < 1:
        raise ValueError("attack per_list and max_lists must be >= 1")
    at_k = fr[(fr["K"] == K) & ~fr["trivial"]]
    rng = np.random.default_rng(seed)
    if params.get("qids"):
        qids = [str(q) for q in params["qids"]]
        bad = sorted(set(qids) - set(at_k["qid"]))
        if bad:
            raise ValueError(f"attack qids {bad} have no non-trivial list at K={K}")
    else:
        cq = sorted(at_k[at_k["certified"]]["qid"])
        uq = sorted(at_k[~at_k["certified"]]["qid"])
        n_c = min(len(cq), max(max_lists // 2, max_lists - len(uq)))
        n_u = min(len(uq), max_lists - n_c)
        qids = sorted([*(rng.choice(cq, n_c, replace=False).tolist() if n_c else []),
                       *(rng.choice(uq, n_u, replace=False).tolist() if n_u else [])])
    if not qids:
        return load_attack_results(pd.DataFrame(columns=["qid", "docno", "orig_rank", "adv_rank"])), \
            {"K": K, "lists": [], "n_targets": 0}

    sub = cands[cands["qid"].astype(str).isin(qids)].assign(qid=lambda d: d["qid"].astype(str),
                                                            docno=lambda d: d["docno"].astype(str))
    if cert.params.get("mode") == "adaptive":
        run = smoothed.transform(sub)
    else:
        g = cert.docs.assign(qid=cert.docs["qid"].astype(str), docno=cert.docs["docno"].astype(str))
        run = sub.drop(columns=[c for c in ("score", "rank") if c in sub.columns]).merge(
            g[["qid", "docno", "g"]].rename(columns={"g": "score"}), on=["qid", "docno"])
        from rankers.base import add_ranks

        run = add_ranks(run)
    targets = run[(run["rank"] > K) & (run["rank"] <= K + per_list)][["qid", "docno", "rank"]]

    sur_spec = params.get("surrogate", "base")
    if sur_spec == "base":
        if not getattr(base, "differentiable", False):
            raise ValueError(f"the attack plans on a differentiable surrogate and the base ranker "
                             f"{base.name!r} is not one: pass attack={{'surrogate': 'minilm'}} (or "
                             "another model), or {'results': PATH} with saved attack results")
        sur = base
    else:
        sur = load_ranker(sur_spec)
    max_words = int(params.get("max_words", 10))
    if R is not None:
        max_words = min(max_words, int(R))
    if max_words < 1:
        raise ValueError("the attack needs max_words >= 1 (and R >= 1)")
    atk = WordSubstitutionAttack(sur, threat if threat is not None else smoothed.threat, max_words=max_words,
                                 max_pp=params.get("max_pp"),
                                 competitors_k=int(params.get("competitors_k", 99)),
                                 goal="topk", goal_k=K, seed=seed)
    oracle = Oracle(smoothed, access="rank")
    before = smoothed.n_forward
    t = time.perf_counter()
    frame = atk.run(oracle, col, targets, run=run, progress=progress, errors="record")
    info = {"K": K, "lists": qids, "n_targets": int(len(targets)), "per_list": per_list,
            "max_words": max_words, "max_pp": params.get("max_pp"),
            "surrogate": getattr(sur, "name", str(sur_spec)), "victim": smoothed.name,
            "victim_queries": int(oracle.queries_used),
            "n_forward": int(smoothed.n_forward - before),
            "attack_s": round(time.perf_counter() - t, 2)}
    return frame, info

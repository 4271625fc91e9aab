"""One certification job: certify a ranker's top-K lists on a collection and write the report.

:func:`run_certify_job` takes plain (JSON-friendly) arguments, so the ``ranklab certify`` command
and sweeps (job kind ``certify``) call it directly. In order it:

1. loads the collection (``demo``, a BEIR folder, ``irds:ID``), draws a seeded sample of
   ``n_queries`` queries (all when ``None``) and the first-stage candidates (top ``k``);
2. scores the candidates with the base ranker (clean run);
3. builds the threat model (optionally closed under symmetry on the collection's vocabulary) and
   the smoothed ranker ``g(q, d) = mean_n sigmoid((f(q, d~_n) - center) / temperature)``;
4. certifies every list (:func:`defenses.certify.certify`) at the cut-offs ``ks`` below ``k``;
5. evaluates base and smoothed rankers on the same candidate lists (nDCG@10, RR@10, AP);
6. optionally attacks outside documents of certified and uncertified lists (the smoothed ranker
   is the victim: the certificate speaks about its lists) and checks no certified list broke;
7. writes ``report.html``/``report.md``/``report.json`` to ``out_dir`` (:mod:`ranklab.report`).

It returns a flat dict (one row of a sweep's ``results.jsonl``): ``CRQ@K`` per K, ``n_queries``,
base and smoothed effectiveness, forward passes, timings (``*_s``) and the report's path. The same
arguments and seed give the same numbers (timings aside).
"""
from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np
import pandas as pd

from rankers.base import Ranker

__all__ = ["run_certify_job", "default_temperature", "CenteredRanker", "symmetric_closure",
           "attack_certified_lists", "MEASURES"]

MEASURES = ("nDCG@10", "RR@10", "AP")

#: Default squash temperatures by ranker family (score scale; see SmoothedRanker's docstring).
TEMPERATURES = {"BiEncoder": 0.05, "CrossEncoder": 1.0, "BM25Ranker": 1.0,
                "TermWeightRanker": 1.0}


def default_temperature(ranker: Ranker) -> float:
    """Squash temperature for ``ranker``'s raw scores.

    Bi-encoders (cosine similarities in [-1, 1], relevant/non-relevant gaps about 0.05-0.1): 0.05.
    Cross-encoders (logits, about [-10, 10]): 1.0. BM25 (scores of a few units between ranks)
    and the term-weight ranker: 1.0. Anything else: 1.0. Looked up along the class hierarchy, so a
    subclass gets its parent's value.
    """
    base = ranker.base if isinstance(ranker, CenteredRanker) else ranker
    for cls in type(base).__mro__:
        if cls.__name__ in TEMPERATURES:
            return TEMPERATURES[cls.__name__]
    return 1.0


class CenteredRanker(Ranker):
    """``f(q, d) - center``: shifts raw scores so that the sigmoid squash is not saturated.

    A fixed constant (the job takes the median clean score of its candidate lists, computed
    before any smoothing draw); the smoothed ranker and its certificate are about the shifted
    scores, which rank exactly as the base ranker's.
    """

    def __init__(self, base: Ranker, center: float):
        if not isinstance(base, Ranker):
            raise TypeError(f"base must be a Ranker, got {type(base).__name__}")
        if not math.isfinite(float(center)):
            raise ValueError(f"center must be a finite number, got {center!r}")
        self.base = base
        self.center = float(center)
        self.name = f"{base.name}-({self.center:.6g})"

    def _score_pairs(self, queries, docs):
        return self.base.score_pairs(queries, docs) - self.center


def symmetric_closure(threat, col):
    """The threat model closed under symmetry on a collection's vocabulary.

    A :class:`attacks.threat.SynonymTable` with ``w -> threat.neighbours(w)`` for every word ``w``
    of the collection's documents, plus every reverse pair. On the collection's documents it
    allows every substitution ``threat`` allows (and the reverse ones), so a certificate against
    it also holds against ``threat``; its smoothing sets are whole connected components (when at
    most ``max_set_size`` words), which makes ``q_w = 1`` and the radii small for most words.
    """
    from attacks.text import tokenize
    from attacks.threat import SynonymTable

    vocab = sorted({w.lower() for t in col.documents["text"] for w in tokenize(t).words})
    table = {}
    for w in vocab:
        nb = threat.neighbours(w)
        if nb:
            table[w] = nb
    return SynonymTable(table, symmetric=True, name=f"symmetric({threat.name})@{col.name}")


def _eval(run: pd.DataFrame, qrels: pd.DataFrame, measures) -> tuple[dict, pd.DataFrame]:
    from ranklab.evaluate import evaluate, evaluate_per_query

    judged = run[run["qid"].isin(set(qrels["qid"]))]
    if judged.empty:
        return {m: None for m in measures}, pd.DataFrame(columns=["qid", "measure", "value"])
    return evaluate(judged, qrels, measures), evaluate_per_query(judged, qrels, ["nDCG@10"])


def _check_args(k, samples, ks, alpha, mode, bound, R, n_queries, symmetric):
    from defenses.certify import BOUNDS, MODES

    if int(k) != k or k < 2:
        raise ValueError(f"k (candidates per query) must be an integer >= 2, got {k!r}")
    if int(samples) != samples or samples < 1:
        raise ValueError(f"samples (N) must be a positive integer, got {samples!r}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid modes: {list(MODES)}")
    if bound not in BOUNDS:
        raise ValueError(f"unknown bound {bound!r}; valid bounds: {list(BOUNDS)}")
    if not 0 < float(alpha) < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if R is not None and (int(R) != R or R < 0):
        raise ValueError(f"R must be a non-negative integer or None, got {R!r}")
    if n_queries is not None and (int(n_queries) != n_queries or n_queries < 1):
        raise ValueError(f"n_queries must be a positive integer or None, got {n_queries!r}")
    if not isinstance(symmetric, bool):
        raise ValueError(f"symmetric must be true or false, got {symmetric!r}")
    try:
        kk = sorted({int(x) for x in ks})
    except (TypeError, ValueError):
        raise ValueError(f"ks must be a list of positive integers, got {ks!r}") from None
    if not kk or kk[0] < 1:
        raise ValueError(f"ks must be positive integers (1-based cut-offs), got {ks!r}")
    kept = [x for x in kk if x < k]
    if not kept:
        raise ValueError(f"every cut-off in ks={kk} is >= k={k}: a list of k documents is "
                         "trivially certified at K >= k. Use K < k")
    return kept


def run_certify_job(ranker: str = "minilm", dataset: str = "demo", seed: int = 0,
                    first_stage: str = "bm25", k: int = 20, samples: int = 200,
                    ks: Sequence[int] = (1, 3, 5, 10, 20), alpha: float = 0.05,
                    mode: str = "rigorous", bound: str = "hoeffding", R: int | None = None,
                    threat="wordnet+glove", temperature: float | None = None,
                    center="auto", symmetric: bool = True, n0: int | None = None,
                    futility: float | None = 3.0,
                    max_set_size: int = 100, n_queries: int | None = None,
                    attack: dict | None = None, out_dir: str | None = None,
                    dtype: str = "fp32", progress: bool = True) -> dict:
    """Certify ``ranker``'s top-K lists on ``dataset``; returns a flat summary dict.

    Parameters (plain values)
    -------------------------
    ranker : spec for :func:`ranklab.cli.ranker_for` (``minilm``, ``bm25`` fitted on the
        collection, ``term-weight``, ``cross-encoder:PATH``, a model folder).
    dataset : ``demo``, a BEIR folder or ``irds:ID``.
    seed : seeds the query sample, the smoothing draws and the attack (non-negative integer).
    first_stage, k : the candidate lists (first-stage top ``k``; the list length ``m``).
    samples : ``N``, smoothing draws per document (the adaptive mode's cap).
    ks : cut-offs K (1-based); only ``K < k`` are kept (K >= k is trivially certified).
    alpha : the certificates' error level (all K of a query hold together w.p. >= 1 - alpha in
        the rigorous and adaptive modes).
    mode : ``rigorous`` (default), ``certdr`` (the paper's test) or ``adaptive``.
    bound : ``hoeffding`` or ``bernstein`` (not with certdr).
    R : at most R substituted words per document (``None``: every word, the paper's setting).
    threat : threat-model spec (:func:`attacks.threat.load_threat_model`) or a ThreatModel.
    temperature : squash temperature; ``None`` picks by ranker family
        (:func:`default_temperature`: 0.05 for bi-encoders, 1.0 for cross-encoders and BM25).
    center : constant subtracted from raw scores before the squash. ``"auto"`` (default): the
        median clean base score of the job's candidate pairs, computed before any draw and
        recorded; a number; or ``None``/0 for no shift.
    symmetric : close the threat model under symmetry on the collection's vocabulary first
        (:func:`symmetric_closure`; default True). The closure allows every substitution of
        ``threat`` on the collection's documents plus the reverse ones, so a certificate against
        it also holds against ``threat`` itself; its smoothing sets are whole synonym components,
        so radii are small (Cranfield, ``wordnet+glove``: median 0.01 instead of about 1.0).
        ``False`` certifies against ``threat`` as given, where neighbour lists that are not
        symmetric make almost every long document's radius close to 1 (nothing certifies).
    n0 : first look of the adaptive mode (default ``min(32, samples)``).
    futility : adaptive mode's futility z (:func:`defenses.certify.certify`; ``None``: off).
    max_set_size : largest smoothing set (the published construction uses 100).
    n_queries : a seeded sample of this many queries (``None``: every query).
    attack : optional dict: attack outside documents with the word-substitution attack on the
        smoothed ranker (see :func:`attack_certified_lists` for keys), or ``{"results": PATH}``
        to check a saved attack-results file whose ranks refer to the smoothed lists.
    out_dir : folder for ``report.html``, ``report.md``, ``report.json`` (no report when None).
    dtype : encoder precision for transformer rankers (``fp32`` or ``bf16``; the certificate is
        about the ranker at that precision).
    progress : progress bars.

    Returns a flat dict: ``CRQ@K`` for each K, ``n_queries``, ``<measure>_base`` and
    ``<measure>_smoothed``, ``n_forward`` (base forward passes of the certificate),
    ``n_forward_per_query``, ``median_radius``, attack counts when attacked, ``wall_s``,
    ``certify_s``, ``report`` (the HTML path or None) and the main parameters.
    """
    from attacks.threat import load_threat_model
    from defenses.certify import certify
    from defenses.smoothing import SmoothedRanker, SmoothingSets
    from ranklab.cli import _select_queries, ranker_for
    from ranklab.collections import load_collection

    t0 = time.perf_counter()
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    kept = _check_args(k, samples, ks, alpha, mode, bound, R, n_queries, symmetric)
    if dtype not in ("fp32", "bf16"):
        raise ValueError(f"dtype must be 'fp32' or 'bf16', got {dtype!r}")
    k, samples, seed = int(k), int(samples), int(seed)

    col = _select_queries(load_collection(dataset), n_queries, seed)
    cands = col.candidates(first_stage, k=k)
    if cands.empty:
        raise ValueError(f"{col.name}: the first stage {first_stage!r} returned no candidates")
    base = ranker_for(ranker, col, **({} if dtype == "fp32" else {"dtype": dtype}))
    ranker_spec = ranker if isinstance(ranker, str) else getattr(ranker, "name", str(ranker))
    same = ranker_spec == "bm25" and first_stage == "bm25"
    base_run = cands.copy() if same else base.transform(cands)

    threat_model = load_threat_model(threat)
    if symmetric:
        threat_model = symmetric_closure(threat_model, col)
    sets = SmoothingSets(threat_model, max_set_size=max_set_size)

    if center == "auto":
        c = float(np.median(base_run["score"].to_numpy(dtype=float)))
    elif center is None:
        c = 0.0
    else:
        try:
            c = float(center)
        except (TypeError, ValueError):
            raise ValueError(f"center must be 'auto', a number or None, got {center!r}") from None
    T = default_temperature(base) if temperature is None else float(temperature)
    if not T > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    scorer = base if c == 0.0 else CenteredRanker(base, c)
    smoothed = SmoothedRanker(scorer, sets, n_samples=samples, seed=seed, temperature=T)

    t1 = time.perf_counter()
    cert = certify(smoothed, cands, ks=kept, alpha=alpha, mode=mode, R=R, n0=n0, bound=bound,
                   futility=futility, progress=progress)
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
             if mode == "adaptive" else None}

    attack_frame, attack_info = None, {}
    if attack:
        attack_frame, attack_info = attack_certified_lists(
            cert, smoothed, base, col, cands, attack, seed=seed, R=R, progress=progress)

    wall_s = time.perf_counter() - t0
    meta = {
        "ranker": ranker_spec, "ranker_name": base.name, "smoothed": smoothed.name,
        "collection": col.name, "dataset": str(dataset),
        "collection_fingerprint": col.fingerprint, "first_stage": first_stage, "k": k,
        "n_queries": int(cands["qid"].nunique()), "query_seed": seed,
        "threat": threat_model.name,
        "threat_spec": threat if isinstance(threat, (str, dict)) else threat_model.name,
        "threat_fingerprint": threat_model.fingerprint, "symmetric": symmetric,
        "sets_fingerprint": sets.fingerprint, "max_set_size": max_set_size,
        "squash": "sigmoid", "temperature": T, "dtype": dtype, "center": c, "mode": mode, "bound": bound,
        "alpha": alpha, "N": samples, "n0": cert.params.get("n0"),
        "futility": cert.params.get("futility"), "R": R, "seed": seed,
        "ks": kept, "n_forward": n_forward, "certify_s": round(certify_s, 2),
        "wall_s": round(wall_s, 2),
        "command": _command(ranker_spec, dataset, first_stage, k, samples, kept, alpha, mode,
                            bound, R, threat, seed, n_queries, symmetric, n0, dtype,
                            temperature, center, max_set_size, futility),
        "qids": sorted(cands["qid"].astype(str).unique()),
        "query_text": dict(zip(col.queries["qid"].astype(str), col.queries["query"])),
    }
    if attack_info:
        meta["attack"] = attack_info

    summary = {f"CRQ@{int(K)}": float(v) for K, v in zip(cert.crq["K"], cert.crq["CRQ"])}
    summary.update({"n_queries": meta["n_queries"], "k": k, "N": samples, "mode": mode,
                    "bound": bound, "alpha": alpha, "R": R, "temperature": T, "center": c,
                    "threat_fingerprint": threat_model.fingerprint})
    for m in MEASURES:
        summary[f"{m}_base"] = eff_b.get(m)
        summary[f"{m}_smoothed"] = eff_s.get(m)
    summary.update({"n_forward": n_forward,
                    "n_forward_per_query": n_forward / max(meta["n_queries"], 1),
                    "median_radius": float(cert.docs["delta"].median())})
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


def _command(ranker, dataset, first_stage, k, samples, ks, alpha, mode, bound, R, threat, seed,
             n_queries, symmetric, n0=None, dtype="fp32", temperature=None, center="auto",
             max_set_size=100, futility=3.0) -> str:
    parts = [f"ranklab certify --ranker {ranker} --dataset {dataset} --first-stage {first_stage}",
             f"--k {k} --samples {samples} --seed {seed} --alpha {alpha} --mode {mode}"]
    if bound != "hoeffding":
        parts.append(f"--bound {bound}")
    if R is not None:
        parts.append(f"--R {R}")
    if isinstance(threat, str) and threat != "wordnet+glove":
        parts.append(f"--threat '{threat}'")
    if n_queries is not None:
        parts.append(f"--queries {n_queries}")
    if not symmetric:
        parts.append("--no-symmetric")
    if n0 is not None and mode == "adaptive":
        parts.append(f"--n0 {n0}")
    if futility != 3.0 and mode == "adaptive":
        parts.append(f"--futility {-1 if futility is None else futility}")
    if dtype != "fp32":
        parts.append(f"--dtype {dtype}")
    if temperature is not None:
        parts.append(f"--temperature {temperature}")
    if center != "auto":
        parts.append(f"--center {0 if center is None else center}")
    if max_set_size != 100:
        parts.append(f"--max-set-size {max_set_size}")
    parts.append("--ks " + " ".join(str(x) for x in ks))
    return " ".join(parts)


_ATTACK_KEYS = {"K", "per_list", "max_lists", "max_words", "max_pp", "surrogate", "results",
                "competitors_k", "qids"}


def attack_certified_lists(cert, smoothed, base, col, cands, params: dict, seed: int = 0,
                           R: int | None = None, progress: bool = True):
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
    atk = WordSubstitutionAttack(sur, smoothed.threat, max_words=max_words,
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

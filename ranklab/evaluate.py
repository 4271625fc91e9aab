"""Effectiveness with ir_measures.

Measure names are ir_measures' strings (``nDCG@10``, ``RR@10``, ``AP``, ``R@100``, ...) or
trec_eval's (``ndcg_cut_10``, ``recip_rank``, ``map``, ``P_10``, ``recall_100``, which map to
``nDCG@10``, ``RR``, ``AP``, ``P@10``, ``R@100``); results are keyed by the ir_measures name. One
string is one measure (``"nDCG@10"``), a list is several.

Which queries count: the means are over the queries that have qrels *and* appear in the run
(trec_eval's default). A query of the qrels that the run does not rank is left out, with a
warning that says how many were evaluated (counting it as 0 would turn a 5-query run's 0.74
into 0.074). Scores must be finite numbers.
"""
from __future__ import annotations

import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "AP", "R@100")


class Scores(dict):
    """``{measure name: mean}`` plus how it was computed.

    Attributes: ``n_queries`` (queries evaluated: in the run and in the qrels),
    ``n_qrels_queries`` (queries with qrels), ``missing`` (qids of the qrels the run does not
    rank, sorted).
    """

    n_queries: int = 0
    n_qrels_queries: int = 0
    missing: tuple = ()


def parse_measures(measures: str | Iterable) -> list:
    """ir_measures measure objects from names (ir_measures or trec_eval) or measure objects."""
    import ir_measures

    if isinstance(measures, str) or not isinstance(measures, Iterable):
        measures = [measures]
    out = []
    for m in measures:
        if isinstance(m, str):
            try:
                out.append(ir_measures.parse_measure(m))
                continue
            except Exception:
                pass
            try:
                out.extend(ir_measures.parse_trec_measure(m))
            except Exception:
                raise ValueError(f"unknown measure {m!r}; use ir_measures names such as "
                                 "nDCG@10, RR@10, AP, R@100, P@5 (or trec_eval names such as "
                                 "ndcg_cut_10, recip_rank, map, P_10)") from None
        else:
            out.append(m)
    if not out:
        raise ValueError("no measure given; e.g. measures=['nDCG@10', 'RR@10']")
    return out


def _frames(run: pd.DataFrame, qrels: pd.DataFrame):
    for c in ("qid", "docno", "score"):
        if c not in run.columns:
            raise ValueError(f"a run needs columns qid, docno, score (missing {c!r})")
    score = pd.to_numeric(run["score"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(score)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{int(bad.sum())} score(s) of the run are NaN, infinite or not numbers (e.g. qid "
            f"{run['qid'].iloc[i]!r}, docno {run['docno'].iloc[i]!r}: {run['score'].iloc[i]!r}); "
            "a ranking needs finite scores: check the ranker's output")
    r = pd.DataFrame({"query_id": run["qid"].astype(str).to_numpy(),
                      "doc_id": run["docno"].astype(str).to_numpy(), "score": score})
    q = pd.DataFrame({"query_id": qrels["qid"].astype(str), "doc_id": qrels["docno"].astype(str),
                      "relevance": qrels["label"].astype(int)})
    in_run = set(r["query_id"])
    if not in_run & set(q["query_id"]):
        raise ValueError("the run and the qrels share no qid: are they from the same collection?")
    judged = sorted(set(q["query_id"]))
    missing = tuple(x for x in judged if x not in in_run)
    if missing:
        warnings.warn(
            f"the run ranks {len(judged) - len(missing)} of the {len(judged)} queries of the "
            f"qrels; the measures are means over those {len(judged) - len(missing)} (the "
            f"{len(missing)} unranked ones, e.g. qid {missing[0]!r}, are left out, not counted "
            "as 0)", UserWarning, stacklevel=3)
        q = q[q["query_id"].isin(in_run)]
    return r, q, len(judged), missing


def evaluate(run: pd.DataFrame, qrels: pd.DataFrame, measures: str | Sequence = DEFAULT_MEASURES
             ) -> Scores:
    """Mean of each measure over the queries in both the run and the qrels: ``{name: value}``
    (a :class:`Scores` dict; ``.n_queries`` says how many queries were evaluated)."""
    import ir_measures

    parsed = parse_measures(measures)
    r, q, n_judged, missing = _frames(run, qrels)
    agg = ir_measures.calc_aggregate(parsed, q, r)
    out = Scores({str(m): float(agg[m]) for m in parsed})
    out.n_queries = int(q["query_id"].nunique())
    out.n_qrels_queries = n_judged
    out.missing = missing
    return out


def evaluate_per_query(run: pd.DataFrame, qrels: pd.DataFrame,
                       measures: str | Sequence = DEFAULT_MEASURES) -> pd.DataFrame:
    """One row per (qid, measure) for the queries in both the run and the qrels:
    ``qid, measure, value``."""
    import ir_measures

    parsed = parse_measures(measures)
    r, q, _, _ = _frames(run, qrels)
    rows = [(m.query_id, str(m.measure), float(m.value)) for m in ir_measures.iter_calc(parsed, q, r)]
    return pd.DataFrame(rows, columns=["qid", "measure", "value"])

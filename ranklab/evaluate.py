"""Effectiveness with ir_measures; measure names are ir_measures' strings (``nDCG@10``,
``RR@10``, ``AP``, ``R@100``, ...)."""
from __future__ import annotations

from typing import Iterable, Sequence

import pandas as pd

DEFAULT_MEASURES = ("nDCG@10", "RR@10", "AP", "R@100")


def parse_measures(measures: Iterable) -> list:
    import ir_measures

    out = []
    for m in measures:
        if isinstance(m, str):
            try:
                out.append(ir_measures.parse_measure(m))
            except Exception:
                raise ValueError(f"unknown measure {m!r}; use ir_measures names such as "
                                 "nDCG@10, RR@10, AP, R@100, P@5") from None
        else:
            out.append(m)
    return out


def _frames(run: pd.DataFrame, qrels: pd.DataFrame):
    for c in ("qid", "docno", "score"):
        if c not in run.columns:
            raise ValueError(f"a run needs columns qid, docno, score (missing {c!r})")
    r = pd.DataFrame({"query_id": run["qid"].astype(str), "doc_id": run["docno"].astype(str),
                      "score": run["score"].astype(float)})
    q = pd.DataFrame({"query_id": qrels["qid"].astype(str), "doc_id": qrels["docno"].astype(str),
                      "relevance": qrels["label"].astype(int)})
    if not set(r["query_id"]) & set(q["query_id"]):
        raise ValueError("the run and the qrels share no qid: are they from the same collection?")
    return r, q


def evaluate(run: pd.DataFrame, qrels: pd.DataFrame, measures: Sequence = DEFAULT_MEASURES) -> dict:
    """Mean of each measure over the queries that have qrels: ``{name: value}``."""
    import ir_measures

    parsed = parse_measures(measures)
    r, q = _frames(run, qrels)
    agg = ir_measures.calc_aggregate(parsed, q, r)
    return {str(m): float(agg[m]) for m in parsed}


def evaluate_per_query(run: pd.DataFrame, qrels: pd.DataFrame, measures: Sequence = DEFAULT_MEASURES) -> pd.DataFrame:
    """One row per (qid, measure): ``qid, measure, value``."""
    import ir_measures

    parsed = parse_measures(measures)
    r, q = _frames(run, qrels)
    rows = [(m.query_id, str(m.measure), float(m.value)) for m in ir_measures.iter_calc(parsed, q, r)]
    return pd.DataFrame(rows, columns=["qid", "measure", "value"])

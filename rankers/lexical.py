"""An exactly computable lexical ranker, for tests and worked examples.

``score(q, d) = sum over word occurrences t of d of (weights.get(t, 0) + query_weight * [t in q])``
with words lower-cased and split as in :mod:`attacks.text` (``\\w+`` runs). No model, no
randomness: every score can be checked by hand.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .base import WORD as _WORD
from .base import Ranker


class TermWeightRanker(Ranker):
    def __init__(self, weights: Mapping[str, float] | None = None, query_weight: float = 1.0,
                 name: str = "term-weight"):
        self.weights = {k.lower(): float(v) for k, v in (weights or {}).items()}
        self.query_weight = float(query_weight)
        self.name = name
        self.calls = 0  # number of score_pairs calls (lets tests check batching)

    def _score_pairs(self, queries, docs):
        self.calls += 1
        out = np.empty(len(queries))
        for i, (q, d) in enumerate(zip(queries, docs)):
            qt = set(_WORD.findall(q.lower()))
            out[i] = sum(self.weights.get(t, 0.0) + self.query_weight * (t in qt)
                         for t in _WORD.findall(d.lower()))
        return out

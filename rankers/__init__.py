"""The shared neural-ranker interface of the lab (see ``rankers.base``)."""
from .base import Ranker, RankerError, add_ranks, from_pyterrier_ranks, to_pyterrier_ranks
from .cache import CachedRanker, ScoreCache
from .lexical import TermWeightRanker
from .loading import UnknownRanker, load_ranker, minilm_path
from .oracle import AccessDenied, BudgetExhausted, Oracle, rank_against

__all__ = [
    "Ranker", "RankerError", "add_ranks", "to_pyterrier_ranks", "from_pyterrier_ranks",
    "CachedRanker", "ScoreCache", "TermWeightRanker", "load_ranker", "minilm_path",
    "UnknownRanker", "Oracle", "BudgetExhausted", "AccessDenied", "rank_against",
]


def __getattr__(name):  # heavy modules import torch: load them on first use
    if name in ("BiEncoder", "CrossEncoder", "TransformerRanker"):
        from . import encoders

        return getattr(encoders, name)
    if name == "BM25Ranker":
        from .bm25 import BM25Ranker

        return BM25Ranker
    raise AttributeError(name)

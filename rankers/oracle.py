"""The Oracle: the only way an attack touches a victim ranker.

Access levels
-------------
``score``  the attacker sees raw scores of the pairs it submits.
``rank``   decision-based black box: the attacker submits a document for a query together with the
           candidate list it competes in and learns only its 1-based rank in that list.
``topk``   the attacker sees only the ordered docnos of the top ``k`` of a list.

Every scored (query, document) pair counts as one victim query. A budget (``budget=None`` means
unlimited) is checked *before* scoring; a request that would exceed it raises
:class:`BudgetExhausted` and scores nothing, so ``queries_used <= budget`` always holds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .base import Ranker, RankerError

ACCESS_LEVELS = ("score", "rank", "topk")


class BudgetExhausted(RuntimeError):
    """The oracle's query budget would be exceeded by a request."""


class AccessDenied(PermissionError):
    """The attacker asked for more than its access level allows."""


@dataclass
class OracleLogEntry:
    kind: str
    n_pairs: int
    query: str


@dataclass
class Oracle:
    """Metered access to a victim ranker.

    Parameters
    ----------
    ranker : the victim.
    access : one of ``score``, ``rank``, ``topk``.
    budget : max number of scored pairs over the oracle's life (``None`` = unlimited).
    k : list length revealed at access level ``topk``.
    tie_rule : ``"pessimistic"`` (default; ties rank the submitted document below others) or
        ``"optimistic"``.
    """

    ranker: Ranker
    access: str = "score"
    budget: int | None = None
    k: int = 10
    tie_rule: str = "pessimistic"
    log_requests: bool = False
    queries_used: int = 0
    log: list = field(default_factory=list)

    def __post_init__(self):
        if self.access not in ACCESS_LEVELS:
            raise ValueError(f"unknown access level {self.access!r}; use one of {ACCESS_LEVELS}")
        if self.budget is not None and self.budget < 0:
            raise ValueError("budget must be >= 0 or None")
        if self.tie_rule not in ("pessimistic", "optimistic"):
            raise ValueError("tie_rule must be 'pessimistic' or 'optimistic'")

    @property
    def name(self) -> str:
        return self.ranker.name

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else self.budget - self.queries_used

    def _charge(self, n: int, kind: str, query: str) -> None:
        if self.budget is not None and self.queries_used + n > self.budget:
            raise BudgetExhausted(
                f"oracle budget exhausted: {self.queries_used} of {self.budget} victim queries used, "
                f"this request needs {n} more. Raise the budget (budget=None for unlimited) or "
                "ask for fewer pairs.")
        self.queries_used += n
        if self.log_requests:
            self.log.append(OracleLogEntry(kind, n, query))

    def _score(self, queries: Sequence[str], docs: Sequence[str], kind: str) -> np.ndarray:
        queries, docs = list(queries), list(docs)
        self._charge(len(queries), kind, queries[0] if queries else "")
        return self.ranker.score_pairs(queries, docs)

    # -- access level "score" -------------------------------------------------------------
    def score_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        """Raw victim scores (access ``score`` only). Each pair costs one query."""
        if self.access != "score":
            raise AccessDenied(f"raw scores need access='score' (this oracle has {self.access!r})")
        return self._score(queries, docs, "score")

    def score(self, query: str, docs: Sequence[str]) -> np.ndarray:
        docs = list(docs)
        return self.score_pairs([query] * len(docs), docs)

    # -- access level "rank" (also allowed with "score") ----------------------------------
    def rank_of(self, query: str, doc: str, other_scores: np.ndarray) -> int:
        """1-based rank of ``doc`` among documents whose victim scores are ``other_scores``.

        ``other_scores`` are the fixed scores of the other candidates (the original list without
        the target), known to the oracle's owner; the attacker learns only the rank. Costs one
        query. Ties follow ``tie_rule``.
        """
        if self.access == "topk":
            raise AccessDenied("rank feedback needs access 'rank' or 'score'")
        s = float(self._score([query], [doc], "rank")[0])
        return rank_against(s, other_scores, self.tie_rule)

    def ranks_of(self, query: str, docs: Sequence[str], other_scores: np.ndarray) -> list[int]:
        """:meth:`rank_of` for several alternative documents at once (one query each)."""
        if self.access == "topk":
            raise AccessDenied("rank feedback needs access 'rank' or 'score'")
        s = self._score([query] * len(docs), docs, "rank")
        return [rank_against(x, other_scores, self.tie_rule) for x in s]

    # -- access level "topk" (allowed with every level) -----------------------------------
    def topk(self, query: str, docs: Sequence[str], docnos: Sequence[str] | None = None) -> list[str]:
        """Docnos of the victim's top ``k`` of ``docs`` for ``query`` (costs len(docs) queries)."""
        docs = list(docs)
        docnos = [str(i) for i in range(len(docs))] if docnos is None else [str(d) for d in docnos]
        s = self._score([query] * len(docs), docs, "topk")
        order = np.argsort(-s, kind="stable")
        return [docnos[i] for i in order[: self.k]]

    def ranking(self, query: str, docs: Sequence[str], docnos: Sequence[str] | None = None) -> list[str]:
        """The victim's full ordering of ``docs`` (access ``rank`` or ``score``)."""
        if self.access == "topk":
            raise AccessDenied("a full ranking needs access 'rank' or 'score'; use topk()")
        docs = list(docs)
        docnos = [str(i) for i in range(len(docs))] if docnos is None else [str(d) for d in docnos]
        s = self._score([query] * len(docs), docs, "ranking")
        return [docnos[i] for i in np.argsort(-s, kind="stable")]


def rank_against(score: float, other_scores, tie_rule: str = "pessimistic") -> int:
    """1-based rank of a document with ``score`` among ``other_scores`` (held fixed).

    ``pessimistic``: ``1 + #{others >= score}`` (ties count against the document);
    ``optimistic``: ``1 + #{others > score}``.
    """
    other = np.asarray(other_scores, dtype=np.float64)
    if tie_rule == "pessimistic":
        return 1 + int(np.count_nonzero(other >= score))
    if tie_rule == "optimistic":
        return 1 + int(np.count_nonzero(other > score))
    raise RankerError(f"unknown tie_rule {tie_rule!r}")

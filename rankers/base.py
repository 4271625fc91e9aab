"""The shared ranker interface: one primitive (:meth:`Ranker.score_pairs`), the rest derived.

Conventions
-----------
* Scores are raw relevance scores (logits, similarities, BM25 values): higher = more relevant.
  No ranker squashes its scores; smoothing and certification choose their own squashing.
* Ranks are **1-based** (rank 1 = best). PyTerrier uses 0-based ranks; use
  :func:`to_pyterrier_ranks` / :func:`from_pyterrier_ranks` to convert.
* Ties in :meth:`Ranker.rank` are broken by the original input order (a stable sort), so a
  ranking is deterministic.
* Frames use PyTerrier/ir_measures column names: a run has ``qid, query, docno, text, score,
  rank``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np
import pandas as pd


#: The lab's word: a maximal run of ``\w`` characters (letters, digits, underscore;
#: unicode-aware). Tokenisation for attacks, certification and the lexical ranker uses it.
WORD = re.compile(r"\w+", re.UNICODE)


class RankerError(ValueError):
    """Bad input to a ranker (empty document, missing column, ...). The message says what to do."""


def _check_sequence(value, what: str, call: str):
    """``list(value)``, refusing a lone string (it would be split into characters)."""
    if isinstance(value, (str, bytes)):
        raise RankerError(
            f"{call} takes a sequence of strings for {what}, got a single "
            f"{type(value).__name__} ({value[:40]!r}), which would be split into characters; "
            "pass a list with one string per pair (e.g. [text])")
    try:
        return list(value)
    except TypeError:
        raise RankerError(f"{call} takes a sequence of strings for {what}, got "
                          f"{type(value).__name__}") from None


def _check_texts(queries: Sequence[str], docs: Sequence[str]) -> None:
    if len(queries) != len(docs):
        raise RankerError(
            f"score_pairs needs as many queries as documents, got {len(queries)} and {len(docs)}")
    for kind, seq in (("query", queries), ("document", docs)):
        for i, t in enumerate(seq):
            if not isinstance(t, str):
                raise RankerError(f"{kind} #{i} is {type(t).__name__}, expected str")
            if not t.strip():
                raise RankerError(
                    f"{kind} #{i} is empty or whitespace only; drop it from the input or give it "
                    "text (an empty text has no meaningful relevance score)")


class Ranker:
    """Base class. Subclasses implement :meth:`_score_pairs` (validated inputs, raw scores).

    Attributes
    ----------
    name : str
        Stable identifier, used in score caches and reports.
    pure : bool
        True when the score of a pair is a function of (query, text) alone, whatever else is in
        the batch (a cross-encoder, a fitted BM25). False for rankers whose scores depend on the
        other pairs of a call (an unfitted :class:`~rankers.bm25.BM25Ranker` indexes each batch).
        Certification needs a pure ranker.
    """

    name: str = "ranker"
    pure: bool = True

    # -- the one primitive -------------------------------------------------------------------
    def score_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> np.ndarray:
        """Raw scores for aligned (query, document) pairs, shape ``(len(queries),)``, float64.

        Raises :class:`RankerError` for mismatched lengths and empty texts.
        """
        queries = _check_sequence(queries, "queries", "score_pairs")
        docs = _check_sequence(docs, "docs", "score_pairs")
        _check_texts(queries, docs)
        if not queries:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self._score_pairs(queries, docs), dtype=np.float64).reshape(len(queries))

    def _score_pairs(self, queries: list[str], docs: list[str]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    # -- derived -------------------------------------------------------------------------------
    def score(self, query: str, docs: Sequence[str]) -> np.ndarray:
        """Scores of many documents for one query, shape ``(len(docs),)``."""
        docs = _check_sequence(docs, "docs", "score")
        return self.score_pairs([query] * len(docs), docs)

    def rank(self, query: str, docs: Sequence[str], docnos: Sequence[str] | None = None,
             qid: str = "q") -> pd.DataFrame:
        """Rank ``docs`` for ``query``: a run frame sorted by rank (1-based)."""
        docs = _check_sequence(docs, "docs", "rank")
        docnos = [str(i) for i in range(len(docs))] if docnos is None else [str(d) for d in docnos]
        if len(docnos) != len(docs):
            raise RankerError(f"{len(docnos)} docnos for {len(docs)} documents")
        frame = pd.DataFrame({"qid": str(qid), "query": query, "docno": docnos, "text": docs})
        frame["score"] = self.score(query, docs)
        return add_ranks(frame)

    def transform(self, run: pd.DataFrame) -> pd.DataFrame:
        """Rerank a run frame (needs ``qid, query, docno, text``); returns a new frame.

        All pairs of the run are scored in one :meth:`score_pairs` call (so batching spans
        queries); the input frame is not modified. Output is sorted by ``qid`` then ``rank``.
        """
        require_columns(run, ["qid", "query", "docno", "text"], "transform")
        out = run.drop(columns=[c for c in ("score", "rank") if c in run.columns]).copy()
        out["qid"] = out["qid"].astype(str)
        out["docno"] = out["docno"].astype(str)
        out["score"] = self.score_pairs(out["query"].tolist(), out["text"].tolist())
        return add_ranks(out)

    def __call__(self, run: pd.DataFrame) -> pd.DataFrame:
        return self.transform(run)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def require_columns(frame: pd.DataFrame, columns: Iterable[str], what: str, hint: str = "",
                    error: type[Exception] = RankerError) -> None:
    """Raise ``error`` naming the missing columns (and ``hint``: what to do) unless ``frame`` has
    every one of ``columns``."""
    columns = list(columns)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise error(f"{what} needs columns {columns}; missing {missing} (have "
                    f"{list(frame.columns)}){'; ' + hint if hint else ''}")


def add_ranks(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort by ``qid`` and descending ``score`` (stable) and add a 1-based ``rank`` column."""
    frame = frame.reset_index(drop=True)
    order = np.lexsort((np.arange(len(frame)), -frame["score"].to_numpy(dtype=np.float64),
                        frame["qid"].astype(str).to_numpy()))
    frame = frame.iloc[order].reset_index(drop=True)
    frame["rank"] = frame.groupby("qid", sort=False).cumcount().astype(int) + 1
    return frame


def to_pyterrier_ranks(run: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``run`` with 0-based ranks (PyTerrier's convention)."""
    out = run.copy()
    out["rank"] = out["rank"] - 1
    return out


def from_pyterrier_ranks(run: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``run`` with 1-based ranks from PyTerrier's 0-based ones."""
    out = run.copy()
    out["rank"] = out["rank"] + 1
    return out


# ----------------------------------------------------------------------------- white box

@dataclass(frozen=True)
class AttackEncoding:
    """A (query, document) pair encoded for a white-box attack on a :class:`DifferentiableRanker`.

    ``inputs``      tensors of shape ``(1, L)`` on the ranker's device (``input_ids``,
                    ``attention_mask`` and, when the model uses them, ``token_type_ids``): what
                    the model reads, after truncation.
    ``doc_pieces``  ``(position in inputs, char start, char end)`` of every word piece of the
                    DOCUMENT that lies inside the truncation window, in order (character offsets
                    into the document text).
    ``doc_chars``   characters of the document inside the window (end of its last kept piece;
                    ``len(doc)`` when nothing is cut).
    ``truncated``   True when word pieces of the document were cut by ``max_length``.
    """

    inputs: dict
    doc_pieces: tuple
    doc_chars: int
    truncated: bool


@runtime_checkable
class DifferentiableRanker(Protocol):
    """The white-box interface that gradient attacks use; bi- and cross-encoders implement it with
    the same signatures (:class:`rankers.encoders.BiEncoder`, :class:`~rankers.encoders.CrossEncoder`).

    * ``max_length`` - the truncation window in word pieces (the document is cut, never the query).
    * ``input_embeddings()`` - the word-piece embedding module (``torch.nn.Embedding``); its
      weight is shared and must never be modified by an attack.
    * ``encode_for_attack(query, doc)`` - an :class:`AttackEncoding` of the pair as the model reads
      it (for a bi-encoder, the document alone; the query is encoded separately and cached).
    * ``score_embeds(query, inputs_embeds, attention_mask, token_type_ids=None)`` - differentiable
      scores ``(b,)`` (float32) of the documents given as input embeddings ``(b, L, dim)`` of the
      encoded inputs (same positions as ``encode_for_attack``), equal to :meth:`Ranker.score` up to
      float rounding. The caller chooses eval mode and grad mode.
    * ``piece_ids(word)`` - the word-piece ids of a word (no special tokens).
    """

    max_length: int

    def input_embeddings(self) -> Any: ...

    def encode_for_attack(self, query: str, doc: str) -> AttackEncoding: ...

    def score_embeds(self, query: str, inputs_embeds: Any, attention_mask: Any,
                     token_type_ids: Any = None) -> Any: ...

    def piece_ids(self, word: str) -> list: ...


def as_differentiable(ranker: Any) -> DifferentiableRanker | None:
    """``ranker`` (or the ranker inside a score cache, :class:`rankers.cache.CachedRanker`, whose
    scores are the same) as a :class:`DifferentiableRanker`, or ``None`` when it does not
    implement the protocol."""
    from .cache import CachedRanker

    while isinstance(ranker, CachedRanker):
        ranker = ranker.ranker
    return ranker if isinstance(ranker, DifferentiableRanker) else None

"""Score cache keyed by text, never by docno (attacks change a document's text, not its id).

Key: ``(ranker.name, sha1(query), sha1(doc))``. :class:`CachedRanker` wraps any ranker and scores
only the pairs it has not seen; hits and misses are counted.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np

from .base import Ranker


def text_key(text: str) -> bytes:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest()


class ScoreCache:
    """An LRU map ``(ranker name, query, doc) -> score``; ``max_size=None`` is unbounded."""

    def __init__(self, max_size: int | None = 1_000_000):
        self.max_size = max_size
        self._d: OrderedDict[tuple, float] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def key(self, ranker_name: str, query: str, doc: str) -> tuple:
        return (ranker_name, text_key(query), text_key(doc))

    def get(self, key):
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key, value: float) -> None:
        self._d[key] = float(value)
        self._d.move_to_end(key)
        if self.max_size is not None and len(self._d) > self.max_size:
            self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)

    def clear(self) -> None:
        self._d.clear()
        self.hits = self.misses = 0


class CachedRanker(Ranker):
    """A ranker that remembers scores by text; scores the misses of a call in one batch."""

    def __init__(self, ranker: Ranker, cache: ScoreCache | None = None):
        self.ranker = ranker
        self.cache = cache if cache is not None else ScoreCache()
        self.name = ranker.name

    @property
    def pure(self) -> bool:
        return bool(getattr(self.ranker, "pure", True))

    def _score_pairs(self, queries, docs):
        keys = [self.cache.key(self.name, q, d) for q, d in zip(queries, docs)]
        out = np.empty(len(keys))
        todo: dict[tuple, list[int]] = {}
        for i, k in enumerate(keys):
            v = self.cache.get(k)
            if v is None:
                todo.setdefault(k, []).append(i)
            else:
                out[i] = v
        self.cache.hits += len(keys) - len(todo)  # duplicates within a call are hits too
        if todo:
            first = [idx[0] for idx in todo.values()]
            scores = self.ranker.score_pairs([queries[i] for i in first], [docs[i] for i in first])
            self.cache.misses += len(first)
            for (k, idx), s in zip(todo.items(), scores):
                self.cache.put(k, s)
                out[idx] = s
        return out

    def __getattr__(self, item):  # expose the wrapped ranker's extras (tokenizer, model, ...)
        if item in ("ranker", "cache", "name"):
            raise AttributeError(item)
        return getattr(self.ranker, item)

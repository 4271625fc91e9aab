"""Score cache keyed by text, never by docno (attacks change a document's text, not its id).

Key: ``(ranker.name, sha1(query), sha1(doc))``. :class:`CachedRanker` wraps any ranker and scores
only the pairs it has not seen; hits and misses are counted.
"""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

import numpy as np

from .base import Ranker


def text_key(text: str) -> bytes:
    """20-byte digest of a text (sha1): the cache key of a query or a document."""
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).digest()


def fingerprint(obj, length: int = 16) -> str:
    """Stable hex digest (sha256) of a JSON-able object (dict keys sorted, other objects by
    ``str``): the one fingerprint of configs, threat models, smoothing sets and cache entries."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


class LRU:
    """A bounded least-recently-used map (``max_size=None``: unbounded). ``get`` refreshes an
    entry; ``put`` evicts the oldest once ``max_size`` is exceeded."""

    def __init__(self, max_size: int | None = 1_000_000):
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be >= 1 or None, got {max_size!r}")
        self.max_size = max_size
        self._d: OrderedDict = OrderedDict()

    def get(self, key, default=None):
        v = self._d.get(key, default)
        if key in self._d:
            self._d.move_to_end(key)
        return v

    def put(self, key, value) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        if self.max_size is not None and len(self._d) > self.max_size:
            self._d.popitem(last=False)

    def keys(self) -> list:
        """Keys from the least to the most recently used."""
        return list(self._d)

    def __contains__(self, key) -> bool:
        return key in self._d

    def __len__(self) -> int:
        return len(self._d)

    def clear(self) -> None:
        self._d.clear()


class ScoreCache(LRU):
    """An LRU map ``(ranker name, query, doc) -> score``; ``max_size=None`` is unbounded."""

    def __init__(self, max_size: int | None = 1_000_000):
        super().__init__(max_size)
        self.hits = 0
        self.misses = 0

    def key(self, ranker_name: str, query: str, doc: str) -> tuple:
        return (ranker_name, text_key(query), text_key(doc))

    def put(self, key, value: float) -> None:
        super().put(key, float(value))

    def clear(self) -> None:
        super().clear()
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

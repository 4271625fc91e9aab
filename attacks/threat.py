"""Threat models: which words may replace which (shared by attacks and certification).

Every substitution source implements one interface, :meth:`ThreatModel.neighbours`. Lookups are
case-insensitive; substitutes are returned lower-case (use :func:`match_case` to copy the
capitalisation of the original word when substituting).
"""
from __future__ import annotations

import hashlib
import json
from typing import Iterable, Mapping


def match_case(template: str, word: str) -> str:
    """``word`` with the capitalisation pattern of ``template`` (UPPER, Title or lower)."""
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


class ThreatModel:
    """Base class of substitution sources.

    ``name`` is a short human-readable description; ``fingerprint`` a hex digest of the canonical
    description (source, parameters, data hashes) that results and certificates record.
    """

    name: str = "threat"

    def neighbours(self, word: str) -> list[str]:
        """Allowed substitutes for ``word`` (never ``word`` itself), best first. Lower-case."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Canonical JSON-able description; the fingerprint hashes it."""
        return {"type": type(self).__name__, "name": self.name}

    @property
    def fingerprint(self) -> str:
        blob = json.dumps(self.describe(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def similarity(self, a: str, b: str) -> float | None:
        """Similarity of two words in [-1, 1] when the source defines one, else ``None``."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, fingerprint={self.fingerprint})"


class SynonymTable(ThreatModel):
    """A finite table word -> substitutes (e.g. a synonym-pair file, or a dict in tests).

    ``symmetric=True`` adds the reverse of every pair (a ~ b implies b ~ a).
    """

    def __init__(self, table: Mapping[str, Iterable[str]], symmetric: bool = True,
                 name: str = "table"):
        merged: dict[str, list[str]] = {}

        def add(a: str, b: str) -> None:
            a, b = a.lower(), b.lower()
            if a == b:
                return
            lst = merged.setdefault(a, [])
            if b not in lst:
                lst.append(b)

        for w, subs in table.items():
            for s in subs:
                add(w, s)
                if symmetric:
                    add(s, w)
        self._table = merged
        self.symmetric = symmetric
        self.name = name

    def neighbours(self, word: str) -> list[str]:
        return list(self._table.get(word.lower(), ()))

    def vocabulary(self) -> list[str]:
        """Every word that has at least one substitute, sorted."""
        return sorted(self._table)

    def describe(self) -> dict:
        return {"type": "SynonymTable", "symmetric": self.symmetric,
                "table": {k: sorted(v) for k, v in sorted(self._table.items())}}

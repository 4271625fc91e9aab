"""Word-level view of a text, shared by attacks and certification.

A text is split into alternating *word* and *gap* pieces so that joining the pieces gives the
original text back exactly (``tokenize(t).text() == t``). Words are maximal runs of
``\\w`` characters (letters, digits, underscore, unicode-aware); gaps are everything in between
(spaces, punctuation). Substitutions only ever replace word pieces, so punctuation and spacing
survive an attack untouched, and the perturbation percentage counts words only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from rankers.base import WORD

_PIECE = re.compile(r"\w+|\W+", re.UNICODE)


@dataclass(frozen=True)
class WordView:
    """A text as pieces plus the indices of the pieces that are words.

    ``pieces``: every piece of the text in order; ``word_idx``: positions in ``pieces`` of word
    pieces. Word position ``i`` (0-based) is ``pieces[word_idx[i]]``.
    """

    pieces: tuple[str, ...]
    word_idx: tuple[int, ...]

    @property
    def words(self) -> list[str]:
        return [self.pieces[i] for i in self.word_idx]

    def __len__(self) -> int:
        return len(self.word_idx)

    def replace(self, subs: dict[int, str]) -> str:
        """Text with word positions replaced: ``subs`` maps 0-based word position -> new word."""
        pieces = list(self.pieces)
        for pos, new in subs.items():
            pieces[self.word_idx[pos]] = new
        return "".join(pieces)

    def text(self) -> str:
        return "".join(self.pieces)


def tokenize(text: str) -> WordView:
    """Split ``text`` into a :class:`WordView` (exact round trip)."""
    pieces = tuple(_PIECE.findall(text))
    word_idx = tuple(i for i, p in enumerate(pieces) if WORD.fullmatch(p))
    return WordView(pieces, word_idx)


def words(text: str) -> list[str]:
    """The word pieces of ``text`` in order."""
    return WORD.findall(text)


def changed_positions(original: str, adversarial: str) -> list[int]:
    """0-based word positions whose word differs (word-level alignment by position).

    Substitution attacks keep the number of words fixed; if the counts differ (insertions) the
    surplus positions of the longer text count as changed.
    """
    a, b = words(original), words(adversarial)
    n = max(len(a), len(b))
    return [i for i in range(n) if i >= len(a) or i >= len(b) or a[i] != b[i]]

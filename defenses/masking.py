"""Randomized masking smoothing (RanMASK / RobustMask): a certificate against ANY substitution.

The smoothed score of a document ``d`` of ``n`` words (the ``\\w+`` pieces of
:mod:`attacks.text`) is

    g(q, d) = E_U [ squash(f(q, mask(d, U))) ],   U uniform over the k-subsets of {1..n},

where ``mask(d, U)`` keeps the words at the positions in ``U`` and replaces every other word by
the tokenizer's mask token (``mask="token"``) or removes it (``mask="drop"``); gaps (spaces,
punctuation) are kept. ``k = max(1, round(keep * n))`` (or ``keep_count``, at most ``n``).

The bound (derivation). Let ``d'`` differ from ``d`` in at most ``r`` word positions, the set
``P`` (same number of words, same gaps: a word replaced by another single ``\\w+`` word). For a
subset ``U`` with ``U ∩ P = ∅``, ``mask(d, U) = mask(d', U)`` (the kept words are identical,
the masked ones are replaced by the same token or removed, the gaps are equal). ``U`` is drawn
from the same distribution for ``d`` and ``d'`` (it depends on ``n`` and ``k`` only), so couple
the two smoothing distributions through the same ``U``: they differ only on
``{U : U ∩ P ≠ ∅}``, whose probability is

    1 - P(U ∩ P = ∅) = 1 - C(n - |P|, k) / C(n, k)
                     <= 1 - C(n - r, k) / C(n, k) =: Delta(n, k, r).

Hence the total variation between the distributions of ``mask(d, U)`` and ``mask(d', U)`` is at
most ``Delta`` and every ``[0, 1]``-valued function of the masked text (the squashed base score)
moves by at most ``Delta`` in expectation: ``|g(q, d') - g(q, d)| <= Delta(n, k, r)``, whatever
the substitutes are. So one certificate holds against every word-substitution threat model at
once. ``Delta = 1`` when ``r > n - k`` (every subset meets ``P``); ``Delta(n, k, 0) = 0``;
``Delta`` is non-decreasing in ``r``. Numerically ``C(n-r, k)/C(n, k) = prod_{i<r} (n-k-i)/(n-i)``.
Insertions or deletions of words (which change ``n`` and shift positions) are not covered, nor
substitutes that are not a single word (e.g. ``"ice cream"``): they change the word positions.

Budgets: the certifier asks ``radius(text, R)`` with ``R`` words (``None``: every word, so
``Delta = 1`` unless ``k = 0``); a share ``rho`` of a document's words means
``r = floor(rho * n)`` (see :func:`defenses.certify.certify`'s ``r_share``).

Sampling reuses :class:`defenses.smoothing.SmoothedRanker`'s streams: a random k-subset is a
partial Fisher-Yates shuffle driven by ``k`` independent uniform integers in ``[0, n), [0, n-1),
..., [0, n-k+1)`` (every ordered prefix equally likely, so every k-subset equally likely), which
are exactly the per-position uniform draws of the smoothing streams (seeded per (query, document)
and chunk, the same draw however and in whatever batch it is asked).
"""
from __future__ import annotations

import itertools
import math
import re

import numpy as np

from attacks.text import tokenize
from rankers.base import Ranker

from .smoothing import CHUNK, SmoothedRanker, _split64, stable_hash

__all__ = ["MaskedSmoothedRanker", "mask_radius", "mask_radius_curve", "kept_count",
           "mask_noise_transform", "MASK_MODES"]

MASK_MODES = ("token", "drop")
_SPACES = re.compile(r"\s+")


def kept_count(n: int, keep: float = 0.3, keep_count: int | None = None) -> int:
    """``k``, the number of words kept of ``n``: ``keep_count`` (capped at ``n``) when given,
    else ``max(1, floor(keep * n + 0.5))`` (at most ``n``); 0 for ``n = 0``."""
    n = int(n)
    if n <= 0:
        return 0
    if keep_count is not None:
        return min(int(keep_count), n)
    return min(n, max(1, int(math.floor(keep * n + 0.5))))


def mask_radius_curve(n: int, k: int, r_max: int | None = None) -> np.ndarray:
    """``Delta(n, k, r)`` for ``r = 0 .. r_max`` (default ``n``), shape ``(r_max + 1,)``.

    ``Delta(n, k, r) = 1 - C(n-r, k) / C(n, k)`` for ``r <= n``; ``r > n`` counts as ``n``.
    """
    n, k = int(n), int(k)
    r_max = n if r_max is None else int(r_max)
    out = np.ones(r_max + 1, dtype=np.float64)
    out[0] = 0.0
    if k <= 0 or n <= 0:
        out[:] = 0.0  # nothing is kept (or nothing to change): the masked text never changes
        return out
    i = np.arange(min(r_max, n))
    ratio = np.cumprod(np.maximum(n - k - i, 0) / (n - i))  # C(n-r, k)/C(n, k), r = 1..
    out[1: len(ratio) + 1] = 1.0 - ratio
    return np.clip(out, 0.0, 1.0)


def mask_radius(n: int, k: int, r: int | None) -> float:
    """``Delta(n, k, r)`` (``r=None``: every word, ``r = n``). See the module docstring."""
    if r is not None and (int(r) != r or r < 0):
        raise ValueError(f"r must be a non-negative integer or None, got {r!r}")
    r = int(n) if r is None else min(int(r), int(n))
    return float(mask_radius_curve(n, k, r)[r])


class _MaskPlan:
    """How to mask one document: its word pieces, gaps, ``n``, ``k`` and the stream sizes."""

    __slots__ = ("segments", "words", "n", "k", "sizes", "mask_token")

    def __init__(self, text: str, k_of_n, mask_token: str | None):
        view = tokenize(text)
        segs, cur = [], []
        wset = set(view.word_idx)
        for i, piece in enumerate(view.pieces):
            if i in wset:
                segs.append("".join(cur))
                cur = []
            else:
                cur.append(piece)
        segs.append("".join(cur))
        self.segments = np.array(segs, dtype=object)
        self.words = np.array(view.words, dtype=object)
        self.n = len(view.word_idx)
        self.k = k_of_n(self.n)
        self.mask_token = mask_token  # None: drop
        # no masking when every word is kept (k = n): the text itself, one "draw"
        self.sizes = np.arange(self.n, self.n - self.k, -1, dtype=np.int64) \
            if self.k < self.n else np.zeros(0, dtype=np.int64)

    def kept(self, idx: np.ndarray) -> np.ndarray:
        """Boolean ``(u, n)``: the kept positions of each draw row (partial Fisher-Yates)."""
        u = idx.shape[0]
        perm = np.tile(np.arange(self.n, dtype=np.int64), (u, 1))
        rows = np.arange(u)
        for j in range(self.k):
            t = j + idx[:, j]
            a, b = perm[rows, j].copy(), perm[rows, t]
            perm[rows, j] = b
            perm[rows, t] = a
        out = np.zeros((u, self.n), dtype=bool)
        out[rows[:, None], perm[:, : self.k]] = True
        return out

    def texts_from_kept(self, kept: np.ndarray) -> np.ndarray:
        u = kept.shape[0]
        fill = "" if self.mask_token is None else self.mask_token
        words = np.where(kept, self.words[None, :], fill)
        grid = np.empty((u, 2 * self.n + 1), dtype=object)
        grid[:, 0::2] = self.segments
        grid[:, 1::2] = words
        out = np.empty(u, dtype=object)
        joined = map("".join, grid.tolist())
        if self.mask_token is None:  # drop: removed words leave their gaps; squeeze whitespace
            joined = (_SPACES.sub(" ", t).strip() for t in joined)
        out[:] = list(joined)
        return out

    def texts(self, idx: np.ndarray) -> np.ndarray:
        """Object array of masked texts for draw rows ``idx`` (shape ``(u, k)``)."""
        return self.texts_from_kept(self.kept(idx))


class MaskedSmoothedRanker(SmoothedRanker):
    """``g(q, d) = mean_n squash(f(q, mask(d, U_n)))`` with ``U_n`` uniform k-subsets of the words.

    A :class:`SmoothedRanker` whose smoothing distribution is random masking instead of random
    substitution (module docstring: the bound and its derivation); sampling, batching, caching,
    squashing and the forward-pass counter are SmoothedRanker's, so :func:`defenses.certify.certify`
    (rigorous and adaptive modes) works unchanged and asks :meth:`radius` for each document.

    Parameters
    ----------
    base : Ranker
        The ranker ``f`` (raw scores).
    keep : float in (0, 1]
        Share of a document's words kept: ``k = max(1, round(keep * n))``. Ignored when
        ``keep_count`` is given.
    keep_count : int >= 1, optional
        A fixed number of kept words (at most ``n``).
    mask : "token" | "drop"
        Masked words are replaced by ``mask_token`` or removed.
    mask_token : str, optional
        Default: the base ranker's tokenizer's mask token (``base.tokenizer.mask_token``, looked up
        through ``.base`` wrappers such as the certify job's CenteredRanker); required for
        ``mask="token"`` with rankers without a tokenizer.
    n_samples, seed, squash, temperature, center, batch_size :
        As :class:`SmoothedRanker` (draws seeded by ``(seed, hash(doc), hash(query), chunk)``).

    ``sets`` and ``threat`` are ``None`` (masking needs no threat model).
    """

    def __init__(self, base: Ranker, keep: float = 0.3, keep_count: int | None = None,
                 mask: str = "token", mask_token: str | None = None, n_samples: int = 1000,
                 seed: int = 0, squash: str = "sigmoid", temperature: float = 1.0,
                 batch_size: int = 1024, center: float = 0.0):
        t = self._init_draws(base, n_samples, seed, squash, temperature, center, batch_size)
        if keep_count is None:
            if isinstance(keep, bool) or not (isinstance(keep, (int, float)) and 0 < keep <= 1):
                raise ValueError(f"keep must be a share of words in (0, 1], got {keep!r} "
                                 "(use keep_count=K for a fixed number of kept words)")
        elif isinstance(keep_count, bool) or int(keep_count) != keep_count or keep_count < 1:
            raise ValueError(f"keep_count must be a positive integer, got {keep_count!r}")
        if mask not in MASK_MODES:
            raise ValueError(f"unknown mask {mask!r}; valid: {list(MASK_MODES)}")
        if mask == "token":
            mask_token = mask_token or _find_mask_token(base)
            if not mask_token:
                raise ValueError(f"mask='token' needs a mask token: {base.name!r} has no tokenizer "
                                 "with one; pass mask_token='[MASK]' (or similar) or use "
                                 "mask='drop'")
        self.sets = None
        self.threat = None
        self.keep = None if keep_count is not None else float(keep)
        self.keep_count = None if keep_count is None else int(keep_count)
        self.mask = mask
        self.mask_token = mask_token if mask == "token" else None
        kk = f"k={self.keep_count}" if self.keep_count is not None else f"keep={self.keep:g}"
        mk = f"token={self.mask_token}" if mask == "token" else "drop"
        self.name = (f"masked({base.name}|{kk}|{mk}|N={self.n_samples}|seed={self.seed}"
                     f"|{squash}{t})")

    def describe(self) -> dict:
        return {"type": "MaskedSmoothedRanker", "smoothing": "mask", "base": self.base.name,
                "keep": self.keep, "keep_count": self.keep_count, "mask": self.mask,
                "mask_token": self.mask_token, "n_samples": self.n_samples, "seed": self.seed,
                "squash": self.squash, "temperature": self.temperature, "center": self.center,
                "batch_size": self.batch_size, "chunk": CHUNK}

    # -- masking -------------------------------------------------------------------------------
    def k_of(self, n: int) -> int:
        """Words kept of a document of ``n`` words."""
        return kept_count(n, self.keep if self.keep is not None else 0.0, self.keep_count)

    def n_words(self, text: str) -> int:
        return len(tokenize(text).word_idx)

    def _plan(self, text: str) -> _MaskPlan:
        p = self._plans.get(text)
        if p is None:
            if len(self._plans) >= 20000:
                self._plans.clear()
            p = self._plans[text] = _MaskPlan(text, self.k_of, self.mask_token)
        return p

    def radius(self, text: str, R: int | None = None) -> float:
        """``Delta(n, k, R)`` (module docstring): the most ``g(q, text)`` can move when at most
        ``R`` words are substituted (``None``: every word, so 1 unless nothing is kept)."""
        p = self._plan(text)
        return mask_radius(p.n, p.k, R)

    def radius_curve(self, text: str, r_max: int | None = None) -> np.ndarray:
        """``radius(text, r)`` for ``r = 0 .. r_max`` (default: the number of words)."""
        p = self._plan(text)
        return mask_radius_curve(p.n, p.k, p.n if r_max is None else r_max)

    def exact_score(self, query: str, doc: str, max_subsets: int = 20000) -> float:
        """Exact ``g(q, doc)`` by enumerating every k-subset (tiny documents; for tests)."""
        p = self._plan(doc)
        if len(p.sizes) == 0:
            return float(self.squash_scores(self.base.score_pairs([query], [doc]))[0])
        if math.comb(p.n, p.k) > max_subsets:
            raise ValueError(f"C({p.n}, {p.k}) = {math.comb(p.n, p.k)} subsets > max_subsets="
                             f"{max_subsets}; exact scores are for tiny documents")
        kept = np.zeros((math.comb(p.n, p.k), p.n), dtype=bool)
        for i, sub in enumerate(itertools.combinations(range(p.n), p.k)):
            kept[i, list(sub)] = True
        texts = list(p.texts_from_kept(kept))
        uniq = sorted(set(texts))
        f = dict(zip(uniq, self.squash_scores(self.base.score_pairs([query] * len(uniq), uniq))))
        return float(np.mean([f[t] for t in texts]))


def _find_mask_token(ranker) -> str | None:
    seen = 0
    while ranker is not None and seen < 10:
        tok = getattr(ranker, "tokenizer", None)
        if tok is not None and getattr(tok, "mask_token", None):
            return str(tok.mask_token)
        ranker = getattr(ranker, "base", None)
        seen += 1
    return None


def mask_noise_transform(keep: float = 0.3, keep_count: int | None = None, mask: str = "token",
                         mask_token: str | None = None, seed: int = 0,
                         fresh_per_epoch: bool = False):
    """A ``doc_transform(docs, epoch, rng) -> list`` for matched noisy training with masking.

    For :func:`rankers.training.train_cross_encoder`: every document of a batch is replaced by one
    masking of it, drawn exactly as :class:`MaskedSmoothedRanker` draws (same ``k``, same
    ``mask``/``mask_token``), keyed by ``(seed, stable hash of the text)`` (and the epoch with
    ``fresh_per_epoch=True``), so a document gets the same copy whichever batch it lands in;
    ``rng`` is accepted and not used. ``mask="token"`` needs ``mask_token`` (the trained model's
    ``tokenizer.mask_token``, e.g. ``"[MASK]"``). The input list is never modified. The function
    carries ``.describe()`` for training metadata.
    """
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if mask not in MASK_MODES:
        raise ValueError(f"unknown mask {mask!r}; valid: {list(MASK_MODES)}")
    if mask == "token" and not mask_token:
        raise ValueError("mask='token' needs mask_token (the model's tokenizer.mask_token, e.g. "
                         "'[MASK]'), or use mask='drop'")
    if keep_count is None and not (isinstance(keep, (int, float)) and 0 < keep <= 1):
        raise ValueError(f"keep must be a share of words in (0, 1], got {keep!r}")
    if keep_count is not None and (int(keep_count) != keep_count or keep_count < 1):
        raise ValueError(f"keep_count must be a positive integer, got {keep_count!r}")
    seed, fresh = int(seed), bool(fresh_per_epoch)
    tok = mask_token if mask == "token" else None

    def k_of(n):
        return kept_count(n, keep, keep_count)

    def doc_transform(docs, epoch=0, rng=None):
        if isinstance(docs, str):
            raise TypeError("doc_transform takes a list of documents, not one string")
        if fresh and (int(epoch) != epoch or epoch < 0):
            raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
        s = stable_hash(f"mask-epoch:{seed}:{int(epoch)}") if fresh else seed
        out = []
        for t in list(docs):
            p = _MaskPlan(t, k_of, tok)
            if len(p.sizes) == 0:
                out.append(t)
                continue
            g = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
                [s, *_split64(stable_hash(t)), 0x6D61736B])))
            idx = g.integers(0, p.sizes, size=(1, len(p.sizes)))
            out.append(str(p.texts(idx)[0]))
        return out

    doc_transform.describe = lambda: {"noise": "mask", "keep": keep, "keep_count": keep_count,
                                      "mask": mask, "mask_token": tok,
                                      "fresh_per_epoch": fresh, "seed": seed}
    return doc_transform

"""Randomized smoothing over word substitutions (CertDR): smoothing sets, radii, smoothed ranker.

Conventions
-----------
* Words are the ``\\w+`` pieces of :mod:`attacks.text`; lookups are lower-case, substitutions
  copy the capitalisation of the word they replace (:func:`attacks.threat.match_case`).
* ``S_w = {w} ∪ neighbours(w)`` is the *attack set* of ``w`` (what the attacker may write at a
  position holding ``w``); ``T_w`` is its *smoothing set* (what the smoothed ranker draws from).
* Smoothed scores are means of squashed base scores, so they lie in ``[0, 1]``.

Why a certificate follows: the smoothing distribution of a document is the product over word
positions of the distribution of what is *written* at the position: the word piece ``p`` itself
where ``|T_w| = 1`` (``w = p.lower()``), else ``match_case(p, t)`` for ``t`` uniform on ``T_w``.
The text the ranker sees is a fixed function (concatenation with the unchanged gaps) of these
pieces, so its TV is at most that of the pieces, and for products ``TV <= 1 - prod_i (1 - TV_i)``
(couple the positions independently). Hence ``Delta_d = 1 - prod_i q_{d_i}`` bounds the TV between
the smoothing distributions of ``d`` and of any allowed ``d'``, and any ``[0, 1]``-valued score of
a ranker that is a pure function of (query, text) moves by at most ``Delta_d``.

The radius is computed on what the ranker sees (the rendered strings), not on lower-cased words.
The attacker writes ``r = match_case(p, x)`` for ``x`` in ``S_w`` (as the attacks of
:mod:`attacks` do). The smoothed ranker then re-reads ``d'``: the position holds ``r``, its set
is ``T_{r.lower()}`` and its draws are rendered with ``r``'s own case pattern. So
``q_p = min_x sum_s min(P(s), Q_x(s))`` with ``P`` the distribution of strings written at ``p``
and ``Q_x`` that at ``r`` (``1 - q_p`` is the exact per-position TV). When everything round-trips
(ASCII words, same case pattern) this is ``|T_w ∩ T_x| / max(|T_w|, |T_x|)``; the published code
divides by ``|T_w|`` only, which underestimates the TV when ``|T_x| > |T_w|``. Where the rendering
does not round-trip the overlap shrinks or vanishes by itself: an ALL-CAPS word replaced by a
one-letter word (``"PHONE" -> "E"``, whose draws are then written in Title case), a word whose
upper/lower round trip is not the identity (``"groß" -> "GROSS" -> "gross"``, the dotless
``"ı"``). A rendered substitute that is not one ``\\w+`` word (``"ice cream"``, a capital form
that splits, as ``"ΐ".upper()``) would move the word positions: ``q = 0``.
"""
from __future__ import annotations

import hashlib
import math
import re
from typing import Iterable, Mapping, Sequence

import numpy as np
from scipy.special import expit

from attacks.text import tokenize
from attacks.threat import ThreatModel, match_case
from rankers.base import Ranker
from rankers.cache import fingerprint

__all__ = ["SmoothingSets", "SmoothedRanker", "noisy_copy", "SQUASHES", "stable_hash",
           "default_temperature"]

_SINGLE_WORD = re.compile(r"\w+", re.UNICODE)

#: Draws of a (query, document) stream are generated in chunks of this many rows; chunk ``c`` is
#: seeded by ``(seed, hash(doc), hash(query), c)``, so draw ``i`` never depends on how it is asked.
CHUNK = 256

SQUASHES = ("sigmoid", "identity-clip")

#: Recorded in :meth:`SmoothingSets.describe` (hence in fingerprints and job ids): radii computed
#: on rendered strings. Results made with the earlier lower-case rule (unsound under letter case)
#: get other ids and are never reused.
RADIUS_RULE = "rendered-v2"


def stable_hash(text: str) -> int:
    """64-bit hash of ``text`` that is stable across processes and Python versions (blake2b)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


class SmoothingSets:
    """Smoothing sets ``T_w``, per-word ``q_w`` and per-document radii ``Delta_d``.

    Construction (the published one, computed lazily per word and cached): the neighbours of the
    threat model, kept only where ``threat.similarity(a, b) >= threshold`` when a threshold is
    given, are the edges of a graph. A connected component of at most ``max_set_size`` words is the
    smoothing set of each member. In a larger component a word takes its ``max_set_size`` most
    similar members: by ``threat.similarity`` to the word when it returns numbers, else by BFS
    distance then alphabetically. The component search is a level-by-level BFS that stops once it
    is known to be large (for the similarity rule it keeps going to ``search_cap`` words, default
    ``10 * max_set_size``, and ranks those candidates), so the vocabulary is never walked eagerly.

    The graph is undirected when ``neighbours`` is symmetric (``SynonymTable`` by default). For
    asymmetric sources a reverse edge cannot be found without scanning the vocabulary, so ``T_w``
    is built from the words reachable from ``w``; the result then depends on ``w`` only (it is
    cached for other members only when every explored edge is symmetric). Certificates stay sound
    whatever the sets are, because ``q`` is computed from the actual sets.

    ``sets`` overrides the construction with an explicit table word -> smoothing set (``T_w`` =
    ``{w} ∪ sets[w]``, ``{w}`` for absent words), e.g. sets published with a paper, or tests.

    Rules: words without neighbours have no smoothing set (``T_w = {w}``, never replaced) and
    ``q = 1``. An attackable word whose smoothing set is trivial gives ``q = 0`` (the bound is
    trivial for documents holding it, unless a budget ``R`` excludes it). A word with a neighbour
    that is not a single ``\\w+`` word once written in the word's case (e.g. ``"ice cream"``, or
    ``"ǰa"`` in capitals) also gives ``q = 0``: such a substitution changes the word positions,
    which the position-wise bound does not cover; such neighbours never enter smoothing sets.
    ``q`` is computed on the strings the ranker sees (see the module docstring), so it depends
    on the case pattern of the word as written (lower, Title, UPPER).
    """

    def __init__(self, threat: ThreatModel, max_set_size: int = 100,
                 threshold: float | None = None,
                 sets: Mapping[str, Iterable[str]] | None = None,
                 search_cap: int | None = None):
        if not isinstance(threat, ThreatModel):
            raise TypeError(f"threat must be a ThreatModel, got {type(threat).__name__}")
        if int(max_set_size) != max_set_size or max_set_size < 1:
            raise ValueError(f"max_set_size must be a positive integer, got {max_set_size!r}")
        self.threat = threat
        self.max_set_size = int(max_set_size)
        self.threshold = None if threshold is None else float(threshold)
        self.search_cap = max(self.max_set_size,
                              10 * self.max_set_size if search_cap is None else int(search_cap))
        self._explicit = None
        if sets is not None:
            self._explicit = {k.lower(): tuple(sorted({k.lower(), *(s.lower() for s in v)}))
                              for k, v in sets.items()}
        self._nbr: dict[str, tuple[str, ...]] = {}
        self._edges: dict[str, tuple[str, ...]] = {}
        self._sets: dict[str, tuple[str, ...]] = {}
        self._q: dict[tuple[str, str], float] = {}

    # -- identity ------------------------------------------------------------------------------
    def describe(self) -> dict:
        d = {"threat": self.threat.name, "threat_fingerprint": self.threat.fingerprint,
             "max_set_size": self.max_set_size, "threshold": self.threshold,
             "search_cap": self.search_cap, "radius_rule": RADIUS_RULE}
        if self._explicit is not None:
            blob = repr(sorted(self._explicit.items())).encode()
            d["explicit_sets"] = hashlib.sha256(blob).hexdigest()[:16]
        return d

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.describe())

    # -- graph ---------------------------------------------------------------------------------
    def neighbours(self, word: str) -> tuple[str, ...]:
        """Lower-cased neighbours of ``word`` (without the word itself), cached."""
        w = word.lower()
        got = self._nbr.get(w)
        if got is None:
            seen: dict[str, None] = {}
            for x in self.threat.neighbours(w):
                x = x.lower()
                if x and x != w:
                    seen[x] = None
            got = self._nbr[w] = tuple(seen)
        return got

    def attack_set(self, word: str) -> tuple[str, ...]:
        """``S_w = (w,) + neighbours(w)``, lower-case."""
        w = word.lower()
        return (w,) + self.neighbours(w)

    def _graph_edges(self, w: str) -> tuple[str, ...]:
        got = self._edges.get(w)
        if got is None:
            out = []
            for x in self.neighbours(w):
                if not _SINGLE_WORD.fullmatch(x):
                    continue
                if self.threshold is not None:
                    s = self.threat.similarity(w, x)
                    if s is None:
                        raise ValueError(
                            f"threshold={self.threshold} needs a threat model whose similarity() "
                            f"returns numbers; {self.threat.name!r} returned None for "
                            f"({w!r}, {x!r}). Use threshold=None or a source with similarities.")
                    if s < self.threshold:
                        continue
                out.append(x)
            got = self._edges[w] = tuple(out)
        return got

    def smoothing_set(self, word: str) -> tuple[str, ...]:
        """``T_w``: sorted tuple of lower-case words, always containing ``word.lower()``."""
        w = word.lower()
        got = self._sets.get(w)
        if got is not None:
            return got
        if self._explicit is not None:
            got = self._sets[w] = self._explicit.get(w, (w,))
            return got
        if not self._graph_edges(w):
            got = self._sets[w] = (w,)
            return got
        sim0 = self.threat.similarity(w, self._graph_edges(w)[0])
        cap = self.search_cap if sim0 is not None else self.max_set_size
        dist = {w: 0}
        frontier = [w]
        while frontier:  # level by level, so every level kept is complete
            nxt = []
            for x in sorted(frontier):
                for y in self._graph_edges(x):
                    if y not in dist:
                        dist[y] = dist[x] + 1
                        nxt.append(y)
            frontier = nxt
            if len(dist) > cap:
                break
        if not frontier and len(dist) <= self.max_set_size:  # a small, fully explored component
            members = tuple(sorted(dist))
            symmetric = all(x in self._graph_edges(y) for x in dist for y in self._graph_edges(x))
            for x in (members if symmetric else (w,)):
                self._sets.setdefault(x, members)
            return self._sets[w]
        # large component: the word's max_set_size most similar explored members
        def key(x):
            if x == w:
                return (0, -math.inf, 0, x)
            s = self.threat.similarity(w, x)
            return (1, -s if s is not None else math.inf, dist[x], x)
        chosen = sorted(dist, key=key)[: self.max_set_size]
        got = self._sets[w] = tuple(sorted(chosen))
        return got

    def has_set(self, word: str) -> bool:
        """Whether ``word`` is replaced by smoothing (``|T_w| > 1``)."""
        return len(self.smoothing_set(word)) > 1

    # -- bounds --------------------------------------------------------------------------------
    def rendered(self, piece: str) -> dict[str, int]:
        """What the smoothed ranker writes at a position holding ``piece``: string -> count.

        The counts are over the ``|T_w|`` equally likely draws (``w = piece.lower()``):
        ``match_case(piece, t)`` for ``t`` in ``T_w``, or ``{piece: 1}`` where ``|T_w| = 1`` (the
        piece is kept verbatim). Renderings may collide (``"groß"`` and ``"gross"`` both give
        ``"GROSS"`` in capitals).
        """
        T = self.smoothing_set(piece)
        if len(T) == 1:
            return {piece: 1}
        out: dict[str, int] = {}
        for t in T:
            r = match_case(piece, t)
            out[r] = out.get(r, 0) + 1
        return out

    def q(self, word: str) -> float:
        """``q_p = min_{x in S_w} sum_s min(P(s), Q_x(s))`` in ``[0, 1]`` for a word *as written*.

        ``word`` is the piece as it appears in the text (its case pattern matters, see the module
        docstring); ``w = word.lower()``. ``P`` is the distribution of what smoothing writes at the
        position (:meth:`rendered`), ``Q_x`` the same for the attacker's ``match_case(word, x)``
        re-read by the smoothed ranker. ``1 - q`` is the largest total variation one substitution
        at the position can cause. 1 for non-attackable words; 0 for attackable words with a
        trivial smoothing set, or a substitute that does not render as one ``\\w+`` word.
        Computed with integer counts, so equal distributions give exactly 1.
        """
        w = word.lower()
        key = (w, match_case(word, "aa"))  # q depends on the case pattern only
        got = self._q.get(key)
        if got is not None:
            return got
        S = self.attack_set(w)
        T = self.smoothing_set(w)
        if len(S) == 1:
            val = 1.0
        elif len(T) == 1:
            val = 0.0
        else:
            P = self.rendered(word)
            val = 1.0
            for x in S[1:]:
                r = match_case(word, x)
                if not _SINGLE_WORD.fullmatch(r):
                    val = 0.0
                    break
                Q = self.rendered(r)
                nP, nQ = len(T), sum(Q.values())
                common = sum(min(c * nQ, Q.get(s, 0) * nP) for s, c in P.items())
                val = min(val, common / (nP * nQ))
                if val == 0.0:
                    break
        self._q[key] = val
        return val

    def q_values(self, text: str) -> np.ndarray:
        """``q`` of every word position of ``text``, shape ``(n_words,)``."""
        return np.array([self.q(x) for x in tokenize(text).words], dtype=np.float64)

    def radius(self, text: str, R: int | None = None) -> float:
        """``Delta_d = 1 - prod_i q_{d_i}`` in ``[0, 1]``; with budget ``R`` the product of the R
        smallest ``q`` (at most R positions changed).

        ``Delta_d`` bounds the total variation between the smoothing distribution of ``d`` and that
        of any ``d'`` the threat model allows (every position, or at most ``R`` of them, replaced
        by a word of its attack set), hence ``|g(q, d) - g(q, d')| <= Delta_d`` for every query
        and every ``[0, 1]``-valued smoothed score ``g``. 0 for texts without attackable words;
        non-decreasing in ``R``.
        """
        qs = self.q_values(text)
        if R is not None:
            if int(R) != R or R < 0:
                raise ValueError(f"R must be a non-negative integer or None, got {R!r}")
            qs = np.sort(qs)[: int(R)]
        return float(min(1.0, max(0.0, 1.0 - float(np.prod(qs)))))

    def __repr__(self) -> str:
        return f"SmoothingSets({self.threat.name!r}, max_set_size={self.max_set_size}, " \
               f"threshold={self.threshold})"


class _Plan:
    """How to draw a document: static text segments around the replaced words."""

    __slots__ = ("segments", "cands", "sizes")

    def __init__(self, text: str, sets: SmoothingSets):
        view = tokenize(text)
        segs, cands, cur = [], [], []
        active = set()
        for k, pi in enumerate(view.word_idx):
            if sets.has_set(view.pieces[pi]):
                active.add(pi)
        for i, piece in enumerate(view.pieces):
            if i in active:
                segs.append("".join(cur))
                cur = []
                cands.append(np.array([match_case(piece, t) for t in sets.smoothing_set(piece)],
                                      dtype=object))
            else:
                cur.append(piece)
        segs.append("".join(cur))
        self.segments = segs
        self.cands = cands
        self.sizes = np.array([len(c) for c in cands], dtype=np.int64)

    def texts(self, idx: np.ndarray) -> np.ndarray:
        """Object array of texts for index rows ``idx`` (shape ``(u, n_active)``)."""
        u, k = idx.shape[0], len(self.cands)
        grid = np.empty((u, 2 * k + 1), dtype=object)
        grid[:, 0::2] = np.array(self.segments, dtype=object)
        for j, c in enumerate(self.cands):
            grid[:, 2 * j + 1] = c[idx[:, j]]
        out = np.empty(u, dtype=object)
        out[:] = list(map("".join, grid.tolist()))
        return out


def _draws(plan: _Plan, key: Sequence[int], start: int, n: int) -> np.ndarray:
    """Draws ``start .. start+n-1`` of the stream ``key``: int array ``(n, n_active)``."""
    k = len(plan.sizes)
    if n <= 0 or k == 0:
        return np.zeros((max(n, 0), k), dtype=np.int64)
    c0, c1 = start // CHUNK, (start + n - 1) // CHUNK
    blocks = []
    for c in range(c0, c1 + 1):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([*key, c])))
        blocks.append(rng.integers(0, plan.sizes, size=(CHUNK, k)))
    allb = np.concatenate(blocks, axis=0)
    off = start - c0 * CHUNK
    return allb[off: off + n]


def _split64(h: int) -> list[int]:
    return [h & 0xFFFFFFFF, h >> 32]


class SmoothedRanker(Ranker):
    """``g(q, d) = mean_n squash(f(q, d~_n))``: a base ranker smoothed by random substitutions.

    ``d~_n`` replaces every word with a non-trivial smoothing set by a uniform draw from it
    (:class:`SmoothingSets`; capitalisation copied from the original word). Scores are in
    ``[0, 1]``.

    Parameters
    ----------
    base : Ranker
        The ranker ``f`` (raw scores).
    threat : ThreatModel or SmoothingSets
        The substitution source (a ``SmoothingSets`` is used as is, else one is built with
        ``max_set_size`` and ``threshold``).
    n_samples : int
        ``N``, draws per (query, document) for :meth:`score_pairs` (paper: 1000).
    seed : int
        Draws of a pair come from a PCG64 generator seeded by ``(seed, stable hash of the document
        text, stable hash of the query text, chunk index)``: the same pair always gets the same
        draws, whatever the batch it is scored in.
    squash, temperature, center :
        The fixed map of raw scores into ``[0, 1]`` (recorded in :attr:`name`):
        ``"sigmoid"``: ``1 / (1 + exp(-(s - center) / temperature))``; ``"identity-clip"``: ``clip(s, 0, 1)``
        for scores already in ``[0, 1]`` (temperature ignored). Pick the temperature to the score
        scale: cross-encoder logits (range about [-10, 10]) are fine with ``temperature=1``;
        bi-encoder cosine similarities (range [-1, 1], typical relevant/non-relevant differences
        about 0.05) need a small temperature (e.g. 0.02-0.05), otherwise every g is about
        ``sigmoid(0)`` and no margin exceeds the confidence terms (:func:`default_temperature`).
        ``center`` (raw-score units, default 0) shifts scores before the sigmoid so that it is
        not saturated (e.g. the median clean score of the lists, fixed before any draw); the
        shift does not change the base ranking.
    batch_size : int
        Most (query, perturbed text) pairs per ``base.score_pairs`` call. Identical perturbed
        texts are scored once per call (a dict keyed by (query, text)).

    Attributes: ``sets`` (the :class:`SmoothingSets`), ``n_forward`` (base pairs scored so far).
    """

    def __init__(self, base: Ranker, threat, n_samples: int = 1000, seed: int = 0,
                 squash: str = "sigmoid", temperature: float = 1.0, batch_size: int = 1024,
                 max_set_size: int = 100, threshold: float | None = None, center: float = 0.0):
        t = self._init_draws(base, n_samples, seed, squash, temperature, center, batch_size)
        self.sets = threat if isinstance(threat, SmoothingSets) else \
            SmoothingSets(threat, max_set_size=max_set_size, threshold=threshold)
        self.threat = self.sets.threat
        self.name = (f"smoothed({base.name}|{self.threat.name}:{self.threat.fingerprint}"
                     f"|sets={self.sets.fingerprint}|N={self.n_samples}|seed={self.seed}"
                     f"|{squash}{t})")

    def _init_draws(self, base, n_samples, seed, squash, temperature, center,
                    batch_size) -> str:
        """Validate and set what every smoothed ranker shares (base, draws, squash, batching);
        returns the squash's part of :attr:`name`."""
        if not isinstance(base, Ranker):
            raise TypeError(f"base must be a Ranker, got {type(base).__name__}")
        if isinstance(n_samples, bool) or int(n_samples) != n_samples or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        if isinstance(seed, bool) or int(seed) != seed or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if squash not in SQUASHES:
            raise ValueError(f"unknown squash {squash!r}; valid: {list(SQUASHES)}")
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        if not math.isfinite(float(center)):
            raise ValueError(f"center must be a finite number, got {center!r}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.base = base
        self.n_samples = int(n_samples)
        self.seed = int(seed)
        self.squash = squash
        self.temperature = float(temperature)
        self.center = float(center)
        self.batch_size = int(batch_size)
        self.n_forward = 0
        self._plans: dict = {}
        t = "" if squash == "identity-clip" else f"@T={self.temperature:g}"
        if self.center and squash != "identity-clip":
            t += f"@c={self.center:.6g}"
        return t

    def describe(self) -> dict:
        return {"type": "SmoothedRanker", "base": self.base.name, "n_samples": self.n_samples,
                "seed": self.seed, "squash": self.squash, "temperature": self.temperature,
                "center": self.center,
                "batch_size": self.batch_size, "chunk": CHUNK,
                "sets_fingerprint": self.sets.fingerprint, **self.sets.describe()}

    @property
    def pure(self) -> bool:
        """Whether the base ranker is a pure function of (query, text) (see :class:`Ranker`)."""
        return bool(getattr(self.base, "pure", True))

    # -- pieces --------------------------------------------------------------------------------
    def squash_scores(self, s: np.ndarray) -> np.ndarray:
        """Map raw scores into ``[0, 1]`` with the recorded squashing function."""
        s = np.asarray(s, dtype=np.float64)
        if self.squash == "sigmoid":
            return expit((s - self.center) / self.temperature)
        return np.clip(s, 0.0, 1.0)

    def radius(self, text: str, R: int | None = None) -> float:
        """See :meth:`SmoothingSets.radius`."""
        return self.sets.radius(text, R)

    def _plan(self, text: str) -> _Plan:
        p = self._plans.get(text)
        if p is None:
            if len(self._plans) >= 20000:
                self._plans.clear()
            p = self._plans[text] = _Plan(text, self.sets)
        return p

    def _key(self, query: str, doc: str) -> list[int]:
        return [self.seed, *_split64(stable_hash(doc)), *_split64(stable_hash(query))]

    def draw_indices(self, query: str, doc: str, n: int, start: int = 0) -> np.ndarray:
        """Index draws ``start .. start+n-1`` of the pair's stream, shape ``(n, n_active)``."""
        return _draws(self._plan(doc), self._key(query, doc), int(start), int(n))

    def sample_texts(self, query: str, doc: str, n: int, start: int = 0) -> list[str]:
        """The perturbed texts of draws ``start .. start+n-1`` (mostly for inspection)."""
        plan = self._plan(doc)
        idx = self.draw_indices(query, doc, n, start)
        return list(plan.texts(idx)) if len(plan.sizes) else [doc] * int(n)

    def sample_scores(self, query: str, doc: str, n: int, start: int = 0) -> np.ndarray:
        """Squashed base scores of draws ``start .. start+n-1`` of the pair, shape ``(n,)``.

        Draw ``i`` is the same however it is requested, so adaptive sampling can extend a
        stream without repeating or changing earlier draws.
        """
        return self.sample_scores_batch([query], [doc], [n], [start])[0]

    def sample_scores_batch(self, queries: Sequence[str], docs: Sequence[str],
                            ns: Sequence[int], starts: Sequence[int] | None = None,
                            cache: dict | None = None) -> list[np.ndarray]:
        """:meth:`sample_scores` for many pairs, batched through ``base.score_pairs``.

        ``cache`` (optional, caller-owned dict) maps (query, perturbed text) to its squashed score
        and persists across calls; without it duplicates are scored once per call (per group of
        requests: requests are processed in groups of about ``64 * batch_size`` draws so memory
        stays bounded).
        """
        queries, docs = list(queries), list(docs)
        starts = [0] * len(queries) if starts is None else list(starts)
        if not (len(queries) == len(docs) == len(ns) == len(starts)):
            raise ValueError("queries, docs, ns and starts must have the same length")
        out: list[np.ndarray] = []
        group_cap = max(64 * self.batch_size, 4 * self.n_samples)
        i = 0
        while i < len(queries):
            j, tot = i, 0
            while j < len(queries) and (j == i or tot + ns[j] <= group_cap):
                tot += int(ns[j])
                j += 1
            out.extend(self._score_group(queries[i:j], docs[i:j], ns[i:j], starts[i:j],
                                         {} if cache is None else cache))
            i = j
        return out

    def _score_group(self, queries, docs, ns, starts, cache) -> list[np.ndarray]:
        pending: dict[tuple[str, str], tuple[str, str]] = {}
        layout = []
        for q, d, n, st in zip(queries, docs, ns, starts):
            n, st = int(n), int(st)
            if n < 0 or st < 0:
                raise ValueError(f"n and start must be >= 0, got n={n}, start={st}")
            plan = self._plan(d)
            if len(plan.sizes) == 0 or n == 0:
                texts, inv = [d] if n else [], np.zeros(n, dtype=np.int64)
            else:
                idx = _draws(plan, self._key(q, d), st, n)
                uniq, inv = np.unique(idx, axis=0, return_inverse=True)
                texts = plan.texts(uniq)
            keys = [(q, t) for t in texts]
            for k in keys:
                if k not in cache and k not in pending:
                    pending[k] = k
            layout.append((keys, np.asarray(inv).reshape(-1)))
        items = list(pending.items())
        for b in range(0, len(items), self.batch_size):
            chunk = items[b: b + self.batch_size]
            raw = self.base.score_pairs([qt[0] for _, qt in chunk], [qt[1] for _, qt in chunk])
            self.n_forward += len(chunk)
            for (k, _), v in zip(chunk, self.squash_scores(raw)):
                cache[k] = float(v)
        return [np.array([cache[k] for k in keys], dtype=np.float64)[inv] if len(inv) else
                np.zeros(0) for keys, inv in layout]

    # -- the Ranker primitive ------------------------------------------------------------------
    def _score_pairs(self, queries, docs):
        scores = self.sample_scores_batch(queries, docs, [self.n_samples] * len(queries))
        return np.array([s.mean() for s in scores], dtype=np.float64)


def noisy_copy(texts: Sequence[str], threat, seed: int = 0, draws: int = 1,
               max_set_size: int = 100, threshold: float | None = None) -> list[str]:
    """Perturbed copies of ``texts`` for noisy training of a base ranker (CertDR).

    Each copy replaces every word that has a smoothing set by a uniform draw from it (the
    smoothing distribution). Returns ``len(texts) * draws`` texts, text-major (the draws of text 0
    first). Draws are seeded by ``(seed, stable hash of the text, draw index)``, so the same text
    always gets the same copies; use a new ``seed`` per epoch for fresh draws.
    ``threat`` is a ThreatModel or a :class:`SmoothingSets`.
    """
    if int(draws) != draws or draws < 1:
        raise ValueError(f"draws must be a positive integer, got {draws!r}")
    sets = threat if isinstance(threat, SmoothingSets) else \
        SmoothingSets(threat, max_set_size=max_set_size, threshold=threshold)
    out: list[str] = []
    plans: dict[str, _Plan] = {}
    for t in texts:
        plan = plans.get(t) or plans.setdefault(t, _Plan(t, sets))
        if len(plan.sizes) == 0:
            out.extend([t] * draws)
            continue
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [int(seed), *_split64(stable_hash(t)), 0x6E6F6973])))
        idx = rng.integers(0, plan.sizes, size=(int(draws), len(plan.sizes)))
        out.extend(plan.texts(idx))
    return out


def noise_transform(threat_spec, fresh_per_epoch: bool = False, seed: int = 0,
                    max_set_size: int = 100):
    """A ``doc_transform(docs, epoch, rng) -> list`` for noisy training (CertDR).

    For :func:`rankers.training.train_cross_encoder`: every document of a batch is replaced by one
    draw from its smoothing distribution (each word with a smoothing set replaced by a uniform
    draw from it, as :func:`noisy_copy`). Draws are keyed by ``(seed, stable hash of the text)``,
    so a document gets the same copy whichever batch or position it lands in; ``rng`` (the
    trainer's generator) is accepted and not used, which keeps the copies independent of batch
    order.

    ``fresh_per_epoch=False`` (the paper's setting): one draw per document, the same every epoch.
    ``fresh_per_epoch=True``: a new draw per document and epoch (keyed by ``(seed, epoch)``).
    ``threat_spec``: a spec for :func:`attacks.threat.load_threat_model` (e.g.
    ``"wordnet+glove"``), a ThreatModel or a :class:`SmoothingSets` (used as is; the smoothing
    sets are built once, lazily, and shared by every call). ``seed``: non-negative integer.
    The input list is never modified. The returned function carries ``.sets`` (the
    :class:`SmoothingSets`) and ``.describe()`` (a JSON-able record for training metadata).
    """
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(threat_spec, SmoothingSets):
        sets = threat_spec
    else:
        from attacks.threat import load_threat_model

        sets = SmoothingSets(load_threat_model(threat_spec), max_set_size=max_set_size)
    seed = int(seed)
    fresh = bool(fresh_per_epoch)

    def doc_transform(docs, epoch=0, rng=None):
        if isinstance(docs, str):
            raise TypeError("doc_transform takes a list of documents, not one string")
        if fresh:
            if int(epoch) != epoch or epoch < 0:
                raise ValueError(f"epoch must be a non-negative integer, got {epoch!r}")
            s = stable_hash(f"noise-epoch:{seed}:{int(epoch)}")
        else:
            s = seed
        return noisy_copy(list(docs), sets, seed=s)

    doc_transform.sets = sets
    doc_transform.describe = lambda: {"noise": sets.threat.name,
                                      "noise_fingerprint": sets.threat.fingerprint,
                                      "sets_fingerprint": sets.fingerprint,
                                      "fresh_per_epoch": fresh, "seed": seed}
    return doc_transform


#: Default squash temperatures by ranker family (score scale; see SmoothedRanker's docstring).
TEMPERATURES = {"BiEncoder": 0.05, "CrossEncoder": 1.0, "BM25Ranker": 1.0,
                "TermWeightRanker": 1.0}


def default_temperature(ranker: Ranker) -> float:
    """Squash temperature for ``ranker``'s raw scores.

    Bi-encoders (cosine similarities in [-1, 1], relevant/non-relevant gaps about 0.05-0.1): 0.05.
    Cross-encoders (logits, about [-10, 10]): 1.0. BM25 (scores of a few units between ranks)
    and the term-weight ranker: 1.0. Anything else: 1.0. Looked up along the class hierarchy, so a
    subclass gets its parent's value; wrappers with a ``base`` (caches) are looked through.
    """
    while hasattr(ranker, "base") and isinstance(getattr(ranker, "base"), Ranker):
        ranker = ranker.base
    for cls in type(ranker).__mro__:
        if cls.__name__ in TEMPERATURES:
            return TEMPERATURES[cls.__name__]
    return 1.0

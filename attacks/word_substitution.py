"""Word-substitution ranking attack: exact greedy search (default), beam search, or the faithful
PRADA loop, all within one threat model, one perturbation cap and one victim budget.

The attacker changes words of one target document ``d_t`` of a query ``q`` to raise its rank in
the victim's ORIGINAL list (the other documents' scores are the victim run's, held fixed; see
:mod:`attacks.base`). Every change replaces a word by one of its threat-model neighbours
(:meth:`WordSubstitutionAttack.neighbours`); at most ``max_changes(n_words, max_words, max_pp)``
words change. Words beyond the scoring ranker's truncation window (its ``max_length`` word
pieces, :class:`rankers.base.DifferentiableRanker`) cannot change its score and are never
candidates; ``window_share`` in the results is the share of the document's words inside the
window (1.0 for rankers without a window, e.g. lexical ones).

Search strategies (``search=``)
-------------------------------
``greedy`` (default)  *Screening*: every in-window candidate ``(word position, substitute)`` is
    scored once, exactly, in batches (``score(d_t with that one change) - score(d_t)``), in
    neighbour-rank order (each word's closest substitute first; ``max_screen`` and, white-box,
    half of the victim budget bound the screening).
    *Lazy greedy*: at each step the ``rescore`` (30) candidates with the best last-known gains are
    re-scored on the current document, the best is accepted if its gain is > 0, and the other
    candidates of its position are dropped. ``rescore=None`` re-scores every candidate at every
    step (full exact greedy; lazy greedy follows it whenever gains do not grow when other words
    change, e.g. for additive rankers). Stops at the change cap, the goal, no positive gain, or
    the budget.
``beam``   a beam of ``beam_width`` (3) documents over the same candidates: each document of the
    beam re-scores its ``rescore`` best candidates, the ``beam_width`` best children (by score,
    distinct change sets) form the next beam; the best document seen is the answer.
``prada``  the faithful PRADA loop (Wu et al. 2023), kept for reproduction: the gradient of the
    pairwise hinge loss against the victim's other top-``competitors_k`` documents ranks the words
    by importance (L2 norm of their word pieces' gradients), ``pgd_steps`` projected gradient
    steps move the kept words' embeddings (radius ``epsilon``, step ``step_size``, in units of the
    mean embedding norm), the neighbour closest to each moved word is its candidate, and the
    ``n_important`` most important words are tried once each in importance order with one victim
    rank query each, keeping strict rank improvements only. Needs a differentiable surrogate.

Who scores (``white_box``)
--------------------------
``white_box=False`` (black box, default): screening and search run on the ``surrogate`` (any
    :class:`rankers.base.Ranker`; free); the victim is only asked to *confirm*: one
    ``Oracle.rank_of`` query per accepted change (greedy; a change that makes the victim rank
    worse is rolled back and never retried) or per final document (beam). PRADA asks one rank
    query per tried word.
``white_box=True``: the search reads the victim's own scores through the Oracle (access
    ``score``): every scored document is one counted victim query, capped by the budget. The
    truncation window is the victim's.

Budgets: ``query_budget`` victim queries per target and the Oracle's own budget; a batch is cut to
what is left, so neither is ever exceeded (``budget_exhausted=True`` says the budget stopped
the search; the result so far is kept).

Goals (``goal=``): ``"max"`` (greedy/beam default: raise the score while a change helps),
``"improve"`` (stop at the first rank improvement), ``"topk"`` (stop once rank <= ``goal_k``).
PRADA's default (``goal=None``) tries every kept word. White-box goals use the victim's exact
rank; black-box goals the victim's confirmed rank. ``success`` is always ``adv_rank < orig_rank``.

Everything is deterministic given the inputs and ``seed`` (ties break by candidate order: word
position, then the threat model's neighbour order). The original text and the run are never
modified.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from .base import (Attack, AttackError, AttackResult, NoSubstitutes, Stopwatch, check_tie_rule,
                   max_changes, new_rank, pp_of, target_context)
from .text import changed_positions, tokenize

GOALS = (None, "improve", "topk", "max")
SEARCHES = ("greedy", "beam", "prada")


def word_spans(view) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the words of a :class:`WordView`, in order."""
    spans, pos, wi = [], 0, set(view.word_idx)
    for i, piece in enumerate(view.pieces):
        if i in wi:
            spans.append((pos, pos + len(piece)))
        pos += len(piece)
    return spans


def pieces_by_word(view, doc_pieces) -> dict[int, list[int]]:
    """Map word position -> input positions of its word pieces, from an
    :class:`~rankers.base.AttackEncoding`'s ``doc_pieces`` (character offsets)."""
    spans = word_spans(view)
    starts = [s for s, _ in spans]
    out: dict[int, list[int]] = {}
    for ti, s, e in doc_pieces:
        w = bisect.bisect_right(starts, s) - 1
        if w >= 0 and s < spans[w][1]:
            out.setdefault(w, []).append(ti)
    return out


class _Budget:
    """Victim queries left for one target: the per-target ``query_budget`` and the Oracle's."""

    def __init__(self, oracle, per_target: int | None):
        self.oracle = oracle
        self.q0 = int(oracle.queries_used)
        self.per_target = per_target
        self.exhausted = False

    @property
    def used(self) -> int:
        return int(self.oracle.queries_used) - self.q0

    def left(self) -> int | None:
        out = None if self.per_target is None else self.per_target - self.used
        rem = self.oracle.remaining
        if rem is not None:
            out = rem if out is None else min(out, rem)
        return None if out is None else max(out, 0)

    def take(self, n: int) -> int:
        """How many of ``n`` requests fit; marks the budget exhausted when not all do."""
        left = self.left()
        if left is not None and left < n:
            self.exhausted = True
            return left
        return n


class _Scorer:
    """Exact scores of whole document texts for one query: from the victim through the Oracle
    (white box, counted and capped) or from the surrogate (free). Returns fewer scores than
    texts asked when the budget runs out (``budget.exhausted`` is then set)."""

    def __init__(self, fn: Callable[[list], np.ndarray], budget: _Budget | None):
        self.fn = fn
        self.budget = budget
        self.passes = 0

    @property
    def exhausted(self) -> bool:
        return self.budget is not None and self.budget.exhausted

    def __call__(self, texts: list[str]) -> np.ndarray:
        n = len(texts) if self.budget is None else self.budget.take(len(texts))
        if n == 0:
            return np.zeros(0)
        self.passes += n
        return np.asarray(self.fn(texts[:n]), dtype=np.float64)


@dataclass
class _BeamState:
    subs: dict
    score: float
    gain: np.ndarray
    fresh: np.ndarray  # bool: gain computed on this state's document


class WordSubstitutionAttack(Attack):
    """Word substitution under a threat model (see the module doc for the strategies).

    Parameters
    ----------
    surrogate : the ranker the search runs on in the black-box setting: any
        :class:`~rankers.base.Ranker` for ``greedy``/``beam`` (an imitation model, another
        model, the victim itself as a free white-box copy); ``prada`` needs a
        :class:`~rankers.base.DifferentiableRanker`. May be ``None`` when ``white_box=True``
        (greedy, beam).
    threat : a :class:`attacks.threat.ThreatModel` or a spec for ``load_threat_model``.
    search : ``"greedy"`` (default), ``"beam"`` or ``"prada"``.
    white_box : search on the victim's scores through the Oracle (access ``score``, every scored
        document counted) instead of on the surrogate (False, default).
    max_words : most changed words (10; ``None``: only ``max_pp`` caps).
    max_pp : cap on changed words / words (fraction, 0.1); ``None`` = no cap.
    rescore : candidates re-scored per greedy/beam step (30; ``None``: all = full exact greedy).
    beam_width : documents kept per beam step (3).
    n_candidates : neighbours considered per word (50).
    min_sim : keep neighbours with ``threat.similarity(w, n) >= min_sim`` (``None``: the threat
        model's own filter only). Pairs without a defined similarity are kept.
    batch_size : documents per scoring call in the screening (256).
    max_screen : most candidates screened per target (``None``: all). Candidates are screened
        neighbour rank first (every word's closest substitute, then every word's second, ...).
        With white-box access the screening also takes at most half of the victim budget left,
        so the search keeps queries for its steps.
    pgd_steps, step_size, epsilon, competitors_k, n_important : PRADA only (3, 0.5, 1.0, 99,
        ``max_words``); see the module doc.
    stopwords : ``True`` (the lab's list), ``False``, or an iterable of words never substituted.
    query_budget : victim queries per target (``None`` = unlimited).
    tie_rule : ``pessimistic`` (default) or ``optimistic`` for the reported ranks.
    goal : ``None`` (search default: ``max`` for greedy/beam, every kept word for prada),
        ``"improve"``, ``"topk"`` (rank <= ``goal_k``) or ``"max"``.
    seed : recorded in the results; seeds torch (PRADA).
    """

    method = "word-substitution"

    def __init__(self, surrogate, threat, max_words: int | None = 10,
                 max_pp: float | None = 0.1, n_candidates: int = 50,
                 min_sim: float | None = None, pgd_steps: int = 3, step_size: float = 0.5,
                 epsilon: float = 1.0, competitors_k: int = 99,
                 stopwords: bool | Iterable[str] = True, n_important: int | None = None,
                 query_budget: int | None = None, tie_rule: str = "pessimistic",
                 goal: str | None = None, goal_k: int = 10, seed: int = 0,
                 search: str = "greedy", white_box: bool = False, rescore: int | None = 30,
                 beam_width: int = 3, batch_size: int = 256, max_screen: int | None = None):
        from .threat import as_threat_model

        threat = as_threat_model(threat)
        if search not in SEARCHES:
            raise AttackError(f"search must be one of {SEARCHES}, got {search!r}")
        if max_words is not None and int(max_words) < 1:
            raise AttackError(f"max_words must be >= 1 (or None), got {max_words}")
        if max_pp is not None and not 0 < float(max_pp) <= 1:
            raise AttackError(f"max_pp is a fraction in (0, 1], got {max_pp}")
        if int(n_candidates) < 1 or int(competitors_k) < 1:
            raise AttackError("n_candidates and competitors_k must be >= 1")
        if int(pgd_steps) < 0 or float(step_size) < 0 or float(epsilon) < 0:
            raise AttackError("pgd_steps, step_size and epsilon must be >= 0")
        if query_budget is not None and int(query_budget) < 0:
            raise AttackError("query_budget must be >= 0 or None")
        if goal not in GOALS:
            raise AttackError(f"goal must be one of {GOALS}, got {goal!r}")
        if int(goal_k) < 1:
            raise AttackError("goal_k must be >= 1")
        if rescore is not None and int(rescore) < 1:
            raise AttackError("rescore must be >= 1 (or None: re-score every candidate)")
        if max_screen is not None and int(max_screen) < 1:
            raise AttackError("max_screen must be >= 1 (or None: screen every candidate)")
        if int(beam_width) < 1 or int(batch_size) < 1:
            raise AttackError("beam_width and batch_size must be >= 1")
        check_tie_rule(tie_rule)
        from rankers.base import Ranker, as_differentiable

        if search == "prada":
            if as_differentiable(surrogate) is None:
                raise AttackError(
                    f"search='prada' needs a differentiable surrogate (a ranker implementing "
                    f"rankers.base.DifferentiableRanker: CrossEncoder or BiEncoder), got "
                    f"{type(surrogate).__name__}. Train one by imitation "
                    "(rankers.imitation.train_surrogate), use a transformer victim itself as a "
                    "white-box surrogate, or use search='greedy'")
        elif surrogate is None and not white_box:
            raise AttackError("a black-box search needs a surrogate ranker; pass one (e.g. "
                              "rankers.imitation.train_surrogate(...)) or set white_box=True")
        elif surrogate is not None and not isinstance(surrogate, Ranker):
            raise AttackError(f"the surrogate must be a rankers.base.Ranker, got "
                              f"{type(surrogate).__name__}")
        from .stopwords import stopword_set

        self.surrogate = surrogate
        self.threat = threat
        self.search = search
        self.white_box = bool(white_box)
        self.max_words = None if max_words is None else int(max_words)
        self.max_pp = None if max_pp is None else float(max_pp)
        self.n_candidates = int(n_candidates)
        self.min_sim = None if min_sim is None else float(min_sim)
        self.pgd_steps = int(pgd_steps)
        self.step_size = float(step_size)
        self.epsilon = float(epsilon)
        self.competitors_k = int(competitors_k)
        self.stopwords = stopword_set(stopwords)
        self.n_important = (10 if self.max_words is None else self.max_words) \
            if n_important is None else int(n_important)
        self.query_budget = None if query_budget is None else int(query_budget)
        self.tie_rule = tie_rule
        self.goal = goal
        self.goal_k = int(goal_k)
        self.seed = int(seed)
        self.rescore = None if rescore is None else int(rescore)
        self.beam_width = int(beam_width)
        self.batch_size = int(batch_size)
        self.max_screen = None if max_screen is None else int(max_screen)
        # caches (per attack object; keyed by text)
        self._nb_cache: dict[str, list[str]] = {}
        self._score_cache: dict[tuple, float] = {}
        self._piece_cache: dict[str, object] = {}
        self._emb_scale: float | None = None
        self._last_scored = 0

    @property
    def effective_goal(self) -> str:
        """The goal the search pursues (``goal`` with the strategy's default filled in)."""
        if self.goal is not None:
            return self.goal
        return "all-words" if self.search == "prada" else "max"

    # -- threat model -----------------------------------------------------------------------
    def neighbours(self, word: str) -> list[str]:
        """The substitutes considered for ``word`` (stop words excluded, ``min_sim`` and
        ``n_candidates`` applied), lower-case."""
        w = word.lower()
        if w not in self._nb_cache:
            out = []
            if w not in self.stopwords and any(c.isalpha() for c in w):
                for n in self.threat.neighbours(word):
                    if n in self.stopwords or n == w:
                        continue
                    if self.min_sim is not None:
                        s = self.threat.similarity(w, n)
                        if s is not None and s < self.min_sim:
                            continue
                    out.append(n)
                    if len(out) >= self.n_candidates:
                        break
            self._nb_cache[w] = out
        return list(self._nb_cache[w])

    def surrogate_scores(self, query: str, texts: list[str]) -> np.ndarray:
        """Surrogate scores of ``texts`` for ``query``, cached per (query, text) on the attack
        (a caller may prime the cache, e.g. when it computes the surrogate's agreement with the
        victim on the same lists)."""
        if self.surrogate is None:
            raise AttackError("this attack has no surrogate (white_box=True without one)")
        name = self.surrogate.name
        keys = [(name, query, t) for t in texts]
        todo = list(dict.fromkeys(k for k in keys if k not in self._score_cache))
        if todo:
            vals = self.surrogate.score(query, [k[2] for k in todo])
            for k, v in zip(todo, vals):
                self._score_cache[k] = float(v)
        self._last_scored = len(todo)
        return np.array([self._score_cache[k] for k in keys], dtype=np.float64)

    def _window(self, ranker, query: str, text: str, view) -> tuple[set[int], float]:
        """Word positions inside ``ranker``'s truncation window and their share of the words."""
        from rankers.base import as_differentiable

        n = len(view)
        dr = as_differentiable(ranker)
        if dr is None or n == 0:
            return set(range(n)), 1.0
        inside = set(pieces_by_word(view, dr.encode_for_attack(query, text).doc_pieces))
        return inside, len(inside) / n

    # -- the attack ----------------------------------------------------------------------------
    def attack(self, oracle, query: str, target_docno: str,
               run_for_query: pd.DataFrame) -> AttackResult:
        """Attack one target; returns its :class:`AttackResult` (ranks 1-based)."""
        watch = Stopwatch()
        access = getattr(oracle, "access", "rank")
        if access == "topk":
            raise AttackError("the search needs rank feedback: use an Oracle with access='rank' "
                              "(or 'score')")
        if self.white_box and self.search != "prada" and access != "score":
            raise AttackError("white_box=True reads the victim's scores through the Oracle: "
                              "use Oracle(victim, access='score')")
        ctx = target_context(run_for_query, target_docno, self.tie_rule, query)
        view = tokenize(ctx.text)
        words = view.words
        n_words = len(words)
        if not any(self.neighbours(w) for w in words):
            raise NoSubstitutes(
                f"the threat model {getattr(self.threat, 'name', self.threat)!r} has no substitute "
                f"for any word of document {ctx.docno!r} (qid {ctx.qid!r}, {n_words} words; "
                f"stop words excluded). Use a richer threat model (e.g. 'wordnet' or 'glove') "
                "or pick another target")
        cap = max_changes(n_words, 10**9 if self.max_words is None else self.max_words,
                          self.max_pp)
        budget = _Budget(oracle, self.query_budget)
        scorer_ranker = oracle.ranker if self.white_box and self.search != "prada" \
            else self.surrogate
        window, share = self._window(scorer_ranker, ctx.query, ctx.text, view)
        eligible = [i for i in range(n_words) if i in window and self.neighbours(words[i])]

        subs: dict[int, str] = {}
        tried, passes = 0, 0
        if cap > 0 and eligible:
            if self.search == "prada":
                subs, tried, passes = self._prada(oracle, ctx, view, eligible, cap, budget)
            else:
                subs, tried, passes = self._search(oracle, ctx, view, eligible, cap, budget)

        adv_text = view.replace(subs) if subs else ctx.text
        if subs:  # measured by the experiment owner: not an attacker query
            adv_score = float(oracle.ranker.score_pairs([ctx.query], [adv_text])[0])
        else:
            adv_score = ctx.orig_score
        adv_rank = new_rank(adv_score, ctx.other_scores, self.tie_rule)
        sur_rank = 0
        if self.surrogate is not None and scorer_ranker is self.surrogate:
            # the transfer gap: where the surrogate itself puts the adversarial document
            s = self.surrogate_scores(ctx.query, [adv_text] + list(ctx.other_texts))
            sur_rank = new_rank(float(s[0]), s[1:], self.tie_rule)
        n_changed = len(changed_positions(ctx.text, adv_text))
        return AttackResult(
            qid=ctx.qid, docno=ctx.docno, orig_rank=ctx.orig_rank, adv_rank=adv_rank,
            orig_score=ctx.orig_score, adv_score=adv_score, success=adv_rank < ctx.orig_rank,
            queries_used=budget.used, n_changed=n_changed,
            pp=pp_of(n_changed, n_words), adv_text=adv_text, method=self.method, seed=self.seed,
            threat=self._threat_fingerprint(), wall_s=watch.elapsed, n_words=n_words,
            substitutions=[(p, words[p], subs[p]) for p in sorted(subs)], query=ctx.query,
            orig_text=ctx.text, budget_exhausted=budget.exhausted, n_tried=tried,
            surrogate_passes=passes, search=self.search, goal=self.effective_goal,
            white_box=self.white_box, window_share=float(share), surrogate_rank=sur_rank)

    def _goal_reached(self, rank: int, orig_rank: int) -> bool:
        goal = self.effective_goal
        if goal == "improve":
            return rank < orig_rank
        if goal == "topk":
            return rank <= self.goal_k
        return False

    # -- greedy and beam -----------------------------------------------------------------------
    def candidates(self, view, eligible: list[int]) -> list[tuple[int, str]]:
        """The ``(word position, substitute)`` candidates in screening order: every word's first
        neighbour (document order), then every word's second neighbour, ... so that a screening
        cut short by ``max_screen`` or the budget still covers the whole window."""
        from .threat import match_case

        words = view.words
        per = {p: self.neighbours(words[p]) for p in eligible}
        depth = max((len(v) for v in per.values()), default=0)
        return [(p, match_case(words[p], per[p][r])) for r in range(depth) for p in eligible
                if r < len(per[p])]

    def _search(self, oracle, ctx, view, eligible, cap, budget):
        """Greedy or beam search over the candidates of the ``eligible`` words; returns
        ``(substitutions, victim-submitted documents, surrogate passes)``."""
        cands = self.candidates(view, eligible)
        limit = len(cands) if self.max_screen is None else min(len(cands), self.max_screen)
        left = budget.left() if self.white_box else None
        if left is not None:      # keep half of the victim budget for the search steps
            limit = min(limit, max(left // 2, 1))
        cands = cands[:limit]
        if self.white_box:
            scorer = _Scorer(lambda texts: oracle.score(ctx.query, texts), budget)
            base = ctx.orig_score
        else:
            scorer = _Scorer(lambda texts: self.surrogate.score(ctx.query, texts), None)
            base = float(self.surrogate_scores(ctx.query, [ctx.text])[0])

        state = {"rank": ctx.orig_rank, "tried": 0}

        def accept(subs: dict, score: float) -> tuple[bool, bool]:
            """(keep the change, stop searching) after the search proposes ``subs``."""
            if self.white_box:
                r = new_rank(score, ctx.other_scores, self.tie_rule)
                state["rank"] = r
                return True, self._goal_reached(r, ctx.orig_rank)
            if budget.take(1) < 1:
                return False, True
            r = oracle.rank_of(ctx.query, view.replace(subs), ctx.other_scores)
            state["tried"] += 1
            if r > state["rank"]:   # the victim disagrees with the surrogate: roll back
                return False, False
            state["rank"] = r
            return True, self._goal_reached(r, ctx.orig_rank)

        gain = np.full(len(cands), -np.inf)
        for s in range(0, len(cands), self.batch_size):   # screening
            chunk = cands[s: s + self.batch_size]
            vals = scorer([view.replace({p: c}) for p, c in chunk])
            gain[s: s + len(vals)] = vals - base
            if len(vals) < len(chunk):
                break
        if self.search == "greedy":
            subs = self._greedy(view, cands, gain, base, cap, scorer, accept)
        else:
            subs = self._beam(view, cands, gain, base, cap, scorer, ctx)
            if subs and not self.white_box:   # the victim confirms the beam's answer
                keep, _ = accept(subs, float("nan"))
                subs = subs if keep and state["rank"] < ctx.orig_rank else {}
        tried = scorer.passes if self.white_box else state["tried"]
        return subs, tried, 0 if self.white_box else scorer.passes

    def _order(self, idx: np.ndarray, gain: np.ndarray) -> np.ndarray:
        """``idx`` sorted by gain, best first (ties: candidate order)."""
        return idx[np.lexsort((idx, -gain[idx]))]

    def _greedy(self, view, cands, gain, base, cap, scorer, accept) -> dict:
        pos = np.array([p for p, _ in cands])
        alive = np.isfinite(gain)          # screened candidates only
        fresh = alive.copy()               # gains measured on the current document
        subs: dict[int, str] = {}
        cur = base
        while len(subs) < cap and alive.any() and not scorer.exhausted:
            order = self._order(np.flatnonzero(alive), gain)
            pick = order if self.rescore is None else order[: self.rescore]
            stale = pick[~fresh[pick]]
            if stale.size:
                vals = scorer([view.replace({**subs, pos[i]: cands[i][1]}) for i in stale])
                gain[stale[: len(vals)]] = vals - cur
                fresh[stale[: len(vals)]] = True
                if len(vals) < stale.size:
                    break
            best = self._order(pick, gain)[0]
            if not gain[best] > 0:
                break
            trial = {**subs, int(pos[best]): cands[best][1]}
            keep, stop = accept(trial, cur + gain[best])
            if keep:
                subs, cur = trial, cur + float(gain[best])
                alive[pos == pos[best]] = False
                fresh[:] = False
            else:
                alive[best] = False
            if stop:
                break
        return subs

    def _beam(self, view, cands, gain, base, cap, scorer, ctx) -> dict:
        pos = np.array([p for p, _ in cands])
        screened = np.isfinite(gain)
        beam = [_BeamState({}, base, gain.copy(), screened.copy())]
        best = beam[0]
        for _ in range(cap):
            children: dict[frozenset, tuple] = {}
            for st in beam:
                used = np.isin(pos, list(st.subs)) if st.subs else np.zeros(len(cands), bool)
                idx = np.flatnonzero(screened & ~used)
                if idx.size == 0:
                    continue
                order = self._order(idx, st.gain)
                pick = order if self.rescore is None else order[: self.rescore]
                stale = pick[~st.fresh[pick]]
                if stale.size:
                    vals = scorer([view.replace({**st.subs, pos[i]: cands[i][1]}) for i in stale])
                    st.gain[stale[: len(vals)]] = vals - st.score
                    st.fresh[stale[: len(vals)]] = True
                for i in pick[st.fresh[pick]]:
                    if st.gain[i] > 0:
                        subs = {**st.subs, int(pos[i]): cands[i][1]}
                        key = frozenset(subs.items())
                        sc = st.score + float(st.gain[i])
                        if key not in children or children[key][0] < sc:
                            children[key] = (sc, subs, st)
            if not children:
                break
            ranked = sorted(children.values(),
                            key=lambda c: (-c[0], sorted(c[1].items())))[: self.beam_width]
            beam = [_BeamState(subs, sc, parent.gain.copy(), np.zeros(len(cands), bool))
                    for sc, subs, parent in ranked]
            if beam[0].score > best.score:
                best = beam[0]
            if self.white_box and self._goal_reached(
                    new_rank(best.score, ctx.other_scores, self.tie_rule), ctx.orig_rank):
                break
            if scorer.exhausted:
                break
        return best.subs

    # -- PRADA ------------------------------------------------------------------------------------
    def _prada(self, oracle, ctx, view, eligible, cap, budget):
        """The faithful PRADA loop; returns ``(substitutions, tried, surrogate passes)``."""
        import torch

        from rankers.oracle import BudgetExhausted

        from .threat import match_case

        torch.manual_seed(self.seed)
        words = view.words
        chosen, best, passes = self._plan(ctx, view, eligible)
        subs: dict[int, str] = {}
        cur_rank, tried = ctx.orig_rank, 0
        for pos in chosen:
            if len(subs) >= cap or self._goal_reached(cur_rank, ctx.orig_rank):
                break
            cand = best.get(pos)
            if cand is None:
                continue
            if budget.take(1) < 1:
                break
            trial = dict(subs)
            trial[pos] = match_case(words[pos], cand)
            try:
                r = oracle.rank_of(ctx.query, view.replace(trial), ctx.other_scores)
            except BudgetExhausted:
                budget.exhausted = True
                break
            tried += 1
            if r < cur_rank:  # keep only strict improvements; otherwise roll back
                subs, cur_rank = trial, r
        return subs, tried, passes

    def _piece_embedding(self, dr, word: str):
        """Mean input embedding of ``word``'s word pieces (``None`` if it has none)."""
        import torch

        if word not in self._piece_cache:
            ids = dr.piece_ids(word)
            if not ids:
                self._piece_cache[word] = None
            else:
                emb = dr.input_embeddings()
                with torch.no_grad():
                    t = torch.tensor(ids, device=emb.weight.device)
                    self._piece_cache[word] = emb(t).float().mean(0)
        return self._piece_cache[word]

    def _plan(self, ctx, view, eligible: list[int]):
        """Importance ranking, PGD steps and candidate choice on the surrogate.

        Returns ``(positions in importance order, {position: candidate}, surrogate passes)``.
        """
        import torch

        from rankers.base import as_differentiable

        dr = as_differentiable(self.surrogate)
        emb_mod = dr.input_embeddings()
        if self._emb_scale is None:
            self._emb_scale = float(emb_mod.weight.detach().float().norm(dim=1).mean())
        k = min(self.competitors_k, len(ctx.other_texts))
        comp_np = self.surrogate_scores(ctx.query, list(ctx.other_texts[:k])) if k else np.zeros(0)
        passes = self._last_scored if k else 0
        enc = dr.encode_for_attack(ctx.query, ctx.text)
        inputs = enc.inputs
        with torch.no_grad():
            base = emb_mod(inputs["input_ids"]).detach()
        comp = torch.tensor(comp_np, dtype=torch.float32, device=base.device)
        word_tokens = pieces_by_word(view, enc.doc_pieces)

        def score_of(e):
            return dr.score_embeds(ctx.query, e, inputs["attention_mask"],
                                   inputs.get("token_type_ids"))[0].float()

        def hinge(score):
            if comp.numel() == 0:
                return -score
            return torch.clamp(1.0 - (score - comp), min=0).sum()

        with torch.enable_grad():
            emb = base.clone().requires_grad_(True)
            score = score_of(emb)
            loss = hinge(score)
            passes += 1
            if loss.item() > 0:
                (grad,) = torch.autograd.grad(loss, emb)
            else:  # every margin already met: follow the score itself
                (grad,) = torch.autograd.grad(-score, emb)
            grad = grad[0].float()
            importance = {w: float(grad[toks].norm()) for w, toks in word_tokens.items()}
            ranked = sorted((w for w in eligible if w in word_tokens),
                            key=lambda w: (-importance[w], w))
            chosen = ranked[: self.n_important]
            if not chosen:
                return [], {}, passes
            pos = [t for w in chosen for t in word_tokens[w]]
            idx = torch.tensor(pos, device=base.device)
            delta = torch.zeros(len(pos), base.shape[-1], device=base.device, dtype=base.dtype)
            alpha, eps = self.step_size * self._emb_scale, self.epsilon * self._emb_scale
            for _ in range(self.pgd_steps):
                delta.requires_grad_(True)
                pert = torch.zeros_like(base)
                pert[0, idx] = delta
                s = score_of(base + pert)
                passes += 1
                (g,) = torch.autograd.grad(hinge(s), delta)
                with torch.no_grad():
                    g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
                    delta = delta.detach() - alpha * g
                    norm = delta.norm(dim=1, keepdim=True).clamp_min(1e-12)
                    delta = delta * torch.clamp(eps / norm, max=1.0)  # project to the ball

        best: dict[int, str] = {}
        with torch.no_grad():
            row = {t: i for i, t in enumerate(pos)}
            for w in chosen:
                toks = word_tokens[w]
                target = (base[0, toks] + delta[[row[t] for t in toks]]).float().mean(0)
                embs = [(c, self._piece_embedding(dr, c)) for c in self.neighbours(view.words[w])]
                embs = [(c, e) for c, e in embs if e is not None]
                if not embs:
                    continue
                dist = torch.stack([e for _, e in embs]).sub(target).norm(dim=1)
                best[w] = embs[int(torch.argmin(dist))][0]
        return chosen, best, passes

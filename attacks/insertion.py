"""Insertion attacks: the baselines every trigger attack is compared with, and the insertion
machinery the trigger attack (:mod:`attacks.imitation_trigger`) shares.

Methods of :class:`InsertionAttack`
-----------------------------------
``query-plus``        the query text inserted once (Query+, as in RobustMask 2025, Table 2).
``keyword-stuffing``  the query's content words (stop words dropped; all words if none is
                      left) repeated in order until ``max_tokens`` words are inserted.
``random-trigger``    a control: ``trigger_len`` words drawn at random (seeded) from a
                      vocabulary (default: the content words of the query's candidate list, i.e.
                      in-domain words that carry no query signal by construction).

Insertion position (every insertion attack, the trigger attack included)
-----------------------------------------------------------------------
``start``     before the document (``span + " " + doc``; the PAT setting);
``end``       after it;
``sentence``  at a random sentence boundary (the start, or after a ``.``/``!``/``?`` followed by
              white space), drawn from a generator seeded by ``(seed, qid, docno)`` so the same
              seed gives the same position whatever the order of the targets.

Result rows are :class:`attacks.base.AttackResult` rows like the word-substitution attack's:
``n_changed`` = inserted words, ``pp`` = inserted words / words of the original document, and
``substitutions = [(word_position, "", inserted_text)]`` (an insertion is a substitution of the
empty string at a word position, 0-based). One victim query per target at most (the submitted
document's rank, through :meth:`rankers.oracle.Oracle.rank_of`) when ``victim_check=True`` (the
result is the same either way: the inserted text does not depend on the answer).
"""
from __future__ import annotations

import hashlib
import re
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from .base import (Attack, AttackError, AttackResult, Stopwatch, check_tie_rule, new_rank, pp_of,
                   target_context)
from .text import words as text_words

POSITIONS = ("start", "end", "sentence")
INSERTION_METHODS = ("query-plus", "keyword-stuffing", "random-trigger")
_SENT_END = re.compile(r"[.!?]\s+")


def check_position(position: str) -> str:
    if position not in POSITIONS:
        raise AttackError(f"position must be one of {POSITIONS}, got {position!r}")
    return position


def target_rng(seed: int, qid: str, docno: str) -> np.random.Generator:
    """A generator seeded by ``(seed, qid, docno)`` (independent of the order of targets)."""
    h = hashlib.sha256(f"{int(seed)}\x00{qid}\x00{docno}".encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "little"))


def sentence_boundaries(text: str) -> list[int]:
    """Character offsets where a sentence starts: 0 and after each ``.``/``!``/``?`` + space."""
    return [0] + [m.end() for m in _SENT_END.finditer(text) if m.end() < len(text)]


def insertion_offset(text: str, position: str, rng: np.random.Generator | None = None) -> int:
    """Character offset of the insertion point for ``position`` (``sentence`` needs ``rng``)."""
    check_position(position)
    if position == "start":
        return 0
    if position == "end":
        return len(text)
    if rng is None:
        raise AttackError("position 'sentence' needs a seeded generator")
    b = sentence_boundaries(text)
    return int(b[int(rng.integers(len(b)))])


def insert_at(text: str, span: str, offset: int) -> tuple[str, int, int]:
    """Insert ``span`` at character ``offset`` of ``text`` with one separating space on each
    side that needs one. Returns ``(new_text, start, end)``: ``new_text[start:end] == span``."""
    before, after = text[:offset], text[offset:]
    pre = "" if not before or before[-1].isspace() else " "
    post = "" if not after or after[0].isspace() else " "
    new = before + pre + span + post + after
    start = len(before) + len(pre)
    return new, start, start + len(span)


def insertion_word_position(text: str, offset: int) -> int:
    """0-based word position of an insertion at character ``offset`` (= words before it)."""
    return len(text_words(text[:offset]))


def _content_words(text: str, stop: set) -> list[str]:
    return [w for w in text_words(text) if w.lower() not in stop and any(c.isalpha() for c in w)]


class InsertionBase(Attack):
    """Shared bookkeeping of insertion attacks: position, the victim check and the result row.

    Subclasses implement :meth:`_spans` (candidate spans to insert, best first) and may use
    ``self._victim_checks`` submissions to choose among them.
    """

    method = "insertion"
    position = "start"
    tie_rule = "pessimistic"
    seed = 0

    def _offset(self, ctx) -> int:
        rng = target_rng(self.seed, ctx.qid, ctx.docno)
        return insertion_offset(ctx.text, self.position, rng)

    def _result(self, oracle, ctx, span: str, offset: int, watch: Stopwatch, q0: int, *,
                n_tried: int = 0, exhausted: bool = False, passes: int = 0,
                surrogate_rank: int = 0) -> AttackResult:
        n_words = len(text_words(ctx.text))
        if span:
            adv_text, _, _ = insert_at(ctx.text, span, offset)
            # measured by the experiment owner: not an attacker query
            adv_score = float(oracle.ranker.score_pairs([ctx.query], [adv_text])[0])
            subs = [(insertion_word_position(ctx.text, offset), "", span)]
        else:
            adv_text, adv_score, subs = ctx.text, ctx.orig_score, []
        adv_rank = new_rank(adv_score, ctx.other_scores, self.tie_rule)
        n_ins = len(text_words(span))
        return AttackResult(
            qid=ctx.qid, docno=ctx.docno, orig_rank=ctx.orig_rank, adv_rank=adv_rank,
            orig_score=ctx.orig_score, adv_score=adv_score, success=adv_rank < ctx.orig_rank,
            queries_used=int(getattr(oracle, "queries_used", 0) - q0), n_changed=n_ins,
            pp=pp_of(n_ins, n_words), adv_text=adv_text, method=self.method, seed=self.seed,
            threat=f"insert:{self.position}", wall_s=watch.elapsed, n_words=n_words,
            substitutions=subs, query=ctx.query, orig_text=ctx.text,
            budget_exhausted=exhausted, n_tried=n_tried, surrogate_passes=passes,
            surrogate_rank=int(surrogate_rank))


class InsertionAttack(InsertionBase):
    """Query+, keyword stuffing and the random-trigger control (module doc).

    Parameters
    ----------
    method : ``query-plus`` | ``keyword-stuffing`` | ``random-trigger``.
    position : ``start`` (default) | ``end`` | ``sentence`` (random sentence boundary).
    max_tokens : cap on inserted words. ``query-plus``: ``None`` (default) inserts the whole
        query, a number keeps its first words; ``keyword-stuffing``: the budget filled with
        repeated query terms (default 10); ignored by ``random-trigger``.
    trigger_len : words of the random trigger (6).
    vocabulary : words for ``random-trigger`` (default: content words of the query's candidate
        list, lower-cased, alphabetic, >= 3 letters, stop words excluded).
    victim_check : ask the victim for the submitted document's rank (one counted query per
        target, as an attacker would to confirm); ``False`` spends no victim query.
    stopwords : ``True`` (the lab's list), ``False`` or an iterable (keyword stuffing and the
        random vocabulary drop these).
    tie_rule : ``pessimistic`` (default) or ``optimistic``.
    seed : drives the random trigger and the ``sentence`` position.
    """

    def __init__(self, method: str = "query-plus", position: str = "start",
                 max_tokens: int | None = None, trigger_len: int = 6,
                 vocabulary: Iterable[str] | None = None, victim_check: bool = True,
                 stopwords: bool | Iterable[str] = True, tie_rule: str = "pessimistic",
                 seed: int = 0):
        from .stopwords import stopword_set

        if method not in INSERTION_METHODS:
            raise AttackError(f"unknown insertion method {method!r}; use one of "
                              f"{INSERTION_METHODS}")
        check_position(position)
        check_tie_rule(tie_rule)
        if max_tokens is not None and int(max_tokens) < 1:
            raise AttackError(f"max_tokens must be >= 1 or None, got {max_tokens}")
        if int(trigger_len) < 1:
            raise AttackError(f"trigger_len must be >= 1, got {trigger_len}")
        self.method = method
        self.position = position
        if max_tokens is None and method == "keyword-stuffing":
            max_tokens = 10
        self.max_tokens = None if max_tokens is None else int(max_tokens)
        self.trigger_len = int(trigger_len)
        self.vocabulary = None if vocabulary is None else sorted({str(w) for w in vocabulary})
        if self.vocabulary is not None and not self.vocabulary:
            raise AttackError("vocabulary is empty; give words or None (the candidate list's)")
        self.victim_check = bool(victim_check)
        self.stopwords = stopword_set(stopwords)
        self.tie_rule = tie_rule
        self.seed = int(seed)

    def span(self, ctx) -> str:
        """The text inserted into the target of ``ctx`` (a :class:`~attacks.base.TargetContext`)."""
        if self.method == "query-plus":
            ws = text_words(ctx.query)
            if self.max_tokens is not None and len(ws) > self.max_tokens:
                return " ".join(ws[: self.max_tokens])
            return ctx.query.strip()
        if self.method == "keyword-stuffing":
            terms = _content_words(ctx.query, self.stopwords) or text_words(ctx.query)
            if not terms:
                raise AttackError(f"query {ctx.qid!r} has no word to stuff")
            return " ".join(terms[i % len(terms)] for i in range(self.max_tokens))
        vocab = self.vocabulary
        if vocab is None:
            vocab = sorted({w.lower() for t in (ctx.text,) + tuple(ctx.other_texts)
                            for w in _content_words(t, self.stopwords)
                            if w.isalpha() and len(w) >= 3})
        if not vocab:
            raise AttackError("no vocabulary for the random trigger: give vocabulary=[...]")
        rng = target_rng(self.seed + 1, ctx.qid, ctx.docno)
        return " ".join(vocab[int(i)] for i in rng.integers(len(vocab), size=self.trigger_len))

    def attack(self, oracle, query: str, target_docno: str,
               run_for_query: pd.DataFrame) -> AttackResult:
        """Insert this method's span into one target; returns its :class:`AttackResult`."""
        watch = Stopwatch()
        if self.victim_check and getattr(oracle, "access", "rank") == "topk":
            raise AttackError("the victim check needs rank feedback: use an Oracle with access "
                              "'rank' (or 'score'), or victim_check=False")
        ctx = target_context(run_for_query, target_docno, self.tie_rule, query)
        q0 = int(getattr(oracle, "queries_used", 0))
        span = self.span(ctx)
        offset = self._offset(ctx)
        tried, exhausted = 0, False
        if self.victim_check and span:
            from rankers.oracle import BudgetExhausted

            try:
                oracle.rank_of(ctx.query, insert_at(ctx.text, span, offset)[0], ctx.other_scores)
                tried = 1
            except BudgetExhausted:
                exhausted = True
        return self._result(oracle, ctx, span, offset, watch, q0, n_tried=tried,
                            exhausted=exhausted)


def inserted_spans(substitutions: Sequence) -> list[str]:
    """The inserted texts of a result row's ``substitutions`` (entries whose old word is ``""``)."""
    out = []
    for s in substitutions or []:
        if len(s) == 3 and str(s[1]) == "" and str(s[2]):
            out.append(str(s[2]))
    return out

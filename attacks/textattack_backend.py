"""The word-substitution ranking attack expressed in TextAttack's terms (a reference baseline).

TextAttack is imported only when an attack runs (:func:`import_textattack`), never at import time
of the lab's packages: its first import downloads NLTK data unless it finds it, and it is heavy
(~10 s, it imports flair). :func:`import_textattack` makes the import work offline: it prepares an
NLTK data directory with the stop-word corpus (and WordNet when available, via
:func:`attacks.lexical_resources.wordnet_nltk_dir`; otherwise a minimal stop-words-only directory
under the lab's cache), points TextAttack's cache to ``<ranklab cache>/textattack`` with its
"post-install done" marker (so it downloads nothing), and restores the cache environment variables
TextAttack rewrites.

The attack problem
------------------
* Input: two columns ``query`` and ``document``; the query is frozen with
  ``InputColumnModification``; the target is identified by its docno string (the "ground truth").
* Model wrapper: raw victim scores for (query, document) pairs through the :class:`Oracle`, so
  every victim query is counted (the original document's score is known from the run and costs
  nothing). With an oracle of access ``rank`` the wrapper returns ``-rank`` instead (a decision-
  based score).
* Goal function: score = margin to the competitor that must be beaten (the document at rank
  ``orig_rank - 1``, or at rank ``goal_k`` for the ``topk`` goal) in the fixed original list;
  goal reached when the new rank beats the original (``goal="improve"``) or is <= ``goal_k``
  (``goal="topk"``).
* Transformation: a ``WordSwap`` calling the lab's ``threat.neighbours`` (case matched).
* Constraints (all offline): ``RepeatModification``, ``StopwordModification`` with the lab's stop
  words, ``InputColumnModification``, ``MaxWordsPerturbed(max_words)``, the lab's PP cap
  (changed words / document words <= ``max_pp``, word-level alignment of :mod:`attacks.text`),
  and (``only_substitutable=True``) only words with a substitute are modifiable.
* Search: ``GreedyWordSwapWIR`` (``search="greedy-wir"``: word importance by replacing each word
  with ``[UNK]``, one victim query per word; ``"greedy-wir-delete"``: by deleting it) or
  ``GreedySearch`` (``search="greedy"``: every swap of every word per step).
* Query budget: TextAttack's own per-example budget, set so that the oracle is never asked more
  than ``query_budget`` times per target (nor beyond its own remaining budget).
"""
from __future__ import annotations

import functools
import logging
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .base import (Attack, AttackError, AttackResult, NoSubstitutes, Stopwatch, check_tie_rule,
                   max_changes, new_rank, pp_of, target_context)
from .text import changed_positions, tokenize, words as text_words

SEARCHES = ("greedy-wir", "greedy-wir-delete", "greedy")
_TA_ENV = ("TFHUB_CACHE_DIR", "PYTORCH_TRANSFORMERS_CACHE", "HF_HOME", "XDG_CACHE_HOME",
           "TA_CACHE_DIR")
_POST_INSTALL_MARKER = "post_install_check_3"


def _nltk_stopwords_dir() -> Path:
    """An NLTK data dir with ``corpora/stopwords/english`` (WordNet too when available)."""
    from . import lexical_resources as res

    try:
        return res.wordnet_nltk_dir()
    except res.ResourceMissing:
        pass
    d = res.cache_root() / "nltk_data-stopwords"
    f = d / "corpora" / "stopwords" / "english"
    if not f.is_file():
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(".tmp")
        tmp.write_text(res.stopwords_text())
        os.replace(tmp, f)
    import nltk.data

    if str(d) not in nltk.data.path:
        nltk.data.path.append(str(d))
    return d


@functools.lru_cache(maxsize=1)
def import_textattack():
    """Import TextAttack offline (see the module doc) and return the module."""
    import sys

    if "textattack" in sys.modules:
        return sys.modules["textattack"]
    _nltk_stopwords_dir()
    from . import lexical_resources as res

    # fix the HF caches' locations before TextAttack points HF_HOME at its own directory
    import huggingface_hub  # noqa: F401
    import transformers  # noqa: F401

    saved = {k: os.environ.get(k) for k in _TA_ENV}
    ta_dir = Path(os.environ.get("TA_CACHE_DIR") or res.cache_root() / "textattack")
    ta_dir.mkdir(parents=True, exist_ok=True)
    (ta_dir / _POST_INSTALL_MARKER).touch()   # the NLTK data TextAttack needs is provided above
    os.environ["TA_CACHE_DIR"] = str(ta_dir)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # PYTORCH_TRANSFORMERS_CACHE
            import textattack
    except ImportError as e:
        raise ImportError("the TextAttack backend needs `pip install textattack==0.3.11` "
                          "(pyproject extra 'textattack')") from e
    finally:
        for k, v in saved.items():  # TextAttack points HF/XDG caches at its own dir: undo
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    logging.getLogger("textattack").setLevel(logging.WARNING)
    return textattack


@functools.lru_cache(maxsize=1)
def _components():
    """TextAttack subclasses (defined once TextAttack is imported)."""
    import_textattack()
    from textattack.constraints import Constraint, PreTransformationConstraint
    from textattack.goal_function_results import GoalFunctionResult
    from textattack.goal_functions import GoalFunction
    from textattack.models.wrappers import ModelWrapper
    from textattack.transformations import WordSwap

    from rankers.oracle import rank_against

    from .threat import match_case

    class OracleModelWrapper(ModelWrapper):
        """Victim scores of ``(query, document)`` pairs through the Oracle (counted)."""

        def __init__(self, oracle, other_scores, known: dict):
            self.model = oracle
            self.oracle = oracle
            self.other_scores = other_scores
            self.known = dict(known)  # text -> score (or -rank) known without a query

        def __call__(self, text_input_list, **kwargs):
            out = np.empty(len(text_input_list))
            todo: dict[tuple, list[int]] = {}
            for i, (q, d) in enumerate(text_input_list):
                if d in self.known:
                    out[i] = self.known[d]
                else:
                    todo.setdefault((q, d), []).append(i)
            if todo:
                pairs = list(todo)
                if self.oracle.access == "score":
                    vals = self.oracle.score_pairs([q for q, _ in pairs], [d for _, d in pairs])
                else:
                    vals = [-float(r) for r in self.oracle.ranks_of(
                        pairs[0][0], [d for _, d in pairs], self.other_scores)]
                for (q, d), v in zip(pairs, vals):
                    self.known[d] = float(v)
                    for i in todo[(q, d)]:
                        out[i] = float(v)
            return out

    class RankGoalFunctionResult(GoalFunctionResult):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs, goal_function_result_type="Ranking")

        def get_text_color_input(self):
            return "red"

        def get_text_color_perturbed(self):
            return "blue"

        def get_colored_output(self, color_method=None):
            return str(self.output)

    class RankPromotionGoal(GoalFunction):
        """Promote the target in a fixed list: score = margin to the competitor to beat."""

        def __init__(self, model_wrapper, other_scores, orig_rank: int, tie_rule: str,
                     goal: str, goal_k: int, decision: bool, **kwargs):
            super().__init__(model_wrapper, **kwargs)
            self.other_scores = np.sort(np.asarray(other_scores, dtype=np.float64))[::-1]
            self.orig_rank = int(orig_rank)
            self.tie_rule = tie_rule
            self.goal = goal
            self.goal_k = int(goal_k)
            self.decision = decision
            need = self.goal_k if goal == "topk" else self.orig_rank - 1
            need = min(max(need, 1), len(self.other_scores))
            self.competitor = float(self.other_scores[need - 1]) if len(self.other_scores) else 0.0

        def _rank(self, out) -> int:
            if self.decision:
                return int(round(-float(out)))
            return rank_against(float(out), self.other_scores, self.tie_rule)

        def _is_goal_complete(self, model_output, _):
            r = self._rank(model_output)
            return r <= self.goal_k if self.goal == "topk" else r < self.orig_rank

        def _get_score(self, model_output, _):
            if self.decision:
                return float(model_output)  # -rank
            return float(model_output) - self.competitor

        def _process_model_outputs(self, inputs, outputs):
            return np.asarray(outputs, dtype=np.float64).reshape(-1)

        def _goal_function_result_type(self):
            return RankGoalFunctionResult

        def extra_repr_keys(self):
            return ["orig_rank", "goal", "goal_k"] + super().extra_repr_keys()

    class ThreatWordSwap(WordSwap):
        """Substitutes from the lab's threat model (capitalisation copied)."""

        def __init__(self, threat, n_candidates: int, stopwords: frozenset):
            super().__init__()
            self.threat = threat
            self.n_candidates = n_candidates
            self.stopwords = stopwords

        def _get_replacement_words(self, word):
            if word.lower() in self.stopwords:
                return []
            subs = [n for n in self.threat.neighbours(word) if n not in self.stopwords]
            return [match_case(word, n) for n in subs[: self.n_candidates]]

        def extra_repr_keys(self):
            return ["n_candidates"]

    class DocumentPerturbationCap(Constraint):
        """Changed words of the ``document`` column / its words <= cap (lab word alignment)."""

        def __init__(self, max_changed: int):
            super().__init__(compare_against_original=True)
            self.max_changed = int(max_changed)

        def _check_constraint(self, transformed_text, reference_text):
            a = reference_text._text_input.get("document", "")
            b = transformed_text._text_input.get("document", "")
            return len(changed_positions(a, b)) <= self.max_changed

        def extra_repr_keys(self):
            return ["max_changed"] + super().extra_repr_keys()

    class SubstitutableWords(PreTransformationConstraint):
        """Only words the threat model can substitute are ranked and searched (saves the
        word-importance queries on words that could never change)."""

        def __init__(self, swap):
            self.swap = swap

        def _get_modifiable_indices(self, current_text):
            return {i for i, w in enumerate(current_text.words)
                    if self.swap._get_replacement_words(w)}

    return {"wrapper": OracleModelWrapper, "goal": RankPromotionGoal, "swap": ThreatWordSwap,
            "cap": DocumentPerturbationCap, "substitutable": SubstitutableWords}


class TextAttackWordSubstitution(Attack):
    """The word-substitution ranking attack run by TextAttack (see the module doc).

    Parameters mirror :class:`attacks.word_substitution.WordSubstitutionAttack`: ``threat``,
    ``max_words``, ``max_pp``, ``n_candidates``, ``stopwords``, ``query_budget`` (victim queries
    per target), ``tie_rule``, ``goal`` (``"improve"`` — the default — or ``"topk"`` with
    ``goal_k``), ``search`` (``greedy-wir`` | ``greedy-wir-delete`` | ``greedy``), ``seed``.
    ``only_substitutable`` (default True) adds a pre-transformation constraint that leaves only
    words with at least one substitute modifiable, so the word-importance ranking spends no victim
    query on words that can never change (TextAttack's stock WIR queries every word).
    The oracle needs access ``score`` (margins) or ``rank`` (the score becomes ``-rank``).
    """

    def __init__(self, threat, max_words: int = 10, max_pp: float | None = 0.1,
                 query_budget: int | None = None, search: str = "greedy-wir",
                 n_candidates: int = 50, stopwords: bool | Iterable[str] = True,
                 tie_rule: str = "pessimistic", goal: str = "improve", goal_k: int = 10,
                 only_substitutable: bool = True, seed: int = 0):
        from .threat import as_threat_model

        threat = as_threat_model(threat)
        if search not in SEARCHES:
            raise AttackError(f"search must be one of {SEARCHES}, got {search!r}")
        if goal not in ("improve", "topk"):
            raise AttackError("goal must be 'improve' or 'topk'")
        if int(max_words) < 1:
            raise AttackError(f"max_words must be >= 1, got {max_words}")
        if max_pp is not None and not 0 < float(max_pp) <= 1:
            raise AttackError(f"max_pp is a fraction in (0, 1], got {max_pp}")
        if query_budget is not None and int(query_budget) < 0:
            raise AttackError("query_budget must be >= 0 or None")
        check_tie_rule(tie_rule)
        from .stopwords import stopword_set

        sw = stopword_set(stopwords)
        self.threat = threat
        self.max_words = int(max_words)
        self.max_pp = None if max_pp is None else float(max_pp)
        self.query_budget = None if query_budget is None else int(query_budget)
        self.search = search
        self.n_candidates = int(n_candidates)
        self.stopwords = sw
        self.tie_rule = tie_rule
        self.goal = goal
        self.goal_k = int(goal_k)
        self.only_substitutable = bool(only_substitutable)
        self.seed = int(seed)
        self.method = f"textattack-{search}"

    def _search_method(self):
        from textattack.search_methods import GreedySearch, GreedyWordSwapWIR

        if self.search == "greedy":
            return GreedySearch()
        return GreedyWordSwapWIR(wir_method="delete" if self.search.endswith("delete") else "unk")

    def attack(self, oracle, query: str, target_docno: str,
               run_for_query: pd.DataFrame) -> AttackResult:
        """Attack one target with TextAttack; returns its :class:`AttackResult`."""
        watch = Stopwatch()
        if oracle.access not in ("score", "rank"):
            raise AttackError("the TextAttack backend needs an Oracle with access 'score' "
                              "(margins) or 'rank'")
        ctx = target_context(run_for_query, target_docno, self.tie_rule, query)
        view = tokenize(ctx.text)
        n_words = len(view)
        if not any(w.lower() not in self.stopwords and
                   [n for n in self.threat.neighbours(w) if n not in self.stopwords]
                   for w in dict.fromkeys(view.words)):
            raise NoSubstitutes(
                f"the threat model {getattr(self.threat, 'name', self.threat)!r} has no substitute "
                f"for any word of document {ctx.docno!r} (qid {ctx.qid!r}; stop words excluded). "
                "Use a richer threat model or pick another target")
        q0 = oracle.queries_used
        cap = max_changes(n_words, self.max_words, self.max_pp)
        budget = self.query_budget
        if oracle.remaining is not None:
            budget = oracle.remaining if budget is None else min(budget, oracle.remaining)
        adv_text, exhausted = ctx.text, False
        if cap > 0 and (budget is None or budget > 0):
            adv_text, exhausted = self._run_textattack(oracle, ctx, cap, budget)
        elif budget == 0:
            exhausted = True
        if adv_text != ctx.text:
            adv_score = float(oracle.ranker.score_pairs([ctx.query], [adv_text])[0])
        else:
            adv_score = ctx.orig_score
        adv_rank = new_rank(adv_score, ctx.other_scores, self.tie_rule)
        pos = changed_positions(ctx.text, adv_text)
        ow, aw = text_words(ctx.text), text_words(adv_text)
        used = oracle.queries_used - q0
        if self.query_budget is not None and used >= self.query_budget:
            exhausted = True
        return AttackResult(
            qid=ctx.qid, docno=ctx.docno, orig_rank=ctx.orig_rank, adv_rank=adv_rank,
            orig_score=ctx.orig_score, adv_score=adv_score, success=adv_rank < ctx.orig_rank,
            queries_used=int(used), n_changed=len(pos), pp=pp_of(len(pos), n_words),
            adv_text=adv_text, method=self.method, seed=self.seed,
            threat=self._threat_fingerprint(), wall_s=watch.elapsed, n_words=n_words,
            substitutions=[(p, ow[p], aw[p]) for p in pos if p < len(ow) and p < len(aw)],
            query=ctx.query, orig_text=ctx.text, budget_exhausted=bool(exhausted),
            n_tried=int(used), surrogate_passes=0)

    def _run_textattack(self, oracle, ctx, cap: int, budget: int | None) -> tuple[str, bool]:
        import random

        comp = _components()  # imports TextAttack offline first
        import textattack
        from textattack.constraints.overlap import MaxWordsPerturbed
        from textattack.constraints.pre_transformation import (InputColumnModification,
                                                               RepeatModification,
                                                               StopwordModification)

        from rankers.oracle import BudgetExhausted

        random.seed(self.seed)
        np.random.seed(self.seed % 2**32)
        decision = oracle.access != "score"
        known = {ctx.text: (-float(ctx.orig_rank) if decision else ctx.orig_score)}
        wrapper = comp["wrapper"](oracle, ctx.other_scores, known)
        # TextAttack counts the (free) original once; its budget is in its own counting
        ta_budget = float("inf") if budget is None else int(budget) + 1
        ta_log = logging.getLogger("textattack.shared.utils.install")
        level = ta_log.level
        ta_log.setLevel(logging.ERROR)  # "no entry found for goal function": expected here
        try:
            goal = comp["goal"](wrapper, ctx.other_scores, ctx.orig_rank, self.tie_rule,
                                self.goal, self.goal_k, decision, query_budget=ta_budget,
                                model_batch_size=64)
        finally:
            ta_log.setLevel(level)
        constraints = [
            RepeatModification(),
            StopwordModification(stopwords=set(self.stopwords)),
            InputColumnModification(["query", "document"], {"query"}),
            MaxWordsPerturbed(max_num_words=cap),
            comp["cap"](cap),
        ]
        swap = comp["swap"](self.threat, self.n_candidates, self.stopwords)
        if self.only_substitutable:
            constraints.append(comp["substitutable"](swap))
        attack = textattack.Attack(goal, constraints, swap, self._search_method())
        example = OrderedDict([("query", ctx.query), ("document", ctx.text)])
        try:
            result = attack.attack(example, str(ctx.docno))
        except BudgetExhausted:
            return ctx.text, True
        final = result.perturbed_result
        adv = final.attacked_text._text_input["document"]
        exhausted = budget is not None and goal.num_queries >= ta_budget
        return adv, exhausted

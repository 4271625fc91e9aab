"""The attack protocol, one result row, target sampling and rank bookkeeping.

Conventions
-----------
* Ranks are **1-based** (rank 1 = best).
* The *original list* of a query is the victim's run for it (``qid, query, docno, text, score,
  rank``), scored once by the experiment owner. After an attack the target's new rank is computed
  against that ORIGINAL list with the other documents' scores held fixed::

      r' = 1 + #{other docs with score >= s'}     (tie_rule="pessimistic", the default)
      r' = 1 + #{other docs with score >  s'}     (tie_rule="optimistic")

  The original rank ``r0`` reported in results uses the same rule on the original score, so
  ``success = r' < r0`` compares like with like (under exact ties ``r0`` can differ from the run's
  ``rank`` column, which breaks ties by list order).
* Stored lists are never modified: every helper works on copies (the reference code mutated the
  stored scores and contaminated later targets).

An attack is a callable object (:class:`Attack`): ``__init__`` stores validated parameters only;
``attack(oracle, query, target_docno, run_for_query)`` returns one :class:`AttackResult`;
``run(victim_oracle, col, targets, run)`` attacks many targets and returns the attack-results
frame (one row per target, columns :data:`RESULT_COLUMNS`).
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from rankers.base import require_columns

TIE_RULES = ("pessimistic", "optimistic")
PROTOCOLS = ("easy5", "hard5", "mixture", "ranks")


class AttackError(ValueError):
    """Bad input to an attack; the message says what to do."""


class TargetNotInList(AttackError):
    """The target document is not in the victim's original list for the query."""


class EmptyDocument(AttackError):
    """The target document has no words to substitute."""


class NoSubstitutes(AttackError):
    """The threat model allows no substitution for any word of the target document."""


# ----------------------------------------------------------------------------------- result row

@dataclass
class AttackResult:
    """One row of the attack-results frame.

    Fields
    ------
    qid, docno        the query and the target document
    orig_rank         1-based rank of the original document in the original list (tie rule applied)
    adv_rank          1-based rank of the adversarial document against the same fixed list
    orig_score        victim score of the original document (from the run)
    adv_score         victim score of the adversarial document (measured by the experiment owner,
                      not counted as an attacker query)
    success           ``adv_rank < orig_rank``
    queries_used      victim queries the attacker spent on this target (the oracle's count)
    n_changed         words changed (word-level alignment, :func:`attacks.text.changed_positions`)
    pp                perturbation percentage as a fraction: ``n_changed / n_words`` in [0, 1]
    adv_text          the adversarial document
    method            attack name (``word-substitution``, ``textattack-greedy-wir``, ...)
    seed              the attack's seed
    threat            fingerprint of the threat model (:attr:`ThreatModel.fingerprint`)
    wall_s            wall time spent on this target, seconds
    n_words           words in the original document
    substitutions     list of ``(pos, old, new)`` (0-based word positions)
    query             the query text
    orig_text         the original document
    budget_exhausted  True when a query budget stopped the attack (the result so far is kept)
    n_tried           substitutions submitted to the victim
    surrogate_passes  surrogate forward(+backward) passes spent on this target (cached competitor
                      scores count once, for the first target of a query)
    error             empty, or why the target could not be attacked (``errors="record"``)
    protocol          the target protocol (``easy5``, ``hard5``, ...) when the targets say so
    search            the search strategy (``greedy``, ``beam``, ``prada``; empty for others)
    goal              the goal pursued (``max``, ``improve``, ``topk``, ``all-words``)
    white_box         True when the search read the victim's own scores (counted queries)
    window_share      share of the document's words inside the scoring ranker's truncation
                      window, in [0, 1] (words beyond it are never candidates)
    surrogate_rank    1-based rank the attack's surrogate gives the adversarial document against
                      the same list by its own scores (the transfer gap: compare with
                      ``adv_rank``); 0 when not measured (no surrogate, a white-box search)
    """

    qid: str
    docno: str
    orig_rank: int
    adv_rank: int
    orig_score: float
    adv_score: float
    success: bool
    queries_used: int
    n_changed: int
    pp: float
    adv_text: str
    method: str = ""
    seed: int = 0
    threat: str = ""
    wall_s: float = 0.0
    n_words: int = 0
    substitutions: list = field(default_factory=list)
    query: str = ""
    orig_text: str = ""
    budget_exhausted: bool = False
    n_tried: int = 0
    surrogate_passes: int = 0
    error: str = ""
    protocol: str = ""
    search: str = ""
    goal: str = ""
    white_box: bool = False
    window_share: float = 1.0
    surrogate_rank: int = 0

    def to_row(self) -> dict:
        """A JSON-friendly dict (substitutions as ``[pos, old, new]`` lists)."""
        d = asdict(self)
        d["substitutions"] = [[int(p), str(o), str(n)] for p, o, n in self.substitutions]
        for k in ("orig_rank", "adv_rank", "queries_used", "n_changed", "n_words", "seed",
                  "n_tried", "surrogate_passes", "surrogate_rank"):
            d[k] = int(d[k])
        for k in ("orig_score", "adv_score", "pp", "wall_s", "window_share"):
            d[k] = float(d[k])
        for k in ("success", "budget_exhausted", "white_box"):
            d[k] = bool(d[k])
        return d


#: Columns of the attack-results frame, in order.
RESULT_COLUMNS = [f for f in AttackResult.__dataclass_fields__]


def results_frame(results: Iterable[AttackResult | dict]) -> pd.DataFrame:
    """The attack-results frame (columns :data:`RESULT_COLUMNS`) from results or row dicts."""
    rows = [r.to_row() if isinstance(r, AttackResult) else dict(r) for r in results]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


# ----------------------------------------------------------------------------------- ranks

def check_tie_rule(tie_rule: str) -> str:
    if tie_rule not in TIE_RULES:
        raise AttackError(f"tie_rule must be one of {TIE_RULES}, got {tie_rule!r}")
    return tie_rule


def new_rank(score: float, other_scores: Sequence[float] | np.ndarray,
             tie_rule: str = "pessimistic") -> int:
    """1-based rank of a document with ``score`` against the fixed ``other_scores`` (the original
    list without the target). ``pessimistic`` (default): ties rank the document below the others;
    ``optimistic``: above."""
    from rankers.oracle import rank_against

    check_tie_rule(tie_rule)
    return rank_against(float(score), np.asarray(other_scores, dtype=np.float64), tie_rule)


@dataclass(frozen=True)
class TargetContext:
    """A target inside its original list (a read-only view built from a copy)."""

    qid: str
    query: str
    docno: str
    text: str
    orig_score: float
    orig_rank: int
    other_docnos: tuple
    other_texts: tuple
    other_scores: np.ndarray  # descending, the target excluded; never written


def target_context(run_for_query: pd.DataFrame, target_docno: str,
                   tie_rule: str = "pessimistic", query: str | None = None) -> TargetContext:
    """Locate ``target_docno`` in the victim's original list for one query.

    Raises :class:`TargetNotInList` (naming the qid and docno and how to pick a target) when the
    document is not in the list, :class:`EmptyDocument` when its text has no word.
    """
    from .text import words

    require_columns(run_for_query, ("docno", "text", "score"), "the victim's list",
                    "pass the victim's run for the query (ranker.transform(candidates))",
                    AttackError)
    if run_for_query.empty:
        raise AttackError("the victim's list for the query is empty; rank the query's candidates "
                          "with the victim first")
    qids = run_for_query["qid"].astype(str).unique().tolist() if "qid" in run_for_query else ["?"]
    if len(qids) > 1:
        raise AttackError(f"run_for_query holds several queries ({qids[:5]}); pass "
                          "run[run.qid == QID]")
    qid = qids[0]
    frame = run_for_query.sort_values("score", ascending=False, kind="stable")
    docnos = frame["docno"].astype(str).to_numpy()
    hit = np.flatnonzero(docnos == str(target_docno))
    if hit.size == 0:
        raise TargetNotInList(
            f"target docno {target_docno!r} is not in the victim's list for qid {qid!r} "
            f"({len(docnos)} documents). Attack a document of that list: pick targets with "
            "attacks.sample_targets(run, 'easy5') or from run[run.qid == qid].docno")
    i = int(hit[0])
    texts = frame["text"].tolist()
    scores = frame["score"].to_numpy(dtype=np.float64).copy()
    text = texts[i]
    if not isinstance(text, str) or not words(text):
        raise EmptyDocument(
            f"target docno {target_docno!r} (qid {qid!r}) has an empty text (no words to "
            "substitute); pick another target or fix the collection")
    keep = np.ones(len(docnos), dtype=bool)
    keep[i] = False
    if query is None:
        if "query" not in frame.columns:
            raise AttackError("give the query text (the list has no 'query' column)")
        query = str(frame["query"].iloc[0])
    others = scores[keep]
    others.setflags(write=False)
    return TargetContext(qid=qid, query=query, docno=str(target_docno), text=text,
                         orig_score=float(scores[i]),
                         orig_rank=new_rank(scores[i], others, tie_rule),
                         other_docnos=tuple(docnos[keep]),
                         other_texts=tuple(t for t, k in zip(texts, keep) if k),
                         other_scores=others)


# ----------------------------------------------------------------------------------- targets

def _blocks(length: int) -> tuple[list[np.ndarray], bool]:
    """easy5 rank blocks (1-based ranks) for a list of ``length`` and whether they were adapted."""
    if length >= 100:
        return [np.arange(51 + 10 * b, 61 + 10 * b) for b in range(5)], False
    lo = length // 2 + 1            # the bottom half, as ranks 51..100 are for 100 documents
    lo = max(lo, 2)                 # rank 1 cannot be promoted
    ranks = np.arange(lo, length + 1)
    if ranks.size == 0:
        return [], True
    return [b for b in np.array_split(ranks, min(5, ranks.size)) if b.size], True


def sample_targets(run: pd.DataFrame, protocol: str = "easy5", seed: int = 0,
                   ranks: Sequence[int] | None = None) -> pd.DataFrame:
    """Targets per query of a victim run (1-based ranks). Returns ``qid, docno, rank, protocol``.

    Protocols
    ---------
    ``easy5``    one random document from each 10-rank block of ranks 51..100 (5 per query).
                 Lists shorter than 100: the bottom half of the list (ranks ``L//2+1..L``, never
                 rank 1) is split into 5 equal blocks instead (fewer when it has < 5 documents);
                 a warning says so.
    ``hard5``    the last 5 documents of the list (rank 1 excluded).
    ``mixture``  both: the easy5 and the hard5 targets of each query (duplicates once).
    ``ranks``    the documents at the explicit 1-based ``ranks`` (an error names the query whose
                 list is too short).

    Random choices come from ``seed`` (one generator, queries in sorted qid order). The run is
    not modified.
    """
    if protocol not in PROTOCOLS:
        raise AttackError(f"unknown target protocol {protocol!r}; use one of {PROTOCOLS}")
    require_columns(run, ("qid", "docno", "score"), "sample_targets", "pass a ranked run frame",
                    AttackError)
    if protocol == "ranks":
        if not ranks:
            raise AttackError("protocol 'ranks' needs ranks=[...] (1-based)")
        bad = [r for r in ranks if int(r) < 1]
        if bad:
            raise AttackError(f"ranks are 1-based; got {bad}")
    rng = np.random.default_rng(seed)
    rows, adapted = [], []
    frame = run.copy()
    frame["qid"] = frame["qid"].astype(str)
    frame["docno"] = frame["docno"].astype(str)
    for qid in sorted(frame["qid"].unique()):
        g = frame[frame["qid"] == qid]
        if "rank" in g.columns:
            g = g.sort_values("rank", kind="stable")
        else:
            g = g.sort_values("score", ascending=False, kind="stable")
        docnos = g["docno"].tolist()
        n = len(docnos)
        picks: list[tuple[int, str]] = []
        if protocol in ("easy5", "mixture"):
            blocks, was_adapted = _blocks(n)
            if was_adapted:
                adapted.append((qid, n))
            for b in blocks:
                picks.append((int(rng.choice(b)), "easy5"))
        if protocol in ("hard5", "mixture"):
            for r in range(max(2, n - 4), n + 1):
                picks.append((r, "hard5"))
        if protocol == "ranks":
            for r in ranks:
                r = int(r)
                if r > n:
                    raise AttackError(f"qid {qid!r} has only {n} documents; rank {r} does not "
                                      "exist (use smaller ranks or a longer candidate list)")
                picks.append((r, "ranks"))
        seen = set()
        for r, proto in picks:
            if r in seen:
                continue
            seen.add(r)
            rows.append((qid, docnos[r - 1], r, proto))
    if adapted:
        ex = ", ".join(f"{q} ({n} docs)" for q, n in adapted[:3])
        warnings.warn(f"easy5 needs lists of >= 100 documents; {len(adapted)} shorter list(s) "
                      f"(e.g. {ex}) use 5 equal blocks of their bottom half instead",
                      stacklevel=2)
    return pd.DataFrame(rows, columns=["qid", "docno", "rank", "protocol"])


# ----------------------------------------------------------------------------------- protocol

class Attack:
    """Base class: subclasses implement :meth:`attack`. ``__init__`` stores validated
    parameters only; :meth:`run` is shared."""

    method: str = "attack"
    seed: int = 0

    def attack(self, oracle, query: str, target_docno: str,
               run_for_query: pd.DataFrame) -> AttackResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, oracle, query: str, target_docno: str,
                 run_for_query: pd.DataFrame) -> AttackResult:
        return self.attack(oracle, query, target_docno, run_for_query)

    def _threat_fingerprint(self) -> str:
        t = getattr(self, "threat", None)
        try:
            return "" if t is None else str(t.fingerprint)
        except Exception:  # a fingerprint must never stop an attack
            return getattr(t, "name", "")

    def run(self, victim_oracle, col, targets: pd.DataFrame, run: pd.DataFrame | None = None,
            progress: bool = True, errors: str = "raise",
            on_result: Callable[[AttackResult], None] | None = None,
            first_stage: str = "bm25", k: int = 100) -> pd.DataFrame:
        """Attack every target (rows ``qid, docno``); one result row per target, in order.

        ``run``: the victim's original run (``qid, query, docno, text, score, rank``); when
        ``None`` it is computed by the experiment owner (not counted as attacker queries) as
        ``victim.transform(col.candidates(first_stage, k))`` for the targets' queries.
        ``errors``: ``"raise"`` (default) stops at the first bad target; ``"record"`` writes an
        unchanged row with the message in ``error`` and goes on. ``on_result`` is called with
        each result as soon as it is ready (e.g. to append it to a JSONL file).
        Neither ``run``, ``targets`` nor the collection is modified.
        """
        from tqdm.auto import tqdm

        if errors not in ("raise", "record"):
            raise AttackError("errors must be 'raise' or 'record'")
        require_columns(targets, ("qid", "docno"), "targets", "use sample_targets(run, 'easy5')",
                        AttackError)
        cols = ["qid", "docno"] + (["protocol"] if "protocol" in targets.columns else [])
        tq = targets[cols].astype(str)
        if "protocol" not in tq.columns:
            tq = tq.assign(protocol="")
        if run is None:
            qids = sorted(tq["qid"].unique())
            run = victim_oracle.ranker.transform(col.candidates(first_stage, k=k, qids=qids))
        lists = {q: g.copy() for q, g in run.assign(qid=run["qid"].astype(str),
                                                   docno=run["docno"].astype(str)).groupby("qid")}
        out = []
        bar = tqdm(list(tq.itertuples(index=False)), desc=self.method, disable=not progress)
        for qid, docno, protocol in bar:
            if qid not in lists:
                exc = AttackError(f"qid {qid!r} has no list in the victim's run; rank its "
                                  "candidates first or drop the target")
                if errors == "raise":
                    raise exc
                res = self._error_result(qid, docno, None, exc)
                res.protocol = protocol
                out.append(res)
                if on_result is not None:
                    on_result(res)
                continue
            rq = lists[qid]
            query = str(rq["query"].iloc[0]) if "query" in rq.columns else col.query_text(qid)
            try:
                res = self.attack(victim_oracle, query, docno, rq.copy())
            except AttackError as exc:
                if errors == "raise":
                    raise
                res = self._error_result(qid, docno, rq, exc, query)
            res.protocol = protocol
            out.append(res)
            if on_result is not None:
                on_result(res)
            bar.set_postfix(success=f"{np.mean([r.success for r in out]):.2f}")
        return results_frame(out)

    def _error_result(self, qid, docno, rq, exc, query: str = "") -> AttackResult:
        rank, score, text = -1, float("nan"), ""
        if rq is not None:
            hit = rq[rq["docno"] == str(docno)]
            if len(hit):
                score = float(hit["score"].iloc[0])
                text = str(hit["text"].iloc[0])
                others = rq.loc[rq["docno"] != str(docno), "score"].to_numpy(dtype=np.float64)
                rank = new_rank(score, others, getattr(self, "tie_rule", "pessimistic"))
        from .text import words

        return AttackResult(qid=str(qid), docno=str(docno), orig_rank=rank, adv_rank=rank,
                            orig_score=score, adv_score=score, success=False, queries_used=0,
                            n_changed=0, pp=0.0, adv_text=text, method=self.method,
                            seed=int(self.seed), threat=self._threat_fingerprint(),
                            n_words=len(words(text)) if isinstance(text, str) else 0,
                            query=query, orig_text=text, error=f"{type(exc).__name__}: {exc}")


def pp_of(n_changed: int, n_words: int) -> float:
    """Perturbation percentage as a fraction in [0, 1] (0 for an empty document)."""
    return 0.0 if n_words <= 0 else n_changed / n_words


def max_changes(n_words: int, max_words: int, max_pp: float | None) -> int:
    """Most words an attack may change: ``min(max_words, floor(max_pp * n_words))``."""
    cap = int(max_words)
    if max_pp is not None:
        cap = min(cap, int(math.floor(max_pp * n_words + 1e-9)))
    return max(cap, 0)


class Stopwatch:
    def __init__(self):
        self.t0 = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

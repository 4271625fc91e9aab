"""Word-substitution ranking attack, PRADA-style, with the reference code's defects fixed.

Pipeline for one target document ``d_t`` of a query ``q`` (see docs/SPEC_ATTACKS.md, (a)):

1. **Loss on the surrogate** ``L = sum_j max(0, 1 - (s(q, d_t) - s(q, d_j)))`` over the victim's
   other top-``competitors_k`` documents of the ORIGINAL list (``K = 99`` as in the paper;
   a smaller K is a speed option). The competitors' surrogate scores are cached on the attack
   object per (query, document text), so each is computed once per query whatever the target.
2. **Importance**: the gradient of ``L`` w.r.t. the *target document's* input embeddings, per
   position (the shared vocabulary matrix is never touched, so the query and the competitors are
   never perturbed). Word pieces are mapped to the words of :func:`attacks.text.tokenize` through
   the fast tokenizer's character offsets; a word's importance is the L2 norm of its pieces'
   gradients. Stop words, punctuation and words without substitutes are skipped; the top
   ``n_important`` (default ``max_words``) words are kept. If the hinge loss is already zero (the
   surrogate ranks the target above every competitor by the margin) the gradient of ``-s(q, d_t)``
   is used instead.
3. **Embedding steps**: ``pgd_steps`` projected gradient steps on the kept words' positions only
   (model in eval mode): ``delta <- delta - step * g / ||g||`` per position, then projection back
   to the L2 ball of radius ``epsilon`` per position. ``step_size`` and ``epsilon`` are in units of
   the mean L2 norm of the surrogate's input-embedding rows (scale free across models).
4. **Candidates**: up to ``n_candidates`` neighbours of each kept word from the threat model
   (optionally with ``threat.similarity >= min_sim``); the candidate whose input embedding (mean of
   its word pieces) is closest (L2) to the word's perturbed embedding (mean over its pieces) wins.
5. **Greedy search with victim feedback**: in importance order, substitute the word, ask the
   victim for the rank (one ``Oracle.rank_of`` query per tried substitution), keep the change only
   if the rank strictly improves, else roll it back. Stops at ``max_words`` accepted changes, at the
   perturbation cap (``changed words / words <= max_pp``), when the optional ``goal`` is reached,
   when the words are exhausted (the default: every kept word is tried), or at the query budget
   (per target ``query_budget``, or the oracle's own budget: :class:`BudgetExhausted` is caught and
   the result so far is returned with ``budget_exhausted=True``; the budget is never exceeded).

The other documents' scores are the victim run's (fixed); they are never re-queried. Victim
queries per target <= the number of kept words (<= ``n_important``). The original text and the run
are never modified. Everything is deterministic given the inputs (``seed`` is recorded and seeds
torch).
"""
from __future__ import annotations

import bisect
from typing import Iterable

import numpy as np
import pandas as pd

from .base import (Attack, AttackError, AttackResult, NoSubstitutes, Stopwatch, check_tie_rule,
                   max_changes, new_rank, pp_of, target_context)
from .text import changed_positions, tokenize

GOALS = (None, "improve", "topk")


def _unwrap(ranker):
    from rankers.cache import CachedRanker

    while isinstance(ranker, CachedRanker):
        ranker = ranker.ranker
    return ranker


def word_spans(view) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the words of a :class:`WordView`, in order."""
    spans, pos, wi = [], 0, set(view.word_idx)
    for i, piece in enumerate(view.pieces):
        if i in wi:
            spans.append((pos, pos + len(piece)))
        pos += len(piece)
    return spans


class SurrogateView:
    """What the attack needs from a differentiable ranker (cross- or bi-encoder).

    ``encode(query, doc)`` -> (inputs, doc token indices, their char offsets in ``doc``);
    ``score(embeds, inputs, query)`` -> differentiable score of the pair from input embeddings.
    """

    def __init__(self, ranker):
        from rankers.encoders import BiEncoder, CrossEncoder

        r = _unwrap(ranker)
        if isinstance(r, CrossEncoder):
            self.kind = "cross"
        elif isinstance(r, BiEncoder):
            self.kind = "bi"
        else:
            raise AttackError(
                f"the surrogate must be a differentiable ranker (CrossEncoder or BiEncoder), got "
                f"{type(r).__name__}. Train one by imitation (rankers.imitation.train_surrogate) "
                "or use a transformer victim itself as a white-box surrogate")
        if not getattr(r.tokenizer, "is_fast", False):
            raise AttackError("the surrogate's tokenizer must be a fast tokenizer (character "
                              "offsets map word pieces to words); load the model with "
                              "tokenizers installed")
        self.ranker = r
        self.name = r.name
        self.model = r.model
        self.device = r.device
        emb = r.input_embeddings().weight.detach()
        self.scale = float(emb.float().norm(dim=1).mean())
        self._piece_cache: dict[str, "object"] = {}
        self._query_emb: dict[str, "object"] = {}

    def embedding_matrix(self):
        return self.ranker.input_embeddings().weight

    def encode(self, query: str, doc: str):
        import torch

        tok = self.ranker.tokenizer
        if self.kind == "cross":
            enc = tok(query, doc, truncation="only_second", max_length=self.ranker.max_length,
                      return_offsets_mapping=True, return_tensors="pt")
            doc_seq = 1
        else:
            enc = tok(doc, truncation=True, max_length=self.ranker.max_length,
                      return_offsets_mapping=True, return_tensors="pt")
            doc_seq = 0
        seq = enc.sequence_ids(0)
        offsets = enc.pop("offset_mapping")[0].tolist()
        doc_tokens = [(i, s, e) for i, ((s, e), sid) in enumerate(zip(offsets, seq))
                      if sid == doc_seq and e > s]
        inputs = {k: v.to(self.device) for k, v in enc.items()}
        with torch.no_grad():
            embeds = self.ranker.input_embeddings()(inputs["input_ids"]).detach().float()
        return inputs, embeds, doc_tokens

    def score(self, embeds, inputs, query: str):
        """Differentiable surrogate score of the encoded pair, shape ``()``."""
        import torch

        if self.kind == "cross":
            return self.ranker.score_embeds(embeds, inputs["attention_mask"],
                                            inputs.get("token_type_ids"))[0]
        q = self._query_emb.get(query)
        if q is None:
            q = self.ranker.encode([query]).clone().to(self.device)[0]
            self._query_emb[query] = q
        d = self.ranker.embed_from_inputs(embeds, inputs["attention_mask"])[0]
        return torch.dot(d.float(), q.float())

    def scores(self, query: str, docs: list[str]) -> np.ndarray:
        return self.ranker.score(query, docs)

    def piece_embedding(self, word: str):
        """Mean input embedding of ``word``'s word pieces (``None`` if it has none)."""
        import torch

        if word not in self._piece_cache:
            ids = self.ranker.tokenizer(word, add_special_tokens=False)["input_ids"]
            if not ids:
                self._piece_cache[word] = None
            else:
                with torch.no_grad():
                    t = torch.tensor(ids, device=self.device)
                    self._piece_cache[word] = self.ranker.input_embeddings()(t).float().mean(0)
        return self._piece_cache[word]


class WordSubstitutionAttack(Attack):
    """PRADA-style word substitution (see the module doc for the pipeline).

    Parameters
    ----------
    surrogate : a differentiable ranker (CrossEncoder or BiEncoder; an imitation model, or the
        victim itself for a white-box attack).
    threat : a :class:`attacks.threat.ThreatModel` or a spec for ``load_threat_model``.
    max_words : most accepted substitutions (m, 10).
    max_pp : cap on changed words / words (fraction, 0.1); ``None`` = no cap.
    n_candidates : neighbours considered per word (50).
    min_sim : keep neighbours with ``threat.similarity(w, n) >= min_sim`` (``None``: the threat
        model's own filter only; the default ``wordnet+glove`` already thresholds GloVe at 0.7).
        Pairs without a defined similarity are kept.
    pgd_steps, step_size, epsilon : projected gradient steps (3) of ``step_size`` (0.5) within an L2
        ball of ``epsilon`` (1.0) per position, both in mean-embedding-norm units.
    competitors_k : K other top documents of the victim's list in the loss (99; smaller = faster).
    stopwords : ``True`` (the lab's list, :data:`attacks.stopwords.STOPWORDS`), ``False``, or an
        iterable of words never substituted.
    n_important : words kept by importance and tried (default ``max_words``).
    query_budget : victim queries per target (``None`` = unlimited).
    tie_rule : ``pessimistic`` (default: ties rank the target below) or ``optimistic``, for the
        reported ranks; the greedy search sees the ranks the Oracle returns (its own
        ``tie_rule``; keep the two equal).
    goal : when to stop early: ``None`` (default: try every kept word), ``"improve"`` (first
        strict rank improvement) or ``"topk"`` (rank <= ``goal_k``). ``success`` in the results is
        always ``adv_rank < orig_rank``.
    seed : recorded in the results; seeds torch.
    """

    method = "word-substitution"

    def __init__(self, surrogate, threat, max_words: int = 10, max_pp: float | None = 0.1,
                 n_candidates: int = 50, min_sim: float | None = None, pgd_steps: int = 3,
                 step_size: float = 0.5, epsilon: float = 1.0, competitors_k: int = 99,
                 stopwords: bool | Iterable[str] = True, n_important: int | None = None,
                 query_budget: int | None = None, tie_rule: str = "pessimistic",
                 goal: str | None = None, goal_k: int = 10, seed: int = 0):
        from .threat import ThreatModel

        if isinstance(threat, (str, dict)):
            from .threat import load_threat_model

            threat = load_threat_model(threat)
        if not isinstance(threat, ThreatModel) and not hasattr(threat, "neighbours"):
            raise AttackError("threat must be a ThreatModel (attacks.threat) or a spec string")
        if int(max_words) < 1:
            raise AttackError(f"max_words must be >= 1, got {max_words}")
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
        check_tie_rule(tie_rule)
        if not getattr(_unwrap(surrogate), "differentiable", False):
            raise AttackError(
                f"the surrogate must be a differentiable ranker (CrossEncoder or BiEncoder), got "
                f"{type(surrogate).__name__}. Train one by imitation "
                "(rankers.imitation.train_surrogate) or use a transformer victim itself as a "
                "white-box surrogate")
        from .stopwords import stopword_set

        sw = stopword_set(stopwords)
        self.surrogate = surrogate
        self.threat = threat
        self.max_words = int(max_words)
        self.max_pp = None if max_pp is None else float(max_pp)
        self.n_candidates = int(n_candidates)
        self.min_sim = None if min_sim is None else float(min_sim)
        self.pgd_steps = int(pgd_steps)
        self.step_size = float(step_size)
        self.epsilon = float(epsilon)
        self.competitors_k = int(competitors_k)
        self.stopwords = sw
        self.n_important = self.max_words if n_important is None else int(n_important)
        self.query_budget = None if query_budget is None else int(query_budget)
        self.tie_rule = tie_rule
        self.goal = goal
        self.goal_k = int(goal_k)
        self.seed = int(seed)

    # -- cached helpers (created on first use) ------------------------------------------------
    def _view(self) -> SurrogateView:
        v = self.__dict__.get("_surrogate_view")
        if v is None:
            v = self.__dict__["_surrogate_view"] = SurrogateView(self.surrogate)
        return v

    def neighbours(self, word: str) -> list[str]:
        """The substitutes considered for ``word`` (stop words excluded, ``min_sim`` and
        ``n_candidates`` applied), lower-case."""
        cache = self.__dict__.setdefault("_nb_cache", {})
        w = word.lower()
        if w not in cache:
            if w in self.stopwords or not any(c.isalpha() for c in w):
                cache[w] = []
            else:
                out = []
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
                cache[w] = out
        return list(cache[w])

    def surrogate_scores(self, query: str, texts: list[str]) -> np.ndarray:
        """Surrogate scores of ``texts`` for ``query``, cached per (query, text) on the attack
        (competitor scores are computed once per query; a caller may prime the cache, e.g. when
        it computes the surrogate's agreement with the victim on the same lists)."""
        sv = self._view()
        cache = self.__dict__.setdefault("_score_cache", {})
        keys = [(sv.name, query, t) for t in texts]
        todo = list(dict.fromkeys(k for k in keys if k not in cache))
        if todo:
            vals = sv.scores(query, [k[2] for k in todo])
            for k, v in zip(todo, vals):
                cache[k] = float(v)
            self.__dict__["_last_scored"] = len(todo)
        else:
            self.__dict__["_last_scored"] = 0
        return np.array([cache[k] for k in keys], dtype=np.float64)

    def _competitor_scores(self, sv: SurrogateView, ctx) -> tuple["object", int]:
        """Surrogate scores of the victim's other top-K documents (cached per document)."""
        import torch

        k = min(self.competitors_k, len(ctx.other_texts))
        s = self.surrogate_scores(ctx.query, list(ctx.other_texts[:k])) if k else np.zeros(0)
        passes = self.__dict__.get("_last_scored", 0) if k else 0
        return torch.tensor(s, dtype=torch.float32, device=sv.device), passes

    # -- the attack ----------------------------------------------------------------------------
    def attack(self, oracle, query: str, target_docno: str,
               run_for_query: pd.DataFrame) -> AttackResult:
        """Attack one target; returns its :class:`AttackResult` (ranks 1-based)."""
        import torch

        from rankers.oracle import BudgetExhausted

        from .threat import match_case

        watch = Stopwatch()
        if getattr(oracle, "access", "rank") == "topk":
            raise AttackError("the greedy search needs rank feedback: use an Oracle with "
                              "access='rank' (or 'score')")
        ctx = target_context(run_for_query, target_docno, self.tie_rule, query)
        view = tokenize(ctx.text)
        words = view.words
        n_words = len(words)
        eligible = [i for i, w in enumerate(words) if self.neighbours(w)]
        if not eligible:
            raise NoSubstitutes(
                f"the threat model {getattr(self.threat, 'name', self.threat)!r} has no substitute "
                f"for any word of document {ctx.docno!r} (qid {ctx.qid!r}, {n_words} words; "
                f"stop words excluded). Use a richer threat model (e.g. 'wordnet' or 'glove') "
                "or pick another target")
        torch.manual_seed(self.seed)
        cap = max_changes(n_words, self.max_words, self.max_pp)
        q0 = int(getattr(oracle, "queries_used", 0))

        chosen, best, passes = [], {}, 0
        if cap > 0:
            chosen, best, passes = self._plan(ctx, view, eligible)

        subs: dict[int, str] = {}
        cur_rank = ctx.orig_rank
        tried, exhausted = 0, False
        for pos in chosen:
            if len(subs) >= cap or self._goal_reached(cur_rank, ctx.orig_rank):
                break
            cand = best.get(pos)
            if cand is None:
                continue
            if self.query_budget is not None and oracle.queries_used - q0 >= self.query_budget:
                exhausted = True
                break
            trial = dict(subs)
            trial[pos] = match_case(words[pos], cand)
            text = view.replace(trial)
            try:
                r = oracle.rank_of(ctx.query, text, ctx.other_scores)
            except BudgetExhausted:
                exhausted = True
                break
            tried += 1
            if r < cur_rank:  # keep only strict improvements; otherwise roll back
                subs, cur_rank = trial, r

        adv_text = view.replace(subs) if subs else ctx.text
        if subs:  # measured by the experiment owner: not an attacker query
            adv_score = float(oracle.ranker.score_pairs([ctx.query], [adv_text])[0])
        else:
            adv_score = ctx.orig_score
        adv_rank = new_rank(adv_score, ctx.other_scores, self.tie_rule)
        n_changed = len(changed_positions(ctx.text, adv_text))
        return AttackResult(
            qid=ctx.qid, docno=ctx.docno, orig_rank=ctx.orig_rank, adv_rank=adv_rank,
            orig_score=ctx.orig_score, adv_score=adv_score, success=adv_rank < ctx.orig_rank,
            queries_used=int(oracle.queries_used - q0), n_changed=n_changed,
            pp=pp_of(n_changed, n_words), adv_text=adv_text, method=self.method, seed=self.seed,
            threat=self._threat_fingerprint(), wall_s=watch.elapsed, n_words=n_words,
            substitutions=[(p, words[p], subs[p]) for p in sorted(subs)], query=ctx.query,
            orig_text=ctx.text, budget_exhausted=exhausted, n_tried=tried,
            surrogate_passes=passes)

    def _goal_reached(self, rank: int, orig_rank: int) -> bool:
        if self.goal == "improve":
            return rank < orig_rank
        if self.goal == "topk":
            return rank <= self.goal_k
        return False

    def _plan(self, ctx, view, eligible: list[int]):
        """Importance ranking, PGD steps and candidate choice on the surrogate.

        Returns ``(positions in importance order, {position: candidate}, surrogate passes)``.
        """
        import torch

        sv = self._view()
        comp, passes = self._competitor_scores(sv, ctx)
        inputs, base, doc_tokens = sv.encode(ctx.query, ctx.text)
        spans = word_spans(view)
        starts = [s for s, _ in spans]
        word_tokens: dict[int, list[int]] = {}
        for ti, s, e in doc_tokens:
            w = bisect.bisect_right(starts, s) - 1
            if w >= 0 and s < spans[w][1]:
                word_tokens.setdefault(w, []).append(ti)

        def hinge(score):
            if comp.numel() == 0:
                return -score
            return torch.clamp(1.0 - (score - comp), min=0).sum()

        was_training = sv.model.training
        sv.model.eval()
        try:
            with torch.enable_grad():
                emb = base.clone().requires_grad_(True)
                score = sv.score(emb, inputs, ctx.query)
                loss = hinge(score)
                passes += 1
                if loss.item() > 0:
                    (grad,) = torch.autograd.grad(loss, emb)
                else:  # every margin already met: follow the score itself
                    (grad,) = torch.autograd.grad(-score, emb)
                grad = grad[0]
                importance = {w: float(grad[toks].norm()) for w, toks in word_tokens.items()}
                ranked = sorted((w for w in eligible if w in word_tokens),
                                key=lambda w: (-importance[w], w))
                chosen = ranked[: self.n_important]
                if not chosen:
                    return [], {}, passes
                pos = [t for w in chosen for t in word_tokens[w]]
                idx = torch.tensor(pos, device=base.device)
                delta = torch.zeros(len(pos), base.shape[-1], device=base.device)
                alpha, eps = self.step_size * sv.scale, self.epsilon * sv.scale
                for _ in range(self.pgd_steps):
                    delta.requires_grad_(True)
                    pert = torch.zeros_like(base)
                    pert[0, idx] = delta
                    s = sv.score(base + pert, inputs, ctx.query)
                    passes += 1
                    (g,) = torch.autograd.grad(hinge(s), delta)
                    with torch.no_grad():
                        g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
                        delta = delta.detach() - alpha * g
                        norm = delta.norm(dim=1, keepdim=True).clamp_min(1e-12)
                        delta = delta * torch.clamp(eps / norm, max=1.0)  # project to the ball
        finally:
            sv.model.train(was_training)

        best: dict[int, str] = {}
        with torch.no_grad():
            row = {t: i for i, t in enumerate(pos)}
            for w in chosen:
                toks = word_tokens[w]
                target = (base[0, toks] + delta[[row[t] for t in toks]]).mean(0)
                cands = self.neighbours(view.words[w])
                embs = [(c, sv.piece_embedding(c)) for c in cands]
                embs = [(c, e) for c, e in embs if e is not None]
                if not embs:
                    continue
                dist = torch.stack([e for _, e in embs]).sub(target).norm(dim=1)
                best[w] = embs[int(torch.argmin(dist))][0]
        return chosen, best, passes

"""Imitation triggers, PAT-style: a short phrase found on a surrogate and inserted into the target.

Pipeline for one target ``d_t`` of a query ``q`` (docs/SPEC_ATTACKS.md, (c)):

1. **Surrogate**: a differentiable ranker (an imitation model from
   :func:`rankers.imitation.train_surrogate`, or the victim itself for a white-box upper bound).
   It is reached through one small adapter (:func:`trigger_surrogate`) so the lab's
   ``DifferentiableRanker`` protocol can replace it later.
2. **Anchors**: the victim's top ``anchors`` (3) documents for the query, learned through the
   Oracle (``oracle.topk`` over the query's candidate list: one counted victim query per listed
   document, spent once per query and charged to the query's first target);
   ``anchor_source="surrogate"`` takes the surrogate's top documents instead (no victim query).
   **List adaptation** (``adapt_epochs`` > 0, off by default): that look-up already tells the
   attacker the victim's whole ordering of the list (``rank`` access; the top ``k`` with
   ``topk`` access), so a copy of the surrogate is fine-tuned on it (recipe ``top25_plus_tail``,
   k 25, tail 4, RankNet, lr ``adapt_lr``) and used for this query's targets: no extra victim
   query; the shared surrogate is never modified. On Cranfield it lifts the bag-of-embeddings
   surrogate's overlap@10 with the victim on the attacked lists from 0.38 to 0.92.
3. **Vocabulary**: the surrogate tokenizer's whole words: entries that are alphabetic ASCII,
   at least ``min_word_len`` letters, and that the tokenizer encodes back (``" " + word``) as
   that single token. Every trigger word is one of them (so a trigger of ``n`` words inserts
   exactly ``n`` words). An empty vocabulary raises :class:`NoTriggerVocabulary`.
4. **Beam search, left to right**: ``beams`` (10) partial triggers; at each of ``trigger_len``
   (6) steps each beam proposes ``candidates`` (128) next words, and all ``beams x candidates``
   extensions are scored exactly (one batched surrogate pass) by::

       score(t) = rel(t) + lambda_lm * mean_i log P_LM(w_i | context, w_<i)
                  + lambda_coh * cos(mean emb(t), mean emb(passage))
                  + word_bonus * (share of t's words in the bonus set)
                  - repetition_penalty * (repeated words in t)

   ``rel(t) = -relevance_scale * mean_a log(1 + exp(-(s(q, x_t) - s(q, a)) / sigma))`` is the
   pairwise (RankNet) anchor loss, negated, in units of the query's score spread ``sigma``
   (the anchors' mean minus the median of a few listed documents), with ``s`` the surrogate score, ``a`` the anchors and ``x_t`` the target with
   the trigger inserted at ``position`` (``relevance="passage"``, the default) or the trigger
   alone (``relevance="query"``, as in the reference code; the trigger then depends on the
   target only through the coherence term and the LM context, and is cached per query when
   ``lambda_coh == 0``). The bonus set is the anchors' content words plus the
   ``n_query_words`` (300) vocabulary words closest to the query's words in the surrogate's
   input-embedding space (cosine). ``log P_LM`` is in nats (``lm``: the corpus n-gram model by
   default; ``None`` drops the term).
5. **Next-word proposals** (the perturbation of the next-token distribution): per beam, the
   prior ``lambda_lm * log P_LM(w | ...) + word_bonus * bonus(w) - repetition_penalty *
   [w already used]`` over the vocabulary is perturbed by ``delta`` for ``perturb_steps`` (5)
   Adam steps of ``perturb_lr`` (1e-3) that lower the anchor loss of the target with the
   expected embedding ``softmax((prior + delta) / temperature) @ E`` (``temperature`` 0.1) at the
   next trigger position. The ``candidates`` proposals interleave the top words of the perturbed
   distribution with the top words of a first-order (HotFlip) estimate of the loss decrease at
   the perturbed point (the published lr moves the distribution very little in 5 steps; the
   first-order screen is what lets the surrogate, not only the prior, propose words).
6. **Victim checks**: the ``n_triggers`` (5) best distinct final beams are inserted and the
   first ``victim_checks`` (5) of them are submitted to the victim (one counted
   :meth:`~rankers.oracle.Oracle.rank_of` query each, never more); the best rank wins (ties: the
   better surrogate score). With ``victim_checks=0`` the surrogate's best is used blind.
   Each result row also carries ``surrogate_rank``: where the surrogate in use (the adapted copy
   when adapting) ranks the chosen adversarial document in the same list, so the transfer gap
   (``summarize``'s ``surrogate_T10R`` against ``T10R``) is measured.

Victim queries per target <= ``victim_checks`` (+ the anchor queries of the query's first target
with ``anchor_source="victim"``). Documents are scored by the surrogate within ``window`` word
pieces (default: the surrogate's own limit), so words beyond it cannot help. The original text
and the run are never modified; the search has no random choice (``seed`` drives the
``sentence`` position and seeds torch), so the same seed gives the same trigger.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from rankers.base import as_differentiable

from .base import (AttackError, AttackResult, Stopwatch, check_tie_rule, new_rank,
                   target_context)
from .insertion import InsertionBase, check_position, insert_at
from .lm import lm_words, load_lm
from .text import words as text_words

RELEVANCE = ("passage", "query")
ANCHOR_SOURCES = ("victim", "surrogate")


class NoTriggerVocabulary(AttackError):
    """The surrogate's tokenizer has no usable whole-word vocabulary."""


def whole_word_vocabulary(tokenizer, min_word_len: int = 2) -> tuple[list[str], list[int]]:
    """``(words, token_ids)``: tokenizer entries that are whole alphabetic ASCII words of at least
    ``min_word_len`` letters (a leading ``Ġ``/``▁`` word marker is allowed) and that the tokenizer
    encodes back, after a space, as exactly that one token. Sorted by token id; words lower-case
    and unique."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    cands: list[tuple[str, int]] = []
    for tok, i in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        if i in special:
            continue
        w = tok[1:] if tok[:1] in ("Ġ", "▁") else tok
        if len(w) >= int(min_word_len) and w.isascii() and w.isalpha():
            cands.append((w, int(i)))
    if not cands:
        return [], []
    enc = tokenizer([" " + w for w, _ in cands], add_special_tokens=False)["input_ids"]
    words, ids, seen = [], [], set()
    for (w, i), e in zip(cands, enc):
        lw = w.lower()
        if list(e) == [i] and lw not in seen:
            seen.add(lw)
            words.append(lw)
            ids.append(i)
    return words, ids


class TriggerSurrogate:
    """What the trigger search needs from a differentiable ranker (cross- or bi-encoder), through
    its public white-box members (``model``, ``tokenizer``, ``input_embeddings()``,
    ``score_embeds`` / ``embed_from_inputs``, ``encode``).

    ``scores(query, texts)``: batched surrogate scores within ``window`` word pieces
    (``torch.inference_mode``); ``proposals(...)``: the perturbed next-word distribution and the
    first-order gains (module doc, step 5).
    """

    def __init__(self, ranker, window: int | None = None, min_word_len: int = 2,
                 batch_size: int = 64):
        r = as_differentiable(ranker)
        if r is not None:
            # a pair model reads [CLS] query [SEP] document; a bi-encoder the document alone
            self.kind = "cross" if getattr(r, "kind", "") == "cross-encoder" else "bi"
        else:
            raise AttackError(
                f"the trigger attack needs a differentiable surrogate (CrossEncoder or BiEncoder), "
                f"got {type(r).__name__}. Train one by imitation "
                "(rankers.imitation.train_surrogate) or use a transformer victim as a white-box "
                "surrogate")
        if not getattr(r.tokenizer, "is_fast", False):
            raise AttackError("the surrogate's tokenizer must be a fast tokenizer (character "
                              "offsets locate the trigger's word pieces); install tokenizers")
        self.ranker = r
        self.name = r.name
        self.tokenizer = r.tokenizer
        self.device = r.device
        self.window = int(min(window or r.max_length, r.max_length))
        self.batch_size = int(batch_size)
        words, ids = whole_word_vocabulary(r.tokenizer, min_word_len)
        if not words:
            raise NoTriggerVocabulary(
                f"the surrogate {r.name!r} has no usable whole-word vocabulary (no tokenizer "
                f"entry is an alphabetic word of >= {min_word_len} letters that encodes back to "
                "one token). Use a surrogate with a word-level, WordPiece or BPE vocabulary "
                "(e.g. a MiniLM/BERT cross-encoder), or lower min_word_len")
        self.words, self.ids = words, ids
        self.index = {w: i for i, w in enumerate(words)}
        self._set_vocab_embeddings()

    def _set_vocab_embeddings(self) -> None:
        """``E_vocab`` (the vocabulary's input embeddings in the ranker) and ``E_norm``."""
        import torch

        with torch.no_grad():
            E = self.ranker.input_embeddings().weight.detach().float()
            self.E_vocab = E[torch.tensor(self.ids, device=E.device)].to(self.device)
            self.E_norm = torch.nn.functional.normalize(self.E_vocab, dim=-1)

    def with_ranker(self, ranker) -> "TriggerSurrogate":
        """The same view (vocabulary, window) over ``ranker``, a fine-tuned copy of this view's
        ranker with the same tokenizer (e.g. a list-adapted surrogate)."""
        import copy

        r = as_differentiable(ranker)
        out = copy.copy(self)
        out.ranker, out.name = r, r.name
        out._set_vocab_embeddings()
        return out

    # -- scoring -----------------------------------------------------------------------------
    def _tokenize(self, query: str, texts: list[str], offsets: bool = False):
        tok = self.tokenizer
        if self.kind == "cross":
            return tok([query] * len(texts), texts, padding=True, truncation="only_second",
                       max_length=self.window, return_tensors="pt",
                       return_offsets_mapping=offsets)
        return tok(texts, padding=True, truncation=True, max_length=self.window,
                   return_tensors="pt", return_offsets_mapping=offsets)

    def _score_embeds(self, embeds, enc, query: str):
        """Differentiable scores through the :class:`~rankers.base.DifferentiableRanker`
        protocol (same call for bi- and cross-encoders)."""
        return self.ranker.score_embeds(query, embeds, enc["attention_mask"],
                                        enc.get("token_type_ids")).float()

    def scores(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """Surrogate scores of ``texts`` for ``query`` (float64), batched by length."""
        import torch

        texts = list(texts)
        out = np.empty(len(texts))
        order = np.argsort([-len(t) for t in texts], kind="stable")
        emb = self.ranker.input_embeddings()
        model = self.ranker.model
        was = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for i in range(0, len(order), self.batch_size):
                    idx = order[i: i + self.batch_size]
                    enc = self._tokenize(query, [texts[j] for j in idx])
                    enc = {k: v.to(self.device) for k, v in enc.items()}
                    s = self._score_embeds(emb(enc["input_ids"]), enc, query)
                    out[idx] = s.cpu().double().numpy()
        finally:
            model.train(was)
        return out

    def token_index(self, query: str, text: str, char_start: int):
        """``(encoding, i)``: the word-piece index of the piece starting at ``char_start`` of
        ``text`` (``None`` when it falls beyond the window)."""
        enc = self._tokenize(query, [text], offsets=True)
        seq = enc.sequence_ids(0)
        offs = enc.pop("offset_mapping")[0].tolist()
        want = 1 if self.kind == "cross" else 0
        for i, ((s, e), sid) in enumerate(zip(offs, seq)):
            if sid == want and s == char_start and e > s:
                return enc, i
        return enc, None

    def proposals(self, query: str, text: str, char_start: int, prior: np.ndarray,
                  anchor_scores: np.ndarray, sigma: float, steps: int, lr: float,
                  temperature: float):
        """Perturb the next-word distribution at the placeholder word starting at ``char_start``
        of ``text`` (module doc, step 5). Returns ``(perturbed logits, first-order gains)``, both
        over :attr:`words` (numpy), or ``(prior, None)`` when the position is beyond the window."""
        import torch

        enc, pos = self.token_index(query, text, char_start)
        if pos is None:
            return prior, None
        enc = {k: v.to(self.device) for k, v in enc.items()}
        model = self.ranker.model
        was = model.training
        model.eval()
        try:
            with torch.enable_grad():
                base = self.ranker.input_embeddings()(enc["input_ids"]).detach().float()
                pri = torch.tensor(prior, dtype=torch.float32, device=self.device)
                anc = torch.tensor(anchor_scores, dtype=torch.float32, device=self.device)
                delta = torch.zeros_like(pri, requires_grad=True)
                opt = torch.optim.Adam([delta], lr=float(lr))
                mask = torch.zeros(base.shape[1], 1, device=self.device)
                mask[pos] = 1.0
                g_emb = None
                for i in range(max(int(steps), 1)):
                    p = torch.softmax((pri + delta) / float(temperature), dim=0)
                    e = p @ self.E_vocab
                    embeds = base * (1 - mask) + e.unsqueeze(0) * mask
                    s = self._score_embeds(embeds, enc, query)[0]
                    loss = torch.nn.functional.softplus(-(s - anc) / float(sigma)).mean() \
                        if anc.numel() else -s
                    g_delta, g_emb = torch.autograd.grad(loss, [delta, e])
                    if i < int(steps):
                        opt.zero_grad()
                        delta.grad = g_delta
                        opt.step()
                with torch.no_grad():
                    gains = -(self.E_vocab @ g_emb)
        finally:
            model.train(was)
        return (pri + delta.detach()).cpu().double().numpy(), gains.cpu().double().numpy()

    def mean_embedding(self, text: str):
        """Mean input embedding of ``text``'s word pieces within the window (unit norm)."""
        import torch

        ids = self.tokenizer(text, add_special_tokens=False, truncation=True,
                             max_length=self.window)["input_ids"]
        if not ids:
            return None
        with torch.no_grad():
            v = self.ranker.input_embeddings()(torch.tensor(ids, device=self.device)).float()
            return torch.nn.functional.normalize(v.mean(0), dim=0)

    def related_words(self, text: str, n: int, exclude: set) -> set:
        """The ``n`` vocabulary words closest (max cosine of input embeddings) to ``text``'s
        words."""
        import torch

        vecs = []
        for w in {w.lower() for w in text_words(text)} - exclude:
            if w in self.index:
                vecs.append(self.E_norm[self.index[w]])
            else:
                v = self.mean_embedding(w)
                if v is not None:
                    vecs.append(v)
        if not vecs or n <= 0:
            return set()
        with torch.no_grad():
            sim = (self.E_norm @ torch.stack(vecs).T).max(dim=1).values
            top = torch.topk(sim, min(int(n), sim.numel())).indices.tolist()
        return {self.words[i] for i in top}


def trigger_surrogate(ranker, **kw) -> TriggerSurrogate:
    """The one place the attack adapts a ranker to what it needs (switch to the lab's
    ``DifferentiableRanker`` protocol here)."""
    if isinstance(ranker, TriggerSurrogate):
        return ranker
    return TriggerSurrogate(ranker, **kw)


class TriggerAttack(InsertionBase):
    """PAT-style imitation-trigger attack (see the module doc for the pipeline).

    Parameters
    ----------
    surrogate : a differentiable ranker (CrossEncoder or BiEncoder).
    lm : fluency model: ``"ngram"`` (default; an interpolated Kneser-Ney trigram fitted on the
        collection's documents in :meth:`run`, or on the query's candidate list when
        :meth:`attack` is called alone), ``"ngramN"``, ``"causal:PATH"`` (a local causal LM),
        a :class:`attacks.lm.LanguageModel`, or ``None`` (no fluency term).
    trigger_len : words inserted (6; each a single vocabulary token).
    beams : beam width (10).
    candidates : next-word proposals per beam and step, all scored exactly (128).
    position : ``start`` (default) | ``end`` | ``sentence``.
    relevance : ``passage`` (default; trigger inserted into the target) or ``query`` (trigger
        alone, as the reference code).
    n_triggers, victim_checks : final triggers kept (5) and how many of them the victim sees
        (5; counted, never exceeded; 0 = choose on the surrogate only).
    anchors, anchor_source : anchor documents (3) from the ``victim`` (counted, once per query)
        or the ``surrogate``.
    lambda_lm, lambda_coh : weights of the LM log-prob (0.6, nats per word) and of the coherence
        cosine (0.1).
    word_bonus, n_query_words : bonus (1.0) for anchor words and the ``n_query_words`` (300)
        vocabulary words nearest the query.
    repetition_penalty : subtracted per repeated word (5.0).
    perturb_steps, perturb_lr, temperature : the next-token perturbation (5, 1e-3, 0.1).
    window : word pieces per surrogate input (default: the surrogate's limit).
    min_word_len : shortest vocabulary word (2 letters).
    exclude_query_words : never use the query's own words in the trigger (False).
    relevance_scale, scale_docs : surrogate score differences are divided by the query's
        relevance unit ``sigma`` = the anchors' mean score minus the median score of
        ``scale_docs`` (20) evenly spaced documents of the list (at least the std of those
        scores), then multiplied by ``relevance_scale`` (10.0), so the weights lambda mean the
        same for any surrogate's score scale (logits, cosines).
    adapt_epochs, adapt_lr : list adaptation (module doc, step 2): epochs of fine-tuning a copy
        of the surrogate on the victim's ordering of the query's list (0: off) and its learning
        rate (1e-2, for a bag-of-embeddings surrogate; a cross-encoder wants ~3e-4). Needs a
        trainable surrogate and ``anchor_source="victim"``.
    stopwords : words without a bonus (the lab's list by default).
    batch_size : surrogate batch size (64).
    tie_rule, seed : as for every attack.
    """

    method = "trigger"

    def __init__(self, surrogate, lm="ngram", trigger_len: int = 6, beams: int = 10,
                 candidates: int = 128, position: str = "start", relevance: str = "passage",
                 n_triggers: int = 5, victim_checks: int = 5, anchors: int = 3,
                 anchor_source: str = "victim", lambda_lm: float = 0.6, lambda_coh: float = 0.1,
                 word_bonus: float = 1.0, n_query_words: int = 300,
                 repetition_penalty: float = 5.0, perturb_steps: int = 5,
                 perturb_lr: float = 1e-3, temperature: float = 0.1, window: int | None = None,
                 min_word_len: int = 2, exclude_query_words: bool = False,
                 stopwords: bool | Iterable[str] = True, batch_size: int = 64,
                 relevance_scale: float = 10.0, scale_docs: int = 20, adapt_epochs: int = 0,
                 adapt_lr: float = 1e-2, tie_rule: str = "pessimistic", seed: int = 0):
        from .stopwords import stopword_set

        check_position(position)
        check_tie_rule(tie_rule)
        if relevance not in RELEVANCE:
            raise AttackError(f"relevance must be one of {RELEVANCE}, got {relevance!r}")
        if anchor_source not in ANCHOR_SOURCES:
            raise AttackError(f"anchor_source must be one of {ANCHOR_SOURCES}, got "
                              f"{anchor_source!r}")
        for name, v in (("trigger_len", trigger_len), ("beams", beams),
                        ("candidates", candidates), ("n_triggers", n_triggers),
                        ("anchors", anchors), ("min_word_len", min_word_len),
                        ("batch_size", batch_size)):
            if int(v) < 1:
                raise AttackError(f"{name} must be >= 1, got {v}")
        if int(victim_checks) < 0 or int(perturb_steps) < 0 or int(n_query_words) < 0:
            raise AttackError("victim_checks, perturb_steps and n_query_words must be >= 0")
        if float(temperature) <= 0 or float(perturb_lr) < 0:
            raise AttackError("temperature must be > 0 and perturb_lr >= 0")
        if window is not None and int(window) < 8:
            raise AttackError(f"window must be >= 8 word pieces, got {window}")
        if as_differentiable(surrogate) is None and not isinstance(surrogate, TriggerSurrogate):
            raise AttackError(
                f"the trigger attack needs a differentiable surrogate (CrossEncoder or "
                f"BiEncoder), got {type(surrogate).__name__}. Train one by imitation "
                "(rankers.imitation.train_surrogate) or use a transformer victim as a white-box "
                "surrogate")
        if isinstance(lm, str) and not (lm == "none" or lm.startswith("ngram")
                                        or lm.startswith("causal:")):
            raise AttackError(f"lm must be 'ngram', 'ngramN', 'causal:PATH', 'none', None or a "
                              f"language model, got {lm!r}")
        self.surrogate = surrogate
        self.lm = lm
        self.trigger_len = int(trigger_len)
        self.beams = int(beams)
        self.candidates = int(candidates)
        self.position = position
        self.relevance = relevance
        self.n_triggers = int(n_triggers)
        self.victim_checks = int(victim_checks)
        self.anchors = int(anchors)
        self.anchor_source = anchor_source
        self.lambda_lm = float(lambda_lm)
        self.lambda_coh = float(lambda_coh)
        self.word_bonus = float(word_bonus)
        self.n_query_words = int(n_query_words)
        self.repetition_penalty = float(repetition_penalty)
        self.perturb_steps = int(perturb_steps)
        self.perturb_lr = float(perturb_lr)
        self.temperature = float(temperature)
        self.window = None if window is None else int(window)
        self.min_word_len = int(min_word_len)
        self.exclude_query_words = bool(exclude_query_words)
        self.stopwords = stopword_set(stopwords)
        self.batch_size = int(batch_size)
        if float(relevance_scale) <= 0 or int(scale_docs) < 1:
            raise AttackError("relevance_scale must be > 0 and scale_docs >= 1")
        if int(adapt_epochs) < 0 or float(adapt_lr) <= 0:
            raise AttackError("adapt_epochs must be >= 0 and adapt_lr > 0")
        if int(adapt_epochs) > 0 and (anchor_source != "victim"
                                      or not hasattr(surrogate, "forward_scores")):
            raise AttackError(
                "list adaptation (adapt_epochs > 0) fine-tunes the surrogate on the victim's "
                "ordering of the anchor look-up: it needs anchor_source='victim' and a trainable "
                "surrogate (an imitation cross-encoder or bag-of-embeddings model)")
        self.adapt_epochs = int(adapt_epochs)
        self.adapt_lr = float(adapt_lr)
        self.relevance_scale = float(relevance_scale)
        self.scale_docs = int(scale_docs)
        self.tie_rule = tie_rule
        self.seed = int(seed)
        # lazily built state: the surrogate view, the fitted LM (and the collection it was fitted
        # on), the victim's anchors per query
        self._surrogate_view: TriggerSurrogate | None = None
        self._lm_model = None
        self._lm_ready = False
        self._lm_col: int | None = None
        self._anchor_cache: dict = {}
        self._trigger_cache: dict = {}  # query-only triggers, when they do not depend on the passage
        self._adapted: dict = {}  # query key -> its list-adapted surrogate view (the last one)
        self._orders: dict = {}  # query key -> the victim's ordering of its list (indices)
        self._active = None  # the view in use for the current query (None: the shared one)

    # -- lazily built state ------------------------------------------------------------------
    def _sv(self) -> TriggerSurrogate:
        if self._active is not None:
            return self._active
        if self._surrogate_view is None:
            self._surrogate_view = trigger_surrogate(
                self.surrogate, window=self.window, min_word_len=self.min_word_len,
                batch_size=self.batch_size)
        return self._surrogate_view

    def vocabulary(self) -> list[str]:
        """The words a trigger may use (lower-case)."""
        return list(self._sv().words)

    def fit_lm(self, col=None, texts: Iterable[str] | None = None):
        """Resolve ``lm`` (fit the n-gram model on ``col``'s documents or ``texts``)."""
        self._lm_model = load_lm(self.lm, col=col, texts=texts)
        self._lm_ready = True
        return self._lm_model

    def run(self, victim_oracle, col, targets, run=None, **kw) -> pd.DataFrame:
        """:meth:`attacks.base.Attack.run`; fits the n-gram LM on ``col`` first."""
        if not self._lm_ready or self._lm_col != id(col):
            if isinstance(self.lm, str) and self.lm.startswith("ngram"):
                self.fit_lm(col=col)
            else:
                self.fit_lm()
            self._lm_col = id(col)
        return super().run(victim_oracle, col, targets, run=run, **kw)

    # -- the attack --------------------------------------------------------------------------
    def attack(self, oracle, query: str, target_docno: str,
               run_for_query: pd.DataFrame) -> AttackResult:
        """Attack one target; returns its :class:`AttackResult` (ranks 1-based)."""
        import torch

        from rankers.oracle import BudgetExhausted

        watch = Stopwatch()
        if self.victim_checks > 0 and getattr(oracle, "access", "rank") == "topk":
            raise AttackError("victim checks need rank feedback: use an Oracle with access "
                              "'rank' (or 'score'), or victim_checks=0")
        ctx = target_context(run_for_query, target_docno, self.tie_rule, query)
        self._active = None
        self._sv()  # the vocabulary check fails before any victim query
        if not self._lm_ready:
            texts = None
            if isinstance(self.lm, str) and self.lm.startswith("ngram"):
                texts = [ctx.text] + list(ctx.other_texts)
            self.fit_lm(texts=texts)
        torch.manual_seed(self.seed)
        q0 = int(getattr(oracle, "queries_used", 0))
        exhausted = False
        (anchors, anchor_scores, sigma), passes, exh = self._anchors(oracle, ctx)
        exhausted |= exh
        offset = self._offset(ctx)
        triggers, p2 = self.search(ctx, anchors, offset, anchor_scores, sigma)
        passes += p2
        best, tried = triggers[0][0], 0
        if self.victim_checks > 0:
            best_rank = None
            for words, _ in triggers[: self.victim_checks]:
                text = insert_at(ctx.text, " ".join(words), offset)[0]
                try:
                    r = oracle.rank_of(ctx.query, text, ctx.other_scores)
                except BudgetExhausted:
                    exhausted = True
                    break
                tried += 1
                if best_rank is None or r < best_rank:
                    best, best_rank = words, r
        # a diagnostic of the experiment owner (like adv_score): not counted in the passes
        sur_rank = self._surrogate_rank(ctx, insert_at(ctx.text, " ".join(best), offset)[0])
        return self._result(oracle, ctx, " ".join(best), offset, watch, q0, n_tried=tried,
                            exhausted=exhausted, passes=passes, surrogate_rank=sur_rank)

    def _surrogate_rank(self, ctx, adv_text: str) -> int:
        """1-based rank of ``adv_text`` among the list's other documents by the surrogate in use
        (the list-adapted copy when adapting; the tie rule of the attack)."""
        s = self._sv().scores(ctx.query, [adv_text] + list(ctx.other_texts))
        return new_rank(float(s[0]), s[1:], self.tie_rule)

    def _anchors(self, oracle, ctx) -> tuple[list[str], int, bool]:
        """Anchor texts for the query (cached per query); ``(texts, surrogate passes, budget
        exhausted)``."""
        from rankers.oracle import AccessDenied, BudgetExhausted

        cache = self._anchor_cache
        key = (ctx.qid, ctx.query)
        if key in cache:
            if self.adapt_epochs > 0 and key in self._orders:
                self._active = self._adapted.get(key) or self._adapt(
                    key, ctx.query, [ctx.text] + list(ctx.other_texts), self._orders[key])
            return cache[key], 0, False
        texts = [ctx.text] + list(ctx.other_texts)
        exhausted, passes, top = False, 0, None
        sv = self._sv()
        if self.anchor_source == "victim":
            nos = [str(i) for i in range(len(texts))]
            try:  # the same cost either way: one counted query per listed document
                if getattr(oracle, "access", "rank") == "topk":
                    ids = oracle.topk(ctx.query, texts, nos)
                else:
                    ids = oracle.ranking(ctx.query, texts, nos)
                top = [texts[int(i)] for i in ids[: self.anchors]]
            except (BudgetExhausted, AccessDenied):
                exhausted = True
            else:
                if self.adapt_epochs > 0:
                    self._orders[key] = [int(i) for i in ids]
                    sv = self._adapt(key, ctx.query, texts, self._orders[key])
        if top is None:  # the surrogate's own top documents
            s = sv.scores(ctx.query, texts)
            passes += len(texts)
            top = [texts[i] for i in np.argsort(-s, kind="stable")[: self.anchors]]
        # the relevance unit: anchors' mean surrogate score minus the median surrogate score of
        # up to `scale_docs` documents of the list (evenly spaced in list order)
        a = sv.scores(ctx.query, top)
        pick = np.unique(np.linspace(0, len(texts) - 1, min(self.scale_docs, len(texts)))
                         .round().astype(int))
        ref = sv.scores(ctx.query, [texts[i] for i in pick])
        passes += len(top) + len(pick)
        gap = float(a.mean() - np.median(ref))
        sigma = max(gap, float(np.std(np.r_[a, ref])), 1e-6)
        cache[key] = (top, a, sigma)
        return cache[key], passes, exhausted

    def _adapt(self, key, query: str, texts: list[str], order: list[int]) -> TriggerSurrogate:
        """Fine-tune a copy of the surrogate on the victim's ordering ``order`` (indices into
        ``texts``, best first; the rest of the list ranks below them) and make it the view for
        this query (module doc, step 2)."""
        from rankers.imitation import adapt_surrogate

        known = set(order)
        ranked = [texts[i] for i in order] + [t for i, t in enumerate(texts) if i not in known]
        model = adapt_surrogate(self.surrogate, query, ranked, n_known=len(order),
                                epochs=self.adapt_epochs, lr=self.adapt_lr, seed=self.seed)
        view = self._surrogate_view.with_ranker(model)  # built by _anchors before adapting
        self._adapted = {key: view}  # targets of one query come together: keep the last only
        self._active = view
        return view

    def _prior(self, context: list[str], used: Sequence[str], bonus: np.ndarray,
               banned: np.ndarray) -> np.ndarray:
        sv = self._sv()
        lm = self._lm_model
        pr = self.word_bonus * bonus
        if lm is not None and self.lambda_lm:
            pr = pr + self.lambda_lm * lm.logprobs(context, sv.words)
        if used:
            rep = np.zeros(len(sv.words))
            for w in used:
                rep[sv.index[w]] = 1.0
            pr = pr - self.repetition_penalty * rep
        return np.where(banned, -1e9, pr)

    def search(self, ctx, anchors: Sequence[str], offset: int, anchor_scores=None,
               sigma: float = 1.0):
        """Beam search on the surrogate. Returns ``([(trigger words, score), ...] best first,
        surrogate passes)``; at most ``n_triggers`` distinct triggers of ``trigger_len`` words.
        ``anchor_scores``: the anchors' surrogate scores (computed when ``None``); ``sigma``: the
        relevance unit (surrogate score difference mapped to ``relevance_scale``)."""
        sv = self._sv()
        passage = ctx.text if self.relevance == "passage" else ""
        p_off = offset if self.relevance == "passage" else 0
        lm = self._lm_model
        lm_ctx = lm_words(ctx.text[:offset])[-4:] if lm is not None else []
        key = None
        if self.relevance == "query" and self.lambda_coh == 0:
            key = (ctx.query, tuple(anchors), tuple(lm_ctx))
            cached = self._trigger_cache.get(key)
            if cached is not None:
                return cached, 0
        passes = 0
        if anchor_scores is None:
            anchor_scores = sv.scores(ctx.query, list(anchors))
            passes = len(anchors)
        anchor_scores = np.asarray(anchor_scores, dtype=np.float64)
        scale = self.relevance_scale
        V = len(sv.words)
        qwords = {w.lower() for w in text_words(ctx.query)}
        banned = np.zeros(V, dtype=bool)
        if self.exclude_query_words:
            for w in qwords:
                if w in sv.index:
                    banned[sv.index[w]] = True
        bonus_words = set()
        for a in anchors:
            bonus_words |= {w.lower() for w in text_words(a)} - self.stopwords
        bonus_words |= sv.related_words(ctx.query, self.n_query_words, self.stopwords)
        bonus = np.array([1.0 if w in bonus_words else 0.0 for w in sv.words])
        coh_vec = sv.mean_embedding(ctx.text) if self.lambda_coh else None
        coh_all = (sv.E_norm @ coh_vec).cpu().double().numpy() if coh_vec is not None \
            else np.zeros(V)
        coh_np = None if coh_vec is None else coh_vec.cpu().double().numpy()

        def rel(texts):
            s = sv.scores(ctx.query, texts)
            d = (s[:, None] - anchor_scores[None, :]) / sigma
            return -scale * np.logaddexp(0.0, -d).mean(axis=1)

        # beam: (words, lm_sum, bonus_sum, emb_sum (np), score)
        dim = sv.E_vocab.shape[1]
        E_np = sv.E_vocab.cpu().double().numpy()
        beams = [((), 0.0, 0.0, np.zeros(dim), 0.0)]
        placeholder = sv.words[0]
        for step in range(self.trigger_len):
            exp_words, exp_meta = [], []
            for b in beams:
                words, lm_sum, b_sum, e_sum, _ = b
                context = lm_ctx + list(words)
                prior = self._prior(context, words, bonus, banned)
                prior_c = prior + self.lambda_coh * coh_all
                pool = self._pool(ctx.query, passage, p_off, words, placeholder, prior_c,
                                  anchor_scores, sigma)
                passes += max(self.perturb_steps, 1)
                lps = lm.logprobs(context, [sv.words[i] for i in pool]) if lm is not None \
                    else np.zeros(len(pool))
                for i, lp in zip(pool, lps):
                    exp_words.append(words + (sv.words[i],))
                    exp_meta.append((lm_sum + float(lp), b_sum + bonus[i], e_sum + E_np[i]))
            texts = [insert_at(passage, " ".join(w), p_off)[0] for w in exp_words]
            r = rel(texts)
            passes += len(texts)
            scored = []
            for w, (lm_sum, b_sum, e_sum), rv in zip(exp_words, exp_meta, r):
                n = len(w)
                sc = rv + self.lambda_lm * lm_sum / n + self.word_bonus * b_sum / n
                if coh_np is not None:
                    sc += self.lambda_coh * float(e_sum @ coh_np) / \
                        max(float(np.linalg.norm(e_sum)), 1e-12)
                sc -= self.repetition_penalty * (n - len(set(w)))
                scored.append((w, lm_sum, b_sum, e_sum, float(sc)))
            scored.sort(key=lambda x: -x[4])  # stable: ties keep proposal order
            beams, seen = [], set()
            for s in scored:
                if s[0] not in seen:
                    seen.add(s[0])
                    beams.append(s)
                if len(beams) >= self.beams:
                    break
        out = [(list(b[0]), b[4]) for b in beams[: self.n_triggers]]
        if key is not None:
            self._trigger_cache[key] = out
        return out, passes

    def _pool(self, query, passage, p_off, words, placeholder, prior, anchor_scores,
              sigma) -> list[int]:
        """Next-word proposals for one beam: the perturbed distribution's top words interleaved
        with the first-order screen's (indices into the vocabulary, ``candidates`` at most)."""
        sv = self._sv()
        span = " ".join(list(words) + [placeholder])
        text, start, _ = insert_at(passage, span, p_off)
        char = start + (len(span) - len(placeholder))
        logits, gains = sv.proposals(query, text, char, prior, anchor_scores, sigma,
                                     self.perturb_steps, self.perturb_lr, self.temperature)
        ok = prior > -1e8
        order = np.argsort(-logits, kind="stable")
        a = order[ok[order]][: self.candidates].tolist()
        b = []
        if gains is not None:
            order = np.argsort(-gains, kind="stable")
            b = order[ok[order]][: self.candidates].tolist()
        out, seen = [], set()
        for k in range(max(len(a), len(b))):
            for lst in (a, b):
                if k < len(lst) and lst[k] not in seen:
                    seen.add(lst[k])
                    out.append(int(lst[k]))
            if len(out) >= self.candidates:
                break
        return out[: self.candidates]

"""Language models for fluency: a corpus word n-gram model (offline default) and an adapter for
any causal language model on disk, behind one small interface.

Interface (:class:`LanguageModel`)
----------------------------------
``logprob(context, word)``   natural-log probability of ``word`` after the words ``context``
                             (a sequence of words, oldest first; ``[]`` = start of text)
``logprobs(context, words)`` the same for many candidate words at once (a float64 array)
``perplexity(text)``         ``exp(-mean log P)`` over the text's words (and the end marker for
                             the n-gram model; over the tokens for a causal LM); >= 1
``ratio(orig, adv)``         ``perplexity(adv) / perplexity(orig)`` (1.0 for identical texts;
                             > 1 means the adversarial text is less fluent)

Words are lower-cased ``\\w+`` runs (as in :mod:`attacks.text`).

:class:`NGramLM` is an interpolated Kneser-Ney word model (order 3 and discount 0.75 by default)
fitted on texts (e.g. the collection's documents): properly normalized over its vocabulary plus
``<unk>``, so perplexities are comparable. :class:`CausalLM` wraps a
``transformers.AutoModelForCausalLM`` folder (a local path; nothing is downloaded).
:func:`load_lm` builds either from a spec.
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Iterable, Sequence

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
BOS, EOS, UNK = "<s>", "</s>", "<unk>"


def lm_words(text: str) -> list[str]:
    """The lower-cased ``\\w+`` words of ``text``."""
    return _WORD.findall(str(text).lower())


class LMError(ValueError):
    """Bad input to a language model; the message says what to do."""


class LanguageModel:
    """Base class: subclasses implement :meth:`logprob` and :meth:`perplexity`."""

    name = "lm"

    def logprob(self, context: Sequence[str], word: str) -> float:  # pragma: no cover
        raise NotImplementedError

    def logprobs(self, context: Sequence[str], words: Sequence[str]) -> np.ndarray:
        return np.array([self.logprob(context, w) for w in words], dtype=np.float64)

    def perplexity(self, text: str) -> float:  # pragma: no cover
        raise NotImplementedError

    def ratio(self, orig: str, adv: str) -> float:
        """Perplexity ratio adv / orig (1.0 for identical texts)."""
        if orig == adv:
            return 1.0
        return self.perplexity(adv) / self.perplexity(orig)


class NGramLM(LanguageModel):
    """Interpolated Kneser-Ney word n-gram model.

    ``P(w | h) = max(c(h w) - D, 0) / c(h) + D * N1+(h .) / c(h) * P(w | h')`` where ``h'`` drops
    the oldest word; the highest order uses raw counts, lower orders continuation counts
    (the number of distinct words seen before ``h' w``); a context never seen backs off fully.
    The unigram level interpolates with the uniform distribution over the vocabulary plus
    ``<unk>``, so unknown words get a small non-zero probability. Each text is padded with
    ``order - 1`` start markers and one end marker.

    Parameters
    ----------
    texts : training texts (e.g. ``col.documents.text``).
    order : n (>= 1; default 3).
    discount : D in (0, 1) (default 0.75).
    """

    def __init__(self, texts: Iterable[str], order: int = 3, discount: float = 0.75):
        if int(order) < 1:
            raise LMError(f"order must be >= 1, got {order}")
        if not 0 < float(discount) < 1:
            raise LMError(f"discount must be in (0, 1), got {discount}")
        self.order, self.discount = int(order), float(discount)
        self.name = f"ngram{self.order}"
        top: Counter = Counter()
        for t in texts:
            toks = [BOS] * (self.order - 1) + lm_words(t) + [EOS]
            for i in range(self.order - 1, len(toks)):
                top[tuple(toks[i - self.order + 1: i + 1])] += 1
        if not top:
            raise LMError("the n-gram model needs at least one training text (e.g. the "
                          "collection's documents)")
        # counts per order: order k -> {ngram tuple of length k: count}; continuation counts below
        per_order = {self.order: top}
        for k in range(self.order - 1, 0, -1):
            cont: Counter = Counter()
            for g in per_order[k + 1]:
                cont[g[1:]] += 1
            per_order[k] = cont
        self.vocab = sorted({g[-1] for g in per_order[1]} | {UNK})
        self.index = {w: i for i, w in enumerate(self.vocab)}
        # tables: order k -> {context (k-1 tuple): (dict word->count, total, n_types)}
        self._tables: dict[int, dict] = {}
        for k, counts in per_order.items():
            tab: dict = defaultdict(lambda: [dict(), 0, 0])
            for g, c in counts.items():
                e = tab[g[:-1]]
                e[0][g[-1]] = c
                e[1] += c
                e[2] += 1
            self._tables[k] = {h: (d, tot, nt) for h, (d, tot, nt) in tab.items()}
        d1, tot1, nt1 = self._tables[1][()]
        uni = np.full(len(self.vocab), self.discount * nt1 / tot1 / len(self.vocab))
        for w, c in d1.items():
            uni[self.index[w]] += max(c - self.discount, 0.0) / tot1
        self._unigram = uni
        self._vec_cache: dict = {}

    @classmethod
    def from_collection(cls, col, **kw) -> "NGramLM":
        """Fit on the collection's document texts."""
        return cls(col.documents["text"].astype(str).tolist(), **kw)

    def _ctx(self, context: Sequence[str]) -> tuple:
        ctx = [str(w).lower() for w in context][-(self.order - 1):] if self.order > 1 else []
        ctx = [w if w in self.index or w == BOS else UNK for w in ctx]
        return tuple([BOS] * (self.order - 1 - len(ctx)) + ctx)

    def _prob(self, h: tuple, w: str) -> float:
        k = len(h) + 1
        if k == 1:
            return float(self._unigram[self.index.get(w, self.index[UNK])])
        lower = self._prob(h[1:], w)
        e = self._tables[k].get(h)
        if e is None:
            return lower
        d, tot, nt = e
        return max(d.get(w, 0) - self.discount, 0.0) / tot + self.discount * nt / tot * lower

    def logprob(self, context: Sequence[str], word: str) -> float:
        w = str(word).lower()
        return math.log(self._prob(self._ctx(context), w if w in self.index else UNK))

    def _vector(self, h: tuple) -> np.ndarray:
        """``P(. | h)`` over :attr:`vocab` (cached per context)."""
        v = self._vec_cache.get(h)
        if v is not None:
            return v
        if not h:
            return self._unigram
        lower = self._vector(h[1:])
        e = self._tables[len(h) + 1].get(h)
        if e is None:
            v = lower
        else:
            d, tot, nt = e
            v = lower * (self.discount * nt / tot)
            for w, c in d.items():
                v[self.index[w]] += max(c - self.discount, 0.0) / tot
        if len(self._vec_cache) > 4096:
            self._vec_cache.clear()
        self._vec_cache[h] = v
        return v

    def logprobs(self, context: Sequence[str], words: Sequence[str]) -> np.ndarray:
        """Vectorized :meth:`logprob` for many candidate words (unknown words get ``<unk>``'s)."""
        v = self._vector(self._ctx(context))
        unk = self.index[UNK]
        idx = np.array([self.index.get(str(w).lower(), unk) for w in words], dtype=np.int64)
        return np.log(v[idx]) if idx.size else np.zeros(0)

    def perplexity(self, text: str) -> float:
        """``exp(-mean log P)`` over the words of ``text`` and the end marker."""
        ws = lm_words(text) + [EOS]
        ctx: list[str] = []
        total = 0.0
        for w in ws:
            total += self.logprob(ctx, w)
            ctx.append(w)
        return float(math.exp(-total / len(ws)))


class CausalLM(LanguageModel):
    """Adapter for a causal language model on disk (``transformers.AutoModelForCausalLM`` and
    ``AutoTokenizer`` from ``path``; nothing is downloaded).

    A word is scored with a leading space after its context (``" ".join(context) + " " + word``;
    at the start of a text the tokenizer's BOS token, when it has one, is the context).
    ``logprob`` sums the word's token log-probs; ``logprobs`` scores many candidates by their
    first token only (one forward pass; an approximation for multi-token words, documented for
    the trigger search's candidate screen); ``perplexity`` is over the text's tokens.
    """

    def __init__(self, path: str, device: str | None = None, max_length: int = 512):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = str(path)
        self.name = f"causal:{self.path}"
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModelForCausalLM.from_pretrained(self.path)
        self.model.eval()
        self.device = torch.device(device or "cpu")
        self.model.to(self.device)
        self.max_length = int(max_length)
        self._cache: dict = {}

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _prefix(self) -> list[int]:
        t = self.tokenizer
        for tid in (t.bos_token_id, t.cls_token_id, t.eos_token_id):
            if tid is not None:
                return [int(tid)]
        return []

    def _next_logprobs(self, ids: list[int]):
        import torch

        key = tuple(ids)
        out = self._cache.get(key)
        if out is None:
            with torch.inference_mode():
                x = torch.tensor([ids[-self.max_length:]], device=self.device)
                out = torch.log_softmax(self.model(input_ids=x).logits[0, -1].float(), -1).cpu()
            if len(self._cache) > 2048:
                self._cache.clear()
            self._cache[key] = out
        return out

    def _context_ids(self, context: Sequence[str]) -> list[int]:
        ids = self._prefix()
        if context:
            ids = ids + self._ids(" ".join(context))
        if not ids:
            raise LMError(f"{self.path}: the tokenizer has no BOS/CLS/EOS token to start a text "
                          "with; give a context")
        return ids

    def logprob(self, context: Sequence[str], word: str) -> float:
        ids = self._context_ids(context)
        total = 0.0
        for t in self._ids((" " if context else "") + str(word)):
            total += float(self._next_logprobs(ids)[t])
            ids = ids + [t]
        return total

    def logprobs(self, context: Sequence[str], words: Sequence[str]) -> np.ndarray:
        lp = self._next_logprobs(self._context_ids(context))
        pre = " " if context else ""
        firsts = [self._ids(pre + str(w)) for w in words]
        return np.array([float(lp[f[0]]) if f else -1e9 for f in firsts], dtype=np.float64)

    def perplexity(self, text: str) -> float:
        import torch

        ids = (self._prefix() + self._ids(str(text)))[: self.max_length]
        if len(ids) < 2:
            return 1.0
        with torch.inference_mode():
            x = torch.tensor([ids], device=self.device)
            logits = self.model(input_ids=x).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="mean")
        return float(math.exp(float(nll)))


def load_lm(spec, col=None, texts: Iterable[str] | None = None) -> LanguageModel | None:
    """A language model from a spec.

    ``None`` / ``"none"``: no model. ``"ngram"`` / ``"ngramN"`` (N = order): an :class:`NGramLM`
    fitted on ``texts`` or, when absent, on ``col``'s documents. ``"causal:PATH"`` or a model
    folder: :class:`CausalLM`. A :class:`LanguageModel` (or any object with ``logprob`` and
    ``perplexity``) is returned as is.
    """
    if spec is None or spec == "none":
        return None
    if not isinstance(spec, str):
        if hasattr(spec, "logprob") and hasattr(spec, "perplexity"):
            return spec
        raise LMError(f"not a language model: {type(spec).__name__} (needs logprob and "
                      "perplexity)")
    m = re.fullmatch(r"ngram(\d*)", spec)
    if m:
        order = int(m.group(1) or 3)
        if texts is None:
            if col is None:
                raise LMError("the n-gram model is fitted on texts: give col= or texts=")
            texts = col.documents["text"].astype(str).tolist()
        return NGramLM(texts, order=order)
    path = spec[len("causal:"):] if spec.startswith("causal:") else spec
    from pathlib import Path

    if not Path(path).is_dir():
        raise LMError(f"unknown language model {spec!r}: use 'ngram', 'ngram2'..., 'none', or "
                      "'causal:PATH' with a local transformers folder")
    return CausalLM(path)

"""Attack metrics over an attack-results frame (one row per target; ranks 1-based).

:func:`summarize` returns a dict whose keys are stable (see :data:`METRICS`). Rates and
percentages are in **percent** (0-100), as in the published tables; ``boost`` is in ranks.

=====================  ===========================================================================
key                    definition
=====================  ===========================================================================
n_targets              rows summarized (rows with an ``error`` included: they count as unchanged)
n_errors               rows whose target could not be attacked (``error`` non-empty)
ASR                    % of targets with ``adv_rank < orig_rank`` (success rate)
same_rate              % with ``adv_rank == orig_rank``
failure_rate           % with ``adv_rank > orig_rank``
boost                  mean ``orig_rank - adv_rank`` over all targets (failures included)
boost_succ             mean ``orig_rank - adv_rank`` over successful targets
T{k}R                  % of all targets with ``adv_rank <= k``, k in 5, 10, 20, 50, 100
T{k}R_succ             % of successful targets with ``adv_rank <= k``
PP                     mean perturbation percentage ``100 * n_changed / n_words``
PP_succ                the same over successful targets
n_changed              mean changed words per target
similarity             mean cosine of sentence embeddings (original vs adversarial; 1.0 for
                       unchanged texts without encoding); only with ``similarity=True`` or an
                       ``encoder`` (default encoder: the packaged all-MiniLM-L6-v2)
ppl_ratio              mean perplexity ratio adv/orig under a language model
                       (``fluency=``: an :class:`attacks.lm.NGramLM` fitted on the collection,
                       a :class:`attacks.lm.CausalLM`, or :class:`BigramLM`); > 1 = less fluent
inserted_tokens        mean words inserted per target (insertion and trigger attacks: the
                       ``substitutions`` entries whose old word is ``""``; 0 for substitutions)
inserted_share         mean % of the adversarial document's words that were inserted
spamicity              mean TF-IDF cosine (in [0, 1]) of the inserted text with the query, over
                       targets with an insertion (``tfidf=TfIdf.from_collection(col)``; default
                       IDF from the rows' original documents and queries); Query+ gives 1.0
detector_ppl           mean perplexity of the inserted span alone under ``fluency`` (a simple
                       detector score: low = reads like the corpus)
queries_mean/_max      victim queries per target (mean, max)
surrogate_passes_mean  surrogate forward(+backward) passes per target
surrogate_T10R         % of the targets with a measured ``surrogate_rank`` that the surrogate
                       itself ranks in its top 10 (compare with T10R: the transfer gap)
wall_s_mean/_total     wall time per target / in total, seconds
budget_exhausted       % of targets stopped by a query budget
=====================  ===========================================================================

:func:`topic_summary` gives the topic-level figures (per topic: share of the group's queries
promoted; topics with share >= 0.5 and = 1.0).
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from rankers.base import WORD

from .lm import LanguageModel, NGramLM  # noqa: F401  (NGramLM: the default fluency model)

TOPK = (5, 10, 20, 50, 100)

METRICS = (
    ["n_targets", "n_errors", "ASR", "same_rate", "failure_rate", "boost", "boost_succ"]
    + [f"T{k}R" for k in TOPK] + [f"T{k}R_succ" for k in TOPK]
    + ["PP", "PP_succ", "n_changed", "similarity", "ppl_ratio", "queries_mean", "queries_max",
       "surrogate_passes_mean", "surrogate_T10R", "wall_s_mean", "wall_s_total", "budget_exhausted",
       "inserted_tokens", "inserted_share", "spamicity", "detector_ppl"]
)


def _frame(results) -> pd.DataFrame:
    if isinstance(results, pd.DataFrame):
        return results
    from .base import results_frame

    return results_frame(results)


def _pct(mask) -> float:
    mask = np.asarray(mask, dtype=bool)
    return float(100.0 * mask.mean()) if mask.size else float("nan")


def _mean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()) if x.size else float("nan")


def summarize(results, similarity: bool = False, encoder=None, fluency=None,
              tfidf=None) -> dict:
    """Metrics of an attack-results frame (or a list of :class:`AttackResult`); keys in
    :data:`METRICS` (``similarity`` / ``ppl_ratio`` / ``detector_ppl`` are NaN unless
    requested; ``spamicity`` is NaN without insertions)."""
    df = _frame(results)
    out: dict = {m: float("nan") for m in METRICS}
    n = len(df)
    out["n_targets"] = n
    out["n_errors"] = int((df["error"].fillna("").astype(str) != "").sum()) if "error" in df else 0
    if n == 0:
        return out
    r0 = df["orig_rank"].to_numpy(dtype=np.float64)
    r1 = df["adv_rank"].to_numpy(dtype=np.float64)
    succ = r1 < r0
    out["ASR"] = _pct(succ)
    out["same_rate"] = _pct(r1 == r0)
    out["failure_rate"] = _pct(r1 > r0)
    out["boost"] = _mean(r0 - r1)
    out["boost_succ"] = _mean((r0 - r1)[succ])
    for k in TOPK:
        out[f"T{k}R"] = _pct(r1 <= k)
        out[f"T{k}R_succ"] = _pct((r1 <= k)[succ]) if succ.any() else float("nan")
    pp = 100.0 * df["pp"].to_numpy(dtype=np.float64)
    out["PP"] = _mean(pp)
    out["PP_succ"] = _mean(pp[succ])
    out["n_changed"] = _mean(df["n_changed"])
    q = df["queries_used"].to_numpy(dtype=np.float64)
    out["queries_mean"] = _mean(q)
    out["queries_max"] = float(q.max())
    if "surrogate_passes" in df:
        out["surrogate_passes_mean"] = _mean(df["surrogate_passes"])
    if "surrogate_rank" in df:
        sr = pd.to_numeric(df["surrogate_rank"], errors="coerce").fillna(0).to_numpy()
        if (sr > 0).any():
            out["surrogate_T10R"] = _pct(sr[sr > 0] <= 10)
    if "wall_s" in df:
        out["wall_s_mean"] = _mean(df["wall_s"])
        out["wall_s_total"] = float(df["wall_s"].sum())
    if "budget_exhausted" in df:
        out["budget_exhausted"] = _pct(df["budget_exhausted"].astype(bool))
    if (similarity or encoder is not None) and "orig_text" in df:
        out["similarity"] = _mean(similarities(df["orig_text"].tolist(),
                                               df["adv_text"].tolist(), encoder))
    if fluency is not None and "orig_text" in df:
        out["ppl_ratio"] = _mean([perplexity_ratio(fluency, o, a) for o, a in
                                  zip(df["orig_text"], df["adv_text"])])
    out.update(insertion_metrics(df, tfidf=tfidf, fluency=fluency))
    return out


def perplexity_ratio(lm, orig: str, adv: str) -> float:
    """``lm.perplexity(adv) / lm.perplexity(orig)`` (1.0 for identical texts); ``lm`` is any
    object with ``perplexity(text)`` (:mod:`attacks.lm`)."""
    if orig == adv:
        return 1.0
    return lm.perplexity(adv) / lm.perplexity(orig)


def insertion_metrics(results, tfidf=None, fluency=None) -> dict:
    """``inserted_tokens``, ``inserted_share`` (%), ``spamicity`` and ``detector_ppl`` of an
    attack-results frame (see the module table)."""
    from .insertion import inserted_spans
    from .text import words

    df = _frame(results)
    out = {"inserted_tokens": float("nan"), "inserted_share": float("nan"),
           "spamicity": float("nan"), "detector_ppl": float("nan")}
    if len(df) == 0 or "substitutions" not in df:
        return out
    spans = [" ".join(inserted_spans(s)) for s in df["substitutions"]]
    n_ins = np.array([len(words(s)) for s in spans], dtype=np.float64)
    n_adv = np.array([len(words(str(t))) for t in df["adv_text"]], dtype=np.float64)
    out["inserted_tokens"] = _mean(n_ins)
    out["inserted_share"] = _mean(100.0 * n_ins / np.maximum(n_adv, 1))
    have = [i for i, s in enumerate(spans) if s]
    if have and "query" in df:
        queries = df["query"].astype(str).tolist()
        if tfidf is None:
            docs = df["orig_text"].astype(str).tolist() if "orig_text" in df else []
            tfidf = TfIdf(list(dict.fromkeys(docs + queries)))
        out["spamicity"] = _mean([tfidf.cosine(spans[i], queries[i]) for i in have])
        if fluency is not None:
            out["detector_ppl"] = _mean([fluency.perplexity(spans[i]) for i in have])
    return out


class TfIdf:
    """TF-IDF weights over lower-cased ``\\w+`` words: ``tf * idf`` with raw term counts and
    ``idf = ln((1 + N) / (1 + df)) + 1`` (N texts; unseen words get the largest idf).
    :meth:`cosine` is in [0, 1]."""

    def __init__(self, texts: Iterable[str]):
        dfs: Counter = Counter()
        n = 0
        for t in texts:
            n += 1
            dfs.update(set(_TOKEN.findall(str(t).lower())))
        self.n = n
        self.idf = {w: math.log((1 + n) / (1 + c)) + 1.0 for w, c in dfs.items()}
        self.default_idf = math.log(1 + n) + 1.0

    @classmethod
    def from_collection(cls, col) -> "TfIdf":
        return cls(col.documents["text"].astype(str).tolist()
                   + col.queries["query"].astype(str).tolist())

    def vector(self, text: str) -> dict:
        tf = Counter(_TOKEN.findall(str(text).lower()))
        return {w: c * self.idf.get(w, self.default_idf) for w, c in tf.items()}

    def cosine(self, a: str, b: str) -> float:
        va, vb = self.vector(a), self.vector(b)
        dot = sum(v * vb.get(w, 0.0) for w, v in va.items())
        na = math.sqrt(sum(v * v for v in va.values()))
        nb = math.sqrt(sum(v * v for v in vb.values()))
        return 0.0 if na == 0 or nb == 0 else float(dot / (na * nb))


# ----------------------------------------------------------------------------- similarity

_ENCODER = None


def default_encoder():
    """The packaged all-MiniLM-L6-v2 bi-encoder (loaded once, on first use)."""
    global _ENCODER
    if _ENCODER is None:
        from rankers import load_ranker

        _ENCODER = load_ranker("minilm")
    return _ENCODER


def similarities(orig: Sequence[str], adv: Sequence[str], encoder=None) -> np.ndarray:
    """Cosine similarity per pair of sentence embeddings (``encoder.encode(texts)``, e.g. a
    :class:`~rankers.encoders.BiEncoder`; default the packaged MiniLM). Unchanged pairs are 1.0
    without encoding; the encoder is loaded only when some text changed."""
    orig, adv = list(orig), list(adv)
    out = np.ones(len(orig))
    todo = [i for i, (o, a) in enumerate(zip(orig, adv)) if o != a]
    if todo:
        import torch

        enc = encoder if encoder is not None else default_encoder()
        e1 = enc.encode([orig[i] for i in todo]).float()
        e2 = enc.encode([adv[i] for i in todo]).float()
        cos = torch.nn.functional.cosine_similarity(e1, e2, dim=-1)
        out[todo] = cos.cpu().numpy()
    return out


def similarity(orig: str, adv: str, encoder=None) -> float:
    """Cosine similarity of the sentence embeddings of two texts (1.0 when identical)."""
    return float(similarities([orig], [adv], encoder)[0])


# ----------------------------------------------------------------------------- fluency

_TOKEN = WORD  # the lab's word (rankers.base.WORD)


class BigramLM(LanguageModel):
    """Add-one smoothed word bigram model trained on a corpus (e.g. the collection's texts).
    Kept for its hand-checkable values; the lab's fluency default is the interpolated
    Kneser-Ney :class:`attacks.lm.NGramLM` (same interface).

    Words are lower-cased ``\\w+`` runs; each text is wrapped in ``<s> ... </s>``. Unknown words
    map to ``<unk>``. ``perplexity(text) = exp(-mean log P(w_i | w_{i-1}))``.
    """

    def __init__(self, texts: Iterable[str]):
        self.unigrams: Counter = Counter()
        self.bigrams: Counter = Counter()
        for t in texts:
            toks = ["<s>"] + _TOKEN.findall(str(t).lower()) + ["</s>"]
            self.unigrams.update(toks)
            self.bigrams.update(zip(toks, toks[1:]))
        self.vocab = set(self.unigrams) | {"<unk>"}

    @classmethod
    def from_collection(cls, col) -> "BigramLM":
        return cls(col.documents["text"].tolist())

    def logprob(self, context, word: str) -> float:
        a = str(context[-1]).lower() if len(context) else "<s>"
        a = a if a in self.vocab else "<unk>"
        b = str(word).lower()
        b = b if b in self.vocab else "<unk>"
        return math.log((self.bigrams[(a, b)] + 1) / (self.unigrams[a] + len(self.vocab)))

    def perplexity(self, text: str) -> float:
        toks = ["<s>"] + [w if w in self.vocab else "<unk>"
                          for w in _TOKEN.findall(str(text).lower())] + ["</s>"]
        v = len(self.vocab)
        lp = [math.log((self.bigrams[(a, b)] + 1) / (self.unigrams[a] + v))
              for a, b in zip(toks, toks[1:])]
        return float(math.exp(-sum(lp) / len(lp)))



# ----------------------------------------------------------------------------- topic level

def topic_summary(results, groups: Mapping[str, Sequence[str]]) -> dict:
    """Per topic (``groups``: topic -> qids), the share of the topic's queries whose target was
    promoted (``adv_rank < orig_rank``) among its attacked queries; plus the number of topics with
    share >= 0.5 and = 1.0. Queries without results are ignored."""
    df = _frame(results)
    promoted = (df.assign(s=df["adv_rank"] < df["orig_rank"]).groupby(df["qid"].astype(str))["s"]
                .mean())
    per = {}
    for topic, qids in groups.items():
        vals = [promoted[str(q)] for q in qids if str(q) in promoted.index]
        if vals:
            per[topic] = float(np.mean(vals))
    return {"per_topic": per, "n_topics": len(per),
            "topics_half": sum(v >= 0.5 for v in per.values()),
            "topics_all": sum(v == 1.0 for v in per.values())}

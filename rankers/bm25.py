"""BM25 through the ``bm25s`` library (Lucene variant; k1=0.9, b=0.4 by default, as Anserini).

Text processing: lower-case, ``\\w\\w+`` tokens, English stop words removed, Porter stemming
(NLTK). A :class:`BM25Ranker` fitted on a corpus uses that corpus' statistics (N, document
frequencies, mean length) for every pair it scores: a document of the index gets exactly bm25s's
score, and a document *outside* the index (e.g. an attacked copy of a document) is scored with
bm25s's Lucene formulas and the same statistics, so the two are comparable. An unfitted ranker
indexes the unique documents of each call.
"""
from __future__ import annotations

from collections import Counter
from functools import lru_cache
from typing import Sequence

import numpy as np

from .base import Ranker


@lru_cache(maxsize=1)
def _stemmer():
    from nltk.stem.porter import PorterStemmer

    stem = lru_cache(maxsize=200_000)(PorterStemmer().stem)
    return lambda words: [stem(w) for w in words]  # bm25s passes a list of unique words


def analyze(texts: Sequence[str]) -> list[list[str]]:
    """BM25 tokens of each text (lower-case, stop words removed, Porter-stemmed)."""
    import bm25s

    return bm25s.tokenize(list(texts), stopwords="en", stemmer=_stemmer(), return_ids=False,
                          show_progress=False)


class BM25Ranker(Ranker):
    def __init__(self, corpus: Sequence[str] | None = None, docnos: Sequence[str] | None = None,
                 k1: float = 0.9, b: float = 0.4, name: str = "bm25"):
        self.k1, self.b = float(k1), float(b)
        self.name = name
        self.retriever = None
        self.docnos: list[str] | None = None
        if corpus is not None:
            self.fit(corpus, docnos)

    def fit(self, corpus: Sequence[str], docnos: Sequence[str] | None = None) -> "BM25Ranker":
        import bm25s

        corpus = list(corpus)
        if not corpus:
            raise ValueError("BM25 needs at least one document to index")
        tokens = analyze(corpus)
        self.retriever = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        self.retriever.index(tokens, show_progress=False)
        self.docnos = [str(d) for d in docnos] if docnos is not None else [str(i) for i in range(len(corpus))]
        self._row = {t: i for i, t in enumerate(corpus)}
        self._n = len(corpus)
        self._df = Counter(t for toks in tokens for t in set(toks))
        self._avgdl = float(np.mean([len(t) for t in tokens])) or 1.0
        return self

    @property
    def fitted(self) -> bool:
        return self.retriever is not None

    @property
    def pure(self) -> bool:
        """Only a fitted ranker scores a pair independently of the batch (see :class:`Ranker`)."""
        return self.fitted

    def _external_scores(self, q_tokens: list[str], docs: list[str]) -> np.ndarray:
        """Lucene BM25 of documents outside the index, with the index's statistics:
        ``sum_t idf(t) * tf / (tf + k1 (1 - b + b dl / avgdl))``,
        ``idf(t) = ln(1 + (n - df + 0.5) / (df + 0.5))`` (the formulas bm25s's ``lucene`` method
        indexes with; a test checks that indexed and external scores agree)."""
        out = np.zeros(len(docs))
        qset = list(dict.fromkeys(q_tokens))
        for i, toks in enumerate(analyze(docs)):
            tf = Counter(toks)
            dl = len(toks)
            s = 0.0
            for t in qset:
                if tf.get(t):
                    df = self._df.get(t, 0)
                    idf = np.log(1.0 + (self._n - df + 0.5) / (df + 0.5))
                    norm = self.k1 * (1.0 - self.b + self.b * dl / self._avgdl)
                    s += idf * tf[t] / (tf[t] + norm)
            out[i] = s
        return out

    def _score_fitted(self, queries, docs):
        out = np.empty(len(queries))
        by_q: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            by_q.setdefault(q, []).append(i)
        vocab = self.retriever.vocab_dict
        q_tok = dict(zip(by_q, analyze(list(by_q))))
        for q, idx in by_q.items():
            toks = [t for t in q_tok[q] if t in vocab]
            inside = [i for i in idx if docs[i] in self._row]
            outside = [i for i in idx if docs[i] not in self._row]
            if inside:
                full = self.retriever.get_scores(toks) if toks else np.zeros(self._n)
                out[inside] = full[[self._row[docs[i]] for i in inside]]
            if outside:
                out[outside] = self._external_scores(q_tok[q], [docs[i] for i in outside])
        return out

    def _score_pairs(self, queries, docs):
        if self.fitted:
            return self._score_fitted(queries, docs)
        tmp = BM25Ranker(list(dict.fromkeys(docs)), k1=self.k1, b=self.b)
        return tmp._score_fitted(queries, docs)

    def retrieve(self, queries: Sequence[str], k: int = 100) -> list[list[tuple[str, float]]]:
        """Top-``k`` (docno, score) per query from the fitted index, best first."""
        if not self.fitted:
            raise ValueError("retrieve() needs a fitted BM25Ranker: BM25Ranker(corpus, docnos)")
        k = min(k, self._n)
        vocab = self.retriever.vocab_dict
        results = []
        for toks in analyze(list(queries)):
            toks = [t for t in toks if t in vocab]
            scores = self.retriever.get_scores(toks) if toks else np.zeros(self._n)
            top = np.argsort(-scores, kind="stable")[:k]
            results.append([(self.docnos[i], float(scores[i])) for i in top])
        return results

"""PyTerrier adapter: lab rankers as ``pt.Transformer`` objects, collections as PyTerrier datasets.

::

    import pyterrier as pt
    import ranklab.pt
    from ranklab.collections import load_collection

    col = load_collection("demo")
    pipe = ranklab.pt.transformer("bm25", collection=col, k=100) >> ranklab.pt.transformer("minilm")
    pt.Experiment([pipe], col.get_topics(), col.get_qrels(), eval_metrics=["nDCG@10"])

Only PyTerrier's transformer API is used (no Java, no indexing), so it works offline. At this
boundary ranks follow PyTerrier's convention (**0-based**); inside the lab they are 1-based
(:func:`rankers.base.to_pyterrier_ranks` / ``from_pyterrier_ranks``). PyTerrier is the
``pyterrier`` extra: ``pip install -c constraints.txt -e ".[pyterrier]"``.
"""
from __future__ import annotations

import pandas as pd

from rankers.base import Ranker, RankerError, to_pyterrier_ranks

__all__ = ["transformer"]


def _pt():
    try:
        import pyterrier as pt
    except ImportError:
        raise ImportError("ranklab.pt needs PyTerrier: pip install -c constraints.txt -e "
                          "'.[pyterrier]'") from None
    return pt


def transformer(ranker_or_spec, collection=None, k: int = 100, **load_kwargs):
    """A ``pt.Transformer`` for a lab ranker (an object or a :func:`rankers.load_ranker` spec).

    * ``"bm25"`` with a ``collection``: a retriever. Given topics (``qid, query``) it returns the
      collection's BM25 top ``k`` per query with ``docno, text, score, rank``; given a frame that
      already has ``docno`` it reranks it, like any other ranker.
    * any other ranker: a reranker of ``qid, query, docno`` (+ ``text``) frames; documents
      without a ``text`` column take theirs from ``collection`` (else a clear error).

    Output ranks are 0-based (PyTerrier's convention); scores are the ranker's raw scores.
    """
    pt = _pt()
    if isinstance(ranker_or_spec, Ranker):
        ranker = ranker_or_spec
    elif collection is not None:
        ranker = collection.ranker(ranker_or_spec, **load_kwargs)
    else:
        from rankers import load_ranker

        if ranker_or_spec == "bm25":
            raise RankerError("transformer('bm25') retrieves from a collection: pass "
                              "collection=load_collection(...)")
        ranker = load_ranker(ranker_or_spec, **load_kwargs)
    retrieve = ranker_or_spec == "bm25" and collection is not None

    class RanklabTransformer(pt.Transformer):
        def __init__(self):
            self.ranker, self.collection, self.k = ranker, collection, int(k)

        def __repr__(self):
            return f"ranklab.pt.transformer({self.ranker.name!r})"

        def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
            if "qid" not in inp.columns or "query" not in inp.columns:
                raise RankerError(f"{self!r} needs columns qid, query (have {list(inp.columns)})")
            if "docno" not in inp.columns:
                if not retrieve:
                    raise RankerError(f"{self!r} reranks documents: give it a frame with docno "
                                      "(e.g. after a retriever), or use transformer('bm25', "
                                      "collection=col) first")
                return to_pyterrier_ranks(self._retrieve(inp))
            frame = inp.copy()
            if "text" not in frame.columns:
                if self.collection is None:
                    raise RankerError(f"{self!r} needs a text column: pass collection=... to "
                                      "transformer() or add pt.text.get_text(...) before it")
                frame["text"] = [self.collection.text(d) for d in frame["docno"]]
            return to_pyterrier_ranks(self.ranker.transform(frame))

        def _retrieve(self, topics: pd.DataFrame) -> pd.DataFrame:
            qids = topics["qid"].astype(str).tolist()
            hits = self.ranker.retrieve(topics["query"].tolist(), k=self.k)
            rows = [(q, query, d, s) for q, query, h in zip(qids, topics["query"], hits)
                    for d, s in h]
            run = pd.DataFrame(rows, columns=["qid", "query", "docno", "score"])
            run["text"] = [self.collection.text(d) for d in run["docno"]]
            from rankers.base import add_ranks

            return add_ranks(run)

    return RanklabTransformer()

"""The PyTerrier adapter: lab rankers in PyTerrier pipelines, collections as datasets."""
from __future__ import annotations

import pandas as pd
import pytest

pt = pytest.importorskip("pyterrier", reason="the pyterrier extra is installed by .ci/setup.sh")

import ranklab  # noqa: E402
import ranklab.pt  # noqa: E402
from rankers.lexical import TermWeightRanker  # noqa: E402
from ranklab.collections import load_collection  # noqa: E402


def test_bm25_then_rerank_pipeline_matches_the_lab(synthetic):
    col = load_collection(str(synthetic))
    ranker = TermWeightRanker()
    pipe = ranklab.pt.transformer("bm25", collection=col, k=4) >> ranklab.pt.transformer(ranker)
    assert isinstance(pipe, pt.Transformer)
    out = pipe(col.get_topics())
    lab = ranker.transform(col.candidates("bm25", k=4))
    assert sorted(out["qid"].unique()) == sorted(col.queries["qid"])
    assert out.groupby("qid")["rank"].min().eq(0).all()  # PyTerrier's 0-based ranks
    merged = out.merge(lab, on=["qid", "docno"], suffixes=("_pt", "_lab"))
    assert len(merged) == len(lab) == len(out)
    assert (merged["rank_pt"] + 1 == merged["rank_lab"]).all()
    assert merged["score_pt"].tolist() == pytest.approx(merged["score_lab"].tolist())


def test_experiment_runs_and_agrees_with_ranklab_evaluate(synthetic):
    col = load_collection(str(synthetic))
    bm25 = ranklab.pt.transformer("bm25", collection=col, k=6)
    pipe = bm25 >> ranklab.pt.transformer(TermWeightRanker())
    from ir_measures import nDCG

    res = pt.Experiment([bm25, pipe], col.get_topics(), col.get_qrels(),
                        eval_metrics=[nDCG @ 10], names=["bm25", "bm25>>tw"])
    lab = ranklab.evaluate(TermWeightRanker().transform(col.candidates("bm25", k=6)),
                           col.qrels, ["nDCG@10"])["nDCG@10"]
    assert res.set_index("name").loc["bm25>>tw", "nDCG@10"] == pytest.approx(lab)


def test_dataset_api_and_text_lookup(synthetic):
    col = load_collection(str(synthetic))
    assert list(col.get_topics().columns) == ["qid", "query"]
    assert list(col.get_qrels().columns) == ["qid", "docno", "label"]
    docs = list(col.get_corpus_iter())
    assert len(docs) == len(col.documents) and set(docs[0]) == {"docno", "text"}
    # a frame without text takes its texts from the collection
    frame = pd.DataFrame({"qid": ["q1", "q1"], "query": ["bees honey"] * 2, "docno": ["d1", "d3"]})
    out = ranklab.pt.transformer(TermWeightRanker(), collection=col)(frame)
    assert out.sort_values("rank")["docno"].tolist() == ["d1", "d3"]


def test_clear_errors():
    with pytest.raises(ValueError, match="collection"):
        ranklab.pt.transformer("bm25")
    t = ranklab.pt.transformer(TermWeightRanker())
    with pytest.raises(ValueError, match="docno"):
        t(pd.DataFrame({"qid": ["1"], "query": ["x"]}))
    with pytest.raises(ValueError, match="text"):
        t(pd.DataFrame({"qid": ["1"], "query": ["x"], "docno": ["d"]}))


def test_ranklab_submodules_load_on_attribute_access():
    import importlib

    mod = importlib.reload(ranklab)
    assert callable(mod.sweep.load_results) and callable(mod.pt.transformer)

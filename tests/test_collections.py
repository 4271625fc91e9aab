"""Collections, first-stage candidates and evaluation."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import ranklab
from ranklab.collections import CollectionError, load_collection, read_trec_run, write_trec_run


def test_beir_folder_loads_and_candidates_match_brute_force_bm25(synthetic):
    col = load_collection(str(synthetic))
    assert len(col.documents) == 6 and len(col.queries) == 3 and len(col.qrels) == 6
    run = col.candidates("bm25", k=3)
    assert set(run.columns) >= {"qid", "query", "docno", "text", "score", "rank"}
    assert run.groupby("qid").size().max() == 3
    bm = col.bm25()
    for qid, g in run.groupby("qid"):
        q = col.query_text(qid)
        all_scores = bm.score(q, col.documents["text"].tolist())
        best = col.documents["docno"].to_numpy()[np.argsort(-all_scores, kind="stable")[:3]]
        assert g.sort_values("rank")["docno"].tolist() == best.tolist()
        assert g["rank"].tolist() == sorted(g["rank"].tolist()) and g["rank"].min() == 1


def test_candidates_are_cached_and_copies(synthetic):
    col = load_collection(str(synthetic))
    a = col.candidates("bm25", k=2)
    a.loc[0, "text"] = "mutated"
    b = col.candidates("bm25", k=2)
    assert b.loc[0, "text"] != "mutated"


def test_missing_and_mismatched_inputs_fail_clearly(synthetic, tmp_path):
    with pytest.raises(CollectionError, match="unknown dataset"):
        load_collection("no-such-dataset")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CollectionError, match="corpus.jsonl is missing"):
        load_collection(str(empty))
    # qrels from another collection
    (synthetic / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nzz1\tx1\t1\nzz2\tx2\t1\n")
    with pytest.raises(CollectionError, match="another collection"):
        load_collection(str(synthetic))
    with pytest.raises(CollectionError, match="ir_datasets"):
        load_collection("irds:msmarco-passage/dev")


def test_empty_documents_are_dropped_with_a_warning(synthetic):
    with open(synthetic / "corpus.jsonl", "a") as f:
        f.write(json.dumps({"_id": "d9", "title": "", "text": "  "}) + "\n")
    with pytest.warns(UserWarning, match="empty"):
        col = load_collection(str(synthetic))
    assert "d9" not in set(col.documents["docno"])


def test_trec_run_round_trip(synthetic, tmp_path):
    col = load_collection(str(synthetic))
    run = col.candidates("bm25", k=3)
    write_trec_run(run, tmp_path / "r.trec")
    back = read_trec_run(tmp_path / "r.trec")
    assert back["docno"].tolist() == run["docno"].tolist()
    assert back["rank"].tolist() == run["rank"].tolist()


def test_evaluate_against_hand_computed_values():
    qrels = pd.DataFrame({"qid": ["1", "1", "2"], "docno": ["a", "b", "c"], "label": [1, 2, 1]})
    run = pd.DataFrame({"qid": ["1", "1", "1", "2", "2"], "docno": ["x", "a", "b", "y", "c"],
                        "score": [3.0, 2.0, 1.0, 2.0, 1.0]})
    res = ranklab.evaluate(run, qrels, ["RR@10", "P@2", "nDCG@10"])
    assert res["RR@10"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert res["P@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)
    # nDCG (linear gains, log2 discounts), query 1: dcg = 1/log2(3) + 2/log2(4); idcg = 2 + 1/log2(3)
    nd1 = (1 / np.log2(3) + 2 / 2) / (2 + 1 / np.log2(3))
    nd2 = (1 / np.log2(3)) / 1
    assert res["nDCG@10"] == pytest.approx((nd1 + nd2) / 2)
    per_q = ranklab.evaluate_per_query(run, qrels, ["RR@10"])
    assert sorted(per_q["qid"]) == ["1", "2"]


def test_evaluate_rejects_unknown_measures_and_foreign_qrels():
    run = pd.DataFrame({"qid": ["1"], "docno": ["a"], "score": [1.0]})
    with pytest.raises(ValueError, match="unknown measure"):
        ranklab.evaluate(run, pd.DataFrame({"qid": ["1"], "docno": ["a"], "label": [1]}), ["nDGC@10"])
    with pytest.raises(ValueError, match="same collection"):
        ranklab.evaluate(run, pd.DataFrame({"qid": ["9"], "docno": ["a"], "label": [1]}), ["RR@10"])


def test_demo_collection_has_topics_and_graded_qrels(demo):
    assert len(demo.documents) >= 150 and len(demo.queries) >= 40
    assert set(demo.qrels["label"]) == {0, 1, 2}
    groups = demo.topic_groups()
    assert len(groups) >= 8 and all(len(v) >= 2 for v in groups.values())


def test_split_queries_is_seeded_disjoint_and_filters_short_lists(synthetic):
    col = load_collection(str(synthetic))
    cands = pd.DataFrame({"qid": ["1", "1", "2", "2", "3"], "docno": list("abcde")})
    attacked, rest = col.split_queries(cands, 1, seed=3, min_candidates=2)
    assert len(attacked) == 1 and set(attacked) | set(rest) == {"1", "2"}
    assert not set(attacked) & set(rest)                  # "3" has one candidate: left out
    assert col.split_queries(cands, 1, seed=3, min_candidates=2) == (attacked, rest)
    assert col.split_queries(cands, 5, seed=0)[0] == ["1", "2"]
    with pytest.raises(CollectionError, match="no query has >= 3"):
        col.split_queries(cands, 1, min_candidates=3)

"""Behaviour of the ranker interface, caches, the oracle, BM25 and the encoder rankers."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
import torch

from rankers import (AccessDenied, BudgetExhausted, CachedRanker, Oracle, RankerError,
                     TermWeightRanker, UnknownRanker, load_ranker, rank_against)
from rankers.bm25 import BM25Ranker

DOCS = ["the cat sat on the mat", "dogs chase cats in the garden", "a mat for a big dog",
        "bees make honey", "the the the"]


def test_rank_matches_brute_force_and_is_one_based():
    r = TermWeightRanker({"cat": 2.0, "mat": 1.0, "dog": 0.5}, query_weight=1.0)
    q = "cat on a mat"
    frame = r.rank(q, DOCS, docnos=[f"d{i}" for i in range(len(DOCS))])
    # brute force: score every doc by hand, sort descending with a stable tie rule
    manual = []
    for i, d in enumerate(DOCS):
        toks = d.lower().split()
        manual.append(sum({"cat": 2.0, "mat": 1.0, "dog": 0.5}.get(t, 0) + (t in q.split()) for t in toks))
    order = sorted(range(len(DOCS)), key=lambda i: (-manual[i], i))
    assert frame["docno"].tolist() == [f"d{i}" for i in order]
    assert frame["rank"].tolist() == list(range(1, len(DOCS) + 1))
    np.testing.assert_allclose(frame["score"], [manual[i] for i in order])


def test_transform_reranks_per_query_and_does_not_mutate_input():
    r = TermWeightRanker({"honey": 3.0})
    run = pd.DataFrame({"qid": ["1", "1", "2", "2"], "query": ["cat", "cat", "honey", "honey"],
                        "docno": ["a", "b", "c", "d"], "text": [DOCS[3], DOCS[0], DOCS[0], DOCS[3]],
                        "score": [9.0, 8.0, 7.0, 6.0], "rank": [1, 2, 1, 2]})
    before = run.copy(deep=True)
    out = r.transform(run)
    pd.testing.assert_frame_equal(run, before)
    assert out[out.qid == "1"]["docno"].tolist() == ["a", "b"]  # honey weighs 3 whatever the query
    assert out[out.qid == "2"]["docno"].tolist() == ["d", "c"]
    assert r.calls == 1  # every pair of the run scored in one batched call


def test_bad_input_errors_say_what_to_do():
    r = TermWeightRanker()
    with pytest.raises(RankerError, match="empty"):
        r.score("q", ["fine", "   "])
    with pytest.raises(RankerError, match="as many"):
        r.score_pairs(["a", "b"], ["c"])
    with pytest.raises(RankerError, match="missing"):
        r.transform(pd.DataFrame({"qid": ["1"], "docno": ["a"]}))


def test_unicode_documents():
    r = TermWeightRanker({"café": 1.0})
    assert r.score("café", ["un café noir", "naïve façade", "日本語のテキスト"]).tolist() == [2.0, 0.0, 0.0]


def test_cache_is_keyed_by_text_not_docno_and_counts_hits():
    base = TermWeightRanker({"cat": 1.0})
    cached = CachedRanker(base)
    s1 = cached.score("cat", ["cat cat", "dog", "cat cat"])
    assert cached.cache.misses == 2 and cached.cache.hits == 1
    s2 = cached.score("cat", ["cat cat", "a new cat text"])  # same docno could carry new text
    assert s1[0] == s2[0] and s2[1] == base.score("cat", ["a new cat text"])[0]
    assert cached.cache.hits == 2


def test_oracle_budget_is_never_exceeded():
    oracle = Oracle(TermWeightRanker(), access="score", budget=5)
    oracle.score("q", ["a", "b", "c"])
    with pytest.raises(BudgetExhausted, match="budget"):
        oracle.score("q", ["a", "b", "c"])
    assert oracle.queries_used == 3  # the refused request scored nothing
    oracle.score("q", ["a", "b"])
    assert oracle.queries_used == 5 and oracle.remaining == 0


def test_oracle_access_levels():
    r = TermWeightRanker({"cat": 1.0})
    rank_only = Oracle(r, access="rank")
    with pytest.raises(AccessDenied):
        rank_only.score("cat", ["cat"])
    assert rank_only.rank_of("cat", "cat cat", np.array([5.0, 1.0])) == 2  # "cat cat" scores 4
    top = Oracle(r, access="topk", k=2)
    assert top.topk("cat", ["x", "cat", "cat cat cat"], ["a", "b", "c"]) == ["c", "b"]
    with pytest.raises(AccessDenied):
        top.rank_of("cat", "cat", np.array([1.0]))
    with pytest.raises(ValueError, match="access"):
        Oracle(r, access="weights")


@pytest.mark.parametrize("score,others,pess,opt", [
    (2.0, [3.0, 2.0, 1.0], 3, 2), (5.0, [3.0, 2.0], 1, 1), (0.0, [0.0, 0.0], 3, 1)])
def test_rank_against_tie_rules(score, others, pess, opt):
    assert rank_against(score, others, "pessimistic") == pess
    assert rank_against(score, others, "optimistic") == opt


def test_bm25_scores_external_documents_like_indexed_ones():
    corpus = DOCS[:4]
    bm = BM25Ranker(corpus)
    inside = bm.score("cat mat garden", corpus)
    outside = bm._external_scores(__import__("rankers.bm25", fromlist=["analyze"]).analyze(["cat mat garden"])[0], corpus)
    np.testing.assert_allclose(inside, outside, rtol=1e-5)
    hits = bm.retrieve(["cat mat garden"], k=4)[0]
    assert [d for d, _ in hits] == [str(i) for i in np.argsort(-inside, kind="stable")]


def test_load_ranker_errors_list_what_exists(tmp_path):
    with pytest.raises(UnknownRanker, match="minilm.*bm25"):
        load_ranker("gpt-ranker")
    with pytest.raises(FileNotFoundError, match="no model folder"):
        load_ranker(f"cross-encoder:{tmp_path}/missing")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_ranker(f"cross-encoder:{tmp_path}")


def _manual_cross_scores(path, queries, docs):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    out = []
    with torch.no_grad():
        for q, d in zip(queries, docs):
            enc = tok(q, d, return_tensors="pt", truncation="only_second", max_length=64)
            out.append(model(**enc).logits[0, 0].item())
    return np.array(out)


def test_cross_encoder_raw_logits_and_batch_invariance(tiny_cross, tiny_cross_path):
    queries = ["how do bees make honey"] * 3 + ["what is lava"] * 2
    docs = ["bees make honey in the hive", "a cat sat", "the queen bee", "lava from a volcano",
            "coffee beans roast in a hot oven and taste bitter"]
    scores = tiny_cross.score_pairs(queries, docs)
    np.testing.assert_allclose(scores, _manual_cross_scores(tiny_cross_path, queries, docs), atol=1e-5)
    perm = [4, 2, 0, 3, 1]
    np.testing.assert_allclose(tiny_cross.score_pairs([queries[i] for i in perm], [docs[i] for i in perm]),
                               scores[perm], atol=1e-5)


def test_bi_encoder_matches_manual_mean_pooling(tiny_bi, tiny_bi_path):
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bi_path)
    model = AutoModel.from_pretrained(tiny_bi_path).eval()

    def emb(t):
        enc = tok(t, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0]
        v = h.mean(0)
        return v / v.norm()

    q, docs = "bees make honey", ["the bees of a hive", "a big volcano", "honey"]
    expected = [float(emb(q) @ emb(d)) for d in docs]
    np.testing.assert_allclose(tiny_bi.score(q, docs), expected, atol=1e-5)


def test_long_documents_are_truncated_explicitly(tiny_cross):
    long_doc = " ".join(["honey"] * 500)
    longer = long_doc + " " + " ".join(["volcano"] * 500)
    s = tiny_cross.score("honey", [long_doc, longer])
    # only the first max_length word pieces are read: the tail beyond the limit changes nothing
    assert s[0] == pytest.approx(s[1], abs=1e-5)
    assert tiny_cross.max_length == 64


@pytest.mark.parametrize("kind", ["cross", "bi"])
def test_position_gradients_cover_document_positions(tiny_cross, tiny_bi, kind):
    from rankers.base import DifferentiableRanker
    from rankers.encoders import position_gradients

    ranker = tiny_cross if kind == "cross" else tiny_bi
    assert isinstance(ranker, DifferentiableRanker)
    q, d = "bees honey", "the bees make honey"
    enc, emb, grad = position_gradients(ranker, q, d, lambda s: -s)
    assert grad.shape == emb.shape and grad.shape[0] == enc.inputs["input_ids"].shape[1]
    doc_pos = [p for p, _, _ in enc.doc_pieces]
    assert [d[s:e] for _, s, e in enc.doc_pieces] == d.split()
    assert torch.any(grad[doc_pos].abs() > 0)
    tt = enc.inputs.get("token_type_ids")
    with torch.no_grad():
        # the protocol's score equals the ranker's score
        s0 = ranker.score_embeds(q, emb[None], enc.inputs["attention_mask"], tt)
        assert s0.item() == pytest.approx(float(ranker.score(q, [d])[0]), abs=1e-4)
        # a first-order check: moving along -grad lowers the loss (raises the score)
        s1 = ranker.score_embeds(q, (emb - 1e-2 * grad)[None], enc.inputs["attention_mask"], tt)
    assert s1.item() > s0.item()


def test_as_differentiable_sees_through_score_caches(tiny_cross, tiny_bi):
    from rankers import CachedRanker, TermWeightRanker
    from rankers.base import DifferentiableRanker, as_differentiable

    assert as_differentiable(CachedRanker(tiny_cross)) is tiny_cross
    assert as_differentiable(tiny_bi) is tiny_bi
    assert as_differentiable(TermWeightRanker()) is None
    assert not isinstance(TermWeightRanker(), DifferentiableRanker)
    # the window: a bi-encoder reads the document alone, a cross-encoder after the query
    doc = "the bees make honey " * 30
    for r in (tiny_bi, tiny_cross):
        enc = r.encode_for_attack("bees honey", doc)
        assert enc.truncated and 0 < enc.doc_chars < len(doc)
        assert enc.inputs["input_ids"].shape[1] == r.max_length
        assert all(doc[s:e] in {"the", "bees", "make", "honey"} for _, s, e in enc.doc_pieces)
    assert not tiny_bi.encode_for_attack("q", "the bees").truncated

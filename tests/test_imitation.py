"""Imitation surrogates: RBO / overlap hand values, pair recipes, training through an Oracle,
and the attack job's surrogate cache."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rankers import Oracle, TermWeightRanker
from rankers.encoders import CrossEncoder
from rankers.imitation import agreement, overlap_at, rbo, sample_groups, train_surrogate
from ranklab.collections import Collection

DOCS = [
    "bees make honey from nectar in the hive", "the queen bee and worker bees of a colony",
    "a volcano erupts lava and ash from its crater", "an earthquake at a fault makes a crater",
    "roast coffee beans and brew espresso with hot water", "bread needs flour yeast and an oven",
    "honey bees and a big hive of wax", "the lava of the volcano is hot rock",
    "a cup of bitter coffee", "sourdough bread with a good crust", "bees chase pollen",
    "hot magma makes lava", "the grinder and the espresso cup", "the oven bakes the dough",
]
QUERIES = {"q1": "how do bees make honey", "q2": "what makes a volcano erupt",
           "q3": "how to brew coffee", "q4": "how to bake bread"}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def col():
    docs = pd.DataFrame({"docno": [f"d{i}" for i in range(len(DOCS))], "text": DOCS})
    queries = pd.DataFrame({"qid": list(QUERIES), "query": list(QUERIES.values())})
    qrels = pd.DataFrame({"qid": ["q1"], "docno": ["d0"], "label": [1]})
    return Collection("imit", docs, queries, qrels)


@pytest.fixture(scope="module")
def victim():
    return TermWeightRanker({"honey": 2, "lava": 2, "espresso": 2, "bread": 2, "hot": 1},
                            query_weight=1.0)


# ------------------------------------------------------------------------------ overlap

def test_rbo_hand_values():
    assert rbo([1, 2, 3], [1, 2, 3], 0.7) == pytest.approx(1.0)
    # A_1 = 1, A_2 = 1/2, A_3 = 1 with p = 0.5:
    # lower = 0.5 * (1 + 0.5 * 0.5 + 1 * 0.25) = 0.75; ext = 0.75 + 1 * 0.5^3 = 0.875
    assert rbo([1, 2, 3], [1, 3, 2], 0.5, extrapolated=False) == pytest.approx(0.75)
    assert rbo([1, 2, 3], [1, 3, 2], 0.5) == pytest.approx(0.875)
    # A_1 = 0, A_2 = 1 with p = 0.7: lower = 0.3 * (0 + 0.7) = 0.21; ext = 0.21 + 0.49 = 0.7
    assert rbo(["a", "b"], ["b", "a"], 0.7, extrapolated=False) == pytest.approx(0.21)
    assert rbo(["a", "b"], ["b", "a"], 0.7) == pytest.approx(0.7)
    assert rbo([1, 2, 3], [4, 5, 6]) == 0.0
    # top-weighted: a swap at the top costs more than one at the bottom
    assert rbo([1, 2, 3, 4], [2, 1, 3, 4]) < rbo([1, 2, 3, 4], [1, 2, 4, 3])
    # the longer list is cut to the shorter one's depth
    assert rbo([1, 2, 3, 9], [1, 2, 3]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        rbo([1], [1], p=1.0)


def test_overlap_at():
    a, b = list(range(20)), list(range(5, 25))
    assert overlap_at(a, b, 10) == 0.5
    assert overlap_at(a, a, 10) == 1.0
    assert overlap_at([1, 2], [2, 3], 10) == 0.5


# ------------------------------------------------------------------------------ recipes

def test_sample_groups_recipes():
    rng = np.random.default_rng(0)
    order = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
    g = sample_groups(order, "q", "topk_all_pairs", 4, 0, rng)
    pairs = [tuple(x.docs) for x in g]
    assert pairs == [("a", "b"), ("a", "c"), ("a", "d"), ("b", "c"), ("b", "d"), ("c", "d")]
    g = sample_groups(order, "q", "top25_plus_tail", 3, 2, rng)
    assert len(g) == 3 + 3 * 2
    for x in g[3:]:
        assert x.docs[0] in order[:3] and x.docs[1] in order[3:]
    g = sample_groups(order, "q", "pseudo_relevance", 2, 3, rng)
    assert len(g) == 2 and all(len(x.docs) == 4 for x in g)
    for x in g:
        assert x.docs[0] in order[:2] and all(d in order[4:] for d in x.docs[1:])
    # top-k access: only the first n_known are ordered
    g = sample_groups(order, "q", "topk_all_pairs", 5, 0, rng, n_known=3)
    assert len(g) == 3
    with pytest.raises(ValueError, match="unknown recipe"):
        sample_groups(order, "q", "all", 3, 0, rng)


# ------------------------------------------------------------------------------ training

def test_train_surrogate_counts_victim_queries(col, victim, tiny_cross_path):
    oracle = Oracle(victim, access="rank")
    model = train_surrogate(oracle, col, ["q1", "q2", "q3"], recipe="topk_all_pairs", k=4,
                            base=str(tiny_cross_path), epochs=1, seed=0, candidates_k=8,
                            progress=False, max_length=64)
    assert isinstance(model, CrossEncoder)
    info = model.imitation_info
    assert info["victim_queries"] == oracle.queries_used == 3 * 8
    assert info["n_groups"] == 3 * 6 and info["recipe"] == "topk_all_pairs" and info["k"] == 4
    assert info["qids"] == ["q1", "q2", "q3"]
    assert not model.model.training
    s = model.score("bees honey", ["bees make honey", "lava"])
    assert s.shape == (2,) and np.isfinite(s).all()
    # top-k access and the other recipes
    o2 = Oracle(victim, access="topk", k=5)
    m2 = train_surrogate(o2, col, ["q4"], recipe="top25_plus_tail", k=3, tail=2,
                         base=str(tiny_cross_path), loss="hinge", candidates_k=8,
                         progress=False, max_pairs=5)
    assert m2.imitation_info["victim_queries"] == 8 and m2.imitation_info["n_groups"] == 5
    m3 = train_surrogate(Oracle(victim, access="rank"), col, ["q4"], recipe="pseudo_relevance",
                         base=str(tiny_cross_path), loss="listwise", candidates_k=10,
                         k=2, tail=3, progress=False)
    assert m3.imitation_info["n_groups"] == 2


def test_bad_base_fails_before_any_victim_query(col, victim, tmp_path):
    oracle = Oracle(victim, access="rank")
    with pytest.raises(ValueError, match="could not be loaded.*'glove'"):
        train_surrogate(oracle, col, ["q1", "q2"], base=str(tmp_path / "no-such-model"),
                        candidates_k=6, progress=False)
    assert oracle.queries_used == 0


def test_train_surrogate_deterministic(col, victim, tiny_cross_path):
    kw = dict(recipe="topk_all_pairs", k=3, base=str(tiny_cross_path), candidates_k=6,
              progress=False, seed=1)
    a = train_surrogate(Oracle(victim, access="rank"), col, ["q1", "q2"], **kw)
    b = train_surrogate(Oracle(victim, access="rank"), col, ["q1", "q2"], **kw)
    docs = DOCS[:5]
    np.testing.assert_allclose(a.score("bees", docs), b.score("bees", docs), rtol=1e-5)


def test_agreement(col, victim, tiny_cross):
    same = agreement(victim, victim, col, ["q1", "q2"], candidates_k=10)
    assert same["overlap@10"] == 1.0 and same["rbo"] == pytest.approx(1.0)
    assert same["victim_queries"] == 0 and same["n_queries"] == 2
    oracle = Oracle(victim, access="rank")
    a = agreement(oracle, tiny_cross, col, ["q1", "q2"], candidates_k=10)
    assert 0.0 <= a["overlap@10"] <= 1.0 and 0.0 <= a["rbo"] <= 1.0
    assert a["victim_queries"] == oracle.queries_used == 20


def test_attack_job_surrogate_cache(col, victim, tiny_cross_path, tmp_path, monkeypatch):
    from ranklab.attack_job import imitation_surrogate

    monkeypatch.setenv("RANKLAB_CACHE", str(tmp_path))
    kw = dict(recipe="topk_all_pairs", k=3, base=str(tiny_cross_path), loss="ranknet", epochs=1,
              seed=0, first_stage="bm25", candidates_k=6, max_pairs=None, lr=3e-5,
              max_length=64, progress=False)
    m1, info1 = imitation_surrogate(victim, "term-weight", col, ["q1", "q2"], **kw)
    m2, info2 = imitation_surrogate(victim, "term-weight", col, ["q1", "q2"], **kw)
    assert not info1["cached"] and info2["cached"]
    assert info2["victim_queries"] == info1["victim_queries"] == 12
    assert (tmp_path / "surrogates").is_dir()
    np.testing.assert_allclose(m1.score("bees", DOCS[:4]), m2.score("bees", DOCS[:4]),
                               rtol=1e-5, atol=1e-6)


MORE = {"q5": "hot lava rock", "q6": "bees and pollen", "q7": "espresso cup",
        "q8": "sourdough crust", "q9": "crater of a volcano", "q10": "wax hive"}


@pytest.fixture(scope="module")
def col10():
    docs = pd.DataFrame({"docno": [f"d{i}" for i in range(len(DOCS))], "text": DOCS})
    qs = {**QUERIES, **MORE}
    queries = pd.DataFrame({"qid": list(qs), "query": list(qs.values())})
    return Collection("imit10", docs, queries, pd.DataFrame(columns=["qid", "docno", "label"]))


def test_defaults_hold_out_queries_and_stop_on_agreement(col10, victim, tiny_cross_path):
    oracle = Oracle(victim, access="rank")
    qids = list(col10.queries["qid"])
    model = train_surrogate(oracle, col10, qids, base=str(tiny_cross_path), candidates_k=10,
                            max_length=64, eval_every=1, patience=1, max_pairs=64,
                            batch_size=2, progress=False)
    info = model.imitation_info
    # every query's ranking is paid once; 2 of 10 are held out (no training pairs from them)
    assert info["victim_queries"] == oracle.queries_used == 10 * 10
    assert len(info["holdout_qids"]) == 2 and not set(info["holdout_qids"]) & set(info["qids"])
    assert info["recipe"] == "top25_plus_tail" and info["k"] == 6 and info["tail"] == 3
    assert info["max_length"] == 64 and info["lr"] == 3e-4
    a = info["agreement"]
    assert a["n_queries"] == 2 and 0 <= a["overlap@10"] <= 1 and 0 <= a["rbo"] <= 1
    assert info["steps"] <= info["planned_steps"] == 32
    if info["stopped_early"]:
        assert info["steps"] < info["planned_steps"]
    # the kept weights are the best checked ones: the reported agreement is reproducible
    from rankers.imitation import _agreement_means, _compare

    ov, rb = [], []
    cands = col10.candidates("bm25", k=10, qids=info["holdout_qids"])
    for _, g in cands.groupby("qid", sort=True):
        g = g.sort_values("rank")
        texts, docnos = g["text"].tolist(), g["docno"].astype(str).tolist()
        q = str(g["query"].iloc[0])
        v = [docnos[i] for i in np.argsort(-victim.score(q, texts), kind="stable")]
        _compare(v, docnos, model.score(q, texts), ov, rb, 0.7, 10)
    again = _agreement_means(ov, rb, 10)
    assert again["overlap@10"] == pytest.approx(a["overlap@10"])
    assert again["rbo"] == pytest.approx(a["rbo"], abs=1e-6)
    # holdout=0: no early stopping, every planned step
    m2 = train_surrogate(Oracle(victim, access="rank"), col10, qids, base=str(tiny_cross_path),
                         candidates_k=10, max_length=64, holdout=0, max_pairs=12, batch_size=4,
                         progress=False)
    assert m2.imitation_info["agreement"] is None and not m2.imitation_info["stopped_early"]
    assert m2.imitation_info["steps"] == m2.imitation_info["planned_steps"] == 3

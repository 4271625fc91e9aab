"""Clustered (overlap-preserving) smoothing sets: partition, q = 1 inside, soundness, noise."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from attacks.text import tokenize
from attacks.threat import SynonymTable, match_case
from defenses.certify import certify
from defenses.clusters import (cluster_noise_transform, cluster_partition, cluster_sets,
                               cluster_stats, neighbour_graph, radius_table)
from defenses.noise import make_noise_transform, parse_noise_spec
from defenses.smoothing import SmoothedRanker, SmoothingSets
from rankers.lexical import TermWeightRanker

# a chain good - fine - nice - decent - ok plus a small component; asymmetric on purpose
THREAT = SynonymTable({"good": ["fine"], "fine": ["nice"], "nice": ["decent"], "decent": ["ok"],
                       "bad": ["poor", "ice cream"], "poor": ["weak"]}, symmetric=False)
TEXTS = ["good good fine movie", "nice plot", "decent ok film", "bad poor weak", "the movie"]


def test_neighbour_graph_symmetric_single_words():
    g = neighbour_graph(THREAT, ["good", "fine", "nice", "decent", "bad", "poor", "movie"])
    for a, nb in g.items():
        for b in nb:
            assert a in g[b]
    assert "ice cream" not in g and "weak" in g["poor"] and "movie" not in g
    assert g["fine"] == {"good", "nice"}


def test_partition_bounded_covering_deterministic():
    g = neighbour_graph(THREAT, ["good", "fine", "nice", "decent", "ok", "bad", "poor", "weak"])
    for cap in (1, 2, 3, 5, 100):
        part = cluster_partition(g, max_size=cap, seed=0)
        assert set(part) == set(g)
        assert all(len(c) <= cap and x in c for x, c in part.items())
        assert all(part[y] == c for x, c in part.items() for y in c)  # a partition
        assert part == cluster_partition(g, max_size=cap, seed=0)
    big = cluster_partition(g, max_size=100)
    assert big["good"] == ("decent", "fine", "good", "nice", "ok")  # components when they fit
    assert big["bad"] == ("bad", "poor", "weak")
    # weights decide who is made clean first: with room for 3, the heavy word's neighbourhood
    part = cluster_partition(g, max_size=3, weights={"nice": 10})
    assert set(part["nice"]) == {"fine", "nice", "decent"}
    with pytest.raises(ValueError, match="max_size"):
        cluster_partition(g, max_size=0)


def test_seed_changes_ties_only():
    g = {c: set() for c in "abcdef"}
    for a, b in [("a", "b"), ("b", "c"), ("c", "d"), ("d", "e"), ("e", "f")]:
        g[a].add(b)
        g[b].add(a)
    parts = {tuple(sorted(set(cluster_partition(g, max_size=3, seed=s).values())))
             for s in range(12)}
    assert len(parts) > 1  # ties broken differently by different seeds


def test_clean_words_have_q_one_and_crossing_words_q_below_one():
    sets = cluster_sets(THREAT, texts=TEXTS, max_size=3, seed=0)
    part = {w: sets.smoothing_set(w) for w in ["good", "fine", "nice", "decent", "ok"]}
    for w in part:
        nb = neighbour_graph(THREAT, TEXTS and [w]).get(w, set())
        clean = all(sets.smoothing_set(v) == part[w] for v in nb)
        assert (sets.q(w) == 1.0) == clean, w
    assert sets.q("bad") == 0.0  # a multi-word neighbour: q = 0 whatever the sets
    info = sets.cluster_info
    assert 0 < info["edge_share"] < 1 and info["max_cluster"] <= 3
    # every (word, substitute) pair inside a cluster costs nothing: a document of clean words
    # has radius 0 even when every word may be changed
    clean_doc = " ".join(w for w in part if sets.q(w) == 1.0)
    if clean_doc:
        assert sets.radius(clean_doc, None) == 0.0


def test_cluster_stats_by_hand():
    g = {"a": {"b"}, "b": {"a", "c"}, "c": {"b"}}
    part = {"a": ("a", "b"), "b": ("a", "b"), "c": ("c",)}
    st = cluster_stats(g, part, {"a": 3, "b": 1, "c": 1})
    assert (st.n_edges, st.edges_inside, st.edge_share) == (2, 1, 0.5)
    assert st.clean_share == pytest.approx(1 / 3)  # only a: b has c outside, c has b outside
    assert st.clean_token_share == pytest.approx(3 / 5)
    assert st.n_clusters == 1 and st.max_cluster == 2


def test_clustered_radii_not_worse_on_chain_than_published():
    pub = SmoothingSets(THREAT, max_set_size=3)
    clu = cluster_sets(THREAT, texts=TEXTS, max_size=100)
    rt = radius_table(TEXTS, {"published": pub, "clustered": clu})
    assert list(rt["sets"]) == ["published", "clustered"]
    d = rt.set_index("sets")
    assert d.loc["clustered", "mean"] <= d.loc["published", "mean"]
    assert d.loc["clustered", "q1_share_attackable"] >= d.loc["published", "q1_share_attackable"]
    assert radius_table(TEXTS, {"c": clu}, r_share=0.5).shape[0] == 1


# -- soundness: certificates with clustered sets never broken by exhaustive search ---------------
WEIGHTS = {"good": 2.0, "fine": 1.0, "nice": 0.2, "decent": -0.5, "ok": -1.0, "bad": -1.0,
           "poor": -1.5, "weak": -2.0}
VOCAB_THREAT = SynonymTable({"good": ["fine"], "fine": ["nice"], "nice": ["decent"],
                             "decent": ["ok"], "bad": ["poor"], "poor": ["weak"]})


def exact_g(sm, text):
    view = tokenize(text)
    pos = [i for i, w in enumerate(view.words) if sm.sets.has_set(w)]
    opts = [[match_case(view.words[i], t) for t in sm.sets.smoothing_set(view.words[i])]
            for i in pos]
    texts = [view.replace(dict(zip(pos, c))) for c in itertools.product(*opts)]
    return float(np.mean(sm.squash_scores(sm.base.score_pairs(["q"] * len(texts), texts))))


def attacked(sets, text, R):
    view = tokenize(text)
    pos = [i for i, w in enumerate(view.words) if len(sets.attack_set(w)) > 1]
    for r in range(min(R, len(pos)) + 1):
        for chosen in itertools.combinations(pos, r):
            opts = [sets.attack_set(view.words[i])[1:] for i in chosen]
            for c in itertools.product(*opts):
                yield view.replace(dict(zip(chosen, c)))


@pytest.mark.parametrize("cap,R", [(3, 1), (100, None), (2, 2)])
def test_certified_lists_never_broken(cap, R):
    rng = np.random.default_rng(cap)
    pool = ["good", "fine", "nice", "decent", "ok", "bad", "poor", "weak", "movie", "plot"]
    lists = {}
    for q in range(30):
        docs: set = set()
        while len(docs) < 4:
            docs.add(" ".join(rng.choice(pool, int(rng.integers(1, 4)))))
        lists[f"q{q}"] = sorted(docs)
    run = pd.DataFrame([{"qid": q, "query": "q", "docno": f"{q}-{i}", "text": t}
                        for q, d in lists.items() for i, t in enumerate(d)])
    sets = cluster_sets(VOCAB_THREAT, texts=run["text"].tolist(), max_size=cap)
    sm = SmoothedRanker(TermWeightRanker(WEIGHTS), sets, n_samples=800, seed=1)
    cert = certify(sm, run, ks=(1, 2, 3), R=R, progress=False)
    memo: dict = {}

    def g(t):
        if t not in memo:
            memo[t] = exact_g(sm, t)
        return memo[t]

    n_cert = 0
    for row in cert.frame[cert.frame["certified"] & ~cert.frame["trivial"]].itertuples():
        d = cert.docs[cert.docs["qid"] == row.qid].sort_values("rank")
        texts = lists[row.qid]
        top = [int(x.split("-")[1]) for x in d["docno"][: row.K]]
        floor = min(g(texts[i]) for i in top)
        for j in set(range(len(texts))) - set(top):
            assert all(g(t) < floor for t in attacked(sets, texts[j],
                                                      99 if R is None else R)), (row.qid, row.K)
        n_cert += 1
    assert n_cert >= 5


# -- matched noisy training --------------------------------------------------------------------
def test_cluster_noise_stays_in_clusters_and_is_keyed_by_text():
    tf = cluster_noise_transform(VOCAB_THREAT, TEXTS, max_size=3, seed=2)
    sets = tf.sets
    docs = list(TEXTS) + [TEXTS[0]]
    out = tf(docs, 0, None)
    assert docs[:-1] == TEXTS and out[0] == out[-1]
    for src, new in zip(docs, out):
        a, b = tokenize(src).words, tokenize(new).words
        assert len(a) == len(b)
        assert all(y.lower() in sets.smoothing_set(x) for x, y in zip(a, b))
    assert tf.describe()["sets"] == "clustered"


def test_noise_specs():
    assert parse_noise_spec("mask:keep=0.3") == ("mask", {"keep": 0.3})
    assert parse_noise_spec("mask:keep_count=4,mask=drop") == ("mask", {"keep_count": 4,
                                                                        "mask": "drop"})
    assert parse_noise_spec("clusters:max_size=50,fill=1") == ("clusters", {"max_size": 50,
                                                                          "fill": True})
    assert parse_noise_spec("wordnet+glove") == ("synonym", {"threat": "wordnet+glove"})
    spec = "glove?k=20&min_sim=0.8"
    assert parse_noise_spec(f"synonym:{spec}")[1]["threat"] == spec
    for bad, msg in [("mask:", "keep"), ("mask:foo=1", "bad item"), ("mask:keep=x", "bad value"),
                     ("clusters:keep=0.3", "bad item"), ("", "non-empty")]:
        with pytest.raises(ValueError, match=msg):
            parse_noise_spec(bad)
    tf = make_noise_transform("mask:keep=0.5", mask_token="[MASK]", seed=1)
    assert tf(["a b c d"])[0].count("[MASK]") == 2
    tf = make_noise_transform("clusters:max_size=3", texts=TEXTS)
    with pytest.raises(ValueError, match="texts"):
        make_noise_transform("clusters:max_size=3")
    with pytest.raises(ValueError, match="mask_token"):
        make_noise_transform("mask:keep=0.5")


def test_cluster_noise_from_spec_matches_sets_built_directly(monkeypatch):
    import attacks.threat as th

    monkeypatch.setattr(th, "load_threat_model", lambda spec: VOCAB_THREAT)
    tf = make_noise_transform("clusters:threat=whatever,max_size=3", texts=TEXTS, seed=0)
    direct = cluster_sets(VOCAB_THREAT, texts=TEXTS, max_size=3, seed=0)
    assert tf.sets.fingerprint == direct.fingerprint

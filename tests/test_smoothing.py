"""Smoothing sets, radii (exact total variation by enumeration) and the smoothed ranker."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from attacks.text import tokenize
from attacks.threat import SynonymTable, ThreatModel, match_case
from defenses.smoothing import CHUNK, SmoothedRanker, SmoothingSets, noisy_copy
from rankers.lexical import TermWeightRanker

# A tiny vocabulary; the explicit smoothing sets have unequal sizes inside one component.
THREAT = SynonymTable({"good": ["fine", "great"], "fine": ["nice"], "bad": ["poor", "awful"]})
UNEQUAL = {"good": ["fine", "great"], "fine": ["nice"], "great": ["good"],
           "nice": ["fine", "good", "great"], "bad": ["poor"], "poor": ["bad", "awful"]}
WEIGHTS = {"great": 2.0, "good": 1.0, "nice": 0.6, "fine": 0.3, "bad": -1.0, "poor": -1.5,
           "awful": -2.0}


class SimThreat(ThreatModel):
    """Words on a circle; neighbours within an angle; similarity = cosine."""

    name = "circle"

    def __init__(self, angles: dict, max_angle: float):
        self.angles, self.max_angle = angles, max_angle
        self.calls = 0

    def neighbours(self, word):
        self.calls += 1
        w = word.lower()
        if w not in self.angles:
            return []
        a = self.angles[w]
        return sorted(x for x, b in self.angles.items()
                      if x != w and abs(a - b) <= self.max_angle)

    def similarity(self, a, b):
        if a.lower() in self.angles and b.lower() in self.angles:
            return math.cos(self.angles[a.lower()] - self.angles[b.lower()])
        return None

    def describe(self):
        return {"type": "circle", "angles": self.angles, "max": self.max_angle}


class Chain(ThreatModel):
    """w0 - w1 - w2 - ... (a huge component); counts lookups."""

    name = "chain"

    def __init__(self, n=100000):
        self.n, self.calls = n, 0

    def neighbours(self, word):
        self.calls += 1
        i = int(word[1:])
        return [f"w{j}" for j in (i - 1, i + 1) if 0 <= j < self.n]


# -- exact smoothing distributions ------------------------------------------------------------
def smoothing_dist(sets: SmoothingSets, words) -> dict:
    """Exact smoothing distribution of a word sequence (lower-case tuples -> probability)."""
    opts = [sets.smoothing_set(w) for w in words]
    p = 1.0 / np.prod([len(o) for o in opts])
    return {c: p for c in itertools.product(*opts)}


def tv(p: dict, q: dict) -> float:
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def allowed_subs(sets: SmoothingSets, words, R=None):
    """Every word sequence the attacker may produce (at most R positions changed)."""
    n = len(words)
    R = n if R is None else min(R, n)
    for r in range(R + 1):
        for pos in itertools.combinations(range(n), r):
            for repl in itertools.product(*[sets.attack_set(words[i])[1:] for i in pos]):
                new = [w.lower() for w in words]
                for i, x in zip(pos, repl):
                    new[i] = x
                yield new


def published_radius(sets, words):
    """The published code's Delta: divides by |T_w| only."""
    qs = []
    for w in words:
        T = set(sets.smoothing_set(w))
        S = sets.attack_set(w)
        if len(S) == 1:
            qs.append(1.0)
        else:
            qs.append(min(len(T & set(sets.smoothing_set(x))) / len(T) for x in S))
    return 1.0 - float(np.prod(qs))


DOCS = [["good"], ["fine"], ["nice"], ["good", "fine"], ["great", "nice", "movie"],
        ["fine", "good", "nice"], ["bad", "good"], ["poor", "fine", "plot"], ["awful", "bad"]]


@pytest.mark.parametrize("sets", [
    SmoothingSets(THREAT, sets=UNEQUAL),
    SmoothingSets(THREAT),
    SmoothingSets(SimThreat({"a": 0.0, "b": 0.2, "c": 0.4, "d": 0.6, "e": 0.8, "f": 1.0,
                             "x": 3.0}, 0.45), max_set_size=3),
], ids=["explicit-unequal", "components", "similarity-top-k"])
def test_tv_never_exceeds_radius(sets):
    docs = DOCS if sets.threat is THREAT else [["a"], ["c"], ["a", "b"], ["b", "d", "x"],
                                               ["f", "e", "c"], ["x"]]
    checked = 0
    for words in docs:
        p = smoothing_dist(sets, words)
        for R in (None, 0, 1, 2):
            delta = sets.radius(" ".join(words), R)
            for new in allowed_subs(sets, words, R):
                assert tv(p, smoothing_dist(sets, new)) <= delta + 1e-12, (words, new, R)
                checked += 1
    assert checked > 50


def test_similarity_top_k_sets_differ_inside_component():
    sets = SmoothingSets(SimThreat({"a": 0.0, "b": 0.2, "c": 0.4, "d": 0.6, "e": 0.8}, 0.25),
                         max_set_size=3)
    assert sets.smoothing_set("a") == ("a", "b", "c")
    assert sets.smoothing_set("c") == ("b", "c", "d")
    assert sets.smoothing_set("e") == ("c", "d", "e")
    # q_c: T_c vs T_b = {a,b,c}: 2/3
    assert sets.q("c") == pytest.approx(2 / 3)
    assert 0 < sets.radius("a c e") < 1


def test_regression_max_denominator():
    """Unequal set sizes: dividing by |T_w| only underestimates the TV; the max does not."""
    sets = SmoothingSets(SynonymTable({"good": ["fine"]}),
                         sets={"good": ["fine"], "fine": ["good", "great", "nice"]})
    assert sets.smoothing_set("good") == ("fine", "good")
    assert len(sets.smoothing_set("fine")) == 4
    exact = tv(smoothing_dist(sets, ["good"]), smoothing_dist(sets, ["fine"]))
    assert exact == pytest.approx(0.5)
    assert published_radius(sets, ["good"]) == pytest.approx(0.0)   # violated: 0 < 0.5
    assert published_radius(sets, ["good"]) < exact - 0.4
    assert sets.radius("good") == pytest.approx(exact)             # tight for one position
    # two positions: still valid
    p = smoothing_dist(sets, ["good", "good"])
    worst = max(tv(p, smoothing_dist(sets, n)) for n in allowed_subs(sets, ["good", "good"]))
    assert worst <= sets.radius("good good") + 1e-12
    assert published_radius(sets, ["good", "good"]) < worst
    # and on the unequal vocabulary of the other tests the published formula fails somewhere
    sets = SmoothingSets(THREAT, sets=UNEQUAL)
    bad = [w for w in DOCS if any(
        tv(smoothing_dist(sets, w), smoothing_dist(sets, n)) > published_radius(sets, w) + 1e-9
        for n in allowed_subs(sets, w))]
    assert bad


def test_rules_trivial_and_non_attackable():
    sets = SmoothingSets(THREAT, sets=UNEQUAL)
    assert sets.smoothing_set("movie") == ("movie",) and sets.q("movie") == 1.0
    assert sets.smoothing_set("awful") == ("awful",) and sets.q("awful") == 0.0  # attackable
    assert sets.radius("the movie plot") == 0.0
    assert sets.radius("awful movie") == 1.0
    assert sets.radius("awful movie", R=0) == 0.0
    # multi-word neighbours change word positions: trivial bound, never in smoothing sets
    class MultiWord(ThreatModel):
        def neighbours(self, word):
            return {"tasty": ["ice cream", "yummy"], "yummy": ["tasty"]}.get(word.lower(), [])

    mw = SmoothingSets(MultiWord())
    assert mw.q("tasty") == 0.0
    assert mw.smoothing_set("tasty") == ("tasty", "yummy")


def test_radius_monotone_in_R_and_formula():
    sets = SmoothingSets(THREAT, sets=UNEQUAL)
    text = "Good fine, nice! great movie bad"
    qs = sets.q_values(text)
    assert qs.shape == (6,)
    prev = -1.0
    for R in range(0, 8):
        d = sets.radius(text, R)
        assert d >= prev - 1e-15
        assert d == pytest.approx(1 - np.prod(np.sort(qs)[:R]))
        prev = d
    assert sets.radius(text) == pytest.approx(1 - np.prod(qs))
    with pytest.raises(ValueError):
        sets.radius(text, R=-1)


def test_components_shared_and_case_insensitive():
    sets = SmoothingSets(THREAT)
    assert sets.smoothing_set("Good") == ("fine", "good", "great", "nice")
    assert sets.smoothing_set("NICE") == sets.smoothing_set("good")
    assert sets.q("good") == 1.0  # equal sets in a component: no radius
    assert sets.attack_set("Good") == ("good", "fine", "great")


def test_large_component_is_lazy_bfs_alphabetical():
    th = Chain()
    sets = SmoothingSets(th, max_set_size=4)
    got = sets.smoothing_set("w10")
    # BFS distance then alphabetical: w10 (0), w11, w9 (1), then distance 2: w12 < w8
    assert got == ("w10", "w11", "w12", "w9")
    assert th.calls < 20
    assert sets.q("w10") < 1.0  # its neighbours' sets differ


def test_threshold():
    th = SimThreat({"a": 0.0, "b": 0.3, "c": 0.35, "z": 2.0, "y": 2.5}, 0.6)
    sets = SmoothingSets(th, threshold=math.cos(0.2))
    assert sets.smoothing_set("b") == ("b", "c")
    assert sets.smoothing_set("a") == ("a",)          # attackable (b, c) but no edge above it
    assert sets.q("a") == 0.0
    with pytest.raises(ValueError, match="similarity"):
        SmoothingSets(SynonymTable({"x": ["y"]}), threshold=0.5).smoothing_set("x")


# -- smoothed ranker --------------------------------------------------------------------------
def make(n=200, seed=0, **kw):
    return SmoothedRanker(TermWeightRanker(WEIGHTS, query_weight=2.0),
                          SmoothingSets(THREAT, sets=UNEQUAL), n_samples=n, seed=seed, **kw)


def exact_g(sm: SmoothedRanker, query: str, text: str) -> float:
    view = tokenize(text)
    pos = [i for i, w in enumerate(view.words) if sm.sets.has_set(w)]
    opts = [[match_case(view.words[i], t) for t in sm.sets.smoothing_set(view.words[i])]
            for i in pos]
    texts = [view.replace(dict(zip(pos, c))) for c in itertools.product(*opts)]
    return float(sm.squash_scores(sm.base.score_pairs([query] * len(texts), texts)).mean())


def test_g_matches_exact_enumeration():
    sm = make(n=4000)
    q = "movie plot"
    for d in ["good movie", "Fine nice plot", "poor bad", "the plot"]:
        g = sm.score_pairs([q], [d])[0]
        assert abs(g - exact_g(sm, q, d)) < 3 * math.sqrt(math.log(2 / 1e-4) / (2 * 4000))
    assert sm.score_pairs([q], ["the plot"])[0] == pytest.approx(exact_g(sm, q, "the plot"))


def test_determinism_and_batch_independence():
    q1, q2 = "movie", "plot"
    d1, d2 = "good fine movie nice", "Great poor plot bad"
    a = make(seed=3).score_pairs([q1, q2, q1], [d1, d2, d2])
    b = make(seed=3).score_pairs([q2], [d2])
    c = make(seed=3).score_pairs([q1, q1], [d2, d1])
    assert a[1] == b[0] and a[2] == c[0] and a[0] == c[1]
    assert not np.array_equal(make(seed=4).score_pairs([q1], [d1]), a[:1])
    sm = make(seed=3)
    full = sm.sample_scores(q1, d1, 600)
    assert np.array_equal(sm.sample_scores(q1, d1, 40, start=CHUNK - 10),
                          full[CHUNK - 10:CHUNK + 30])
    assert np.array_equal(make(seed=3).sample_scores(q1, d1, 3, start=597), full[597:])
    assert np.array_equal(make(seed=3).draw_indices(q1, d1, 10, start=300),
                          sm.draw_indices(q1, d1, 310)[300:])
    assert full[:200].mean() == pytest.approx(make(seed=3).score_pairs([q1], [d1])[0])


def test_dedup_batches_and_counter():
    sm = make(n=500, batch_size=7)
    base = sm.base
    sm.score_pairs(["movie"], ["good movie"])      # 3 distinct perturbed texts
    assert sm.n_forward == 3 and base.calls == 1
    sm.score_pairs(["movie"] * 2, ["good fine", "the plot"])  # 3*2 + 1
    assert sm.n_forward == 3 + 7
    assert base.calls == 2


def test_case_preserved_and_punctuation_kept():
    sm = make()
    texts = sm.sample_texts("q", "Good, FINE movie!", 50)
    assert all(t.endswith(" movie!") and ", " in t for t in texts)
    firsts = {t.split(",")[0] for t in texts}
    assert firsts <= {"Good", "Fine", "Great"} and len(firsts) > 1
    assert {t.split(", ")[1].split()[0] for t in texts} <= {"FINE", "NICE"}


def test_squash_name_describe_and_errors():
    sm = make(n=10, seed=5, temperature=0.05)
    for part in ("term-weight", THREAT.fingerprint, sm.sets.fingerprint, "N=10", "seed=5", "sigmoid", "T=0.05"):
        assert part in sm.name
    d = sm.describe()
    assert d["n_samples"] == 10 and d["seed"] == 5 and d["temperature"] == 0.05
    assert d["threat_fingerprint"] == THREAT.fingerprint and d["squash"] == "sigmoid"
    assert make(squash="identity-clip").squash_scores(np.array([-1, .3, 2])).tolist() == [0, .3, 1]
    assert sm.squash_scores(np.array([0.0]))[0] == 0.5
    with pytest.raises(ValueError, match="identity-clip"):
        make(squash="tanh")
    with pytest.raises(ValueError):
        make(n=0)
    with pytest.raises(TypeError):
        SmoothedRanker("not a ranker", THREAT)


def test_transform_ranks_one_based():
    sm = make(n=50)
    run = pd.DataFrame({"qid": ["1"] * 3, "query": "movie", "docno": ["a", "b", "c"],
                        "text": ["bad movie", "great movie", "the plot"]})
    out = sm.transform(run)
    assert out["rank"].tolist() == [1, 2, 3] and out["docno"].iloc[0] == "b"
    assert out["score"].between(0, 1).all()


def test_noisy_copy():
    sets = SmoothingSets(THREAT, sets=UNEQUAL)
    texts = ["Good movie, fine plot.", "the end"]
    a = noisy_copy(texts, sets, seed=1, draws=3)
    assert len(a) == 6 and a == noisy_copy(texts, sets, seed=1, draws=3)
    assert a[3:] == ["the end"] * 3
    for t in a[:3]:
        w = tokenize(t).words
        assert w[0] in ("Good", "Fine", "Great") and w[1] == "movie" and t.endswith(" plot.")
        assert w[2] in ("fine", "nice")
    many = noisy_copy(["good"] * 1, THREAT, seed=0, draws=200)
    assert set(many) == {"good", "fine", "great", "nice"}
    assert noisy_copy(texts, sets, seed=2, draws=3) != a

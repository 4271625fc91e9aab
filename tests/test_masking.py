"""Masking smoothing: the bound by exact enumeration, exhaustive soundness, coverage, draws."""
from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from attacks.text import tokenize
from defenses.certify import certify, hoeffding_eps, radius_curve
from defenses.masking import (MaskedSmoothedRanker, kept_count, mask_noise_transform,
                              mask_radius, mask_radius_curve)
from defenses.smoothing import SmoothedRanker
from rankers.lexical import TermWeightRanker

WEIGHTS = {"great": 3.0, "good": 1.0, "fine": 0.5, "bad": -1.0, "poor": -2.0}
QUERY = "movie plot"
VOCAB = ["great", "poor", "movie", "the"]  # substitutes for exhaustive attacks


def make(n=1000, seed=0, keep_count=2, mask="token", temperature=1.0, **kw):
    return MaskedSmoothedRanker(TermWeightRanker(WEIGHTS, query_weight=1.0), keep_count=keep_count,
                                mask=mask, mask_token="[MASK]", n_samples=n, seed=seed,
                                temperature=temperature, **kw)


def substitutions(text, r, vocab=VOCAB):
    """Every text with exactly ``r`` word positions replaced by a different vocabulary word."""
    view = tokenize(text)
    n = len(view)
    for pos in itertools.combinations(range(n), r):
        opts = [[w for w in vocab if w != view.words[i].lower()] for i in pos]
        for c in itertools.product(*opts):
            yield view.replace(dict(zip(pos, c)))


# -- the bound ---------------------------------------------------------------------------------
def test_radius_formula_monotone_and_edges():
    for n in range(1, 13):
        for k in range(1, n + 1):
            c = mask_radius_curve(n, k)
            want = [1 - math.comb(n - r, k) / math.comb(n, k) for r in range(n + 1)]
            assert c == pytest.approx(want, abs=1e-12)
            assert np.all(np.diff(c) >= -1e-15) and c[0] == 0
            assert np.all(c[n - k + 1:] == 1.0)
            assert mask_radius(n, k, None) == (1.0 if k >= 1 else 0.0)
    assert mask_radius(142, 4, 7) == pytest.approx(1 - math.comb(135, 4) / math.comb(142, 4))
    assert mask_radius(10, 3, 99) == 1.0
    assert kept_count(10, 0.3) == 3 and kept_count(3, 0.01) == 1 and kept_count(0, 0.5) == 0
    assert kept_count(5, keep_count=9) == 5
    with pytest.raises(ValueError, match="non-negative"):
        mask_radius(5, 2, -1)


@pytest.mark.parametrize("mask", ["token", "drop"])
@pytest.mark.parametrize("text,k", [("good movie bad plot", 1), ("the good, fine film.", 2),
                                    ("poor plot good great the", 2), ("bad bad movie", 2)])
def test_bound_by_exact_enumeration(mask, text, k):
    """Exact smoothed scores over all maskings: no substitution of r words (every choice from a
    tiny vocabulary) moves the score by more than Delta(n, k, r)."""
    sm = make(keep_count=k, mask=mask, temperature=2.0)
    g0 = sm.exact_score(QUERY, text)
    n = len(tokenize(text))
    worst = np.zeros(n + 1)
    for r in range(n + 1):
        for t in substitutions(text, r):
            worst[r] = max(worst[r], abs(sm.exact_score(QUERY, t) - g0))
        assert worst[r] <= sm.radius(text, r) + 1e-12, (r, worst[r], sm.radius(text, r))
    assert worst[1] > 0  # substitutions do move the score: the check is not vacuous


def test_bound_is_tight_for_an_indicator_score():
    """Score 1 iff the kept words contain 'great': substituting r words by 'great' raises g by
    exactly 1 - C(n-r, k)/C(n, k) (the bound cannot be improved)."""
    sm = MaskedSmoothedRanker(TermWeightRanker({"great": 1.0}, query_weight=0.0), keep_count=2,
                              mask="drop", squash="identity-clip", n_samples=10)
    text = "a b c d e f"
    assert sm.exact_score(QUERY, text) == 0.0
    for r in range(0, 7):
        t = " ".join(["great"] * r + list("abcdef")[r:])
        assert sm.exact_score(QUERY, t) == pytest.approx(mask_radius(6, 2, r), abs=1e-12)


def test_exact_score_matches_sampling_mean():
    sm = make(n=4000, keep_count=2)
    text = "great movie poor plot the film"
    g = sm.score_pairs([QUERY], [text])[0]
    assert g == pytest.approx(sm.exact_score(QUERY, text), abs=4 * hoeffding_eps(4000, 0.01))


# -- draws -------------------------------------------------------------------------------------
def test_draws_uniform_over_subsets_and_keep_exactly_k():
    sm = make(n=10, keep_count=2, mask="token")
    texts = sm.sample_texts(QUERY, "w0 w1 w2 w3", 6000)
    kept = Counter(tuple(w for w in t.split() if w != "[MASK]") for t in texts)
    assert set(kept) == {c for c in itertools.combinations(["w0", "w1", "w2", "w3"], 2)}
    freq = np.array(list(kept.values())) / 6000
    assert np.all(np.abs(freq - 1 / 6) < 0.03)
    drop = make(keep_count=3, mask="drop").sample_texts(QUERY, "Alpha, beta gamma. Delta!", 50)
    assert all(len(tokenize(t)) == 3 for t in drop) and len(set(drop)) > 1


def test_determinism_and_batch_independence():
    a, b = make(n=300, seed=3), make(n=300, seed=3)
    docs = ["great movie poor plot", "good bad fine the movie", "the plot"]
    s1 = a.sample_scores_batch([QUERY] * 3, docs, [300] * 3)
    s2 = [b.sample_scores(QUERY, d, 300) for d in reversed(docs)][::-1]
    for x, y in zip(s1, s2):
        assert np.array_equal(x, y)
    part = a.sample_scores(QUERY, docs[0], 100, start=150)
    assert np.array_equal(part, s1[0][150:250])
    c = make(n=300, seed=4)
    assert not np.array_equal(c.sample_scores(QUERY, docs[1], 300), s1[1])
    assert np.array_equal(a.score_pairs([QUERY], [docs[0]]), b.score_pairs([QUERY], [docs[0]]))


def test_short_documents_and_keep_share():
    sm = MaskedSmoothedRanker(TermWeightRanker(WEIGHTS), keep=0.5, mask="drop", n_samples=20)
    assert sm.k_of(10) == 5 and sm.k_of(1) == 1
    assert sm.radius("great", 1) == 1.0   # one word, kept always: any change shows
    assert sm.radius("...", None) == 0.0  # no words: nothing to change
    assert sm.sample_texts(QUERY, "great", 3) == ["great"] * 3
    assert sm.score_pairs([QUERY], ["..."])[0] == pytest.approx(
        sm.squash_scores(sm.base.score_pairs([QUERY], ["..."]))[0])


def test_mask_token_from_tokenizer_and_errors(tiny_cross_path):
    from rankers.encoders import CrossEncoder

    ce = CrossEncoder(str(tiny_cross_path))
    sm = MaskedSmoothedRanker(ce, keep=0.5, n_samples=8)
    assert sm.mask_token == "[MASK]" and "token=[MASK]" in sm.name
    assert np.isfinite(sm.score_pairs(["bees"], ["bees make honey from nectar"])).all()
    assert sm.describe()["smoothing"] == "mask"
    with pytest.raises(ValueError, match="mask_token"):
        MaskedSmoothedRanker(TermWeightRanker(WEIGHTS), keep=0.5)
    with pytest.raises(ValueError, match="keep"):
        MaskedSmoothedRanker(TermWeightRanker(WEIGHTS), keep=0.0, mask="drop")
    with pytest.raises(ValueError, match="keep_count"):
        MaskedSmoothedRanker(TermWeightRanker(WEIGHTS), keep_count=0, mask="drop")
    with pytest.raises(ValueError, match="unknown mask"):
        MaskedSmoothedRanker(TermWeightRanker(WEIGHTS), mask="blank")


# -- certification: exhaustive soundness and coverage ------------------------------------------
def lists(n_lists=24, seed=0):
    """Lists of 3-5 documents of 4-6 words; each document's share of 'great' is drawn from
    {0.9, 0.5, 0.2, 0}, so some lists have clear leaders (certifiable) and some do not."""
    rng = np.random.default_rng(seed)
    rest = ["good", "fine", "bad", "poor", "movie", "the", "plot"]
    out = {}
    for q in range(n_lists):
        docs: set = set()
        size = int(rng.integers(3, 6))
        while len(docs) < size:
            n, share = int(rng.integers(4, 7)), rng.choice([0.9, 0.5, 0.2, 0.0])
            docs.add(" ".join("great" if rng.random() < share else str(rng.choice(rest))
                              for _ in range(n)))
        out[f"q{q}"] = sorted(docs)
    return out


LISTS = lists(40)


def run_frame(lists_):
    return pd.DataFrame([{"qid": q, "query": QUERY, "docno": f"{q}-{i}", "text": t}
                         for q, docs in lists_.items() for i, t in enumerate(docs)])


class ExactMask:
    def __init__(self, sm):
        self.sm, self.memo = sm, {}

    def g(self, text):
        if text not in self.memo:
            self.memo[text] = self.sm.exact_score(QUERY, text)
        return self.memo[text]

    def broken(self, texts, top, r):
        """Some substitution of at most r words (tiny vocabulary; ``r`` a number or a function of
        the document's word count) of an outside document reaches the exact smoothed score of a
        top-K document."""
        floor = min(self.g(texts[i]) for i in top)
        for j in set(range(len(texts))) - set(top):
            n = len(tokenize(texts[j]))
            rj = r(n) if callable(r) else r
            for rr in range(0, min(rj, n) + 1):
                if any(self.g(t) >= floor for t in substitutions(texts[j], rr)):
                    return True
        return False


@pytest.mark.parametrize("mode,bound,R,r_share", [("rigorous", "hoeffding", 1, None),
                                                  ("rigorous", "bernstein", None, 0.25),
                                                  ("adaptive", "hoeffding", 1, None),
                                                  ("adaptive", "bernstein", None, 0.2)])
def test_certified_lists_never_broken_by_exhaustive_search(mode, bound, R, r_share):
    sm = make(n=1000, keep_count=1, temperature=0.5, seed=1)
    ex = ExactMask(sm)
    cert = certify(sm, run_frame(LISTS), ks=(1, 2, 3), mode=mode, bound=bound, R=R,
                   r_share=r_share, n0=32 if mode == "adaptive" else None, progress=False)
    assert cert.params["smoothing"] == "mask" and cert.params["keep_count"] == 1
    n_cert = n_delta = n_radius = 0
    for row in cert.frame[~cert.frame["trivial"]].itertuples():
        d = cert.docs[cert.docs["qid"] == row.qid].sort_values("rank")
        texts = LISTS[row.qid]
        top = [int(x.split("-")[1]) for x in d["docno"][: row.K]]
        if row.certified:
            budget = (lambda n: math.floor(r_share * n + 1e-9)) if r_share is not None else R
            assert not ex.broken(texts, top, budget), (row.qid, row.K)
            n_cert += 1
            n_delta += row.delta_max > 0
            if r_share is None:
                assert row.radius_words >= R
        elif r_share is None and mode == "rigorous":
            assert row.radius_words < R
        if row.radius_words >= 0:  # the certified radius itself is never broken
            assert not ex.broken(texts, top, int(row.radius_words))
            n_radius += 1
    print(mode, bound, R, r_share, n_cert, n_delta, n_radius)
    assert n_cert >= 5 and n_delta >= 5 and n_radius >= 20


def test_exhaustive_search_has_teeth():
    """Ignoring the radius (exact scores separated but Delta not subtracted) gets broken."""
    sm = make(keep_count=1, seed=1)
    ex = ExactMask(sm)
    wrong = 0
    for texts in LISTS.values():
        g = np.array([ex.g(t) for t in texts])
        order = np.argsort(-g, kind="stable")
        if g[order[0]] > g[order[1]] and ex.broken(texts, [order[0]], 1):
            wrong += 1
    assert wrong >= 3


@pytest.mark.parametrize("bound", ["hoeffding", "bernstein"])
def test_coverage(bound):
    from defenses.certify import bernstein_eps

    texts = ["great poor movie", "good bad the plot", "poor poor great fine", "the movie"]
    truth = np.array([make(keep_count=1, temperature=0.5).exact_score(QUERY, t) for t in texts])
    n, alpha, seeds, m = 30, 0.2, 300, len(texts)
    hits = simultaneous = 0
    for seed in range(seeds):
        sm = make(n=n, keep_count=1, temperature=0.5, seed=seed)
        S = np.stack(sm.sample_scores_batch([QUERY] * m, texts, [n] * m))
        g, var = S.mean(1), S.var(1, ddof=1)
        e = (hoeffding_eps(n, alpha / m) if bound == "hoeffding"
             else bernstein_eps(n, var, alpha / m))
        ok = np.abs(g - truth) <= e
        hits += ok.mean()
        simultaneous += ok.all()
    assert simultaneous / seeds >= 1 - alpha and hits / seeds >= 1 - alpha


def test_certified_radius_columns_and_curve():
    sm = make(n=1000, keep_count=1, seed=1)
    cert = certify(sm, run_frame(LISTS), ks=(1, 2), progress=False, R=1)
    f = cert.frame
    assert {"radius_words", "radius_share", "r_share"} <= set(f.columns)
    assert f.loc[f["trivial"], "radius_words"].isna().all()
    nt = f[~f["trivial"]]
    assert ((nt["radius_words"] >= 0) == (nt["radius_share"] >= 0)).all()
    assert (nt["certified"] == (nt["radius_words"] >= 1)).all()
    assert radius_curve(sm, "a b c d") == pytest.approx(mask_radius_curve(4, 1))
    # a rigorous certificate at share rho holds iff rho is below the certified share
    for rho in (0.0, 0.2, 0.25, 0.4):
        c2 = certify(sm, run_frame(LISTS), ks=(1, 2), progress=False, r_share=rho)
        nt2 = c2.frame[~c2.frame["trivial"]]
        assert (nt2["certified"] == (nt2["radius_share"] > rho)).all(), rho
        assert (nt2["radius_share"] == nt["radius_share"]).all()  # same draws, same intervals
    with pytest.raises(ValueError, match="not both"):
        certify(sm, run_frame(LISTS), R=1, r_share=0.1, progress=False)
    with pytest.raises(ValueError, match="r_share"):
        certify(sm, run_frame(LISTS), r_share=1.5, progress=False)


# -- matched noisy training --------------------------------------------------------------------
def test_mask_noise_transform():
    tf = mask_noise_transform(keep=0.5, mask="token", mask_token="[MASK]", seed=1)
    docs = ["alpha beta gamma delta", "one two three four five six", "alpha beta gamma delta"]
    before = list(docs)
    out = tf(docs, 0, None)
    assert docs == before and len(out) == 3
    assert out[0] == out[2]  # keyed by text
    assert [sum(w != "[MASK]" for w in t.split()) for t in out] == [2, 3, 2]
    assert tf(docs, 5, None) == out  # same copy every epoch by default
    fresh = mask_noise_transform(keep=0.5, mask_token="[MASK]", seed=1, fresh_per_epoch=True)
    assert [fresh(docs, e)[1] for e in range(6)] != [fresh(docs, 0)[1]] * 6
    drop = mask_noise_transform(keep_count=1, mask="drop")(docs)
    assert all(len(t.split()) == 1 for t in drop)
    assert tf.describe()["noise"] == "mask"
    with pytest.raises(ValueError, match="mask_token"):
        mask_noise_transform(keep=0.3)
    with pytest.raises(TypeError):
        tf("one string")


def test_masked_ranker_is_a_smoothed_ranker_for_certify():
    assert isinstance(make(), SmoothedRanker)
    assert make().sets is None and make().threat is None

"""Certification: golden constants, exhaustive soundness on tiny vocabularies, coverage, R."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from attacks.text import tokenize
from attacks.threat import SynonymTable, match_case
from defenses.certify import (Certificate, bernstein_eps, certify, checkpoints, hoeffding_eps)
from defenses.smoothing import SmoothedRanker, SmoothingSets
from rankers.base import RankerError
from rankers.lexical import TermWeightRanker

THREAT = SynonymTable({"good": ["fine", "great"], "fine": ["nice"], "bad": ["poor"],
                       "poor": ["weak"]})
# explicit smoothing sets of unequal sizes: radii are non-trivial (q between 1/3 and 2/3)
UNEQUAL = {"good": ["fine", "great"], "fine": ["nice"], "great": ["good"],
           "nice": ["fine", "good", "great"], "bad": ["poor"], "poor": ["bad", "weak"],
           "weak": ["poor"]}
WEIGHTS = {"great": 2.0, "good": 1.0, "nice": 0.6, "fine": 0.3, "bad": -1.0, "poor": -1.5,
           "weak": -2.0}
QUERY = "movie plot"


def make(n=1000, seed=0, sets=None, **kw):
    return SmoothedRanker(TermWeightRanker(WEIGHTS, query_weight=2.0),
                          sets or SmoothingSets(THREAT, sets=UNEQUAL), n_samples=n, seed=seed,
                          **kw)


def run_frame(lists: dict) -> pd.DataFrame:
    rows = [{"qid": q, "query": QUERY, "docno": f"{q}-{i}", "text": t}
            for q, docs in lists.items() for i, t in enumerate(docs)]
    return pd.DataFrame(rows)


# -- exact smoothed scores and exhaustive attacks ----------------------------------------------
class Exact:
    """Exact g by enumerating every smoothing draw; exhaustive attacks (memoised)."""

    def __init__(self, sm: SmoothedRanker):
        self.sm, self.g_memo, self.f_memo = sm, {}, {}

    def g(self, text: str) -> float:
        if text not in self.g_memo:
            sets, view = self.sm.sets, tokenize(text)
            pos = [i for i, w in enumerate(view.words) if sets.has_set(w)]
            opts = [[match_case(view.words[i], t) for t in sets.smoothing_set(view.words[i])]
                    for i in pos]
            texts = [view.replace(dict(zip(pos, c))) for c in itertools.product(*opts)]
            new = [t for t in set(texts) if t not in self.f_memo]
            if new:
                f = self.sm.squash_scores(self.sm.base.score_pairs([QUERY] * len(new), new))
                self.f_memo.update(zip(new, f))
            self.g_memo[text] = float(np.mean([self.f_memo[t] for t in texts]))
        return self.g_memo[text]

    def attacked(self, text: str, R=None):
        """Every text the attacker may produce from ``text`` (at most R words changed)."""
        sets, view = self.sm.sets, tokenize(text)
        pos = [i for i, w in enumerate(view.words) if len(sets.attack_set(w)) > 1]
        R = len(pos) if R is None else min(R, len(pos))
        for r in range(R + 1):
            for chosen in itertools.combinations(pos, r):
                opts = [[match_case(view.words[i], x) for x in sets.attack_set(view.words[i])[1:]]
                        for i in chosen]
                for c in itertools.product(*opts):
                    yield view.replace(dict(zip(chosen, c)))

    def max_attacked(self, text: str, R=None) -> float:
        return max(self.g(t) for t in self.attacked(text, R))

    def broken(self, texts, top_idx, R=None) -> bool:
        """True when some allowed substitution of an outside document enters the top K (exact)."""
        out = [i for i in range(len(texts)) if i not in set(top_idx)]
        if not out:
            return False
        floor = min(self.g(texts[i]) for i in top_idx)
        return any(self.max_attacked(texts[j], R) >= floor for j in out)


def random_lists(n_lists=60, seed=0):
    """Lists of 3-6 short documents with 0-2 attackable words (capitalised variants too)."""
    rng = np.random.default_rng(seed)
    attackable = ["good", "fine", "great", "nice", "bad", "poor", "weak", "Good", "GREAT"]
    filler = ["movie", "plot", "the", "acting", "film", "Movie"]
    lists = {}
    for q in range(n_lists):
        docs: set[str] = set()
        size = rng.integers(3, 7)
        while len(docs) < size:
            words = list(rng.choice(attackable, rng.choice(3, p=[.35, .45, .2]))) + list(
                rng.choice(filler, rng.integers(1, 4)))
            rng.shuffle(words)
            docs.add(" ".join(words))
        lists[f"q{q}"] = sorted(docs)
    return lists


LISTS = random_lists()
KS = (1, 2, 3, 4, 5)


@pytest.fixture(scope="module")
def exact():
    return Exact(make())


# -- golden constants --------------------------------------------------------------------------
def test_golden_constants():
    # CertDR's term: 2 * sqrt(ln(2/alpha) / (2N)) at N = 1000, alpha = 0.05
    assert 2 * hoeffding_eps(1000, 0.05) == pytest.approx(0.0859, abs=5e-5)
    # the spec's 0.1233 = 2 * sqrt(ln(m/alpha) / (2N)), m = 100: one-sided Hoeffding at alpha/m
    assert 2 * hoeffding_eps(1000, 0.05 / 100, two_sided=False) == pytest.approx(0.1233, abs=5e-5)
    # rigorous uses two-sided intervals at alpha/m (sides are chosen from the data):
    # sqrt(ln(2 * 100 / 0.05) / 2000) = 0.0644, i.e. 0.1288 for the two intervals of a pair
    assert hoeffding_eps(1000, 0.05 / 100) == pytest.approx(math.sqrt(math.log(4000) / 2000))
    assert 2 * hoeffding_eps(1000, 0.05 / 100) == pytest.approx(0.1288, abs=5e-5)


def test_rigorous_and_certdr_margins_use_those_terms():
    sm = make(n=1000)
    docs = [f"movie plot film {w}" for w in ("movie", "the", "acting", "plot")] + ["the"]
    cert = certify(sm, run_frame({"q": docs}), ks=(1,), mode="certdr", progress=False)
    g = np.sort(cert.docs["g"].to_numpy())[::-1]
    assert cert.frame["margin"].iloc[0] == pytest.approx(g[0] - g[1] - 0.0 - 0.08589, abs=1e-4)
    rig = certify(sm, run_frame({"q": docs}), ks=(1,), progress=False)
    e = hoeffding_eps(1000, 0.05 / 5)
    lo = max(g[0] - e, 0)
    hi = min(g[1:].max() + e, 1)
    assert rig.frame["margin"].iloc[0] == pytest.approx(lo - hi)


def test_bounds_basic():
    assert np.isinf(bernstein_eps(1, 0.1, 0.05))
    assert bernstein_eps(10000, 0.0, 0.05) < hoeffding_eps(10000, 0.05)
    assert checkpoints(32, 1000) == [32, 64, 128, 256, 512, 1000]
    assert checkpoints(50, 50) == [50]


# -- soundness by exhaustive search ------------------------------------------------------------
@pytest.mark.parametrize("mode,bound,R,n0,seed", [("rigorous", "hoeffding", None, None, 1),
                                                  ("rigorous", "bernstein", 1, None, 1),
                                                  ("adaptive", "hoeffding", None, 16, 1),
                                                  ("adaptive", "bernstein", 1, 16, 1),
                                                  ("adaptive", "hoeffding", 2, 16, 1),
                                                  ("adaptive", "hoeffding", 1, 4, 2),
                                                  ("rigorous", "kl", None, None, 1),
                                                  ("adaptive", "kl", 1, 16, 1)])
def test_certified_lists_never_broken(exact, mode, bound, R, n0, seed):
    """Every certified (qid, K): no allowed substitution (exhaustive, with budget R) of any outside
    document reaches the exact smoothed score of any top-K document. Outside documents are scored
    independently, so checking each one's best attack covers attacks on several at once."""
    sm = make(n=1000, seed=seed)
    cert = certify(sm, run_frame(LISTS), ks=KS, mode=mode, bound=bound, R=R, n0=n0,
                   progress=False)
    n_cert = n_delta = 0
    for (qid, K), row in cert.frame.set_index(["qid", "K"]).iterrows():
        if not row["certified"] or row["trivial"]:
            continue
        d = cert.docs[cert.docs["qid"] == qid]
        texts = LISTS[qid]
        top = [texts.index(t) for t in  # texts of the K best by the smoothed ranker's ranking
               [LISTS[qid][int(x.split("-")[1])] for x in d.sort_values("rank")["docno"][:K]]]
        assert not exact.broken(texts, top, R), (qid, K, mode)
        n_cert += 1
        n_delta += row["delta_max"] > 0
    assert n_cert >= 15 and n_delta >= 5  # the test is not vacuous: radii matter


def test_exhaustive_search_has_teeth(exact):
    """Uncertified lists do get broken, and ignoring the radius would certify broken lists."""
    broken_uncertified = ignoring_delta_wrong = 0
    for qid, texts in LISTS.items():
        g = np.array([exact.g(t) for t in texts])
        order = np.argsort(-g, kind="stable")
        for K in KS:
            if K >= len(texts):
                continue
            top = list(order[:K])
            if g[order[K - 1]] > g[order[K]] and exact.broken(texts, top):
                ignoring_delta_wrong += 1
            broken_uncertified += exact.broken(texts, top)
    assert ignoring_delta_wrong >= 5 and broken_uncertified >= 5


def test_certdr_condition_with_exact_scores_never_broken(exact):
    sm = exact.sm
    checked = 0
    for R in (None, 1):
        for qid, texts in LISTS.items():
            g = np.array([exact.g(t) for t in texts])
            delta = np.array([sm.radius(t, R) for t in texts])
            order = np.argsort(-g, kind="stable")
            for K in KS:
                if K >= len(texts):
                    continue
                if g[order[K - 1]] - g[order[K]] - delta[order[K:]].max() > 0:
                    assert not exact.broken(texts, list(order[:K]), R)
                    checked += 1
    assert checked >= 20


# -- Monte Carlo coverage ----------------------------------------------------------------------
@pytest.mark.parametrize("bound", ["hoeffding", "bernstein"])
def test_coverage(bound):
    """Over repeated seeds, intervals contain the exact g at rate >= 1 - alpha (per document and
    simultaneously for all documents at alpha/m); a deliberately too narrow bound fails."""
    sm0 = make(temperature=0.3)  # documents whose draws spread over [0, 1]: high variance
    ex = Exact(sm0)
    texts = ["good bad", "fine poor the", "nice weak", "great bad movie", "GOOD weak poor"]
    truth = np.array([ex.g(t) for t in texts])
    n, alpha, seeds = 30, 0.2, 400
    m = len(texts)
    per_doc = np.zeros(m)
    simultaneous = narrow = 0
    for seed in range(seeds):
        sm = make(n=n, seed=seed, temperature=0.3)
        S = np.stack(sm.sample_scores_batch([QUERY] * m, texts, [n] * m))
        g, var = S.mean(1), S.var(1, ddof=1)
        eps = (lambda a: hoeffding_eps(n, a)) if bound == "hoeffding" else \
            (lambda a: bernstein_eps(n, var, a))
        per_doc += np.abs(g - truth) <= eps(alpha)
        simultaneous += np.all(np.abs(g - truth) <= eps(alpha / m))
        narrow += np.all(np.abs(g - truth) <= 0.2 * hoeffding_eps(n, alpha / m))
    assert np.all(per_doc / seeds >= 1 - alpha)
    assert simultaneous / seeds >= 1 - alpha
    assert narrow / seeds < 1 - alpha  # the check has teeth


# -- R, determinism, modes ---------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["rigorous", "certdr"])
def test_monotone_in_R(mode):
    run = run_frame(LISTS)
    sm = make(seed=2)  # scores do not depend on R; only the radii do
    prev = None
    for R in (4, 3, 2, 1, 0):
        f = certify(sm, run, ks=KS, mode=mode, R=R, progress=False).frame
        if prev is not None:  # prev has R + 1
            assert np.all(f["certified"].to_numpy() >= prev["certified"].to_numpy())
            assert np.all(f["delta_max"].to_numpy() <= prev["delta_max"].to_numpy() + 1e-15)
            nt = ~f["trivial"].to_numpy()  # K >= m: margin is nan
            assert np.all(f["margin"].to_numpy()[nt] >= prev["margin"].to_numpy()[nt] - 1e-12)
        prev = f
    full = certify(sm, run, ks=KS, mode=mode, R=None, progress=False).frame
    assert np.all(full["certified"].to_numpy() <= prev["certified"].to_numpy())


def test_determinism_of_certificates():
    run = run_frame(dict(itertools.islice(LISTS.items(), 8)))
    for mode in ("rigorous", "adaptive", "certdr"):
        a = certify(make(seed=7), run, ks=KS, mode=mode, progress=False)
        # other query order (batch composition), same documents per query
        b = certify(make(seed=7), run.sort_values("qid", ascending=False, kind="stable"), ks=KS,
                    mode=mode, progress=False)
        cols = ["qid", "K", "certified", "margin", "n_samples", "n_forward"]
        def canon(c):
            return c.frame[cols].sort_values(["qid", "K"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(canon(a), canon(b))


def easy_instance(m=20):
    rng = np.random.default_rng(5)
    comp = ["good", "fine", "great", "nice"]
    docs = []
    for i in range(m):
        strong = i < 3
        words = list(rng.choice(comp, 12)) + (["movie", "plot"] * (3 if strong else 0))
        words += ["bad"] * (0 if strong else 6 + i % 4)
        rng.shuffle(words)
        docs.append(" ".join(words))
    return docs


def test_adaptive_cheaper_and_sound_on_easy_instance():
    sets = SmoothingSets(THREAT)  # symmetric components: equal sets
    docs = easy_instance()
    run = run_frame({"q": docs})
    sm_r, sm_a = make(sets=sets, temperature=8.0), make(sets=sets, temperature=8.0)
    # K=3 separates 3 strong documents from 17 weak ones; K=1 is a near-tie (never certified)
    rig = certify(sm_r, run, ks=(1, 3), progress=False)
    ada = certify(sm_a, run, ks=(1, 3), mode="adaptive", progress=False)
    assert rig.frame["certified"].tolist() == [False, True]
    assert ada.frame["certified"].tolist() == [False, True]
    assert ada.frame["n_forward"].iloc[0] * 3 < rig.frame["n_forward"].iloc[0]
    assert sm_a.n_forward * 3 < sm_r.n_forward
    assert (ada.docs["n"] < 1000).sum() >= 15   # weak documents settled early
    # the near-tie at K=1 is given up before the cap (futility) ...
    assert ada.docs.loc[ada.docs["rank"] <= 3, "n"].lt(1000).all()
    assert ada.frame["n_samples"].iloc[0] < 1000
    # ... and without the futility rule it keeps sampling to the cap, certifying nothing more
    sm_n = make(sets=sets, temperature=8.0)
    slow = certify(sm_n, run, ks=(1, 3), mode="adaptive", futility=None, progress=False)
    assert slow.frame["certified"].tolist() == [False, True]
    assert slow.docs.loc[slow.docs["rank"] <= 3, "n"].eq(1000).all()
    assert sm_a.n_forward < sm_n.n_forward


def test_frame_crq_summary_params():
    run = run_frame(dict(itertools.islice(LISTS.items(), 5)))
    with pytest.warns(UserWarning, match="at most K documents.*K=3: 1 of 5, K=10: 5 of 5"):
        cert = certify(make(n=200), run, ks=(1, 3, 10), alpha=0.1, R=2, progress=False)
    assert isinstance(cert, Certificate)
    for c in ("qid", "K", "certified", "margin", "delta_max", "n_samples", "n_forward", "alpha",
              "mode", "bound", "R"):
        assert c in cert.frame.columns
    assert len(cert.frame) == 15 and cert.frame["certified"].dtype == bool
    k10 = cert.frame[cert.frame["K"] == 10]  # K >= m: trivial, never counted as certified
    assert k10["trivial"].all() and not k10["certified"].any() and k10["margin"].isna().all()
    assert cert.params["short_lists"] == {1: 0, 3: 1, 10: 5} and cert.params["warnings"]
    assert list(cert.crq.columns[:2]) == ["K", "CRQ"] and cert.crq["K"].tolist() == [1, 3, 10]
    s = cert.summary()
    assert s["crq"][10] == 0.0 and s["mode"] == "rigorous" and s["R"] == 2
    p = cert.params
    for k in ("mode", "alpha", "bound", "R", "N", "seed", "squash", "temperature", "threat",
              "threat_fingerprint", "base"):
        assert k in p
    assert p["N"] == 200 and p["threat_fingerprint"] == THREAT.fingerprint
    assert cert.docs.groupby("qid")["rank"].min().eq(1).all()


def test_edge_cases():
    sm = make(n=100)
    with pytest.warns(UserWarning, match="at most K documents"):
        one = certify(sm, run_frame({"a": ["good movie"]}), ks=(1, 5), progress=False)
    assert not one.frame["certified"].any() and one.frame["trivial"].all()
    plain = run_frame({"b": ["movie plot movie", "the film"]})
    cert = certify(sm, plain, ks=(1,), progress=False)
    assert cert.docs["delta"].eq(0).all() and cert.frame["certified"].iloc[0]
    ada = certify(sm, plain, ks=(1,), mode="adaptive", n0=8, progress=False)
    assert ada.frame["certified"].iloc[0]


def test_errors():
    sm, run = make(n=10), run_frame({"a": ["good movie", "the plot"]})
    with pytest.raises(ValueError, match="alpha"):
        certify(sm, run, alpha=1.5, progress=False)
    with pytest.raises(ValueError, match="certdr.*rigorous.*adaptive"):
        certify(sm, run, mode="fast", progress=False)
    with pytest.raises(ValueError, match="bernstein"):
        certify(sm, run, bound="chernoff", progress=False)
    with pytest.raises(ValueError):
        certify(sm, run, mode="certdr", bound="bernstein", progress=False)
    with pytest.raises(RankerError, match="text"):
        certify(sm, run.drop(columns=["text"]), progress=False)
    with pytest.raises(ValueError):
        certify(sm, run, ks=(0,), progress=False)
    with pytest.raises(ValueError):
        certify(sm, run, mode="adaptive", n0=100, progress=False)
    with pytest.raises(TypeError):
        certify(sm.base, run, progress=False)


# -- certified radius per list (issue 13) ------------------------------------------------------
@pytest.mark.parametrize("mode", ["rigorous", "certdr", "adaptive"])
def test_certified_radius_matches_certificates_at_every_R(mode):
    """The certified radius read off one run's intervals says at which budgets R the list is
    certified: for the fixed-sample modes exactly ``certified(R) == (R <= radius_words)`` at
    every R (scores do not depend on R); for adaptive at the R it was run with."""
    run = run_frame(LISTS)
    sm = make(seed=2)
    base = certify(sm, run, ks=KS, mode=mode, R=1 if mode == "adaptive" else None, n0=16,
                   progress=False).frame.set_index(["qid", "K"])
    nt = base[~base["trivial"]]
    assert (nt["radius_words"] >= -1).all() and nt["radius_words"].notna().all()
    assert base.loc[base["trivial"], "radius_words"].isna().all()
    if mode == "adaptive":
        assert (nt["certified"] == (nt["radius_words"] >= 1)).all()
        return
    assert (nt["radius_words"] >= 1).sum() >= 10 and (nt["radius_words"] == 0).sum() >= 1
    for R in (0, 1, 2, 3):
        f = certify(sm, run, ks=KS, mode=mode, R=R, progress=False).frame.set_index(["qid", "K"])
        f = f[~f["trivial"]]
        assert (f["certified"] == (nt["radius_words"] >= R)).all(), R
        assert (f["radius_words"] == nt["radius_words"]).all()


def test_certified_radius_function():
    from defenses.certify import certified_radius

    c1 = np.array([0.0, 0.1, 0.3, 1.0])          # a 3-word document
    c2 = np.array([0.0, 0.05, 0.2, 0.5, 0.9, 1.0])  # a 5-word document
    # top lower bound 0.8; uppers 0.5 and 0.55
    w, s = certified_radius(0.8, np.array([0.5, 0.55]), [c1, c2])
    # r=1: max(0.6, 0.6) < 0.8 ok; r=2: max(0.8, 0.75) not < 0.8 -> 1 word
    assert w == 1
    # shares: rho in [0, 1/3): r1 = 0, r2 = floor(5 rho) <= 1 -> max(0.5, 0.6) ok;
    # rho = 1/3: r1 = 1 (0.6), r2 = 1 (0.6) ok; rho = 0.4: r2 = 2 -> 0.75 ok; r1 = 1 ok;
    # rho = 0.6: r2 = 3 -> 1.05 fails -> certified for every rho < 0.6
    assert s == pytest.approx(0.6)
    assert certified_radius(0.4, np.array([0.5]), [c1]) == (-1.0, -1.0)
    assert certified_radius(2.5, np.array([0.5]), [c1]) == (math.inf, 1.0)  # every word
    assert all(math.isnan(x) for x in certified_radius(0.5, np.array([]), []))


def test_r_share_budget_and_smoothing_params():
    run = run_frame({"q": ["good fine movie plot", "bad poor the film", "great movie"]})
    sm = make(n=200, seed=3)
    a = certify(sm, run, ks=(1,), r_share=0.5, progress=False)
    # floor(0.5 n): 2 words of the 4-word documents, 1 of the 2-word one
    want = [sm.radius(t, {4: 2, 2: 1}[len(t.split())]) for t in run["text"]]
    assert a.docs["delta"].tolist() == pytest.approx(want)
    assert a.params["r_share"] == 0.5 and a.params["smoothing"] == "synonym"
    assert a.frame["r_share"].iloc[0] == 0.5
    zero = certify(sm, run, ks=(1,), r_share=0.0, progress=False)
    assert zero.docs["delta"].eq(0).all()


def test_kl_interval_golden_and_coverage():
    from defenses.certify import kl_interval

    lo, up = kl_interval(np.array([0.0, 1.0, 0.5]), 32, 0.005)
    assert up[0] == pytest.approx(1 - 0.0025 ** (1 / 32), abs=1e-9) and lo[0] == 0.0
    assert lo[1] == pytest.approx(0.0025 ** (1 / 32), abs=1e-9) and up[1] == 1.0
    e = hoeffding_eps(32, 0.005)
    assert lo[2] < 0.5 < up[2] and up[2] - lo[2] <= 2 * e  # never wider than Hoeffding
    # coverage on [0, 1] variables that are not 0/1 votes (squashed scores), many seeds
    sm0 = make(temperature=0.3)
    ex = Exact(sm0)
    texts = ["good bad", "fine poor the", "nice weak", "great bad movie", "GOOD weak poor"]
    truth = np.array([ex.g(t) for t in texts])
    n, alpha, seeds, m = 30, 0.2, 300, len(texts)
    simultaneous = 0
    for seed in range(seeds):
        S = np.stack(make(n=n, seed=seed, temperature=0.3).sample_scores_batch(
            [QUERY] * m, texts, [n] * m))
        lo, up = kl_interval(S.mean(1), n, alpha / m)
        simultaneous += np.all((lo <= truth) & (truth <= up))
    assert simultaneous / seeds >= 1 - alpha

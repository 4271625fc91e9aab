"""Word-substitution attack (PRADA-style), target sampling, rank bookkeeping, metrics.

Fast tier: exact lexical victims (TermWeightRanker), tiny cross-/bi-encoder surrogates from
conftest, tiny SynonymTable threat models. Slow tier: the packaged MiniLM on the demo data.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from attacks import (AttackResult, WordSubstitutionAttack, new_rank, results_frame,
                     sample_targets, summarize)
from attacks.base import (RESULT_COLUMNS, EmptyDocument, NoSubstitutes, TargetNotInList,
                          max_changes, target_context)
from attacks.metrics import METRICS, BigramLM, similarities, topic_summary
from attacks.text import changed_positions, words
from attacks.threat import SynonymTable
from attacks.word_substitution import word_spans
from rankers import BudgetExhausted, Oracle, TermWeightRanker, rank_against
from ranklab.collections import Collection

# ------------------------------------------------------------------------------ fixtures
pytestmark = pytest.mark.usefixtures("single_thread")


QUERIES = {"q1": "how do bees make honey", "q2": "what makes a volcano erupt",
           "q3": "how to brew good coffee"}

DOCS = [
    "bees make honey from nectar in the hive",
    "the queen bee and the worker bees of a colony make wax",
    "a small cat sat on the mat in the garden",
    "the big dog and the small cat run in the garden",
    "a slow volcano with lava and ash from the crater",
    "an earthquake at the fault made a big crater",
    "roast the coffee beans and brew a cup of hot water",
    "the bitter taste of cold coffee in a small cup",
    "bread needs flour yeast and a hot oven",
    "the sourdough starter makes the dough good",
    "a fast dog chase the cat in the garden",
    "the tiny bee sat on the flower with pollen",
    "magma and lava from a volcano make rock",
    "the good espresso from a fine grinder",
    "a large hive with many bees and honey",
    "the cat and the dog sat on the big mat",
    "the slow worker made a bad cup of coffee",
    "hot lava and cold ash on the rock",
    "the crust of the bread from the oven is good",
    "the small garden with a flower and a bee",
]

WEIGHTS = {"honey": 2.0, "nectar": 1.5, "large": 1.0, "great": 1.2, "fine": 0.8, "fast": 0.6,
           "tiny": 0.4, "colony": 0.7, "lava": 1.0, "espresso": 1.0, "quick": 0.9}

TABLE = {"big": ["large", "great"], "good": ["great", "fine"], "small": ["tiny", "little"],
         "slow": ["quick", "fast"], "cat": ["dog"], "mat": ["garden"], "bad": ["fine"],
         "cold": ["hot"], "made": ["produce"], "sat": ["run"], "worker": ["queen"],
         "cup": ["mug"]}


@pytest.fixture(scope="module")
def col():
    docs = pd.DataFrame({"docno": [f"d{i:02d}" for i in range(len(DOCS))], "text": DOCS})
    queries = pd.DataFrame({"qid": list(QUERIES), "query": list(QUERIES.values())})
    qrels = pd.DataFrame({"qid": ["q1"], "docno": ["d00"], "label": [1]})
    return Collection("synthetic", docs, queries, qrels)


@pytest.fixture(scope="module")
def victim():
    return TermWeightRanker(WEIGHTS, query_weight=0.5)


@pytest.fixture(scope="module")
def run(col, victim):
    parts = [victim.rank(q, col.documents["text"].tolist(), col.documents["docno"].tolist(),
                         qid=qid).assign(query=q) for qid, q in QUERIES.items()]
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def threat():
    return SynonymTable(TABLE)


def low_targets(run, n=3):
    """The ``n`` lowest-ranked documents of each query that have a substitutable word."""
    rows = []
    for qid, g in run.groupby("qid"):
        g = g.sort_values("rank", ascending=False)
        picked = [d for d, t in zip(g["docno"], g["text"])
                  if any(w in TABLE for w in words(t))][:n]
        rows += [(qid, d) for d in picked]
    return pd.DataFrame(rows, columns=["qid", "docno"])


def make_attack(sur, threat, **kw):
    """The PRADA loop (the search these tests pin down); tests of greedy/beam pass ``search``."""
    kw.setdefault("search", "prada")
    kw.setdefault("max_words", 3)
    kw.setdefault("max_pp", 0.5)
    kw.setdefault("competitors_k", 10)
    return WordSubstitutionAttack(sur, threat, **kw)


# ------------------------------------------------------------------------------ ranks

def test_new_rank_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        others = rng.integers(0, 5, size=rng.integers(0, 12)).astype(float)
        s = float(rng.integers(0, 5))
        pess = 1 + sum(o >= s for o in others)
        opt = 1 + sum(o > s for o in others)
        assert new_rank(s, others) == pess
        assert new_rank(s, others, "pessimistic") == rank_against(s, others, "pessimistic")
        assert new_rank(s, others, "optimistic") == opt
    with pytest.raises(ValueError, match="tie_rule"):
        new_rank(1.0, [0.0], "coin-flip")


def test_target_context_against_run(run):
    rq = run[run.qid == "q1"]
    for row in rq.itertuples():
        ctx = target_context(rq, row.docno)
        others = rq.loc[rq.docno != row.docno, "score"].to_numpy()
        assert ctx.orig_rank == 1 + int((others >= row.score).sum())
        assert sorted(ctx.other_scores) == sorted(others)
        assert not ctx.other_scores.flags.writeable


# ------------------------------------------------------------------------------ the attack

def test_attack_properties(col, run, victim, threat, tiny_cross):
    targets = low_targets(run)
    run_before, docs_before = run.copy(deep=True), col.documents.copy(deep=True)
    targets_before = targets.copy(deep=True)
    oracle = Oracle(victim, access="rank")
    atk = make_attack(tiny_cross, threat)
    res = atk.run(oracle, col, targets, run=run, progress=False)

    # originals never mutated
    pd.testing.assert_frame_equal(run, run_before)
    pd.testing.assert_frame_equal(col.documents, docs_before)
    pd.testing.assert_frame_equal(targets, targets_before)

    assert list(res.columns) == RESULT_COLUMNS
    assert len(res) == len(targets)
    assert res["queries_used"].sum() == oracle.queries_used
    assert res["success"].any(), "the synthetic victim rewards some allowed substitutions"
    for r in res.itertuples():
        rq = run[run.qid == r.qid]
        others = rq.loc[rq.docno != r.docno, "score"].to_numpy()
        orig = rq.loc[rq.docno == r.docno, "text"].iloc[0]
        assert r.orig_text == orig
        # ranks: brute force against the ORIGINAL list, scores recomputed independently
        s_adv = victim.score(r.query, [r.adv_text])[0]
        assert s_adv == pytest.approx(r.adv_score)
        assert r.adv_rank == 1 + int((others >= s_adv).sum())
        assert r.success == (r.adv_rank < r.orig_rank)
        if r.success:
            assert r.adv_score > r.orig_score
        assert r.adv_rank <= r.orig_rank  # greedy keeps only strict improvements
        # caps
        assert r.n_changed <= 3 and r.pp <= 0.5 + 1e-12
        assert r.n_changed == len(changed_positions(orig, r.adv_text)) == len(r.substitutions)
        assert r.pp == pytest.approx(r.n_changed / len(words(orig)))
        assert r.queries_used == r.n_tried <= 3
        # threat model: every change is an allowed neighbour of the original word
        ow, aw = words(orig), words(r.adv_text)
        assert len(ow) == len(aw)
        for p in changed_positions(orig, r.adv_text):
            assert aw[p].lower() in threat.neighbours(ow[p])
        for p, old, new in r.substitutions:
            assert ow[p] == old and aw[p] == new
        assert r.method == "word-substitution" and r.threat == threat.fingerprint
    json.dumps([AttackResult(**{k: getattr(r, k) for k in RESULT_COLUMNS}).to_row()
                for r in res.itertuples()])


def test_same_seed_same_text(col, run, victim, threat, tiny_cross):
    targets = low_targets(run, 2)
    a = make_attack(tiny_cross, threat, seed=3).run(Oracle(victim, access="rank"), col,
                                                    targets, run=run, progress=False)
    b = make_attack(tiny_cross, threat, seed=3).run(Oracle(victim, access="rank"), col,
                                                    targets, run=run, progress=False)
    assert a["adv_text"].tolist() == b["adv_text"].tolist()
    assert a["queries_used"].tolist() == b["queries_used"].tolist()


def test_caps_max_words_and_pp(col, run, victim, threat, tiny_cross):
    targets = low_targets(run)
    res = make_attack(tiny_cross, threat, max_words=1, max_pp=None).run(
        Oracle(victim, access="rank"), col, targets, run=run, progress=False)
    assert (res["n_changed"] <= 1).all()
    res = make_attack(tiny_cross, threat, max_words=10, max_pp=0.15).run(
        Oracle(victim, access="rank"), col, targets, run=run, progress=False)
    assert (res["pp"] <= 0.15 + 1e-12).all()
    assert (res["n_changed"] <= [max_changes(n, 10, 0.15) for n in res["n_words"]]).all()
    # a cap that allows no change: no victim query at all
    res = make_attack(tiny_cross, threat, max_pp=0.01).run(
        Oracle(victim, access="rank"), col, targets, run=run, progress=False)
    assert (res["n_changed"] == 0).all() and (res["queries_used"] == 0).all()


def test_query_budgets_never_exceeded(col, run, victim, threat, tiny_cross):
    targets = low_targets(run)
    res = make_attack(tiny_cross, threat, query_budget=1).run(
        Oracle(victim, access="rank"), col, targets, run=run, progress=False)
    assert (res["queries_used"] <= 1).all()
    assert res["budget_exhausted"].any()
    # the oracle's own budget: BudgetExhausted is caught, results so far kept
    oracle = Oracle(victim, access="rank", budget=4)
    res = make_attack(tiny_cross, threat).run(oracle, col, targets, run=run, progress=False)
    assert oracle.queries_used <= 4
    assert res["queries_used"].sum() == oracle.queries_used
    assert res["budget_exhausted"].any()
    assert len(res) == len(targets)
    with pytest.raises(BudgetExhausted):
        oracle.rank_of("q", "honey", np.zeros(3))


def test_goal_stops_early(col, run, victim, threat, tiny_cross):
    targets = low_targets(run)
    full = make_attack(tiny_cross, threat).run(Oracle(victim, access="rank"), col, targets,
                                               run=run, progress=False)
    early = make_attack(tiny_cross, threat, goal="improve").run(
        Oracle(victim, access="rank"), col, targets, run=run, progress=False)
    assert (early["queries_used"] <= full["queries_used"]).all()
    assert (early["n_changed"] <= 1).all()
    assert (early["success"] == full["success"]).all()


def test_model_untouched_and_eval(col, run, victim, threat, tiny_cross):
    emb = tiny_cross.input_embeddings().weight.detach().clone()
    params = [p.detach().clone() for p in tiny_cross.model.parameters()]
    make_attack(tiny_cross, threat).run(Oracle(victim, access="rank"), col, low_targets(run, 1),
                                        run=run, progress=False)
    assert torch_equal(tiny_cross.input_embeddings().weight, emb)
    assert all(torch_equal(p, q) for p, q in zip(tiny_cross.model.parameters(), params))
    assert not tiny_cross.model.training


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a.detach(), b))


def test_bi_encoder_surrogate(col, run, victim, threat, tiny_bi):
    res = make_attack(tiny_bi, threat).run(Oracle(victim, access="rank"), col,
                                           low_targets(run, 2), run=run, progress=False)
    assert len(res) == 6 and (res["surrogate_passes"] > 0).all()


@pytest.mark.parametrize("search", ["prada", "greedy"])
def test_bag_of_embeddings_surrogate(col, run, victim, threat, search):
    """The glove imitation family goes through the same white-box members (bench/trigger.py's
    PRADA row uses it)."""
    from rankers.bow import BagOfEmbeddingsEncoder

    vocab = sorted({w.lower() for t in col.documents["text"].tolist() + DOCS
                    for w in words(t) if w.isalpha() and w.isascii()})
    vecs = np.random.default_rng(0).normal(size=(len(vocab), 8)).astype(np.float32)
    sur = BagOfEmbeddingsEncoder.from_vectors(vocab, vecs, dim=8)
    before = run.copy(deep=True)
    res = make_attack(sur, threat, search=search).run(Oracle(victim, access="rank"), col,
                                                      low_targets(run, 2), run=run,
                                                      progress=False)
    pd.testing.assert_frame_equal(run, before)
    assert len(res) == 6 and (res["error"] == "").all()
    assert (res["n_changed"] <= 3).all() and (res["adv_rank"] <= res["orig_rank"]).all()
    # surrogate_rank: where the surrogate itself puts the adversarial document (brute force)
    for r in res.itertuples():
        g = run[(run.qid == r.qid) & (run.docno != r.docno)]
        others = sur.score(r.query, g["text"].tolist())
        want = 1 + int((others >= sur.score(r.query, [r.adv_text])[0]).sum())
        assert r.surrogate_rank == want


def test_competitor_scores_cached(col, run, victim, threat, tiny_cross):
    atk = make_attack(tiny_cross, threat, competitors_k=7)
    res = atk.run(Oracle(victim, access="rank"), col, low_targets(run, 2), run=run,
                  progress=False)
    # the first target of each query pays for the K competitors, the second does not
    first = res.groupby("qid")["surrogate_passes"].first()
    second = res.groupby("qid")["surrogate_passes"].last()
    assert ((first - second) == 7).all()


def test_word_pieces_map_to_words():
    from attacks.text import tokenize

    v = tokenize("Bees, make honey!  (hot) water")
    spans = word_spans(v)
    text = "".join(v.pieces)
    assert [text[s:e] for s, e in spans] == v.words


def test_errors(col, run, victim, threat, tiny_cross):
    atk = make_attack(tiny_cross, threat)
    oracle = Oracle(victim, access="rank")
    rq = run[run.qid == "q1"]
    with pytest.raises(TargetNotInList, match=r"'nope'.*'q1'.*sample_targets"):
        atk.attack(oracle, QUERIES["q1"], "nope", rq)
    bad = pd.concat([rq, pd.DataFrame({"qid": ["q1"], "query": [QUERIES["q1"]],
                                       "docno": ["empty"], "text": [" ... "], "score": [0.0],
                                       "rank": [99]})], ignore_index=True)
    with pytest.raises(EmptyDocument, match="empty"):
        atk.attack(oracle, QUERIES["q1"], "empty", bad)
    nothing = make_attack(tiny_cross, SynonymTable({"zebra": ["horse"]}))
    with pytest.raises(NoSubstitutes, match="no substitute"):
        nothing.attack(oracle, QUERIES["q1"], rq["docno"].iloc[-1], rq)
    assert oracle.queries_used == 0
    # errors="record": an unchanged row with the message, the run goes on
    targets = pd.DataFrame({"qid": ["q1", "q1"], "docno": ["nope", rq["docno"].iloc[-1]]})
    res = nothing.run(oracle, col, targets, run=run, progress=False, errors="record")
    assert len(res) == 2 and res["error"].str.len().gt(0).all()
    assert (res["adv_rank"].iloc[1] == res["orig_rank"].iloc[1])


def test_bad_parameters(tiny_cross, threat):
    with pytest.raises(ValueError):
        WordSubstitutionAttack(tiny_cross, threat, max_pp=2)
    with pytest.raises(ValueError):
        WordSubstitutionAttack(tiny_cross, threat, goal="win")
    with pytest.raises(ValueError, match="differentiable"):
        WordSubstitutionAttack(TermWeightRanker(), threat, search="prada")
    with pytest.raises(ValueError, match="search"):
        WordSubstitutionAttack(tiny_cross, threat, search="anneal")
    with pytest.raises(ValueError, match="surrogate"):
        WordSubstitutionAttack(None, threat)
    with pytest.raises(ValueError, match="access='score'"):
        WordSubstitutionAttack(None, threat, white_box=True).attack(
            Oracle(TermWeightRanker(), access="rank"), "bees",
            "a", pd.DataFrame({"qid": ["q"], "query": ["bees"], "docno": ["a"],
                               "text": ["big bees"], "score": [0.0], "rank": [1]}))
    with pytest.raises(ValueError, match="access='rank'"):
        WordSubstitutionAttack(tiny_cross, threat).attack(
            Oracle(TermWeightRanker(), access="topk"), "bees",
            "a", pd.DataFrame({"qid": ["q"], "query": ["bees"], "docno": ["a"],
                               "text": ["big bees"], "score": [0.0], "rank": [1]}))


# ------------------------------------------------------------------------------ greedy / beam

def full_greedy(score, text, threat, cap, stopwords=frozenset()):
    """Reference full exact greedy: at each step score every remaining (position, substitute)
    on the current document and take the best strict improvement (ties: screening order)."""
    from attacks.stopwords import STOPWORDS
    from attacks.text import tokenize
    from attacks.threat import match_case

    view = tokenize(text)
    ws = view.words
    per = {p: [c for c in threat.neighbours(w) if c not in STOPWORDS and c != w.lower()]
           for p, w in enumerate(ws) if w.lower() not in STOPWORDS}
    depth = max((len(v) for v in per.values()), default=0)
    # screening order: every word's first neighbour, then every word's second, ...
    cands = [(p, match_case(ws[p], per[p][r])) for r in range(depth) for p in per
             if r < len(per[p])]
    subs, cur = {}, float(score([text])[0])
    while len(subs) < cap:
        left = [(p, c) for p, c in cands if p not in subs]
        if not left:
            break
        vals = score([view.replace({**subs, p: c}) for p, c in left])
        i = int(np.argmax(vals))   # first maximum: candidate order
        if not vals[i] > cur:
            break
        subs[left[i][0]] = left[i][1]
        cur = float(vals[i])
    return view.replace(subs)


def white_box(victim, threat, **kw):
    kw.setdefault("search", "greedy")
    kw.setdefault("white_box", True)
    return make_attack(None, threat, **kw)


@pytest.mark.parametrize("rescore", [1, 2, None])
def test_lazy_greedy_equals_full_greedy_lexical(col, run, victim, threat, rescore):
    # an additive ranker: gains never change when other words change, so lazy greedy with any
    # rescore follows full exact greedy
    targets = low_targets(run)
    res = white_box(victim, threat, rescore=rescore, max_words=3, max_pp=0.5).run(
        Oracle(victim, access="score"), col, targets, run=run, progress=False)
    for r in res.itertuples():
        cap = max_changes(r.n_words, 3, 0.5)
        assert r.adv_text == full_greedy(lambda t: victim.score(r.query, t), r.orig_text,
                                         threat, cap)
        assert r.search == "greedy" and r.goal == "max" and r.white_box
        assert r.window_share == 1.0


@pytest.mark.parametrize("kind", ["bi", "cross"])
def test_full_greedy_matches_reference_on_tiny_encoders(col, run, threat, tiny_bi, tiny_cross,
                                                        kind):
    model = tiny_bi if kind == "bi" else tiny_cross
    vrun = model.transform(run.drop(columns=["score", "rank"]))
    targets = sample_targets(vrun, "hard5").groupby("qid").head(2)
    res = white_box(model, threat, rescore=None, max_words=3, max_pp=0.5).run(
        Oracle(model, access="score"), col, targets, run=vrun, progress=False)
    for r in res.itertuples():
        cap = max_changes(r.n_words, 3, 0.5)
        assert r.adv_text == full_greedy(lambda t: model.score(r.query, t), r.orig_text,
                                         threat, cap)
        assert r.adv_score >= r.orig_score - 1e-6


def test_beam_width_one_is_full_greedy(col, run, victim, threat):
    targets = low_targets(run)
    kw = dict(rescore=None, max_words=3, max_pp=0.5)
    g = white_box(victim, threat, **kw).run(Oracle(victim, access="score"), col, targets,
                                            run=run, progress=False)
    b = white_box(victim, threat, search="beam", beam_width=1, **kw).run(
        Oracle(victim, access="score"), col, targets, run=run, progress=False)
    assert g["adv_text"].tolist() == b["adv_text"].tolist()
    b3 = white_box(victim, threat, search="beam", beam_width=3, **kw).run(
        Oracle(victim, access="score"), col, targets, run=run, progress=False)
    assert (b3["adv_score"] >= g["adv_score"] - 1e-9).all()   # additive: greedy is optimal


def test_greedy_white_box_budgets_never_exceeded(col, run, victim, threat):
    targets = low_targets(run)
    for budget in (0, 1, 3, 7):
        oracle = Oracle(victim, access="score")
        res = white_box(victim, threat, query_budget=budget).run(oracle, col, targets, run=run,
                                                                 progress=False)
        assert (res["queries_used"] <= budget).all()
        assert res["queries_used"].sum() == oracle.queries_used
        assert res["queries_used"].tolist() == res["n_tried"].tolist()
        assert (res["surrogate_rank"] == 0).all()  # no surrogate: not measured
    oracle = Oracle(victim, access="score", budget=10)
    res = white_box(victim, threat).run(oracle, col, targets, run=run, progress=False)
    assert oracle.queries_used <= 10 and res["budget_exhausted"].any()
    assert res["queries_used"].sum() == oracle.queries_used


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_black_box_search_confirms_through_the_oracle(col, run, victim, threat, tiny_cross,
                                                      search):
    targets = low_targets(run)
    run_before = run.copy(deep=True)
    oracle = Oracle(victim, access="rank")
    res = make_attack(tiny_cross, threat, search=search, query_budget=2).run(
        oracle, col, targets, run=run, progress=False)
    pd.testing.assert_frame_equal(run, run_before)
    assert (res["queries_used"] <= 2).all() and res["queries_used"].sum() == oracle.queries_used
    assert (res["surrogate_passes"] > 0).all()
    # the victim never ends worse than the original (changes it rejects are rolled back)
    assert (res["adv_rank"] <= res["orig_rank"]).all()
    for r in res.itertuples():
        ow, aw = words(r.orig_text), words(r.adv_text)
        for p in changed_positions(r.orig_text, r.adv_text):
            assert aw[p].lower() in threat.neighbours(ow[p])
        assert r.n_changed <= 3 and r.pp <= 0.5 + 1e-12
    # a surrogate that is the (exact, additive) victim itself: every confirmation agrees
    res = make_attack(victim, threat, search=search).run(Oracle(victim, access="rank"), col,
                                                         targets, run=run, progress=False)
    assert res["success"].any()


def test_screening_order_and_limits(col, run, victim, threat):
    from attacks.text import tokenize

    atk = white_box(victim, threat)
    view = tokenize("the big cat sat on the small mat")
    eligible = [i for i, w in enumerate(view.words) if atk.neighbours(w)]
    cands = atk.candidates(view, eligible)
    # neighbour rank first: every word's closest substitute, then the second ones
    assert cands[:5] == [(1, "large"), (2, "dog"), (3, "run"), (6, "tiny"), (7, "garden")]
    assert cands[5:] == [(1, "great"), (6, "little")]
    seen = []
    orig = victim._score_pairs

    class Spy(TermWeightRanker):
        def _score_pairs(self, queries, docs):
            seen.append(len(docs))
            return orig(queries, docs)

    spy = Spy(WEIGHTS, query_weight=0.5)
    targets = low_targets(run, 1)
    white_box(spy, threat, max_screen=2).run(Oracle(spy, access="score"), col, targets,
                                             run=run, progress=False)
    assert seen and seen[0] <= 2          # the first call is the screening
    seen.clear()
    # white box with a budget: the screening takes at most half of it
    res = white_box(spy, threat, query_budget=4, batch_size=1).run(
        Oracle(spy, access="score"), col, targets, run=run, progress=False)
    assert (res["queries_used"] <= 4).all()


def test_goals_stop_early(col, run, victim, threat):
    targets = low_targets(run)
    full = white_box(victim, threat, goal="max").run(Oracle(victim, access="score"), col,
                                                     targets, run=run, progress=False)
    imp = white_box(victim, threat, goal="improve").run(Oracle(victim, access="score"), col,
                                                        targets, run=run, progress=False)
    assert (imp["n_changed"] <= full["n_changed"]).all()
    assert (imp["success"] == full["success"]).all()
    assert (imp["goal"] == "improve").all()
    for k in (1, 5):
        top = white_box(victim, threat, goal="topk", goal_k=k).run(
            Oracle(victim, access="score"), col, targets, run=run, progress=False)
        reached = full["adv_rank"] <= k
        assert (top.loc[reached, "adv_rank"] <= k).all()
        assert (top["n_changed"] <= full["n_changed"]).all()


def test_words_beyond_the_window_are_never_candidates(col, tiny_cross, monkeypatch):
    from attacks.threat import SynonymTable

    threat = SynonymTable({"big": ["large"], "slow": ["fast"]})
    head = "the big cat sat on the slow mat . " * 2
    tail = "the big dog and the slow cat . " * 20          # far beyond 64 word pieces
    text = head + tail
    docs = [text, "honey bees", "a volcano", "hot coffee"]
    q = "big fast cat"
    frame = tiny_cross.rank(q, docs, ["t", "a", "b", "c"], qid="q").assign(query=q)
    seen = []
    orig = tiny_cross._score_pairs

    def spy(queries, ds):
        seen.extend(ds)
        return orig(queries, ds)

    monkeypatch.setattr(tiny_cross, "_score_pairs", spy)
    atk = white_box(tiny_cross, threat, max_words=None, max_pp=1.0, rescore=None, goal="max")
    res = atk.attack(Oracle(tiny_cross, access="score"), q, "t", frame)
    enc = tiny_cross.encode_for_attack(q, text)
    assert enc.truncated and enc.doc_chars < len(text)
    n_in = len(words(text[: enc.doc_chars]))
    assert 0 < res.window_share < 1
    assert res.window_share == pytest.approx(n_in / len(words(text)))
    ow = words(text)
    for t in seen:
        if t == text:
            continue
        changed = changed_positions(text, t)
        assert changed and max(changed) < n_in
        for p in changed:
            assert words(t)[p].lower() in threat.neighbours(ow[p])
    assert all(p < n_in for p, _, _ in res.substitutions)


def test_greedy_same_seed_same_text_and_unmodified_inputs(col, run, victim, threat, tiny_cross):
    targets = low_targets(run)
    before = (run.copy(deep=True), targets.copy(deep=True), col.documents.copy(deep=True))
    a = make_attack(tiny_cross, threat, search="greedy", seed=5).run(
        Oracle(victim, access="rank"), col, targets, run=run, progress=False)
    b = make_attack(tiny_cross, threat, search="greedy", seed=5).run(
        Oracle(victim, access="rank"), col, targets, run=run, progress=False)
    assert a["adv_text"].tolist() == b["adv_text"].tolist()
    pd.testing.assert_frame_equal(run, before[0])
    pd.testing.assert_frame_equal(targets, before[1])
    pd.testing.assert_frame_equal(col.documents, before[2])


# ------------------------------------------------------------------------------ targets

def long_run(n_queries=3, length=100):
    rng = np.random.default_rng(1)
    rows = []
    for q in range(n_queries):
        scores = np.sort(rng.normal(size=length))[::-1]
        for r, s in enumerate(scores, 1):
            rows.append((f"q{q}", "query", f"q{q}d{r}", "text", float(s), r))
    return pd.DataFrame(rows, columns=["qid", "query", "docno", "text", "score", "rank"])


def test_sample_targets_protocols():
    run = long_run()
    before = run.copy(deep=True)
    easy = sample_targets(run, "easy5", seed=0)
    assert list(easy.columns) == ["qid", "docno", "rank", "protocol"]
    for qid, g in easy.groupby("qid"):
        assert sorted((g["rank"] - 51) // 10) == [0, 1, 2, 3, 4]
        for d, r in zip(g["docno"], g["rank"]):
            assert run[(run.qid == qid) & (run.docno == d)]["rank"].iloc[0] == r
    assert easy.equals(sample_targets(run, "easy5", seed=0))
    assert not easy.equals(sample_targets(run, "easy5", seed=1))
    hard = sample_targets(run, "hard5")
    assert (hard.groupby("qid")["rank"].apply(sorted) == pd.Series(
        [[96, 97, 98, 99, 100]] * 3, index=["q0", "q1", "q2"])).all()
    mix = sample_targets(run, "mixture", seed=0)
    assert set(mix["protocol"]) == {"easy5", "hard5"}
    assert not mix.duplicated(["qid", "docno"]).any()
    expect = pd.concat([easy, hard]).drop_duplicates(["qid", "docno"])
    assert len(mix) == len(expect) and set(mix["docno"]) == set(expect["docno"])
    ranks = sample_targets(run, "ranks", ranks=[1, 50])
    assert ranks["rank"].tolist() == [1, 50] * 3
    pd.testing.assert_frame_equal(run, before)
    with pytest.raises(ValueError, match="only 100 documents"):
        sample_targets(run, "ranks", ranks=[101])
    with pytest.raises(ValueError, match="unknown target protocol"):
        sample_targets(run, "medium")


def test_sample_targets_short_lists():
    run = long_run(1, 20)
    with pytest.warns(UserWarning, match="bottom half"):
        easy = sample_targets(run, "easy5", seed=0)
    assert sorted((easy["rank"] - 11) // 2) == [0, 1, 2, 3, 4]
    tiny = long_run(1, 3)
    with pytest.warns(UserWarning):
        t = sample_targets(tiny, "easy5")
    assert (t["rank"] >= 2).all()
    assert sample_targets(long_run(1, 4), "hard5")["rank"].tolist() == [2, 3, 4]


# ------------------------------------------------------------------------------ metrics

def _row(r0, r1, pp=0.1, q=5, text="a b c", adv="a b c"):
    return AttackResult(qid="q", docno="d", orig_rank=r0, adv_rank=r1, orig_score=0.0,
                        adv_score=float(r0 - r1), success=r1 < r0, queries_used=q,
                        n_changed=int(pp * 10), pp=pp, adv_text=adv, orig_text=text,
                        wall_s=2.0)


def test_summarize_hand_values():
    rows = [_row(60, 8, q=4), _row(70, 70, pp=0.0, q=10), _row(90, 40, q=6), _row(55, 3, q=2)]
    s = summarize(rows)
    assert set(METRICS) <= set(s)
    assert s["n_targets"] == 4
    assert s["ASR"] == 75.0 and s["same_rate"] == 25.0 and s["failure_rate"] == 0.0
    assert s["boost"] == pytest.approx((52 + 0 + 50 + 52) / 4)
    assert s["T5R"] == 25.0 and s["T10R"] == 50.0 and s["T50R"] == 75.0 and s["T100R"] == 100
    assert s["T10R_succ"] == pytest.approx(200 / 3)
    assert s["PP"] == pytest.approx(7.5)
    assert s["queries_mean"] == 5.5 and s["queries_max"] == 10
    assert s["wall_s_mean"] == 2.0
    assert np.isnan(s["similarity"])
    assert np.isnan(s["surrogate_T10R"])  # no surrogate rank measured
    frame = results_frame(rows)
    assert summarize(frame)["boost"] == s["boost"]
    frame["surrogate_rank"] = [3, 0, 12, 10]  # 0: not measured, left out
    assert summarize(frame)["surrogate_T10R"] == pytest.approx(200 / 3)
    assert summarize([])["n_targets"] == 0


class FakeEncoder:
    calls = 0

    def encode(self, texts):
        import torch

        FakeEncoder.calls += 1
        return torch.tensor([[float(len(t)), 1.0] for t in texts])


def test_similarity_lazy_and_cosine():
    enc = FakeEncoder()
    out = similarities(["same", "ab"], ["same", "abcd"], enc)
    assert out[0] == 1.0
    assert out[1] == pytest.approx((2 * 4 + 1) / (np.sqrt(5) * np.sqrt(17)))
    FakeEncoder.calls = 0
    assert (similarities(["x", "y"], ["x", "y"], enc) == 1.0).all() and FakeEncoder.calls == 0
    s = summarize([_row(5, 3, text="ab", adv="abcd")], encoder=enc)
    assert s["similarity"] == pytest.approx(out[1])


def test_bigram_fluency_hand_value():
    lm = BigramLM(["a b"])
    # P(a|<s>) = 2/6, P(b|a) = 2/6, P(</s>|b) = 2/6 with V = 5 -> perplexity 3
    assert lm.perplexity("a b") == pytest.approx(3.0)
    assert lm.ratio("a b", "a b") == 1.0
    assert lm.ratio("a b", "b a") > 1.0
    s = summarize([_row(5, 3, text="a b", adv="b a")], fluency=lm)
    assert s["ppl_ratio"] == pytest.approx(lm.ratio("a b", "b a"))


def test_topic_summary():
    rows = [_row(9, 3), _row(9, 9)]
    frame = results_frame(rows).assign(qid=["q1", "q2"])
    t = topic_summary(frame, {"t1": ["q1", "q2"], "t2": ["q1"], "t3": ["q9"]})
    assert t["per_topic"] == {"t1": 0.5, "t2": 1.0}
    assert t["topics_half"] == 2 and t["topics_all"] == 1


def test_import_is_light():
    import subprocess
    import sys

    code = ("import sys, attacks; attacks.sample_targets; "
            "print('torch' in sys.modules, 'textattack' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ------------------------------------------------------------------------------ slow tier

@pytest.mark.slow
def test_minilm_victim_white_box_improves(minilm):
    """The packaged MiniLM as victim (and white-box surrogate) on 3 demo targets."""
    from attacks.threat import load_threat_model
    from ranklab.collections import load_collection

    demo = load_collection("demo")  # shipped with the project
    threat = load_threat_model("glove?k=20&min_sim=0.6")  # GloVe is a dependency
    qid = demo.queries["qid"].iloc[0]
    cands = demo.candidates("bm25", k=30, qids=[qid])
    run = minilm.transform(cands)
    targets = sample_targets(run, "hard5").head(3)
    oracle = Oracle(minilm, access="rank")
    atk = WordSubstitutionAttack(minilm, threat, max_words=5, max_pp=0.2, competitors_k=20,
                                 search="prada")
    res = atk.run(oracle, demo, targets, run=run, progress=False, errors="record")
    assert len(res) == 3
    assert oracle.queries_used == res["queries_used"].sum() <= 15
    assert (res["orig_rank"] - res["adv_rank"]).sum() >= 1
    for r in res.itertuples():
        assert r.adv_score == pytest.approx(float(minilm.score(r.query, [r.adv_text])[0]),
                                            abs=1e-5)

"""Insertion baselines (query-plus, keyword stuffing, random trigger), the insertion position and
the insertion metrics, against an exact lexical victim."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import lexical_setup

from attacks import InsertionAttack, new_rank, sample_targets, summarize
from attacks.base import AttackError
from attacks.insertion import (insert_at, inserted_spans, insertion_offset, sentence_boundaries,
                               target_rng)
from attacks.lm import NGramLM
from attacks.metrics import TfIdf, insertion_metrics
from attacks.text import words
from rankers import Oracle

pytestmark = pytest.mark.usefixtures("single_thread")

QUERIES = {"q1": "how do bees make honey", "q2": "what makes a volcano erupt"}
DOCS = [
    "bees make honey from nectar. the hive is warm!", "the queen bee and the worker bees",
    "a small cat sat on the mat. it was warm. the end", "the big dog and the small cat",
    "a slow volcano with lava and ash", "an earthquake at the fault made a big crater",
    "roast the coffee beans and brew a cup", "the bitter taste of cold coffee",
    "bread needs flour yeast and a hot oven", "the sourdough starter makes the dough good",
    "a fast dog chase the cat in the garden", "the tiny bee sat on the flower with pollen",
]
WEIGHTS = {"honey": 2.0, "nectar": 1.5, "lava": 1.0, "volcano": 0.5}


@pytest.fixture(scope="module")
def setup():
    return lexical_setup("ins", DOCS, QUERIES, WEIGHTS)


@pytest.fixture(scope="module")
def col(setup):
    return setup[0]


@pytest.fixture(scope="module")
def victim(setup):
    return setup[1]


@pytest.fixture(scope="module")
def run(setup):
    return setup[2]


def test_insert_at_and_positions():
    t = "first one. second one! third"
    assert sentence_boundaries(t) == [0, 11, 23]
    new, s, e = insert_at(t, "XX YY", 11)
    assert new == "first one. XX YY second one! third" and new[s:e] == "XX YY"
    assert insert_at(t, "Z", 0)[0] == "Z " + t
    assert insert_at(t, "Z", len(t))[0] == t + " Z"
    assert insertion_offset(t, "start") == 0 and insertion_offset(t, "end") == len(t)
    offs = {insertion_offset(t, "sentence", target_rng(s, "q", "d")) for s in range(40)}
    assert offs == {0, 11, 23}
    # same seed, same position
    assert insertion_offset(t, "sentence", target_rng(3, "q", "d")) == \
        insertion_offset(t, "sentence", target_rng(3, "q", "d"))
    with pytest.raises(AttackError, match="position"):
        insertion_offset(t, "middle")


@pytest.mark.parametrize("method", ["query-plus", "keyword-stuffing", "random-trigger"])
@pytest.mark.parametrize("position", ["start", "end", "sentence"])
def test_insertion_rows_ranks_and_budgets(col, victim, run, method, position):
    before = run.copy(deep=True)
    targets = sample_targets(run, "hard5")
    att = InsertionAttack(method, position=position, max_tokens=4 if method != "query-plus"
                          else None, trigger_len=3, seed=1)
    oracle = Oracle(victim, access="rank")
    fr = att.run(oracle, col, targets, run=run, progress=False)
    pd.testing.assert_frame_equal(run, before)  # the run is never modified
    assert len(fr) == len(targets) and (fr["error"] == "").all()
    assert oracle.queries_used == len(targets) and (fr["queries_used"] == 1).all()
    for r in fr.itertuples():
        g = run[run.qid == r.qid]
        assert r.orig_text == g.loc[g.docno == r.docno, "text"].iloc[0]  # original untouched
        (span,) = inserted_spans(r.substitutions)
        n_ins = len(words(span))
        assert r.n_changed == n_ins and r.pp == pytest.approx(n_ins / len(words(r.orig_text)))
        if method == "query-plus":
            assert span == r.query
        elif method == "keyword-stuffing":
            assert n_ins == 4 and set(words(span)) <= set(words(r.query))
        else:
            assert n_ins == 3
        assert span in r.adv_text and r.adv_text.replace(span, "", 1).split() == \
            r.orig_text.split()
        if position == "start":
            assert r.adv_text.startswith(span)
        if position == "end":
            assert r.adv_text.endswith(span)
        # the new rank against the ORIGINAL list, other scores fixed (brute force)
        others = g.loc[g.docno != r.docno, "score"].to_numpy()
        s = victim.score(r.query, [r.adv_text])[0]
        assert r.adv_score == pytest.approx(s)
        assert r.adv_rank == new_rank(s, others) == 1 + int((others >= s).sum())
    again = InsertionAttack(method, position=position, max_tokens=4 if method != "query-plus"
                            else None, trigger_len=3, seed=1).run(
        Oracle(victim, access="rank"), col, targets, run=run, progress=False)
    assert again["adv_text"].tolist() == fr["adv_text"].tolist()  # same seed, same result


def test_query_plus_promotes_and_metrics(col, victim, run):
    targets = sample_targets(run, "hard5")
    fr = InsertionAttack("query-plus").run(Oracle(victim, access="rank"), col, targets, run=run,
                                           progress=False)
    assert (fr["adv_rank"] <= fr["orig_rank"]).all() and fr["success"].any()
    lm = NGramLM.from_collection(col)
    s = summarize(fr, fluency=lm, tfidf=TfIdf.from_collection(col))
    assert s["spamicity"] == pytest.approx(1.0)  # the inserted text is the query
    assert s["inserted_tokens"] == pytest.approx(np.mean([len(words(q)) for q in fr["query"]]))
    share = [100 * len(words(q)) / len(words(a)) for q, a in zip(fr["query"], fr["adv_text"])]
    assert s["inserted_share"] == pytest.approx(np.mean(share))
    assert s["detector_ppl"] == pytest.approx(np.mean([lm.perplexity(q) for q in fr["query"]]))
    assert s["ppl_ratio"] == pytest.approx(np.mean([lm.ratio(o, a) for o, a in
                                                    zip(fr["orig_text"], fr["adv_text"])]))


def test_random_trigger_vocabulary_and_seed(col, victim, run):
    targets = sample_targets(run, "hard5")
    vocab = ["alpha", "beta", "gamma", "delta"]
    fr = InsertionAttack("random-trigger", vocabulary=vocab, trigger_len=5, seed=7).run(
        Oracle(victim, access="rank"), col, targets, run=run, progress=False)
    for subs in fr["substitutions"]:
        (span,) = inserted_spans(subs)
        assert set(span.split()) <= set(vocab) and len(span.split()) == 5
    other = InsertionAttack("random-trigger", vocabulary=vocab, trigger_len=5, seed=8).run(
        Oracle(victim, access="rank"), col, targets, run=run, progress=False)
    assert other["adv_text"].tolist() != fr["adv_text"].tolist()
    s = insertion_metrics(fr)
    assert s["spamicity"] == 0.0 and s["inserted_tokens"] == 5.0


def test_no_victim_check_and_budget(col, victim, run):
    targets = sample_targets(run, "hard5").head(3)
    o = Oracle(victim, access="rank")
    fr = InsertionAttack("query-plus", victim_check=False).run(o, col, targets, run=run,
                                                               progress=False)
    assert o.queries_used == 0 and (fr["queries_used"] == 0).all()
    o = Oracle(victim, access="rank", budget=1)
    fr = InsertionAttack("query-plus").run(o, col, targets, run=run, progress=False)
    assert o.queries_used == 1 and fr["budget_exhausted"].tolist() == [False, True, True]
    # the owner's measurement of the adversarial document is not an attacker query
    assert fr["adv_rank"].tolist() == InsertionAttack("query-plus", victim_check=False).run(
        Oracle(victim, access="rank"), col, targets, run=run, progress=False)["adv_rank"].tolist()


def test_bad_parameters():
    with pytest.raises(AttackError, match="unknown insertion method"):
        InsertionAttack("stuffing")
    with pytest.raises(AttackError, match="position"):
        InsertionAttack("query-plus", position="middle")
    with pytest.raises(AttackError, match="max_tokens"):
        InsertionAttack("keyword-stuffing", max_tokens=0)
    with pytest.raises(AttackError, match="vocabulary is empty"):
        InsertionAttack("random-trigger", vocabulary=[])


def test_topk_oracle_needs_no_check(col, victim, run):
    targets = sample_targets(run, "hard5").head(2)
    with pytest.raises(AttackError, match="rank feedback"):
        InsertionAttack("query-plus").run(Oracle(victim, access="topk"), col, targets, run=run,
                                          progress=False)
    fr = InsertionAttack("query-plus", victim_check=False).run(
        Oracle(victim, access="topk"), col, targets, run=run, progress=False)
    assert (fr["queries_used"] == 0).all()

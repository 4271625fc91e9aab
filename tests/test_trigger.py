"""PAT-style trigger attack: vocabulary, budgets, determinism, exhaustive beam search, errors.

Victims are exact lexical rankers (TermWeightRanker); surrogates are the tiny BERTs of conftest
(or tinier ones built here for exhaustive checks)."""
from __future__ import annotations

import itertools

import pandas as pd
import pytest
from conftest import build_tiny_bert, lexical_setup

from attacks import TriggerAttack, new_rank, sample_targets
from attacks.base import AttackError
from attacks.imitation_trigger import NoTriggerVocabulary, whole_word_vocabulary
from attacks.insertion import insert_at, inserted_spans
from attacks.text import words
from rankers import Oracle, TermWeightRanker

pytestmark = pytest.mark.usefixtures("single_thread")

QUERIES = {"q1": "how do bees make honey", "q2": "what makes a volcano erupt"}
DOCS = [
    "bees make honey from nectar in the hive", "the queen bee and the worker bees of a colony",
    "a small cat sat on the mat in the garden", "the big dog and the small cat run",
    "a slow volcano with lava and ash from the crater", "an earthquake at the fault made a crater",
    "roast the coffee beans and brew a cup", "the bitter taste of cold coffee in a cup",
    "bread needs flour yeast and a hot oven", "the sourdough starter makes the dough good",
    "a fast dog chase the cat in the garden", "the tiny bee sat on the flower with pollen",
]
WEIGHTS = {"honey": 2.0, "nectar": 1.5, "lava": 1.0, "magma": 1.2, "hive": 0.7}


@pytest.fixture(scope="module")
def setup():
    return lexical_setup("trig", DOCS, QUERIES, WEIGHTS)


@pytest.fixture(scope="module")
def col(setup):
    return setup[0]


@pytest.fixture(scope="module")
def victim(setup):
    return setup[1]


@pytest.fixture(scope="module")
def run(setup):
    return setup[2]


def small(sur, **kw):
    kw.setdefault("trigger_len", 3)
    kw.setdefault("beams", 3)
    kw.setdefault("candidates", 6)
    kw.setdefault("perturb_steps", 2)
    kw.setdefault("n_query_words", 10)
    return TriggerAttack(sur, **kw)


@pytest.fixture(scope="module")
def tiny_bow():
    """A bag-of-embeddings surrogate over the collection's words (seeded random vectors)."""
    import numpy as np

    from rankers.bow import BagOfEmbeddingsEncoder

    vocab = sorted({w.lower() for t in DOCS + list(QUERIES.values()) for w in words(t)
                    if w.isalpha()})
    vecs = np.random.default_rng(0).normal(size=(len(vocab), 8)).astype(np.float32)
    return BagOfEmbeddingsEncoder.from_vectors(vocab, vecs, dim=8)


def build_bert(folder, words_, kind="cross", seed=0):
    """A tiny random BERT (hidden 16, one layer) whose vocabulary is the special tokens plus
    ``words_``, loaded through the lab's loader."""
    from rankers import load_ranker

    build_tiny_bert(folder, kind, seed, words=words_, hidden=16, layers=1)
    return load_ranker(f"{'bi' if kind == 'bi' else 'cross'}-encoder:{folder}", batch_size=16)


# ------------------------------------------------------------------------------ vocabulary

def test_whole_word_vocabulary(tiny_cross):
    ws, ids = whole_word_vocabulary(tiny_cross.tokenizer)
    assert ws and len(ws) == len(ids) == len(set(ws))
    for w, i in zip(ws, ids):
        assert w.isalpha() and len(w) >= 2
        assert tiny_cross.tokenizer(" " + w, add_special_tokens=False)["input_ids"] == [i]
    assert "[CLS]".lower() not in ws and "a" not in ws  # special tokens, one-letter words


def test_no_usable_vocabulary_is_a_clear_error(tmp_path, tiny_cross):
    sur = build_bert(tmp_path / "punct", list(".,?!'-") + ["1", "22", "##ab"])
    att = TriggerAttack(sur)
    with pytest.raises(NoTriggerVocabulary, match="no usable whole-word vocabulary"):
        att.vocabulary()
    with pytest.raises(NoTriggerVocabulary, match="lower min_word_len"):
        TriggerAttack(tiny_cross, min_word_len=40).vocabulary()


def test_bad_surrogate_and_parameters(tiny_cross):
    with pytest.raises(AttackError, match="differentiable surrogate"):
        TriggerAttack(TermWeightRanker({}))
    for kw in ({"trigger_len": 0}, {"beams": 0}, {"candidates": 0}, {"victim_checks": -1},
               {"relevance": "doc"}, {"position": "middle"}, {"anchor_source": "oracle"},
               {"temperature": 0}, {"lm": "gpt5"}, {"window": 4}):
        with pytest.raises(AttackError):
            TriggerAttack(tiny_cross, **kw)


# ------------------------------------------------------------------------------ the attack

@pytest.mark.parametrize("sur_name", ["tiny_cross", "tiny_bi", "tiny_bow"])
@pytest.mark.parametrize("position", ["start", "sentence"])
def test_trigger_budgets_vocabulary_and_ranks(request, col, victim, run, sur_name, position):
    sur = request.getfixturevalue(sur_name)
    before = run.copy(deep=True)
    targets = sample_targets(run, "hard5")
    att = small(sur, position=position, victim_checks=2, n_triggers=3)
    oracle = Oracle(victim, access="rank")
    fr = att.run(oracle, col, targets, run=run, progress=False)
    pd.testing.assert_frame_equal(run, before)
    vocab = set(att.vocabulary())
    assert (fr["error"] == "").all()
    first = ~fr["qid"].duplicated()
    list_len = run.groupby("qid").size()
    for r, is_first in zip(fr.itertuples(), first):
        (span,) = inserted_spans(r.substitutions)
        assert set(words(span)) <= vocab and len(words(span)) == 3 == r.n_changed
        assert r.n_tried <= 2
        # anchors (the victim's top of the list) are paid once per query, by its first target
        assert r.queries_used <= 2 + (list_len[r.qid] if is_first else 0)
        g = run[run.qid == r.qid]
        assert r.orig_text == g.loc[g.docno == r.docno, "text"].iloc[0]
        others = g.loc[g.docno != r.docno, "score"].to_numpy()
        assert r.adv_rank == new_rank(victim.score(r.query, [r.adv_text])[0], others)
        if position == "start":
            assert r.adv_text == f"{span} {r.orig_text}"
        # the surrogate's own rank of the adversarial document (pessimistic ties, brute force)
        s_others = att._sv().scores(r.query, g.loc[g.docno != r.docno, "text"].tolist())
        s_adv = att._sv().scores(r.query, [r.adv_text])[0]
        assert r.surrogate_rank == 1 + int((s_others >= s_adv).sum())
    assert oracle.queries_used == fr["queries_used"].sum()


def test_victim_checks_never_exceeded(col, victim, run, tiny_cross):
    targets = sample_targets(run, "hard5")
    for checks in (0, 1, 3):
        o = Oracle(victim, access="rank")
        fr = small(tiny_cross, anchor_source="surrogate", victim_checks=checks,
                   n_triggers=2).run(o, col, targets, run=run, progress=False)
        assert (fr["queries_used"] <= min(checks, 2)).all()
        assert o.queries_used == fr["queries_used"].sum() <= len(targets) * checks
    # an oracle budget stops the checks cleanly and is never exceeded
    o = Oracle(victim, access="rank", budget=3)
    fr = small(tiny_cross, anchor_source="surrogate", victim_checks=2).run(
        o, col, targets, run=run, progress=False)
    assert o.queries_used == 3 and fr["budget_exhausted"].any()


def test_same_seed_same_trigger(col, victim, run, tiny_cross):
    targets = sample_targets(run, "hard5").head(4)
    outs = [small(tiny_cross, position="sentence", seed=s).run(
        Oracle(victim, access="rank"), col, targets, run=run, progress=False)["adv_text"].tolist()
        for s in (3, 3)]
    assert outs[0] == outs[1]


def test_query_only_relevance_is_cached_per_query(col, victim, run, tiny_cross):
    targets = sample_targets(run, "hard5")
    fr = small(tiny_cross, relevance="query", lambda_coh=0.0, anchor_source="surrogate").run(
        Oracle(victim, access="rank"), col, targets, run=run, progress=False)
    for _, g in fr.groupby("qid"):
        spans = {inserted_spans(s)[0] for s in g["substitutions"]}
        assert len(spans) == 1
        assert (g["surrogate_passes"].iloc[1:] == 0).all()


@pytest.mark.parametrize("relevance", ["passage", "query"])
def test_beam_search_is_exact_on_a_tiny_exhaustive_vocabulary(tmp_path, col, victim, run,
                                                              relevance):
    """With beams >= V^(L-1) and candidates = V the beam search scores every trigger of length L:
    its best trigger must be the brute-force best (relevance only: no LM, bonus, coherence or
    repetition terms)."""
    vocab = ["bees", "honey", "lava", "cat", "the", "hive"]
    sur = build_bert(tmp_path / f"ex-{relevance}",
                     vocab + ["make", "how", "do", "what", "makes", "volcano", "erupt"], seed=1)
    att = TriggerAttack(sur, lm=None, trigger_len=2, beams=20,
                        candidates=100, relevance=relevance, n_triggers=1, victim_checks=0,
                        anchor_source="surrogate", lambda_coh=0.0, word_bonus=0.0,
                        repetition_penalty=0.0, perturb_steps=1, min_word_len=2)
    words_all = att.vocabulary()
    assert len(words_all) == 13 <= att.beams  # every one-word prefix survives the first step
    target = sample_targets(run, "hard5").iloc[0]
    g = run[run.qid == target.qid]
    fr = att.run(Oracle(victim, access="rank"), col, pd.DataFrame([target]), run=g,
                 progress=False)
    text = g.loc[g.docno == target.docno, "text"].iloc[0]
    query = g["query"].iloc[0]
    (span,) = inserted_spans(fr["substitutions"].iloc[0])
    trig = [" ".join(t) for t in itertools.product(words_all, repeat=2)]
    texts = [insert_at(text, t, 0)[0] if relevance == "passage" else t for t in trig]
    brute = sur.score(query, texts)  # the ranker's own scoring path
    got = sur.score(query, [insert_at(text, span, 0)[0] if relevance == "passage" else span])[0]
    assert got == pytest.approx(brute.max(), abs=1e-5)


def test_topk_access(col, victim, run, tiny_cross):
    targets = sample_targets(run, "hard5").head(2)
    with pytest.raises(AttackError, match="rank feedback"):
        small(tiny_cross).run(Oracle(victim, access="topk"), col, targets, run=run,
                              progress=False)
    # anchors through top-k access, no rank checks: only the anchor look-up is spent
    o = Oracle(victim, access="topk", k=3)
    fr = small(tiny_cross, victim_checks=0).run(o, col, targets, run=run, progress=False)
    n_list = len(run[run.qid == targets.qid.iloc[0]])
    assert fr["queries_used"].tolist() == [n_list, 0] and (fr["n_tried"] == 0).all()


def test_list_adaptation_costs_no_victim_query_and_keeps_the_surrogate(col, victim, run, tiny_bow):
    import numpy as np

    targets = sample_targets(run, "hard5")
    before = {k: v.clone() for k, v in tiny_bow.model.state_dict().items()}
    o_shared, o_adapt = Oracle(victim, access="rank"), Oracle(victim, access="rank")
    shared = small(tiny_bow, victim_checks=2).run(o_shared, col, targets, run=run,
                                                  progress=False)
    att = small(tiny_bow, victim_checks=2, adapt_epochs=5, adapt_lr=0.05)
    adapted = att.run(o_adapt, col, targets, run=run, progress=False)
    # the victim's ordering comes with the anchor look-up: the same victim queries either way
    assert o_adapt.queries_used == o_shared.queries_used == adapted["queries_used"].sum()
    assert adapted["queries_used"].tolist() == shared["queries_used"].tolist()
    for k, v in tiny_bow.model.state_dict().items():  # the shared surrogate is untouched
        assert torch_equal(v, before[k]), k
    # the adapted copy learned the victim's order of that list better than the shared one
    q = run[run.qid == "q1"].sort_values("rank")
    att.run(Oracle(victim, access="rank"), col, targets[targets.qid == "q1"], run=run,
            progress=False)  # the view of the last attacked query is kept
    view = att._adapted[("q1", q["query"].iloc[0])]
    texts, want = q["text"].tolist(), np.arange(len(q))
    from scipy.stats import spearmanr

    rho_shared = spearmanr(-tiny_bow.score(q["query"].iloc[0], texts), want)[0]
    rho_adapt = spearmanr(-view.scores(q["query"].iloc[0], texts), want)[0]
    assert rho_adapt > rho_shared
    # same seed, same triggers
    again = small(tiny_bow, victim_checks=2, adapt_epochs=5, adapt_lr=0.05).run(
        Oracle(victim, access="rank"), col, targets, run=run, progress=False)
    assert again["adv_text"].tolist() == adapted["adv_text"].tolist()


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_list_adaptation_needs_a_trainable_surrogate_and_victim_anchors(tiny_bi, tiny_bow):
    with pytest.raises(AttackError, match="trainable"):
        TriggerAttack(tiny_bi, adapt_epochs=2)  # a plain bi-encoder has no training path
    with pytest.raises(AttackError, match="anchor_source='victim'"):
        TriggerAttack(tiny_bow, adapt_epochs=2, anchor_source="surrogate")
    with pytest.raises(AttackError, match="adapt_epochs"):
        TriggerAttack(tiny_bow, adapt_epochs=-1)

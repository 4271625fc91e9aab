"""Training loops, saving/loading, and the command line."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rankers import load_ranker
from rankers.training import Group, TrainConfig, group_loss, new_cross_encoder, save_cross_encoder, train_cross_encoder
from ranklab.cli import main

GROUPS = [Group("bees honey", ["bees make honey in the hive", "a volcano of lava", "coffee beans"]),
          Group("volcano lava", ["lava from a volcano crater", "bees make honey", "bread in an oven"]),
          Group("coffee brew", ["brew coffee with hot water", "the queen bee", "an earthquake fault"])] * 4


@pytest.mark.parametrize("loss", ["hinge", "ranknet", "listwise"])
def test_losses_by_hand(loss):
    cfg = TrainConfig(loss=loss, label_smoothing=0.1, margin=1.0)
    s = torch.tensor([2.0, 1.5, -1.0])
    got = group_loss(s, cfg).item()
    if loss == "hinge":
        want = (max(0, 1 - 0.5) + max(0, 1 - 3.0)) / 2
    elif loss == "listwise":
        want = -np.log(np.exp(2.0) / np.exp([2.0, 1.5, -1.0]).sum())
    else:
        def bce(x, t):
            p = 1 / (1 + np.exp(-x))
            return -(t * np.log(p) + (1 - t) * np.log(1 - p))
        want = (bce(0.5, 0.9) + bce(3.0, 0.9)) / 2
    assert got == pytest.approx(want, rel=1e-5)


def test_training_learns_is_seeded_and_round_trips(tiny_cross_path, tmp_path):
    def fit(seed):
        m = new_cross_encoder(str(tiny_cross_path), seed=seed, batch_size=8)
        hist = train_cross_encoder(m, GROUPS, TrainConfig(loss="listwise", epochs=6, lr=3e-3, batch_size=4,
                                                          seed=seed, warmup=0.0), progress=False)
        return m, hist

    m1, h1 = fit(0)
    m2, h2 = fit(0)
    assert h1["loss"] == h2["loss"]  # same seed, same run
    assert np.mean(h1["loss"][-3:]) < np.mean(h1["loss"][:3])
    s = m1.score("bees honey", ["bees make honey in the hive", "a volcano of lava"])
    assert s[0] > s[1]
    out = save_cross_encoder(m1, tmp_path / "model", {"note": "test"})
    assert (out / "model.safetensors").is_file()
    back = load_ranker(f"cross-encoder:{out}")
    docs = ["bees make honey in the hive", "a volcano of lava", "coffee beans"]
    np.testing.assert_allclose(back.score("bees honey", docs), m1.score("bees honey", docs), atol=1e-5)
    assert type(load_ranker(str(out))).__name__ == "CrossEncoder"


def test_cli_evaluate_json_and_rank(synthetic, tmp_path, capsys):
    assert main(["evaluate", "--ranker", "bm25", "--dataset", str(synthetic), "--k", "6",
                 "--measures", "nDCG@10", "RR@10", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    res = json.loads(out[-1])
    assert set(res) == {"nDCG@10", "RR@10"} and 0 < res["RR@10"] <= 1
    assert main(["rank", "--ranker", "bm25", "--dataset", str(synthetic), "--k", "4",
                 "--out", str(tmp_path / "run.trec")]) == 0
    lines = (tmp_path / "run.trec").read_text().splitlines()
    assert len(lines) == 12 and lines[0].split()[3] == "1"


def test_cli_errors_are_clear(capsys):
    assert main(["evaluate", "--ranker", "nope", "--dataset", "demo"]) == 2
    assert "unknown ranker" in capsys.readouterr().err
    assert main(["evaluate", "--dataset", "/no/such/folder"]) == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_cli_train_then_load(synthetic, tiny_cross_path, tmp_path, capsys):
    out = tmp_path / "ce"
    assert main(["train", "--base", str(tiny_cross_path), "--dataset", str(synthetic), "--out", str(out),
                 "--epochs", "1", "--group-size", "3", "--k", "6", "--batch-size", "2", "--max-length", "64"]) == 0
    assert "saved to" in capsys.readouterr().out
    r = load_ranker(f"cross-encoder:{out}")
    assert r.score("bees", ["bees make honey"]).shape == (1,)


@pytest.mark.slow
def test_minilm_reranking_on_demo_beats_chance_and_matches_sentence_transformers(minilm, demo):
    import ranklab
    from sentence_transformers import SentenceTransformer

    run = demo.candidates("bm25", k=100)
    res = ranklab.evaluate(minilm.transform(run), demo.qrels, ["nDCG@10"])
    assert res["nDCG@10"] > 0.5
    st = SentenceTransformer(minilm.path, device="cpu")
    q, docs = demo.queries["query"].iloc[0], demo.documents["text"].iloc[:5].tolist()
    e = st.encode([q] + docs, normalize_embeddings=True)
    np.testing.assert_allclose(minilm.score(q, docs), e[1:] @ e[0], atol=1e-4)


@pytest.mark.slow
def test_minilm_cross_encoder_starts_from_the_packaged_encoder():
    ce = new_cross_encoder("minilm", seed=3, max_length=128)
    assert ce.score("bees", ["honey bees"]).shape == (1,)

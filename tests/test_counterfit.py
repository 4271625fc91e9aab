"""Counter-fitting (attacks.counterfit) on a tiny synthetic vector space, and the
``counter-fitted`` threat-model spec (GloVe replaced by the synthetic vectors)."""
from __future__ import annotations

import numpy as np
import pytest

from attacks import counterfit as cf
from attacks import lexical_resources as res
from attacks.threat import load_threat_model, neighbourhood_stats

WORDS = ["hot", "warm", "cold", "chilly", "big", "large", "small", "tiny", "cat", "dog",
         "sun", "moon"]


def synthetic(seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(len(WORDS), 8)).astype(np.float32)
    m = base.copy()
    # antonyms start close (as in distributional spaces; outside the default VSP radius),
    # synonyms only moderately close
    m[WORDS.index("cold")] = base[WORDS.index("hot")] + 0.9 * rng.normal(size=8)
    m[WORDS.index("small")] = base[WORDS.index("big")] + 0.9 * rng.normal(size=8)
    m[WORDS.index("warm")] = base[WORDS.index("hot")] + 1.0 * rng.normal(size=8)
    m[WORDS.index("large")] = base[WORDS.index("big")] + 1.0 * rng.normal(size=8)
    return m


SYN = [("hot", "warm"), ("big", "large"), ("small", "tiny"), ("cold", "chilly")]
ANT = [("hot", "cold"), ("big", "small")]


def cos(m, a, b):
    u, w = m[WORDS.index(a)], m[WORDS.index(b)]
    return float(u @ w / np.linalg.norm(u) / np.linalg.norm(w))


def test_objective_attracts_synonyms_repels_antonyms():
    m = synthetic()
    before = m.copy()
    out = cf.counter_fit(WORDS, m, SYN, ANT, cf.CounterfitConfig(rho=0.05))
    np.testing.assert_array_equal(m, before)              # input untouched
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    for a, b in SYN:
        assert cos(out, a, b) > cos(m, a, b)
        assert cos(out, a, b) > 0.9
    for a, b in ANT:
        assert cos(out, a, b) < cos(m, a, b)
        assert cos(out, a, b) < 0.2
    # words in no constraint and no neighbourhood do not move
    for w in ("cat", "dog", "sun", "moon"):
        i = WORDS.index(w)
        np.testing.assert_allclose(out[i], m[i] / np.linalg.norm(m[i]), atol=1e-6)


def test_vsp_pairs_are_the_original_close_neighbours():
    m = cf._unit(synthetic())
    rows = np.arange(len(WORDS))
    pairs, d0 = cf.vsp_neighbours(m, rows, rho=0.5, max_neighbours=3, batch_size=5)
    full = 1.0 - m @ m.T
    for (i, j), d in zip(pairs, d0):
        assert i != j and d <= 0.5 + 1e-6 and d == pytest.approx(full[i, j], abs=1e-5)
    for i in rows:   # every close neighbour among the 3 nearest is found
        order = [j for j in np.argsort(full[i]) if j != i][:3]
        want = {j for j in order if full[i, j] <= 0.5}
        assert want == {j for a, j in pairs if a == i}


@pytest.fixture
def fake_resources(tmp_path, monkeypatch):
    folder = tmp_path / "constraints"
    folder.mkdir()
    (folder / "ppdb_synonyms.txt").write_text("\n".join(f"{a} {b}" for a, b in SYN) + "\n")
    (folder / "ppdb_antonyms.txt").write_text("\n".join(f"{a} {b}" for a, b in ANT) + "\n")
    m = synthetic()
    calls = []

    def glove_vectors(max_vocab=None):
        calls.append(max_vocab)
        n = len(WORDS) if max_vocab is None else min(max_vocab, len(WORDS))
        return list(WORDS[:n]), m[:n]

    monkeypatch.setattr(res, "glove_vectors", glove_vectors)
    monkeypatch.setenv("RANKLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(cf.CONSTRAINTS_ENV, str(folder))
    from attacks import threat

    monkeypatch.setattr(threat, "_STORES", {})
    return folder, calls


def test_built_once_then_loaded_from_cache(fake_resources, tmp_path):
    folder, calls = fake_resources
    w1, m1 = cf.counterfitted_vectors(folder, max_vocab=None)
    built = list((tmp_path / "cache" / "counterfit").iterdir())
    assert len(built) == 1 and (built[0] / "manifest.json").is_file()
    mtime = (built[0] / "vectors.npy").stat().st_mtime_ns
    w2, m2 = cf.counterfitted_vectors(folder, max_vocab=None)
    assert w1 == w2 == WORDS and np.array_equal(m1, m2)
    assert (built[0] / "vectors.npy").stat().st_mtime_ns == mtime
    assert not any(p.name.startswith("tmp") for p in built[0].parent.iterdir())


def test_counter_fitted_spec(fake_resources):
    folder, _ = fake_resources
    model = load_threat_model("counter-fitted?k=3&min_sim=0.8&max_vocab=none")
    assert "warm" in model.neighbours("hot")
    assert "cold" not in model.neighbours("hot")
    assert "tiny" in model.neighbours("small") and "big" not in model.neighbours("small")
    same = load_threat_model({"source": "counter-fitted", "k": 3, "min_sim": 0.8,
                              "max_vocab": None, "constraints": str(folder)})
    assert same.fingerprint == model.fingerprint
    st = neighbourhood_stats(model, ["hot", "small", "zebra"])
    assert st["n_words"] == 3 and st["share_with_substitute"] == pytest.approx(2 / 3)
    assert st["mean_neighbours"] == pytest.approx(
        (len(model.neighbours("hot")) + len(model.neighbours("small"))) / 3)


def test_missing_constraints_names_the_path(tmp_path, monkeypatch):
    missing = tmp_path / "nowhere"
    with pytest.raises(res.ResourceMissing, match=str(missing)):
        load_threat_model(f"counter-fitted?constraints={missing}")
    monkeypatch.setenv(cf.CONSTRAINTS_ENV, str(missing))
    with pytest.raises(res.ResourceMissing, match="RANKLAB_COUNTERFIT_CONSTRAINTS"):
        cf.constraints_dir()

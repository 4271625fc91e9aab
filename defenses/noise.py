"""Matched noisy training: one spec string -> the training noise of a smoothing mode.

:func:`make_noise_transform` returns a ``doc_transform(docs, epoch, rng) -> list`` for
:func:`rankers.training.train_cross_encoder` (``ranklab train --noise SPEC``) that applies the
same noise the smoothed ranker of that mode draws from:

====================================================  ============================================
``mask:keep=0.3``                                     masking: keep ``round(0.3 n)`` words, others
``mask:keep=0.05,mask=drop``                          -> the tokenizer's mask token (``mask=token``,
``mask:keep_count=4``                                 default) or removed (``drop``); as
                                                      :class:`defenses.masking.MaskedSmoothedRanker`
``clusters:max_size=100``                             cluster substitution: the clustered sets of
``clusters:threat=wordnet+glove,max_size=50,fill=1``  :func:`defenses.clusters.cluster_sets` on the
                                                      training collection's documents (``texts``)
``synonym:wordnet+glove`` or just ``wordnet+glove``   the published sets (CertDR's noisy training)
====================================================  ============================================

Parameters are ``key=value`` pairs after the colon, separated by commas. ``seed`` and
``fresh_per_epoch`` come from the caller (the training seed and ``--noise-fresh``).
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["parse_noise_spec", "make_noise_transform", "NOISE_KINDS"]

NOISE_KINDS = ("mask", "clusters", "synonym")
_KEYS = {"mask": {"keep": float, "keep_count": int, "mask": str},
         "clusters": {"threat": str, "max_size": int, "fill": lambda v: v.lower() in
                      ("1", "true", "yes"), "seed": int},
         "synonym": {}}


def parse_noise_spec(spec: str) -> tuple[str, dict]:
    """``(kind, params)`` of a noise spec (module docstring); a bare threat spec is ``synonym``.

    Raises ValueError (listing the valid forms) for an unknown key or a bad value.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"noise spec must be a non-empty string, got {spec!r}")
    kind, _, rest = spec.partition(":")
    if kind not in ("mask", "clusters", "synonym"):
        return "synonym", {"threat": spec}
    if kind == "synonym":
        return "synonym", {"threat": rest or "wordnet+glove"}
    params: dict = {}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, eq, val = item.partition("=")
        if not eq or key not in _KEYS[kind]:
            raise ValueError(f"bad item {item!r} in noise spec {spec!r}; {kind} takes "
                             f"{sorted(_KEYS[kind])} as key=value pairs, e.g. "
                             "'mask:keep=0.3,mask=drop' or 'clusters:max_size=50'")
        try:
            params[key] = _KEYS[kind][key](val)
        except ValueError as e:
            raise ValueError(f"bad value {val!r} for {key} in noise spec {spec!r}: {e}") from None
    if kind == "mask" and "keep" not in params and "keep_count" not in params:
        raise ValueError(f"noise spec {spec!r}: masking needs keep=SHARE or keep_count=WORDS, "
                         "e.g. 'mask:keep=0.3'")
    return kind, params


def make_noise_transform(spec: str, *, texts: Sequence[str] | None = None,
                         mask_token: str | None = None, seed: int = 0,
                         fresh_per_epoch: bool = False):
    """The ``doc_transform`` for noise ``spec`` (see the module docstring).

    ``texts``: the training collection's documents (needed by ``clusters``, which partitions
    their vocabulary's neighbour graph exactly as the certify job does for ``--sets clustered``).
    ``mask_token``: the trained model's ``tokenizer.mask_token`` (needed by ``mask`` with
    ``mask=token``). ``seed``: draws (and cluster ties, unless the spec sets ``seed``).
    """
    kind, p = parse_noise_spec(spec)
    if kind == "mask":
        from .masking import mask_noise_transform

        return mask_noise_transform(keep=p.get("keep", 0.3), keep_count=p.get("keep_count"),
                                    mask=p.get("mask", "token"), mask_token=mask_token, seed=seed,
                                    fresh_per_epoch=fresh_per_epoch)
    if kind == "clusters":
        if texts is None:
            raise ValueError("noise 'clusters:...' needs texts= (the training collection's "
                             "documents) to build the clusters on their vocabulary")
        from .clusters import cluster_noise_transform

        return cluster_noise_transform(p.get("threat", "wordnet+glove"), texts,
                                       max_size=p.get("max_size", 100),
                                       seed=p.get("seed", seed), fill=p.get("fill", False),
                                       fresh_per_epoch=fresh_per_epoch)
    from .smoothing import noise_transform

    return noise_transform(p["threat"], fresh_per_epoch=fresh_per_epoch, seed=seed)

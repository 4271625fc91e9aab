"""Training job: fine-tune a cross-encoder on a collection's qrels (optionally on noisy copies).

:class:`TrainJobConfig` is the one definition of the ``ranklab train`` parameters;
:func:`run_train_job` builds groups (one positive + ``group_size - 1`` negatives from the
first-stage top ``k``), trains with :func:`rankers.training.train_cross_encoder` and saves the
model with its training card (``ranklab_training.json``).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from ranklab.config import ConfigError, JobConfig, param

__all__ = ["TrainJobConfig", "run_train_job"]


@dataclasses.dataclass(frozen=True)
class TrainJobConfig(JobConfig):
    """Fine-tune a cross-encoder from ``base`` on ``dataset``'s judged queries."""

    kind = "train"
    base: str = param("minilm", "encoder to start from: minilm | a model folder | a hub id")
    dataset: str = param("demo", "collection: demo | a BEIR folder | irds:ID")
    loss: str = param("listwise", "training loss", choices=("listwise", "ranknet", "hinge"))
    epochs: int = param(1, "passes over the training groups", min=1)
    lr: float = param(2e-5, "learning rate", gt=0)
    batch_size: int = param(8, "groups per optimisation step", unit="groups", min=1)
    group_size: int = param(8, "documents per group: 1 positive + group_size-1 negatives",
                            unit="documents", min=2)
    first_stage: str = param("bm25", "first stage the negatives come from")
    k: int = param(50, "negatives come from the first-stage top k", unit="documents", min=2)
    max_queries: int | None = param(None, "use at most this many judged queries (all when not "
                                    "given)", unit="queries", min=1)
    max_length: int = param(256, "model input length", unit="tokens", min=16)
    seed: int = param(0, "seeds the groups, the initialisation and the batch order", min=0)
    noise: str | None = param(None, "train on the noise a smoothed ranker draws from (matched "
                              "noisy training): mask:keep=0.3 | clusters:max_size=100 | a "
                              "threat-model spec for the published synonym sets (defenses.noise)")
    noise_fresh: bool = param(False, "fresh substitution draws every epoch (else one per "
                              "document)")

    def check(self) -> None:
        if self.noise is not None:
            from defenses.noise import parse_noise_spec

            try:
                parse_noise_spec(self.noise)
            except ValueError as e:
                raise ConfigError(f"noise (--noise): {e}") from None


def run_train_job(cfg: TrainJobConfig, out: str | Path, progress: bool = True) -> dict:
    """Train and save to ``out``; returns ``{"path", "groups", "steps", "train_s", "final_loss"}``."""
    from rankers.training import (TrainConfig, groups_from_qrels, new_cross_encoder,
                                  save_cross_encoder, train_cross_encoder)
    from ranklab.collections import load_collection

    col = load_collection(cfg.dataset)
    cands = col.candidates(cfg.first_stage, k=cfg.k)
    groups = groups_from_qrels(col, cands, n_negatives=cfg.group_size - 1, seed=cfg.seed,
                               max_queries=cfg.max_queries)
    if not groups:
        raise ValueError(f"{col.name}: no training group (no judged query has a relevant document "
                         f"and a negative in the {cfg.first_stage} top {cfg.k}); check the qrels")
    model = new_cross_encoder(cfg.base, seed=cfg.seed, max_length=cfg.max_length)
    transform = None
    if cfg.noise:
        from defenses.noise import make_noise_transform

        transform = make_noise_transform(
            cfg.noise, texts=col.documents["text"].tolist(), seed=cfg.seed,
            mask_token=getattr(getattr(model, "tokenizer", None), "mask_token", None),
            fresh_per_epoch=cfg.noise_fresh)
    train_cfg = TrainConfig(loss=cfg.loss, epochs=cfg.epochs, lr=cfg.lr,
                            batch_size=cfg.batch_size, seed=cfg.seed)
    t = time.perf_counter()
    hist = train_cross_encoder(model, groups, train_cfg, doc_transform=transform,
                               progress=progress)
    secs = time.perf_counter() - t
    path = save_cross_encoder(model, out, {"base": cfg.base, "dataset": col.name,
                                           "groups": len(groups), "job": cfg.to_params(),
                                           "command": cfg.command(), **hist["config"]})
    tail = hist["loss"][-20:]
    return {"path": str(path), "groups": len(groups), "steps": hist["steps"],
            "train_s": secs, "final_loss": sum(tail) / max(len(tail), 1)}

"""Training loops for cross-encoders (used by `ranklab train`, surrogates, imitation and the
training-time defenses).

Data are *groups*: ``(query, [positive, negative_1, ..., negative_{G-1}])``; pairwise losses use
(positive, negative_i) pairs, the listwise loss the whole group. Losses (scores are raw logits):

``hinge``     ``max(0, margin - (s+ - s-))``, margin 1
``ranknet``   ``BCE(sigmoid(s+ - s-), 1 - eps)``: RankNet with label smoothing ``eps`` (0.1)
``listwise``  localized contrastive estimation: ``-log softmax(s)[positive]`` over the group

Everything random (head initialisation, shuffling, dropout) flows from ``seed``.
Models are saved with ``save_pretrained(safe_serialization=True)`` (safetensors) plus the
tokenizer and a ``ranklab_training.json`` with the training parameters.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .encoders import CrossEncoder
from .loading import resolve_model_path

LOSSES = ("hinge", "ranknet", "listwise")


@dataclass
class Group:
    query: str
    docs: list  # docs[0] is the positive (or the better document), the rest negatives
    weight: float = 1.0


@dataclass
class TrainConfig:
    loss: str = "listwise"
    epochs: int = 1
    lr: float = 2e-5
    batch_size: int = 8  # groups per step
    margin: float = 1.0
    label_smoothing: float = 0.1
    warmup: float = 0.1  # share of steps with linear warm-up
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        """Checked here, before any model is touched: a bad value never trains or saves."""
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; use one of {LOSSES}")

        def integer(name, low):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}"
                                 + (" (an untrained model is never saved)" if name == "epochs"
                                    else ""))

        def number(name, low, high=math.inf, low_open=False, high_open=False):
            v = getattr(self, name)
            ok = isinstance(v, (int, float, np.floating)) and not isinstance(v, bool) and \
                math.isfinite(v) and (v > low if low_open else v >= low) and \
                (v < high if high_open else v <= high)
            if not ok:
                lo, hi = "(" if low_open else "[", ")" if high_open or high == math.inf else "]"
                raise ValueError(f"{name} must be a number in {lo}{low}, {high}{hi}, got {v!r}")

        integer("epochs", 1)
        integer("batch_size", 1)
        integer("seed", 0)
        number("lr", 0.0, low_open=True)
        number("margin", 0.0)
        number("label_smoothing", 0.0, 1.0, high_open=True)
        number("warmup", 0.0, 1.0)
        number("weight_decay", 0.0)
        number("max_grad_norm", 0.0, low_open=True)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def new_cross_encoder(base: str, seed: int = 0, **kw) -> CrossEncoder:
    """A cross-encoder whose encoder starts from ``base`` (``minilm``, a folder or hub id) with
    a fresh one-logit head initialised from ``seed``. An existing sequence-classification
    checkpoint keeps its head."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = resolve_model_path(base)
    cfg = AutoConfig.from_pretrained(path)
    archs = cfg.architectures or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return CrossEncoder(path, **kw)
    torch.manual_seed(seed)
    ce = CrossEncoder.__new__(CrossEncoder)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    ce._init_from(path, model, **kw)
    return ce


def pair_loss(s_pos: torch.Tensor, s_neg: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    diff = s_pos - s_neg
    if cfg.loss == "hinge":
        return torch.clamp(cfg.margin - diff, min=0)
    target = torch.full_like(diff, 1.0 - cfg.label_smoothing)
    return torch.nn.functional.binary_cross_entropy_with_logits(diff, target, reduction="none")


def group_loss(scores: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Loss of one group's scores (positive first), shape ``()``."""
    if cfg.loss == "listwise":
        return -torch.log_softmax(scores, dim=0)[0]
    return pair_loss(scores[0].expand(len(scores) - 1), scores[1:], cfg).mean()


def train_cross_encoder(model: CrossEncoder, groups: Sequence[Group], cfg: TrainConfig | None = None,
                        progress: bool = True,
                        doc_transform: Callable[[list, int, np.random.Generator], list] | None = None,
                        on_step: Callable[[int, list], bool] | None = None,
                        desc: str | None = None) -> dict:
    """Fine-tune ``model`` in place on ``groups``; returns ``{"loss": [per-step losses], "steps":
    planned steps, "steps_done", "stopped_early", "config"}``.

    ``doc_transform(docs, epoch, rng)`` may rewrite the documents of each batch (e.g. random
    substitutions for noisy training); it must not modify its input list. ``on_step(step,
    losses)`` is called after every optimisation step (1-based ``step``, the losses so far) in
    train mode; returning True stops training (early stopping). ``desc`` labels the progress bar.
    """
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    cfg = cfg or TrainConfig()
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"cfg must be a TrainConfig, got {type(cfg).__name__}")
    n_given = len(groups)
    groups = [g for g in groups if len(g.docs) >= 2]
    if not groups:
        raise ValueError(
            f"no training groups with a positive and at least one negative ({n_given} given): "
            "check that the qrels judge documents among the candidates (more candidates: a "
            "larger k) and that the collection has judged positives; nothing was trained")
    seed_everything(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = model.model
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * ((len(groups) + cfg.batch_size - 1) // cfg.batch_size)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup * steps), steps)
    history: list[float] = []
    net.train()
    bar = tqdm(total=steps, desc=desc or f"train {cfg.loss}", disable=not progress)
    stopped = False
    try:
        for epoch in range(cfg.epochs):
            order = rng.permutation(len(groups))
            for b in range(0, len(order), cfg.batch_size):
                batch = [groups[i] for i in order[b: b + cfg.batch_size]]
                queries = [g.query for g in batch for _ in g.docs]
                docs = [d for g in batch for d in g.docs]
                if doc_transform is not None:
                    docs = doc_transform(list(docs), epoch, rng)
                scores = model.forward_scores(queries, docs)
                losses, off = [], 0
                for g in batch:
                    losses.append(g.weight * group_loss(scores[off: off + len(g.docs)], cfg))
                    off += len(g.docs)
                loss = torch.stack(losses).mean()
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                sched.step()
                history.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(history[-20:]):.4f}")
                if on_step is not None and on_step(len(history), history):
                    stopped = True
                    break
            if stopped:
                break
    finally:
        bar.close()
        net.eval()
    return {"loss": history, "steps": steps, "steps_done": len(history), "stopped_early": stopped,
            "config": asdict(cfg)}


def save_cross_encoder(model: CrossEncoder, out: str | Path, metadata: dict | None = None) -> Path:
    """Save weights (safetensors), config and tokenizer so ``load_ranker("cross-encoder:OUT")``
    (or ``load_ranker(OUT)``) loads the model back."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.model.save_pretrained(out, safe_serialization=True)
    model.tokenizer.save_pretrained(out)
    (out / "ranklab_training.json").write_text(json.dumps(metadata or {}, indent=2, default=str))
    return out


def groups_from_qrels(collection, candidates, n_negatives: int = 7, seed: int = 0,
                      min_label: int = 1, max_queries: int | None = None) -> list[Group]:
    """Training groups: every judged positive (label >= ``min_label``) with ``n_negatives``
    negatives drawn (seeded) from the query's candidates that are not judged positive."""
    rng = np.random.default_rng(seed)
    qrels = collection.qrels
    pos = qrels[qrels["label"] >= min_label].groupby("qid")["docno"].apply(list).to_dict()
    cands = candidates.groupby("qid")["docno"].apply(list).to_dict()
    groups = []
    qids = sorted(set(pos) & set(cands))
    if max_queries is not None:
        qids = [qids[i] for i in sorted(rng.choice(len(qids), size=min(max_queries, len(qids)), replace=False))]
    for qid in qids:
        negs = [d for d in cands[qid] if d not in set(pos[qid])]
        if not negs:
            continue
        query = collection.query_text(qid)
        for p in pos[qid]:
            try:
                ptext = collection.text(p)
            except Exception:
                continue
            pick = rng.choice(len(negs), size=min(n_negatives, len(negs)), replace=False)
            groups.append(Group(query, [ptext] + [collection.text(negs[i]) for i in pick]))
    return groups

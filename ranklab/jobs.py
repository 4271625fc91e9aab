"""Job kinds: one typed config (:mod:`ranklab.config`) and one run function per kind.

``KINDS[name]`` is a :class:`JobKind`; ``run(config, workdir=None, progress=False)`` returns a
flat dict of metrics (one row of a sweep's ``results.jsonl``); artifacts go under ``workdir``.
Kinds: ``evaluate`` (clean effectiveness, below), ``attack`` (:mod:`ranklab.attack_job`) and
``certify`` (:mod:`ranklab.certify_job`, which also writes the certification report). A new job
kind adds a config class and a run function here; the CLI, sweeps, job ids and reproduce
commands follow from the config.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

from ranklab.config import RankingConfig, param
from ranklab.evaluate import DEFAULT_MEASURES

__all__ = ["EvaluateConfig", "JobKind", "KINDS", "rank_run", "evaluate_job"]


@dataclasses.dataclass(frozen=True)
class EvaluateConfig(RankingConfig):
    """Rank first-stage candidates with a ranker and evaluate with ir_measures."""

    kind = "evaluate"
    measures: tuple[str, ...] = param(DEFAULT_MEASURES, "ir_measures names (trec_eval names such "
                                      "as ndcg_cut_10 are accepted too)")


def rank_run(cfg: RankingConfig):
    """``(collection, run, seconds)``: ``cfg.ranker`` over the first-stage top ``cfg.k`` of the
    (sampled) queries; BM25 over BM25 candidates is the candidate run itself."""
    from ranklab.collections import load_collection

    col = load_collection(cfg.dataset).sample_queries(cfg.queries, cfg.seed)
    cands = col.candidates(cfg.first_stage, k=cfg.k)
    t = time.perf_counter()
    if cfg.ranker == "bm25" and cfg.first_stage == "bm25":
        run = cands
    else:
        run = col.ranker(cfg.ranker, **cfg.ranker_kwargs()).transform(cands)
    return col, run, time.perf_counter() - t


def evaluate_job(cfg: EvaluateConfig, workdir: str | None = None, progress: bool = False) -> dict:
    import ranklab
    from ranklab.collections import write_trec_run

    col, run, secs = rank_run(cfg)
    if workdir:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        write_trec_run(run, Path(workdir) / "run.trec", tag=cfg.ranker)
    return {**ranklab.evaluate(run, col.qrels, list(cfg.measures)),
            "n_queries": int(run["qid"].nunique()), "rank_s": round(secs, 3)}


@dataclasses.dataclass(frozen=True)
class JobKind:
    config: type
    run: Callable[..., dict]


def _attack(cfg, workdir=None, progress=False) -> dict:
    from ranklab.attack_job import run_attack_job

    out = str(Path(workdir) / "attack.jsonl") if workdir else None
    if out and Path(out).exists():
        Path(out).unlink()  # a rerun of an unfinished job starts its artifact afresh
    _, summary = run_attack_job(cfg, out=out, progress=progress)
    return summary


def _certify(cfg, workdir=None, progress=False) -> dict:
    from ranklab.certify_job import run_certify_job

    return run_certify_job(cfg, out_dir=workdir, progress=progress)


def _kinds() -> dict[str, JobKind]:
    from ranklab.attack_job import AttackConfig
    from ranklab.certify_job import CertifyConfig

    return {"evaluate": JobKind(EvaluateConfig, evaluate_job),
            "attack": JobKind(AttackConfig, _attack),
            "certify": JobKind(CertifyConfig, _certify)}


KINDS: dict[str, JobKind] = _kinds()

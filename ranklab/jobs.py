"""Job kinds a sweep can run. Each takes plain JSON-able arguments and returns a dict of flat
metrics (one row of ``results.jsonl``); artifacts go under ``workdir``.

Kinds: ``evaluate`` (clean effectiveness), ``attack`` (see :mod:`ranklab.attack_job`) and
``certify`` (see :mod:`ranklab.certify_job`, which also writes the certification report).
"""
from __future__ import annotations

import time
from pathlib import Path


def evaluate_job(ranker: str = "minilm", dataset: str = "demo", seed: int = 0, k: int = 100,
                 first_stage: str = "bm25", measures=("nDCG@10", "RR@10", "R@100"),
                 queries: int | None = None, workdir: str | None = None, progress: bool = False) -> dict:
    import ranklab
    from ranklab.cli import _select_queries, ranker_for
    from ranklab.collections import load_collection, write_trec_run

    col = _select_queries(load_collection(dataset), queries, seed)
    cands = col.candidates(first_stage, k=k)
    t = time.perf_counter()
    run = cands if ranker == "bm25" and first_stage == "bm25" else ranker_for(ranker, col).transform(cands)
    secs = time.perf_counter() - t
    if workdir:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        write_trec_run(run, Path(workdir) / "run.trec", tag=ranker)
    return {**ranklab.evaluate(run, col.qrels, list(measures)), "n_queries": int(run["qid"].nunique()),
            "rank_s": round(secs, 3)}


def attack_job(workdir: str | None = None, progress: bool = False, **params) -> dict:
    from ranklab.attack_job import run_attack_job

    out = str(Path(workdir) / "attack.jsonl") if workdir else None
    if out and Path(out).exists():
        Path(out).unlink()  # a rerun of an unfinished job starts its artifact afresh
    _, summary = run_attack_job(out=out, progress=progress, **params)
    return summary


def certify_job(workdir: str | None = None, progress: bool = False, **params) -> dict:
    from ranklab.certify_job import run_certify_job

    return run_certify_job(out_dir=workdir, progress=progress, **params)


KINDS = {"evaluate": evaluate_job, "attack": attack_job, "certify": certify_job}

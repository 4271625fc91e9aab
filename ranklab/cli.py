"""The ``ranklab`` command. ``ranklab COMMAND --help`` describes each command.

The flags of ``rank``, ``evaluate``, ``train``, ``attack`` and ``certify`` are derived from the
job configs (:mod:`ranklab.config`, :mod:`ranklab.jobs`): a parameter is defined once, with its
default, unit and help. This module only adds each command's output options and printing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub unless the user asks
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ranklab.config import ConfigError, HelpFormatter  # noqa: E402
from ranklab.display import print_table  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

EXAMPLES = {
    "rank": ["ranklab rank --ranker minilm --dataset demo --k 100 --out run.trec",
             "ranklab rank --ranker bm25 --dataset ../shared/data/collections/cranfield --out bm25.trec"],
    "evaluate": ["ranklab evaluate --ranker minilm --dataset demo --measures nDCG@10 RR@10 --json",
                 "ranklab evaluate --ranker bm25 --dataset ../shared/data/collections/cranfield"],
    "train": ["ranklab train --base minilm --dataset demo --out models/ce --epochs 1",
              "ranklab train --base minilm --dataset demo --out models/ce-noisy --noise wordnet+glove"],
    "attack": ["ranklab attack --ranker minilm --dataset demo --targets easy5 --queries 5 --out rows.jsonl",
               "ranklab attack --method textattack --queries 3 --budget 50 --json"],
    "certify": ["ranklab certify --ranker minilm --dataset demo --k 10 --n-samples 200 --queries 8",
                "ranklab certify --k 10 --mode adaptive --n-samples 1000 --ks 1 3 5 --out reports/demo"],
    "sweep": ["ranklab sweep configs/demo.yaml --out runs/demo",
              "ranklab sweep configs/cranfield.yaml --var DATASET=../shared/data/collections/cranfield --dry-run"],
    "main": ["ranklab main", "ranklab main --out runs/demo2"],
}


def _epilog(name: str) -> str:
    return "examples:\n" + "\n".join(f"  {x}" for x in EXAMPLES[name])


def _json_safe(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, float) and math.isnan(v):
            v = None
        elif hasattr(v, "item"):
            v = v.item()
        out[k] = v
    return out


# -- output paths: checked before any expensive work ---------------------------------------------
def _writable_file(path: str, what: str) -> Path:
    """``path`` as a file to write: not a folder, its folder creatable and writable."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConfigError(f"{what} {p} is a folder; give a file name (e.g. {p / 'out'})")
    parent = p.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the folder {parent} for {what}: {e.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"cannot write {what} into {parent} (permission denied); choose "
                          "another path")
    if p.exists() and not os.access(p, os.W_OK):
        raise ConfigError(f"cannot write {what} {p} (permission denied); choose another path")
    return p


def _writable_dir(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{what} {p} exists and is a file; give a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the folder {p} for {what}: {e.strerror}") from None
    if not os.access(p, os.W_OK):
        raise ConfigError(f"cannot write {what} into {p} (permission denied); choose another folder")
    return p


# -- commands ---------------------------------------------------------------------------------
def cmd_rank(args) -> int:
    from ranklab.collections import write_trec_run
    from ranklab.jobs import EvaluateConfig, rank_run

    cfg = EvaluateConfig.from_args(args)
    out = _writable_file(args.out, "the run file (--out)")
    col, run, secs = rank_run(cfg)
    write_trec_run(run, out, tag=cfg.ranker.replace(" ", "_"))
    print(f"ranked {run['qid'].nunique()} queries x {cfg.k} candidates of {col.name} with "
          f"{cfg.ranker} in {secs:.1f}s -> {out}")
    return 0


def cmd_evaluate(args) -> int:
    import ranklab
    from ranklab.jobs import EvaluateConfig, rank_run

    cfg = EvaluateConfig.from_args(args)
    col, run, secs = rank_run(cfg)
    res = ranklab.evaluate(run, col.qrels, list(cfg.measures))
    print_table([{"ranker": cfg.ranker, "dataset": col.name, "queries": int(run["qid"].nunique()),
                  **res, "seconds": round(secs, 1)}])
    if args.json:
        print(json.dumps(res))
    return 0


def cmd_train(args) -> int:
    from ranklab.train_job import TrainJobConfig, run_train_job

    cfg = TrainJobConfig.from_args(args)
    out = _writable_dir(args.out, "the model folder (--out)")
    info = run_train_job(cfg, out, progress=not args.quiet)
    print(f"trained on {info['groups']} groups for {info['steps']} steps in {info['train_s']:.0f}s; "
          f"final loss {info['final_loss']:.4f}")
    print(f"saved to {info['path']}; load it with load_ranker('cross-encoder:{info['path']}')")
    return 0


def cmd_attack(args) -> int:
    from ranklab.attack_job import AttackConfig, run_attack_job

    cfg = AttackConfig.from_args(args)
    out = _writable_file(args.out, "the results file (--out)") if args.out else None
    before = _count_lines(out) if out is not None and out.exists() else 0
    results, summary = run_attack_job(cfg, out=str(out) if out else None, progress=not args.quiet)
    headline = ["n_targets", "n_errors", "ASR", "boost", "T5R", "T10R", "PP", "inserted_share",
                "spamicity", "ppl_ratio", "similarity", "queries_mean", "queries_max",
                "wall_s_mean"]
    print_table([{k: summary[k] for k in headline if k in summary
                  and not (isinstance(summary[k], float) and math.isnan(summary[k]))}])
    if out is not None:
        note = f" (appended: the file now holds {before + len(results)} rows)" if before else ""
        print(f"{len(results)} result rows -> {out}{note}")
    if args.json:
        print(json.dumps(_json_safe(summary), default=str))
    n_err = int(summary.get("n_errors", 0))
    if len(results) and n_err == len(results):
        errors = sorted({str(e) for e in results["error"] if e})
        print(f"ranklab attack: every target ({n_err}) failed with an error, e.g. {errors[0]}",
              file=sys.stderr)
        return 1
    if n_err:
        print(f"warning: {n_err} of {len(results)} targets could not be attacked (see the 'error' "
              "column of the rows)", file=sys.stderr)
    return 0


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def cmd_certify(args) -> int:
    from ranklab.certify_job import CertifyConfig, run_certify_job

    cfg = CertifyConfig.from_args(args)
    out = _writable_dir(args.out or str(Path("runs") / "certify" / cfg.job_id()),
                        "the report folder (--out)")
    summary = run_certify_job(cfg, out_dir=str(out), progress=not args.quiet)
    rows = [{"K": K, "CRQ": summary.get(f"CRQ@{K}")} for K in cfg.cutoffs
            if f"CRQ@{K}" in summary]
    print_table(rows)
    for key in ("n_queries", "nDCG@10_base", "nDCG@10_smoothed", "n_forward", "wall_s"):
        if key in summary:
            print(f"{key}: {summary[key]}")
    print(f"report: {out / 'report.html'} (also report.md, report.json)")
    if args.json:
        print(json.dumps(_json_safe(summary), default=str))
    return 0


def cmd_main(args) -> int:
    """The lab's main job: the demo sweep (rank, attack, certify, report) on the built-in default."""
    from ranklab.sweep import run_sweep

    config = Path(args.config) if args.config else CONFIG_DIR / "demo.yaml"
    t = time.perf_counter()
    table = run_sweep(config, args.out, jobs=1)
    n_failed = _report_sweep(table, args.out)
    print(f"\n{len(table)} jobs in {time.perf_counter() - t:.0f}s; results: {args.out}/results.jsonl")
    if "report" in table:
        for r in table["report"].dropna().tolist():
            if r:
                print(f"certification report: {r}")
    return 1 if n_failed else 0


def _report_sweep(table, out) -> int:
    """Print the summary table and return the number of jobs that failed and never succeeded."""
    import pandas as pd

    from ranklab.sweep import failed_jobs, summarize

    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(summarize(table).to_string(index=False, na_rep="") if len(table) else "(no finished jobs)")
    failed = failed_jobs(out, table)
    if failed:
        print(f"{len(failed)} job(s) failed: see {Path(out) / 'failures.jsonl'}; rerun the same "
              "command to retry them", file=sys.stderr)
    return len(failed)


def cmd_sweep(args) -> int:
    from ranklab.sweep import run_sweep

    variables = {}
    for v in args.var or []:
        if "=" not in v:
            raise ConfigError(f"--var {v!r}: write NAME=VALUE")
        name, value = v.split("=", 1)
        variables[name] = value
    out = args.out or str(Path("runs") / Path(args.config).stem)
    t = time.perf_counter()
    table = run_sweep(args.config, out, jobs=args.jobs, backend=args.backend, dry_run=args.dry_run,
                      variables=variables, retry_failed=not args.no_retry)
    if args.dry_run:
        for r in table.itertuples():
            print(f"{r.job_id}  {r.kind:9} {r.ranker:10} {Path(r.dataset).name:12} seed={r.seed}  {r.params}")
        print(f"{len(table)} jobs")
        return 0
    n_failed = _report_sweep(table, out)
    print(f"{len(table)} jobs finished, {n_failed} failed in {time.perf_counter() - t:.0f}s; "
          f"results: {out}/results.jsonl")
    return 1 if n_failed else 0


# -- parser -----------------------------------------------------------------------------------
def _sub(sub, name: str, help_: str, func, config=None, exclude=()):
    p = sub.add_parser(name, help=help_, description=help_, epilog=_epilog(name),
                       formatter_class=HelpFormatter)
    if config is not None:
        config.add_arguments(p, exclude=exclude)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    from ranklab.attack_job import AttackConfig
    from ranklab.certify_job import CertifyConfig
    from ranklab.jobs import EvaluateConfig
    from ranklab.train_job import TrainJobConfig

    ap = argparse.ArgumentParser(prog="ranklab", description="The ranking-robustness lab.",
                                 formatter_class=HelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)

    p = _sub(sub, "rank", "rerank first-stage candidates and write a TREC run", cmd_rank,
             EvaluateConfig, exclude=("measures",))
    p.add_argument("--out", required=True, help="TREC run file to write")

    p = _sub(sub, "evaluate", "rank and evaluate with ir_measures", cmd_evaluate, EvaluateConfig)
    p.add_argument("--json", action="store_true", help="print a JSON object as the last line")

    p = _sub(sub, "train", "fine-tune a cross-encoder on a collection's qrels", cmd_train,
             TrainJobConfig)
    p.add_argument("--out", required=True, help="folder to save the model in")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = _sub(sub, "attack", "attack a ranker's lists (word substitution)", cmd_attack, AttackConfig)
    p.add_argument("--out", default=None, help="JSONL file: one row per target, appended as they "
                   "finish (an existing file is appended to)")
    p.add_argument("--json", action="store_true", help="print the summary as a JSON object last")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = _sub(sub, "certify", "certify top-K robustness by randomized smoothing; write a report",
             cmd_certify, CertifyConfig)
    p.add_argument("--out", default=None, help="report folder (report.html, report.md, "
                   "report.json); default runs/certify/<job id>")
    p.add_argument("--json", action="store_true", help="print the summary as a JSON object last")
    p.add_argument("--quiet", action="store_true", help="no progress bars or estimates")

    p = _sub(sub, "sweep", "run a config file's grid of studies (resumable)", cmd_sweep)
    p.add_argument("config", help="YAML/TOML sweep config (see ranklab/sweep.py)")
    p.add_argument("--out", default=None, help="results folder (default runs/<config name>)")
    p.add_argument("--jobs", type=int, default=1, help="parallel worker processes")
    p.add_argument("--backend", default="local", choices=["local", "ray"])
    p.add_argument("--dry-run", action="store_true", help="list the jobs and exit")
    p.add_argument("--var", action="append", metavar="NAME=VALUE",
                   help="value for ${NAME} in the config (the only source of ${...} values)")
    p.add_argument("--no-retry", action="store_true", help="do not retry jobs that failed before")

    p = _sub(sub, "main", "the lab's main job: the demo sweep (rank, attack, certify, report)",
             cmd_main)
    p.add_argument("--config", default=None, help="sweep config (default configs/demo.yaml)")
    p.add_argument("--out", default="runs/demo", help="results folder")
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as e:
        if os.environ.get("RANKLAB_DEBUG"):
            raise
        msg = str(e)
        if isinstance(e, OSError) and e.filename and str(e.filename) not in msg:
            msg = f"{e.strerror or msg}: {e.filename}"
        if isinstance(e, OSError) and not isinstance(e, FileNotFoundError):
            msg += " (check the path, its permissions and the free disk space)"
        print(f"ranklab {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

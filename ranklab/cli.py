"""The ``ranklab`` command. ``ranklab COMMAND --help`` describes each command."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub unless the user asks
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _print_table(rows: list[dict], floatfmt: str = "{:.4f}") -> None:
    if not rows:
        print("(no rows)")
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[floatfmt.format(r[c]) if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols]
             for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def ranker_for(spec: str, col=None, **kw):
    """``load_ranker`` with BM25 fitted on the collection when one is given."""
    from rankers import load_ranker

    if spec == "bm25" and col is not None:
        return col.bm25()
    return load_ranker(spec, **kw)


def _select_queries(col, n: int | None, seed: int = 0):
    if n is None or n >= len(col.queries):
        return col
    import numpy as np

    qids = col.queries["qid"].tolist()
    pick = sorted(np.random.default_rng(seed).choice(len(qids), size=n, replace=False))
    return col.subset([qids[i] for i in pick])


def _rank_run(args):
    from ranklab.collections import load_collection

    col = _select_queries(load_collection(args.dataset), args.queries, args.seed)
    cands = col.candidates(args.first_stage, k=args.k)
    ranker = ranker_for(args.ranker, col, **({"dtype": args.dtype} if args.dtype != "fp32" else {}))
    t = time.perf_counter()
    run = cands if args.ranker == "bm25" and args.first_stage == "bm25" else ranker.transform(cands)
    return col, run, time.perf_counter() - t


def cmd_rank(args) -> int:
    from ranklab.collections import write_trec_run

    col, run, secs = _rank_run(args)
    write_trec_run(run, args.out, tag=args.ranker.replace(" ", "_"))
    print(f"ranked {run['qid'].nunique()} queries x {args.k} candidates of {col.name} with "
          f"{args.ranker} in {secs:.1f}s -> {args.out}")
    return 0


def cmd_evaluate(args) -> int:
    import ranklab

    col, run, secs = _rank_run(args)
    res = ranklab.evaluate(run, col.qrels, args.measures)
    _print_table([{"ranker": args.ranker, "dataset": col.name, "queries": int(run["qid"].nunique()),
                   **res, "seconds": round(secs, 1)}])
    if args.json:
        print(json.dumps(res))
    return 0


def cmd_train(args) -> int:
    from rankers.training import TrainConfig, groups_from_qrels, new_cross_encoder, save_cross_encoder
    from ranklab.collections import load_collection

    col = load_collection(args.dataset)
    cands = col.candidates(args.first_stage, k=args.k)
    groups = groups_from_qrels(col, cands, n_negatives=args.group_size - 1, seed=args.seed,
                               max_queries=args.max_queries)
    model = new_cross_encoder(args.base, seed=args.seed, max_length=args.max_length)
    cfg = TrainConfig(loss=args.loss, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                      seed=args.seed)
    transform = None
    if getattr(args, "noise", None):
        from defenses.smoothing import noise_transform

        transform = noise_transform(args.noise, fresh_per_epoch=args.noise_fresh, seed=args.seed)
    t = time.perf_counter()
    hist = train_cross_encoder_cli(model, groups, cfg, transform)
    out = save_cross_encoder(model, args.out, {"base": args.base, "dataset": col.name, "groups": len(groups),
                                               "noise": getattr(args, "noise", None), **hist["config"]})
    print(f"trained on {len(groups)} groups for {hist['steps']} steps in {time.perf_counter() - t:.0f}s; "
          f"final loss {sum(hist['loss'][-20:]) / len(hist['loss'][-20:]):.4f}")
    print(f"saved to {out}; load it with load_ranker('cross-encoder:{out}')")
    return 0


def train_cross_encoder_cli(model, groups, cfg, transform):
    from rankers.training import train_cross_encoder

    return train_cross_encoder(model, groups, cfg, doc_transform=transform)


CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def cmd_main(args) -> int:
    """The lab's main job: the demo sweep (rank, attack, certify, report) on the built-in default."""
    from ranklab.sweep import run_sweep, summarize

    import pandas as pd

    config = Path(args.config) if args.config else CONFIG_DIR / "demo.yaml"
    t = time.perf_counter()
    table = run_sweep(config, args.out, jobs=1)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(summarize(table).to_string(index=False, na_rep="") if len(table) else "(no finished jobs)")
    print(f"\n{len(table)} jobs in {time.perf_counter() - t:.0f}s; results: {args.out}/results.jsonl")
    reports = [r for r in (table.get("report", pd.Series(dtype=object)).dropna().tolist()) if r]
    for r in reports:
        print(f"certification report: {r}")
    failed = Path(args.out) / "failures.jsonl"
    done = set(table["job_id"]) if len(table) else set()
    if failed.exists() and any(json.loads(x)["job_id"] not in done
                               for x in failed.read_text().splitlines() if x.strip()):
        print(f"some jobs failed: see {failed}; rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


def cmd_sweep(args) -> int:
    import pandas as pd

    from ranklab.sweep import run_sweep, summarize

    variables = dict(v.split("=", 1) for v in (args.var or []))
    out = args.out or str(Path("runs") / Path(args.config).stem)
    t = time.perf_counter()
    table = run_sweep(args.config, out, jobs=args.jobs, backend=args.backend, dry_run=args.dry_run,
                      variables=variables, retry_failed=not args.no_retry)
    if args.dry_run:
        for r in table.itertuples():
            print(f"{r.job_id}  {r.kind:9} {r.ranker:10} {Path(r.dataset).name:12} seed={r.seed}  {r.params}")
        print(f"{len(table)} jobs")
        return 0
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(summarize(table).to_string(index=False, na_rep="") if len(table) else "(no finished jobs)")
    failures = Path(out) / "failures.jsonl"
    n_failed = 0
    if failures.exists():
        done = set(table["job_id"]) if len(table) else set()
        n_failed = len({json.loads(line)["job_id"] for line in failures.read_text().splitlines()
                        if line.strip()} - done)
    print(f"{len(table)} jobs finished, {n_failed} failed (see {failures}) in "
          f"{time.perf_counter() - t:.0f}s; results: {out}/results.jsonl")
    return 1 if n_failed else 0


def _json_safe(d: dict) -> dict:
    import math

    out = {}
    for k, v in d.items():
        if isinstance(v, float) and math.isnan(v):
            v = None
        elif hasattr(v, "item"):
            v = v.item()
        out[k] = v
    return out


def cmd_attack(args) -> int:
    from ranklab.attack_job import run_attack_job

    results, summary = run_attack_job(
        ranker=args.ranker, dataset=args.dataset, method=args.method, targets=args.targets,
        n_queries=args.queries, seed=args.seed, threat=args.threat, surrogate=args.surrogate,
        surrogate_queries=args.surrogate_queries, surrogate_max_pairs=args.surrogate_max_pairs,
        max_words=args.max_words, max_pp=args.max_pp, budget=args.budget, k=args.k,
        first_stage=args.first_stage, out=args.out, progress=not args.quiet)
    headline = ["n_targets", "ASR", "boost", "T5R", "T10R", "PP", "similarity", "queries_mean",
                "queries_max", "wall_s_mean"]
    _print_table([{k: summary[k] for k in headline if k in summary}])
    if args.out:
        print(f"{len(results)} result rows -> {args.out}")
    if args.json:
        print(json.dumps(_json_safe(summary), default=str))
    return 0


def _center_arg(text: str):
    if text == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--center must be 'auto' or a number, got {text!r}") from None


def cmd_certify(args) -> int:
    from ranklab.certify_job import run_certify_job

    ks = [int(x) for x in args.ks] if args.ks else [K for K in (1, 3, 5, 10, 20) if K < args.k]
    summary = run_certify_job(
        ranker=args.ranker, dataset=args.dataset, seed=args.seed, first_stage=args.first_stage,
        k=args.k, samples=args.samples, ks=ks, alpha=args.alpha, mode=args.mode, bound=args.bound,
        R=args.R, threat=args.threat, temperature=args.temperature, n_queries=args.queries,
        symmetric=args.symmetric, n0=args.n0,
        futility=None if args.futility < 0 else args.futility, center=_center_arg(args.center),
        max_set_size=args.max_set_size, dtype=args.dtype, out_dir=args.out,
        progress=not args.quiet)
    rows = [{"K": K, "CRQ": summary.get(f"CRQ@{K}")} for K in ks if f"CRQ@{K}" in summary]
    _print_table(rows)
    for key in ("n_queries", "nDCG@10_base", "nDCG@10_smoothed", "n_forward", "wall_s"):
        if key in summary:
            print(f"{key}: {summary[key]}")
    if args.out:
        print(f"report: {Path(args.out) / 'report.html'} (also report.md, report.json)")
    if args.json:
        print(json.dumps(_json_safe(summary), default=str))
    return 0


def _common(p, ranker_default="minilm"):
    p.add_argument("--ranker", default=ranker_default,
                   help="minilm | bm25 | bi-encoder:PATH | cross-encoder:PATH | model folder")
    p.add_argument("--dataset", default="demo", help="demo | BEIR folder | irds:ID")
    p.add_argument("--first-stage", default="bm25", help="bm25 or a run shipped with the dataset")
    p.add_argument("--k", type=int, default=100, help="candidates per query from the first stage")
    p.add_argument("--queries", type=int, default=None, help="use a seeded sample of N queries")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ranklab", description="The ranking-robustness lab.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("rank", help="rerank first-stage candidates and write a TREC run")
    _common(p)
    p.add_argument("--out", required=True, help="TREC run file to write")
    p.set_defaults(func=cmd_rank)

    p = sub.add_parser("evaluate", help="rank and evaluate with ir_measures")
    _common(p)
    p.add_argument("--measures", nargs="+", default=["nDCG@10", "RR@10", "AP", "R@100"])
    p.add_argument("--json", action="store_true", help="print a JSON object as the last line")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("train", help="fine-tune a cross-encoder on a collection's qrels")
    p.add_argument("--base", default="minilm", help="minilm | model folder | hub id")
    p.add_argument("--dataset", default="demo")
    p.add_argument("--out", required=True, help="folder to save the model in")
    p.add_argument("--loss", default="listwise", choices=["listwise", "ranknet", "hinge"])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--batch-size", type=int, default=8, help="groups per step")
    p.add_argument("--group-size", type=int, default=8, help="1 positive + G-1 negatives")
    p.add_argument("--first-stage", default="bm25")
    p.add_argument("--k", type=int, default=50, help="negatives come from the top-k candidates")
    p.add_argument("--max-queries", type=int, default=None)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", default=None, help="threat-model spec: train on randomly substituted copies")
    p.add_argument("--noise-fresh", action="store_true", help="fresh substitution draws every epoch")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("attack", help="attack a ranker's lists (word substitution)")
    _common(p)
    p.add_argument("--method", default="word-substitution", choices=["word-substitution", "textattack"])
    p.add_argument("--targets", default="easy5", help="easy5 | hard5 | mixture | ranks:51,75,100")
    p.add_argument("--threat", default="wordnet+glove", help="threat-model spec (attacks.threat)")
    p.add_argument("--surrogate", default="imitation", help="imitation | victim (white-box) | model path")
    p.add_argument("--surrogate-queries", type=int, default=20, help="attacker queries for imitation")
    p.add_argument("--surrogate-max-pairs", type=int, default=None, help="cap on imitation training groups")
    p.add_argument("--max-words", type=int, default=10)
    p.add_argument("--max-pp", type=float, default=0.1, help="max share of words changed")
    p.add_argument("--budget", type=int, default=None, help="victim queries per target")
    p.add_argument("--out", default=None, help="JSONL file: one row per target, appended as they finish")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_attack, queries=20)

    p = sub.add_parser("certify", help="certify top-K robustness by randomized smoothing; write a report")
    _common(p)
    p.set_defaults(k=20)
    p.add_argument("--samples", type=int, default=200, help="smoothing draws per document (N)")
    p.add_argument("--ks", nargs="+", default=None, help="K values (default 1 3 5 10 20 below --k)")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--mode", default="rigorous", choices=["rigorous", "certdr", "adaptive"])
    p.add_argument("--bound", default="hoeffding", choices=["hoeffding", "bernstein"])
    p.add_argument("--R", type=int, default=None, help="attacker's word budget (default: every word)")
    p.add_argument("--threat", default="wordnet+glove")
    p.add_argument("--symmetric", action=argparse.BooleanOptionalAction, default=True,
                   help="certify against the threat model closed under symmetry on the collection's "
                        "vocabulary (a superset, so certificates hold against the threat itself; "
                        "default) or, with --no-symmetric, against the threat as given")
    p.add_argument("--temperature", type=float, default=None,
                   help="sigmoid temperature of the squashing (default: 0.05 bi-encoders, 1.0 others)")
    p.add_argument("--center", default="auto",
                   help="constant subtracted before the squash: auto (median clean score) or a number")
    p.add_argument("--n0", type=int, default=None, help="adaptive mode: first look (default min(32, N))")
    p.add_argument("--futility", type=float, default=3.0,
                   help="adaptive mode: give up on a list when estimates moved this many SDs "
                        "still cannot separate at the cap (negative: never)")
    p.add_argument("--max-set-size", type=int, default=100, help="largest smoothing set")
    p.add_argument("--out", default=None, help="report folder (report.html, report.md, report.json)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_certify)

    p = sub.add_parser("sweep", help="run a config file's grid of studies (resumable)")
    p.add_argument("config", help="YAML/TOML sweep config (see ranklab/sweep.py)")
    p.add_argument("--out", default=None, help="results folder (default runs/<config name>)")
    p.add_argument("--jobs", type=int, default=1, help="parallel worker processes")
    p.add_argument("--backend", default="local", choices=["local", "ray"])
    p.add_argument("--dry-run", action="store_true", help="list the jobs and exit")
    p.add_argument("--var", action="append", metavar="NAME=VALUE", help="value for ${NAME} in the config")
    p.add_argument("--no-retry", action="store_true", help="do not retry jobs that failed before")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("main", help="the lab's main job: the demo sweep (rank, attack, certify, report)")
    p.add_argument("--config", default=None, help="sweep config (default configs/demo.yaml)")
    p.add_argument("--out", default="runs/demo", help="results folder")
    p.set_defaults(func=cmd_main)

    for extra in _EXTRA_COMMANDS:
        extra(sub)
    return ap


_EXTRA_COMMANDS: list = []


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, PermissionError, RuntimeError) as e:
        if os.environ.get("RANKLAB_DEBUG"):
            raise
        print(f"ranklab {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Scripted sweeps: a config file expands into jobs; finished jobs are never lost or repeated.

Config (YAML or TOML)::

    name: demo                      # optional, used in the summary
    rankers: [minilm]               # every study runs for each ranker x dataset x seed
    datasets: [demo]                # 'demo', a BEIR folder, or ${VAR} set with --var VAR=...
    seeds: [0]
    studies:
      - kind: evaluate              # evaluate | attack | certify   (ranklab.jobs.KINDS)
        params: {k: 100}
      - kind: attack
        params: {method: word-substitution, targets: easy5, n_queries: 5}
        grid: {max_words: [5, 10]}  # lists in `grid` expand into one job per combination
      - kind: certify
        params: {k: 10, n_samples: 100}

A study may override ``rankers``, ``datasets`` and ``seeds``. Parameters are checked against the
job kind's typed config (:mod:`ranklab.config`): a misspelt key or a value of the wrong type fails
before anything runs, naming the key and what is allowed.

``${NAME}`` in a config string is replaced by the value given with ``--var NAME=VALUE``
(``variables``) only, never by an environment variable: the value lands in result files, and a
config must mean the same thing in every shell.

Each job's id is a hash of its resolved config (kind and every parameter, defaults included) and of a
fingerprint of the dataset's files (:func:`data_fingerprint`: the bytes of corpus, queries, qrels,
topics and runs), so editing a collection's qrels gives new job ids instead of reusing stale
metrics. Results: ``OUT/results.jsonl`` gets one row per finished job, appended (every byte
written, then fsync'ed) as it finishes; a write that fails (a full disk) is undone and stops the
sweep with an :class:`OSError` naming the file. Failed jobs go to ``OUT/failures.jsonl`` with
their error, and the sweep goes on. Rerunning the same command skips every job whose id is
already in ``results.jsonl`` (failed ones are retried), so an interrupted sweep (Ctrl-C, kill,
crash) resumes without losing or duplicating rows; a last line without its newline is kept when
it is a complete row and dropped only when it does not parse. One sweep at a time per output
folder: ``OUT/.sweep.lock`` is held with an exclusive ``flock`` while a sweep runs, and a second
sweep fails at once with :class:`SweepLockedError`, naming the pid and host that hold it. Job artifacts
(runs, attack rows, certification reports) live in ``OUT/jobs/<job_id>/``. At the end
``results.csv`` (and ``results.parquet``) consolidate the table.

Columns ending in ``_s`` and ``finished_at`` are timings; every other column is a deterministic
function of the job's config and seed.
"""
from __future__ import annotations

import errno
import itertools
import json
import os
import re
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ranklab.config import ConfigError, JobConfig

TOP_KEYS = {"name", "rankers", "datasets", "seeds", "studies", "description"}
STUDY_KEYS = {"kind", "params", "grid", "rankers", "datasets", "seeds", "name"}
TIMING_SUFFIXES = ("_s", "finished_at")




class SweepLockedError(RuntimeError):
    """Another sweep holds the output folder; the message names its pid and host."""


class SweepWriteError(OSError):
    """A result row could not be written completely (full disk, read-only folder, ...)."""


@dataclass(frozen=True)
class Job:
    """One job of a sweep: its kind, the resolved config (every parameter, defaults included) and
    the parameters the config file gave (``params``, shown in summaries)."""

    kind: str
    config: JobConfig
    params: dict = field(default_factory=dict)
    study: str = ""
    data: str = ""  # data_fingerprint(dataset), part of the job id

    @property
    def ranker(self) -> str:
        return self.config.ranker

    @property
    def dataset(self) -> str:
        return self.config.dataset

    @property
    def seed(self) -> int:
        return self.config.seed

    def resolved(self) -> dict:
        return {"kind": self.kind, "ranker": self.ranker, "dataset": self.dataset, "seed": self.seed,
                "params": self.params, "data_fingerprint": self.data}

    @property
    def job_id(self) -> str:
        return self.config.job_id({"data_fingerprint": self.data} if self.data else None)

    def label(self) -> str:
        p = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.kind}[{self.ranker}|{Path(self.dataset).name}|seed={self.seed}|{p}]"


# -- config ---------------------------------------------------------------------------------------
def _substitute(obj, variables: dict):
    """Replace ``${NAME}`` by ``variables[NAME]``; never reads the environment."""
    if isinstance(obj, str):
        def rep(m):
            name = m.group(1)
            if name in variables:
                return str(variables[name])
            hint = (f" (the environment variable {name} is set, but environment variables are "
                    "not read: the value would land in the results silently)"
                    if name in os.environ else "")
            raise ConfigError(f"the config uses ${{{name}}} but no value was given: pass "
                              f"--var {name}=VALUE{hint}")
        return re.sub(r"\$\{(\w+)\}", rep, obj)
    if isinstance(obj, list):
        return [_substitute(x, variables) for x in obj]
    if isinstance(obj, dict):
        return {k: _substitute(v, variables) for k, v in obj.items()}
    return obj


def load_config(path_or_dict, variables: dict | None = None) -> dict:
    """Read (YAML/TOML/JSON or a dict) and substitute ``${VAR}``; no validation yet."""
    if isinstance(path_or_dict, dict):
        cfg = path_or_dict
    else:
        path = Path(path_or_dict)
        if not path.is_file():
            raise ConfigError(f"no config file at {path}")
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib

            cfg = tomllib.loads(text)
        else:
            import yaml

            try:
                cfg = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise ConfigError("a sweep config must be a mapping with a 'studies' list")
    return _substitute(cfg, variables or {})


def _as_list(value, key):
    if value is None:
        return None
    if isinstance(value, (str, int, float)):
        return [value]
    if isinstance(value, list) and value:
        return value
    raise ConfigError(f"'{key}' must be a value or a non-empty list, got {value!r}")


def expand(cfg: dict) -> list[Job]:
    """Validate a config and expand it into jobs (order: study, ranker, dataset, seed, grid)."""
    from ranklab.collections import data_fingerprint
    from ranklab.jobs import KINDS

    bad = sorted(set(cfg) - TOP_KEYS)
    if bad:
        raise ConfigError(f"unknown top-level key {bad[0]!r}; allowed: {sorted(TOP_KEYS)}")
    studies = cfg.get("studies")
    if not isinstance(studies, list) or not studies:
        raise ConfigError("the config needs a non-empty 'studies' list")
    jobs: list[Job] = []
    for i, st in enumerate(studies):
        where = f"studies[{i}]"
        if not isinstance(st, dict):
            raise ConfigError(f"{where} must be a mapping with a 'kind'")
        bad = sorted(set(st) - STUDY_KEYS)
        if bad:
            raise ConfigError(f"{where}: unknown key {bad[0]!r}; allowed: {sorted(STUDY_KEYS)}")
        kind = st.get("kind")
        if kind not in KINDS:
            raise ConfigError(f"{where}: unknown kind {kind!r}; use one of {sorted(KINDS)}")
        params = dict(st.get("params") or {})
        grid = dict(st.get("grid") or {})
        config_cls = KINDS[kind].config
        allowed = set(config_cls.names()) - {"ranker", "dataset", "seed"}
        for key in list(params) + list(grid):
            if key not in allowed:
                raise ConfigError(f"{where} ({kind}): unknown parameter {key!r}; allowed: {sorted(allowed)}")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}: grid.{key} must be a non-empty list")
        rankers = _as_list(st.get("rankers", cfg.get("rankers", ["minilm"])), "rankers")
        datasets = _as_list(st.get("datasets", cfg.get("datasets", ["demo"])), "datasets")
        seeds = _as_list(st.get("seeds", cfg.get("seeds", [0])), "seeds")
        for s in seeds:
            if not isinstance(s, int):
                raise ConfigError(f"{where}: seeds must be integers, got {s!r}")
        keys = sorted(grid)
        for ranker, dataset, seed in itertools.product(rankers, datasets, seeds):
            ds = str(dataset)
            if Path(ds).expanduser().is_dir():
                ds = str(Path(ds).expanduser().resolve())
            fp = data_fingerprint(ds)
            for combo in itertools.product(*(grid[k] for k in keys)):
                p = {**params, **dict(zip(keys, combo))}
                config = config_cls.from_params(p, where=f"{where} ({kind})", ranker=str(ranker),
                                                dataset=ds, seed=int(seed))
                jobs.append(Job(kind, config, p, st.get("name", f"{kind}#{i}"), fp))
    ids = [j.job_id for j in jobs]
    dup = {x for x in ids if ids.count(x) > 1}
    if dup:
        raise ConfigError(f"the config expands to {len(dup)} duplicated job(s) (same kind, ranker, "
                          "dataset, seed and params); remove the repeated study or grid value")
    return jobs


# -- results files --------------------------------------------------------------------------------
def _repair_tail(path: Path) -> None:
    """Make the file end with a newline after its last complete row.

    A last line without its newline is kept (a newline is added) when it parses as a JSON object,
    and dropped only when it does not (a write torn by a kill).
    """
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data = path.read_bytes()
        cut = data.rfind(b"\n") + 1
        try:
            ok = isinstance(json.loads(data[cut:].decode("utf-8")), dict)
        except (ValueError, UnicodeDecodeError):
            ok = False
        if ok:
            f.seek(0, os.SEEK_END)
            _write_all(f.fileno(), b"\n", path)
        else:
            f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())


def _write_all(fd: int, data: bytes, path: Path) -> None:
    """``os.write`` until every byte is written; a short write that makes no progress or an
    OSError raises :class:`SweepWriteError` naming ``path``."""
    view, done = memoryview(data), 0
    try:
        while done < len(data):
            n = os.write(fd, view[done:])
            if not n:
                raise OSError(errno.ENOSPC, "no byte written")
            done += n
    except OSError as e:
        raise SweepWriteError(
            e.errno, f"could not write a result row to {path} ({e.strerror or e}): free disk "
            "space or make the folder writable, then rerun the same command (finished jobs are "
            "kept)", str(path)) from e


def _append(path: Path, row: dict) -> None:
    """Append one JSON line: every byte or nothing (a failed write is truncated away)."""
    line = (json.dumps(row, default=str, sort_keys=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        start = os.fstat(fd).st_size
        try:
            _write_all(fd, line, path)
            os.fsync(fd)
        except OSError as e:
            try:  # never leave a torn row behind
                os.ftruncate(fd, start)
            except OSError:
                pass
            if isinstance(e, SweepWriteError):
                raise
            raise SweepWriteError(e.errno, f"could not save {path} ({e.strerror or e}): free disk "
                                  "space, then rerun the same command", str(path)) from e
    finally:
        os.close(fd)


class _FolderLock:
    """An exclusive ``flock`` on ``OUT/.sweep.lock`` (released when the process ends)."""

    NAME = ".sweep.lock"

    def __init__(self, out: Path):
        self.path = out / self.NAME
        self.fd = None

    def __enter__(self):
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise
            try:
                holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            except (ValueError, UnicodeDecodeError):
                holder = {}
            os.close(fd)
            who = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
                   f"{holder.get('started', '?')}")
            raise SweepLockedError(
                f"another sweep is writing to {self.path.parent} ({who}); wait for it to finish, "
                "or stop it and rerun (finished jobs are kept), or use another --out") from None
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        self.fd = fd
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn line (repaired on the next run)
    return rows


def load_results(out: str | Path) -> pd.DataFrame:
    """The sweep's results as a DataFrame (one row per finished job; ``params`` flattened to
    ``param.<name>`` columns)."""
    out = Path(out)
    path = out / "results.jsonl" if out.is_dir() else out
    if not path.exists():
        raise FileNotFoundError(f"no results at {path}; run `ranklab sweep CONFIG --out {out}` first")
    rows = _read_jsonl(path)
    seen, uniq = set(), []
    for r in rows:  # defensive: results.jsonl never holds a job twice, but never show one twice
        if r["job_id"] not in seen:
            seen.add(r["job_id"])
            uniq.append(r)
    flat = []
    for r in uniq:
        r = dict(r)
        for k, v in (r.pop("params", {}) or {}).items():
            r[f"param.{k}"] = v if not isinstance(v, (list, dict)) else json.dumps(v)
        flat.append(r)
    return pd.DataFrame(flat)


def failed_jobs(out: str | Path, table: pd.DataFrame | None = None) -> set[str]:
    """Ids of jobs in ``OUT/failures.jsonl`` that have no finished row (in ``table`` or
    ``OUT/results.jsonl``)."""
    out = Path(out)
    failed = {r["job_id"] for r in _read_jsonl(out / "failures.jsonl")}
    if table is None:
        done = {r["job_id"] for r in _read_jsonl(out / "results.jsonl")}
    else:
        done = set(table["job_id"]) if len(table) else set()
    return failed - done


# -- running --------------------------------------------------------------------------------------
def run_job(job: Job, out: str, progress: bool = False) -> dict:
    """Run one job; returns its result row (status 'ok' or 'failed' with the error)."""
    from ranklab.jobs import KINDS

    workdir = Path(out) / "jobs" / job.job_id
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "job.json").write_text(json.dumps({"job_id": job.job_id, **job.resolved()}, indent=2))
    base = {"job_id": job.job_id, "study": job.study, **job.resolved()}
    t = time.perf_counter()
    try:
        metrics = KINDS[job.kind].run(job.config, workdir=str(workdir), progress=progress)
        row = {**base, "status": "ok", **{k: v for k, v in metrics.items() if k not in base}}
    except Exception as e:  # one failing job never stops the sweep
        row = {**base, "status": "failed", "error": f"{type(e).__name__}: {e}",
               "traceback": traceback.format_exc(limit=20)}
    row["wall_s"] = round(time.perf_counter() - t, 3)
    row["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return row


def _run_job_in_subprocess(job: Job, out: str) -> dict:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:
        pass
    return run_job(job, out)


def run_sweep(config, out: str | Path, jobs: int = 1, backend: str = "local", dry_run: bool = False,
              variables: dict | None = None, progress: bool = True, retry_failed: bool = True) -> pd.DataFrame:
    """Expand ``config`` and run the jobs not yet in ``OUT/results.jsonl``; returns
    :func:`load_results` (or, with ``dry_run``, the job list as a frame)."""

    cfg = load_config(config, variables)
    all_jobs = expand(cfg)
    out = Path(out)
    if dry_run:
        return pd.DataFrame([{"job_id": j.job_id, "study": j.study, "kind": j.kind, "ranker": j.ranker,
                              "dataset": j.dataset, "seed": j.seed,
                              "params": json.dumps(j.params, sort_keys=True)} for j in all_jobs])
    if backend not in ("local", "ray"):
        raise ConfigError(f"unknown backend {backend!r}; use 'local' or 'ray'")
    out.mkdir(parents=True, exist_ok=True)
    with _FolderLock(out):
        return _run_locked(cfg, all_jobs, out, jobs, backend, progress, retry_failed)

def _run_locked(cfg, all_jobs, out: Path, jobs, backend, progress, retry_failed) -> pd.DataFrame:
    from tqdm.auto import tqdm

    results, failures = out / "results.jsonl", out / "failures.jsonl"
    _repair_tail(results)
    _repair_tail(failures)
    (out / "config.resolved.json").write_text(json.dumps(
        {"config": cfg, "jobs": [{"job_id": j.job_id, **j.resolved()} for j in all_jobs]}, indent=2, default=str))
    done = {r["job_id"] for r in _read_jsonl(results)}
    failed_before = {r["job_id"] for r in _read_jsonl(failures)}
    pending = [j for j in all_jobs if j.job_id not in done and (retry_failed or j.job_id not in failed_before)]
    skipped = len(all_jobs) - len(pending)
    bar = tqdm(total=len(all_jobs), initial=skipped, desc=f"sweep {cfg.get('name', out.name)}",
               disable=not progress, file=sys.stderr)

    def record(row):
        _append(results if row["status"] == "ok" else failures, row)
        bar.update(1)
        if row["status"] != "ok":
            bar.write(f"job {row['job_id']} failed: {row['error']}")

    try:
        if backend == "ray":
            _run_ray(pending, str(out), jobs, record)
        elif jobs <= 1:
            for j in pending:
                bar.set_postfix_str(j.label()[:60])
                record(run_job(j, str(out), progress=False))
        else:
            _run_pool(pending, str(out), jobs, record)
    finally:
        bar.close()
    table = load_results(out) if results.exists() else pd.DataFrame()
    if len(table):
        table.to_csv(out / "results.csv", index=False)
        try:
            table.astype({c: str for c in table.columns if table[c].dtype == object}).to_parquet(
                out / "results.parquet", index=False)
        except Exception:
            pass
    return table

def _run_pool(pending, out, jobs, record):
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    todo = list(pending)
    while todo:
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futs = {pool.submit(_run_job_in_subprocess, j, out): j for j in todo}
            todo = []
            broken = False
            for fut in as_completed(futs):
                j = futs[fut]
                try:
                    row = fut.result()
                except BrokenProcessPool:
                    if not broken:  # the crashed job is recorded; the innocent ones rerun
                        broken = True
                    todo.append(j)
                    continue
                except Exception as e:
                    row = {"job_id": j.job_id, "study": j.study, **j.resolved(), "status": "failed",
                           "error": f"{type(e).__name__}: {e}"}
                record(row)  # a failed write (SweepWriteError) stops the sweep
        if broken and todo:
            # run each remaining job alone once to find the one that kills its process
            for j in todo:
                with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
                    try:
                        row = pool.submit(_run_job_in_subprocess, j, out).result()
                    except Exception as e:
                        row = {"job_id": j.job_id, "study": j.study, **j.resolved(),
                               "status": "failed",
                               "error": f"worker process died: {type(e).__name__}: {e}"}
                record(row)
            todo = []

def _run_ray(pending, out, jobs, record):
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs the ray extra: pip install -c constraints.txt -e '.[ray]'") from None
    started = False
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        kw = {"address": address} if address else {"num_cpus": max(1, jobs), "include_dashboard": False}
        ray.init(ignore_reinit_error=True, log_to_driver=False, **kw)
        started = True
    try:
        remote = ray.remote(num_cpus=1)(_run_job_in_subprocess)
        refs = {remote.remote(j, out): j for j in pending}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            for ref in ready:
                j = refs.pop(ref)
                try:
                    row = ray.get(ref)
                except Exception as e:
                    row = {"job_id": j.job_id, "study": j.study, **j.resolved(), "status": "failed",
                           "error": f"ray task failed: {type(e).__name__}: {e}"}
                record(row)
    finally:
        if started:
            ray.shutdown()

HEADLINE = ("nDCG@10", "RR@10", "ASR", "boost", "T10R", "PP", "queries_mean", "CRQ@1", "CRQ@3", "CRQ@5",
            "CRQ@10", "nDCG@10_smoothed", "wall_s")

def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """A compact summary: one row per job (kind, ranker, dataset, seed, the grid parameters that
    vary) with the headline metrics it has (attack: ASR/boost/T10R/PP/victim queries;
    certification: CRQ@K and the smoothed ranker's nDCG@10; evaluation: nDCG@10/RR@10)."""
    if table.empty:
        return table
    params = [c for c in table.columns if c.startswith("param.") and table[c].nunique(dropna=True) > 1
              and table.groupby("kind")[c].nunique().max() > 1]
    cols = ["kind", "ranker", "dataset", "seed"] + params + [c for c in HEADLINE if c in table.columns]
    t = table[cols].copy()
    t["dataset"] = t["dataset"].map(lambda d: Path(str(d)).name)
    t.columns = [c.replace("param.", "") for c in t.columns]
    return t.round(4)

"""Sweeps: expansion, validation, resume after a kill, failures, determinism, Ray backend."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ranklab.sweep import ConfigError, expand, load_config, load_results, run_sweep

ROOT = Path(__file__).resolve().parents[1]
TIMING = ("wall_s", "finished_at", "rank_s")


def _config(dataset, ks=(1, 2, 3), seeds=(0, 1)):
    return {"name": "t", "rankers": ["bm25"], "datasets": [str(dataset)], "seeds": list(seeds),
            "studies": [{"kind": "evaluate", "params": {"measures": ["nDCG@10", "RR@10"]},
                         "grid": {"k": list(ks)}}]}


def _rows(out):
    rows = [json.loads(x) for x in (Path(out) / "results.jsonl").read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_expansion_and_stable_ids(synthetic):
    jobs = expand(_config(synthetic))
    assert len(jobs) == 6
    assert len({j.job_id for j in jobs}) == 6
    assert [j.job_id for j in expand(_config(synthetic))] == [j.job_id for j in jobs]
    assert {j.params["k"] for j in jobs} == {1, 2, 3}


@pytest.mark.parametrize("bad,match", [
    ({"studies": [{"kind": "evaluate"}], "rankerz": ["bm25"]}, "rankerz"),
    ({"studies": [{"kind": "evaluat"}]}, "unknown kind 'evaluat'"),
    ({"studies": [{"kind": "evaluate", "params": {"kk": 3}}]}, "unknown parameter 'kk'"),
    ({"studies": [{"kind": "evaluate", "grid": {"k": 3}}]}, "grid.k"),
    ({"studies": []}, "studies"),
    ({"studies": [{"kind": "evaluate", "params": {"k": 3}}], "seeds": ["x"]}, "integers"),
])
def test_config_errors_name_the_bad_key(bad, match):
    with pytest.raises(ConfigError, match=match):
        expand(bad)


def test_variables_are_substituted_or_clearly_missing(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("datasets: ['${DATASET}']\nstudies: [{kind: evaluate}]\n")
    assert load_config(p, {"DATASET": "demo"})["datasets"] == ["demo"]
    os.environ.pop("DATASET", None)
    with pytest.raises(ConfigError, match="--var DATASET="):
        load_config(p)


def test_failing_job_is_recorded_and_sweep_goes_on(synthetic, tmp_path):
    cfg = _config(synthetic, ks=(2,), seeds=(0,))
    cfg["studies"].append({"kind": "evaluate", "datasets": [str(tmp_path / "missing")], "params": {"k": 2}})
    out = tmp_path / "out"
    table = run_sweep(cfg, out, progress=False)
    assert len(table) == 1 and (table["status"] == "ok").all()
    failures = [json.loads(x) for x in (out / "failures.jsonl").read_text().splitlines()]
    assert len(failures) == 1 and "unknown dataset" in failures[0]["error"]
    assert (out / "results.csv").exists()


def test_same_seeds_same_rows_and_rerun_skips_everything(synthetic, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_sweep(_config(synthetic), a, progress=False)
    run_sweep(_config(synthetic), b, progress=False)
    assert _rows(a) == _rows(b)
    before = (a / "results.jsonl").read_text()
    run_sweep(_config(synthetic), a, progress=False)  # everything done: nothing appended
    assert (a / "results.jsonl").read_text() == before
    df = load_results(a)
    assert len(df) == 6 and {"param.k", "nDCG@10"} <= set(df.columns)


def test_parallel_jobs_give_the_same_rows(synthetic, tmp_path):
    run_sweep(_config(synthetic), tmp_path / "seq", progress=False)
    run_sweep(_config(synthetic), tmp_path / "par", jobs=2, progress=False)
    key = lambda r: r["job_id"]  # noqa: E731
    assert sorted(_rows(tmp_path / "seq"), key=key) == sorted(_rows(tmp_path / "par"), key=key)


def test_resume_after_kill_loses_and_duplicates_nothing(tmp_path, monkeypatch):
    """The sweep process dies (os._exit, like a kill) in its 8th job; the rerun of the same
    command finishes the sweep with every job exactly once, equal to a clean run."""
    marker = tmp_path / "crashed-once"
    cfg = {"rankers": ["bm25"], "datasets": ["demo"], "seeds": [0],
           "studies": [{"kind": "evaluate", "grid": {"k": [10, 20, 30, 40, 50, 60, 70]}},
                       {"kind": "crash", "params": {"marker": str(marker)}},
                       {"kind": "evaluate", "seeds": [1, 2],
                        "grid": {"k": [10, 20, 30, 40, 50, 60]}}]}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    out = tmp_path / "out"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import crash_kind; crash_kind.register(); "
            "from ranklab.cli import main; sys.exit(main(sys.argv[2:]))")
    cmd = [sys.executable, "-c", code, str(ROOT / "tests"), "sweep", str(path), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 9, first.stderr
    results = out / "results.jsonl"
    assert results.read_text().count("\n") == 7  # the seven jobs before the crash
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = _rows(out)
    ids = [r["job_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 20
    import crash_kind
    from ranklab.jobs import KINDS, JobKind

    monkeypatch.setitem(KINDS, "crash", JobKind(crash_kind.CrashConfig, crash_kind.run))
    assert set(ids) == {j.job_id for j in expand(load_config(path))}
    # resumed rows equal a clean run's rows (the marker exists now: the crash job succeeds)
    clean = tmp_path / "clean"
    run_sweep(load_config(path), clean, progress=False)
    key = lambda r: r["job_id"]  # noqa: E731
    assert sorted(rows, key=key) == sorted(_rows(clean), key=key)


def test_torn_last_line_is_repaired(synthetic, tmp_path):
    out = tmp_path / "out"
    run_sweep(_config(synthetic, ks=(1,), seeds=(0,)), out, progress=False)
    with open(out / "results.jsonl", "a") as f:
        f.write('{"job_id": "half-writ')
    table = run_sweep(_config(synthetic, ks=(1, 2), seeds=(0,)), out, progress=False)
    assert len(table) == 2
    assert all(json.loads(x) for x in (out / "results.jsonl").read_text().splitlines())


def test_dry_run_lists_jobs(synthetic, tmp_path):
    jobs = run_sweep(_config(synthetic), tmp_path / "d", dry_run=True)
    assert len(jobs) == 6 and not (tmp_path / "d").exists()


def test_ray_backend_gives_the_same_rows_as_local(synthetic, tmp_path):
    pytest.importorskip("ray")
    run_sweep(_config(synthetic, seeds=(0,)), tmp_path / "local", progress=False)
    run_sweep(_config(synthetic, seeds=(0,)), tmp_path / "ray", backend="ray", jobs=2, progress=False)
    key = lambda r: r["job_id"]  # noqa: E731
    assert sorted(_rows(tmp_path / "ray"), key=key) == sorted(_rows(tmp_path / "local"), key=key)

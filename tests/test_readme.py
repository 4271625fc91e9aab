"""The README's examples work: every ```python block runs (in order, one namespace; slow tier:
MiniLM on the demo collection) and every `ranklab ...` line of its ```bash blocks parses."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "README.md").read_text()
PYTHON = re.findall(r"```python\n(.*?)```", TEXT, re.S)
BASH = re.findall(r"```bash\n(.*?)```", TEXT, re.S)
COMMANDS = [line.split("#")[0].strip() for block in BASH for line in block.splitlines()
            if line.strip().startswith("ranklab ")]


def test_readme_has_examples():
    assert len(PYTHON) >= 4 and len(COMMANDS) >= 10


@pytest.mark.parametrize("line", COMMANDS)
def test_readme_command_lines_parse(line):
    from ranklab.cli import build_parser

    argv = [a.strip("[]") for a in shlex.split(line)[1:] if a != "[--json]"]
    args = build_parser().parse_args(argv)
    assert callable(args.func)


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RANKLAB_CACHE", str(tmp_path / "cache"))
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(PYTHON, 1):
        exec(compile(block, f"README.md python block {i}", "exec"), namespace)
    assert (tmp_path / "runs" / "readme" / "results.jsonl").is_file()

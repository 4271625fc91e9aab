"""Every notebook runs top to bottom (small parameters) and is committed without outputs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))
# notebooks with a dedicated execution test elsewhere (which also checks what they write)
DEDICATED = {"certification.ipynb": "tests/test_report.py::test_certification_notebook_runs"}
RUN = [p for p in NOTEBOOKS if p.name not in DEDICATED]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: strip outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", RUN, ids=[p.name for p in RUN])
def test_notebook_runs_top_to_bottom(path, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env_before = dict(os.environ)
    os.environ["RANKLAB_NOTEBOOK_SMOKE"] = "1"  # notebooks shrink their parameters under CI
    os.environ["MPLBACKEND"] = "Agg"
    try:
        NotebookClient(nb, timeout=900, kernel_name="python3",
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors

"""Every notebook runs top to bottom (small parameters) and is committed without outputs."""
from __future__ import annotations

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
    from conftest import execute_notebook

    execute_notebook(path, tmp_path)

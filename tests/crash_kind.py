"""A job kind for the resume test: its job ends the whole sweep process the first time it runs
(``os._exit``, as a crash or a kill would), and succeeds on the rerun. Registered only by the
test's subprocess (``register()``); never part of the lab."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ranklab.config import RankingConfig, param
from ranklab.jobs import KINDS, JobKind


@dataclasses.dataclass(frozen=True)
class CrashConfig(RankingConfig):
    kind = "crash"
    marker: str = param("", "file that records the first run; while it is missing the job exits "
                        "the process")


def run(cfg: CrashConfig, workdir=None, progress=False) -> dict:
    marker = Path(cfg.marker)
    if not marker.exists():
        marker.write_text("the sweep process exited here once\n")
        os._exit(9)
    return {"resumed": True}


def register() -> None:
    KINDS["crash"] = JobKind(CrashConfig, run)

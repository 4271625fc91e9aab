"""ranklab: the glue of the ranking-robustness lab (collections, evaluation, sweeps, reports, CLI).

Submodules load on first use: ``import ranklab; ranklab.sweep.load_results(...)`` works.
"""
__version__ = "0.1.0"

import importlib

from .evaluate import evaluate, evaluate_per_query  # noqa: E402

__all__ = ["evaluate", "evaluate_per_query", "__version__"]

_SUBMODULES = {"attack_job", "certify_job", "cli", "collections", "config", "display", "jobs",
               "pt", "report", "sweep", "train_job"}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'ranklab' has no attribute {name!r}")

"""ranklab: the glue of the ranking-robustness lab (collections, evaluation, sweeps, reports, CLI)."""
__version__ = "0.1.0"

from .evaluate import evaluate, evaluate_per_query  # noqa: E402

__all__ = ["evaluate", "evaluate_per_query", "__version__"]

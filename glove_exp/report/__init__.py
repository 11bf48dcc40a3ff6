"""glove-exp-report as a library: :func:`runs_frame` (an experiment's runs, one row each, as
``mlflow.search_runs`` gives them), :func:`summary_frame` (per group of seeds: n, mean, std and 95 %
interval of each metric) and :func:`log_sweep_summary` (that table, the best group and a plot, onto a
sweep's parent run). Each loads its module (pandas, MLflow) on first use: importing the package is cheap."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from glove_exp.report.publish import log_sweep_summary
    from glove_exp.report.query import runs_frame
    from glove_exp.report.statistics import summary_frame

EXPORTS = {
    "runs_frame": "glove_exp.report.query",
    "summary_frame": "glove_exp.report.statistics",
    "log_sweep_summary": "glove_exp.report.publish",
}
__all__ = ["log_sweep_summary", "runs_frame", "summary_frame"]


def __getattr__(name: str) -> object:
    if name not in EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(EXPORTS[name]), name)

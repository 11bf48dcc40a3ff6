"""Where a run's model goes (``tracking.log_model``): with ``best`` each sweep job saves its model, and
the sweep's end logs the best job's into its finished run (never reopened) before deleting the copies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from glove_exp.app.schema import TrackingConfig
from glove_exp.app.serving import Predictor
from glove_exp.app.store import Store
from glove_exp.app.tracking import JobInfo, TrackedRun, example_and_output, log_model_files
from glove_exp.core.errors import first_line

PENDING_MODEL_DIR = "pending_model"
PENDING_FILE = "pending.json"


def deliver_model(
    tracked: TrackedRun, predictor: Predictor, examples: list[str], tracking: TrackingConfig, job: JobInfo, name: str
) -> str | None:
    """Log or save the run's model as ``tracking.log_model`` says; returns the folder of a model
    saved for the sweep's end, else None."""
    if tracking.log_model == "best" and job.output_dir is not None:  # in a sweep: its end logs the best job's
        folder = Path(job.output_dir) / PENDING_MODEL_DIR
        predictor.save(folder / "predictor")
        example, output = example_and_output(predictor, examples)
        meta = {
            "run_id": tracked.run_id, "tracking_uri": tracking.uri, "experiment": tracking.experiment,
            "name": tracking.model_name, "run_name": name, "example": example, "output": output.to_dict("split"),
        }  # fmt: skip
        (folder / PENDING_FILE).write_text(json.dumps(meta), encoding="utf-8")
        return str(folder)
    if tracking.log_model != "never":
        tracked.log_model(predictor, examples, tracking.model_name, name)
    return None


def log_pending_model(folder: Path) -> str:
    """Log the model :func:`deliver_model` left in ``folder`` into its (finished) run; returns the run id."""
    meta = json.loads((folder / PENDING_FILE).read_text(encoding="utf-8"))
    store = Store.open(meta["tracking_uri"], meta["experiment"])
    output = pd.DataFrame(**meta["output"])
    log_model_files(
        store, meta["run_id"], folder / "predictor", meta["example"], output, meta["name"], meta["run_name"]
    )
    return meta["run_id"]


def best_job(jobs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The finished job with a saved model and the highest validation accuracy (test accuracy if
    any of them has no validation split); the lowest job number on ties."""
    candidates = sorted(
        (job for job in jobs if job["status"] == "FINISHED" and job.get("pending_model")),
        key=lambda job: job.get("num", 0),
    )
    if not candidates:
        return None
    key = "val_accuracy" if all(job.get("val_accuracy") is not None for job in candidates) else "test_accuracy"
    return max(candidates, key=lambda job: job[key])


def log_best_model(jobs: list[dict[str, Any]]) -> str | None:
    """Log the best job's saved model into its run and delete every saved copy; returns the line
    that says what happened (None when no job saved a model)."""
    winner = best_job(jobs)
    if winner is None:
        return None
    folder = Path(winner["pending_model"])
    if not folder.is_dir():
        return (
            f"sweep: the best job's model ({folder}) is not on this machine: tracking.log_model=best needs "
            "the jobs' output folders on a filesystem shared with the launching machine; use tracking.log_model=always"
        )
    try:
        run_id = log_pending_model(folder)
    except Exception as err:  # the store may be down: keep the files so the model is not lost
        return f"sweep: could not log the best job's model ({first_line(err)}); its files stay in {folder}"
    for job in jobs:
        if job.get("pending_model"):
            shutil.rmtree(job["pending_model"], ignore_errors=True)
    return f"sweep: the model of job {winner['num']}, the best, is logged in run {run_id}"

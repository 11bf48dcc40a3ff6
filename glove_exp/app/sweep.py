"""Sweep bookkeeping: each job appends its outcome to ``<sweep dir>/jobs.jsonl`` (jobs may run in other
processes or machines, so through a shared folder); a Hydra callback prints the summary at the end."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

JOBS_FILE = "jobs.jsonl"


def record_job(sweep_dir: str, outcome: dict[str, Any]) -> None:
    """Append one JSON line; a single O_APPEND write keeps parallel jobs' lines whole."""
    path = Path(sweep_dir) / JOBS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(outcome, default=str) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_jobs(sweep_dir: str) -> list[dict[str, Any]]:
    path = Path(sweep_dir) / JOBS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def failed(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The jobs that neither finished nor were pruned by a search."""
    return [job for job in jobs if job["status"] not in ("FINISHED", "PRUNED")]


def summarise(jobs: list[dict[str, Any]]) -> str:
    pruned = sum(job["status"] == "PRUNED" for job in jobs)
    finished = sum(job["status"] == "FINISHED" for job in jobs)
    lines = [f"sweep: {finished} of {len(jobs)} jobs finished" + (f", {pruned} pruned" if pruned else "")]
    for job in sorted(failed(jobs), key=lambda j: j.get("num", 0)):
        overrides = " ".join(job.get("overrides", []))
        lines.append(f"  job {job.get('num')} ({overrides}) {job['status']}: {job.get('error')}")
    return "\n".join(lines)


class SweepSummary(Callback):
    """Registered under ``hydra.callbacks`` in conf/config.yaml."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if "optuna" in str(config.hydra.sweeper.get("_target_", "")) and config.dataset.val_fraction == 0:
            print(
                "glove-exp: error: an Optuna search maximises validation accuracy: set dataset.val_fraction > 0",
                file=sys.stderr,
            )
            raise SystemExit(2)  # Hydra turns an Exception from a callback into a warning

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from glove_exp.app.best_model import log_best_model  # jax and MLflow: only once the jobs are done

        jobs = read_jobs(config.hydra.sweep.dir)
        if models := log_best_model(jobs):
            print(models, flush=True)
        if jobs:
            print(summarise(jobs), flush=True)
        if failed(jobs):
            raise SystemExit(1)  # Hydra turns an Exception from a callback into a warning

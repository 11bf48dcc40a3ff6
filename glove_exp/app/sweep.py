"""Sweep bookkeeping: each job appends its outcome to ``<sweep dir>/jobs.jsonl`` (jobs may run in other
processes or machines, so through a shared folder); the sweep's callback (glove_exp.report.sweep) sums them up."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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


DONE = ("FINISHED", "SKIPPED")  # a skipped job's config has a FINISHED run already


def read_jobs(sweep_dir: str) -> list[dict[str, Any]]:
    """Each job's last outcome (a job run again in the same folder replaces its earlier line)."""
    path = Path(sweep_dir) / JOBS_FILE
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return list({" ".join(sorted(job.get("overrides", []))): job for job in lines}.values())


def failed(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The jobs that neither finished nor were pruned by a search."""
    return [job for job in jobs if job["status"] not in (*DONE, "PRUNED")]


def summarise(jobs: list[dict[str, Any]]) -> str:
    skipped = sum(job["status"] == "SKIPPED" for job in jobs)
    pruned = sum(job["status"] == "PRUNED" for job in jobs)
    head = f"sweep: {sum(job['status'] in DONE for job in jobs)} of {len(jobs)} jobs finished"
    notes = [f"{skipped} skipped: finished before"] * bool(skipped) + [f"{pruned} pruned"] * bool(pruned)
    lines = [head + (f" ({', '.join(notes)})" if notes else "")]
    for job in sorted(failed(jobs), key=lambda j: j.get("num", 0)):
        overrides = " ".join(job.get("overrides", []))
        lines.append(f"  job {job.get('num')} ({overrides}) {job['status']}: {job.get('error')}")
    return "\n".join(lines)


def found_before(jobs: list[dict[str, Any]]) -> list[str]:
    """The runs that skipped jobs found FINISHED (the sweep's summary counts them)."""
    return [job["run_id"] for job in jobs if job["status"] == "SKIPPED" and job.get("run_id")]


def succeeded(jobs: list[dict[str, Any]]) -> bool:
    return not failed(jobs)

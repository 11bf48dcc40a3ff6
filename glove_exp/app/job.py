"""Where a run sits in Hydra, and the run name that follows from it."""

from __future__ import annotations

from dataclasses import dataclass

from glove_exp.app.schema import Config


@dataclass(frozen=True)
class JobInfo:
    """Where the run sits in Hydra: job name, number in a sweep, the sweep's folder, the job's
    overrides, the experiment preset, the keys the sweep varies, whether it is a search, and the
    job's output folder in a sweep (where ``tracking.log_model=best`` leaves its model)."""

    name: str = "glove-exp"
    num: int | None = None
    sweep_id: str | None = None
    overrides: tuple[str, ...] = ()
    preset: str | None = None
    varying: tuple[str, ...] = ()
    search: bool = False
    output_dir: str | None = None


def run_name(config: Config, job: JobInfo = JobInfo()) -> str:
    """Short and unique within a sweep: the preset (else the pooling), then the values the sweep
    varies (``seed_tutorial-flatten-seed=0``, ``mean-max_tokens=100``) or a search's trial number."""
    base = config.tracking.run_name or job.preset or config.model.pooling.value
    if job.search:
        return f"{base}-trial{job.num}"
    values = dict(override.split("=", 1) for override in job.overrides if "=" in override)
    parts = [base]
    for key in job.varying:
        value = values.get(key, "").rstrip("/").rsplit("/", 1)[-1][:20]
        if key == "model.pooling":
            parts += [value] if value != base else []
        else:
            parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    if job.num is not None and len(parts) == 1:  # a sweep that varies nothing visible: keep names apart
        parts.append(str(job.num))
    return "-".join(parts)

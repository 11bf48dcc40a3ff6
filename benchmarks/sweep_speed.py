"""A sweep's wall time against its training floor, measured in one run.

    python -m benchmarks.sweep_speed [--data-dir DIR] [--poolings flatten,mean,sum] [--seeds 0,1,2,3,4]
                                     [--lrs 0.001,0.003] [--repeats 1] [--out benchmarks/results/sweep_speed.md]

The sweep is ``glove-exp -m experiment=seed_tutorial model.pooling=... trainer.seed=...`` (and
``optimizer.lr=...`` with ``--lrs``) typed as a user would (a new process, a fresh store in a temporary
folder; the vector cache and JAX's compilation cache as they are). Its floor is the same trainings as
bare jitted loops in this process, after one data load: glove-exp's own ``prepare`` and ``fit_model``
per job, only ``fit_model`` timed. Prints the ratio, each stage's seconds summed over the sweep's
jobs (their ``time/<stage>_s`` metrics), and the CPU seconds of each side: how many of the machine's
cores the sweep and its floor kept busy on average, and how many seconds the kernel took (on a VM that
hands freed memory back to its host, memory a process touches for the first time costs kernel time:
5 to 10 ms per MiB here, against 0.1 to 0.2 ms where the host still backs it). Beside each sweep, its start-up is measured apart
in a new interpreter (:mod:`benchmarks.sweep_start`: the imports, composing the job configs as the launcher does),
with what it leaves of a 2x budget. With ``--repeats N`` the sweep and its floor alternate N times,
each floor in a new process as the first one is, and the report leads with the run of the median
ratio and lists every run (a shared machine's figures move from run to run).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from benchmarks.common import ROOT, compose, publish, report_file

PRESET = "experiment=seed_tutorial"


@dataclass(frozen=True)
class Timing:
    """Seconds of wall and of CPU over the same work."""

    wall: float
    cpu: float  # user + system seconds, all threads
    kernel: float  # the system seconds among them: on a VM, mostly memory touched for the first time

    @classmethod
    def between(cls, wall: float, before: resource.struct_rusage, after: resource.struct_rusage) -> Timing:
        kernel = after.ru_stime - before.ru_stime
        return cls(wall, after.ru_utime - before.ru_utime + kernel, kernel)

    @property
    def cores(self) -> float:
        return self.cpu / self.wall if self.wall else 0.0


@dataclass(frozen=True)
class StartUp:
    """Seconds a sweep's process spends before its jobs' own work, measured apart (benchmarks.sweep_start)."""

    imports: float
    composing: float  # every job's config, as the launcher composes it

    @property
    def total(self) -> float:
        return self.imports + self.composing


@dataclass(frozen=True)
class Measurement:
    """One sweep, its runs' ``time/*`` metrics, its floor and its start-up."""

    sweep: Timing
    times: pd.DataFrame
    floor: Timing
    start: StartUp

    @property
    def ratio(self) -> float:
        return self.sweep.wall / self.floor.wall

    def rest_per_job(self, jobs: int) -> float:
        """Seconds a job spent outside training (a member's train_s is its share of its program's)."""
        return (self.sweep.wall - float(self.times["time/train_s"].sum())) / jobs


def floor_timing(data_dir: Path, axes: dict[str, list[str]]) -> Timing:
    """The jobs' training proper, each job's model and features prepared untimed."""
    from glove_exp.app.stages import StageTimer, fit_model, prepare

    fits = []
    for overrides in job_overrides(data_dir, axes):
        config = compose([*overrides, "tracking.uri=unused"])
        prepared = prepare(config, StageTimer())
        tic, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        fit_model(prepared, config)
        fits.append(Timing.between(time.perf_counter() - tic, before, resource.getrusage(resource.RUSAGE_SELF)))
    return Timing(*(sum(getattr(fit, name) for fit in fits) for name in ("wall", "cpu", "kernel")))


def job_overrides(data_dir: Path, axes: dict[str, list[str]]) -> list[list[str]]:
    """Each job's overrides, in the sweep's order."""
    return [
        [PRESET, *(f"{k}={v}" for k, v in zip(axes, values)), f"dataset.data_dir={data_dir}"]
        for values in itertools.product(*axes.values())
    ]


def start_up(data_dir: Path, axes: dict[str, list[str]]) -> StartUp:
    """The sweep's imports and composition in a new interpreter, as its own process starts."""
    command = [sys.executable, "-m", "benchmarks.sweep_start", json.dumps(job_overrides(data_dir, axes))]
    out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return StartUp(**json.loads(out.strip().splitlines()[-1]))


def sweep(data_dir: Path, axes: dict[str, list[str]], folder: Path) -> tuple[Timing, pd.DataFrame]:
    """The sweep's wall and CPU seconds and its runs' ``time/*`` metrics."""
    command = [
        sys.executable, "-m", "glove_exp.app.cli", "-m", PRESET, *(f"{k}={','.join(v)}" for k, v in axes.items()),
        f"dataset.data_dir={data_dir}",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    before, tic = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(command, cwd=folder, env=env, check=True, capture_output=True)
    timing = Timing.between(time.perf_counter() - tic, before, resource.getrusage(resource.RUSAGE_CHILDREN))
    client = mlflow.MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name("glove-exp")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if "glove_exp.role" not in r.data.tags]
    times = pd.DataFrame([{k: v for k, v in r.data.metrics.items() if k.startswith("time/")} for r in runs])
    return timing, times


def report(measurements: list[Measurement], jobs: int) -> str:
    """The run of the median ratio (the lower one of an even count) with its stages, then every run."""
    runs = len(measurements)
    median = sorted(measurements, key=lambda m: m.ratio)[(runs - 1) // 2]
    swept, floor, times = median.sweep, median.floor, median.times
    stages = times.drop(columns=["time/epoch_s", "time/total_s"], errors="ignore").sum().sort_values(ascending=False)
    inside = float(times["time/total_s"].sum())  # the stages' own timer: compile_s lies within train_s
    names = {"time/compile_s": "compile (part of train)"}
    rows = [
        {"stage": names.get(key, key.removeprefix("time/").removesuffix("_s")), "seconds": value}
        for key, value in stages.items()
    ]
    rows.append(
        {"stage": "outside the jobs' timers (start-up, imports, Hydra, the parent run)", "seconds": swept.wall - inside}
    )
    table = pd.DataFrame(rows).to_markdown(index=False, floatfmt=".1f")
    text = (
        f"# Sweep speed\n\n{'' if runs == 1 else f'The median of {runs} runs: '}{jobs} jobs: sweep "
        f"{swept.wall:.1f} s wall, training floor {floor.wall:.1f} s, ratio {median.ratio:.1f}x; "
        f"everything but training {median.rest_per_job(jobs):.2f} s per job\n\n"
        f"CPU: the sweep {swept.cpu:.1f} s ({swept.cores:.2f} cores busy on average; {swept.kernel:.1f} s in the "
        f"kernel), its floor {floor.cpu:.1f} s ({floor.cores:.2f} cores; {floor.kernel:.1f} s in the kernel)\n\n"
        f"Each stage summed over the jobs:\n\n{table}\n\n"
        f"{start_line(median, jobs)}\n"
    )
    if runs == 1:
        return text
    every = pd.DataFrame(
        {
            "run": i + 1, "sweep s": m.sweep.wall, "floor s": m.floor.wall, "ratio": m.ratio,
            "everything but training, s per job": m.rest_per_job(jobs), "sweep CPU s": m.sweep.cpu,
            "sweep kernel s": m.sweep.kernel, "start-up s": m.start.total,
        }
        for i, m in enumerate(measurements)
    )  # fmt: skip
    formats = (".0f", ".1f", ".1f", ".2f", ".2f", ".1f", ".1f", ".1f")
    return f"{text}\nEvery run, in order:\n\n{every.to_markdown(index=False, floatfmt=formats)}\n"


def start_line(m: Measurement, jobs: int) -> str:
    """The start-up against the sweep's 2x budget: what twice the floor leaves, less the sweep's training
    and its start-up, for everything else (the jobs' evaluation, explanations and logging, Hydra's work
    around each job, the parent run and the summary)."""
    training = float(m.times["time/train_s"].sum())
    left = 2 * m.floor.wall - training - m.start.total
    return (
        f"Start-up, measured apart in a new interpreter: imports {m.start.imports:.1f} s, composing the "
        f"{jobs} job configs {m.start.composing:.1f} s. Of a 2x budget ({2 * m.floor.wall:.1f} s), the sweep's "
        f"training ({training:.1f} s) and these leave {left:.1f} s ({left / jobs:.2f} s per job) for everything else."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "ag_news")
    parser.add_argument("--poolings", default="flatten,mean,sum")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--lrs", default="", help="optimizer.lr values to sweep too (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=1, help="sweeps and floors, alternating (default: 1)")
    parser.add_argument("--out", type=report_file, default=ROOT / "benchmarks" / "results" / "sweep_speed.md")
    args = parser.parse_args(argv)
    axes = {"model.pooling": args.poolings.split(","), "trainer.seed": args.seeds.split(",")}
    if args.lrs:
        axes["optimizer.lr"] = args.lrs.split(",")
    data_dir = args.data_dir.resolve()
    if not data_dir.is_dir():
        parser.error(f"--data-dir {data_dir} is not a folder: point it at AG News' train and test files")
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: give 1 or more")
    measurements = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="glove-sweep-speed-") as tmp:
            swept, times = sweep(data_dir, axes, Path(tmp))
        measurements.append(Measurement(swept, times, new_process_floor(data_dir, axes), start_up(data_dir, axes)))
    publish(report(measurements, math.prod(len(values) for values in axes.values())), args.out)
    return 0


def new_process_floor(data_dir: Path, axes: dict[str, list[str]]) -> Timing:
    """:func:`floor_timing` in a new process: every floor traces its programs, as a bare loop would once."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(floor_timing, data_dir, axes).result()


if __name__ == "__main__":
    sys.exit(main())

"""End to end: ``glove-exp -m`` sweeps (basic and joblib launchers) on the tiny synthetic corpus, one
MLflow run per job in a shared SQLite store, then ``glove-exp-report`` over the sweep."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from tests.conftest import experiment_runs, metric_steps, run_cli, run_report

pytestmark = pytest.mark.slow

FAST = ["explain.num_examples=0", "tracking.log_model=false"]  # jobs without LIME pages or a logged model


def sweep_dirs(cwd: Path) -> list[Path]:
    """``multirun/<date>/<time>`` folders under ``cwd``."""
    return sorted(p for p in (cwd / "multirun").glob("*/*") if p.is_dir())


def jobs_file(sweep: Path) -> list[dict]:
    return [json.loads(line) for line in (sweep / "jobs.jsonl").read_text(encoding="utf-8").splitlines()]


def assert_one_sweep(cwd: Path, runs: list, jobs: int) -> Path:
    """All runs carry the tag of the one ``multirun/<date>/<time>`` folder, which has a folder per job."""
    [sweep] = sweep_dirs(cwd)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d", sweep.relative_to(cwd / "multirun").as_posix())
    assert {run.data.tags["sweep_id"] for run in runs} == {sweep.relative_to(cwd).as_posix()}
    assert sorted(run.data.tags["hydra_job_num"] for run in runs) == sorted(str(i) for i in range(len(runs)))
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == sorted(str(i) for i in range(jobs))
    return sweep


# --- basic launcher ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory, tiny_overrides):
    cwd = tmp_path_factory.mktemp("basic")
    proc = run_cli(cwd, "-m", *tiny_overrides, "embeddings.dim=8", *FAST, "model.pooling=mean,max")
    return cwd, proc


def test_basic_sweep_runs_every_job_finished_with_one_sweep_id(basic_sweep):
    cwd, proc = basic_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stdout.splitlines()[-1] == "sweep: 2 of 2 jobs finished"
    runs = experiment_runs(cwd)
    assert [run.info.status for run in runs] == ["FINISHED", "FINISHED"]
    assert sorted(run.data.tags["pooling"] for run in runs) == ["max", "mean"]
    sweep = assert_one_sweep(cwd, runs, jobs=2)
    for run in runs:
        num = run.data.tags["hydra_job_num"]
        assert f"model.pooling={run.data.tags['pooling']}" in run.data.tags["hydra_overrides"].split()
        assert (sweep / num / ".hydra" / "config.yaml").is_file()
        assert 0.25 < run.data.metrics["test_accuracy"] <= 1.0
    jobs = jobs_file(sweep)
    assert sorted((job["num"], job["status"], job["run_id"]) for job in jobs) == sorted(
        (int(run.data.tags["hydra_job_num"]), "FINISHED", run.info.run_id) for run in runs
    )


# --- a failing job --------------------------------------------------------------------------------


def test_sweep_with_a_failing_job_exits_1_and_names_it(tmp_path, tiny_overrides):
    """``embeddings.dim=9`` does not match the 8-d file: job 1 fails, job 0 is unaffected."""
    proc = run_cli(tmp_path, "-m", *tiny_overrides, *FAST, "embeddings.dim=8,9")
    assert proc.returncode == 1, proc.stderr[-3000:]
    runs = experiment_runs(tmp_path)
    status = {run.data.params["embeddings.dim"]: run.info.status for run in runs}
    assert status == {"8": "FINISHED", "9": "FAILED"}
    failed = next(run for run in runs if run.info.status == "FAILED")
    assert failed.data.tags["hydra_job_num"] == "1"
    assert failed.info.end_time is not None
    summary = proc.stdout.splitlines()[-2:]
    assert summary[0] == "sweep: 1 of 2 jobs finished"
    assert summary[1].startswith("  job 1 (") and "embeddings.dim=9" in summary[1]
    assert summary[1].endswith(f") FAILED: {tiny_overrides[2].split('=', 1)[1]} holds 8-d vectors but embeddings.dim=9; set embeddings.dim=8")
    assert "Traceback" not in proc.stdout + proc.stderr  # a user error: no traceback, even in a sweep
    [sweep] = sweep_dirs(tmp_path)
    assert {job["num"]: (job["status"], job["run_id"]) for job in jobs_file(sweep)} == {
        0: ("FINISHED", next(run.info.run_id for run in runs if run.info.status == "FINISHED")),
        1: ("FAILED", failed.info.run_id),
    }


# --- joblib: parallel jobs in separate processes ---------------------------------------------------


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory, tiny_overrides):
    cwd = tmp_path_factory.mktemp("joblib3")
    proc = run_cli(
        cwd, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *tiny_overrides, "embeddings.dim=8", *FAST,
        "model.pooling=mean,max,sum", timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return cwd, proc, experiment_runs(cwd)


def test_joblib_sweep_runs_every_job_finished_with_one_sweep_id(joblib_sweep):
    cwd, proc, runs = joblib_sweep
    assert [run.info.status for run in runs] == ["FINISHED"] * 3
    assert sorted(run.data.tags["pooling"] for run in runs) == ["max", "mean", "sum"]
    assert_one_sweep(cwd, runs, jobs=3)
    assert proc.stdout.splitlines()[-1] == "sweep: 3 of 3 jobs finished"
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "ConfigStore schema" not in proc.stderr  # Hydra's warning about conf/hydra/launcher/joblib.yaml


def test_report_on_the_latest_sweep(joblib_sweep):
    cwd, _, runs = joblib_sweep
    proc = run_report(cwd, "--sweep", "latest")
    assert proc.returncode == 0, proc.stderr
    sweep_id = runs[0].data.tags["sweep_id"]
    assert proc.stdout.startswith(f"glove-exp: sweep {sweep_id} (3 runs, best best_val_accuracy first)\n")
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ag_news-local-")]
    assert sorted(row.split(" | ")[-1].removesuffix(" |") for row in rows) == sorted(r.info.run_id[:8] for r in runs)
    out = cwd / "reports" / "glove-exp" / sweep_id.replace("/", "_")
    assert sorted(p.name for p in out.iterdir()) == ["results.csv", "results.md", "test_accuracy.png"]
    with (out / "results.csv").open(encoding="utf-8", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert sorted(row["run_id"] for row in table) == sorted(run.info.run_id for run in runs)
    best = [float(row["val_accuracy"]) for row in table]
    assert best == sorted(best, reverse=True)
    assert "| ag_news-local-" in (out / "results.md").read_text(encoding="utf-8")
    assert (out / "test_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eight_parallel_jobs_share_the_store(tmp_path, tiny_overrides):
    """4 worker processes writing to one fresh SQLite store: no job lost to locking or table creation."""
    proc = run_cli(
        tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", *tiny_overrides, "embeddings.dim=8",
        "trainer.epochs=2", *FAST, "model.pooling=mean,max,sum,min", "trainer.seed=0,1", timeout=400,
    )  # fmt: skip
    [sweep] = sweep_dirs(tmp_path)
    logs = "".join(path.read_text(encoding="utf-8") for path in sweep.glob("*/*.log"))
    for text in (proc.stdout, proc.stderr, logs):
        assert "database is locked" not in text
        assert "Traceback" not in text
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert proc.stdout.splitlines()[-1] == "sweep: 8 of 8 jobs finished"
    runs = experiment_runs(tmp_path)
    assert [run.info.status for run in runs] == ["FINISHED"] * 8
    assert sorted((run.data.params["model.pooling"], run.data.params["trainer.seed"]) for run in runs) == sorted(
        (pooling, seed) for pooling in ("mean", "max", "sum", "min") for seed in ("0", "1")
    )
    assert_one_sweep(tmp_path, runs, jobs=8)
    for run in runs:
        assert {"test_accuracy", "test_macro_f1", "best_val_accuracy", "total_time_s", "num_train"} <= set(run.data.metrics)
        assert [step for step, _ in metric_steps(tmp_path, run.info.run_id, "val_loss")] == [1, 2]
    assert sorted(job["status"] for job in jobs_file(sweep)) == ["FINISHED"] * 8

"""End to end: ``glove-exp -m`` sweeps (basic and joblib launchers) on the tiny synthetic corpus, one
MLflow run per job in a shared SQLite store, then ``glove-exp-report`` over the sweep."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import pytest

from tests.conftest import CLASSES, experiment_runs, metric_steps, run_cli, store_uri

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


# --- basic launcher: one process, a failing job does not stop the others -------------------------


def test_basic_sweep_with_a_failing_job_exits_1_and_names_it(tmp_path, tiny_overrides):
    """``embeddings.dim=9`` does not match the 8-d file: job 1 fails before its run starts, job 0 finishes."""
    proc = run_cli(tmp_path, "-m", *tiny_overrides, *FAST, "embeddings.dim=8,9")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr  # a user error: no traceback, even in a sweep
    [run] = experiment_runs(tmp_path)  # the failing job left no run
    assert run.info.status == "FINISHED" and run.data.params["embeddings.dim"] == "8"
    assert run.data.tags["hydra_job_num"] == "0"
    [sweep] = sweep_dirs(tmp_path)
    assert run.data.tags["sweep_id"] == sweep.relative_to(tmp_path).as_posix()
    assert "model.pooling=mean" not in run.data.tags["hydra_overrides"]
    summary = proc.stdout.splitlines()[-2:]
    assert summary[0] == "sweep: 1 of 2 jobs finished"
    assert summary[1].startswith("  job 1 (") and "embeddings.dim=9" in summary[1]
    assert summary[1].endswith(
        f") FAILED: {tiny_overrides[2].split('=', 1)[1]} holds 8-d vectors but embeddings.dim=9; set embeddings.dim=8"
    )
    assert {job["num"]: (job["status"], job.get("run_id")) for job in jobs_file(sweep)} == {
        0: ("FINISHED", run.info.run_id),
        1: ("FAILED", None),
    }


# --- joblib: parallel jobs in separate processes, one fresh store ----------------------------------


@pytest.fixture(scope="module")
def parallel_sweep(tmp_path_factory, tiny_overrides):
    cwd = tmp_path_factory.mktemp("joblib8")
    proc = run_cli(
        cwd, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", *tiny_overrides, "embeddings.dim=8",
        "trainer.epochs=2", "explain.num_examples=0", "tracking.log_model=best", "model.pooling=mean,max,sum,min",
        "trainer.seed=0,1", timeout=400,
    )  # fmt: skip
    return cwd, proc


def test_eight_parallel_jobs_share_the_store(parallel_sweep):
    """4 worker processes writing to one fresh SQLite store: no job lost to locking or table creation."""
    tmp_path, proc = parallel_sweep
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
    names = sorted(run.info.run_name for run in runs)  # what the sweep varies, and nothing else
    assert names == sorted(f"{pooling}-seed={seed}" for pooling in ("mean", "max", "sum", "min") for seed in (0, 1))
    assert "ConfigStore schema" not in proc.stderr  # no copies of the launcher plugins' configs
    for run in runs:
        assert {"test/accuracy", "test/macro_f1", "val/selected_accuracy", "time/total_s"} <= set(run.data.metrics)
        assert [step for step, _ in metric_steps(tmp_path, run.info.run_id, "val/loss")] == [1, 2]
    assert sorted(job["status"] for job in jobs_file(sweep)) == ["FINISHED"] * 8


def test_the_parallel_sweep_registers_its_best_job_as_models_best(parallel_sweep, loading_store):
    """``tracking.log_model=best``: a job logs its model only when it beats the registered best, and the
    alias ``best`` ends on the job with the highest validation accuracy."""
    tmp_path, proc = parallel_sweep
    runs = experiment_runs(tmp_path)
    best_accuracy = max(run.data.metrics["val/selected_accuracy"] for run in runs)
    client = mlflow.MlflowClient(store_uri(tmp_path))
    version = client.get_model_version_by_alias("model", "best")
    [best] = [run for run in runs if run.info.run_id == version.run_id]
    assert best.data.metrics["val/selected_accuracy"] == best_accuracy
    models = client.search_logged_models(experiment_ids=[runs[0].info.experiment_id])
    assert 1 <= len(models) <= 8 and version.source in {model.artifact_location for model in models}
    assert "(best so far)" in proc.stdout
    loading_store(store_uri(tmp_path))
    frame = mlflow.pyfunc.load_model("models:/model@best").predict(["stocks oil market", "goal cup"])
    assert list(frame.columns) == CLASSES


def test_the_sweep_has_a_finished_parent_over_its_jobs(parallel_sweep):
    tmp_path, proc = parallel_sweep
    [parent] = experiment_runs(tmp_path, parents=True)
    assert parent.info.status == "FINISHED"
    assert re.fullmatch(r"pooling x seed \d\d:\d\d", parent.info.run_name)
    assert {run.data.tags["mlflow.parentRunId"] for run in experiment_runs(tmp_path)} == {parent.info.run_id}
    [sweep] = sweep_dirs(tmp_path)
    assert parent.data.tags["sweep_id"] == sweep.relative_to(tmp_path).as_posix()

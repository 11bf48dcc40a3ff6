"""``tracking.log_model=best``: sweep jobs save their models in their output folders, and the
sweep's end logs only the best job's into that job's run (in process, on the tiny corpus)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from glove_exp.app import pipeline
from glove_exp.app.best_model import PENDING_MODEL_DIR, best_job, log_best_model
from glove_exp.app.tracking import JobInfo
from tests.conftest import CLASSES, experiment_runs, store_uri, tiny_config


@pytest.fixture(autouse=True)
def _store_tables_made(store_in_tmp_path):
    """Each test's ``tmp_path/mlflow.db`` starts with MLflow's tables already made."""


def job(num, val, test, status="FINISHED", pending="saved"):
    return {"num": num, "status": status, "val_accuracy": val, "test_accuracy": test, "pending_model": pending}


def test_the_best_job_has_the_highest_validation_accuracy_the_lowest_number_on_ties():
    jobs = [job(2, 0.9, 0.1), job(0, 0.8, 0.9), job(1, 0.9, 0.2), job(3, 0.99, 0.99, status="FAILED")]
    assert best_job(jobs)["num"] == 1
    assert best_job([job(0, 0.9, 0.5), job(1, 0.95, 0.4, pending=None)])["num"] == 0  # no saved model
    assert best_job([job(0, 0.1, 0.5), job(1, None, 0.6)])["num"] == 1  # a job without val: test accuracy
    assert best_job([job(0, 0.9, 0.5, pending=None)]) is None


def test_a_best_model_outside_this_machine_is_named_and_nothing_is_deleted(tmp_path):
    kept = tmp_path / "1" / "pending_model"
    kept.mkdir(parents=True)
    line = log_best_model([job(0, 0.9, 0.5, pending=str(tmp_path / "elsewhere")), job(1, 0.5, 0.5, pending=str(kept))])
    assert line.startswith(f"sweep: the best job's model ({tmp_path / 'elsewhere'}) is not on this machine")
    assert "tracking.log_model=always" in line and kept.is_dir()


def test_a_best_model_that_cannot_be_logged_keeps_its_files(tmp_path):
    folder = tmp_path / "0" / "pending_model"
    folder.mkdir(parents=True)
    meta = {"run_id": "0" * 32, "tracking_uri": f"sqlite:///{tmp_path}/missing/dir/mlflow.db"}
    (folder / "pending.json").write_text(json.dumps(meta), encoding="utf-8")
    line = log_best_model([job(0, 0.9, 0.5, pending=str(folder))])
    assert line.startswith("sweep: could not log the best job's model (") and line.endswith(
        f"its files stay in {folder}"
    )
    assert folder.is_dir()


def test_a_sweep_logs_only_the_best_jobs_model_which_loads_and_predicts(tiny_data, tmp_path):
    sweep = tmp_path / "multirun"
    jobs = []
    for num, lr in enumerate(["0.000001", "0.01"]):  # the second job learns, the first hardly does
        config = tiny_config(
            tiny_data, tmp_path, f"optimizer.lr={lr}", "explain.num_examples=0", "tracking.log_model=best"
        )
        info = JobInfo(num=num, sweep_id=str(sweep), output_dir=str(sweep / str(num)))
        result = pipeline.run(config, info)
        assert result.pending_model == str(sweep / str(num) / PENDING_MODEL_DIR)
        jobs.append(
            job(num, result.val_accuracy, result.test_accuracy, pending=result.pending_model)
            | {"run_id": result.run_id}
        )
    runs = {run.info.run_id: run for run in experiment_runs(tmp_path)}
    best = max(jobs, key=lambda j: j["val_accuracy"])
    assert best["val_accuracy"] > min(j["val_accuracy"] for j in jobs)

    line = log_best_model(jobs)

    assert line == f"sweep: the model of job {best['num']}, the best, is logged in run {best['run_id']}"
    assert not [path for path in sweep.rglob("*") if path.name == PENDING_MODEL_DIR]  # every copy deleted
    client = mlflow.MlflowClient(store_uri(tmp_path))
    models = client.search_logged_models(experiment_ids=[next(iter(runs.values())).info.experiment_id])
    assert [model.source_run_id for model in models] == [best["run_id"]]
    assert [run.info.status for run in experiment_runs(tmp_path)] == ["FINISHED", "FINISHED"]
    mlflow.set_tracking_uri(store_uri(tmp_path))
    frame = mlflow.pyfunc.load_model(f"runs:/{best['run_id']}/model").predict(["the match goal team", "stocks oil"])
    assert list(frame.columns) == CLASSES
    np.testing.assert_allclose(frame.sum(axis=1), 1.0, atol=1e-5)


def test_a_single_run_with_log_model_best_logs_its_model(tiny_data, tmp_path, loading_store):
    config = tiny_config(tiny_data, tmp_path, "explain.num_examples=0", "tracking.log_model=best")
    result = pipeline.run(config)
    assert result.pending_model is None
    # MLflow resolves a run's logged models (runs:/<id>/model) in the process-wide store, as users load them
    loading_store(store_uri(tmp_path))
    assert Path(mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/model"))

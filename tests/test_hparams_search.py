"""Tiny sweeps through the Optuna sweeper and the submitit launcher (subprocesses, tiny data)."""

import os
import subprocess
import sys

import mlflow
import pytest
import yaml

pytestmark = pytest.mark.slow


def glove_exp(cwd, ag_dir, glove_file, *overrides):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "GLOVE_EXP_DATA_DIR")}
    tiny = [
        f"dataset.data_dir={ag_dir}", "embeddings=local", f"embeddings.path={glove_file}", "embeddings.dim=8",
        "trainer.epochs=2", "explain.num_examples=0", "tracking.log_model=false",
    ]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "glove_exp.app.cli", "-m", *tiny, *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def finished_runs():
    return mlflow.search_runs(experiment_names=["glove-exp"], filter_string="status = 'FINISHED'", output_format="list")


@pytest.fixture
def store(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    yield tmp_path
    mlflow.set_tracking_uri(None)


def test_optuna_search_reports_the_best_validation_accuracy(store, ag_dir, glove_file):
    out = glove_exp(store, ag_dir, glove_file, "hparams_search=optuna", "hydra.sweeper.n_trials=3")
    assert out.returncode == 0, out.stderr
    assert "\x1b[" not in out.stdout + out.stderr  # no colour codes when not on a terminal
    assert "setup plugin" not in out.stdout + out.stderr  # no tracking-store migration chatter
    runs = finished_runs()
    assert len(runs) == 3 and len({r.data.tags["sweep_id"] for r in runs}) == 1
    for run in runs:  # a trial is named after its pooling and number
        assert run.info.run_name == f"{run.data.params['model.pooling']}-trial{run.data.tags['hydra_job_num']}"
    results = yaml.safe_load(next((store / "multirun").glob("*/*/optimization_results.yaml")).read_text())
    assert results["best_value"] == pytest.approx(max(r.data.metrics["val/selected_accuracy"] for r in runs))
    assert set(results["best_params"]) == {
        "model.pooling",
        "trainer.max_tokens",
        "model.hidden_sizes",
        "model.activation",
        "model.dropout",
        "optimizer.lr",
    }


def test_submitit_local_launcher_runs_each_job(store, ag_dir, glove_file):
    out = glove_exp(store, ag_dir, glove_file, "hydra/launcher=submitit_local", "model.pooling=mean,max")
    assert out.returncode == 0, out.stderr
    assert sorted(r.data.tags["pooling"] for r in finished_runs()) == ["max", "mean"]
    assert "sweep: 2 of 2 jobs finished" in out.stdout + out.stderr


def test_optuna_without_a_validation_split_is_refused_in_one_line(store, ag_dir, glove_file):
    out = glove_exp(store, ag_dir, glove_file, "hparams_search=optuna", "dataset.val_fraction=0")
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "glove-exp: error: an Optuna search maximises validation accuracy: set dataset.val_fraction > 0"
    ]
    assert not list((store / "multirun").glob("*/*/0"))  # no job ran

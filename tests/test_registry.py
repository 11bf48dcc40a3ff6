"""The best model in the registry: models:/<tracking.model_name>@best, moved last, never lost."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from glove_exp.app import pipeline
from glove_exp.app.registry import ALIAS, Score, best_version
from glove_exp.app.store import Store
from tests.conftest import CLASSES, experiment_runs, store_uri, tiny_config

NO_LIME = "explain.num_examples=0"


def test_scores_compare_by_validation_else_by_test_accuracy():
    assert Score(0.8, 0.5).beats(None)
    assert Score(0.8, 0.5).beats(Score(0.7, 0.9))
    assert not Score(0.7, 0.9).beats(Score(0.7, 0.1))  # a tie keeps the earlier best
    assert Score(None, 0.6).beats(Score(0.9, 0.5))  # without a validation split: test accuracy
    assert not Score(0.9, 0.5).beats(Score(None, 0.6))


def run(tiny_data, tmp_path, *overrides):
    return pipeline.run(tiny_config(tiny_data, tmp_path, NO_LIME, *overrides))


def alias_run(tmp_path) -> str:
    client = mlflow.MlflowClient(store_uri(tmp_path))
    return client.get_model_version_by_alias("model", ALIAS).run_id


def test_the_alias_follows_the_best_run_and_loads_as_a_text_classifier(tiny_data, tmp_path, loading_store):
    weak = run(tiny_data, tmp_path, "optimizer.lr=0.000001")  # hardly learns
    assert weak.best and alias_run(tmp_path) == weak.run_id  # the first run is the best so far
    strong = run(tiny_data, tmp_path, "optimizer.lr=0.01")
    assert strong.val_accuracy > weak.val_accuracy
    assert strong.best and alias_run(tmp_path) == strong.run_id
    worse = run(tiny_data, tmp_path, "optimizer.lr=0.0000011")
    assert worse.best is None and alias_run(tmp_path) == strong.run_id
    client = mlflow.MlflowClient(store_uri(tmp_path))
    logged = {
        model.source_run_id for model in client.search_logged_models([experiment_runs(tmp_path)[0].info.experiment_id])
    }
    assert logged == {weak.run_id, strong.run_id}  # log_model=best: the worse run logged no model
    loading_store(store_uri(tmp_path))
    frame = mlflow.pyfunc.load_model("models:/model@best").predict(["the match goal team", "stocks oil"])
    assert list(frame.columns) == CLASSES
    np.testing.assert_allclose(frame.sum(axis=1), 1.0, atol=1e-5)


def test_log_model_never_registers_nothing(tiny_data, tmp_path):
    result = run(tiny_data, tmp_path, "tracking.log_model=never")
    assert result.best is None
    config = tiny_config(tiny_data, tmp_path)
    assert best_version(Store.open(config.tracking.uri, config.tracking.experiment), "model") is None


@pytest.mark.parametrize("step", ["create_model_version", "set_registered_model_alias"])
def test_a_signal_while_registering_leaves_the_alias_on_the_old_best(
    tiny_data, tmp_path, monkeypatch, step, loading_store
):
    old = run(tiny_data, tmp_path, "optimizer.lr=0.000001")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt("signal 2")

    monkeypatch.setattr(mlflow.MlflowClient, step, interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_data, tmp_path, "optimizer.lr=0.01")
    monkeypatch.undo()
    new = [r for r in experiment_runs(tmp_path) if r.info.run_id != old.run_id]
    assert [r.info.status for r in new] == ["FINISHED"]  # the run had ended before registering began
    assert alias_run(tmp_path) == old.run_id
    loading_store(store_uri(tmp_path))
    assert len(mlflow.pyfunc.load_model("models:/model@best").predict(["goal"])) == 1


def test_an_alias_set_at_the_same_moment_by_another_job_is_looked_at_again(tiny_data, tmp_path, monkeypatch):
    """SQLite and PostgreSQL refuse the second of two simultaneous alias inserts (a unique key): the job
    looks at the best again and sets the alias if it still beats it."""
    original = mlflow.MlflowClient.set_registered_model_alias
    calls = []

    def clash_once(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise mlflow.exceptions.MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", clash_once)
    result = run(tiny_data, tmp_path)
    assert len(calls) == 2 and result.best and alias_run(tmp_path) == result.run_id

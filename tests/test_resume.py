"""Resume: a config with a FINISHED run is skipped, dead RUNNING runs end KILLED, racing jobs train once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import mlflow
import pytest

from glove_exp.app import pipeline
from glove_exp.app.identity import CONFIG_TAG, config_id
from glove_exp.app.store import HEARTBEAT_TAG, HEARTBEAT_TIMEOUT_S, Store, is_dead
from tests.conftest import experiment_runs, store_uri, tiny_config

FAST = ("explain.num_examples=0", "tracking.log_model=never", "trainer.epochs=1")


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_a_finished_config_is_skipped_and_says_so(tiny_data, tmp_path):
    first = pipeline.run(tiny_config(tiny_data, tmp_path, *FAST))
    again = pipeline.run(tiny_config(tiny_data, tmp_path, *FAST))
    assert again.skipped == f"finished as run {first.run_id}"
    assert again.summary == f"mean: skipped: finished as run {first.run_id}"
    assert (again.run_id, again.val_accuracy, again.test_accuracy) == (
        first.run_id, first.val_accuracy, pytest.approx(first.test_accuracy),
    )  # fmt: skip
    assert [run.info.run_id for run in experiment_runs(tmp_path)] == [first.run_id]


def test_another_seed_trains_and_skip_finished_false_forces_a_rerun(tiny_data, tmp_path):
    pipeline.run(tiny_config(tiny_data, tmp_path, *FAST))
    assert not pipeline.run(tiny_config(tiny_data, tmp_path, *FAST, "trainer.seed=1")).skipped
    assert not pipeline.run(tiny_config(tiny_data, tmp_path, *FAST, "tracking.skip_finished=false")).skipped
    runs = experiment_runs(tmp_path)
    assert [run.info.status for run in runs] == ["FINISHED"] * 3
    assert len({run.data.tags[CONFIG_TAG] for run in runs}) == 2
    assert len({run.data.tags["glove_exp.group_id"] for run in runs}) == 1
    seed_0, seed_1 = runs[0].data.params, runs[1].data.params
    assert {key for key in seed_0.keys() | seed_1.keys() if seed_0.get(key) != seed_1.get(key)} == {"trainer.seed"}


def test_a_run_left_running_by_a_dead_process_ends_killed_and_the_config_trains(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path, *FAST)
    store = Store.open(config.tracking.uri, config.tracking.experiment)
    tags = {CONFIG_TAG: config_id(config), "host": socket.gethostname(), "pid": str(dead_pid())}
    orphan = store.client.create_run(store.experiment_id, tags=tags).info.run_id
    result = pipeline.run(config)
    assert not result.skipped
    statuses = {run.info.run_id: run.info.status for run in experiment_runs(tmp_path)}
    assert statuses == {orphan: "KILLED", result.run_id: "FINISHED"}


def test_of_two_racing_jobs_the_later_run_backs_off(tiny_data, tmp_path):
    """A live run of the same config created first (here: this process's) owns it: the job deletes its
    own run and reports the owner, without training."""
    config = tiny_config(tiny_data, tmp_path, *FAST)
    store = Store.open(config.tracking.uri, config.tracking.experiment)
    tags = {CONFIG_TAG: config_id(config), "host": socket.gethostname(), "pid": str(os.getpid())}
    first = store.client.create_run(store.experiment_id, tags=tags).info.run_id
    result = pipeline.run(config)
    assert result.skipped == f"running as run {first}"
    assert [run.info.run_id for run in experiment_runs(tmp_path)] == [first]  # the later run is deleted
    deleted = mlflow.MlflowClient(store_uri(tmp_path)).search_runs(
        [store.experiment_id], run_view_type=mlflow.entities.ViewType.DELETED_ONLY
    )
    assert len(deleted) == 1 and deleted[0].info.status != "FINISHED"


def test_resume_works_on_a_file_store(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.17 keeps the file store for those who ask
    uri = (tmp_path / "mlruns").as_uri()
    first = pipeline.run(tiny_config(tiny_data, tmp_path, *FAST, f"tracking.uri={uri}"))
    assert pipeline.run(tiny_config(tiny_data, tmp_path, *FAST, f"tracking.uri={uri}")).run_id == first.run_id


@pytest.mark.parametrize(
    ("tags", "metrics", "dead"),
    [
        ({"host": "elsewhere", HEARTBEAT_TAG: "1000"}, {}, True),  # silent for far longer than the timeout
        ({"host": "elsewhere", HEARTBEAT_TAG: str(10_000 - HEARTBEAT_TIMEOUT_S + 1)}, {}, False),
        ({"host": "elsewhere", HEARTBEAT_TAG: "1000"}, {"time/epoch_s": 5_000.0}, False),  # slow epochs: wait 3
        ({"host": "elsewhere"}, {}, False),  # not glove-exp's: left alone
    ],
)
def test_another_hosts_run_is_dead_when_its_heartbeat_stopped(tags, metrics, dead):
    assert is_dead(tags, metrics, now=10_000.0) is dead


def test_this_hosts_run_is_dead_when_its_process_is_gone():
    host = socket.gethostname()
    assert is_dead({"host": host, "pid": str(dead_pid())}, {}, now=0.0)
    assert not is_dead({"host": host, "pid": str(os.getpid())}, {}, now=0.0)

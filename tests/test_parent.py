"""A sweep's parent run, through the Hydra callback's hooks called as Hydra calls them."""

from __future__ import annotations

from datetime import datetime

import pytest
from omegaconf import open_dict

from glove_exp.app.cli import CONFIG_PATH as CONF
from glove_exp.app.parent import PARENT_FILE, parent_name, read_parent, sweep_key
from glove_exp.app.schema import register
from glove_exp.report.sweep import SweepSummary
from tests.conftest import experiment_runs, store_uri


def sweep_config(tmp_path, *overrides: str):
    """The config Hydra hands a sweep's callbacks: composed with its ``hydra`` node, ``overrides`` as typed."""
    from hydra import compose, initialize_config_dir

    register()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        config = compose("config", [f"tracking.uri={store_uri(tmp_path)}"], return_hydra_config=True)
    with open_dict(config):
        config.hydra.overrides.task = list(overrides)
        config.hydra.sweep.dir = str(tmp_path / "multirun" / datetime.now().strftime("%H-%M-%S-%f"))
    return config


def test_names_fit_the_runs_table():
    started = datetime(2026, 12, 6, 0, 28)
    assert parent_name(["model.pooling", "trainer.seed"], started) == "pooling x seed 00:28"
    assert parent_name([], started) == "sweep 00:28"
    assert sweep_key("1", ["b=1", "a=1,2"]) == sweep_key("1", ["a=1,2", "b=1"]) != sweep_key("2", ["a=1,2", "b=1"])


def test_a_sweep_opens_its_parent_first_and_ends_it_with_the_jobs(tmp_path, capsys):
    config = sweep_config(tmp_path, "model.pooling=mean,max", "trainer.seed=0,1")
    callback = SweepSummary()
    callback.on_multirun_start(config)
    [parent] = experiment_runs(tmp_path, parents=True)
    assert parent.info.status == "RUNNING" and parent.info.run_name.startswith("pooling x seed ")
    assert read_parent(config.hydra.sweep.dir, store_uri(tmp_path)) == parent.info.run_id
    assert read_parent(config.hydra.sweep.dir, "sqlite:///elsewhere.db") is None
    callback.on_multirun_end(config)
    [parent] = experiment_runs(tmp_path, parents=True)
    assert parent.info.status == "FINISHED"


def test_an_interrupted_sweep_ends_its_parent_killed_and_a_resumed_one_reopens_it(tmp_path):
    overrides = ("model.pooling=mean,max",)
    first = SweepSummary()
    first.on_multirun_start(sweep_config(tmp_path, *overrides))
    first.end_killed()  # what atexit does when Ctrl-C ended the sweep
    [parent] = experiment_runs(tmp_path, parents=True)
    assert parent.info.status == "KILLED"
    again = SweepSummary()
    config = sweep_config(tmp_path, *reversed(overrides))
    again.on_multirun_start(config)
    [reopened] = experiment_runs(tmp_path, parents=True)
    assert reopened.info.run_id == parent.info.run_id and reopened.info.status == "RUNNING"
    assert len(list((tmp_path / "multirun").glob(f"*/{PARENT_FILE}"))) == 2
    again.on_multirun_end(config)
    other = SweepSummary()
    other.on_multirun_start(sweep_config(tmp_path, "model.pooling=sum,max"))
    assert len(experiment_runs(tmp_path, parents=True)) == 2  # another command, another parent
    other.end_killed()


def test_a_failed_job_fails_the_parent_and_the_sweep(tmp_path):
    from glove_exp.app.sweep import record_job

    config = sweep_config(tmp_path, "model.pooling=mean,max")
    callback = SweepSummary()
    callback.on_multirun_start(config)
    record_job(
        config.hydra.sweep.dir, {"num": 0, "overrides": ["model.pooling=mean"], "status": "FAILED", "error": "x"}
    )
    with pytest.raises(SystemExit) as exit_info:
        callback.on_multirun_end(config)
    assert exit_info.value.code == 1
    [parent] = experiment_runs(tmp_path, parents=True)
    assert parent.info.status == "FAILED"


def test_a_store_that_cannot_open_is_one_line_before_any_job(tmp_path, capsys):
    config = sweep_config(tmp_path, "model.pooling=mean,max")
    config.tracking.uri = "ftp://nowhere/x"
    with pytest.raises(SystemExit) as exit_info:
        SweepSummary().on_multirun_start(config)
    assert exit_info.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("glove-exp: error: tracking.uri=ftp://nowhere/x: unsupported scheme")


def test_a_job_run_again_in_the_same_folder_counts_once_with_its_last_state(tmp_path):
    from glove_exp.app.sweep import read_jobs, record_job, succeeded, summarise

    job = {"num": 0, "overrides": ["model.pooling=mean", "trainer.seed=0"]}
    record_job(str(tmp_path), job | {"status": "KILLED", "error": "interrupted"})
    record_job(str(tmp_path), job | {"status": "SKIPPED"})
    record_job(str(tmp_path), {"num": 1, "overrides": ["trainer.seed=1", "model.pooling=mean"], "status": "FINISHED"})
    jobs = read_jobs(str(tmp_path))
    assert succeeded(jobs)
    assert summarise(jobs) == "sweep: 2 of 2 jobs finished (1 skipped: finished before)"


def sweep_with_a_found_run(tmp_path):
    """A sweep of two jobs, ended through the callback: ``max`` trained as its child, ``mean`` skipped
    because a run outside it (another sweep's) had finished that config; returns the config and the ids."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from glove_exp.app.sweep import record_job

    config = sweep_config(tmp_path, "model.pooling=mean,max")
    callback = SweepSummary()
    callback.on_multirun_start(config)
    store, parent_id = callback.parent
    sweeps = {"mean": "multirun/an-earlier-sweep", "max": config.hydra.sweep.dir}
    run_ids = {}
    for num, (pooling, accuracy) in enumerate([("mean", 0.9), ("max", 0.8)]):
        tags = [RunTag("sweep_id", sweeps[pooling])] + [RunTag(MLFLOW_PARENT_RUN_ID, parent_id)] * (pooling == "max")
        run_ids[pooling] = run_id = store.client.create_run(store.experiment_id).info.run_id
        metrics = [Metric(key, accuracy, 0, 0) for key in ("val/selected_accuracy", "test/accuracy")]
        store.client.log_batch(run_id, metrics, [Param("model.pooling", pooling)], tags)
        store.client.set_terminated(run_id)
        status = "SKIPPED" if pooling == "mean" else "FINISHED"
        record_job(
            config.hydra.sweep.dir,
            {"num": num, "overrides": [f"model.pooling={pooling}"], "status": status, "run_id": run_id},
        )
    callback.on_multirun_end(config)
    return config, run_ids


def test_the_summary_counts_the_runs_that_skipped_jobs_found(tmp_path, capsys):
    """A job skipped because another sweep (or a single run) finished its config: that run is in the summary."""
    sweep_with_a_found_run(tmp_path)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sweep: best of 2 groups: model.pooling=mean (n=1): val 90.00 %")
    assert out[1] == "sweep: 2 of 2 jobs finished (1 skipped: finished before)"


def test_the_latest_sweep_may_be_one_whose_jobs_all_found_their_runs(tmp_path):
    """Its parent is its only run: ``--sweep latest`` and its folder still find it, with the found runs."""
    from glove_exp.app.sweep import record_job
    from glove_exp.report.query import load_runs

    _, run_ids = sweep_with_a_found_run(tmp_path)
    config = sweep_config(tmp_path, "model.pooling=max")
    callback = SweepSummary()
    callback.on_multirun_start(config)
    record_job(config.hydra.sweep.dir, {"num": 0, "overrides": ["model.pooling=max"], "status": "SKIPPED",
                                        "run_id": run_ids["max"]})  # fmt: skip
    callback.on_multirun_end(config)
    for sweep in ("latest", config.hydra.sweep.dir):
        runs, stored = load_runs(store_uri(tmp_path), config.tracking.experiment, sweep)
        assert stored == config.hydra.sweep.dir and list(runs["run_id"]) == [run_ids["max"]]


def test_the_report_of_a_sweep_has_the_runs_its_skipped_jobs_found(tmp_path, capsys, monkeypatch):
    """``glove-exp-report --sweep`` reads what the sweep's summary counted: its own runs and the found ones,
    quietly (no MLflow transfer bar as it reads the record)."""
    from mlflow import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from glove_exp.report.cli import main
    from glove_exp.report.query import load_runs

    config, run_ids = sweep_with_a_found_run(tmp_path)
    runs, sweep = load_runs(store_uri(tmp_path), config.tracking.experiment, config.hydra.sweep.dir)
    assert sweep == config.hydra.sweep.dir
    assert sorted(runs["run_id"]) == sorted(run_ids.values())
    earlier, _ = load_runs(store_uri(tmp_path), config.tracking.experiment, "multirun/an-earlier-sweep")
    assert list(earlier["run_id"]) == [run_ids["mean"]]  # the other way round, nothing was found
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "")  # removed after the test, whatever main() sets
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    capsys.readouterr()
    main(["--tracking-uri", store_uri(tmp_path), "--sweep", config.hydra.sweep.dir, "--out", str(tmp_path), "--log"])
    printed = capsys.readouterr()
    assert printed.err == ""  # the report's own lines go to stdout
    assert "\n2 runs (1 finished before the sweep, found by its skipped jobs) in 2 groups (" in printed.out
    [report] = MlflowClient(store_uri(tmp_path)).search_runs(
        [runs["experiment_id"][0]], "tags.`glove_exp.report` = 'true'"
    )
    assert report.data.metrics["n_groups"] == 2
    found = MlflowClient(store_uri(tmp_path)).get_run(run_ids["mean"])
    assert MLFLOW_PARENT_RUN_ID not in found.data.tags  # another sweep's run is not moved under this report

"""A sweep's parent run, through the Hydra callback's hooks called as Hydra calls them."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from omegaconf import open_dict

from glove_exp.app.cli import CONFIG_PATH as CONF
from glove_exp.app.parent import PARENT_FILE, parent_name, read_parent, sweep_key
from glove_exp.app.schema import register
from glove_exp.app.session import SLURM_LAUNCHER
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


def test_a_slurm_sweep_where_slurm_is_not_is_refused_before_its_parent_opens(tmp_path, monkeypatch, capsys):
    config = sweep_config(tmp_path, "model.pooling=mean,max")
    with open_dict(config):
        config.hydra.launcher._target_ = SLURM_LAUNCHER
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    with pytest.raises(SystemExit) as exit_info:
        SweepSummary().on_multirun_start(config)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("glove-exp: error: hydra/launcher=submitit_slurm submits through Slurm")
    assert not (tmp_path / "mlflow.db").exists()


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


def finish_sweep(config, jobs, found=None, end=True):
    """A sweep's jobs through the callback as Hydra calls it: each pooling in ``jobs`` trains a child run
    with that validation and test accuracy, each in ``found`` is skipped, finding that run id; returns the
    trained runs' ids by pooling. ``end=False``: the sweep is interrupted after its jobs."""
    from mlflow.entities import RunTag
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from glove_exp.app.sweep import record_job

    callback = SweepSummary()
    callback.on_multirun_start(config)
    store, parent_id = callback.parent
    run_ids, num = {}, 0
    for pooling, accuracy in jobs.items():
        tags = [RunTag("sweep_id", config.hydra.sweep.dir), RunTag(MLFLOW_PARENT_RUN_ID, parent_id)]
        run_ids[pooling] = run_id = add_run(store, pooling, accuracy, tags)
        record_job(config.hydra.sweep.dir, {"num": num, "overrides": [f"model.pooling={pooling}"],
                                            "status": "FINISHED", "run_id": run_id})  # fmt: skip
        num += 1
    for pooling, run_id in (found or {}).items():
        record_job(config.hydra.sweep.dir, {"num": num, "overrides": [f"model.pooling={pooling}"],
                                            "status": "SKIPPED", "run_id": run_id})  # fmt: skip
        num += 1
    callback.on_multirun_end(config) if end else callback.end_killed()
    return run_ids


def add_run(store, pooling, accuracy, tags):
    from mlflow.entities import Metric, Param

    run_id = store.client.create_run(store.experiment_id).info.run_id
    metrics = [Metric(key, accuracy, 0, 0) for key in ("val/selected_accuracy", "test/accuracy")]
    store.client.log_batch(run_id, metrics, [Param("model.pooling", pooling)], tags)
    store.client.set_terminated(run_id)
    return run_id


def sweep_with_a_found_run(tmp_path):
    """A sweep of two jobs: ``max`` trained as its child, ``mean`` skipped because another sweep had
    finished that config; returns the config and the ids."""
    from mlflow.entities import RunTag

    from glove_exp.app.store import Store

    config = sweep_config(tmp_path, "model.pooling=mean,max")
    store = Store.open(store_uri(tmp_path), config.tracking.experiment)
    earlier = add_run(store, "mean", 0.9, [RunTag("sweep_id", "multirun/an-earlier-sweep")])
    return config, finish_sweep(config, {"max": 0.8}, found={"mean": earlier}) | {"mean": earlier}


def test_the_summary_counts_the_runs_that_skipped_jobs_found(tmp_path, capsys):
    """A job skipped because another sweep (or a single run) finished its config: that run is in the summary."""
    sweep_with_a_found_run(tmp_path)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sweep: best of 2 groups: model.pooling=mean (n=1): val 90.00 %")
    assert out[1] == "sweep: 2 of 2 jobs finished (1 skipped: finished before)"


def test_the_latest_sweep_may_be_one_whose_jobs_all_found_their_runs(tmp_path):
    """Its parent is its only run: ``--sweep latest`` and its folder still find it, with the found runs."""
    from glove_exp.report.query import load_runs

    _, run_ids = sweep_with_a_found_run(tmp_path)
    config = sweep_config(tmp_path, "model.pooling=max")
    finish_sweep(config, {}, found={"max": run_ids["max"]})
    for sweep in ("latest", config.hydra.sweep.dir):
        selected = load_runs(store_uri(tmp_path), config.tracking.experiment, sweep)
        assert selected.sweep == config.hydra.sweep.dir and list(selected.runs["run_id"]) == [run_ids["max"]]
    again = sweep_config(tmp_path, "model.pooling=mean,max")  # the first command again: its parent reopens
    finish_sweep(again, {}, found=run_ids)
    assert load_runs(store_uri(tmp_path), config.tracking.experiment, "latest").sweep == again.hydra.sweep.dir


def test_a_resumed_sweep_reports_the_runs_of_its_first_attempt(tmp_path, capsys):
    """The same command again (a new sweep folder) reopens the parent; the jobs the first attempt finished
    are skipped, and the report of the new folder, like the summary, has their runs."""
    from glove_exp.report.query import load_runs

    first = sweep_config(tmp_path, "model.pooling=mean,max")
    trained = finish_sweep(first, {"mean": 0.9}, end=False)  # Ctrl-C before max
    again = sweep_config(tmp_path, "model.pooling=mean,max")
    trained |= finish_sweep(again, {"max": 0.8}, found={"mean": trained["mean"]})
    assert "sweep: best of 2 groups: model.pooling=mean (n=1)" in capsys.readouterr().out
    selected = load_runs(store_uri(tmp_path), again.tracking.experiment, "latest")
    assert sorted(selected.runs["run_id"]) == sorted(trained.values()) and selected.found == {trained["mean"]}


def test_an_earlier_folder_of_a_sweep_run_again_reports_the_whole_sweep(tmp_path):
    """The same command again reopens the parent in a new folder: each of its folders reports the sweep
    as its newest folder does (the runs found, every attempt's own), one whose jobs all found their runs
    too (no run has its folder as ``sweep_id`` any longer)."""
    from glove_exp.report.query import load_runs

    first, run_ids = sweep_with_a_found_run(tmp_path)  # max trained here, mean found
    again, last = (sweep_config(tmp_path, "model.pooling=mean,max") for _ in range(2))
    for config in (again, last):
        finish_sweep(config, {}, found=run_ids)  # every job skipped
    for sweep in (first.hydra.sweep.dir, again.hydra.sweep.dir, last.hydra.sweep.dir, "latest"):
        selected = load_runs(store_uri(tmp_path), first.tracking.experiment, sweep)
        assert selected.sweep == last.hydra.sweep.dir
        assert sorted(selected.runs["run_id"]) == sorted(run_ids.values()) and selected.found == set(run_ids.values())


def test_a_sweep_interrupted_twice_reports_the_runs_of_both_attempts(tmp_path):
    """No summary was written (it is, at a sweep's end): the parent's children are the sweep's runs."""
    from glove_exp.report.query import load_runs

    first = sweep_config(tmp_path, "model.pooling=mean,max,sum")
    trained = finish_sweep(first, {"mean": 0.9}, end=False)
    again = sweep_config(tmp_path, "model.pooling=mean,max,sum")
    trained |= finish_sweep(again, {"max": 0.8}, found={"mean": trained["mean"]}, end=False)
    for sweep in ("latest", first.hydra.sweep.dir):
        selected = load_runs(store_uri(tmp_path), first.tracking.experiment, sweep)
        assert selected.sweep == again.hydra.sweep.dir and sorted(selected.runs["run_id"]) == sorted(trained.values())


def test_a_parent_remembers_its_newest_folders_within_the_tag_limit():
    from glove_exp.app.parent import SWEEP_DIRS_CHARS, remembered, sweep_dirs

    folders = [f"multirun/2026-12-08/{i:05d}" + "x" * 100 for i in range(100)]
    value = remembered(folders[:-1], folders[-1])
    kept = json.loads(value)
    assert len(value) <= SWEEP_DIRS_CHARS and kept == folders[-len(kept) :] and len(kept) > 40
    assert json.loads(remembered(["a", "b"], "a")) == ["b", "a"]  # a folder used again is the newest
    assert sweep_dirs({"sweep_id": "multirun/x"}) == ["multirun/x"]  # a parent from before the tag


def test_the_report_of_a_sweep_has_the_runs_its_skipped_jobs_found(tmp_path, capsys, monkeypatch):
    """``glove-exp-report --sweep`` reads what the sweep's summary counted: its own runs and the found ones,
    quietly (no MLflow transfer bar as it reads the record)."""
    from mlflow import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from glove_exp.report.cli import main
    from glove_exp.report.query import load_runs

    config, run_ids = sweep_with_a_found_run(tmp_path)
    selected = load_runs(store_uri(tmp_path), config.tracking.experiment, config.hydra.sweep.dir)
    assert selected.sweep == config.hydra.sweep.dir and selected.found == {run_ids["mean"]}
    assert sorted(selected.runs["run_id"]) == sorted(run_ids.values())
    earlier = load_runs(store_uri(tmp_path), config.tracking.experiment, "multirun/an-earlier-sweep")
    assert list(earlier.runs["run_id"]) == [run_ids["mean"]] and not earlier.found  # nothing found the other way
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "")  # removed after the test, whatever main() sets
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    capsys.readouterr()
    main(["--tracking-uri", store_uri(tmp_path), "--sweep", config.hydra.sweep.dir, "--out", str(tmp_path), "--log"])
    printed = capsys.readouterr()
    assert printed.err == ""  # the report's own lines go to stdout
    assert "\n2 runs (1 finished before the sweep, found by its skipped jobs) in 2 groups (" in printed.out
    [report] = MlflowClient(store_uri(tmp_path)).search_runs(
        [selected.runs["experiment_id"][0]], "tags.`glove_exp.report` = 'true'"
    )
    assert report.data.metrics["n_groups"] == 2
    found = MlflowClient(store_uri(tmp_path)).get_run(run_ids["mean"])
    assert MLFLOW_PARENT_RUN_ID not in found.data.tags  # another sweep's run is not moved under this report

"""The default launcher trains a sweep's seeds as one vmapped program (hydra_plugins/glove_exp_launcher,
glove_exp/app/launch.py, glove_exp/app/group.py): each member is still its own MLflow run, with the
metrics that Hydra's basic launcher, one job at a time, gives the same job."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from glove_exp.app.group import train_together
from glove_exp.app.identity import VMAP_SIZE_TAG, VMAP_TAG
from tests.conftest import cli_command, cli_env, experiment_runs, metric_steps, run_cli, tiny_config

FAST = ["explain.num_examples=0", "tracking.log_model=false", "trainer.epochs=4", "trainer.early_stopping_patience=2"]
SEEDS = "trainer.seed=0,1,2"


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, tiny_overrides):
    """The same 3-seed sweep (its own validation split per seed) by the default and the basic launcher."""
    cwd = tmp_path_factory.mktemp("vmap")
    for experiment, launcher in [("vmap", []), ("basic", ["hydra/launcher=basic"])]:
        proc = run_cli(cwd, "-m", *tiny_overrides, "embeddings.dim=8", *FAST, SEEDS, *launcher,
                       f"tracking.experiment={experiment}")  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.splitlines()[-1] == "sweep: 3 of 3 jobs finished"
        # quiet: Hydra's launch lines and nothing of the group's training
        assert all(
            re.search(r"\[HYDRA\] (Launching 3 jobs locally|\t#\d : )", line) for line in proc.stderr.splitlines()
        )
    return cwd


def by_seed(cwd, experiment):
    return {run.data.params["trainer.seed"]: run for run in experiment_runs(cwd, experiment)}


@pytest.mark.slow
def test_members_log_what_the_basic_launcher_logs(sweeps):
    vmapped, alone = by_seed(sweeps, "vmap"), by_seed(sweeps, "basic")
    assert sorted(vmapped) == sorted(alone) == ["0", "1", "2"]
    for seed, run in vmapped.items():
        other = alone[seed]
        assert run.info.status == "FINISHED"
        for key in ("train/loss", "val/loss", "val/accuracy"):
            steps, values = zip(*metric_steps(sweeps, run.info.run_id, key))
            other_steps, other_values = zip(*metric_steps(sweeps, other.info.run_id, key))
            assert steps == other_steps, key  # early stopping ended both after the same epoch
            assert values == pytest.approx(other_values, abs=1e-4), key
        assert run.data.metrics["test/accuracy"] == pytest.approx(other.data.metrics["test/accuracy"], abs=1e-9)
        assert run.data.tags["glove_exp.config_id"] == other.data.tags["glove_exp.config_id"]


@pytest.mark.slow
def test_members_are_tagged_with_their_program(sweeps):
    vmapped = by_seed(sweeps, "vmap").values()
    assert {run.data.tags[VMAP_SIZE_TAG] for run in vmapped} == {"3"}
    assert len({run.data.tags[VMAP_TAG] for run in vmapped}) == 1
    assert not any(VMAP_TAG in run.data.tags for run in by_seed(sweeps, "basic").values())


@pytest.mark.slow
def test_learning_rates_and_dropout_rates_train_in_one_program_as_they_would_alone(tmp_path, tiny_overrides):
    scalars = ["trainer.seed=0", "optimizer.lr=0.002,0.01", "optimizer.weight_decay=0,0.001", "model.dropout=0.1,0.3"]
    runs = {}
    for experiment, launcher in [("vmap", []), ("basic", ["hydra/launcher=basic"])]:
        proc = run_cli(tmp_path, "-m", *tiny_overrides, "embeddings.dim=8", *FAST, *scalars, *launcher,
                       f"tracking.experiment={experiment}")  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[experiment] = {
            tuple(run.data.params[k] for k in ("optimizer.lr", "optimizer.weight_decay", "model.dropout")): run
            for run in experiment_runs(tmp_path, experiment)
        }
    assert len(runs["vmap"]) == len(runs["basic"]) == 8
    assert {run.data.tags[VMAP_SIZE_TAG] for run in runs["vmap"].values()} == {"8"}
    for settings, run in runs["vmap"].items():
        other = runs["basic"][settings]
        steps, values = zip(*metric_steps(tmp_path, run.info.run_id, "train/loss"))
        other_steps, other_values = zip(*metric_steps(tmp_path, other.info.run_id, "train/loss"))
        assert steps == other_steps and values == pytest.approx(other_values, abs=1e-4), settings
        assert run.data.metrics["test/accuracy"] == pytest.approx(other.data.metrics["test/accuracy"], abs=1e-9)
    assert len({run.data.metrics["train/loss"] for run in runs["vmap"].values()}) == 8  # each its own settings


@pytest.mark.slow
def test_finished_members_are_skipped_and_programs_split_at_max_group_size(sweeps, tiny_overrides):
    proc = run_cli(sweeps, "-m", *tiny_overrides, "embeddings.dim=8", *FAST, "trainer.seed=0,1,2,3,4,5",
                   "tracking.experiment=vmap", "hydra.launcher.max_group_size=2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "sweep: 6 of 6 jobs finished (3 skipped: finished before)"
    new = [run for seed, run in by_seed(sweeps, "vmap").items() if seed in ("3", "4", "5")]
    assert sorted(run.data.tags[VMAP_SIZE_TAG] for run in new) == ["1", "2", "2"]
    assert len({run.data.tags[VMAP_TAG] for run in new}) == 2


@pytest.mark.slow
def test_a_group_that_memory_cannot_hold_is_split(tmp_path, tiny_data, monkeypatch):
    configs = [tiny_config(tiny_data, tmp_path, f"trainer.seed={seed}", "trainer.epochs=1") for seed in range(3)]
    together = train_together(configs, progress=False, max_size=None)
    assert {trained.size for trained in together.values()} == {3}
    monkeypatch.setattr("glove_exp.app.group.available_memory", lambda: 1)
    apart = train_together(configs, progress=False, max_size=None)
    assert {trained.size for trained in apart.values()} == {1}
    assert len({trained.program for trained in apart.values()}) == 3
    for config_id, trained in together.items():  # the same trainings either way
        assert [m.train_loss for m in trained.result.history] == pytest.approx(
            [m.train_loss for m in apart[config_id].result.history], abs=1e-4
        )


def test_a_member_finished_elsewhere_after_its_group_trained_keeps_the_finished_run(tmp_path, tiny_data, monkeypatch):
    """The group looked for finished runs before training; its jobs do not look again before their runs,
    whose owner check finds what finished meanwhile (another process's run of the same config)."""
    from glove_exp.app import pipeline
    from glove_exp.app.identity import config_id

    configs = [tiny_config(tiny_data, tmp_path, *FAST, f"trainer.seed={seed}") for seed in (0, 1)]
    trained = train_together(configs, progress=False, max_size=None)
    elsewhere = pipeline.run(configs[0])
    looked = []
    monkeypatch.setattr(pipeline, "finished_run", lambda *args: looked.append(args))
    member = pipeline.run(configs[0], trained=trained[config_id(configs[0])])
    assert member.skipped == f"finished as run {elsewhere.run_id}" and member.test_accuracy == elsewhere.test_accuracy
    assert pipeline.run(configs[1], trained=trained[config_id(configs[1])]).skipped is None
    assert looked == []
    assert sorted(run.data.params["trainer.seed"] for run in experiment_runs(tmp_path)) == ["0", "1"]


def test_a_sweeps_group_and_jobs_open_the_store_once(tmp_path, tiny_data, monkeypatch):
    """The jobs of one process that share their work (a sweep's) share the opened store: its experiment is
    read and its dead runs are sought once, not once per job; another experiment is opened apart."""
    from glove_exp.app import pipeline
    from glove_exp.app.identity import config_id
    from glove_exp.app.shared import SharedWork
    from glove_exp.app.store import Store

    opened = []
    real = Store.open.__func__
    monkeypatch.setattr(Store, "open", classmethod(lambda cls, *args: opened.append(args[:2]) or real(cls, *args)))
    shared = SharedWork(disk_bytes=None)
    configs = [tiny_config(tiny_data, tmp_path, *FAST, f"trainer.seed={seed}") for seed in (0, 1)]
    trained = train_together(configs, progress=False, max_size=None, shared=shared)
    for config in configs:
        assert pipeline.run(config, trained=trained[config_id(config)], shared=shared).skipped is None
    other = tiny_config(tiny_data, tmp_path, *FAST, "tracking.experiment=other")
    pipeline.run(other, shared=shared)
    store = configs[0].tracking.uri
    assert opened == [(store, "glove-exp"), (store, "other")]
    assert len(experiment_runs(tmp_path)) == 2 and len(experiment_runs(tmp_path, "other")) == 1


def test_a_members_preparation_with_its_group_counts_in_its_runs_stage_times(tmp_path, tiny_data, monkeypatch):
    """The group prepares each member (data to features) before its job runs; the job's reuse of that work
    takes no time, so the run's ``time/*`` counts the member's preparation with its group, as its training."""
    from glove_exp.app import group, pipeline
    from glove_exp.app.identity import config_id
    from glove_exp.app.shared import SharedWork

    def slow_prepare(config, timer, *args):
        prepared = real(config, timer, *args)
        timer.add("tokens", 100.0)  # as if the member's tokens took 100 s to make
        return prepared

    real = group.prepare
    monkeypatch.setattr(group, "prepare", slow_prepare)
    shared = SharedWork(disk_bytes=None)
    configs = [tiny_config(tiny_data, tmp_path, *FAST, f"trainer.seed={seed}") for seed in (0, 1)]
    trained = train_together(configs, progress=False, max_size=None, shared=shared)
    results = [pipeline.run(c, trained=trained[config_id(c)], shared=shared) for c in configs]
    alone = pipeline.run(tiny_config(tiny_data, tmp_path, *FAST, "trainer.seed=2"), shared=shared)  # no group
    assert all(" | tokens 100.0s | " in result.timings for result in results)
    times = {run.info.run_id: run.data.metrics for run in experiment_runs(tmp_path)}
    for result in results:
        assert times[result.run_id]["time/tokens_s"] >= 100.0
        assert times[result.run_id]["time/total_s"] >= 100.0 + times[result.run_id]["time/train_s"]
    assert times[alone.run_id]["time/tokens_s"] < 100.0


def test_an_experiment_deleted_during_a_sweep_stops_its_next_job_with_one_line(tmp_path, tiny_data):
    """The jobs share the store their first job opened; the next run's creation finds the experiment
    deleted and says so as opening it would have."""
    import mlflow

    from glove_exp.app import pipeline
    from glove_exp.app.shared import SharedWork
    from glove_exp.core.errors import TrackingError

    shared = SharedWork(disk_bytes=None)
    first, second = (tiny_config(tiny_data, tmp_path, *FAST, f"trainer.seed={seed}") for seed in (0, 1))
    pipeline.run(first, shared=shared)
    client = mlflow.MlflowClient(first.tracking.uri)
    client.delete_experiment(client.get_experiment_by_name("glove-exp").experiment_id)
    with pytest.raises(TrackingError, match=r"^tracking.experiment='glove-exp' is deleted in sqlite:///.*; restore it"):
        pipeline.run(second, shared=shared)


def test_a_job_config_that_the_sweeper_checked_is_not_composed_again():
    from omegaconf import OmegaConf

    from hydra_plugins.glove_exp_launcher.launcher import ComposedOnce

    class Composer:
        calls: list[tuple[str, ...]] = []

        def load_sweep_config(self, master_config, sweep_overrides):
            self.calls.append(tuple(sweep_overrides))
            return OmegaConf.create({"job": len(self.calls)})

    inner, master, other = Composer(), OmegaConf.create(), OmegaConf.create()
    loader = ComposedOnce(inner)
    checked = loader.load_sweep_config(master, ["a=1"])  # the sweeper's batch check
    assert loader.take(master, ("a=1",)) is checked and inner.calls == [("a=1",)]
    assert loader.take(master, ["a=1"]).job == 2  # handed over once: then composed again
    assert loader.take(other, ["a=1"]).job == 3  # another master config: its own
    assert loader.kept == {}


def test_the_plugin_is_a_light_module():
    """Hydra imports every plugin on every start, ``--help`` included: the launcher's module imports no JAX."""
    code = (
        "import sys, hydra_plugins.glove_exp_launcher.launcher; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'mlflow', 'glove_exp')))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


@pytest.mark.slow
def test_a_signal_while_a_group_trains_stops_the_sweep_with_one_line(tmp_path, tiny_overrides):
    """Before its members' runs exist: no training run is left behind, the parent ends KILLED."""
    command = cli_command(
        "-m", *tiny_overrides, "embeddings.dim=8", "trainer.epochs=100000", "trainer.seed=0,1",
        "hydra.verbose=glove_exp.core.fit",
    )  # fmt: skip
    proc = subprocess.Popen(command, cwd=tmp_path, env=cli_env(tmp_path), stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # the group's per-epoch debug lines; ends if the process dies
            if "epoch 3:" in line:
                proc.send_signal(signal.SIGINT)
                break
        stderr = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert stderr.strip().splitlines()[-1] == "glove-exp: interrupted (SIGINT)"
    assert experiment_runs(tmp_path) == []
    [parent] = experiment_runs(tmp_path, parents=True)
    assert parent.info.status == "KILLED"


def test_a_members_epochs_are_logged_in_batches_within_mlflows_limit(tmp_path):
    """1,250 values (250 epochs of 5 metrics) in two writes of at most 1,000, every epoch at its step."""
    from glove_exp.app.interrupts import Interrupts
    from glove_exp.app.store import Store
    from glove_exp.app.tracking import tracked_run
    from glove_exp.core.train import EpochMetrics

    store = Store.open(f"sqlite:///{tmp_path}/mlflow.db", "epochs")
    history = [EpochMetrics(epoch, 1.0 / epoch, 0.5, 0.9, 0.6, 0.01) for epoch in range(1, 251)]
    with tracked_run(store, "member", {}, Interrupts()) as run:
        run.log_epochs(history)
    losses = store.client.get_metric_history(run.run_id, "val/loss")
    assert sorted(m.step for m in losses) == list(range(1, 251))
    assert sorted((m.step, m.value) for m in store.client.get_metric_history(run.run_id, "train/loss"))[-1] == (
        250,
        pytest.approx(1 / 250),
    )

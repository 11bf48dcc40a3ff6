"""The Optuna sweeper (hydra_plugins/glove_exp_optuna_sweeper, glove_exp/app/search.py): the search space
in process; resumed studies, pruning, seeds, the joblib launcher and bad input through ``glove-exp -m``
on tiny data; and the submitit launcher."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from glove_exp.app.search import (
    SearchError,
    default_storage,
    distribution,
    fail_stale_trials,
    search_space,
    summary,
)

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "hydra_plugins" / "glove_exp_optuna_sweeper"
slow = pytest.mark.slow


def glove_exp(cwd, ag_dir, glove_file, *overrides):
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "GLOVE_EXP_DATA_DIR")}
    tiny = [
        f"dataset.data_dir={ag_dir}", "embeddings=local", f"embeddings.path={glove_file}", "embeddings.dim=8",
        "trainer.epochs=2", "explain.num_examples=0", "tracking.log_model=never",
    ]  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "glove_exp.app.cli", "-m", *tiny, *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def search(store, ag_dir, glove_file, *overrides):
    return glove_exp(store, ag_dir, glove_file, "hparams_search=optuna", *overrides)


def runs(status=None):
    """The training runs (not the sweeps' parent runs)."""
    found = mlflow.search_runs(experiment_names=["glove-exp"], output_format="list")
    found = [run for run in found if "glove_exp.role" not in run.data.tags]
    return [run for run in found if status is None or run.info.status == status]


def study(store):
    return optuna.load_study(study_name="glove-exp", storage=f"sqlite:///{store}/optuna.db")


def jobs(store):
    [path] = (store / "multirun").glob("*/*/jobs.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def store(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    yield tmp_path
    mlflow.set_tracking_uri(None)


def parse(override):
    return OverridesParser.create().parse_override(override)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model.pooling=choice(mean, max)", CategoricalDistribution(["mean", "max"])),
        ("model.hidden_sizes=choice([128], [256])", CategoricalDistribution(["[128]", "[256]"])),
        ("trainer.max_tokens=choice(50, 100)", CategoricalDistribution([50, 100])),
        ("model.dropout=interval(0.0, 0.5)", FloatDistribution(0.0, 0.5)),
        ("optimizer.lr=tag(log, interval(0.0003, 0.01))", FloatDistribution(0.0003, 0.01, log=True)),
        ("model.dropout=interval(0, 1)", FloatDistribution(0.0, 1.0)),  # Hydra's intervals are float
        ("trainer.max_tokens=range(50, 200, 50)", IntDistribution(50, 150, step=50)),  # stop excluded, as in Hydra
        ("model.dropout=range(0.0, 0.5, 0.1)", FloatDistribution(0.0, 0.4, step=0.1)),
    ],
)
def test_sweep_overrides_map_to_optuna_distributions(override, expected):
    assert distribution(parse(override)) == expected


def test_a_shuffled_range_is_refused_in_one_line():
    with pytest.raises(SearchError, match=r"is not choice, range or interval"):
        distribution(parse("trainer.max_tokens=shuffle(range(1, 4))"))


def test_the_command_line_adds_to_and_overrides_the_configured_space():
    params = {"model.pooling": "choice(mean, max)", "model.dropout": "interval(0.0, 0.5)"}
    space, fixed = search_space(params, ["model.dropout=0.1", "optimizer.lr=interval(0.001, 0.01)", "trainer.epochs=2"])
    assert space == {
        "model.pooling": CategoricalDistribution(["mean", "max"]),
        "optimizer.lr": FloatDistribution(0.001, 0.01),
    }
    assert fixed == ["model.dropout=0.1", "trainer.epochs=2"]


@pytest.mark.parametrize(
    "tracking_uri, expected",
    [
        ("sqlite:////data/runs/mlflow.db?timeout=10", "sqlite:////data/runs/optuna.db"),
        ("sqlite:////data/runs/mlflow.db", "sqlite:////data/runs/optuna.db"),
        ("http://tracking:5000", "sqlite:////work/here/optuna.db"),
    ],
)
def test_the_study_is_stored_beside_a_sqlite_tracking_store_else_in_the_working_folder(tracking_uri, expected):
    assert default_storage(tracking_uri, "/work/here") == expected


def test_trials_a_killed_sweep_left_running_are_told_fail(tmp_path):
    stored = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db", direction="maximize")
    stored.tell(stored.ask({"x": FloatDistribution(0, 1)}), 0.5)
    stored.ask({"x": FloatDistribution(0, 1)})  # its sweep died before telling
    assert fail_stale_trials(stored) == 1
    assert [t.state for t in stored.trials] == [TrialState.COMPLETE, TrialState.FAIL]


def test_the_study_line_counts_its_trials_in_words():
    study = optuna.create_study(study_name="s", direction="maximize")
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5))
    assert summary(study, "mem").startswith("optuna: study 's' in mem: 1 trial (1 complete); best trial 0: 0.5000")
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, state=TrialState.PRUNED))
    assert summary(study, "mem").startswith("optuna: study 's' in mem: 2 trials (1 complete, 1 pruned)")


def test_optuna_is_4_or_later():
    assert int(optuna.__version__.split(".")[0]) >= 4


def test_the_plugin_is_a_light_module_of_the_hydra_plugins_namespace():
    assert not (PLUGIN.parent / "__init__.py").exists()  # a namespace package, shared with Hydra's other plugins
    code = "import sys, hydra_plugins.glove_exp_optuna_sweeper.optuna_sweeper; print(sorted(m for m in sys.modules if m.split('.')[0] in ('optuna', 'jax', 'mlflow', 'glove_exp')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@slow
def test_the_same_command_continues_the_study_up_to_n_trials(store, ag_dir, glove_file):
    first = search(store, ag_dir, glove_file, "hydra.sweeper.n_trials=2")
    assert first.returncode == 0, first.stderr
    assert "\x1b[" not in first.stdout + first.stderr  # no colour codes when not on a terminal
    assert "setup plugin" not in first.stdout + first.stderr  # no tracking-store migration chatter
    second = search(store, ag_dir, glove_file, "hydra.sweeper.n_trials=4")
    assert second.returncode == 0, second.stderr
    trials = study(store).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 4  # the resumed sampler draws new values
    assert all(list(t.intermediate_values) == [1, 2] for t in trials)  # val/accuracy per epoch
    finished = runs("FINISHED")
    assert len(finished) == 4 and len({r.data.tags["sweep_id"] for r in finished}) == 2
    for trial in trials:  # a trial's run is named after its pooling and trial number
        [run] = [r for r in finished if r.info.run_name == f"{trial.params['model.pooling']}-trial{trial.number}"]
        assert trial.value == pytest.approx(run.data.metrics["val/selected_accuracy"])
    assert "optuna: study 'glove-exp'" in second.stdout and "4 trials (4 complete)" in second.stdout


@slow
def test_pruned_trials_end_their_runs_killed_and_the_sweep_succeeds(store, ag_dir, glove_file):
    """Two trials of one batch that differ only in learning and dropout rates train as one vmapped
    program; each is pruned at its first epoch, and its run holds that epoch alone, as a run alone would."""
    always = "++hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:1.1}"  # prunes at epoch 1
    fixed = ["model.pooling=mean", "trainer.max_tokens=50", "model.hidden_sizes=[128]", "model.activation=none"]
    out = search(store, ag_dir, glove_file, "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", *fixed, always)
    assert out.returncode == 0, out.stderr
    trials = study(store).trials
    assert [(t.state, list(t.intermediate_values)) for t in trials] == [(TrialState.PRUNED, [1])] * 2
    killed = runs()
    assert {r.info.status for r in killed} == {"KILLED"} and {r.data.tags["glove_exp.pruned"] for r in killed} == {
        "true"
    }
    assert [r.data.tags["glove_exp.vmap_size"] for r in killed] == ["2", "2"]
    for run in killed:
        assert [m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "val/accuracy")] == [1]
    assert [job["status"] for job in jobs(store)] == ["PRUNED", "PRUNED"]
    assert "sweep: 0 of 2 jobs finished (2 pruned)" in out.stdout
    assert sorted(line for line in out.stdout.splitlines() if "pruned at" in line) == [
        "glove-exp: mean-trial0: trial pruned at epoch 1",
        "glove-exp: mean-trial1: trial pruned at epoch 1",
    ]


@slow
def test_seeds_average_each_trial_over_its_runs_with_the_joblib_launcher(store, ag_dir, glove_file):
    out = search(
        store, ag_dir, glove_file, "hydra.sweeper.n_trials=1", "hparams_search.seeds=2", "hydra/launcher=joblib"
    )
    assert out.returncode == 0, out.stderr
    [trial] = study(store).trials
    finished = sorted(runs("FINISHED"), key=lambda r: r.info.run_name)
    pooling = trial.params["model.pooling"]
    assert [r.info.run_name for r in finished] == [f"{pooling}-trial0-seed0", f"{pooling}-trial0-seed1"]
    assert [r.data.params["trainer.seed"] for r in finished] == ["0", "1"]
    assert not [key for r in finished for key in r.data.params if key.startswith("hparams_search")]
    accuracies = [r.data.metrics["val/selected_accuracy"] for r in finished]
    assert trial.value == pytest.approx(sum(accuracies) / 2)


@slow
def test_a_storage_that_cannot_be_opened_is_one_line(store, ag_dir, glove_file):
    out = search(store, ag_dir, glove_file, "hydra.sweeper.storage=sqlite:////nonexistent/dir/x.db")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "glove-exp: error: cannot open the Optuna storage sqlite:////nonexistent/dir/x.db: "
        "(sqlite3.OperationalError) unable to open database file"
    ]
    assert not (store / "multirun").exists()


@slow
def test_a_study_of_another_search_space_is_refused_in_one_line(store, ag_dir, glove_file):
    storage = f"sqlite:///{store}/optuna.db"
    other = optuna.create_study(study_name="glove-exp", storage=storage, direction="maximize")
    other.tell(other.ask({"model.dropout": FloatDistribution(0.0, 0.9)}), 0.5)
    out = search(store, ag_dir, glove_file)
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert line.startswith(f"glove-exp: error: study 'glove-exp' in {storage} has trials of another search space")
    assert len(study(store).trials) == 1 and not (store / "multirun").exists()


@slow
def test_submitit_local_launcher_runs_each_job(store, ag_dir, glove_file):
    out = glove_exp(store, ag_dir, glove_file, "hydra/launcher=submitit_local", "model.pooling=mean,max")
    assert out.returncode == 0, out.stderr
    assert sorted(r.data.tags["pooling"] for r in runs("FINISHED")) == ["max", "mean"]
    assert "sweep: 2 of 2 jobs finished" in out.stdout + out.stderr


@slow
def test_optuna_without_a_validation_split_is_refused_in_one_line(store, ag_dir, glove_file):
    out = search(store, ag_dir, glove_file, "dataset.val_fraction=0")
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "glove-exp: error: an Optuna search maximises validation accuracy: set dataset.val_fraction > 0"
    ]
    assert not list((store / "multirun").glob("*/*/0"))  # no job ran

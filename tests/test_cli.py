"""The ``glove-exp`` process: one-line user errors with exit 2, nothing heavy imported before a
config error, and Ctrl-C / SIGTERM ending the run KILLED with exit 128 + signal."""

from __future__ import annotations

import contextlib
import io
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from glove_exp.app import cli
from glove_exp.app.help import HelpRequest, config_groups, help_request
from glove_exp.app.interrupts import Interrupts
from glove_exp.app.store import Store
from tests.conftest import cli_command, cli_env, experiment_runs, metric_steps, run_cli

EPOCH_METRICS = ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "time/epoch_s")


@pytest.fixture(autouse=True)
def _store_tables_made(store_in_tmp_path):
    """Each test's ``tmp_path/mlflow.db`` starts with MLflow's tables already made."""


@pytest.fixture(autouse=True)
def restore_signal_handlers():
    """``cli.main`` installs its handlers in this process; pytest's own come back afterwards."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


@pytest.fixture
def run_main(monkeypatch, tmp_path):
    """``glove-exp <args>`` in this process (in ``tmp_path``): exit status and stderr lines."""
    for name in ("HYDRA_FULL_ERROR", "NO_COLOR", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_LOGGING_LEVEL"):
        monkeypatch.delenv(name, raising=False)  # main() sets them; restored after the test
    monkeypatch.chdir(tmp_path)

    def main(*args: str) -> tuple[int, list[str]]:
        # no logging set-up: its dictConfig closes handlers, and absl's closes the stream it was made with
        no_logging = ["hydra/job_logging=none", "hydra/hydra_logging=none"]
        monkeypatch.setattr(sys, "argv", ["glove-exp", *args, *no_logging])
        err, status = io.StringIO(), 0
        with contextlib.redirect_stderr(err):
            try:
                cli.main()
            except SystemExit as exit_info:
                status = exit_info.code
        return status, err.getvalue().strip().splitlines()

    return main


USER_ERRORS = {
    "pooling": (["model.pooling=avg"], r"model\.pooling=avg.*'avg'.*flatten, mean, sum, max, min, std, mean_max, hier"),
    "group_option": (
        ["embeddings=glove_7b"],
        r"Could not find 'embeddings/glove_7b'.*available options: .*glove_6b_50d.*local",
    ),
    "unknown_key": (["+model.foo=1"], r"unknown key model\.foo: glove-exp has no such setting"),
    "max_tokens": (["trainer.max_tokens=0"], r"trainer\.max_tokens must be >= 1, got 0$"),
    "batch_size": (["trainer.batch_size=-1"], r"trainer\.batch_size must be >= 1, got -1$"),
    "dropout": (["model.dropout=1.5"], r"model\.dropout must be in \[0, 1\), got 1\.5$"),
    "lr": (["optimizer.lr=-1"], r"optimizer\.lr must be > 0, got -1\.0$"),
    "val_fraction": (["dataset.val_fraction=1"], r"dataset\.val_fraction must be in \[0, 1\), got 1\.0$"),
    "data_dir": (["dataset.data_dir={missing}"], r"dataset\.data_dir {missing} does not exist"),
    "vector_file": (["embeddings.path={missing}.txt"], r"embeddings\.path: {missing}\.txt does not exist"),
    "tracking_scheme": (["tracking.uri=foo://bar"], r"tracking\.uri=foo://bar: unsupported scheme 'foo'"),
    "experiment": (["tracking.experiment= "], r"tracking\.experiment must not be empty"),
    "class_names": (
        ["dataset.class_names=[World,Sports,Business,accuracy]"],
        r"dataset\.class_names has \['accuracy'\], a row of the classification report",
    ),
}


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_user_error_prints_one_line_and_exits_2(case, run_main, tmp_path, tiny_overrides):
    import re

    overrides, pattern = USER_ERRORS[case]
    missing = tmp_path / "missing"
    status, lines = run_main(*tiny_overrides, "embeddings.dim=8", *(o.format(missing=missing) for o in overrides))
    assert status == 2, lines
    [line] = lines
    assert line.startswith("glove-exp: error: ")
    assert re.search(pattern.format(missing=re.escape(str(missing))), line), line


def run_python(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -c script`` in ``cwd`` with the environment of a ``glove-exp`` process."""
    return subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=cli_env(cwd), capture_output=True, text=True, timeout=120
    )


CONFIG_ERROR_SCRIPT = """
import sys
from glove_exp.app import cli
from glove_exp.app.help import HelpRequest, config_groups, help_request
sys.argv = ["glove-exp", "trainer.max_tokens=0"]
try:
    cli.main()
except SystemExit as exit:
    heavy = sorted(m for m in ("mlflow", "datasets", "sklearn", "lime", "matplotlib", "pandas") if m in sys.modules)
    print(f"exit {exit.code} heavy {heavy}")
"""


@pytest.mark.slow
def test_a_config_error_comes_before_the_heavy_imports(tmp_path):
    proc = run_python(CONFIG_ERROR_SCRIPT, tmp_path)
    assert proc.stdout.strip() == "exit 2 heavy []", proc.stdout + proc.stderr
    assert proc.stderr.strip() == "glove-exp: error: trainer.max_tokens must be >= 1, got 0"


RUN_SCRIPT = """
import sys
from glove_exp.app import cli
sys.argv = ["glove-exp", *{overrides!r}]
try:
    cli.main()
finally:
    print("unneeded", sorted(m for m in ("sklearn", "scipy.stats", "lime") if m in sys.modules), file=sys.stderr)
"""


@pytest.mark.slow
def test_a_run_imports_neither_scikit_learn_nor_scipy_stats(tmp_path, tiny_overrides):
    """Their imports took 0.9 s of each run: evaluating, splitting and drawing need neither."""
    proc = run_python(RUN_SCRIPT.format(overrides=[*tiny_overrides, "embeddings.dim=8"]), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == "unneeded []", proc.stderr[-3000:]
    [run] = experiment_runs(tmp_path)
    assert run.info.status == "FINISHED" and run.data.metrics["test/accuracy"] > 0


# --- --help ----------------------------------------------------------------------------------------

CONF = Path(cli.CONFIG_PATH)
NO_LOGGING = ["hydra/job_logging=none", "hydra/hydra_logging=none"]  # Hydra's help would set logging up
HYDRA_APP = cli._hydra_app


@pytest.mark.slow
def test_help_lists_every_group_and_its_options_and_exits_0(tmp_path):
    proc = run_cli(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("glove-exp: text classification") and lines[1].startswith("Usage: glove-exp")
    assert "optimizer: adagrad, adam, adamw, rmsprop, sgd" in lines
    assert "experiment: seed_tutorial, swem, token_swem" in lines and "hparams_search: optuna" in lines
    groups = {line.split(":")[0] for line in lines if ": " in line and not line.startswith(" ")}
    assert {p.name for p in CONF.iterdir() if p.is_dir()} - {"hydra"} <= groups
    assert "embeddings:" in lines and "  dim: 50" in lines  # the composed config
    for pointer in ("--cfg job", "--hydra-help", "-m key=a,b", "group=option", "key=value"):
        assert pointer in proc.stdout, pointer


HELP_IMPORTS_SCRIPT = """
import runpy, sys
sys.argv = ["glove-exp", *sys.argv[1:]]
try:
    runpy.run_module("glove_exp.app.cli", run_name="__main__")
    code = 0
except SystemExit as exit:
    code = exit.code
heavy = ("jax", "mlflow", "datasets", "lime", "haiku", "optax", "matplotlib", "pandas", "sklearn")
print(f"exit {code} heavy {sorted(m for m in heavy if m in sys.modules)}", file=sys.stderr)
"""


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_imports_neither_jax_nor_mlflow(flag, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", HELP_IMPORTS_SCRIPT, flag], cwd=tmp_path, env=cli_env(tmp_path), capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert proc.stderr.strip() == "exit 0 heavy []", proc.stderr
    assert "== Configuration groups ==" in proc.stdout


def hydras_help(monkeypatch, capsys, *args: str) -> str:
    """What Hydra's own ``--help`` prints for ``args``."""
    monkeypatch.setattr(sys, "argv", ["glove-exp", *args])
    with pytest.raises(SystemExit) as exit_info:
        HYDRA_APP(Interrupts(cli.PROG))()
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [["--help"], ["-h", "optimizer=sgd", "model.hidden_sizes=[64,64]"], ["--help", "--resolve", "experiment=swem"]],
)
def test_help_is_the_text_hydra_prints(args, monkeypatch, capsys, tmp_path):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.chdir(tmp_path)  # --resolve: the tracking store's path is the working folder's
    monkeypatch.setattr(sys, "argv", ["glove-exp", *args, *NO_LOGGING])
    monkeypatch.setattr(cli, "_hydra_app", None)  # main() answers without Hydra's app
    cli.main()
    ours = capsys.readouterr().out
    assert ours == hydras_help(monkeypatch, capsys, *args, *NO_LOGGING)
    assert "== Config ==" in ours and "\nhydra:" not in ours  # the job's config only


def test_help_with_an_unknown_option_is_one_line_and_exit_2(run_main):
    status, lines = run_main("--help", "optimizer=adamx")
    assert status == 2
    assert lines == [
        "glove-exp: error: In 'config': Could not find 'optimizer/adamx'; available options: adagrad, adam, adamw, rmsprop, sgd"
    ]


@pytest.mark.parametrize(
    "argv, request_",
    [
        (["--help"], HelpRequest([], False)),
        (["a=1", "-h", "--resolve"], HelpRequest(["a=1"], True)),
        (["--help", "-m", "a=1,2"], None),  # Hydra answers: it refuses the sweep in one line
        (["--help", "--cfg", "job"], None),
        (["--help", "--config-dir", "x"], None),
        (["--hydra-help"], None),
        (["a=1"], None),
    ],
)
def test_only_help_with_overrides_is_answered_without_hydra(argv, request_):
    assert help_request(argv) == request_


def test_config_groups_are_folders_with_yaml_files_nested_too_without_hydras(tmp_path):
    for path in ("a/x.yaml", "a/w.yaml", "a/b/y.yaml", "c/notes.md", "hydra/launcher/z.yaml", "config.yaml"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("{}\n")
    assert config_groups(tmp_path) == {"a": ["w", "x"], "a/b": ["y"]}


# --- Ctrl-C and SIGTERM -------------------------------------------------------------------------


def interrupt_training(cwd: Path, overrides: list[str], signum: int) -> subprocess.CompletedProcess:
    """Start a long run and send ``signum`` once it reports its third epoch on stderr (Hydra's
    ``hydra.verbose`` shows the trainer's per-epoch debug lines)."""
    command = cli_command(
        *overrides,
        "embeddings.dim=8",
        "trainer.epochs=100000",
        "explain.num_examples=0",
        "hydra.verbose=glove_exp.core.fit",
    )
    proc = subprocess.Popen(
        command, cwd=cwd, env=cli_env(cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen = []
    try:
        for line in proc.stderr:  # blocks until the next line; ends if the process dies
            seen.append(line)
            if "epoch 3:" in line:
                proc.send_signal(signum)
                break
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(command, proc.returncode, stdout, "".join(seen) + stderr)


def assert_killed_with_epochs_intact(cwd: Path, run) -> None:
    assert run.info.status == "KILLED"
    assert run.info.end_time is not None
    steps = {key: [step for step, _ in metric_steps(cwd, run.info.run_id, key)] for key in EPOCH_METRICS}
    epochs = len(steps["val/loss"])
    assert epochs >= 3
    for key in EPOCH_METRICS:  # every epoch that started logging finished logging, in order
        assert steps[key] == list(range(1, epochs + 1)), key
    assert "test/accuracy" not in run.data.metrics


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_run_killed_with_one_line(signum, tmp_path, tiny_overrides):
    proc = interrupt_training(tmp_path, tiny_overrides, signum)
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"glove-exp: interrupted ({signal.Signals(signum).name})"
    [run] = experiment_runs(tmp_path)
    assert_killed_with_epochs_intact(tmp_path, run)


def test_an_interrupt_during_a_tracking_call_waits_for_it(tmp_path):
    """In process and deterministic: a signal that lands inside a store write is raised once the
    write returns (a write cut short would keep SQLite locked, and the run could not end KILLED)."""
    import os

    from glove_exp.app import tracking

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    steps = []

    def write(run_id: str) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # delivered at the next bytecode, inside this call
        steps.append("write finished")

    store = Store.open(uri, "glove-exp")
    with pytest.raises(KeyboardInterrupt, match="signal 2"):
        with tracking.tracked_run(store, "interrupted", {}, Interrupts()) as run:
            run.call(write)
            steps.append("after the write")
    assert steps == ["write finished"]
    [run] = experiment_runs(tmp_path)
    assert run.info.status == "KILLED"


@pytest.mark.parametrize("spelling", ["experiment=seed_tutorial", "+experiment=seed_tutorial"])
def test_experiment_presets_compose_with_or_without_plus(spelling, monkeypatch, capsys):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["glove-exp", spelling, "--cfg", "job"])
    cli.main()
    job = capsys.readouterr().out
    assert "val_fraction: 0" in job and "shuffle: false" in job


def test_a_tracked_run_gives_back_the_signal_handlers_it_found(tmp_path):
    from glove_exp.app import tracking

    before = signal.getsignal(signal.SIGINT)
    store = Store.open(f"sqlite:///{tmp_path}/mlflow.db", "glove-exp")
    with tracking.tracked_run(store, "run", {}, Interrupts()):
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before


STARTUP_INTERRUPT_SCRIPT = """
import os, signal
from glove_exp.app.interrupts import Interrupts
Interrupts().install()                  # what main() does first
os.kill(os.getpid(), signal.SIGINT)     # Ctrl-C while the heavy imports run
import jax, mlflow                      # never reached
print("not interrupted")
"""


@pytest.mark.slow
def test_ctrl_c_before_a_run_exists_exits_130_with_one_line(tmp_path):
    proc = run_python(STARTUP_INTERRUPT_SCRIPT, tmp_path)
    assert proc.returncode == 130
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["glove-exp: interrupted (SIGINT)"]


def test_an_interrupted_store_creation_leaves_no_store_and_the_next_one_works(tmp_path, monkeypatch):
    import mlflow

    from glove_exp.app import store

    path = tmp_path / "new" / "mlflow.db"
    real_client = mlflow.MlflowClient

    def interrupted(uri):  # Ctrl-C while MLflow creates its tables in the temporary file
        real_client(uri).search_experiments(max_results=1)
        raise KeyboardInterrupt("signal 2")

    monkeypatch.setattr(mlflow, "MlflowClient", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.create_sqlite_store(path)
    assert not path.exists() and not list(path.parent.glob("*.tmp"))  # nothing half-made left behind
    monkeypatch.setattr(mlflow, "MlflowClient", real_client)
    assert store.Store.open(f"sqlite:///{path}", "glove-exp")


@pytest.mark.parametrize("case", ["under_a_file", "not_a_database", "deleted_experiment"])
def test_an_unusable_store_or_experiment_is_one_line_naming_it(case, run_main, tmp_path, tiny_overrides):
    import mlflow

    if case == "under_a_file":
        (tmp_path / "plain").write_text("x")
        uri = f"sqlite:///{tmp_path}/plain/mlflow.db"
    elif case == "not_a_database":
        (tmp_path / "junk.db").write_bytes(b"this is not sqlite" * 100)
        uri = f"sqlite:///{tmp_path}/junk.db"
    else:
        uri = f"sqlite:///{tmp_path}/mlflow.db"
        client = mlflow.MlflowClient(uri)
        client.delete_experiment(client.create_experiment("gone"))
    extra = ["tracking.experiment=gone"] if case == "deleted_experiment" else []
    status, lines = run_main(*tiny_overrides, "embeddings.dim=8", f"tracking.uri={uri}", *extra)
    assert status == 2, lines
    [line] = lines
    key = "tracking.experiment='gone' is deleted" if case == "deleted_experiment" else f"tracking.uri={uri}: "
    assert line.startswith(f"glove-exp: error: {key}"), line


def test_offline_without_a_data_dir_is_one_line_naming_the_fixes(run_main, tiny_overrides, unreachable_hub):
    status, lines = run_main(*tiny_overrides, "embeddings.dim=8", "dataset.data_dir=null")
    assert status == 2
    assert lines == [
        f"glove-exp: error: cannot reach the Hugging Face hub at {unreachable_hub} to load fancyzhx/ag_news "
        "(Connection refused); set dataset.data_dir (or GLOVE_EXP_DATA_DIR) to local train/test files, "
        "or HF_HUB_OFFLINE=1 to use the datasets cache"
    ]


@pytest.mark.slow
def test_hub_offline_without_the_dataset_cached_says_so(tmp_path, tiny_overrides):
    """``HF_HUB_OFFLINE=1`` set, the hub is not the problem: the datasets cache lacks the dataset."""
    env = cli_env(tmp_path) | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    command = cli_command(*tiny_overrides, "embeddings.dim=8", "dataset.data_dir=null")
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert (proc.returncode, proc.stderr.splitlines()) == (
        2,
        [
            "glove-exp: error: fancyzhx/ag_news is not in the datasets cache, and HF_HUB_OFFLINE=1 keeps the hub "
            "out: run once without HF_HUB_OFFLINE, or point dataset.data_dir (or GLOVE_EXP_DATA_DIR) at train/test "
            "files"
        ],
    )


def test_a_missing_ray_launcher_says_which_extra_installs_it():
    from hydra.errors import ConfigCompositionException

    err = ConfigCompositionException("In 'hydra/launcher/ray_cluster': Could not load 'hydra/launcher/ray'.")
    line = cli.one_line(err)
    assert "\n" not in line and "Could not load 'hydra/launcher/ray'" in line and 'glove-exp[ray]"' in line
    assert "glove-exp[ray]" not in cli.one_line(ConfigCompositionException("Could not load 'model/foo'."))


# --- --cfg/--info with -m, a closed stdout, overrides that do not parse -------------------------


def test_cfg_job_with_multirun_prints_each_jobs_config_headed_by_its_overrides(monkeypatch, capsys, tmp_path):
    import yaml

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["glove-exp", "--cfg", "job", "-m", "model.pooling=mean,sum", "trainer.seed=0,1"])
    cli.main()
    out = capsys.readouterr().out
    headers = [line for line in out.splitlines() if line.startswith("# job")]
    assert headers == [
        f"# job {num}: model.pooling={pooling} trainer.seed={seed}"
        for num, (pooling, seed) in enumerate([("mean", 0), ("mean", 1), ("sum", 0), ("sum", 1)])
    ]
    jobs = list(yaml.safe_load_all(out))
    assert [(job["model"]["pooling"], job["trainer"]["seed"]) for job in jobs] == [
        ("mean", 0), ("mean", 1), ("sum", 0), ("sum", 1)
    ]  # fmt: skip
    assert all("hydra" not in job for job in jobs)


def test_cfg_job_with_multirun_honours_resolve_and_package(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["glove-exp", "--cfg", "job", "-m", "--resolve", "-p", "tracking", "model.pooling=mean,sum"])  # fmt: skip
    cli.main()
    out = capsys.readouterr().out
    assert out.count("# @package tracking") == 2
    assert out.count(f"uri: sqlite:///{tmp_path}/mlflow.db") == 2 and "${" not in out


@pytest.mark.parametrize(
    "args, says",
    [
        (["--cfg", "hydra", "-m"], "--cfg hydra with -m: the Hydra config is one run's, not a sweep's; drop -m"),
        (["--info", "-m"], "--info describes one config, not a sweep: drop -m"),
        (["-m", "hparams_search=optuna", "--cfg", "job"], "cannot list the jobs of an Optuna search"),
    ],
)
def test_what_cfg_with_multirun_cannot_expand_says_what_to_run_instead(args, says, run_main):
    status, lines = run_main(*args)
    assert status == 2
    [line] = lines
    assert line.startswith(f"glove-exp: error: {says}") or says in line, line


@pytest.mark.parametrize(
    "args, says",
    [
        (["--resolve"], "--resolve goes with --cfg or --help"),
        (["--run", "-m"], "one of --run, --multirun, --cfg, --info and --shell-completion at a time"),
        (["--cfg", "job", "--info"], "one of --run, --multirun"),
    ],
)
def test_flags_hydra_refuses_together_are_one_line(args, says, run_main):
    status, lines = run_main(*args)
    assert status == 2 and len(lines) == 1 and lines[0].startswith(f"glove-exp: error: {says}"), lines


@pytest.mark.parametrize(
    "override, says",
    [
        ("trainer.seed=ü", "cannot parse override 'trainer.seed=ü' at character 14 ('ü'): "),
        ("dataset.data_dir=/data/ag[1]", "at character 26 ('['): mismatched input '['"),
        ("tracking.run_name=a\nb", "at character 20 ('\\n'): a line break or control character"),
        ("model.pooling=mean,", "at its end: it stops short; drop the last comma (model.pooling=mean), add the"),
    ],
)
def test_an_override_that_does_not_parse_names_it_and_where(override, says, run_main):
    status, lines = run_main(override)
    assert status == 2
    [line] = lines
    assert line.startswith("glove-exp: error: cannot parse override ") and says in line, line
    assert "Exception" not in line


@pytest.mark.slow
def test_a_sweep_whose_stdout_is_closed_finishes_its_jobs(tmp_path, tiny_overrides):
    """``glove-exp -m ... | head -c 1``: the reader goes after the first byte; jobs, runs and exit status agree."""
    import json

    command = cli_command("-m", "model.pooling=mean,sum", *tiny_overrides, "embeddings.dim=8", "explain.num_examples=0")
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    first = proc.stdout.read(1)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=180) == 0, stderr[-3000:]
    assert first == b"g" and "Traceback" not in stderr and "Logging error" not in stderr
    [jobs] = list(tmp_path.glob("multirun/*/*/jobs.jsonl"))
    assert [json.loads(line)["status"] for line in jobs.read_text().splitlines()] == ["FINISHED", "FINISHED"]
    assert [run.info.status for run in experiment_runs(tmp_path)] == ["FINISHED", "FINISHED"]
    [parent] = experiment_runs(tmp_path, parents=True)
    assert parent.info.status == "FINISHED"


@pytest.mark.slow
def test_a_run_whose_stdout_is_closed_before_its_summary_exits_0(tmp_path, tiny_overrides):
    command = cli_command(*tiny_overrides, "embeddings.dim=8", "explain.num_examples=0")
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # before the run prints its line
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=180) == 0, stderr[-3000:]
    assert stderr == ""
    [run] = experiment_runs(tmp_path)
    assert run.info.status == "FINISHED"


@pytest.mark.slow
def test_compiled_programs_are_cached_for_the_next_process(tmp_path, tiny_overrides):
    proc = run_cli(tmp_path, *tiny_overrides, "embeddings.dim=8", "explain.num_examples=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((tmp_path / "glove-cache" / "jax").iterdir())  # JAX's persistent cache, under the cache dir


COMPILATION_CACHE_SCRIPT = """
import jax
from glove_exp.app.stages import compilation_cache
compilation_cache({folder!r})
print(jax.config.jax_compilation_cache_dir)
"""


@pytest.mark.parametrize("usable", [True, False])
def test_the_compilation_cache_is_on_unless_its_folder_cannot_be_made(tmp_path, usable):
    folder = tmp_path / "cache"
    if not usable:
        folder.write_text("a file where the folder should be", encoding="utf-8")
    proc = run_python(COMPILATION_CACHE_SCRIPT.format(folder=str(folder)), tmp_path)
    assert proc.stdout.strip() == (str(folder / "jax") if usable else "None"), proc.stderr


@pytest.fixture
def collector():
    """The collector as pytest had it, whatever ``cli.main`` did to it."""
    import gc

    yield gc
    gc.enable()
    gc.unfreeze()


@pytest.mark.parametrize("sweep", [False, True])
def test_the_collector_waits_for_the_first_job_then_collects_what_jobs_make(
    collector, sweep, run_main, tiny_overrides, tmp_path, store_in_tmp_path, monkeypatch
):
    """Start-up's long-lived objects are frozen out of the collector's passes once the first job of the
    process has run (in a sweep, the later jobs' garbage is collected as usual)."""
    seen = []
    run_job = cli.run_job

    def recording_run_job(cfg, session):
        seen.append(collector.isenabled())
        return run_job(cfg, session)

    monkeypatch.setattr(cli, "run_job", recording_run_job)
    jobs = ["-m", "trainer.seed=0,1,2", "hydra/launcher=basic"] if sweep else []
    settings = ["embeddings.dim=8", "trainer.epochs=1", "explain.num_examples=0", "tracking.log_model=never"]
    collector.unfreeze()
    status, lines = run_main(*jobs, *tiny_overrides, *settings)
    assert status == 0, lines
    assert seen == ([False, True, True] if sweep else [False])
    assert collector.isenabled() and collector.get_freeze_count() > 0
    assert len(experiment_runs(tmp_path)) == (3 if sweep else 1)


@pytest.mark.parametrize(
    ("launcher", "here"),
    [
        ("hydra_plugins.glove_exp_launcher.launcher.GloveExpLauncher", True),
        ("hydra._internal.core_plugins.basic_launcher.BasicLauncher", True),
        ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", False),
        ("hydra_plugins.hydra_ray_launcher.ray_local_launcher.RayLocalLauncher", False),
    ],
)
def test_a_sweep_whose_jobs_run_elsewhere_ends_start_up_when_it_starts(launcher, here):
    from glove_exp.app.session import runs_jobs_here

    assert runs_jobs_here(launcher) is here

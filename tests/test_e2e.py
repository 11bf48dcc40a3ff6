"""End to end: ``python -m glove_exp.cli`` in a subprocess on the tiny synthetic corpus, checked
through the MLflow store it writes (``<cwd>/mlflow.db``). Runs are shared between tests through
module-scoped fixtures: each costs several seconds, mostly imports."""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from tests.conftest import (
    CLASSES,
    cli_command,
    cli_env,
    experiment_runs,
    metric_steps,
    run_cli,
    store_uri,
)

pytestmark = pytest.mark.slow

EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_time_s")
NUM_TEST = 120
NUM_TRAIN = 360  # 400 rows less the 10% validation split


def artifact_dir(run) -> Path:
    """The run's artifact folder (a local ``file://`` URI beside the SQLite store)."""
    uri = urlparse(run.info.artifact_uri)
    assert uri.scheme == "file", run.info.artifact_uri
    return Path(unquote(uri.path))


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """The single stderr line of a failed command (and no traceback anywhere)."""
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def read_test_csv(tiny_data) -> list[tuple[str, int]]:
    with (tiny_data["ag_dir"] / "test.csv").open(encoding="utf-8", newline="") as handle:
        return [(row["text"], int(row["label"])) for row in csv.DictReader(handle)]




# --- one run ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_overrides):
    """One tiny run, and its MLflow run."""
    cwd = tmp_path_factory.mktemp("single")
    proc = run_cli(cwd, *tiny_overrides, "embeddings.dim=8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = experiment_runs(cwd)
    assert len(runs) == 1
    return cwd, proc, runs[0]


def test_single_run_exits_0_with_a_summary_line(single):
    _, proc, _ = single
    assert "Traceback" not in proc.stderr
    summary = [line for line in proc.stdout.splitlines() if line.startswith("glove-exp:")]
    assert len(summary) == 1, proc.stdout
    assert re.match(r"glove-exp: ag_news-local-mean: val \d+\.\d\d% test \d+\.\d\d% \| .*total \d+\.\ds$", summary[0])


def test_single_run_is_finished_in_experiment_glove_exp(single):
    cwd, _, run = single
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "ag_news-local-mean"
    assert run.info.end_time is not None
    assert artifact_dir(run).is_relative_to(cwd / "mlartifacts")


def test_single_run_params(single, tiny_data):
    _, _, run = single
    params = run.data.params
    assert params["model.pooling"] == "mean"
    assert params["optimizer.lr"] == "0.001"
    assert params["trainer.max_tokens"] == "50"
    assert params["trainer.epochs"] == "3"
    assert params["dataset.name"] == "ag_news"
    assert params["dataset.data_dir"] == str(tiny_data["ag_dir"])
    assert params["embeddings.dim"] == "8"
    assert params["explain.num_samples"] == "50"


def test_single_run_tags(single, tiny_data):
    _, _, run = single
    tags = run.data.tags
    assert tags["dataset"] == "ag_news"
    assert tags["embeddings"] == "local"
    assert tags["pooling"] == "mean"
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", tags["git_commit"])
    assert tags["glove_source"] == str(tiny_data["glove_file"])
    assert tags["version.jax"] == importlib.metadata.version("jax")
    train_csv = tiny_data["ag_dir"] / "train.csv"
    assert tags["data_sha256.train"] == hashlib.sha256(train_csv.read_bytes()).hexdigest()
    assert tags["data_file.train"] == str(train_csv)
    assert "sweep_id" not in tags and "hydra_job_num" not in tags


def test_single_run_epoch_metrics(single):
    cwd, _, run = single
    for key in EPOCH_METRICS:
        assert [step for step, _ in metric_steps(cwd, run.info.run_id, key)] == [1, 2, 3], key
    val_accuracy = [value for _, value in metric_steps(cwd, run.info.run_id, "val_accuracy")]
    metrics = run.data.metrics
    assert metrics["best_val_accuracy"] == max(val_accuracy)
    assert metrics["best_epoch"] == 1 + val_accuracy.index(max(val_accuracy))
    assert metrics["epochs_run"] == 3


def test_single_run_final_metrics(single):
    _, _, run = single
    metrics = run.data.metrics
    assert 0.25 < metrics["test_accuracy"] <= 1.0
    # metric_name keeps letters, digits and _ - . /: "Sci/Tech" stays as it is
    per_class = [metrics[f"test_f1_{name}"] for name in CLASSES]
    assert {k for k in metrics if k.startswith("test_f1_")} == {f"test_f1_{name}" for name in CLASSES}
    assert metrics["test_macro_f1"] == pytest.approx(sum(per_class) / len(per_class), abs=1e-12)
    assert 1 <= metrics["best_epoch"] <= 3
    assert metrics["num_train"] == NUM_TRAIN
    assert metrics["num_test"] == NUM_TEST
    assert metrics["vocab_size"] > 0
    assert 0.0 <= metrics["oov_rate"] < 1.0
    assert metrics["train_time_s"] > 0
    assert 0 < metrics["prep_time_s"] < metrics["total_time_s"]


def test_single_run_artifacts(single):
    _, _, run = single
    folder = artifact_dir(run)
    assert sorted(p.name for p in folder.iterdir()) == [
        "classification_report.json",
        "classification_report.txt",
        "config.yaml",
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "lime",
    ]
    from omegaconf import OmegaConf

    config = OmegaConf.load(folder / "config.yaml")
    assert config.model.pooling == "mean" and config.trainer.epochs == 3 and config.embeddings.dim == 8
    assert (folder / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((folder / "classification_report.json").read_text(encoding="utf-8"))
    assert report["accuracy"] == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-12)
    assert all(name in (folder / "classification_report.txt").read_text(encoding="utf-8") for name in CLASSES)


def read_confusion(path: Path) -> list[list[int]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][1:] == CLASSES and [row[0] for row in rows[1:]] == CLASSES
    return [[int(count) for count in row[1:]] for row in rows[1:]]


def test_single_run_confusion_matrix_counts_the_test_split(single):
    _, _, run = single
    counts = read_confusion(artifact_dir(run) / "confusion_matrix.csv")
    assert sum(map(sum, counts)) == NUM_TEST
    assert sum(counts[i][i] for i in range(len(CLASSES))) / NUM_TEST == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-12)
    assert [sum(row) for row in counts] == [NUM_TEST // len(CLASSES)] * len(CLASSES)  # balanced test split


def lime_pages(run) -> dict[int, str]:
    pages = sorted((artifact_dir(run) / "lime").iterdir())
    return {int(re.fullmatch(r"example_(\d+)\.html", p.name)[1]): p.read_text(encoding="utf-8") for p in pages}


def test_single_run_lime_pages_name_true_and_predicted_class(single, tiny_data):
    _, _, run = single
    pages = lime_pages(run)
    assert len(pages) == 3
    rows = read_test_csv(tiny_data)
    for index, page in pages.items():
        text, label = rows[index]
        assert f"True class: <b>{CLASSES[label]}</b>" in page
        assert re.search(r"Predicted class: <b>(World|Sports|Business|Sci/Tech)</b>", page)
        assert f'<blockquote style="white-space: pre-wrap">{text}</blockquote>' in page
        assert any(f'"{word}"' in page for word in re.findall(r"[a-z]+", text.lower()))  # an explained word


# --- the logged model in a fresh process --------------------------------------------------------

PREDICT_SCRIPT = """
import json, sys
import mlflow, pandas as pd
uri, run_id, test_csv = sys.argv[1:]
mlflow.set_tracking_uri(uri)
model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
texts = pd.read_csv(test_csv)["text"]
listed = mlflow.artifacts.list_artifacts(f"runs:/{run_id}/model")
out = {"run_id": model.metadata.run_id, "files": sorted(a.path.rsplit("/", 1)[-1] for a in listed)}
for kind, data in (("frame", pd.DataFrame({"text": texts})), ("series", texts), ("list", texts.tolist())):
    frame = model.predict(data)
    out[kind] = {"type": type(frame).__name__, "columns": [str(c) for c in frame.columns],
                 "argmax": frame.to_numpy().argmax(axis=1).tolist(), "row_sums": frame.sum(axis=1).tolist()}
print("RESULT " + json.dumps(out))
"""


@pytest.fixture(scope="module")
def fresh_predictions(single, tiny_data) -> dict:
    cwd, _, run = single
    proc = subprocess.run(
        [sys.executable, "-c", PREDICT_SCRIPT, store_uri(cwd), run.info.run_id, str(tiny_data["ag_dir"] / "test.csv")],
        cwd=cwd, env=cli_env(cwd), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    [line] = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


def test_model_reloads_in_a_fresh_process_for_frame_series_and_list(single, fresh_predictions):
    assert fresh_predictions["run_id"] == single[2].info.run_id
    assert "MLmodel" in fresh_predictions["files"]
    for kind in ("frame", "series", "list"):
        result = fresh_predictions[kind]
        assert result["type"] == "DataFrame"
        assert result["columns"] == CLASSES
        assert len(result["argmax"]) == NUM_TEST
        assert result["row_sums"] == pytest.approx([1.0] * NUM_TEST, abs=1e-5)
    assert fresh_predictions["series"]["argmax"] == fresh_predictions["frame"]["argmax"]
    assert fresh_predictions["list"]["argmax"] == fresh_predictions["frame"]["argmax"]


def test_reloaded_model_predicts_what_the_run_evaluated(single, fresh_predictions, tiny_data):
    """Same model, same data: the fresh process reproduces the logged confusion matrix exactly."""
    _, _, run = single
    labels = [label for _, label in read_test_csv(tiny_data)]
    predicted = fresh_predictions["frame"]["argmax"]
    counts = [[0] * len(CLASSES) for _ in CLASSES]
    for label, guess in zip(labels, predicted):
        counts[label][guess] += 1
    assert counts == read_confusion(artifact_dir(run) / "confusion_matrix.csv")
    correct = sum(label == guess for label, guess in zip(labels, predicted))
    assert correct / NUM_TEST == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-12)
    for index, page in lime_pages(run).items():  # and the LIME pages' predicted classes
        assert f"Predicted class: <b>{CLASSES[predicted[index]]}</b>" in page


# --- user errors --------------------------------------------------------------------------------

USER_ERRORS = {
    "pooling": (["model.pooling=avg"], r"model\.pooling=avg.*'avg'.*flatten, mean, sum, max, min, std, mean_max, hier"),
    "group_option": (["embeddings=glove_7b"], r"Could not find 'embeddings/glove_7b'.*available options in 'embeddings': .*glove_6b_50d.*local"),
    "max_tokens": (["trainer.max_tokens=0"], r"trainer\.max_tokens must be >= 1, got 0$"),
    "batch_size": (["trainer.batch_size=-1"], r"trainer\.batch_size must be >= 1, got -1$"),
    "dropout": (["model.dropout=1.5"], r"model\.dropout must be in \[0, 1\), got 1\.5$"),
    "lr": (["optimizer.lr=-1"], r"optimizer\.lr must be > 0, got -1\.0$"),
    "val_fraction": (["dataset.val_fraction=1"], r"dataset\.val_fraction must be in \(0, 1\), got 1\.0$"),
    "data_dir": (["dataset.data_dir={missing}"], r"dataset\.data_dir {missing} does not exist"),
    "vector_file": (["embeddings.path={missing}.txt"], r"embeddings\.path: {missing}\.txt does not exist"),
}


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_user_error_prints_one_line_and_exits_2_fast(case, tmp_path, tiny_overrides):
    overrides, pattern = USER_ERRORS[case]
    missing = tmp_path / "missing"
    overrides = [o.format(missing=missing) for o in overrides]
    tic = time.perf_counter()
    proc = run_cli(tmp_path, *tiny_overrides, "embeddings.dim=8", *overrides, timeout=60)
    seconds = time.perf_counter() - tic
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc)
    assert line.startswith("glove-exp: error: ")
    assert re.search(pattern.format(missing=re.escape(str(missing))), line), line
    assert seconds < 5, f"{case} took {seconds:.1f}s: it must fail before the heavy imports"
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow run for a config mistake


# --- divergence ---------------------------------------------------------------------------------


def test_diverging_run_exits_2_naming_the_epoch_and_ends_failed(tmp_path, tiny_overrides):
    proc = run_cli(tmp_path, *tiny_overrides, "embeddings.dim=8", "optimizer.lr=1e30")
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc)
    match = re.fullmatch(r"glove-exp: error: training diverged: train loss is nan in epoch (\d+); lower optimizer\.lr .*", line)
    assert match, line
    epoch = int(match[1])
    [run] = experiment_runs(tmp_path)
    assert run.info.status == "FAILED"
    assert run.info.end_time is not None
    # the epochs before the diverging one were logged, and nothing after
    assert [step for step, _ in metric_steps(tmp_path, run.info.run_id, "train_loss")] == list(range(1, epoch))
    assert "test_accuracy" not in run.data.metrics


# --- Ctrl-C and SIGTERM -------------------------------------------------------------------------


def running_epochs(db: Path) -> int:
    """Epochs a RUNNING run has logged so far (0 while there is none), read-only, without MLflow."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            row = con.execute(
                "SELECT COUNT(*) FROM metrics m JOIN runs r ON m.run_uuid = r.run_uuid "
                "WHERE r.status = 'RUNNING' AND m.key = 'val_loss'"
            ).fetchone()
        return int(row[0])
    except sqlite3.Error:  # tables not created yet, or busy
        return 0


def interrupt_training(cwd: Path, overrides: list[str], signum: int) -> tuple[subprocess.CompletedProcess, float]:
    """Start a long run, send ``signum`` once it has logged 3 epochs; the result and seconds to exit."""
    cwd.mkdir(parents=True, exist_ok=True)
    command = cli_command(*overrides, "embeddings.dim=8", "trainer.epochs=100000", "trainer.early_stopping_patience=null")
    proc = subprocess.Popen(command, cwd=cwd, env=cli_env(cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while running_epochs(cwd / "mlflow.db") < 3:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "training did not start within 90 s"
            time.sleep(0.2)
        proc.send_signal(signum)
        tic = time.monotonic()
        stdout, stderr = proc.communicate(timeout=30)
        seconds = time.monotonic() - tic
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr), seconds


def assert_killed_with_epochs_intact(cwd: Path, run) -> None:
    assert run.info.status == "KILLED"
    assert run.info.end_time is not None
    steps = {key: [step for step, _ in metric_steps(cwd, run.info.run_id, key)] for key in EPOCH_METRICS}
    epochs = len(steps["val_loss"])
    assert epochs >= 3
    for key in EPOCH_METRICS:  # every epoch that started logging finished logging, in order
        assert steps[key] == list(range(1, epochs + 1)), key
    assert "test_accuracy" not in run.data.metrics


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, tiny_overrides):
    cwd = tmp_path_factory.mktemp("sigint")
    proc, seconds = interrupt_training(cwd, tiny_overrides, signal.SIGINT)
    return cwd, proc, seconds


def test_sigint_ends_the_run_killed(interrupted):
    cwd, proc, seconds = interrupted
    assert proc.returncode == 128 + signal.SIGINT, proc.stderr[-3000:]
    assert seconds < 20
    assert one_line_error(proc) == "glove-exp: interrupted (SIGINT)"
    [run] = experiment_runs(cwd)
    assert_killed_with_epochs_intact(cwd, run)


@pytest.fixture(scope="module")
def rerun(interrupted, tiny_overrides):
    """The configuration of ``single``, run again in the store of the interrupted run."""
    cwd, _, _ = interrupted
    proc = run_cli(cwd, *tiny_overrides, "embeddings.dim=8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    killed, finished = experiment_runs(cwd)
    return cwd, killed, finished


def test_next_run_after_an_interrupt_finishes(rerun):
    cwd, killed, finished = rerun
    assert finished.info.status == "FINISHED"
    assert_killed_with_epochs_intact(cwd, killed)  # untouched by the next run


def test_same_config_and_seed_reproduce_the_same_numbers(single, rerun):
    """Two processes, two stores, one config: identical accuracies and per-epoch losses."""
    first_cwd, _, first = single
    second_cwd, _, second = rerun
    for key in ("test_accuracy", "best_val_accuracy", "test_macro_f1", "best_epoch"):
        assert second.data.metrics[key] == first.data.metrics[key], key
    for key in ("val_loss", "train_loss", "val_accuracy"):
        assert metric_steps(second_cwd, second.info.run_id, key) == metric_steps(first_cwd, first.info.run_id, key), key


def test_sigterm_ends_the_run_killed(tmp_path, tiny_overrides):
    proc, seconds = interrupt_training(tmp_path, tiny_overrides, signal.SIGTERM)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr[-3000:]
    assert seconds < 20
    assert one_line_error(proc) == "glove-exp: interrupted (SIGTERM)"
    [run] = experiment_runs(tmp_path)
    assert_killed_with_epochs_intact(tmp_path, run)


def test_an_interrupt_during_a_tracking_call_waits_for_it(tmp_path):
    """In process and deterministic: a signal that lands inside a store write is raised once the
    write returns (a write cut short would keep SQLite locked, and the run could not end KILLED)."""
    import os

    import mlflow

    from glove_exp import tracking

    uri = store_uri(tmp_path)
    previous = mlflow.get_tracking_uri()
    steps = []

    def write() -> None:
        os.kill(os.getpid(), signal.SIGINT)  # delivered at the next bytecode, inside this call
        steps.append("write finished")

    try:
        with pytest.raises(KeyboardInterrupt, match="signal 2"):
            with tracking.tracked_run(uri, "glove-exp", "interrupted", {}):
                tracking.retry_locked(write)()
                steps.append("after the write")
    finally:
        mlflow.set_tracking_uri(previous)
    assert steps == ["write finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    [run] = experiment_runs(tmp_path)
    assert run.info.status == "KILLED"

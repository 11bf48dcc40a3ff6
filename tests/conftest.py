"""Shared fixtures: small synthetic corpora and GloVe-format files (never the network or real data)."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

# What `glove-exp` sets before it imports MLflow (io.console.quiet_environment); here before any test does.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

# Hyperparameters of glove_exp.core.models.ModelSpec and glove_exp.core.train.make_optimizer for small
# in-process models (the frozen-vector defaults of conf/; tests override what they vary).
FROZEN_MODEL = {
    "mask_padding": True, "hier_window": 3, "weighting": "none", "standardize": False, "token_hidden_sizes": [],
    "hidden_sizes": [128], "activation": "none", "dropout": 0.0, "init": "haiku", "trainable": False,
}  # fmt: skip
ADAM = {
    "name": "adam", "lr": 1e-3, "weight_decay": 0.0, "momentum": 0.0, "clip_norm": None, "schedule": "constant",
    "warmup_fraction": 0.1, "decay_rate": 0.5,
}  # fmt: skip


def hyper(optimizer: dict, dropout: float):
    """A member's scalar settings, as the app takes them from a config's optimizer and model."""
    from glove_exp.core.train import Hyper

    return Hyper(optimizer["lr"], optimizer["weight_decay"], dropout)


CLASSES = ["World", "Sports", "Business", "Sci/Tech"]
# Each class has its own topic words; documents mix them with shared filler words.
TOPICS = [
    ["war", "president", "election", "minister", "iraq", "troops"],
    ["goal", "match", "team", "season", "coach", "cup"],
    ["stocks", "market", "profit", "oil", "shares", "bank"],
    ["software", "internet", "computer", "space", "nasa", "microsoft"],
]
FILLER = ["the", "a", "of", "to", "in", "on", "said", "new", "for", "with"]


def make_corpus(n: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` synthetic news-like documents with labels 0..3 (balanced)."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % len(CLASSES)
        words = list(rng.choice(TOPICS[label], size=4)) + list(rng.choice(FILLER, size=6))
        rng.shuffle(words)
        texts.append(" ".join(words).capitalize() + ", reports say.")
        labels.append(label)
    return texts, labels


def write_csv(path: Path, texts: list[str], labels: list[int]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels))
    return path


def write_glove(path: Path, dim: int = 8, seed: int = 0) -> Path:
    """A GloVe text file covering the synthetic vocabulary; topic words cluster by class."""
    rng = np.random.default_rng(seed)
    lines = []
    for words in TOPICS:
        centre = rng.normal(size=dim) * 2
        for word in words:
            lines.append((word, centre + rng.normal(scale=0.3, size=dim)))
    for word in FILLER:
        lines.append((word, rng.normal(scale=0.5, size=dim)))
    path.write_text("".join(f"{w} {' '.join(f'{v:.5f}' for v in vec)}\n" for w, vec in lines), encoding="utf-8")
    return path


def make_ag_dir(folder: Path) -> Path:
    """``folder`` with train.csv (400 rows) and test.csv (120 rows) in the hub's text,label layout."""
    folder.mkdir(parents=True)
    write_csv(folder / "train.csv", *make_corpus(400, seed=1))
    write_csv(folder / "test.csv", *make_corpus(120, seed=2))
    return folder


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with more slow tests first (each module's tests in their order): pytest-xdist hands
    whole modules to its workers in this order (``--dist loadscope``), so quick modules fill the end of
    a run rather than one long module running there alone."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])


@pytest.fixture
def ag_dir(tmp_path: Path) -> Path:
    """A data_dir with train.csv (400 rows) and test.csv (120 rows) in the hub's text,label layout."""
    return make_ag_dir(tmp_path / "ag")


@pytest.fixture
def glove_file(tmp_path: Path) -> Path:
    return write_glove(tmp_path / "tiny.8d.txt")


def isolate(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> None:
    """Nothing of the developer's data, tracking server or vector cache: the cache in ``cache_dir``."""
    for name in ("GLOVE_EXP_DATA_DIR", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GLOVE_EXP_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True, scope="session")
def isolated_session(tmp_path_factory) -> Iterator[None]:
    """:func:`isolate` for the module and session fixtures, which run before any test's own (a module's shared run)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate(monkeypatch, tmp_path_factory.mktemp("session") / "glove-cache")
        yield


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """Tests never see the developer's data, tracking server or vector cache."""
    isolate(monkeypatch, tmp_path / "glove-cache")


# --- end-to-end runs of the console scripts (tests/test_e2e.py, tests/test_sweeps.py) ---


def cli_env(cwd: Path) -> dict[str, str]:
    """The environment of a ``glove-exp`` subprocess: nothing of the developer's data, tracking
    server or vector cache; MLflow then writes ``sqlite:///<cwd>/mlflow.db``."""
    env = dict(os.environ)
    for name in ("MLFLOW_TRACKING_URI", "GLOVE_EXP_DATA_DIR", "HYDRA_FULL_ERROR"):
        env.pop(name, None)
    env["GLOVE_EXP_CACHE_DIR"] = str(cwd / "glove-cache")
    env["MPLBACKEND"] = "Agg"
    return env


def cli_command(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "glove_exp.app.cli", *overrides]


def run_cli(cwd: Path, *overrides: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``glove-exp <overrides>`` in ``cwd`` (its ``outputs/``, ``multirun/`` and ``mlflow.db`` land there)."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        cli_command(*overrides), cwd=cwd, env=cli_env(cwd), capture_output=True, text=True, timeout=timeout
    )


def run_report(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``glove-exp-report <args>`` in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "glove_exp.report.cli", *args], cwd=cwd, env=cli_env(cwd), capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip


def store_uri(cwd: Path) -> str:
    return f"sqlite:///{cwd}/mlflow.db"


def experiment_runs(cwd: Path, experiment: str = "glove-exp", parents: bool = False) -> list:
    """The training runs of ``experiment`` in ``cwd``'s store (or, with ``parents``, the sweeps' parent
    runs), oldest first (MLflow ``Run`` objects)."""
    import mlflow

    client = mlflow.MlflowClient(store_uri(cwd))
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {cwd}/mlflow.db"
    runs = client.search_runs([found.experiment_id], max_results=1000)
    runs = [run for run in runs if ("glove_exp.role" in run.data.tags) == parents]
    return sorted(runs, key=lambda run: run.info.start_time)


def metric_steps(cwd: Path, run_id: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every logged value of ``key``, by step."""
    import mlflow

    history = mlflow.MlflowClient(store_uri(cwd)).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    """The synthetic AG-News-like folder and an 8-d vector file, shared by a module's runs."""
    root = tmp_path_factory.mktemp("tiny-data")
    return {"ag_dir": make_ag_dir(root / "ag"), "glove_file": write_glove(root / "tiny.8d.txt")}


@pytest.fixture(scope="session")
def tiny_overrides(tiny_data) -> list[str]:
    """Overrides for a few-second run on :func:`tiny_data` (without ``embeddings.dim=8``)."""
    return [
        f"dataset.data_dir={tiny_data['ag_dir']}",
        "embeddings=local",
        f"embeddings.path={tiny_data['glove_file']}",
        "trainer.epochs=3",
        "explain.num_samples=50",
    ]


def recorded_batches(monkeypatch) -> list[int]:
    """Rows of every inference batch (:func:`~glove_exp.core.train.batch_outputs`) run from now on."""
    from glove_exp.core import train

    rows: list[int] = []
    batch_outputs = train.batch_outputs
    monkeypatch.setattr(train, "batch_outputs", lambda *a, **kw: rows.append(len(a[2])) or batch_outputs(*a, **kw))
    return rows


# --- in-process runs of the pipeline (tests/test_pipeline.py) ---


def compose_config(*overrides: str):
    """The typed config ``glove-exp <overrides>`` would run, composed through Hydra's compose API."""
    from hydra import compose, initialize_config_dir

    from glove_exp.app.schema import register, to_config

    register()
    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        return to_config(compose(config_name="config", overrides=list(overrides)))


def tiny_config(data: dict[str, Path], store: Path, *overrides: str):
    """A few-second run on :func:`tiny_data`, tracked in ``store/mlflow.db``."""
    return compose_config(
        f"dataset.data_dir={data['ag_dir']}",
        "embeddings=local",
        f"embeddings.path={data['glove_file']}",
        "embeddings.dim=8",
        "trainer.epochs=3",
        "explain.num_samples=50",
        f"tracking.uri={store_uri(store)}",
        *overrides,
    )


@pytest.fixture
def loading_store():
    """``loading_store(uri)``: where MLflow resolves ``runs:/`` and ``models:/`` URIs, set as users set it
    (``mlflow.set_tracking_uri``); reset after the test."""
    import mlflow

    yield mlflow.set_tracking_uri
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables and no experiment: creating the tables costs about
    half a second, so tests copy this one."""
    from glove_exp.app.store import create_sqlite_store

    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    create_sqlite_store(path)
    return path


@pytest.fixture
def store_in_tmp_path(tmp_path, empty_store) -> Path:
    """``tmp_path/mlflow.db``, a copy of :func:`empty_store`."""
    import shutil

    return Path(shutil.copy(empty_store, tmp_path / "mlflow.db"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(cwd: Path, *options: str) -> Iterator[str]:
    """``mlflow server <options>`` on a free port of 127.0.0.1; yields its URL once it listens."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", *options, "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]  # fmt: skip
    with listening_process(command, cwd, port, "the MLflow server") as url:
        yield url


@contextlib.contextmanager
def model_server(cwd: Path, model_uri: str, tracking_uri: str) -> Iterator[str]:
    """``mlflow models serve -m <model_uri> --env-manager local`` on a free port of 127.0.0.1, the model
    resolved in ``tracking_uri``; yields its URL once it listens."""
    port = free_port()
    env = cli_env(cwd) | {"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # it runs `uvicorn`
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    with listening_process(command, cwd, port, "mlflow models serve", env) as url:
        yield url


@contextlib.contextmanager
def listening_process(
    command: list[str], cwd: Path, port: int, what: str, env: dict[str, str] | None = None
) -> Iterator[str]:
    """``command``, a server that logs ``127.0.0.1:<port>`` once it listens there (a thread reads the log
    line by line, no polling); yields its URL, then terminates it."""
    listening = f"127.0.0.1:{port}"
    # its own process group: `mlflow models serve` runs uvicorn as a child, which must stop with it
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines: list[str] = []
    ready = threading.Event()

    def read_log() -> None:
        # Reads to the end: a server whose log pipe is full blocks on its next line (a request's warning).
        for line in process.stdout:
            lines.append(line)
            if listening in line:
                ready.set()
        ready.set()  # the server exited

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    try:
        ready.wait()
        if not any(listening in line for line in lines):
            pytest.fail(f"{what} exited with status {process.wait()}:\n{''.join(lines[-30:])}")
        yield f"http://{listening}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        reader.join(timeout=30)


@pytest.fixture
def unreachable_hub(monkeypatch) -> str:
    """The Hugging Face hub's address pointed at a port nobody listens on (connection refused)."""
    from huggingface_hub import constants

    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return endpoint

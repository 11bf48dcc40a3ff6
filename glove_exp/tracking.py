"""MLflow bookkeeping: one run per job, ended FINISHED, FAILED or KILLED (never left RUNNING),
with retries where parallel jobs contend for the SQLite store."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

try:
    import fcntl
except ImportError:  # Windows: no parallel local launchers to guard against
    fcntl = None  # type: ignore[assignment]

import mlflow
from mlflow.entities import RunStatus

log = logging.getLogger(__name__)
T = TypeVar("T")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
started_runs: list[str] = []  # ids of the runs this process started, oldest first


_in_store_call = False  # True while a retry_locked call runs: interrupts wait for it to return
_pending_signals: list[int] = []


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """While a tracking call runs, an interrupt (see :func:`_interrupts_as_keyboard_interrupt`) waits
    and is raised when it returns: a KeyboardInterrupt in the middle of a SQLite write leaves that
    connection's transaction open, and ending the run as KILLED then fails with ``database is locked``."""
    global _in_store_call
    outer = _in_store_call
    _in_store_call = True
    try:
        yield
    finally:
        _in_store_call = outer
        if not outer and _pending_signals:
            signum = _pending_signals[0]
            _pending_signals.clear()
            raise KeyboardInterrupt(f"signal {signum}")


def retry_locked(fn: Callable[..., T], attempts: int = 12) -> Callable[..., T]:
    """Retry ``fn`` with jittered backoff while SQLite reports ``database is locked``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        for attempt in range(attempts):
            try:
                with _interrupts_deferred():
                    return fn(*args, **kwargs)
            except Exception as err:
                if "locked" not in str(err).lower() or attempt == attempts - 1:
                    raise
                delay = min(0.1 * 2**attempt, 5.0) * (0.5 + random.random())
                log.debug("tracking store busy (%s); retrying in %.2f s", err, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    return wrapper


def artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store live beside the database file, wherever the job runs."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///").split("?")[0]).parent / "mlartifacts").resolve().as_uri()
    return None


@contextlib.contextmanager
def _store_init_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on ``<database>.lock`` beside a SQLite store.

    The first client of a fresh database creates and migrates its tables; parallel jobs (joblib,
    submitit) doing that at once fail and leave the database unusable, so they take turns.
    """
    if not uri.startswith("sqlite:///") or fcntl is None:
        yield
        return
    database = Path(uri.removeprefix("sqlite:///").split("?")[0])
    database.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(f"{database}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@retry_locked
def ensure_experiment(uri: str, name: str) -> str:
    """Point MLflow at ``uri`` and return the id of experiment ``name``, creating it if needed."""
    mlflow.set_tracking_uri(uri)
    with _store_init_lock(uri):
        client = mlflow.MlflowClient(uri)  # creates the tables of a new database
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_root(uri))
    except mlflow.exceptions.MlflowException:  # created by a parallel job in the meantime
        return client.get_experiment_by_name(name).experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextlib.contextmanager
def _interrupts_as_keyboard_interrupt() -> Iterator[None]:
    """Ctrl-C (SIGINT) and a scheduler's SIGTERM (Slurm pre-emption, ``kill``) raise
    ``KeyboardInterrupt("signal <n>")``, so the run ends KILLED; during a tracking call, once it returns."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if _in_store_call:
            _pending_signals.append(signum)
        else:
            raise KeyboardInterrupt(f"signal {signum}")

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
        _pending_signals.clear()


@contextlib.contextmanager
def tracked_run(uri: str, experiment: str, run_name: str, tags: dict[str, str]) -> Iterator[mlflow.ActiveRun]:
    """Start an MLflow run; end it FINISHED, FAILED (exception) or KILLED (Ctrl-C, SIGTERM)."""
    experiment_id = ensure_experiment(uri, experiment)
    status = RunStatus.to_string(RunStatus.FAILED)
    with _interrupts_as_keyboard_interrupt():
        try:
            run = retry_locked(mlflow.start_run)(experiment_id=experiment_id, run_name=run_name, tags=tags)
            started_runs.append(run.info.run_id)
            yield run
            status = RunStatus.to_string(RunStatus.FINISHED)
        except KeyboardInterrupt:
            status = RunStatus.to_string(RunStatus.KILLED)
            raise
        finally:
            retry_locked(mlflow.end_run)(status=status)  # no-op if start_run failed


log_params = retry_locked(mlflow.log_params)
log_metrics = retry_locked(mlflow.log_metrics)
log_artifacts = retry_locked(mlflow.log_artifacts)
log_artifact = retry_locked(mlflow.log_artifact)
set_tags = retry_locked(mlflow.set_tags)

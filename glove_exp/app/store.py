"""A checked handle on one experiment of a tracking store, whose own ``MlflowClient`` makes every call
(nothing sets MLflow's process-wide URI). A new SQLite store (a copy of an empty one kept in the cache
dir) is made beside its target and renamed into place under a ``filelock``: parallel jobs never see,
and an interrupt never leaves, a half-made one."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import mlflow
from filelock import FileLock, Timeout
from mlflow.entities import RunStatus

from glove_exp.core.errors import TrackingError, first_line
from glove_exp.io.files import pid_alive, temp_path

if TYPE_CHECKING:
    from glove_exp.app.shared import SharedWork

log = logging.getLogger(__name__)

SCHEMES = ("sqlite", "http", "https", "file", "databricks", "postgresql", "mysql", "mssql")
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
LOCK_SECONDS = 15
HEARTBEAT_TAG = "glove_exp.heartbeat"  # unix seconds: when the run's process last wrote to it
HEARTBEAT_TIMEOUT_S = 30 * 60
# MLflow 3's UI opens an experiment of this kind on its runs table, not its GenAI views
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (without its ``?query``), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?")[0])


def artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store live beside the database file, wherever the job runs."""
    path = sqlite_path(uri)
    return (path.parent / "mlartifacts").resolve().as_uri() if path else None


def create_sqlite_store(path: Path, template: Path | None = None) -> None:
    """Create MLflow's tables in a temporary file beside ``path`` (a copy of ``template``, an empty store
    from :func:`store_template`, if given), then rename it to ``path``."""
    made_in_place(path, open_tables if template is None else lambda tmp: copy_template(template, tmp))


def store_template(cache_dir: Path) -> Path | None:
    """An empty store at this MLflow's schema under ``cache_dir``, made once per MLflow version: a new store
    copies it rather than run MLflow's migrations (1 to 1.5 s). It holds no experiment: MLflow makes the
    Default experiment in each copy as in a new store, where the artifacts of a local one go under the
    working folder. None where ``cache_dir`` cannot hold it (the store is then made from scratch)."""
    path = cache_dir / "mlflow" / f"empty-store-{mlflow.__version__}.db"
    try:
        made_in_place(path, without_experiments)
    except (OSError, Timeout):
        return None
    return path


def open_tables(path: Path) -> None:
    """MLflow's own opening of a SQLite store: it makes or checks the schema and adds the Default experiment."""
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments(max_results=1)


def copy_template(template: Path, path: Path) -> None:
    """``template`` copied to ``path`` and opened. A template that MLflow cannot open (damaged, or of another
    schema under the same version number) is deleted, to be made again, and the tables are made from scratch."""
    shutil.copyfile(template, path)
    try:
        open_tables(path)
    except Exception as err:  # SQLite's, SQLAlchemy's and MLflow's errors alike
        log.warning("the empty store %s is unusable (%s); made this one from scratch", template, first_line(err))
        template.unlink(missing_ok=True)
        replaced(path, open_tables)  # under another name: MLflow keeps a store per URI, that of ``path`` damaged


def without_experiments(path: Path) -> None:
    open_tables(path)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("DELETE FROM experiments")  # only the Default one, with nothing linked to it yet


def made_in_place(path: Path, make: Callable[[Path], None]) -> None:
    """``make`` a file in a temporary path beside ``path``, then rename it to ``path``, under a lock: parallel
    jobs never see, and an interrupt never leaves, a half-made one. Nothing happens where ``path`` exists."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock", timeout=LOCK_SECONDS):
        if path.exists():
            return
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # under the lock, any is a killed creator's
            stale.unlink(missing_ok=True)
        replaced(path, make)


def replaced(path: Path, make: Callable[[Path], None]) -> None:
    """``make`` a file in a temporary path beside ``path``, then rename it over ``path``."""
    tmp = temp_path(path)
    try:
        make(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def bound_http_retries(uri: str) -> None:
    """MLflow's own defaults retry an unreachable server for minutes."""
    if urlparse(uri).scheme in ("http", "https"):
        for name, value in HTTP_SETTINGS.items():
            os.environ.setdefault(name, value)


FULL_MESSAGES = ("database or disk is full", "no space left on device")


def full_disk(err: BaseException) -> bool:
    """Whether ``err``, or an error it wraps, says the disk is full (MLflow wraps SQLite's and the OS's)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        if any(text in str(seen).lower() for text in FULL_MESSAGES):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def mount_point(path: Path) -> Path:
    path = path.absolute()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


@dataclass(frozen=True)
class Store:
    """One experiment of one tracking store, opened and checked: pass it to whatever writes runs."""

    uri: str
    experiment_id: str
    client: mlflow.MlflowClient

    @classmethod
    def open(cls, uri: str, experiment: str, cache_dir: str | Path | None = None) -> Store:
        """Check the store at ``uri`` and open ``experiment``, creating either if needed (a new SQLite store
        from the :func:`store_template` in ``cache_dir``, if given)."""
        if not experiment.strip():
            raise TrackingError("tracking.experiment must not be empty")
        scheme = urlparse(uri).scheme
        if scheme.split("+")[0] not in SCHEMES:
            raise TrackingError(
                f"tracking.uri={uri}: unsupported scheme {scheme!r}; use sqlite:///path/mlflow.db or http://host:port"
            )
        bound_http_retries(uri)
        # MLflow logs each database error with its traceback before raising it; the raised one is reported
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        path = sqlite_path(uri)
        try:
            if path and not path.exists():
                create_sqlite_store(path, store_template(Path(cache_dir).expanduser()) if cache_dir else None)
            client = mlflow.MlflowClient(uri)
            found = client.get_experiment_by_name(experiment)
            if found is None:
                with contextlib.suppress(mlflow.exceptions.MlflowException):  # a parallel job may win the race
                    client.create_experiment(experiment, artifact_location=artifact_root(uri), tags=EXPERIMENT_KIND)
                found = client.get_experiment_by_name(experiment)
            if found.lifecycle_stage != "deleted" and not set(EXPERIMENT_KIND) & set(found.tags):
                for key, value in EXPERIMENT_KIND.items():  # made before glove-exp said so, or by hand
                    client.set_experiment_tag(found.experiment_id, key, value)
        except Timeout:
            raise TrackingError(f"tracking.uri={uri}: another process holds {path}.lock") from None
        except Exception as err:  # MLflow, SQLAlchemy, requests and OS errors all mean an unusable store
            raise TrackingError(f"tracking.uri={uri}: cannot open the tracking store ({first_line(err)})") from None
        if found.lifecycle_stage == "deleted":
            raise deleted(experiment, uri)
        store = cls(uri, found.experiment_id, client)
        store.end_dead_runs()
        return store

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """A full disk under a write is one line (exit 2) naming the device and the path, not a traceback."""
        try:
            yield
        except Exception as err:
            if not full_disk(err):
                raise
            written = next((e.filename for e in (err, err.__cause__) if isinstance(e, OSError) and e.filename), None)
            path = Path(str(written)) if written else sqlite_path(self.uri)
            where = f"{mount_point(path)} is full (writing {path})" if path else f"the disk of {self.uri} is full"
            raise TrackingError(
                f"no space left on device: {where}; free some space or set tracking.uri to another disk"
            ) from None

    @classmethod
    def reuse(cls, uri: str, experiment: str, cache_dir: str | Path | None, shared: SharedWork | None) -> Store:
        """:meth:`open`, once per process for the jobs that share ``shared`` (a sweep's): each opening
        reads the experiment and searches it for dead runs again, about 12 ms a job."""
        if shared is None:
            return cls.open(uri, experiment, cache_dir)
        key = json.dumps([uri, experiment, None if cache_dir is None else str(cache_dir)])
        return shared.reuse("store", key, lambda: cls.open(uri, experiment, cache_dir), lambda store: 0)[0]

    def check_active(self) -> None:
        """The error of :meth:`open` if the experiment has been deleted since it was opened (a sweep's jobs
        share one opening, :meth:`reuse`); nothing otherwise."""
        found = self.client.get_experiment(self.experiment_id)
        if found.lifecycle_stage == "deleted":
            raise deleted(found.name, self.uri)

    def end_dead_runs(self) -> None:
        """Runs left RUNNING by a process that no longer exists end KILLED: on this host, its pid is gone
        (SIGKILL, power loss); elsewhere, its heartbeat stopped (:func:`is_dead`)."""
        now = time.time()
        for run in self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'"):
            if is_dead(run.data.tags, run.data.metrics, now):
                self.client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
                log.warning("run %s was left RUNNING by a process that is gone; marked KILLED", run.info.run_id)


def deleted(experiment: str, uri: str) -> TrackingError:
    return TrackingError(
        f"tracking.experiment={experiment!r} is deleted in {uri}; restore it (mlflow experiments restore) or pick another name"
    )


def is_dead(tags: dict[str, str], metrics: dict[str, float], now: float) -> bool:
    """Whether the process of a RUNNING run is gone: its pid, on this host; on another, a heartbeat (set
    at every epoch) older than :data:`HEARTBEAT_TIMEOUT_S` or three of its epochs, whichever is longer.
    Runs without either (not glove-exp's) are left alone."""
    if tags.get("host") == socket.gethostname() and tags.get("pid", "").isdigit():
        return not pid_alive(int(tags["pid"]))
    if HEARTBEAT_TAG not in tags:
        return False
    timeout = max(HEARTBEAT_TIMEOUT_S, 3 * metrics.get("time/epoch_s", 0.0))
    return now - float(tags[HEARTBEAT_TAG]) > timeout


def heartbeat() -> dict[str, str]:
    return {HEARTBEAT_TAG: f"{time.time():.0f}"}

"""MLflow bookkeeping: a checked store, and one run per job ended FINISHED, FAILED or KILLED.

Concurrency is left to configuration and libraries: the default SQLite URI carries a busy timeout
(``?timeout=``, which MLflow hands to SQLite), and a new SQLite store is created beside its target
and renamed into place under a ``filelock``, so parallel jobs never see, and an interrupt never
leaves, a half-created database.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.metadata
import io
import json
import logging
import os
import re
import socket
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

import mlflow
import numpy as np
from filelock import FileLock, Timeout
from mlflow.entities import RunStatus
from omegaconf import OmegaConf

from glove_exp.app.interrupts import Interrupts
from glove_exp.app.schema import Config, flatten
from glove_exp.core.errors import TrackingError
from glove_exp.io.files import pid_alive, sha256_file, spreadsheet_safe, temp_path

if TYPE_CHECKING:
    import pandas as pd

    from glove_exp.app.pipeline import JobInfo
    from glove_exp.app.schema import DatasetConfig
    from glove_exp.app.serving import Predictor
    from glove_exp.core.evaluate import Evaluation
    from glove_exp.core.explain import Explanation
    from glove_exp.core.text import Encoded
    from glove_exp.core.train import EpochMetrics, FitResult
    from glove_exp.io.datasets import Splits

log = logging.getLogger(__name__)

T = TypeVar("T")
PACKAGE_DIR = Path(__file__).resolve().parent.parent  # glove_exp/
PROJECT_ROOT = PACKAGE_DIR.parent
SCHEMES = ("sqlite", "http", "https", "file", "databricks", "postgresql", "mysql", "mssql")
HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
LOCK_SECONDS = 15
PENDING_FILE = "pending.json"
DATASET_CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
PACKAGES = ("jax", "jaxlib", "dm-haiku", "optax", "numpy", "mlflow", "datasets", "scikit-learn", "lime", "hydra-core")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (without its ``?query``), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?")[0])


def artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store live beside the database file, wherever the job runs."""
    path = sqlite_path(uri)
    return (path.parent / "mlartifacts").resolve().as_uri() if path else None


def create_sqlite_store(path: Path) -> None:
    """Create MLflow's tables in a temporary file beside ``path``, then rename it to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock", timeout=LOCK_SECONDS):
        if path.exists():
            return
        for stale in path.parent.glob(f".{path.name}.*.tmp"):  # under the lock, any is a killed creator's
            stale.unlink(missing_ok=True)
        tmp = temp_path(path)
        try:
            mlflow.MlflowClient(f"sqlite:///{tmp}").search_experiments(max_results=1)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _store_problem(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def bound_http_retries(uri: str) -> None:
    """MLflow's own defaults retry an unreachable server for minutes."""
    if urlparse(uri).scheme in ("http", "https"):
        for name, value in HTTP_SETTINGS.items():
            os.environ.setdefault(name, value)


def open_experiment(uri: str, experiment: str) -> str:
    """Check the store at ``uri`` and return the id of ``experiment``, creating either if needed.

    Raises :class:`TrackingError` naming ``tracking.uri`` or ``tracking.experiment``.
    """
    if not experiment.strip():
        raise TrackingError("tracking.experiment must not be empty")
    scheme = urlparse(uri).scheme
    if scheme.split("+")[0] not in SCHEMES:
        raise TrackingError(
            f"tracking.uri={uri}: unsupported scheme {scheme!r}; use sqlite:///path/mlflow.db or http://host:port"
        )
    bound_http_retries(uri)
    try:
        if path := sqlite_path(uri):
            create_sqlite_store(path)
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            with contextlib.suppress(mlflow.exceptions.MlflowException):  # a parallel job may win the race
                client.create_experiment(experiment, artifact_location=artifact_root(uri))
            found = client.get_experiment_by_name(experiment)
    except Timeout:
        raise TrackingError(f"tracking.uri={uri}: another process holds {path}.lock") from None
    except Exception as err:  # MLflow, SQLAlchemy, requests and OS errors all mean an unusable store
        raise TrackingError(f"tracking.uri={uri}: cannot open the tracking store ({_store_problem(err)})") from None
    if found.lifecycle_stage == "deleted":
        raise TrackingError(
            f"tracking.experiment={experiment!r} is deleted in {uri}; restore it (mlflow experiments restore) or pick another name"
        )
    end_dead_runs(client, found.experiment_id)
    return found.experiment_id


def end_dead_runs(client: mlflow.MlflowClient, experiment_id: str) -> None:
    """Runs left RUNNING by a process of this host that no longer exists (SIGKILL, power loss) end KILLED."""
    host = socket.gethostname().replace("'", "")
    for run in client.search_runs([experiment_id], f"attributes.status = 'RUNNING' and tags.host = '{host}'"):
        pid = int(run.data.tags.get("pid", "0"))
        if pid and not pid_alive(pid):
            client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
            log.warning("run %s of process %d was left RUNNING; marked KILLED", run.info.run_id, pid)


def git_commit() -> str:
    """The checkout's commit (``-dirty`` with local changes), or ``unknown`` for an installed wheel."""
    if not (PROJECT_ROOT / ".git").exists():
        return "unknown"
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class TrackedRun:
    """The active MLflow run; every write waits for a Ctrl-C to be raised until it has returned."""

    def __init__(self, run: mlflow.ActiveRun, interrupts: Interrupts):
        self.run_id: str = run.info.run_id
        self._interrupts = interrupts

    def call(self, write: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._interrupts.store_call():
            return write(*args, **kwargs)

    def log_params(self, params: dict[str, Any]) -> None:
        self.call(mlflow.log_params, params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.call(mlflow.log_metrics, metrics, step=step)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.call(mlflow.set_tags, tags)

    def log_config(self, config: Config, encoded: Encoded, feature_dim: int) -> None:
        """The resolved config (params and ``config.yaml``) and the run's data sizes (params ``data.*``)."""
        structured = OmegaConf.structured(config)
        sizes = {f"data.{key}": value for key, value in encoded.sizes().items()}
        self.log_params({**flatten(structured), **sizes, "data.feature_dim": feature_dim})
        self.call(mlflow.log_text, OmegaConf.to_yaml(structured, resolve=True), "config.yaml")

    def log_epoch(self, metrics: EpochMetrics) -> None:
        values = {
            "train/loss": metrics.train_loss,
            "train/accuracy": metrics.train_accuracy,
            "val/loss": metrics.val_loss,
            "val/accuracy": metrics.val_accuracy,
            "time/epoch_s": metrics.epoch_time_s,
        }
        self.log_metrics({k: v for k, v in values.items() if v is not None}, step=metrics.epoch)

    def log_explanations(self, explanations: list[Explanation], artifact_path: str) -> None:
        """Each explanation's page and, beside it, its data as ``<page name>.json``."""
        for explanation in explanations:
            page = explanation.page
            self.call(mlflow.log_artifact, str(page), artifact_path)
            self.call(mlflow.log_dict, explanation.data(), f"{artifact_path}/{page.stem}.json")
            log.info("LIME explanation %s/%s", artifact_path, page.name)

    def log_outcome(self, result: FitResult, evaluation: Evaluation, class_names: list[str], title: str) -> None:
        """Final metrics, the classification report and the confusion matrix (counts and plot)."""
        selection = {"train/epochs_run": len(result.history), "train/selected_epoch": result.selected_epoch}
        if result.best_epoch:
            selection |= {"train/best_epoch": result.best_epoch, "val/selected_accuracy": result.selected.val_accuracy}
        self.log_metrics(
            {
                "test/accuracy": evaluation.accuracy,
                "test/macro_f1": evaluation.macro_f1,
                **{
                    f"test/f1/{name}": evaluation.per_class_f1[cls]
                    for cls, name in zip(class_names, metric_names(class_names))
                },
                **selection,
                "time/compile_s": result.compile_time_s,
            }
        )
        self.set_tags(package_versions())
        self.call(mlflow.log_text, evaluation.report_text, "classification_report.txt")
        self.call(mlflow.log_dict, evaluation.report, "classification_report.json")
        self.call(mlflow.log_text, confusion_csv(evaluation.confusion, class_names), "confusion_matrix.csv")
        from glove_exp.core.evaluate import confusion_figure

        self.call(mlflow.log_figure, confusion_figure(evaluation, class_names, title), "confusion_matrix.png")

    def log_datasets(self, splits: Splits, dataset: DatasetConfig) -> None:
        """Each split as an MLflow dataset input (the runs table's Dataset column), with its source:
        the local file, or the hub id and split (validation rows are carved from train)."""
        import pandas as pd
        from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource

        for split, part in splits.parts().items():
            if part is None:
                continue
            hub_split = dataset.test_split if split == "test" else dataset.train_split  # val is carved from train
            path = splits.files.get(hub_split)
            source = (
                Path(path).resolve().as_uri()
                if path
                else HuggingFaceDatasetSource(dataset.hub_id, dataset.hub_config, split=hub_split)
            )
            labels = np.asarray(dataset.class_names, dtype=object)[part.labels]
            frame = pd.DataFrame({"text": part.texts, "label": labels})
            with warnings.catch_warnings():  # MLflow registers its local-file source twice and says so
                warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
                data = mlflow.data.from_pandas(frame, source=source, targets="label", name=f"{dataset.name}-{split}")
            self.log_input(data, DATASET_CONTEXTS[split])

    def log_input(self, data: Any, context: str) -> None:
        """``mlflow.log_input``, once more if a parallel job logged the same dataset at the same moment:
        MLflow's SQL store looks the dataset up, then inserts it, so on PostgreSQL or MySQL one of two
        jobs gets a unique-key error; its second try finds the dataset and links it to the run."""
        try:
            self.call(mlflow.log_input, data, context=context)
        except mlflow.exceptions.MlflowException as err:
            if err.error_code != "BAD_REQUEST" or not re.search("duplicate|unique", str(err), re.IGNORECASE):
                raise
            self.call(mlflow.log_input, data, context=context)

    def log_model(self, predictor: Predictor, example_texts: list[str], name: str, run_name: str) -> None:
        """The classifier as a pyfunc "model from code" (no pickle), with a signature and an example."""
        with tempfile.TemporaryDirectory(prefix="glove-exp-model-") as tmp:
            folder = predictor.save(Path(tmp) / "predictor")
            example, output = example_and_output(predictor, example_texts)
            self.call(log_model_files, folder, example, output, name, run_name)


def example_and_output(predictor: Predictor, example_texts: list[str]) -> tuple[list[str], pd.DataFrame]:
    """The input example and the model's output for it, from which MLflow infers the signature."""
    import pandas as pd

    # A plain list gives an unnamed string column: lists, Series and DataFrames (a `text`
    # column, else the first) then all pass MLflow's schema check.
    example = [str(text) for text in example_texts]
    return example, pd.DataFrame(predictor.predict_proba(example).astype(np.float64), columns=predictor.class_names)


def log_model_files(folder: Path, example: list[str], output: pd.DataFrame, name: str, run_name: str) -> None:
    """A saved :class:`Predictor` ``folder`` as a pyfunc model of the active run."""
    from mlflow.models import infer_signature

    mlflow.pyfunc.log_model(
        name=name,
        tags={"run_name": run_name},
        python_model=str(PACKAGE_DIR / "mlflow_model.py"),
        artifacts={"predictor": str(folder)},
        code_paths=[str(PACKAGE_DIR)],
        signature=infer_signature(example, output),
        input_example=example,
        pip_requirements=[*(f"{p}=={v}" for p, v in package_versions(prefix="").items()), "pandas"],
    )


def save_pending_model(
    predictor: Predictor, folder: Path, example_texts: list[str], name: str, run_name: str, run_id: str, uri: str
) -> str:
    """``tracking.log_model=best`` in a sweep: the model, and what logging it into run ``run_id``
    needs, in ``folder`` (the job's output folder), for :func:`log_pending_model` at the sweep's end."""
    predictor.save(folder / "predictor")
    example, output = example_and_output(predictor, example_texts)
    meta = {"run_id": run_id, "tracking_uri": uri, "name": name, "run_name": run_name, "example": example}
    (folder / PENDING_FILE).write_text(json.dumps(meta | {"output": output.to_dict("split")}), encoding="utf-8")
    return str(folder)


def log_pending_model(folder: Path) -> str:
    """Log the model :func:`save_pending_model` left in ``folder`` into its run, which is resumed
    and ends FINISHED again; returns the run id."""
    import pandas as pd

    meta = json.loads((folder / PENDING_FILE).read_text(encoding="utf-8"))
    bound_http_retries(meta["tracking_uri"])
    mlflow.set_tracking_uri(meta["tracking_uri"])
    mlflow.start_run(run_id=meta["run_id"])
    try:  # not `with start_run`: a failed upload must not turn the finished run FAILED
        output = pd.DataFrame(**meta["output"])
        log_model_files(folder / "predictor", meta["example"], output, meta["name"], meta["run_name"])
    finally:
        mlflow.end_run()
    return meta["run_id"]


def metric_names(class_names: list[str]) -> list[str]:
    """Class names as parts of MLflow metric names: letters, digits, ``_ - .`` only (``/`` would
    open a chart section), unique."""
    names: list[str] = []
    for name in class_names:
        safe = re.sub(r"[^0-9A-Za-z_\-.]+", "_", name).strip("_.") or "class"
        names.append(safe if safe not in names else f"{safe}_{len(names)}")
    return names


def confusion_csv(confusion: np.ndarray, class_names: list[str]) -> str:
    """Counts with a header row and a first column of class names (cells made formula-safe)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["true \\ predicted", *map(spreadsheet_safe, class_names)])
    for name, row in zip(class_names, confusion):
        writer.writerow([spreadsheet_safe(name), *(int(v) for v in row)])
    return out.getvalue()


def package_versions(prefix: str = "version.") -> dict[str, str]:
    versions = {}
    for package in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[f"{prefix}{package}"] = importlib.metadata.version(package)
    return versions


def run_tags(config: Config, job: JobInfo, files: dict[str, str], vectors_source: str) -> dict[str, str]:
    """What a run is and where it came from: names, Hydra job, git commit, data and vector sources."""
    tags = {
        "dataset": config.dataset.name,
        "embeddings": config.embeddings.name,
        "pooling": config.model.pooling.value,
        "git_commit": git_commit(),
        "hydra_job_name": job.name,
        "glove_source": vectors_source,
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
    }
    if job.num is not None:
        tags["hydra_job_num"] = str(job.num)
    if job.sweep_id:
        tags["sweep_id"] = job.sweep_id
    if job.overrides:
        tags["hydra_overrides"] = " ".join(job.overrides)
    for split, path in files.items():
        tags |= {f"data_sha256.{split}": sha256_file(Path(path)), f"data_file.{split}": path}
    return tags


@contextlib.contextmanager
def tracked_run(
    experiment_id: str, run_name: str, tags: dict[str, str], interrupts: Interrupts
) -> Iterator[TrackedRun]:
    """Start an MLflow run in the store :func:`open_experiment` set; end it FINISHED, FAILED
    (exception) or KILLED (Ctrl-C, SIGTERM)."""
    status = RunStatus.FAILED
    with interrupts.run():
        try:
            with interrupts.store_call():
                run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
            yield TrackedRun(run, interrupts)
            status = RunStatus.FINISHED
        except KeyboardInterrupt:
            status = RunStatus.KILLED
            raise
        finally:
            with interrupts.store_call():
                mlflow.end_run(status=RunStatus.to_string(status))  # a no-op if start_run failed

"""A shared tracking store as clusters run one: a throw-away PostgreSQL behind ``mlflow server``
(artifacts proxied to a local folder), and a parallel sweep whose jobs log to it over HTTP."""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from tests.conftest import CLASSES, free_port, mlflow_server, run_cli

pytestmark = pytest.mark.slow

# initdb and postgres refuse to run as root: as root (CI here) they run as this system user,
# which Debian's postgresql package creates.
SERVER_USER = "postgres"


def postgres_bin() -> Path | None:
    """The folder of the server binaries: pg_ctl's on PATH, else Debian's newest /usr/lib/postgresql/<ver>/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


def server_user_prefix() -> list[str]:
    """How to run initdb and pg_ctl: as ourselves, or as root through ``runuser -u postgres --``."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        pytest.skip(
            f"running as root without a {SERVER_USER!r} user for PostgreSQL's server (apt-get install postgresql)"
        )
    return ["runuser", "-u", SERVER_USER, "--"]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server on a fresh data directory, on a free port of 127.0.0.1 only (its unix
    socket in that directory), with trust authentication and an empty database ``mlflow``;
    ``pg_ctl start -w`` returns once it accepts connections. Yields its libpq URI."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (Debian's postgresql package; .ci/run installs it as root)")
    as_owner = server_user_prefix()
    # Not under pytest's tmp_path: its parent is private to the test's user, out of the server user's reach.
    root = Path(tempfile.mkdtemp(prefix="glove-exp-pg-"))
    if as_owner:
        shutil.chown(root, SERVER_USER)
    data, port = root / "data", free_port()

    def owner_run(*command: str) -> None:
        subprocess.run([*as_owner, *command], check=True, capture_output=True, text=True, timeout=120)

    try:
        owner_run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync", "--no-instructions")  # fmt: skip
        # Durability off: the store lives for one test.
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off"
        owner_run(
            str(bin_dir / "pg_ctl"), "start", "-w", "-D", str(data), "-l", str(root / "server.log"), "-o", options
        )
        try:
            subprocess.run(
                [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow"],
                check=True, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
        finally:
            owner_run(str(bin_dir / "pg_ctl"), "stop", "-w", "-D", str(data), "-m", "fast")
    except subprocess.CalledProcessError as error:
        log = root / "server.log"
        detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        pytest.fail(f"{shlex.join(error.cmd)} failed:\n{error.stderr}\n{detail}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_sweep(tmp_path_factory, tiny_overrides):
    """8 jobs, 4 at a time (joblib), logging to ``mlflow server`` on PostgreSQL; yields the server's
    URL, the database URI, the artifact folder and the sweep's process while both servers run."""
    cwd = tmp_path_factory.mktemp("postgres-sweep")
    artifacts = cwd / "artifacts"
    with postgres_server() as database:
        # SQLAlchemy's name for the psycopg 3 driver (the postgres extra); plain postgresql:// picks
        # psycopg2 before SQLAlchemy 2.1.
        backend = database.replace("postgresql://", "postgresql+psycopg://", 1)
        store = ["--backend-store-uri", backend, "--artifacts-destination", str(artifacts)]
        with mlflow_server(cwd, *store) as url:
            proc = run_cli(
                cwd, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", *tiny_overrides, "embeddings.dim=8",
                "trainer.epochs=2", "explain.num_examples=0", f"tracking.uri={url}", "tracking.log_model=always",
                "model.pooling=mean,max,sum,min", "trainer.seed=0,1", timeout=400,
            )  # fmt: skip
            yield url, database, artifacts, proc


def test_a_parallel_sweep_logs_runs_artifacts_and_models_to_postgres(postgres_sweep):
    url, database, artifacts, proc = postgres_sweep
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[-1] == "sweep: 8 of 8 jobs finished"
    client = mlflow.MlflowClient(url)
    experiment = client.get_experiment_by_name("glove-exp")
    found = client.search_runs([experiment.experiment_id], run_view_type=mlflow.entities.ViewType.ALL)
    [parent] = [run for run in found if run.data.tags.get("glove_exp.role") == "sweep"]
    runs = [run for run in found if run.info.run_id != parent.info.run_id]
    assert parent.info.status == "FINISHED"
    assert {run.data.tags["mlflow.parentRunId"] for run in runs} == {parent.info.run_id}
    assert sorted(run.info.status for run in runs) == ["FINISHED"] * 8
    assert sorted((run.data.params["model.pooling"], run.data.params["trainer.seed"]) for run in runs) == sorted(
        (pooling, seed) for pooling in ("mean", "max", "sum", "min") for seed in ("0", "1")
    )
    expected = {"config.yaml", "confusion_matrix.csv", "confusion_matrix.png", "classification_report.json"}
    for run in runs:
        assert expected <= {a.path for a in client.list_artifacts(run.info.run_id)}
        # Proxied by the server into --artifacts-destination, not written by the job beside itself.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert len(list(artifacts.rglob("confusion_matrix.png"))) == 8

    models = client.search_logged_models([experiment.experiment_id])
    assert sorted(model.source_run_id for model in models) == sorted(run.info.run_id for run in runs)
    mlflow.set_tracking_uri(url)  # where models:/ URIs resolve
    try:
        predictor = mlflow.pyfunc.load_model(f"models:/{models[0].model_id}")
    finally:
        mlflow.set_tracking_uri(None)
    assert list(predictor.predict(["stocks and shares fell"]).columns) == CLASSES


def test_the_runs_live_in_postgres_and_none_is_left_running(postgres_sweep):
    import psycopg

    database = postgres_sweep[1]
    with psycopg.connect(database) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT status, count(*) FROM runs GROUP BY status")
        assert dict(cursor.fetchall()) == {"FINISHED": 9}  # the 8 jobs and the sweep's parent run

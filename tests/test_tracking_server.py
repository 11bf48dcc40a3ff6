"""glove-exp against an MLflow tracking server (http://) started on 127.0.0.1, not a SQLite file."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import mlflow
import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
               "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("the MLflow server did not start")
            time.sleep(0.5)
    yield uri
    process.terminate()
    process.wait(timeout=30)


def test_a_run_logs_to_a_tracking_server(server, tmp_path, ag_dir, glove_file):
    env = {k: v for k, v in os.environ.items() if k != "GLOVE_EXP_DATA_DIR"} | {"MLFLOW_TRACKING_URI": server}
    overrides = [f"dataset.data_dir={ag_dir}", "embeddings=local", f"embeddings.path={glove_file}", "embeddings.dim=8",
                 "trainer.epochs=2", "explain.num_examples=1", "explain.num_samples=50"]  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "glove_exp.cli", *overrides], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "mlflow.db").exists()  # MLFLOW_TRACKING_URI wins over the default store
    mlflow.set_tracking_uri(server)
    try:
        (run,) = mlflow.search_runs(experiment_names=["glove-exp"], output_format="list")
        assert run.info.status == "FINISHED" and 0 <= run.data.metrics["test_accuracy"] <= 1
        artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
        assert {"config.yaml", "confusion_matrix.png", "lime"} <= artifacts
        model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
        assert list(model.predict(["stocks and shares fell"]).columns) == ["World", "Sports", "Business", "Sci/Tech"]
    finally:
        mlflow.set_tracking_uri(None)

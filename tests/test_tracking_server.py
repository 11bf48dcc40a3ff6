"""glove-exp against an MLflow tracking server (http://) started on 127.0.0.1, not a SQLite file."""

from __future__ import annotations

from collections.abc import Iterator

import mlflow
import pytest

from glove_exp.app import pipeline
from tests.conftest import CLASSES, free_port, mlflow_server, run_cli, tiny_config

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path) -> Iterator[str]:
    """An MLflow tracking server with its own SQLite store and artifact folder."""
    backend = [
        "--backend-store-uri",
        f"sqlite:///{tmp_path}/server.db",
        "--artifacts-destination",
        str(tmp_path / "artifacts"),
    ]
    with mlflow_server(tmp_path, *backend) as url:
        yield url


def test_a_run_logs_to_a_tracking_server(server, tmp_path, tiny_data):
    config = tiny_config(tiny_data, tmp_path, f"tracking.uri={server}", "trainer.epochs=2", "explain.num_examples=1")
    result = pipeline.run(config)
    assert not (tmp_path / "mlflow.db").exists()
    mlflow.set_tracking_uri(server)
    try:
        (run,) = mlflow.search_runs(experiment_names=["glove-exp"], output_format="list")
        assert run.info.run_id == result.run_id
        assert run.info.status == "FINISHED" and 0 <= run.data.metrics["test/accuracy"] <= 1
        artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
        assert {"config.yaml", "confusion_matrix.png", "lime"} <= artifacts
        model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
        assert list(model.predict(["stocks and shares fell"]).columns) == CLASSES
    finally:
        mlflow.set_tracking_uri(None)


def test_an_unreachable_server_is_one_error_naming_tracking_uri(tmp_path, tiny_data):
    from glove_exp.core.errors import TrackingError

    config = tiny_config(tiny_data, tmp_path, f"tracking.uri=http://127.0.0.1:{free_port()}")
    with pytest.raises(TrackingError, match=r"^tracking\.uri=http://127\.0\.0\.1:\d+: cannot open the tracking store"):
        pipeline.run(config)


@pytest.mark.slow
@pytest.mark.parametrize("sweep", [(), ("-m", "model.pooling=mean,sum")])
def test_an_unreachable_server_is_one_line_from_the_cli(tmp_path, tiny_overrides, sweep):
    """Not also urllib3's warning of each retry, which MLflow makes before it gives up."""
    uri = f"http://127.0.0.1:{free_port()}"
    proc = run_cli(tmp_path, *sweep, *tiny_overrides, "embeddings.dim=8", f"tracking.uri={uri}")
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"glove-exp: error: tracking.uri={uri}: cannot open the tracking store")

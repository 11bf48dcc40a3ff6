"""A signal at any moment around the end of a run: exit 128 + signal and one line, no run left
RUNNING, every FINISHED run with its model, the registered best loadable. Each point is reached by a
hook (the process patches that call to signal itself), never by timing."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from glove_exp.app.registry import best_version
from glove_exp.app.store import Store
from tests.conftest import cli_env, experiment_runs, store_uri

pytestmark = pytest.mark.slow

SCRIPT = """
import os, signal, sys
import {module} as where
original = getattr({target}, "{name}")

def hooked(*args, **kwargs):
    os.kill(os.getpid(), {signum})  # the handler runs at the next bytecode, inside this call
    return original(*args, **kwargs)

setattr({target}, "{name}", {wrap}hooked{unwrap})
sys.argv = ["glove-exp", *{overrides!r}]
from glove_exp.app.cli import main
main()
"""

# point: (module, owner, name, final status of the run); owner "" for a module's function
POINTS = {
    "epoch": ("glove_exp.app.tracking", "TrackedRun", "log_epoch", "KILLED"),
    "outcome": ("glove_exp.app.tracking", "TrackedRun", "log_outcome", "KILLED"),
    "model": ("glove_exp.app.tracking", "", "log_model_files", "KILLED"),
    "end of run": ("mlflow", "MlflowClient", "set_terminated", "FINISHED"),
    "registry": ("mlflow", "MlflowClient", "create_model_version", "FINISHED"),
    "alias": ("mlflow", "MlflowClient", "set_registered_model_alias", "FINISHED"),
    "summary line": ("glove_exp.app.pipeline", "RunResult", "summary", "FINISHED"),
}


def interrupt_at(cwd: Path, point: str, signum: int, overrides: list[str]) -> subprocess.CompletedProcess:
    module, owner, name, _ = POINTS[point]
    prop = point == "summary line"  # a property: wrap its getter
    script = SCRIPT.format(
        module=module, target=f"where.{owner}" if owner else "where", name=name, signum=int(signum), overrides=overrides,
        wrap="property(" if prop else "", unwrap=")" if prop else "",
    )  # fmt: skip
    if prop:
        script = script.replace("return original(*args, **kwargs)", "return original.fget(*args, **kwargs)")
    return subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, env=cli_env(cwd), capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("point", "signum"),
    [(point, signal.SIGINT) for point in ("epoch", "model", "end of run", "alias", "summary line")]
    + [(point, signal.SIGTERM) for point in ("outcome", "registry")],
)
def test_a_signal_around_the_end_of_a_run(point, signum, tmp_path, tiny_overrides, loading_store):
    overrides = [*tiny_overrides, "embeddings.dim=8", "explain.num_examples=1", "tracking.log_model=always"]
    proc = interrupt_at(tmp_path, point, signum, overrides)
    assert proc.returncode == 128 + signum, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"glove-exp: interrupted ({signal.Signals(signum).name})"
    [run] = experiment_runs(tmp_path)
    assert run.info.status == POINTS[point][3]
    client = mlflow.MlflowClient(store_uri(tmp_path))
    if run.info.status == "FINISHED":  # a finished run keeps its model
        [model] = client.search_logged_models([run.info.experiment_id])
        assert model.source_run_id == run.info.run_id
    best = best_version(Store.open(store_uri(tmp_path), "glove-exp"), "model")
    if best is not None:  # the alias, once moved, points at a loadable version
        loading_store(store_uri(tmp_path))
        assert len(mlflow.pyfunc.load_model("models:/model@best").predict(["goal"])) == 1
    if point in ("epoch", "outcome", "model", "end of run"):
        assert best is None  # interrupted before the alias moved
    if point in ("registry", "alias", "summary line"):  # registering waits for the alias to move
        assert best is not None and best.run_id == run.info.run_id
    if point == "summary line":  # everything was saved before the line, which was never printed
        assert proc.stdout == ""

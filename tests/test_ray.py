"""Sweeps on a real Ray cluster: ``ray start --head`` on 127.0.0.1 with 2 CPUs, in its own temporary
folder and on free ports, then ``glove-exp -m hydra/launcher=ray_cluster`` against it by address.
The cluster stops through its own command: ``ray start --block`` shuts its node down on SIGTERM
(``ray stop`` would stop every Ray process of the user)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from glove_exp.app import cli
from glove_exp.app.interrupts import Interrupts
from tests.conftest import cli_command, cli_env, experiment_runs, free_port
from tests.test_sweeps import FAST, jobs_file

RAY_START_TIMEOUT_S = 120
# Ray's switch for a cluster of this one machine: every service and the driver on 127.0.0.1 rather than
# the machine's address; the driver needs it too, or it waits for a node on its outward address.
ONE_MACHINE = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def test_interrupts_leave_signals_alone_off_the_main_thread():
    """signal.signal raises ValueError off the main thread. Ray runs tasks on its workers' main thread
    (checked with Ray 2.60), but a launcher need not: a job there runs without glove-exp's handlers."""
    outcome = []

    def job() -> None:
        with Interrupts().install().run():
            outcome.append("ran")

    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    assert outcome == ["ran"]


def test_no_cluster_to_join_is_one_line(monkeypatch, capsys):
    """What ray.init raises when hydra/launcher=ray_cluster finds no cluster (exercised without Ray)."""

    def launch() -> None:
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to")

    for name in ("HYDRA_FULL_ERROR", "NO_COLOR", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_LOGGING_LEVEL"):
        monkeypatch.setenv(name, "")  # main() sets them: monkeypatch restores what was there before
        monkeypatch.delenv(name)
    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    monkeypatch.setattr(Interrupts, "install", lambda self: self)  # pytest's signal handlers stay
    monkeypatch.setattr(cli, "_hydra_app", lambda session: launch)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err
        == "glove-exp: error: Could not find any running Ray instance. Please specify the one to connect to\n"
    )


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory) -> Iterator[tuple[Path, str, Path]]:
    """A one-node cluster; yields the launching folder, the head's address and the folder its workers
    start in. They run with the environment of `ray start` (not of glove-exp): here glove-exp's."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason='needs pip install -e ".[ray]"')

    cwd = tmp_path_factory.mktemp("ray-sweep")
    # Ray's Unix sockets need a short path; pytest's temporary folders may be too long.
    ray_dir = Path(tempfile.mkdtemp(prefix="ray-"))
    port = free_port()
    metric_ports = {name: str(free_port()) for name in ("AUTOSCALER_METRIC_PORT", "DASHBOARD_METRIC_PORT")}
    env = cli_env(cwd) | ONE_MACHINE | metric_ports  # fixed metric ports otherwise (44217, 44227)
    command = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
        "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
        "--include-dashboard", "false", "--disable-usage-stats", "--log-color", "false",
        "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
        "--temp-dir", str(ray_dir / "tmp"),
    ]  # fmt: skip
    head = subprocess.Popen(
        command, cwd=ray_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group: the cluster's services and workers, no other process
    )  # fmt: skip
    try:
        for line in head.stdout:  # blocks until the next line; ends if `ray start` exits
            if "Ray runtime started" in line:
                break
        else:
            pytest.fail(f"ray start exited with status {head.wait()}")
        yield cwd, f"127.0.0.1:{port}", ray_dir
    finally:
        head.terminate()  # `ray start --block` stops its node's services on SIGTERM
        head.communicate(timeout=RAY_START_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):  # workers still exiting after their raylet
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(ray_dir, ignore_errors=True)


def run_on_ray(cwd: Path, address: str, tiny_overrides: list[str], *overrides: str) -> subprocess.CompletedProcess:
    cwd.mkdir(exist_ok=True)
    command = cli_command(
        "-m", "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={address}",
        *tiny_overrides, "trainer.epochs=2", *FAST, *overrides,
    )  # fmt: skip
    env = cli_env(cwd) | ONE_MACHINE  # under pytest's timeout (300 s): the fixture then still stops the cluster
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def summary_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """The sweep summary's lines. Ray forwards the workers' output asynchronously, prefixed with
    "(_run_job pid=...)": some of it may come after the summary, or not at all before the driver ends."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("sweep: ", "  job "))]
    return [line for line in lines if not line.startswith("sweep: best of ")]  # the parent run's summary


@pytest.mark.slow
def test_four_jobs_on_a_ray_cluster(ray_cluster, tiny_overrides):
    """Every job runs in a Ray worker, whose folder is not the launching one: the job folders, their
    outcomes and the MLflow runs still land in the launching folder and the sweep summary counts them."""
    cwd, address, workers_dir = ray_cluster
    proc = run_on_ray(cwd, address, tiny_overrides, "embeddings.dim=8", "trainer.seed=0,1,2,3")
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary_lines(proc) == ["sweep: 4 of 4 jobs finished"]
    assert "Creating initial MLflow database tables" not in proc.stderr  # workers quiet too, where it arrives
    runs = experiment_runs(cwd)
    assert [run.info.status for run in runs] == ["FINISHED"] * 4
    assert all("ray" in Path(run.data.tags["mlflow.source.name"]).parts for run in runs)  # Ray's worker process
    assert sorted(run.data.params["trainer.seed"] for run in runs) == ["0", "1", "2", "3"]
    [sweep] = sorted(p for p in (cwd / "multirun").glob("*/*") if p.is_dir())
    assert {run.data.tags["sweep_id"] for run in runs} == {str(sweep)}
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    assert sorted((job["num"], job["status"]) for job in jobs_file(sweep)) == [(i, "FINISHED") for i in range(4)]
    assert not (workers_dir / "multirun").exists()
    [parent] = experiment_runs(cwd, parents=True)  # the parent's id reached the Ray workers
    assert parent.info.status == "FINISHED"
    assert {run.data.tags["mlflow.parentRunId"] for run in runs} == {parent.info.run_id}


@pytest.mark.slow
def test_a_failing_job_on_a_ray_cluster_is_one_line_in_the_summary(ray_cluster, tiny_overrides):
    """``embeddings.dim=9`` does not match the 8-d file: the worker reports it, the sweep exits 1."""
    cwd, address, _ = ray_cluster
    proc = run_on_ray(cwd / "failing", address, tiny_overrides, "embeddings.dim=8,9")
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = summary_lines(proc)
    assert len(summary) == 2 and summary[0] == "sweep: 1 of 2 jobs finished"
    assert summary[1].startswith("  job 1 (") and "holds 8-d vectors but embeddings.dim=9" in summary[1]
    assert [run.info.status for run in experiment_runs(cwd / "failing")] == ["FINISHED"]

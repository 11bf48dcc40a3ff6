"""``hydra/launcher=submitit_slurm`` without a cluster: stand-ins for sbatch, srun and sacct
(tests/fake_slurm.py) take the submission, keep it, and run its array tasks here, so the test checks
both the script submitit generates for a 2-job sweep and the runs it leaves in MLflow."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from tests import fake_slurm
from tests.conftest import experiment_runs, run_cli

pytestmark = pytest.mark.slow

LAUNCHER = [
    "hydra/launcher=submitit_slurm",
    "hydra.launcher.partition=cpu",
    "hydra.launcher.timeout_min=30",
    "hydra.launcher.cpus_per_task=2",
    "hydra.launcher.mem_gb=4",
    "hydra.launcher.array_parallelism=1",
]


def test_a_two_job_sweep_is_one_slurm_array_with_the_launcher_settings(tmp_path, tiny_overrides, monkeypatch):
    for name, value in fake_slurm.install(tmp_path / "bin", tmp_path / "submissions").items():
        monkeypatch.setenv(name, value)
    cwd = tmp_path / "run"
    proc = run_cli(
        cwd, "-m", *LAUNCHER, *tiny_overrides, "embeddings.dim=8", "trainer.epochs=2", "explain.num_examples=0",
        "tracking.log_model=false", "model.pooling=mean,max",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.splitlines()[-1] == "sweep: 2 of 2 jobs finished"

    [submission] = (tmp_path / "submissions").glob("*.sh")  # one sbatch call for the whole sweep
    script = submission.read_text()
    [sweep] = (cwd / "multirun").glob("*/*")
    folder = f"{sweep}/.submitit"  # submitit's folder, made absolute
    assert fake_slurm.sbatch_options(script) == {
        "array": "0-1%1",  # two tasks, array_parallelism of them at a time
        "partition": "cpu",
        "time": "30",
        "cpus-per-task": "2",
        "mem": "4GB",
        "nodes": "1",
        "ntasks-per-node": "1",
        "job-name": "glove-exp",
        "signal": "USR2@120",
        "open-mode": "append",
        "output": f"{folder}/%A_%a/%A_%a_0_log.out",
        "error": f"{folder}/%A_%a/%A_%a_0_log.err",
        "wckey": "submitit",
    }
    command = shlex.split(script.strip().splitlines()[-1])
    assert command[0] == "srun"
    assert command[-5:] == [sys.executable, "-u", "-m", "submitit.core._submit", f"{folder}/%j"]

    runs = experiment_runs(cwd)
    assert [run.info.status for run in runs] == ["FINISHED"] * 2
    assert sorted(run.data.params["model.pooling"] for run in runs) == ["max", "mean"]
    assert {run.data.tags["sweep_id"] for run in runs} == {sweep.relative_to(cwd).as_posix()}
    [parent] = experiment_runs(cwd, parents=True)  # submitit's array tasks found the sweep's parent
    assert parent.info.status == "FINISHED"
    assert {run.data.tags["mlflow.parentRunId"] for run in runs} == {parent.info.run_id}
    array_job = submission.stem
    for task in (0, 1):  # each array task wrote its result where submitit looks for it
        assert Path(folder, f"{array_job}_{task}", f"{array_job}_{task}_0_result.pkl").exists()

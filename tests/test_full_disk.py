"""A full disk under the tracking store: one line naming the device and the path, exit status 2, the run
FAILED, earlier runs intact. A fault injected at the write, and a real small tmpfs where root may mount."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from glove_exp.app import pipeline
from glove_exp.core.errors import TrackingError
from tests.conftest import cli_env, experiment_runs, tiny_config

FAST = ("explain.num_examples=0", "tracking.log_model=never", "trainer.epochs=1")


def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "/var/artifacts/confusion_matrix.csv")


def sqlite_full(*args, **kwargs):
    raise MlflowException("(sqlite3.OperationalError) database or disk is full")


@pytest.mark.parametrize(
    ("method", "fault", "where"),
    [
        ("log_text", full, "/ is full (writing /var/artifacts/confusion_matrix.csv)"),
        ("log_batch", sqlite_full, "is full (writing {store}/mlflow.db)"),
    ],
)
def test_a_full_disk_at_a_write_is_one_line_and_the_run_fails(tiny_data, tmp_path, monkeypatch, method, fault, where):
    monkeypatch.setattr(mlflow.MlflowClient, method, fault)
    with pytest.raises(TrackingError) as raised:
        pipeline.run(tiny_config(tiny_data, tmp_path, *FAST))
    monkeypatch.undo()
    message = str(raised.value)
    assert "\n" not in message and message.startswith("no space left on device: ")
    assert where.format(store=tmp_path) in message
    assert message.endswith("free some space or set tracking.uri to another disk")
    if method != "log_batch":  # with SQLite itself full, even the status may not be written
        [run] = experiment_runs(tmp_path)
        assert run.info.status == "FAILED"


def mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir()
    return os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True).returncode == 0  # fmt: skip


@pytest.mark.slow
def test_a_real_full_tmpfs_is_one_line_and_earlier_runs_stay(tiny_data, tmp_path, tiny_overrides):
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "8m"):
        pytest.skip("mounting a tmpfs needs root")
    try:
        command = [sys.executable, "-m", "glove_exp.app.cli", *tiny_overrides, "embeddings.dim=8", "trainer.epochs=1"]
        first = subprocess.run([*command, "explain.num_examples=0", "tracking.log_model=never"], cwd=disk, env=cli_env(disk), capture_output=True, text=True, timeout=300)  # fmt: skip
        assert first.returncode == 0, first.stderr
        free = shutil.disk_usage(disk).free
        (disk / "filler").write_bytes(b"\0" * (free - 64 * 1024))  # a model needs far more than 64 KB
        proc = subprocess.run([*command, "tracking.log_model=always", "trainer.seed=1"], cwd=disk, env=cli_env(disk), capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 2, proc.stderr[-3000:]
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith(f"glove-exp: error: no space left on device: {disk} is full (writing ")
        (disk / "filler").unlink()
        runs = experiment_runs(disk)
        assert runs[0].info.status == "FINISHED"  # the earlier run is intact and the store opens
        assert [run.info.status for run in runs[1:]] in ([], ["FAILED"], ["KILLED"])
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=False)  # this process's SQLite pool may hold the file

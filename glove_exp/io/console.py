"""The console both CLIs share: library settings that keep it quiet, and result lines on stdout that
survive a reader gone away (``glove-exp -m ... | head -1``): the run's outcome is in MLflow and the
sweep's record, so a closed pipe must not fail a job or the process."""

from __future__ import annotations

import io
import os
import sys


def quiet_environment(terminal: bool) -> None:
    """Library settings for a quiet console: no MLflow transfer bars, no colour codes in pipes."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # every Ray job's summary line, not "[repeated 3x across cluster]"
    if not terminal:
        os.environ.setdefault("NO_COLOR", "1")  # Optuna's colorlog handler honours it


def counted(n: int, noun: str) -> str:
    """``1 run``, ``2 runs``."""
    return f"{n} {noun}{'s' * (n != 1)}"


def say(text: str, end: str = "\n", stream: io.TextIOBase | None = None) -> None:
    """Print ``text`` to ``stream`` (default stdout); once its pipe is closed, this and every later write
    to it go to os.devnull."""
    stream = stream or sys.stdout
    try:
        print(text, end=end, file=stream, flush=True)
    except BrokenPipeError:
        to_devnull(stream)


def to_devnull(stream: io.TextIOBase) -> None:
    """Point ``stream``'s file descriptor at os.devnull (Python's recipe for SIGPIPE, "Note on SIGPIPE"):
    what is still buffered, flushed again at exit, must not fail the exit status."""
    try:
        fd = stream.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):  # no descriptor (a test's capture): nothing to keep
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)

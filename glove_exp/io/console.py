"""Result lines on stdout that survive a reader gone away (``glove-exp -m ... | head -1``): the run's
outcome is in MLflow and the sweep's record, so a closed pipe must not fail a job or the process."""

from __future__ import annotations

import io
import os
import sys


def say(line: str) -> None:
    """Print ``line`` to stdout; once the pipe is closed, this and every later write go to os.devnull."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        to_devnull(sys.stdout)


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

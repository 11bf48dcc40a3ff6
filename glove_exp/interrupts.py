"""Ctrl-C and SIGTERM: one line and exit status 128 + signal, whenever they arrive.

Before an MLflow run exists there is nothing to save, so the process ends at once (even in the
middle of an import, where a ``KeyboardInterrupt`` could leave a C++ extension half-loaded).
While a run is active the signal becomes ``KeyboardInterrupt("signal <n>")`` so that the run ends
KILLED with what it logged; during a tracking-store write it waits for the write to return, since
an exception in the middle of a SQLite transaction leaves the store locked.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def interrupted_message(prog: str, signum: int) -> str:
    return f"{prog}: interrupted ({signal.Signals(signum).name})"


def signal_number(err: KeyboardInterrupt) -> int:
    """The signal behind a ``KeyboardInterrupt`` raised by :class:`Interrupts` (SIGINT otherwise)."""
    text = str(err)
    return int(text.removeprefix("signal ")) if text.startswith("signal ") else int(signal.SIGINT)


@dataclass
class Interrupts:
    """Signal handling for one process; :meth:`install` it first thing in ``main``."""

    prog: str = "glove-exp"
    run_active: bool = False
    store_calls: int = 0
    pending: int | None = None

    def install(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.run_active:
            print(interrupted_message(self.prog, signum), file=sys.stderr, flush=True)
            os._exit(128 + signum)  # nothing to save yet: no half-imported modules, no traceback
        if self.store_calls:
            self.pending = signum
        else:
            raise KeyboardInterrupt(f"signal {signum}")

    @contextlib.contextmanager
    def run(self) -> Iterator[None]:
        """While a tracked run is active, signals raise ``KeyboardInterrupt`` (the run ends KILLED)."""
        self.install()  # a launcher's worker process runs jobs without calling main()
        self.run_active = True
        try:
            yield
        finally:
            self.run_active = False
            self.pending = None

    @contextlib.contextmanager
    def store_call(self) -> Iterator[None]:
        """A tracking-store write: a signal that arrives meanwhile is raised when it returns."""
        self.store_calls += 1
        try:
            yield
        finally:
            self.store_calls -= 1
            if not self.store_calls and self.pending is not None:
                signum, self.pending = self.pending, None
                raise KeyboardInterrupt(f"signal {signum}")

"""Ctrl-C and SIGTERM: one line and exit status 128 + signal. Before a run exists the process ends at
once (even mid-import). During a run the handler only notes the signal; :meth:`Interrupts.check`, after
every tracking-store write (each epoch writes its metrics), raises it as ``KeyboardInterrupt`` so the
run ends KILLED. Raised from the handler itself, the exception would surface wherever the main thread
happened to be: inside a store write (leaving a SQLite store locked) or inside a library's callback
that swallows it (SQLAlchemy's weakref callbacks print "Exception ignored" and go on). A second signal
while one is pending stops at once."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

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
    pending: int | None = None

    def install(self) -> Interrupts:
        self._swap_handlers()
        return self

    def _swap_handlers(self) -> dict[int, Any]:
        """Install :meth:`_handle` (only the main thread may); returns the handlers it replaced."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {signum: signal.signal(signum, self._handle) for signum in SIGNALS}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.run_active:
            print(interrupted_message(self.prog, signum), file=sys.stderr, flush=True)
            os._exit(128 + signum)  # nothing to save yet: no half-imported modules, no traceback
        if self.pending is not None:  # the second Ctrl-C: the user will not wait for the next checkpoint
            raise KeyboardInterrupt(f"signal {signum}")
        self.pending = signum

    def check(self) -> None:
        """Raise the signal noted since the last check, if any: where a run stops."""
        if self.pending is not None:
            signum, self.pending = self.pending, None
            raise KeyboardInterrupt(f"signal {signum}")

    @contextlib.contextmanager
    def run(self) -> Iterator[None]:
        """While a tracked run is active, signals wait for :meth:`check` (the run ends KILLED);
        the handlers in place before (a launcher's worker, a notebook) come back afterwards."""
        previous = self._swap_handlers()
        self.run_active = True
        try:
            yield
        finally:
            self.run_active = False
            self.pending = None
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    @contextlib.contextmanager
    def store_call(self) -> Iterator[None]:
        """A tracking-store write, never interrupted: a signal that arrives meanwhile is raised when it returns."""
        yield
        self.check()


def ignore_signals() -> None:
    """Once the work is saved and said: Python's teardown restores the default handlers, under which a
    late signal would kill the process with no word; ignored ones stay ignored."""
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)

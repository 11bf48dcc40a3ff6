"""The Hydra callback of every ``glove-exp -m`` (``hydra.callbacks`` in conf/config.yaml): it opens the
sweep's parent run before any job starts, and at the end logs the sweep's summary onto it, prints the
jobs' outcomes and ends it FINISHED or FAILED. An interrupted sweep ends it KILLED at exit: the
process exits through ``main`` (exit 128 + signal), whose ``atexit`` handlers run."""

from __future__ import annotations

import atexit
import signal
import sys
import threading
from datetime import datetime
from types import FrameType
from typing import Any

from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

PROG = "glove-exp"
SIGNALS = (signal.SIGINT, signal.SIGTERM)


def fail(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)  # Hydra turns an Exception from a callback into a warning


def swept_keys(config: DictConfig) -> list[str]:
    """The keys the command line sweeps, or ``optuna`` for a search."""
    from glove_exp.app.cli import is_search, swept, task_overrides

    return ["optuna"] if is_search(config.hydra.sweeper) else list(swept(task_overrides(config.hydra)))


def interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # glove_exp.app.cli.main: one line, exit 128 + signum


class SweepSummary(Callback):
    def __init__(self) -> None:
        self.parent: tuple[Any, str] | None = None  # (store, run id) while the sweep runs
        self.handlers: dict[int, Any] = {}  # the signal handlers in place before the sweep

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from glove_exp.app.cli import is_search, task_overrides

        if is_search(config.hydra.sweeper) and config.dataset.val_fraction == 0:
            fail("an Optuna search maximises validation accuracy: set dataset.val_fraction > 0")
        from hydra.core.hydra_config import HydraConfig

        from glove_exp.app.parent import open_parent, parent_name, sweep_key, write_parent
        from glove_exp.app.session import check_launcher, end_start_up, runs_jobs_here
        from glove_exp.app.store import Store
        from glove_exp.core.errors import GloveExpError

        if not runs_jobs_here(str(config.hydra.launcher._target_)):  # no job here ends start-up
            end_start_up()
        HydraConfig.instance().set_config(config)  # tracking.uri interpolates ${hydra:runtime.cwd}
        tracking = config.tracking
        try:
            check_launcher(str(config.hydra.launcher._target_))
            if is_search(config.hydra.sweeper):  # its storage and study, before anything is written
                from glove_exp.app.search import check_search

                check_search(config)
            store = Store.open(str(tracking.uri), str(tracking.experiment), str(config.embeddings.cache_dir))
        except (GloveExpError, HydraException) as err:
            fail(str(err))
        overrides = task_overrides(config.hydra)
        tags = {"sweep_id": str(config.hydra.sweep.dir), "hydra_overrides": " ".join(overrides)}
        name = parent_name(swept_keys(config), datetime.now())
        run_id = open_parent(store, sweep_key(store.experiment_id, overrides), name, tags)
        write_parent(str(config.hydra.sweep.dir), store, run_id)
        self.parent = (store, run_id)
        atexit.register(self.end_killed)
        if threading.current_thread() is threading.main_thread():
            # Outside a run, glove-exp's handler ends the process at once (os._exit, no atexit): a signal
            # between jobs must unwind instead, so that the parent ends KILLED. Runs swap in their own.
            self.handlers = {signum: signal.signal(signum, interrupt) for signum in SIGNALS}

    def close(self) -> tuple[Any, str] | None:
        """Forget the parent (returned, if any), its atexit hook and the sweep's signal handlers."""
        parent, self.parent = self.parent, None
        atexit.unregister(self.end_killed)
        for signum, handler in self.handlers.items():
            signal.signal(signum, handler)
        self.handlers = {}
        return parent

    def end_killed(self) -> None:
        """At exit without :meth:`on_multirun_end`: the sweep was interrupted or crashed."""
        from mlflow.entities import RunStatus

        from glove_exp.app.parent import end_parent

        if parent := self.close():
            end_parent(*parent, RunStatus.KILLED)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.entities import RunStatus

        from glove_exp.app.parent import end_parent
        from glove_exp.app.sweep import found_before, read_jobs, succeeded, summarise
        from glove_exp.io.console import say
        from glove_exp.report.publish import log_sweep_summary

        jobs = read_jobs(config.hydra.sweep.dir)
        if parent := self.close():
            say(log_sweep_summary(*parent, found_before(jobs)))
            end_parent(*parent, RunStatus.FINISHED if succeeded(jobs) else RunStatus.FAILED)
        if jobs:
            say(summarise(jobs))
        if not succeeded(jobs):
            raise SystemExit(1)  # Hydra turns an Exception from a callback into a warning

"""The ``glove-exp`` console script: Hydra composes ``conf/``, each job runs the pipeline.

User mistakes (:class:`GloveExpError`) print one line and exit 2. In a sweep (``-m``) a failing
job is recorded and the others go on; the sweep ends with a summary and exit status 1.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import sys
import traceback
from pathlib import Path

import hydra
import hydra._internal.utils as hydra_utils
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from glove_exp import sweep
from glove_exp.config import check_paths, register, to_config
from glove_exp.errors import GloveExpError

log = logging.getLogger("glove_exp")
_PACKAGE_DIR = Path(__file__).resolve().parent
# conf/ lies inside the package in a wheel (pyproject.toml maps it there), beside it in a checkout
CONF_DIR = _PACKAGE_DIR / "conf" if (_PACKAGE_DIR / "conf").is_dir() else _PACKAGE_DIR.parent / "conf"
register()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def train(cfg: DictConfig) -> float:
    """Hydra task: returns the validation accuracy, the objective for sweepers such as Optuna."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = tuple(hydra_cfg.overrides.task)
    outcome = {"num": hydra_cfg.job.num if multirun else None, "overrides": list(overrides)}
    previous_run = _last_run_id()
    try:
        config = to_config(cfg)
        check_paths(config)
        from glove_exp.pipeline import JobInfo, run  # after validation: bad configs fail before heavy imports

        job = JobInfo(hydra_cfg.job.name, outcome["num"], hydra_cfg.sweep.dir if multirun else None, overrides)
        value = run(config, job, progress=sys.stderr.isatty())
        outcome.update(status="FINISHED", val_accuracy=value, run_id=_new_run_id(previous_run))
        return value
    except GloveExpError as err:
        outcome.update(status="FAILED", error=str(err), run_id=_new_run_id(previous_run))
        if not multirun:
            print(f"glove-exp: error: {err}", file=sys.stderr)
            sys.exit(2)
        log.error("%s", err)  # the job's log; the sweep summary repeats it
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the MLflow run ended KILLED; stop the sweep too
        outcome.update(status="KILLED", error="interrupted", run_id=_new_run_id(previous_run))
        raise
    except Exception as err:  # a bug: keep the traceback, in the job's log for sweeps
        if not multirun:
            raise
        log.error("job failed:\n%s", traceback.format_exc())
        outcome.update(status="FAILED", error=f"{type(err).__name__}: {err}", run_id=_new_run_id(previous_run))
    finally:
        if multirun:
            sweep.record_job(hydra_cfg.sweep.dir, outcome)
    return math.nan


def compact_hydra_error(err: BaseException) -> str:
    """Hydra's multi-line composition errors (unknown group option, bad override) as one line."""
    text = re.split(r"\n(?:Config search path|Search path):", str(err))[0]
    text, _, options = text.partition("Available options in")
    message = "; ".join(line.strip().rstrip(".") for line in text.splitlines() if line.strip())
    if options:
        group, _, names = options.partition(":")
        message += f"; available options in {group.strip()}: {', '.join(names.split())}"
    if isinstance(err.__cause__, OmegaConfBaseException):
        cause = str(err.__cause__).strip()
        message += f": {cause.splitlines()[0]}" if cause else ""
    return message or type(err).__name__


_hydra_run_and_report = hydra_utils.run_and_report


def _run_and_report(func):  # noqa: ANN001, ANN202 (Hydra's signature)
    """Hydra's error printer, except that config composition errors print one line and exit 2."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return _hydra_run_and_report(func)

    def compact():  # noqa: ANN202
        try:
            return func()
        except CompactHydraException as err:
            print(f"glove-exp: error: {compact_hydra_error(err)}", file=sys.stderr)
            sys.exit(2)

    return _hydra_run_and_report(compact)


def _last_run_id() -> str | None:
    tracking = sys.modules.get("glove_exp.tracking")  # not imported yet: no run started, stay fast
    return tracking.started_runs[-1] if tracking and tracking.started_runs else None


def _new_run_id(previous: str | None) -> str | None:
    """The run this job started, if it got that far (jobs may share one process)."""
    current = _last_run_id()
    return current if current != previous else None


def main() -> None:
    hydra_utils.run_and_report = _run_and_report  # _run_hydra looks it up in its module at call time
    try:
        train()
    except KeyboardInterrupt as err:  # tracking turns SIGTERM into KeyboardInterrupt("signal 15")
        signum = int(str(err).removeprefix("signal ")) if str(err).startswith("signal ") else signal.SIGINT
        print(f"glove-exp: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        sys.exit(128 + signum)
    if sweep.failed_jobs:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""The ``glove-exp`` console script: Hydra composes ``conf/``, each job runs the pipeline.

User mistakes (:class:`GloveExpError`) print one line and exit 2. In a sweep (``-m``) a failing
job is recorded and the others go on; the sweep ends with a summary and exit status 1.
"""

from __future__ import annotations

import logging
import math
import sys
import traceback
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from glove_exp import sweep
from glove_exp.config import register, to_config
from glove_exp.errors import GloveExpError

log = logging.getLogger("glove_exp")
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
register()
# conf/hydra/launcher/{joblib,submitit_*}.yaml share their names with the plugins' schemas on
# purpose (so they are validated against them); Hydra warns about that pairing on every run.
warnings.filterwarnings("ignore", message=".*is validated against ConfigStore schema with the same name", category=UserWarning)


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
        from glove_exp.pipeline import JobInfo, run  # after validation: bad configs fail before heavy imports

        job = JobInfo(hydra_cfg.job.name, outcome["num"], hydra_cfg.sweep.dir if multirun else None, overrides)
        value = run(config, job, progress=sys.stderr.isatty())
        outcome.update(status="FINISHED", val_accuracy=value, run_id=_new_run_id(previous_run))
        return value
    except GloveExpError as err:
        log.error("%s", err)
        outcome.update(status="FAILED", error=str(err), run_id=_new_run_id(previous_run))
        if not multirun:
            print(f"glove-exp: error: {err}", file=sys.stderr)
            sys.exit(2)
    except Exception as err:  # a bug: keep the traceback, in the job's log for sweeps
        if not multirun:
            raise
        log.error("job failed:\n%s", traceback.format_exc())
        outcome.update(status="FAILED", error=f"{type(err).__name__}: {err}", run_id=_new_run_id(previous_run))
    finally:
        if multirun:
            sweep.record_job(hydra_cfg.sweep.dir, outcome)
    return math.nan


def _last_run_id() -> str | None:
    tracking = sys.modules.get("glove_exp.tracking")  # not imported yet: no run started, stay fast
    return tracking.started_runs[-1] if tracking and tracking.started_runs else None


def _new_run_id(previous: str | None) -> str | None:
    """The run this job started, if it got that far (jobs may share one process)."""
    current = _last_run_id()
    return current if current != previous else None


def main() -> None:
    train()
    if sweep.failed_jobs:
        sys.exit(1)


if __name__ == "__main__":
    main()

"""glove-exp's launcher (``hydra/launcher=glove_exp``, the default): Hydra's basic launcher, jobs one at a
time in this process, except that the jobs of a batch that differ only in ``trainer.seed``,
``optimizer.lr``, ``optimizer.weight_decay`` or ``model.dropout`` train first, as one vmapped program,
and then each evaluates, explains and logs as its own job."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict

from glove_exp.app.identity import program_key
from glove_exp.app.schema import Config, to_config
from glove_exp.app.session import Session
from glove_exp.core.errors import GloveExpError

log = logging.getLogger(__name__)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Hydra's ``Launcher.launch``: every job's ``JobReturn``, in job order. The task function carries
    the process's :class:`Session` (glove-exp's own) or not (another app: no groups)."""
    setup_globals()
    hydra = launcher.config.hydra
    configure_log(hydra.hydra_logging, hydra.verbose)
    Path(str(hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    log.info(f"Launching {len(job_overrides)} jobs locally")
    jobs = {idx: job_config(launcher, idx, overrides) for idx, overrides in enumerate(job_overrides, initial_job_idx)}
    session: Session | None = getattr(launcher.task_function, "session", None)
    grouping = session is not None and launcher.options.get("vmap", True)
    returns = {}
    for group in program_groups(jobs) if grouping else [[(idx, None)] for idx in jobs]:
        if len(group) > 1:
            console_logging(jobs[group[0][0]])  # as quiet, or as verbose, as the jobs will be
            session.train_group([config for _, config in group], launcher.options.get("max_group_size"))
            configure_log(hydra.hydra_logging, hydra.verbose)
        for idx, _ in group:
            log.info(f"\t#{idx} : {' '.join(filter_overrides(job_overrides[idx - initial_job_idx]))}")
            returns[idx] = run_job(
                hydra_context=launcher.hydra_context, task_function=launcher.task_function, config=jobs[idx],
                job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir",
            )  # fmt: skip
            configure_log(hydra.hydra_logging, hydra.verbose)
    return [returns[idx] for idx in sorted(returns)]


def job_config(launcher: Any, idx: int, overrides: Sequence[str]) -> DictConfig:
    config = launcher.hydra_context.config_loader.take(launcher.config, overrides)  # composed once per job
    with open_dict(config):
        config.hydra.job.id = idx
        config.hydra.job.num = idx
    return config


def console_logging(job: DictConfig) -> None:
    """A job's logging config without its file handlers (no job folder exists yet)."""
    settings = OmegaConf.to_container(job.hydra.job_logging, resolve=False) if job.hydra.job_logging else None
    handlers = (settings or {}).get("handlers") or {}
    files = {name for name, handler in handlers.items() if "filename" in (handler or {})}
    if not files:  # hydra/job_logging=none or disabled: as it is
        configure_log(job.hydra.job_logging, job.hydra.verbose)
        return
    settings["handlers"] = {name: handler for name, handler in handlers.items() if name not in files}
    for logger in [settings.get("root") or {}, *(settings.get("loggers") or {}).values()]:
        logger["handlers"] = [name for name in logger.get("handlers") or [] if name not in files]
    configure_log(OmegaConf.create(settings), job.hydra.verbose)


def program_groups(jobs: dict[int, DictConfig]) -> list[list[tuple[int, Config | None]]]:
    """The jobs with their validated configs, grouped by :func:`~glove_exp.app.identity.program_key` in
    order of each group's first job; a job whose config is invalid is a group of its own (its job
    reports the error)."""
    groups: dict[str, list[tuple[int, Config | None]]] = {}
    for idx, job in jobs.items():
        task = copy.deepcopy(job)
        with open_dict(task):
            del task["hydra"]
        try:
            config = to_config(task)
        except GloveExpError:
            groups[f"invalid {idx}"] = [(idx, None)]
            continue
        groups.setdefault(program_key(config), []).append((idx, config))
    return list(groups.values())

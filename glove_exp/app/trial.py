"""A search job's side of its Optuna trial: the sweeper (``glove_exp.app.search``) names the trial in the
job's environment; the job reports its validation accuracy per epoch and stops once the pruner says so."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from hydra.utils import instantiate

from glove_exp.app.identity import RunPruned
from glove_exp.core.train import EpochMetrics

TRIAL_ENV = "GLOVE_EXP_TRIAL"  # the trial number, set per job through hydra.job.env_set
SEED_INDEX_ENV = "GLOVE_EXP_TRIAL_SEED"  # which of the trial's seeds: 0 reports, the others follow
PRUNED_ATTR = "glove_exp.pruned"  # a trial user attribute: the reporting job was pruned


def trial_number() -> int | None:
    """The job's trial number, while Hydra applies the job's ``env_set``; None outside a search."""
    number = os.environ.get(TRIAL_ENV)
    return None if number is None else int(number)


def open_storage(url: str) -> optuna.storages.RDBStorage:
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "Using an existing study" lines per job
    return optuna.storages.RDBStorage(url)


@dataclass(frozen=True)
class TrialReporter:
    """The ``on_epoch`` callback of one search job: the first seed's job reports ``val/accuracy`` and asks
    the pruner; every job raises :class:`RunPruned` once the trial is pruned."""

    storage: optuna.storages.BaseStorage
    study: optuna.Study
    pruner: optuna.pruners.BasePruner
    trial_id: int
    reports: bool

    def __call__(self, metrics: EpochMetrics) -> None:
        if self.reports and metrics.val_accuracy is not None:
            self.storage.set_trial_intermediate_value(self.trial_id, metrics.epoch, metrics.val_accuracy)
            if self.pruner.prune(self.study, self.storage.get_trial(self.trial_id)):
                self.storage.set_trial_user_attr(self.trial_id, PRUNED_ATTR, True)
        if self.storage.get_trial_user_attrs(self.trial_id).get(PRUNED_ATTR):
            raise RunPruned(f"trial pruned at epoch {metrics.epoch}")


def trial_reporter(sweeper: Any) -> Callable[[EpochMetrics], None]:
    """The reporter of the job's trial, from the study that ``sweeper`` (``HydraConfig.get().sweeper``,
    its storage and study name filled in by the sweeper) names."""
    storage = open_storage(sweeper.storage)
    pruner = instantiate(sweeper.pruner) if sweeper.pruner else optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=sweeper.study_name, storage=storage, pruner=pruner)
    study_id = storage.get_study_id_from_name(sweeper.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial_number())
    reports = int(os.environ.get(SEED_INDEX_ENV, "0")) == 0
    return TrialReporter(storage, study, pruner, trial_id, reports)

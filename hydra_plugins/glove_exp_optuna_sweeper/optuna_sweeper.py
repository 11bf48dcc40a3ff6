"""The Hydra side of the Optuna sweeper: its config in Hydra's ConfigStore and the ``Sweeper`` class.
Hydra imports every plugin on every start, so this module imports neither Optuna nor glove_exp's app.
No ``from __future__ import annotations``: Hydra's plugin scan runs the module outside ``sys.modules``,
where ``dataclass`` cannot resolve string annotations."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class GloveExpOptunaSweeperConf:
    """``hydra.sweeper``; conf/hparams_search/optuna.yaml sets the search space and the sampler's seed."""

    _target_: str = "hydra_plugins.glove_exp_optuna_sweeper.optuna_sweeper.GloveExpOptunaSweeper"
    _recursive_: bool = False  # the search instantiates the sampler and the pruner itself
    direction: str = "maximize"  # or minimize
    study_name: str | None = None  # default: tracking.experiment
    storage: str | None = None  # an Optuna RDB URL; default: sqlite:///<the MLflow SQLite store's folder>/optuna.db
    n_trials: int = 20  # COMPLETE and PRUNED trials in the study, counting earlier sweeps'
    n_jobs: int = 1  # trials per batch (each launches hparams_search.seeds jobs)
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None})
    pruner: Any = field(default_factory=lambda: {"_target_": "optuna.pruners.MedianPruner"})  # null: none
    params: dict[str, str] = field(default_factory=dict)  # key: choice(...), range(...), interval(...), tag(log, ...)


ConfigStore.instance().store(
    group="hydra/sweeper", name="glove_exp_optuna", node=GloveExpOptunaSweeperConf, provider="glove_exp"
)


class GloveExpOptunaSweeper(Sweeper):
    """Hydra's entry point; ``glove_exp.app.search.run_search`` does the search."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: Sequence[str]) -> None:
        from glove_exp.app.search import run_search

        run_search(self.options, self.config, self.launcher, arguments)

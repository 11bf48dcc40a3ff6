"""The Hydra side of glove-exp's launcher: its config in Hydra's ConfigStore and the ``Launcher`` class.
Hydra imports every plugin on every start, so this module imports neither JAX nor glove_exp's app.
No ``from __future__ import annotations``: Hydra's plugin scan runs the module outside ``sys.modules``,
where ``dataclass`` cannot resolve string annotations."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class GloveExpLauncherConf:
    """``hydra.launcher``: jobs one at a time in this process, as Hydra's basic launcher runs them, but
    the jobs of a batch that differ only in ``trainer.seed``, ``optimizer.lr``, ``optimizer.weight_decay``
    or ``model.dropout`` train as one vmapped program first."""

    _target_: str = "hydra_plugins.glove_exp_launcher.launcher.GloveExpLauncher"
    vmap: bool = True  # false: train every job on its own
    max_group_size: int | None = None  # members per program; default: as many as memory allows


ConfigStore.instance().store(group="hydra/launcher", name="glove_exp", node=GloveExpLauncherConf, provider="glove_exp")


class GloveExpLauncher(Launcher):
    """Hydra's entry point; ``glove_exp.app.launch.launch`` runs the jobs."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from glove_exp.app.launch import launch

        return launch(self, job_overrides, initial_job_idx)

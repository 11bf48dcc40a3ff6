"""The Hydra side of glove-exp's launcher: its config in Hydra's ConfigStore and the ``Launcher`` class.
Hydra imports every plugin on every start, so this module imports neither JAX nor glove_exp's app.
No ``from __future__ import annotations``: Hydra's plugin scan runs the module outside ``sys.modules``,
where ``dataclass`` cannot resolve string annotations."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_loader import ConfigLoader
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


class ComposedOnce(ConfigLoader):
    """Hydra's config loader, keeping each job config that the sweeper composes to check a batch
    (``Sweeper.validate_batch_is_legal``, which "repeats work the launcher will do") for this launcher,
    which runs the jobs in this process: :meth:`take` hands it over, so a job is composed once."""

    def __init__(self, loader: ConfigLoader) -> None:
        self.loader = loader
        self.kept: dict[tuple[int, tuple[str, ...]], DictConfig] = {}

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        config = self.loader.load_sweep_config(master_config, sweep_overrides)
        self.kept[(id(master_config), tuple(sweep_overrides))] = config
        return config

    def take(self, master_config: DictConfig, sweep_overrides: Sequence[str]) -> DictConfig:
        """The job's config: the one the sweeper composed, else composed now."""
        kept = self.kept.pop((id(master_config), tuple(sweep_overrides)), None)
        return kept if kept is not None else self.loader.load_sweep_config(master_config, list(sweep_overrides))

    def load_configuration(self, *args: Any, **kwargs: Any) -> DictConfig:
        return self.loader.load_configuration(*args, **kwargs)

    def get_search_path(self) -> Any:
        return self.loader.get_search_path()

    def get_sources(self) -> Any:
        return self.loader.get_sources()

    def list_groups(self, parent_name: str) -> Any:
        return self.loader.list_groups(parent_name)

    def get_group_options(self, *args: Any, **kwargs: Any) -> Any:
        return self.loader.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args: Any, **kwargs: Any) -> Any:
        return self.loader.compute_defaults_list(*args, **kwargs)


class GloveExpLauncher(Launcher):
    """Hydra's entry point; ``glove_exp.app.launch.launch`` runs the jobs."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """The sweeper shares ``hydra_context``: its batch checks now keep their configs for :meth:`launch`."""
        if not isinstance(hydra_context.config_loader, ComposedOnce):
            hydra_context.config_loader = ComposedOnce(hydra_context.config_loader)
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from glove_exp.app.launch import launch

        return launch(self, job_overrides, initial_job_idx)

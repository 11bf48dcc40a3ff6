"""The Hydra side of glove-exp's launcher: its config in Hydra's ConfigStore and the ``Launcher`` class.
Hydra imports every plugin on every start, so this module imports neither JAX nor glove_exp's app.
No ``from __future__ import annotations``: Hydra's plugin scan runs the module outside ``sys.modules``,
where ``dataclass`` cannot resolve string annotations."""

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


@dataclass
class GloveExpLauncherConf:
    """``hydra.launcher``: jobs one at a time in this process, as Hydra's basic launcher runs them, but
    the jobs of a batch that differ only in ``trainer.seed``, ``optimizer.lr``, ``optimizer.weight_decay``
    or ``model.dropout`` train as one vmapped program first."""

    _target_: str = "hydra_plugins.glove_exp_launcher.launcher.GloveExpLauncher"
    vmap: bool = True  # false: train every job on its own
    max_group_size: int | None = None  # members per program; default: as many as memory allows


ConfigStore.instance().store(group="hydra/launcher", name="glove_exp", node=GloveExpLauncherConf, provider="glove_exp")


SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class Composed:
    """A job config as Hydra composed it, with the master config and the overrides it came from."""

    master: DictConfig
    overrides: list[Override]
    config: DictConfig


class ComposedOnce(ConfigLoader):
    """Hydra's config loader, keeping each job config that the sweeper composes to check a batch
    (``Sweeper.validate_batch_is_legal``, which "repeats work the launcher will do") for this launcher,
    which runs the jobs in this process: :meth:`take` hands it over, so a job is composed once.

    A job whose overrides differ from those of the last job Hydra composed only in values (``key=value``
    where ``key`` is no config group and not ``hydra.*``, and both values are scalars) is that job's
    config with the new values set as Hydra sets an override (``OmegaConf.update``): 7 ms against Hydra's
    100 ms on 2 cores, for each job of a sweep over seeds and settings. Anything else, and any error, is
    composed by Hydra."""

    def __init__(self, loader: ConfigLoader) -> None:
        self.loader = loader
        self.kept: dict[tuple[int, tuple[str, ...]], DictConfig] = {}
        self.last: Composed | None = None
        self.groups: dict[str, bool] = {}

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        config = self.compose(master_config, sweep_overrides)
        self.kept[(id(master_config), tuple(sweep_overrides))] = config
        return config

    def take(self, master_config: DictConfig, sweep_overrides: Sequence[str]) -> DictConfig:
        """The job's config: the one the sweeper composed, else composed now."""
        kept = self.kept.pop((id(master_config), tuple(sweep_overrides)), None)
        return kept if kept is not None else self.compose(master_config, list(sweep_overrides))

    def compose(self, master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        try:
            overrides = OverridesParser.create().parse_overrides(sweep_overrides)
            derived = self.derived(master_config, overrides)
        except Exception:  # Hydra composes the job, and reports what is wrong with it
            overrides, derived = None, None
        if derived is not None:
            return derived
        config = self.loader.load_sweep_config(master_config, sweep_overrides)
        if overrides is not None:
            # as Hydra composed it: the job's run may change its config (hydra.runtime.output_dir)
            self.last = Composed(master_config, overrides, copy.deepcopy(config))
        return config

    def derived(self, master_config: DictConfig, overrides: list[Override]) -> DictConfig | None:
        """The job's config from the last one Hydra composed, or None where only Hydra can compose it."""
        last = self.last
        if last is None or last.master is not master_config or len(last.overrides) != len(overrides):
            return None
        changed = [(old, new) for old, new in zip(last.overrides, overrides) if old.input_line != new.input_line]
        if not all(self.value_change(last.config, old, new) for old, new in changed):
            return None
        config = copy.deepcopy(last.config)
        for _, new in changed:
            OmegaConf.update(config, new.key_or_group, new.value(), merge=True)
        task = [override for override in overrides if not override.is_hydra_override()]
        config.hydra.overrides.task = [override.input_line for override in task]
        config.hydra.job.override_dirname = override_dirname(task, config.hydra.job.config.override_dirname)
        OmegaConf.copy_cache(from_config=master_config, to_config=config)
        return config

    def value_change(self, config: DictConfig, old: Override, new: Override) -> bool:
        """Whether ``new`` only sets the value that ``old`` set, with no config group or sweep involved."""
        key = new.key_or_group
        plain = all(
            o.type == OverrideType.CHANGE and o.package is None and not o.is_sweep_override() and not o.is_hydra_override()
            for o in (old, new)
        )  # fmt: skip
        return (
            plain and old.key_or_group == key and not self.is_group(config, key)
            and isinstance(new.value(), SCALARS) and isinstance(OmegaConf.select(config, key), SCALARS)
        )  # fmt: skip

    def is_group(self, config: DictConfig, key: str) -> bool:
        if key not in self.groups:
            self.groups[key] = (
                "/" in key or key in config.hydra.runtime.choices or bool(self.loader.get_group_options(key))
            )
        return self.groups[key]

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


def override_dirname(task: list[Override], settings: DictConfig) -> str:
    """``hydra.job.override_dirname`` as Hydra makes it from the task overrides and
    ``hydra.job.config.override_dirname``."""
    lines = sorted(o.input_line for o in task if o.key_or_group not in settings.exclude_keys)
    return re.sub(pattern="[=]", repl=settings.kv_sep, string=settings.item_sep.join(lines))


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

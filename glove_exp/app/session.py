"""What the jobs of one ``glove-exp`` process share: the signal handling, the tokens and features of
earlier jobs, and the models that trained with their group (the jobs of a batch that share an
``identity.program_key``) before their jobs run."""

from __future__ import annotations

import gc
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from glove_exp.app.interrupts import Interrupts
from glove_exp.app.shared import SharedWork
from glove_exp.core.errors import GloveExpError

if TYPE_CHECKING:  # the CLI creates a session before it imports JAX
    from glove_exp.app.group import Trained
    from glove_exp.app.schema import Config

log = logging.getLogger(__name__)

# The launchers that run a sweep's jobs in this process (glove-exp's own and Hydra's basic one)
IN_PROCESS_LAUNCHERS = ("hydra_plugins.glove_exp_launcher.", "hydra._internal.core_plugins.basic_launcher.")
SLURM_LAUNCHER = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def pause_collector() -> None:
    """Start-up (imports, composition, the tracking store, the first job's imports) makes about 600,000
    objects that live as long as the process, and Python's collector walks all of them each time the
    heap has grown by a quarter: 8 to 10 passes, 0.8 s of a single run and 1.5 s of a 15-job sweep. So
    the collector waits until :func:`end_start_up`."""
    gc.disable()


def end_start_up() -> None:
    """After the first job of this process, or when a sweep's jobs run elsewhere: what start-up made is
    moved out of the collector's reach (``gc.freeze``; its few cycles of garbage, about 60,000 objects,
    stay) and collection resumes over what the jobs make."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def runs_jobs_here(launcher_target: str) -> bool:
    return launcher_target.startswith(IN_PROCESS_LAUNCHERS)


def check_launcher(launcher_target: str) -> None:
    """Refuse, before anything is written, a launcher whose cluster is not here (submitit's Slurm launcher
    raises a RuntimeError, and its traceback, once the sweep has started)."""
    if launcher_target == SLURM_LAUNCHER and shutil.which("srun") is None:
        raise GloveExpError(
            "hydra/launcher=submitit_slurm submits through Slurm, whose srun is not on PATH here: run the sweep "
            "on a Slurm login node, or use hydra/launcher=submitit_local"
        )


@dataclass
class Session:
    interrupts: Interrupts
    progress: bool = False
    shared: SharedWork = field(default_factory=SharedWork)
    trained: dict[str, Trained] = field(default_factory=dict)  # config_id -> its training
    swept: dict[str, tuple[str, ...]] = field(default_factory=dict)  # sweep dir -> the keys its sweep varies

    def train_group(self, configs: Sequence[Config], max_size: int | None = None) -> None:
        """Train the configs that have no FINISHED run as vmapped programs, for their jobs to log. A
        user error leaves them untrained: each job then runs alone and reports it."""
        from glove_exp.app.group import train_together

        try:
            self.trained.update(train_together(configs, self.progress, max_size, self.shared))
        except GloveExpError as err:
            log.info("the group trains job by job: %s", err)

    def take(self, config_id: str) -> Trained | None:
        """The training done for ``config_id`` with its group, if any (once)."""
        return self.trained.pop(config_id, None)

"""What the jobs of one ``glove-exp`` process share: the signal handling, the tokens and features of
earlier jobs, and the models that trained with their group (the jobs of a batch that share an
``identity.program_key``) before their jobs run."""

from __future__ import annotations

import logging
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

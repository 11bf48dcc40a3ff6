"""The configs of a sweep that differ only in their seed and scalar settings (``identity.program_key``)
train as vmapped programs, split where their shapes differ or memory would not hold them all."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from glove_exp.app.identity import ID_LENGTH, config_id
from glove_exp.app.resume import finished_run
from glove_exp.app.schema import Config
from glove_exp.app.shared import SharedWork
from glove_exp.app.stages import Prepared, StageTimer, fit_models, member, prepare
from glove_exp.app.store import Store
from glove_exp.core.fit import Failed, Member, member_bytes, programs, shares_data
from glove_exp.core.train import FitResult
from glove_exp.io.files import available_memory


@dataclass(frozen=True)
class Trained:
    """A member's training, done with its program before its job opens its run."""

    result: FitResult | Failed
    program: str  # the program's id (``glove_exp.vmap_group``), shared by its members
    size: int  # members in the program
    preparation: dict[str, float]  # seconds per stage of its preparation with the group (data .. features)

    @property
    def seconds(self) -> float:
        """This member's share of the program's compile and training time."""
        epochs = sum(m.epoch_time_s for m in self.result.history)
        return epochs + (self.result.compile_time_s if isinstance(self.result, FitResult) else 0.0)


def train_together(
    configs: Sequence[Config], progress: bool, max_size: int | None, shared: SharedWork | None = None
) -> dict[str, Trained]:
    """Each unfinished config's training (by ``config_id``); nothing for fewer than two."""
    first = configs[0]
    store = Store.reuse(first.tracking.uri, first.tracking.experiment, first.embeddings.cache_dir, shared)
    todo = [c for c in configs if not (c.tracking.skip_finished and finished_run(store, config_id(c)))]
    if len(todo) < 2:
        return {}
    timers = [StageTimer() for _ in todo]
    prepared = [prepare(config, timer, progress, shared) for config, timer in zip(todo, timers)]
    members = [member(p, c) for p, c in zip(prepared, todo)]
    trained: dict[str, Trained] = {}
    for program in programs(members, min(max_size or len(members), fitting(prepared[0], todo[0], members))):
        chosen = [todo[i] for i in program]
        results = fit_models([prepared[i] for i in program], chosen, [members[i] for i in program], progress)
        name = program_id([config_id(c) for c in chosen])
        trained.update(
            {config_id(todo[i]): Trained(r, name, len(program), timers[i].seconds) for i, r in zip(program, results)}
        )
    return trained


def fitting(prepared: Prepared, config: Config, members: Sequence[Member]) -> int:
    """How many members memory holds in one program (at least one), half of what is available."""
    transformed = prepared.model.head if prepared.inputs.precomputed else prepared.model.forward
    batch = min(config.trainer.batch_size, len(prepared.splits.train))
    each = member_bytes(transformed, members[0], batch, shares_data(members))
    return max(1, available_memory() // 2 // max(each, 1))


def program_id(config_ids: Sequence[str]) -> str:
    return hashlib.sha256(",".join(sorted(config_ids)).encode()).hexdigest()[:ID_LENGTH]

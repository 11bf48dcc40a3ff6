"""What a run is, as tags every store can search: ``glove_exp.config_id`` hashes the resolved settings
that change results (dataset, embeddings, model, optimizer, trainer, the seed included), and
``glove_exp.group_id`` the same without the seed, so that the seeds of one config group."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import fields, is_dataclass
from enum import Enum
from typing import Any

from glove_exp.app.schema import Config, flatten

CONFIG_TAG = "glove_exp.config_id"
GROUP_TAG = "glove_exp.group_id"
ROLE_TAG = "glove_exp.role"  # "sweep" on a sweep's parent run; training runs have none
SWEEP_KEY_TAG = "glove_exp.sweep_key"  # on a parent: what a resumed sweep looks it up by
SWEEP_DIRS_TAG = "glove_exp.sweep_dirs"  # on a parent: the sweep folders it ran in, oldest first (a JSON list)
# on runs whose models trained as one vmapped program: the program's id (shared by its members) and its size
VMAP_TAG, VMAP_SIZE_TAG = "glove_exp.vmap_group", "glove_exp.vmap_size"
PRUNED_TAG = "glove_exp.pruned"  # "true" on a search's run that its trial's pruner stopped (ended KILLED)
RESULT_GROUPS = ("dataset", "embeddings", "model", "optimizer", "trainer")
# Where files are, not what they hold: the same data or vectors from another folder are the same config.
NOT_RESULTS = frozenset({"embeddings.cache_dir"})
SEED_KEY = "trainer.seed"
# what the members of one vmapped program may differ in (glove_exp.core.train.Hyper, and the seed)
PER_MEMBER = frozenset({SEED_KEY, "optimizer.lr", "optimizer.weight_decay", "model.dropout"})
ID_LENGTH = 12


class RunPruned(Exception):
    """Raised by a search job's epoch callback when its trial is pruned: the run ends KILLED with
    :data:`PRUNED_TAG`, and the job counts as pruned, not failed."""


def result_settings(config: Config) -> dict[str, Any]:
    """The flattened settings that change a run's results, paths made absolute."""
    flat = flatten(plain(config))
    settings = {k: v for k, v in flat.items() if k.split(".", 1)[0] in RESULT_GROUPS and k not in NOT_RESULTS}
    for key in ("dataset.data_dir", "embeddings.path"):
        if settings.get(key):
            settings[key] = os.path.abspath(os.path.expanduser(str(settings[key])))
    return settings


def plain(value: Any) -> Any:
    """A config as OmegaConf's ``to_container(..., enum_to_str=True)`` gives it (enums by name, tuples as
    lists), without building an OmegaConf node first: 30x faster, and jobs ask for their ids often."""
    if is_dataclass(value):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def digest(settings: dict[str, Any]) -> str:
    text = json.dumps(settings, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:ID_LENGTH]


def config_id(config: Config) -> str:
    return digest(result_settings(config))


def group_id(config: Config) -> str:
    return digest({k: v for k, v in result_settings(config).items() if k != SEED_KEY})


def program_key(config: Config) -> str:
    """What configs must share to train as one vmapped program: every result setting but :data:`PER_MEMBER`,
    and whether the model has dropout at all (its dropout draws a key before the layers draw theirs:
    a rate of 0 and one above initialise differently)."""
    settings = result_settings(config)
    shared = {k: v for k, v in settings.items() if k not in PER_MEMBER}
    return digest({**shared, "model.dropout > 0": bool(settings["model.dropout"])})


def identity_tags(config: Config) -> dict[str, str]:
    return {CONFIG_TAG: config_id(config), GROUP_TAG: group_id(config)}

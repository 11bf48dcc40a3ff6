"""Config identity: glove_exp.config_id names a config with its seed, glove_exp.group_id without it."""

from __future__ import annotations

import pytest

from glove_exp.app.identity import config_id, group_id, identity_tags, program_key
from tests.conftest import compose_config

BASE = (
    "tracking.uri=sqlite:////store/mlflow.db",
    "dataset.data_dir=/data/ag",
    "embeddings=local",
    "embeddings.path=/vectors/glove.txt",
    "embeddings.dim=8",
)


def ids(*overrides: str) -> tuple[str, str]:
    config = compose_config(*BASE, *overrides)
    return config_id(config), group_id(config)


def test_ids_are_short_stable_hex():
    first, again = ids(), ids()
    assert first == again
    assert all(len(value) == 12 and int(value, 16) >= 0 for value in first)


def test_seeds_share_the_group_but_not_the_config():
    (config_0, group_0), (config_1, group_1) = ids("trainer.seed=0"), ids("trainer.seed=1")
    assert group_0 == group_1 and config_0 != config_1


@pytest.mark.parametrize(
    "override",
    ["optimizer.lr=0.002", "model.pooling=max", "trainer.max_tokens=20", "dataset.val_fraction=0.2",
     "embeddings.dim=9", "trainer.epochs=2", "dataset.data_dir=/data/other"],
)  # fmt: skip
def test_a_changed_result_setting_is_a_new_config_and_group(override):
    config, group = ids(override)
    base_config, base_group = ids()
    assert config != base_config and group != base_group


@pytest.mark.parametrize(
    "override",
    ["tracking.experiment=other", "tracking.uri=sqlite:////elsewhere/mlflow.db", "tracking.run_name=x",
     "embeddings.cache_dir=/tmp/cache", "tracking.log_model=never"],
)  # fmt: skip
def test_tracking_and_paths_of_caches_leave_the_identity_alone(override):
    assert ids(override) == ids()


def test_a_relative_data_dir_is_the_same_as_its_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ids("dataset.data_dir=data") == ids(f"dataset.data_dir={tmp_path / 'data'}")


def test_a_program_joins_seeds_and_scalar_settings_but_not_dropout_with_none():
    def key(*overrides: str) -> str:
        return program_key(compose_config(*BASE, "model.dropout=0.1", *overrides))

    base = key()
    assert key("trainer.seed=3", "optimizer.lr=0.01", "optimizer.weight_decay=0.001", "model.dropout=0.5") == base
    assert key("model.dropout=0") != base  # no dropout initialises differently
    assert key("model.pooling=max") != base and key("optimizer.name=sgd") != base and key("trainer.epochs=2") != base


def test_tags():
    config = compose_config(*BASE)
    assert identity_tags(config) == {"glove_exp.config_id": config_id(config), "glove_exp.group_id": group_id(config)}


@pytest.mark.parametrize(
    "overrides",
    [(), ("experiment=seed_tutorial",), ("experiment=swem", "model.hidden_sizes=[8,4]"), ("experiment=token_swem",),
     ("optimizer=adamw", "optimizer.schedule=warmup_cosine", "trainer.feature_dtype=bfloat16", "model.norm=batch")],
)  # fmt: skip
def test_plain_settings_are_omegaconfs(overrides):
    """The ids hash what OmegaConf's container of the config holds: ids of earlier runs stay the same."""
    from omegaconf import OmegaConf

    from glove_exp.app.identity import plain
    from glove_exp.app.schema import flatten

    config = compose_config(*BASE, *overrides)
    assert flatten(plain(config)) == flatten(OmegaConf.structured(config))

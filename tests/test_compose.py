"""A sweep's job configs: those that differ only in values from the job Hydra composed before are
derived from it, and equal, to the last node and flag, what Hydra composes for each job."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import OmegaConf

import hydra_plugins.glove_exp_launcher.launcher  # noqa: F401 - hydra/launcher=glove_exp, as Hydra's plugin scan registers it
from glove_exp.app.schema import register
from hydra_plugins.glove_exp_launcher.launcher import ComposedOnce

CONF = Path(__file__).resolve().parent.parent / "conf"
register()


class Counting:
    """Hydra's loader, counting the job configs it composes."""

    def __init__(self, loader):
        self.loader, self.composed = loader, 0

    def load_sweep_config(self, master_config, sweep_overrides):
        self.composed += 1
        return self.loader.load_sweep_config(master_config, sweep_overrides)

    def get_group_options(self, *args, **kwargs):
        return self.loader.get_group_options(*args, **kwargs)


def as_hydra_and_derived(master_overrides: list[str], jobs: list[list[str]]):
    """Each job's config as Hydra composes it and as :class:`ComposedOnce` gives it, and how many of the
    latter Hydra composed."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", master_overrides, run_mode=RunMode.MULTIRUN)
        hydra = [loader.load_sweep_config(master, job) for job in jobs]
        counting = Counting(loader)
        once = ComposedOnce(counting)
        ours = [once.load_sweep_config(master, job) for job in jobs]
    return hydra, ours, counting.composed


def assert_same(hydra, ours) -> None:
    for expected, got in zip(hydra, ours, strict=True):
        assert OmegaConf.to_yaml(got) == OmegaConf.to_yaml(expected)
        assert OmegaConf.to_container(got) == OmegaConf.to_container(expected)
        assert OmegaConf.is_struct(got) and not OmegaConf.is_readonly(got.hydra)
        assert OmegaConf.get_type(got, "trainer") is OmegaConf.get_type(expected, "trainer")


def test_a_sweep_over_seeds_and_poolings_is_composed_once_and_equals_hydras():
    fixed = ["experiment=seed_tutorial", "dataset.data_dir=/data/ag"]
    jobs = [[*fixed, f"model.pooling={p}", f"trainer.seed={s}"] for p in ("flatten", "mean", "sum") for s in range(5)]
    hydra, ours, composed = as_hydra_and_derived(fixed, jobs)
    assert_same(hydra, ours)
    assert composed == 1
    assert [config.trainer.seed for config in ours] == [0, 1, 2, 3, 4] * 3
    assert (
        ours[7].hydra.job.override_dirname
        == "dataset.data_dir=/data/ag,experiment=seed_tutorial,model.pooling=mean,trainer.seed=2"
    )
    assert ours[7].hydra.overrides.task == jobs[7]


def test_values_of_every_kind_and_hydras_dirname_settings_are_set_as_hydra_sets_them():
    master = [
        "hydra.job.config.override_dirname.kv_sep=_", "hydra.job.config.override_dirname.item_sep=/",
        "hydra.job.config.override_dirname.exclude_keys=[trainer.seed]",
    ]  # fmt: skip
    values = [
        ("optimizer.lr=0.001", "optimizer.lr=3e-4"),
        ("trainer.seed=0", "trainer.seed=int(7)"),
        ("tracking.experiment=a", "tracking.experiment='b c, d'"),
        ("tracking.run_name=x", "tracking.run_name=${model.pooling}-${trainer.seed}"),
        ("trainer.shuffle=false", "trainer.shuffle=true"),
        ("model.dropout=0.0", "model.dropout=0.25"),
        ("model.hidden_sizes.0=64", "model.hidden_sizes.0=32"),  # an element of a list
    ]
    jobs = [[first for first, _ in values], [second for _, second in values]]
    hydra, ours, composed = as_hydra_and_derived(master, jobs)
    assert_same(hydra, ours)
    assert composed == 1
    assert ours[1].hydra.job.override_dirname.startswith(
        "model.dropout_0.25/model.hidden_sizes.0_32/optimizer.lr_3e-4/"
    )


@pytest.mark.parametrize(
    "jobs",
    [
        [["optimizer=adam", "trainer.seed=0"], ["optimizer=sgd", "trainer.seed=1"]],  # a config group
        [["optimizer=adam", "+trainer.note=1"], ["optimizer=adam", "+trainer.note=2"]],  # an added key
        [["hydra.job.chdir=false"], ["hydra.job.chdir=true"]],  # Hydra's own config
        [["optimizer.clip_norm=1.0"], ["optimizer.clip_norm=null"]],  # null
        [["model.hidden_sizes=[32]"], ["model.hidden_sizes=[64]"]],  # a list (Hydra merges containers)
        [["optimizer.clip_norm=null"], ["optimizer.clip_norm=1.0"]],  # over null, which may stand for a container
        [["trainer.seed=0"], ["trainer.seed=0", "trainer.epochs=2"]],  # another number of overrides
    ],
)
def test_groups_additions_hydra_settings_nulls_and_containers_are_composed_by_hydra(jobs):
    hydra, ours, composed = as_hydra_and_derived([], jobs)
    assert_same(hydra, ours)
    assert composed == 2


def test_a_value_hydra_refuses_is_refused_by_hydra():
    jobs = [["trainer.seed=0"], ["trainer.seed=abc"]]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", [], run_mode=RunMode.MULTIRUN)
        with pytest.raises(ConfigCompositionException) as hydras:
            loader.load_sweep_config(master, jobs[1])
        once = ComposedOnce(Counting(loader))
        once.load_sweep_config(master, jobs[0])
        with pytest.raises(ConfigCompositionException) as ours:
            once.load_sweep_config(master, jobs[1])
    assert str(ours.value) == str(hydras.value)

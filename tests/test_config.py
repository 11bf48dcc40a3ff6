"""Every config option composes and validates; bad values fail fast with the key in the message."""

from dataclasses import fields
from pathlib import Path
from typing import get_type_hints

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from glove_exp.app.schema import Config, flatten, register, to_config
from glove_exp.app.stages import spec_from_config
from glove_exp.core.errors import ConfigError
from glove_exp.core.models import Norm

CONF = Path(__file__).resolve().parent.parent / "conf"
URI = "tracking.uri=sqlite:////tmp/unused.db"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
SCHEMA_GROUPS = [f.name for f in fields(Config)]  # groups whose options fill one section of the schema
LAUNCHERS = {  # the plugins' own configs (conf/ has no copies)
    "basic": "BasicLauncher", "joblib": "JoblibLauncher", "submitit_local": "LocalLauncher", "submitit_slurm": "SlurmLauncher",
}  # fmt: skip
register()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_config(overrides: list[str], hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=hydra)


def test_default_config_is_ag_news_glove_6b_50d_mean(monkeypatch):
    monkeypatch.delenv("GLOVE_EXP_DATA_DIR", raising=False)
    config = to_config(compose_config([URI]))
    assert isinstance(config, Config)
    assert (config.dataset.name, config.embeddings.name, config.model.pooling.value) == (
        "ag_news",
        "glove_6b_50d",
        "mean",
    )
    assert config.dataset.data_dir is None and config.dataset.val_fraction == 0.1
    assert (config.optimizer.name.value, config.optimizer.lr, config.trainer.batch_size) == ("adam", 1e-3, 1024)


def test_data_dir_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("GLOVE_EXP_DATA_DIR", "/data/ag")
    assert to_config(compose_config([URI])).dataset.data_dir == "/data/ag"


def resolve_with_hydra(cfg):
    """Resolve like a job does, with ``${hydra:...}`` available."""
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(cfg)
    return OmegaConf.to_container(cfg.tracking, resolve=True)


def test_tracking_uri_defaults_to_an_absolute_sqlite_store_in_the_launch_dir(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = resolve_with_hydra(compose_config([], hydra=True))["uri"]
    assert uri == f"sqlite:///{Path.cwd()}/mlflow.db?timeout=10"  # SQLite's busy timeout for parallel jobs
    assert Path(uri.removeprefix("sqlite:///")).is_absolute()


def test_tracking_uri_honours_mlflow_env(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_with_hydra(compose_config([], hydra=True))["uri"] == "http://127.0.0.1:5000"


def test_cache_dir_comes_from_the_environment_for_every_vector_option(monkeypatch):
    monkeypatch.setenv("GLOVE_EXP_CACHE_DIR", "/cache/glove")
    assert to_config(compose_config([URI, "embeddings=glove_6b_100d"])).embeddings.cache_dir == "/cache/glove"
    monkeypatch.delenv("GLOVE_EXP_CACHE_DIR")
    assert to_config(compose_config([URI])).embeddings.cache_dir == "~/.cache/glove-exp"


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes_and_validates(group, option):
    extra = ["embeddings.path=/v.txt", "embeddings.dim=300"] if (group, option) == ("embeddings", "local") else []
    config = to_config(compose_config([f"{group}={option}", URI, *extra]))
    if group in ("dataset", "embeddings", "optimizer"):
        assert getattr(config, group).name == option


@pytest.mark.parametrize("group, option", [(g, o) for g in SCHEMA_GROUPS for o in options(g)])
def test_group_options_hold_only_what_differs_from_the_schema(group, option):
    """One source of defaults: a key an option repeats with the schema's value is dead weight
    that goes stale when the default changes (``name`` identifies the option)."""
    schema = OmegaConf.to_container(OmegaConf.structured(get_type_hints(Config)[group]), enum_to_str=True)
    values = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml") or OmegaConf.create())
    repeated = [key for key, value in values.items() if key != "name" and schema.get(key) == value]
    assert not repeated, f"{group}/{option}.yaml repeats schema defaults: {repeated}"


def test_environment_interpolations_appear_once():
    text = "".join(p.read_text() for p in CONF.rglob("*.yaml"))
    for variable in ("GLOVE_EXP_DATA_DIR", "GLOVE_EXP_CACHE_DIR"):
        assert text.count(f"oc.env:{variable}") == 1, variable
    assert "MLFLOW_TRACKING_URI" not in text.replace("# MLflow: MLFLOW_TRACKING_URI", "")  # the rule is in the schema


def test_the_tracking_uri_rule_is_the_reports_too(monkeypatch, tmp_path):
    from glove_exp.app.schema import default_tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = compose_config([])
    assert OmegaConf.to_container(cfg.tracking)["uri"] == "${glove_exp.tracking_uri:${hydra:runtime.cwd}}"
    assert OmegaConf.create({"uri": f"${{glove_exp.tracking_uri:{tmp_path}}}"}).uri == default_tracking_uri(tmp_path)
    assert default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path}/mlflow.db?timeout=10"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_seed_tutorial_pins_the_tutorial_and_sweep_overrides_win():
    config = to_config(compose_config(["experiment=seed_tutorial", "model.pooling=flatten", URI]))
    assert config.model.pooling.value == "flatten"
    assert (config.trainer.max_tokens, config.trainer.batch_size, config.trainer.epochs) == (50, 1024, 8)
    assert config.model.hidden_sizes == [128] and config.model.activation.value == "none"
    assert config.model.mask_padding is False and config.embeddings.trainable is False
    assert (config.optimizer.name.value, config.optimizer.lr) == ("adam", 1e-3)


def test_token_swem_is_a_token_layer_under_swems_head_with_dropout_in_the_head_only():
    m = to_config(compose_config(["experiment=token_swem", URI])).model
    assert (m.token_hidden_sizes, m.token_dropout, m.pooling.value, m.standardize) == ([256], 0.0, "mean_max", False)
    assert (m.hidden_sizes, m.activation.value, m.dropout, m.norm.value) == ([512, 256], "relu", 0.5, "none")


@pytest.mark.parametrize("option", options("hparams_search"))
def test_hparams_search_composes_with_a_fixed_seed(option):
    cfg = compose_config([f"hparams_search={option}", URI], hydra=True)
    assert cfg.hydra.sweeper.sampler.seed is not None
    assert "model.pooling" in cfg.hydra.sweeper.params


@pytest.mark.parametrize("option", LAUNCHERS)
def test_every_launcher_composes_from_its_plugin(option, recwarn):
    cfg = compose_config([f"hydra/launcher={option}", "hparams_search=optuna", URI], hydra=True)
    assert cfg.hydra.launcher._target_.endswith(f".{LAUNCHERS[option]}")
    assert not [w for w in recwarn if "ConfigStore schema" in str(w.message)]


@pytest.mark.parametrize("other", ["embeddings.trainable=true", "model.token_hidden_sizes=[8]"])
def test_standardize_needs_parameter_free_features(other):
    with pytest.raises(ConfigError, match=r"model.standardize=true needs parameter-free features"):
        to_config(compose_config(["model.standardize=true", other, URI]))


@pytest.mark.parametrize(
    "override, key",
    [
        ("trainer.max_tokens=0", "trainer.max_tokens"),
        ("trainer.batch_size=-1", "trainer.batch_size"),
        ("model.dropout=1.5", "model.dropout"),
        ("optimizer.lr=-1", "optimizer.lr"),
        ("dataset.val_fraction=1", "dataset.val_fraction"),
        ("model.hidden_sizes=[0]", "model.hidden_sizes"),
        ("embeddings.serving_words=-1", "embeddings.serving_words"),
        ("tracking.log_model=sometimes", "tracking.log_model"),
    ],
)
def test_out_of_range_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        to_config(compose_config([override, URI]))


@pytest.mark.parametrize(
    "override, key",
    [("optimizer.lr=inf", "optimizer.lr"), ("model.sif_a=inf", "model.sif_a"), ("optimizer.clip_norm=inf", "optimizer.clip_norm"),
     ("optimizer.lr=1e400", "optimizer.lr")],
)  # fmt: skip
def test_an_infinite_number_anywhere_is_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{key} must be a finite number, got inf$"):
        to_config(compose_config([override, URI]))


@pytest.mark.parametrize(
    "override",
    ["model.pooling=avg", "trainer.epochs=many", "model.activation=swish", "model.norm=foo", "trainer.unknown_key=1"],
)
def test_wrong_types_and_values_fail_while_composing(override):
    with pytest.raises(ConfigCompositionException):
        compose_config([override, URI])


def test_norm_defaults_to_none_and_reaches_the_model_spec():
    assert to_config(compose_config([URI])).model.norm == Norm.none
    for norm in ("batch", "layer"):
        config = to_config(compose_config([f"model.norm={norm}", URI]))
        assert config.model.norm == Norm(norm) and spec_from_config(config).norm == Norm(norm)


@pytest.mark.parametrize(
    "value, expected",
    [("best", "best"), ("always", "always"), ("never", "never"), ("true", "always"), ("false", "never")],
)
def test_log_model_takes_always_never_best_and_the_older_true_false(value, expected):
    assert to_config(compose_config([f"tracking.log_model={value}", URI])).tracking.log_model == expected


def test_the_vocabulary_adds_20000_frequent_words_by_default_and_null_adds_none():
    assert to_config(compose_config([URI])).embeddings.serving_words == 20_000
    assert to_config(compose_config(["embeddings.serving_words=null", URI])).embeddings.serving_words is None


def test_unknown_group_option_fails():
    with pytest.raises(MissingConfigException, match="glove_7b"):
        compose_config(["embeddings=glove_7b", URI])


@pytest.mark.parametrize("override,key", [("+foo=1", "foo"), ("+model.foo=1", "model.foo")])
def test_keys_added_with_plus_must_exist_in_the_schema(override, key):
    with pytest.raises(ConfigError, match=rf"unknown key {key}: glove-exp has no such setting"):
        to_config(compose_config([override, URI]))


def test_missing_required_value_names_the_key():
    with pytest.raises(ConfigError, match="embeddings.path"):
        to_config(compose_config(["embeddings=local", "embeddings.dim=50", URI]))


def test_flatten_gives_dotted_keys():
    flat = flatten(OmegaConf.create({"model": {"pooling": "mean", "hidden_sizes": [128]}, "x": 1}))
    assert flat == {"model.pooling": "mean", "model.hidden_sizes": [128], "x": 1}


def test_missing_dimension_names_the_key():
    with pytest.raises(ConfigError, match="missing value for embeddings.dim"):
        to_config(compose_config(["embeddings=local", "embeddings.path=/v.txt", URI]))


def test_missing_values_are_named_together():
    with pytest.raises(ConfigError, match="^missing values for embeddings.dim, embeddings.name: set them on the"):
        to_config(compose_config(["embeddings=local", "embeddings.name=???", "embeddings.path=/v.txt", URI]))


@pytest.mark.parametrize("seed", [-1, 2**32, 10**20])
def test_seed_outside_numpy_range_names_trainer_seed(seed):
    with pytest.raises(ConfigError, match=rf"^trainer.seed must be in \[0, 2\*\*32\), got {seed}$"):
        to_config(compose_config([f"trainer.seed={seed}", URI]))
    assert to_config(compose_config([f"trainer.seed={2**32 - 1}", URI])).trainer.seed == 2**32 - 1


def test_unset_environment_variable_names_the_key_and_the_variable(monkeypatch):
    monkeypatch.delenv("SURELY_UNSET_VAR", raising=False)
    with pytest.raises(ConfigError, match=r"SURELY_UNSET_VAR.* \(key: dataset.data_dir\)$") as caught:
        to_config(compose_config(["dataset.data_dir=${oc.env:SURELY_UNSET_VAR}", URI]))
    assert "\n" not in str(caught.value)

"""``conf/config.yaml`` lists ``base_config`` first, so Hydra type-checks every option and override while
it composes (``model.pooling=avg`` fails there, naming the allowed values). Range checks that types
cannot express live in ``__post_init__`` and run in :func:`to_config`, before any data is read."""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from glove_exp.core.choices import Activation, FeatureDtype, Init, Norm, OptimizerName, Pooling, Schedule, Weighting
from glove_exp.core.errors import ConfigError
from glove_exp.core.evaluate import SUMMARY_ROWS


def _check(ok: bool, key: str, message: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key} {message}, got {value!r}")


def _at_least(key: str, value: float | None, low: int, *, nullable: bool = False) -> None:
    if value is not None or not nullable:
        _check(value >= low, key, f"must be >= {low}" + (" or null" if nullable else ""), value)


@dataclass
class DatasetConfig:
    name: str = MISSING
    hub_id: str = MISSING
    hub_config: str | None = None
    text_fields: list[str] = field(default_factory=lambda: ["text"])
    label_field: str = "label"
    class_names: list[str] = MISSING
    train_split: str = "train"
    test_split: str = "test"
    val_fraction: float = 0.1
    data_dir: str | None = None  # conf/config.yaml: ${oc.env:GLOVE_EXP_DATA_DIR,null}; null: the hub
    headless_columns: list[str] | None = None  # original CSV without header: 1-based class first
    max_train_samples: int | None = None
    unescape: bool = False  # repair HTML/escape debris in the texts (data.unescape_text)

    def __post_init__(self) -> None:
        _check(0.0 <= self.val_fraction < 1.0, "dataset.val_fraction", "must be in [0, 1)", self.val_fraction)
        _check(len(self.class_names) >= 2, "dataset.class_names", "needs at least 2 classes", self.class_names)
        _check(len(self.text_fields) >= 1, "dataset.text_fields", "needs at least one field", self.text_fields)
        repeated = sorted({name for name in self.class_names if self.class_names.count(name) > 1})
        _check(not repeated, "dataset.class_names", f"repeats {repeated}", self.class_names)
        taken = [name for name in self.class_names if name in SUMMARY_ROWS]
        _check(not taken, "dataset.class_names", f"has {taken}, a row of the classification report", self.class_names)
        _at_least("dataset.max_train_samples", self.max_train_samples, 2, nullable=True)


@dataclass
class EmbeddingsConfig:
    """Where the vectors come from: ``path`` (a local GloVe text file) wins over ``url`` (a
    Stanford zip, downloaded once into ``cache_dir``), which wins over ``package`` (a Python
    package holding ``data/*_emb.npy`` and ``data/*_index.parquet``)."""

    name: str = MISSING
    dim: int = MISSING
    package: str | None = None
    url: str | None = None
    member: str | None = None
    sha256: str | None = None
    path: str | None = None
    cache_dir: str = "~/.cache/glove-exp"  # conf/config.yaml: GLOVE_EXP_CACHE_DIR if set
    lowercase: bool = True
    drop_oov: bool = False
    trainable: bool = False
    # The vocabulary is the training words that have a vector plus the words of the vectors' first
    # serving_words rows (the most frequent), so that new text finds its vectors; null or 0: none.
    serving_words: int | None = 20_000

    def __post_init__(self) -> None:
        _at_least("embeddings.dim", self.dim, 1)
        _at_least("embeddings.serving_words", self.serving_words, 0, nullable=True)
        required = "is required: a GloVe text file (or set embeddings.url or embeddings.package)"
        _check(any((self.path, self.url, self.package)), "embeddings.path", required, self.path)
        if self.url is not None:
            _check(self.member is not None, "embeddings.member", "must name the file inside the zip", self.member)


@dataclass
class ModelConfig:
    pooling: Pooling = Pooling.mean
    mask_padding: bool = True  # false: padding positions count as tokens (the seed tutorial)
    hier_window: int = 3  # n-gram window of `hier` pooling
    weighting: Weighting = Weighting.none
    sif_a: float = 1e-3
    standardize: bool = False  # z-score pooled features with train statistics
    token_hidden_sizes: list[int] = field(default_factory=list)  # dense layers on every word vector before pooling
    token_dropout: float = 0.0  # in those layers; `dropout` is the head's
    hidden_sizes: list[int] = field(default_factory=lambda: [128])
    activation: Activation = Activation.none
    norm: Norm = Norm.none  # in the head: on the pooled features and each hidden layer (batch: running stats)
    dropout: float = 0.0
    init: Init = Init.haiku

    def __post_init__(self) -> None:
        _at_least("model.hier_window", self.hier_window, 1)
        for name in ("dropout", "token_dropout"):
            _check(0.0 <= getattr(self, name) < 1.0, f"model.{name}", "must be in [0, 1)", getattr(self, name))
        _check(self.sif_a > 0, "model.sif_a", "must be > 0", self.sif_a)
        for name in ("hidden_sizes", "token_hidden_sizes"):
            sizes = list(getattr(self, name))
            _check(all(s >= 1 for s in sizes), f"model.{name}", "must all be >= 1", sizes)


@dataclass
class OptimizerConfig:
    name: OptimizerName = OptimizerName.adam
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    clip_norm: float | None = None  # global gradient-norm clipping
    schedule: Schedule = Schedule.constant
    warmup_fraction: float = 0.1  # of all steps, for warmup_cosine
    decay_rate: float = 0.5  # per epoch, for exponential

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optimizer.lr", "must be > 0", self.lr)
        _at_least("optimizer.weight_decay", self.weight_decay, 0)
        _check(0 <= self.momentum < 1, "optimizer.momentum", "must be in [0, 1)", self.momentum)
        if self.clip_norm is not None:
            _check(self.clip_norm > 0, "optimizer.clip_norm", "must be > 0 or null", self.clip_norm)
        _check(0 <= self.warmup_fraction < 1, "optimizer.warmup_fraction", "must be in [0, 1)", self.warmup_fraction)
        _check(0 < self.decay_rate <= 1, "optimizer.decay_rate", "must be in (0, 1]", self.decay_rate)


@dataclass
class TrainerConfig:
    epochs: int = 8
    batch_size: int = 1024
    eval_batch_size: int = 4096
    max_tokens: int = 50  # post-padded / post-truncated document length
    seed: int = 0  # drives the split, shuffling, initialisation, dropout and LIME
    shuffle: bool = True
    early_stopping_patience: int | None = None  # epochs without a better val accuracy; null: keep the last epoch
    precompute_features: bool = True  # pool frozen vectors once per run (same results, much faster)
    feature_dtype: FeatureDtype = FeatureDtype.float16  # how precomputed features are stored

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "max_tokens"):
            _at_least(f"trainer.{name}", getattr(self, name), 1)
        # numpy's RandomState and scikit-learn's random_state take 32-bit unsigned seeds
        _check(0 <= self.seed < 2**32, "trainer.seed", "must be in [0, 2**32)", self.seed)
        _at_least("trainer.early_stopping_patience", self.early_stopping_patience, 1, nullable=True)


LOG_MODEL_CHOICES = ("always", "never", "best")
LOG_MODEL_ALIASES = {"true": "always", "false": "never"}


@dataclass
class TrackingConfig:
    uri: str = MISSING
    experiment: str = "glove-exp"
    run_name: str | None = None  # default: the preset (or the pooling) and the values a sweep varies
    # The classifier as an MLflow pyfunc model: always, never, or best (in a sweep, only the job
    # with the best validation accuracy, else test accuracy; a single run logs it). true/false
    # are always/never. A string, not an enum, so that the older true/false still compose.
    log_model: str = "best"
    model_name: str = "model"  # its name: runs:/<run id>/<model_name>, and models:/<model_name>@best
    skip_finished: bool = True  # a config (glove_exp.config_id) with a FINISHED run is not trained again

    def __post_init__(self) -> None:
        self.log_model = LOG_MODEL_ALIASES.get(str(self.log_model).lower(), str(self.log_model).lower())
        _check(
            self.log_model in LOG_MODEL_CHOICES, "tracking.log_model", "must be always, never or best", self.log_model
        )


@dataclass
class ExplainConfig:
    num_examples: int = 3  # test examples, chosen reproducibly (seeded by trainer.seed)
    num_features: int = 10  # words shown per explanation
    num_samples: int = 1000  # perturbed texts per explanation

    def __post_init__(self) -> None:
        _at_least("explain.num_examples", self.num_examples, 0)
        _at_least("explain.num_features", self.num_features, 1)
        _at_least("explain.num_samples", self.num_samples, 10)


@dataclass
class HparamsSearchConfig:
    """What ``-m hparams_search=optuna`` reads besides ``hydra.sweeper``; the sweeper's, never a run's
    params or identity."""

    seeds: int = 1  # jobs per trial, with trainer.seed, trainer.seed + 1, ...; the trial's value is their mean

    def __post_init__(self) -> None:
        _at_least("hparams_search.seeds", self.seeds, 1)


@dataclass
class Config:
    dataset: DatasetConfig = MISSING
    embeddings: EmbeddingsConfig = MISSING
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    hparams_search: HparamsSearchConfig = field(default_factory=HparamsSearchConfig)

    def __post_init__(self) -> None:
        # Standardisation statistics come from features computed once, without parameters.
        if self.model.standardize and (self.embeddings.trainable or self.model.token_hidden_sizes):
            raise ConfigError(
                "model.standardize=true needs parameter-free features: set embeddings.trainable=false "
                "and model.token_hidden_sizes=[], or model.standardize=false"
            )
        if self.dataset.val_fraction == 0 and self.trainer.early_stopping_patience is not None:
            raise ConfigError("trainer.early_stopping_patience needs a validation split: set dataset.val_fraction > 0")


URI_RESOLVER = "glove_exp.tracking_uri"  # conf/tracking/mlflow.yaml: ${glove_exp.tracking_uri:${hydra:runtime.cwd}}


def default_tracking_uri(folder: str | os.PathLike[str] | None = None) -> str:
    """The tracking store unless ``tracking.uri`` says otherwise, for ``glove-exp`` and ``glove-exp-report``
    alike; the SQLite store's 10 s busy timeout makes parallel jobs wait for each other's writes."""
    folder = Path.cwd() if folder is None else Path(folder)
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{folder}/mlflow.db?timeout=10"


@functools.cache
def register() -> None:
    """Make ``base_config`` available to ``conf/config.yaml``'s defaults list, and the tracking-URI rule
    to its interpolations, once per process (jobs on other processes call it again)."""
    ConfigStore.instance().store(name="base_config", node=Config)
    OmegaConf.register_new_resolver(URI_RESOLVER, default_tracking_uri, replace=True)


def to_config(cfg: DictConfig) -> Config:
    """Resolve and validate a composed config; raises :class:`ConfigError` with a one-line message."""
    unknown = _unknown_keys(cfg)
    if unknown:
        raise ConfigError(f"unknown key {', '.join(unknown)}: glove-exp has no such setting (see glove-exp --cfg job)")
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))  # resolves interpolations, so inside the try
        if missing:
            values, them = ("values", "them") if len(missing) > 1 else ("value", "it")
            raise ConfigError(
                f"missing {values} for {', '.join(missing)}: set {them} on the command line, e.g. {missing[0]}=..."
            )
        config: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    except ConfigError:
        raise
    except Exception as err:  # omegaconf's own errors: bad interpolations such as ${oc.env:UNSET_VAR}
        key = getattr(err, "full_key", None)
        raise ConfigError(str(err).splitlines()[0] + (f" (key: {key})" if key else "")) from None
    if bad := next(_non_finite(config), None):  # the range checks let inf through where they have no upper bound
        raise ConfigError(f"{bad[0]} must be a finite number, got {bad[1]!r}")
    return config


def _non_finite(node: Any, key: str = "") -> Iterator[tuple[str, float]]:
    """``(key, value)`` of every NaN or infinite float in a config, lists included."""
    if is_dataclass(node):
        for f in fields(node):
            yield from _non_finite(getattr(node, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _non_finite(item, f"{key}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        yield key, node


def _unknown_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Keys that ``+key=value`` added where the schema has none (``hydra`` is Hydra's own)."""
    schema = OmegaConf.get_type(node)
    names = {f.name for f in fields(schema)} if is_dataclass(schema) else None
    unknown = []
    for key in node.keys():
        if names is not None and key not in names and not (key == "hydra" and not prefix):
            unknown.append(f"{prefix}{key}")
        elif (
            not OmegaConf.is_missing(node, key)
            and not OmegaConf.is_interpolation(node, key)
            and isinstance(child := node.get(key), DictConfig)
        ):
            unknown += _unknown_keys(child, f"{prefix}{key}.")
    return unknown


def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"pooling": "mean"}}`` -> ``{"model.pooling": "mean"}`` (lists stay values)."""
    container = cfg if isinstance(cfg, dict) else OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    flat: dict[str, Any] = {}
    for key, value in container.items():
        flat.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat

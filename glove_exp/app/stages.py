"""The stages of a run that need no tracking store, so a bad config or dataset fails before any run exists."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from glove_exp.app import reuse
from glove_exp.app.schema import Config
from glove_exp.app.serving import Predictor, TextSettings
from glove_exp.app.shared import SharedWork
from glove_exp.core.errors import ConfigError
from glove_exp.core.evaluate import metric_names
from glove_exp.core.features import FeatureDtype, Inputs, lookup_batch_size, make_inputs, memory_needs
from glove_exp.core.fit import Failed, Member, fit_group
from glove_exp.core.models import Constants, Model, ModelSpec, Weighting, make_constants, model_from_spec
from glove_exp.core.text import Encoded, Tokens, encode_splits, encode_tokens, sif_weights, tokenize_parts
from glove_exp.core.train import EpochMetrics, FitResult, Hyper, make_optimizer
from glove_exp.core.vectors import WordVectors
from glove_exp.io.datasets import Data, Splits, carve_splits, data_files, load_splits, read_data, warn_empty
from glove_exp.io.files import available_memory
from glove_exp.io.vectors import load_word_vectors

log = logging.getLogger(__name__)


@dataclass
class StageTimer:
    """Wall seconds per pipeline stage, in order."""

    seconds: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.perf_counter)
    elsewhere: float = 0.0  # seconds added by :meth:`add`

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        tic = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - tic

    @property
    def total(self) -> float:
        return time.perf_counter() - self.start + self.elsewhere

    def add(self, stage: str, seconds: float) -> None:
        """Count ``seconds`` spent elsewhere (a member's preparation and share of training with its group)
        to ``stage``."""
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds
        self.elsewhere += seconds

    def summary(self) -> str:
        return " | ".join([*(f"{stage} {s:.1f}s" for stage, s in self.seconds.items()), f"total {self.total:.1f}s"])


@dataclass(frozen=True)
class Prepared:
    """Everything training needs, built and checked before any MLflow run exists."""

    splits: Splits
    vectors_source: str
    encoded: Encoded
    model: Model
    inputs: Inputs
    content_key: str | None = None  # the splits' content and token settings, when jobs share their work


def compilation_cache(cache_dir: str) -> None:
    """JAX's persistent compilation cache under ``<cache_dir>/jax``, every program in it, unless the user
    chose a folder (``JAX_COMPILATION_CACHE_DIR``) or this one cannot be written: jobs that train the
    same shapes, in this process or another, then load their programs instead of compiling them."""
    if jax.config.jax_compilation_cache_dir:
        return
    folder = Path(cache_dir).expanduser() / "jax"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    if os.access(folder, os.W_OK):
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # default 1 s: most of ours are less


def prepare(config: Config, timer: StageTimer, progress: bool = False, shared: SharedWork | None = None) -> Prepared:
    """Splits -> vectors -> encoded tokens -> model and frozen inputs, timed per stage. With ``shared``,
    tokens and features that an earlier job made from the same inputs (:mod:`glove_exp.app.reuse`) are
    reused, from memory in this process or from the cache dir."""
    compilation_cache(config.embeddings.cache_dir)
    with timer("data"):
        splits, read = dataset_splits(config, shared)
    with timer("vectors"):
        vectors = word_vectors(config, progress, shared)
    check_memory(config, [part.texts for part in splits.parts().values() if part is not None], vectors.dim)
    with timer("tokens"):
        encoded, tokens_key = encoded_tokens(config, splits, vectors, shared, read)
    if encoded.oov_rate > 0.5:
        log.warning("%.0f%% of training tokens have no vector in %s", 100 * encoded.oov_rate, vectors.source)
    model = model_from_spec(spec_from_config(config))
    with timer("features"):
        inputs = shared_inputs(model, encoded, config, tokens_key, shared)
    return Prepared(splits, vectors.source, encoded, model, inputs, tokens_key)


class Read(NamedTuple):
    """Train and test as read from local files, and their key in the shared work."""

    data: Data
    key: str


def dataset_splits(config: Config, shared: SharedWork | None) -> tuple[Splits, Read | None]:
    """The splits; when ``shared``, train and test from local files as read and repaired once (from
    memory in this process, else from the cache dir), and those."""
    d = config.dataset
    files = data_files(d) if shared is not None else {}
    if not files:
        return load_splits(d, config.trainer.seed), None
    key = reuse.data_key(config, files)
    data, source = shared.reuse(
        "data", key, lambda: read_data(d), reuse.data_bytes, reuse.cache_dir(config), reuse.data_codec(files)
    )
    log.info("data %s: %s", key, source)
    if source == "disk":  # what reading them would have said
        warn_empty(data, (d.train_split, d.test_split), d.hub_id)
    return carve_splits(data, d, config.trainer.seed), Read(data, key)


def word_vectors(config: Config, progress: bool, shared: SharedWork | None) -> WordVectors:
    """The vectors (memory-mapped from their cache), opened once per process when ``shared``."""
    if shared is None:
        return load_word_vectors(config.embeddings, progress=progress)
    key = json.dumps(asdict(config.embeddings), sort_keys=True, default=str)
    return shared.reuse("vectors", key, lambda: load_word_vectors(config.embeddings, progress=progress), lambda v: 0)[0]


def encoded_tokens(
    config: Config, splits: Splits, vectors: WordVectors, shared: SharedWork | None, read: Read | None = None
) -> tuple[Encoded, str | None]:
    """Every split's token ids, and their key when ``shared``. With the data ``read`` their splits were
    carved from, the splits' tokens are taken from the data's, tokenised once for every seed."""
    e, max_tokens = config.embeddings, config.trainer.max_tokens

    def build() -> Encoded:
        if shared is None or read is None:
            texts = {split: None if part is None else part.texts for split, part in splits.parts().items()}
            return encode_splits(texts, vectors, e.lowercase, max_tokens, e.drop_oov, e.serving_words or 0)
        train, test = data_tokens(config, read, shared)
        val = None if splits.val is None else train.take(splits.rows["val"])
        tokens = {"train": train.take(splits.rows["train"]), "val": val, "test": test}
        return encode_tokens(tokens, vectors, max_tokens, e.drop_oov, e.serving_words or 0, e.lowercase)

    if shared is None:
        return build(), None
    key = reuse.tokens_key(config, splits, vectors)
    encoded, source = shared.reuse(
        "tokens", key, lambda: reuse.read_only(build()), reuse.encoded_bytes, reuse.cache_dir(config),
        reuse.tokens_codec(vectors),
    )  # fmt: skip
    log.info("tokens %s: %s", key, source)
    return encoded, key


def data_tokens(config: Config, read: Read, shared: SharedWork) -> tuple[Tokens, Tokens]:
    """The tokens of the data's train and test splits (sharing their types), made once per data and case."""
    key = reuse.data_tokens_key(read.key, config.embeddings.lowercase)
    parts = [read.data.train.texts, read.data.test.texts]
    (train, test), source = shared.reuse(
        "corpus", key, lambda: tuple(tokenize_parts(parts, config.embeddings.lowercase)), reuse.data_tokens_bytes,
        reuse.cache_dir(config), reuse.data_tokens_codec(),
    )  # fmt: skip
    log.info("corpus %s: %s", key, source)
    return train, test


def shared_inputs(
    model: Model, encoded: Encoded, config: Config, tokens_key: str | None, shared: SharedWork | None
) -> Inputs:
    """:func:`frozen_inputs`, reused when ``shared``; on disk only when they took work to make
    (precomputed or standardised features; else they are the token ids and the constants)."""
    if shared is None or tokens_key is None:
        return frozen_inputs(model, encoded, config)
    spec = model.spec
    key = reuse.features_key(tokens_key, config, spec, encoded.table.shape[1])
    costly = spec.precomputes(config.trainer.precompute_features) or spec.standardize
    codec = reuse.features_codec(spec, encoded, lambda: frozen_constants(model, encoded, config)) if costly else None
    inputs, source = shared.reuse(
        "features", key, lambda: reuse.read_only(frozen_inputs(model, encoded, config)), reuse.inputs_bytes,
        reuse.cache_dir(config), codec,
    )  # fmt: skip
    log.info("features %s: %s", key, source)
    return inputs


def data_stats(prepared: Prepared, class_names: list[str]) -> dict[str, Any]:
    """What the data gave this run: split sizes, vocabulary, OOV rate, empty texts, feature size and
    each split's class counts (keyed by metric-safe class names)."""
    names = metric_names(class_names)
    counts = {
        split: dict(zip(names, np.bincount(part.labels, minlength=len(names)).tolist()))
        for split, part in prepared.splits.parts().items()
        if part is not None
    }
    feature_dim = int(prepared.inputs.consts.feature_mean.shape[0])
    return prepared.encoded.sizes() | {"feature_dim": feature_dim, "class_counts": counts}


def check_memory(config: Config, texts: list[list[str]], dim: int) -> None:
    """Refuse, before any array is built, a run whose largest arrays cannot fit in this machine
    (``texts``: every split's documents, already in memory)."""
    spec, t = spec_from_config(config), config.trainer
    precompute = spec.precomputes(t.precompute_features)
    num_docs = sum(map(len, texts))
    needs = memory_needs(
        num_docs=num_docs, text_chars=sum(len(doc) for docs in texts for doc in docs), max_tokens=t.max_tokens,
        dim=dim, feature_dim=spec.feature_dim(t.max_tokens, dim),
        feature_bytes=FeatureDtype(t.feature_dtype).numpy.itemsize, layer_sizes=[*spec.hidden_sizes, spec.num_classes],
        batch_size=min(t.batch_size, num_docs), eval_batch_size=min(t.eval_batch_size, num_docs),
        lime_samples=config.explain.num_samples if config.explain.num_examples else 0, precompute=precompute,
    )  # fmt: skip
    total, available = sum(needs.values()), available_memory()
    if total > available:
        key = max(needs, key=needs.__getitem__)
        raise ConfigError(
            f"this run needs about {total / 2**30:.1f} GiB, mostly for {key} ({needs[key] / 2**30:.1f} GiB), "
            f"but {available / 2**30:.1f} GiB are available: lower {key}"
        )


def spec_from_config(config: Config) -> ModelSpec:
    """The model the config describes: the one place where the schema meets :class:`ModelSpec`."""
    settings = {f.name: getattr(config.model, f.name) for f in fields(config.model)}
    return ModelSpec(num_classes=len(config.dataset.class_names), trainable=config.embeddings.trainable, **settings)


def frozen_inputs(model: Model, encoded: Encoded, config: Config) -> Inputs:
    spec, t = model.spec, config.trainer
    return make_inputs(
        model, encoded.ids, frozen_constants(model, encoded, config), standardize=spec.standardize,
        precompute=spec.precomputes(t.precompute_features), batch_size=t.eval_batch_size, dtype=t.feature_dtype,
    )  # fmt: skip


def frozen_constants(model: Model, encoded: Encoded, config: Config) -> Constants:
    """The table and token weights, with identity standardisation (:func:`make_inputs` sets it)."""
    spec = model.spec
    weights = sif_weights(encoded.counts, spec.sif_a) if spec.weighting == Weighting.sif else None
    return make_constants(encoded.table, weights, spec.feature_dim(config.trainer.max_tokens, encoded.table.shape[1]))


def member(prepared: Prepared, config: Config, on_epoch: Callable[[EpochMetrics], None] = lambda m: None) -> Member:
    """What one config trains on, with its seed's key and its scalar settings."""
    splits, inputs = prepared.splits, prepared.inputs
    val = None if splits.val is None else (inputs.val, splits.val.labels)
    train = (inputs.train, splits.train.labels)
    hyper = Hyper(config.optimizer.lr, config.optimizer.weight_decay, config.model.dropout)
    return Member(train, val, inputs.consts, jax.random.PRNGKey(config.trainer.seed), hyper, on_epoch)


def fit_models(
    prepared: Sequence[Prepared], configs: Sequence[Config], members: Sequence[Member], progress: bool = False
) -> list[FitResult | Failed]:
    """Train ``members`` (of ``configs`` that differ in no more than :data:`~glove_exp.app.identity.PER_MEMBER`,
    and of the same shapes) as one vmapped program: a single run is a group of one. The program has
    dropout where any member has."""
    first, t = prepared[0], configs[0].trainer
    batch_size = min(t.batch_size, len(first.splits.train))  # a larger batch is the whole split, padded
    steps_per_epoch = -(-len(first.splits.train) // batch_size)
    optimizer = make_optimizer(**asdict(configs[0].optimizer), steps_per_epoch=steps_per_epoch, epochs=t.epochs)
    spec = replace(first.model.spec, dropout=max(m.hyper.dropout for m in members))
    model = first.model if spec == first.model.spec else model_from_spec(spec)
    if first.inputs.precomputed:
        transformed, eval_batch_size = model.head, t.eval_batch_size
    else:  # validation looks the vectors up
        transformed = model.forward
        eval_batch_size = lookup_batch_size(t.max_tokens, first.inputs.consts.table.shape[1], t.eval_batch_size)
    return fit_group(
        transformed, optimizer, members, epochs=t.epochs, batch_size=batch_size, eval_batch_size=eval_batch_size,
        shuffle=t.shuffle, early_stopping_patience=t.early_stopping_patience, progress=progress,
    )  # fmt: skip


def fit_model(
    prepared: Prepared,
    config: Config,
    on_epoch: Callable[[EpochMetrics], None] = lambda m: None,
    progress: bool = False,
) -> FitResult:
    """Train one config; raises :class:`TrainingError` if it diverged."""
    (result,) = fit_models([prepared], [config], [member(prepared, config, on_epoch)], progress)
    if isinstance(result, Failed):
        raise result.error
    return result


def predictor(prepared: Prepared, result: FitResult, config: Config) -> Predictor:
    """The trained model as raw text in, class probabilities out (what MLflow serves)."""
    e, t = config.embeddings, config.trainer
    text = TextSettings(e.lowercase, e.drop_oov, t.max_tokens)
    return Predictor(
        prepared.model, config.dataset.class_names, text, prepared.encoded.words, result.params, result.state,
        prepared.inputs.consts, t.eval_batch_size, prepared.encoded.index,
    )  # fmt: skip

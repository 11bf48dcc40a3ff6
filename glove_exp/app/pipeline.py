"""One experiment run, stage by stage: splits -> encoded tokens -> frozen inputs -> features ->
fit result -> evaluation -> explanations -> logged run. Every input is checked (tracking store,
data, vectors) before the MLflow run is created, so a user error leaves no run behind."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import jax

from glove_exp.app import tracking
from glove_exp.app.schema import Config
from glove_exp.io.datasets import Splits, load_splits
from glove_exp.io.vectors import load_word_vectors
from glove_exp.core.errors import ConfigError
from glove_exp.core.evaluate import evaluate
from glove_exp.core.explain import choose_examples, explain_examples
from glove_exp.core.features import FeatureDtype, Inputs, make_inputs, memory_needs
from glove_exp.io.files import available_memory
from glove_exp.app.interrupts import Interrupts
from glove_exp.core.models import Model, Weighting, build_model, feature_dim, make_constants, uses_precomputed_features
from glove_exp.app.serving import Predictor, TextSettings
from glove_exp.core.text import Encoded, encode_splits, sif_weights
from glove_exp.core.train import EpochMetrics, FitResult, fit, make_optimizer, make_predict

log = logging.getLogger(__name__)
PENDING_MODEL_DIR = "pending_model"


@dataclass(frozen=True)
class JobInfo:
    """Where the run sits in Hydra: job name, number in a sweep, the sweep's folder, the job's
    overrides, the experiment preset, the keys the sweep varies, whether it is a search, and the
    job's output folder in a sweep (where ``tracking.log_model=best`` leaves its model)."""

    name: str = "glove-exp"
    num: int | None = None
    sweep_id: str | None = None
    overrides: tuple[str, ...] = ()
    preset: str | None = None
    varying: tuple[str, ...] = ()
    search: bool = False
    output_dir: str | None = None


@dataclass
class StageTimer:
    """Wall seconds per pipeline stage, in order."""

    seconds: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.perf_counter)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        tic = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - tic

    @property
    def total(self) -> float:
        return time.perf_counter() - self.start

    def summary(self) -> str:
        return " | ".join([*(f"{stage} {s:.1f}s" for stage, s in self.seconds.items()), f"total {self.total:.1f}s"])


@dataclass(frozen=True)
class RunResult:
    run_id: str
    name: str
    val_accuracy: float | None  # of the kept model; None without a validation split
    test_accuracy: float
    timings: str
    pending_model: str | None = None  # the saved model the sweep's end logs if this job is the best

    @property
    def summary(self) -> str:
        val = "val –" if self.val_accuracy is None else f"val {self.val_accuracy:.2%}"
        return f"{self.name}: {val} test {self.test_accuracy:.2%} | {self.timings}"


def run_name(config: Config, job: JobInfo = JobInfo()) -> str:
    """Short and unique within a sweep: the preset (else the pooling), then the values the sweep
    varies (``seed_tutorial-flatten-seed=0``, ``mean-max_tokens=100``) or a search's trial number."""
    base = config.tracking.run_name or job.preset or config.model.pooling.value
    if job.search:
        return f"{base}-trial{job.num}"
    values = dict(override.split("=", 1) for override in job.overrides if "=" in override)
    parts = [base]
    for key in job.varying:
        value = values.get(key, "").rstrip("/").rsplit("/", 1)[-1][:20]
        if key == "model.pooling":
            parts += [value] if value != base else []
        else:
            parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    if job.num is not None and len(parts) == 1:  # a sweep that varies nothing visible: keep names apart
        parts.append(str(job.num))
    return "-".join(parts)


@dataclass(frozen=True)
class Prepared:
    """Everything training needs, built and checked before any MLflow run exists."""

    splits: Splits
    vectors_source: str
    encoded: Encoded
    model: Model
    inputs: Inputs


def run(
    config: Config,
    job: JobInfo = JobInfo(),
    interrupts: Interrupts | None = None,
    progress: bool = False,
    timer: StageTimer | None = None,
) -> RunResult:
    """Train, evaluate, explain and log one configuration (``timer``: one that records more per stage)."""
    timer = timer or StageTimer()
    experiment_id = tracking.open_experiment(config.tracking.uri, config.tracking.experiment)
    prepared = prepare(config, timer, progress)
    splits, encoded, model, inputs = prepared.splits, prepared.encoded, prepared.model, prepared.inputs
    tags = tracking.run_tags(config, job, splits.files, prepared.vectors_source)
    name = run_name(config, job)
    with tracking.tracked_run(experiment_id, name, tags, interrupts or Interrupts()) as tracked:
        tracked.log_config(config, encoded, int(inputs.consts.feature_mean.shape[0]))
        tracked.log_datasets(splits, config.dataset)
        with timer("train"):
            result = fit_model(prepared, config, tracked.log_epoch, progress)
        with timer("evaluate"):
            apply = (model.head if inputs.precomputed else model.forward).apply
            logits = make_predict(apply, config.trainer.eval_batch_size)(result.params, inputs.test, inputs.consts)
            evaluation = evaluate(splits.test.labels, logits.argmax(-1), config.dataset.class_names)
            text = TextSettings(config.embeddings.lowercase, config.embeddings.drop_oov, config.trainer.max_tokens)
            names, batch = config.dataset.class_names, config.trainer.eval_batch_size
            predictor = Predictor(model, names, text, encoded.words, result.params, inputs.consts, batch)
        with tempfile.TemporaryDirectory(prefix="glove-exp-") as tmp, timer("explain"):
            test = splits.test
            explanations = explain_examples(
                predictor.predict_proba, test.texts, test.labels, names,
                choose_examples(config.explain.num_examples, len(test), config.trainer.seed), Path(tmp) / "lime",
                num_features=config.explain.num_features, num_samples=config.explain.num_samples,
                seed=config.trainer.seed, progress=progress,
            )  # fmt: skip
            tracked.log_explanations(explanations, "lime")
        with timer("log"):
            tracked.log_outcome(result, evaluation, names, f"{name}: test accuracy {evaluation.accuracy:.1%}")
            pending, log_model, model_name = None, config.tracking.log_model, config.tracking.model_name
            if log_model == "best" and job.output_dir is not None:  # in a sweep: its end logs the best job's
                folder = Path(job.output_dir) / PENDING_MODEL_DIR
                pending = tracking.save_pending_model(
                    predictor, folder, test.texts[:2], model_name, name, tracked.run_id, config.tracking.uri
                )
            elif log_model != "never":
                tracked.log_model(predictor, test.texts[:2], model_name, name)
        tracked.log_metrics(
            {f"time/{stage}_s": s for stage, s in timer.seconds.items()} | {"time/total_s": timer.total}
        )
    val = result.selected.val_accuracy if inputs.val is not None else None
    return RunResult(tracked.run_id, name, val, evaluation.accuracy, timer.summary(), pending)


def prepare(config: Config, timer: StageTimer, progress: bool = False) -> Prepared:
    """Splits -> vectors -> encoded tokens -> model and frozen inputs, timed per stage."""
    with timer("data"):
        splits = load_splits(config.dataset, config.trainer.seed)
    with timer("vectors"):
        vectors = load_word_vectors(config.embeddings, progress=progress)
    check_memory(config, [part.texts for part in splits.parts().values() if part is not None], vectors.dim)
    with timer("tokens"):
        texts = {split: None if part is None else part.texts for split, part in splits.parts().items()}
        e = config.embeddings
        encoded = encode_splits(
            texts, vectors, e.lowercase, config.trainer.max_tokens, e.drop_oov, e.serving_words or 0
        )
    if encoded.oov_rate > 0.5:
        log.warning("%.0f%% of training tokens have no vector in %s", 100 * encoded.oov_rate, vectors.source)
    model = model_from_config(config)
    with timer("features"):
        inputs = frozen_inputs(model, encoded, config)
    return Prepared(splits, vectors.source, encoded, model, inputs)


def check_memory(config: Config, texts: list[list[str]], dim: int) -> None:
    """Refuse, before any array is built, a run whose largest arrays cannot fit in this machine
    (``texts``: every split's documents, already in memory)."""
    m, t = config.model, config.trainer
    precompute = uses_precomputed_features(
        m.pooling, m.token_hidden_sizes, config.embeddings.trainable, t.precompute_features
    )
    num_docs = sum(map(len, texts))
    needs = memory_needs(
        num_docs=num_docs, text_chars=sum(len(doc) for docs in texts for doc in docs), max_tokens=t.max_tokens,
        dim=dim, feature_dim=feature_dim(m.pooling, m.token_hidden_sizes, t.max_tokens, dim),
        feature_bytes=FeatureDtype(t.feature_dtype).numpy.itemsize, layer_sizes=[*m.hidden_sizes, len(config.dataset.class_names)],
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


def model_from_config(config: Config) -> Model:
    """The Haiku model the config describes: the one place where the config meets
    :func:`glove_exp.core.models.build_model` (``sif_a`` shapes the constants, not the model)."""
    m = config.model
    return build_model(
        len(config.dataset.class_names), pooling=m.pooling, mask_padding=m.mask_padding, hier_window=m.hier_window,
        weighting=m.weighting, standardize=m.standardize, token_hidden_sizes=m.token_hidden_sizes,
        hidden_sizes=m.hidden_sizes, activation=m.activation, dropout=m.dropout, init=m.init,
        trainable=config.embeddings.trainable,
    )  # fmt: skip


def frozen_inputs(model: Model, encoded: Encoded, config: Config) -> Inputs:
    weights = sif_weights(encoded.counts, config.model.sif_a) if config.model.weighting == Weighting.sif else None
    m = config.model
    dim = feature_dim(m.pooling, m.token_hidden_sizes, config.trainer.max_tokens, encoded.table.shape[1])
    consts = make_constants(encoded.table, weights, dim)
    precompute = uses_precomputed_features(
        m.pooling, m.token_hidden_sizes, config.embeddings.trainable, config.trainer.precompute_features
    )
    batch = config.trainer.eval_batch_size
    return make_inputs(
        model, encoded.ids, consts, standardize=config.model.standardize, precompute=precompute, batch_size=batch,
        dtype=config.trainer.feature_dtype,
    )  # fmt: skip


def fit_model(
    prepared: Prepared,
    config: Config,
    on_epoch: Callable[[EpochMetrics], None] = lambda m: None,
    progress: bool = False,
) -> FitResult:
    """Train the prepared model with the configured optimizer and trainer settings."""
    splits, inputs = prepared.splits, prepared.inputs
    t = config.trainer
    batch_size = min(t.batch_size, len(splits.train))  # a larger batch is the whole split, padded
    steps_per_epoch = -(-len(splits.train) // batch_size)
    optimizer = make_optimizer(
        **asdict(config.optimizer), steps_per_epoch=steps_per_epoch, epochs=config.trainer.epochs
    )
    val = None if splits.val is None else (inputs.val, splits.val.labels)
    transformed = prepared.model.head if inputs.precomputed else prepared.model.forward
    return fit(
        transformed, optimizer, (inputs.train, splits.train.labels), val,
        inputs.consts, jax.random.PRNGKey(t.seed), epochs=t.epochs, batch_size=batch_size,
        eval_batch_size=t.eval_batch_size, shuffle=t.shuffle, early_stopping_patience=t.early_stopping_patience,
        on_epoch=on_epoch, progress=progress,
    )  # fmt: skip

"""One experiment run: data -> vectors -> token ids -> features -> training -> evaluation ->
explanations, everything recorded in one MLflow run. :func:`run` is what ``glove-exp`` calls for
each (sweep) job."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import jax
import numpy as np

from glove_exp import tracking
from glove_exp.config import Config, ModelConfig, flatten
from glove_exp.data import Splits, existing_data_dir, load_splits
from glove_exp.embeddings import existing_vectors_file, load_word_vectors
from glove_exp.evaluate import Evaluation, evaluate, plot_confusion, write_confusion_csv
from glove_exp.explain import choose_examples, explain_examples
from glove_exp.files import sha256_file
from glove_exp.models import Constants, Model, Weighting, build_model, feature_dim, make_constants, uses_precomputed_features
from glove_exp.serving import Predictor, TextSettings
from glove_exp.text import build_vocabulary, embedding_matrix, encode, oov_rate, sif_weights, tokenize_all
from glove_exp.train import FitResult, fit, make_optimizer, make_predict

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
PACKAGES = ("jax", "jaxlib", "dm-haiku", "optax", "numpy", "mlflow", "datasets", "scikit-learn", "lime", "hydra-core")


@dataclass(frozen=True)
class JobInfo:
    """Where the run sits in Hydra: job name, number in a sweep, and the sweep's folder."""

    name: str = "glove-exp"
    num: int | None = None
    sweep_id: str | None = None
    overrides: tuple[str, ...] = ()


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
        parts = [f"{stage} {seconds:.1f}s" for stage, seconds in self.seconds.items()]
        return " | ".join([*parts, f"total {self.total:.1f}s"])


@dataclass
class Prepared:
    splits: Splits
    tokens: dict[str, np.ndarray]  # split -> [N, max_tokens] int32
    words: list[str]  # vocabulary, token id = position + 2
    consts: Constants
    sizes: dict[str, float]  # vocab_size, oov_rate, num_train, ... for the run's metrics
    vectors_source: str


def run_name(config: Config) -> str:
    return config.tracking.run_name or f"{config.dataset.name}-{config.embeddings.name}-{config.model.pooling.value}"


def run(config: Config, job: JobInfo = JobInfo(), progress: bool = True) -> float:
    """Train and evaluate one configuration; returns the validation accuracy of the kept model."""
    timer = StageTimer()
    tags = {
        "dataset": config.dataset.name,
        "embeddings": config.embeddings.name,
        "pooling": config.model.pooling.value,
        "git_commit": tracking.git_commit(),
        "hydra_job_name": job.name,
        **({"hydra_job_num": str(job.num)} if job.num is not None else {}),
        **({"sweep_id": job.sweep_id} if job.sweep_id else {}),
        **({"hydra_overrides": " ".join(job.overrides)} if job.overrides else {}),
    }
    if config.dataset.data_dir is not None:  # named local files exist: fail before the MLflow run starts
        existing_data_dir(config.dataset.data_dir)
    if config.embeddings.path:
        existing_vectors_file(config.embeddings.path)
    with tracking.tracked_run(config.tracking.uri, config.tracking.experiment, run_name(config), tags) as active:
        tracking.log_params(flatten(_as_dictconfig(config)))
        log.info("MLflow run %s (%s) in %s", active.info.run_id, run_name(config), config.tracking.uri)
        prepared = prepare(config, timer, progress)
        model = model_from_config(config.model, len(config.dataset.class_names), config.embeddings.trainable)
        precomputed = uses_precomputed_features(
            config.model.pooling, config.model.token_hidden_sizes, config.embeddings.trainable, config.trainer.precompute_features
        )
        with timer("features"):
            inputs = _inputs(model, prepared, config, precomputed)
        prep_time = timer.total
        with timer("train"):
            result = _train(model, prepared, inputs, config, precomputed, progress)
        with timer("evaluate"):
            predictor = _predictor(model, config, prepared, result)
            evaluation = _evaluate(model, prepared, inputs, result, config, precomputed)
        with tempfile.TemporaryDirectory(prefix="glove-exp-") as tmp:
            out = Path(tmp)
            with timer("explain"):
                _explain(predictor, prepared, config, out / "lime", progress)
            with timer("log"):
                _log_results(config, prepared, result, evaluation, out, timer, prep_time)
                if config.tracking.log_model:
                    _log_model(predictor, prepared.splits.test.texts[:2], out)
        tracking.log_metrics({"total_time_s": timer.total})
    print(f"glove-exp: {run_name(config)}: val {result.selected.val_accuracy:.2%} test {evaluation.accuracy:.2%} | {timer.summary()}")
    return result.selected.val_accuracy


def prepare(config: Config, timer: StageTimer, progress: bool = True) -> Prepared:
    """Splits, vocabulary, token ids and the frozen arrays the model reads."""
    with timer("data"):
        splits = load_splits(config.dataset, config.trainer.seed)
    with timer("vectors"):
        vectors = load_word_vectors(config.embeddings, progress=progress)
    with timer("tokens"):
        tokens = {name: tokenize_all(getattr(splits, name).texts, config.embeddings.lowercase) for name in SPLITS}
        vocab = build_vocabulary([t for name in SPLITS for t in tokens[name]], vectors, count_lists=tokens["train"])
        index = vocab.index()
        ids = {name: encode(tokens[name], index, config.trainer.max_tokens, config.embeddings.drop_oov) for name in SPLITS}
        rate = oov_rate(tokens["train"], index)
    if rate > 0.5:
        log.warning("%.0f%% of training tokens have no vector in %s", 100 * rate, vectors.source)
    weights = sif_weights(vocab.counts, config.model.sif_a) if config.model.weighting == Weighting.sif else None
    table = embedding_matrix(vocab, vectors)
    dim = feature_dim(config.model.pooling, config.model.token_hidden_sizes, config.trainer.max_tokens, vectors.dim)
    sizes = {
        "vocab_size": len(vocab),
        "oov_rate": rate,
        "embedding_dim": vectors.dim,
        "feature_dim": dim,
        **{f"num_{name}": len(getattr(splits, name)) for name in SPLITS},
        **{f"empty_{name}": int((ids[name] == 0).all(axis=1).sum()) for name in SPLITS},
    }
    return Prepared(splits, ids, vocab.words, make_constants(table, weights, dim), sizes, vectors.source)


def _as_dictconfig(config: Config):
    from omegaconf import OmegaConf

    return OmegaConf.structured(config)


def _features(model: Model, tokens: np.ndarray, consts: Constants, batch_size: int) -> np.ndarray:
    """``[N, T]`` token ids -> ``[N, F]`` parameter-free features, jitted in fixed-size batches."""
    apply = lambda params, rng, x, c, is_training: model.features.apply(params, rng, x, c)  # noqa: E731
    return make_predict(apply, batch_size)({}, tokens, consts)


def _inputs(model: Model, prepared: Prepared, config: Config, precomputed: bool) -> dict[str, np.ndarray]:
    """Per split, what the trained function consumes: pooled features or token ids.

    With ``model.standardize`` the train split's feature mean and standard deviation go into the
    constants first (computed once; the features are parameter-free).
    """
    batch = config.trainer.eval_batch_size
    if config.model.standardize:
        train_features = _features(model, prepared.tokens["train"], prepared.consts, batch)
        scale = train_features.std(axis=0)
        prepared.consts = prepared.consts._replace(
            feature_mean=jax.numpy.asarray(train_features.mean(axis=0)),
            feature_scale=jax.numpy.asarray(np.where(scale > 1e-6, scale, 1.0)),
        )
    if not precomputed:
        return prepared.tokens
    return {name: _features(model, prepared.tokens[name], prepared.consts, batch) for name in SPLITS}


def _train(model: Model, prepared: Prepared, inputs: dict[str, np.ndarray], config: Config, precomputed: bool, progress: bool) -> FitResult:
    labels = {name: getattr(prepared.splits, name).labels for name in SPLITS}
    steps_per_epoch = -(-len(labels["train"]) // config.trainer.batch_size)
    optimizer = make_optimizer(**asdict(config.optimizer), steps_per_epoch=steps_per_epoch, epochs=config.trainer.epochs)

    def on_epoch(metrics) -> None:
        values = {k: v for k, v in vars(metrics).items() if k != "epoch"}
        tracking.log_metrics(values, step=metrics.epoch)

    return fit(
        model.head if precomputed else model.forward,
        optimizer,
        (inputs["train"], labels["train"]),
        (inputs["val"], labels["val"]),
        prepared.consts,
        jax.random.PRNGKey(config.trainer.seed),
        epochs=config.trainer.epochs,
        batch_size=config.trainer.batch_size,
        eval_batch_size=config.trainer.eval_batch_size,
        shuffle=config.trainer.shuffle,
        early_stopping_patience=config.trainer.early_stopping_patience,
        on_epoch=on_epoch,
        progress=progress,
    )


def _predictor(model: Model, config: Config, prepared: Prepared, result: FitResult) -> Predictor:
    text = TextSettings(config.embeddings.lowercase, config.embeddings.drop_oov, config.trainer.max_tokens)
    return Predictor(
        model, config.dataset.class_names, text, prepared.words, result.params, prepared.consts, config.trainer.eval_batch_size
    )


def _evaluate(model: Model, prepared: Prepared, inputs, result: FitResult, config: Config, precomputed: bool) -> Evaluation:
    transformed = model.head if precomputed else model.forward
    logits = make_predict(transformed.apply, config.trainer.eval_batch_size)(result.params, inputs["test"], prepared.consts)
    return evaluate(prepared.splits.test.labels, logits.argmax(-1), config.dataset.class_names)


def _explain(predictor: Predictor, prepared: Prepared, config: Config, out: Path, progress: bool) -> list[Path]:
    test = prepared.splits.test
    indices = choose_examples(config.explain.num_examples, len(test), config.trainer.seed)
    return explain_examples(
        predictor.predict_proba, test.texts, test.labels, config.dataset.class_names, indices, out,
        num_features=config.explain.num_features, num_samples=config.explain.num_samples,
        seed=config.trainer.seed, progress=progress,
    )  # fmt: skip


def metric_name(text: str) -> str:
    """MLflow metric names allow letters, digits and ``_ - . /`` (and spaces, avoided here)."""
    return re.sub(r"[^0-9A-Za-z_\-./]+", "_", text).strip("_")


def _log_results(config: Config, prepared: Prepared, result: FitResult, evaluation: Evaluation, out: Path, timer: StageTimer, prep_time: float) -> None:
    names = config.dataset.class_names
    tracking.log_metrics(
        {
            "test_accuracy": evaluation.accuracy,
            "test_macro_f1": evaluation.macro_f1,
            **{f"test_f1_{metric_name(name)}": value for name, value in evaluation.per_class_f1.items()},
            "best_epoch": result.best_epoch,
            "selected_epoch": result.selected_epoch,
            "best_val_accuracy": result.history[result.best_epoch - 1].val_accuracy,
            "selected_val_accuracy": result.selected.val_accuracy,
            "epochs_run": len(result.history),
            "compile_time_s": result.compile_time_s,
            "train_time_s": result.train_time_s,
            "prep_time_s": prep_time,
            **{f"stage_{stage}_s": seconds for stage, seconds in timer.seconds.items()},
            **prepared.sizes,
        }
    )
    tracking.set_tags({"glove_source": prepared.vectors_source, **_versions()})
    for split, path in prepared.splits.files.items():
        tracking.set_tags({f"data_sha256.{split}": sha256_file(Path(path)), f"data_file.{split}": path})
    (out / "classification_report.txt").write_text(evaluation.report_text, encoding="utf-8")
    (out / "classification_report.json").write_text(json.dumps(evaluation.report, indent=2), encoding="utf-8")
    write_confusion_csv(evaluation, names, out / "confusion_matrix.csv")
    plot_confusion(evaluation, names, out / "confusion_matrix.png", title=f"{run_name(config)}: test accuracy {evaluation.accuracy:.1%}")
    from omegaconf import OmegaConf

    OmegaConf.save(_as_dictconfig(config), out / "config.yaml", resolve=True)
    tracking.log_artifacts(str(out))


def _versions() -> dict[str, str]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[f"version.{package}"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _log_model(predictor: Predictor, example_texts: list[str], out: Path) -> None:
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    folder = predictor.save(out / "predictor")
    # A plain list gives an unnamed string column: lists, Series and DataFrames (a `text` column, else
    # the first) then all pass MLflow's schema check. A DataFrame example would name the column `text`
    # and reject lists and unnamed Series.
    example = [str(text) for text in example_texts]
    output = pd.DataFrame(predictor.predict_proba(example_texts).astype(np.float64), columns=predictor.class_names)
    requirements = [f"{p}=={v}" for p, v in ((k.removeprefix("version."), v) for k, v in _versions().items())]
    tracking.retry_locked(mlflow.pyfunc.log_model)(
        name="model",
        python_model=str(Path(__file__).with_name("mlflow_model.py")),
        artifacts={"predictor": str(folder)},
        code_paths=[str(Path(__file__).resolve().parent)],
        signature=infer_signature(example, output),
        input_example=example,
        pip_requirements=[*requirements, "pandas"],
    )


def model_from_config(model_cfg: ModelConfig, num_classes: int, trainable: bool) -> Model:
    """The one place where the model config meets :func:`glove_exp.models.build_model`
    (``sif_a`` shapes the constants, not the model)."""
    return build_model(
        num_classes,
        pooling=model_cfg.pooling,
        mask_padding=model_cfg.mask_padding,
        hier_window=model_cfg.hier_window,
        weighting=model_cfg.weighting,
        standardize=model_cfg.standardize,
        token_hidden_sizes=model_cfg.token_hidden_sizes,
        hidden_sizes=model_cfg.hidden_sizes,
        activation=model_cfg.activation,
        dropout=model_cfg.dropout,
        init=model_cfg.init,
        trainable=trainable,
    )

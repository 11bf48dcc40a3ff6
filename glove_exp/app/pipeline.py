"""One run as its stages. Every input (store, data, vectors) is checked before the MLflow run exists,
so a user error leaves no run behind; a config that already has a FINISHED run is not trained again."""

from __future__ import annotations

import functools
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from mlflow.entities import DatasetInput, Run

from glove_exp.app.explain import explain_examples, write_pages
from glove_exp.app.group import Trained
from glove_exp.app.identity import CONFIG_TAG, VMAP_SIZE_TAG, VMAP_TAG, config_id, digest
from glove_exp.app.interrupts import Interrupts
from glove_exp.app.registry import Score, deliver_model, register_best
from glove_exp.app.resume import Superseded, finished_run, owner, selected_val_accuracy
from glove_exp.app.schema import Config
from glove_exp.app.shared import SharedWork
from glove_exp.app.stages import Prepared, StageTimer, data_stats, fit_model, predictor, prepare
from glove_exp.app.store import Store
from glove_exp.app.tracking import JobInfo, dataset_inputs, run_name, run_tags, tracked_run
from glove_exp.core.evaluate import evaluate
from glove_exp.core.explain import choose_examples
from glove_exp.core.fit import Failed
from glove_exp.core.train import EpochMetrics, FitResult, diverged


@dataclass(frozen=True)
class RunResult:
    run_id: str
    name: str
    val_accuracy: float | None  # of the kept model; None without a validation split
    test_accuracy: float
    timings: str = ""
    skipped: str | None = None  # why it was not trained: "finished as run <id>"
    best: str | None = None  # the line saying it became the registered best

    @property
    def summary(self) -> str:
        if self.skipped:
            return f"{self.name}: skipped: {self.skipped}"
        val = "val –" if self.val_accuracy is None else f"val {self.val_accuracy:.2%}"
        best = " (best so far)" if self.best else ""
        return f"{self.name}: {val} test {self.test_accuracy:.2%}{best} | {self.timings}"

    @classmethod
    def of_owner(cls, run: Run, name: str) -> RunResult:
        """The result of a job that another run of its config has done (or is doing)."""
        state = "finished" if run.info.status == "FINISHED" else "running"
        test = run.data.metrics.get("test/accuracy", math.nan)
        return cls(run.info.run_id, name, selected_val_accuracy(run), test, skipped=f"{state} as run {run.info.run_id}")


def run(
    config: Config,
    job: JobInfo = JobInfo(),
    interrupts: Interrupts | None = None,
    progress: bool = False,
    timer: StageTimer | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    trained: Trained | None = None,
    shared: SharedWork | None = None,
) -> RunResult:
    """Train, evaluate, explain and log one configuration (``timer``: one that records more per stage;
    ``on_epoch``: called after each epoch is logged, e.g. a search's trial reporter; ``trained``: its
    training, done with its group; ``shared``: the tokens and features of earlier jobs,
    :func:`glove_exp.app.stages.prepare`), unless its config has a FINISHED run
    (``tracking.skip_finished``); register the model if it is the best."""
    timer, interrupts = timer or StageTimer(), interrupts or Interrupts()
    store = Store.reuse(config.tracking.uri, config.tracking.experiment, config.embeddings.cache_dir, shared)
    name = run_name(config, job)
    # A training done with its group was checked a moment ago; a run that finished since owns the config
    # (train_and_log's owner check), as for two parallel jobs.
    if config.tracking.skip_finished and trained is None and (done := finished_run(store, config_id(config))):
        return RunResult.of_owner(done, name)
    prepared = prepare(config, timer, progress, shared)
    for stage, seconds in trained.preparation.items() if trained is not None else ():  # done with its group
        timer.add(stage, seconds)
    datasets = split_inputs(prepared, config, shared)
    try:
        result, model_id = train_and_log(
            store, prepared, datasets, config, job, name, interrupts, timer, progress, on_epoch, trained
        )
    except Superseded as err:  # a parallel job created its run first: it trains this config
        store.client.delete_run(err.run_id)
        return RunResult.of_owner(err.owner, name)
    if model_id is None:
        return result
    with interrupts.run(), interrupts.store_call(), store.writing():  # a signal waits for the alias to move
        best = register_best(store, config.tracking.model_name, result.run_id, model_id, score(result))
    return replace(result, best=best)


def score(result: RunResult) -> Score:
    return Score(result.val_accuracy, result.test_accuracy)


def split_inputs(prepared: Prepared, config: Config, shared: SharedWork | None) -> list[DatasetInput]:
    """The splits as MLflow dataset inputs, made once for the jobs that share their splits' content."""
    build = functools.partial(dataset_inputs, prepared.splits, config.dataset)
    if shared is None or prepared.content_key is None:
        return build()
    d = config.dataset
    key = digest({"content": prepared.content_key, "files": prepared.splits.files, "dataset": [d.name, d.hub_id,
                  d.hub_config, d.train_split, d.test_split, d.class_names]})  # fmt: skip
    return shared.reuse("datasets", key, build, lambda inputs: 4096 * len(inputs))[0]


def train_and_log(
    store: Store, prepared: Prepared, datasets: list[DatasetInput], config: Config, job: JobInfo, name: str, interrupts: Interrupts,
    timer: StageTimer, progress: bool, on_epoch: Callable[[EpochMetrics], None] | None = None,
    trained: Trained | None = None,
) -> tuple[RunResult, str | None]:  # fmt: skip
    """The MLflow run: train (or log the training done with its group), evaluate, explain, log; returns
    the result and the logged model's id."""
    splits, model, inputs, test = prepared.splits, prepared.model, prepared.inputs, prepared.splits.test
    names, seed, explain = config.dataset.class_names, config.trainer.seed, config.explain
    tags = run_tags(config, job, splits.files, prepared.vectors_source)
    if trained is not None:
        tags |= {VMAP_TAG: trained.program, VMAP_SIZE_TAG: str(trained.size)}
    with tracked_run(store, name, tags, interrupts) as tracked:
        if config.tracking.skip_finished and (other := owner(store, tags[CONFIG_TAG], tracked.run_id)):
            raise Superseded(other, tracked.run_id)
        tracked.log_config(config, model.spec, data_stats(prepared, names))
        tracked.log_datasets(datasets)
        with timer("train"):
            if trained is None:
                result = fit_model(prepared, config, then(tracked.log_epoch, on_epoch), progress)
            else:
                result = replay(trained, tracked.log_epochs, on_epoch or (lambda m: None))
        if trained is not None:
            timer.add("train", trained.seconds)
        with timer("evaluate"):  # as the logged model will score it: from token ids, with float32 features
            served = predictor(prepared, result, config)
            probabilities = served.predict_ids(prepared.encoded.ids["test"])
            if not np.isfinite(probabilities).all():  # argmax would take NaN for class 0; no val split saw it coming
                raise diverged(f"the test predictions hold NaN or inf after epoch {result.selected_epoch}")
            predicted = probabilities.argmax(-1)
            evaluation = evaluate(test.labels, predicted, names)
        with tempfile.TemporaryDirectory(prefix="glove-exp-") as tmp, timer("explain"):
            explanations = explain_examples(
                served, test.texts, test.labels, choose_examples(explain.num_examples, len(test), seed),
                num_features=explain.num_features, num_samples=explain.num_samples, seed=seed, progress=progress,
            )  # fmt: skip
            pages = write_pages(explanations, Path(tmp) / "lime", config.embeddings.lowercase)
            tracked.log_explanations(explanations, pages, "lime")
        val = result.selected.val_accuracy if inputs.val is not None else None
        with timer("log"):
            tracked.log_outcome(evaluation, names, f"{name}: test accuracy {evaluation.accuracy:.1%}")
            model_id = deliver_model(
                tracked, served, test.texts[:2], config.tracking, name, Score(val, evaluation.accuracy)
            )
        times = {f"time/{stage}_s": s for stage, s in timer.seconds.items()} | {"time/total_s": timer.total}
        tracked.log_final(result, evaluation, names, times)
    return RunResult(tracked.run_id, name, val, evaluation.accuracy, timer.summary()), model_id


def replay(
    trained: Trained, log_epochs: Callable[[Sequence[EpochMetrics]], None], on_epoch: Callable[[EpochMetrics], None]
) -> FitResult:
    """A training done with its group: ``on_epoch`` (a search's reporter, which may prune it) on each epoch
    as if it ran now, then the epochs it reached logged in one batch, so that a pruned run holds the
    epochs up to its pruning, as when it trains alone; raise the error that ended it, as its training
    would have."""
    reached: list[EpochMetrics] = []
    try:
        for metrics in trained.result.history:
            reached.append(metrics)
            on_epoch(metrics)
    finally:
        log_epochs(reached)
    if isinstance(trained.result, Failed):
        raise trained.result.error
    return trained.result


def then(
    first: Callable[[EpochMetrics], None], second: Callable[[EpochMetrics], None] | None
) -> Callable[[EpochMetrics], None]:
    """``first``, then ``second`` if any, on each epoch's metrics."""
    if second is None:
        return first

    def both(metrics: EpochMetrics) -> None:
        first(metrics)
        second(metrics)

    return both

"""One run as its stages. Every input (store, data, vectors) is checked before the MLflow run exists,
so a user error leaves no run behind."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from glove_exp.app.best_model import deliver_model
from glove_exp.app.explain import explain_examples, write_pages
from glove_exp.app.interrupts import Interrupts
from glove_exp.app.schema import Config
from glove_exp.app.stages import StageTimer, data_stats, fit_model, predictor, prepare
from glove_exp.app.store import Store
from glove_exp.app.tracking import JobInfo, run_name, run_tags, tracked_run
from glove_exp.core.evaluate import evaluate
from glove_exp.core.explain import choose_examples
from glove_exp.core.train import EpochMetrics


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


def run(
    config: Config,
    job: JobInfo = JobInfo(),
    interrupts: Interrupts | None = None,
    progress: bool = False,
    timer: StageTimer | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
) -> RunResult:
    """Train, evaluate, explain and log one configuration (``timer``: one that records more per stage;
    ``on_epoch``: called after each epoch is logged, e.g. a search's trial reporter)."""
    timer = timer or StageTimer()
    store = Store.open(config.tracking.uri, config.tracking.experiment)
    prepared = prepare(config, timer, progress)
    splits, model, inputs, test = prepared.splits, prepared.model, prepared.inputs, prepared.splits.test
    names, seed, explain = config.dataset.class_names, config.trainer.seed, config.explain
    tags = run_tags(config, job, splits.files, prepared.vectors_source)
    name = run_name(config, job)
    with tracked_run(store, name, tags, interrupts or Interrupts()) as tracked:
        tracked.log_config(config, model.spec)
        tracked.log_data_stats(data_stats(prepared, names))
        tracked.log_datasets(splits, config.dataset)
        with timer("train"):
            result = fit_model(prepared, config, then(tracked.log_epoch, on_epoch), progress)
        with timer("evaluate"):  # as the logged model will score it: from token ids, with float32 features
            served = predictor(prepared, result, config)
            predicted = served.predict_ids(prepared.encoded.ids["test"]).argmax(-1)
            evaluation = evaluate(test.labels, predicted, names)
        with tempfile.TemporaryDirectory(prefix="glove-exp-") as tmp, timer("explain"):
            explanations = explain_examples(
                served, test.texts, test.labels, choose_examples(explain.num_examples, len(test), seed),
                num_features=explain.num_features, num_samples=explain.num_samples, seed=seed, progress=progress,
            )  # fmt: skip
            pages = write_pages(explanations, Path(tmp) / "lime", config.embeddings.lowercase)
            tracked.log_explanations(explanations, pages, "lime")
        with timer("log"):
            tracked.log_outcome(result, evaluation, names, f"{name}: test accuracy {evaluation.accuracy:.1%}")
            pending = deliver_model(tracked, served, test.texts[:2], config.tracking, job, name)
        tracked.log_metrics(
            {f"time/{stage}_s": s for stage, s in timer.seconds.items()} | {"time/total_s": timer.total}
        )
    val = result.selected.val_accuracy if inputs.val is not None else None
    return RunResult(tracked.run_id, name, val, evaluation.accuracy, timer.summary(), pending)


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

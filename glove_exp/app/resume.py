"""Resume: a config (``glove_exp.config_id``) with a FINISHED run in the experiment is not trained
again, and of two jobs racing on one config only the first run created goes on. Both rules are
searches of the store itself, so they hold on every store (SQLite, file, server, PostgreSQL) and
across machines."""

from __future__ import annotations

from mlflow.entities import Run, RunStatus

from glove_exp.app.identity import CONFIG_TAG
from glove_exp.app.store import Store

FINISHED, RUNNING = RunStatus.to_string(RunStatus.FINISHED), RunStatus.to_string(RunStatus.RUNNING)


class Superseded(Exception):
    """Another run owns this config: it finished first, or was created first and still runs."""

    def __init__(self, owner: Run, run_id: str):
        super().__init__(f"run {owner.info.run_id} owns the config of run {run_id}")
        self.owner, self.run_id = owner, run_id


def config_runs(store: Store, config_id: str) -> list[Run]:
    """The experiment's runs of ``config_id``, oldest first (ties by run id, the same order everywhere)."""
    runs = store.client.search_runs([store.experiment_id], f"tags.`{CONFIG_TAG}` = '{config_id}'")
    return sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))


def finished_run(store: Store, config_id: str) -> Run | None:
    """The first FINISHED run of ``config_id``, if any."""
    return next((run for run in config_runs(store, config_id) if run.info.status == FINISHED), None)


def owner(store: Store, config_id: str, run_id: str) -> Run | None:
    """Who owns ``config_id`` now that run ``run_id`` exists: None if ``run_id`` does (no FINISHED run,
    and no live run created before it), else that other run."""
    runs = config_runs(store, config_id)
    done = next((run for run in runs if run.info.status == FINISHED and run.info.run_id != run_id), None)
    if done is not None:
        return done
    first = next((run for run in runs if run.info.status == RUNNING), None)
    return None if first is None or first.info.run_id == run_id else first


def selected_val_accuracy(run: Run) -> float | None:
    """The validation accuracy of the model ``run`` kept (its last epoch's without early stopping)."""
    metrics = run.data.metrics
    return metrics.get("val/selected_accuracy", metrics.get("val/accuracy"))

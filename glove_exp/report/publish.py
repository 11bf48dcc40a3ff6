"""Report summaries written into MLflow through a store's own client: the ``--log`` report run
(:func:`log_report`) and a sweep's parent run (:func:`log_sweep_summary`) get the same content
(:func:`log_summary`)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from glove_exp.app.interrupts import Interrupts
from glove_exp.app.store import Store
from glove_exp.app.tracking import tracked_run
from glove_exp.core.errors import GloveExpError, first_line
from glove_exp.report.query import (
    FOUND_ARTIFACT,
    REPORT_TAG,
    STORE_ERRORS,
    finished_among,
    finished_children,
    is_summary_run,
    run_frame,
)
from glove_exp.report.render import best_group_line, summary_note, write_report
from glove_exp.report.statistics import best_group_metrics, check_sort, group_runs

PROG = "glove-exp-report"
TABLE_ARTIFACT = "results_table.json"  # the group table as an MLflow table (shown in the UI)


def log_summary(call: Callable[..., object], store: Store, groups: pd.DataFrame, files: list[Path]) -> None:
    """Onto the run that ``call`` writes to (``call(write, *args)`` runs ``write(run_id, *args)``): the best
    group's metrics (:func:`best_group_metrics`) and label (tag ``best_group``), the group table as an
    MLflow table (:data:`TABLE_ARTIFACT`, shown in the UI) and the report's files, its figure as
    :func:`write_report` drew it."""
    client = store.client
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in best_group_metrics(groups).items()]
    call(client.log_batch, metrics=metrics, tags=[RunTag("best_group", str(groups["group"].iloc[0])[:5000])])
    call(client.log_table, groups, artifact_file=TABLE_ARTIFACT)
    for path in files:
        call(client.log_artifact, str(path))


def log_report(store: Store, sweep: str | None, report_files: list[Path], groups: pd.DataFrame,
               params: dict[str, str], run_ids: list[str]) -> str:  # fmt: skip
    """The id of a new FINISHED run ``report-<sweep or experiment>`` (user and source tags as ``start_run``
    gives) with :func:`log_summary`'s content and ``params``; for a sweep, the parent of its runs that have
    none (the MLflow UI nests them under it)."""
    experiment = store.client.get_experiment(store.experiment_id).name
    run_name = f"report-{sweep or experiment}"
    tags = {REPORT_TAG: "true", **({"sweep_id": sweep} if sweep else {}), MLFLOW_RUN_NAME: run_name}
    try:
        with tracked_run(store, run_name, tags, Interrupts(PROG)) as run:
            run.log_params(params)  # each write on its own: a signal is raised between two of them
            log_summary(run.call, store, groups, report_files)
        if sweep:
            for child in run_ids:
                if MLFLOW_PARENT_RUN_ID not in store.client.get_run(child).data.tags:
                    store.client.set_tag(child, MLFLOW_PARENT_RUN_ID, run.run_id)
    except STORE_ERRORS as err:
        raise GloveExpError(f"cannot log the report to {store.uri}: {first_line(err)}") from err
    return run.run_id


def log_sweep_summary(store: Store, parent_run_id: str, found: Sequence[str] = ()) -> str:
    """Summarise the FINISHED children of sweep parent run ``parent_run_id`` (tag ``mlflow.parentRunId``)
    and the FINISHED runs ``found`` (those the sweep's skipped jobs found: another sweep's, or single
    runs; or a resumed sweep's children from before it was interrupted) onto it, per group of seeds
    (:func:`group_runs`), with :func:`log_summary`, and record the latter (:data:`FOUND_ARTIFACT`, which
    ``glove-exp-report --sweep`` reads); returns one line naming the best group. Without such runs it
    logs nothing and says so."""
    try:
        children = finished_children(store.client, [store.experiment_id], [parent_run_id])
        earlier = finished_among(store.client, [store.experiment_id], found)  # children too, on a resumed sweep
        listed = {run.info.run_id for run in children}
        runs = run_frame(children + [run for run in earlier if run.info.run_id not in listed])
        runs = runs[~is_summary_run(runs)] if not runs.empty else runs
        if runs.empty:
            return f"sweep: no FINISHED runs under parent run {parent_run_id}; nothing logged"
        if earlier:
            store.client.log_dict(
                parent_run_id, {"run_ids": sorted(run.info.run_id for run in earlier)}, FOUND_ARTIFACT
            )
        sort = check_sort(runs, None)
        groups, run_rows = group_runs(runs, None, sort)
        title = f"sweep {store.client.get_run(parent_run_id).info.run_name or parent_run_id}"
        note = summary_note(groups, len(runs), None, sort, len(earlier))
        with tempfile.TemporaryDirectory(prefix="glove-exp-sweep-") as tmp:
            files = write_report(groups, run_rows, Path(tmp), title, note)
            log_summary(lambda write, *args, **kw: write(parent_run_id, *args, **kw), store, groups, files)
    except STORE_ERRORS as err:
        raise GloveExpError(f"cannot log the sweep summary to {store.uri}: {first_line(err)}") from err
    return f"sweep: {best_group_line(groups)}"

"""Everything goes through an ``mlflow.MlflowClient`` of one URI, never MLflow's process-wide tracking
URI or fluent API. Sweep ids are the ``sweep_id`` tag: Hydra's sweep folder as the job saw it."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Experiment, Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from sqlalchemy.exc import SQLAlchemyError

from glove_exp.app.identity import ROLE_TAG, SWEEP_DIRS_TAG
from glove_exp.app.parent import SWEEP_ROLE, sweep_dirs
from glove_exp.app.schema import default_tracking_uri
from glove_exp.app.store import sqlite_path
from glove_exp.core.errors import GloveExpError, first_line
from glove_exp.report.statistics import column

REPORT_TAG = "glove_exp.report"  # on the runs ``--log`` writes; reports leave them out
SWEPT = f"tags.sweep_id != '' and tags.`{REPORT_TAG}` IS NULL"  # a sweep's runs and parent, not a report's
FOUND_ARTIFACT = "found_runs.json"  # on a sweep's parent: the runs its skipped jobs found ({"run_ids": [...]})
T = TypeVar("T")
STORE_ERRORS = (MlflowException, SQLAlchemyError, OSError)  # unreachable server, broken database file
PAGE_SIZE = 10_000  # runs per search request, as MLflow's fluent search_runs asks for


def store_error(uri: str, err: Exception) -> GloveExpError:
    return GloveExpError(f"cannot read the tracking store {uri}: {first_line(err)}")


def sweep_key(sweep: str) -> str:
    """The form sweep ids are compared in."""
    return os.path.normpath(sweep)


def sweep_spellings(sweep: str) -> set[str]:
    """``sweep`` normalised and, for a path that exists or is absolute, also absolute and relative to the
    cwd, so that ``./multirun/x/``, ``multirun/x`` and ``$PWD/multirun/x`` find the same sweep."""
    spellings = {sweep_key(sweep)}
    if os.path.isabs(sweep) or os.path.exists(sweep):
        absolute = os.path.abspath(sweep)
        spellings |= {sweep_key(absolute), sweep_key(os.path.relpath(absolute))}
    return spellings


def folder_match(spelling: str, stored: str) -> int:
    """How closely ``spelling`` (one of :func:`sweep_spellings`) names the folder stored as ``stored``: 0 not
    at all, else the length of the stored path matched; the same path, or an absolute one that ends with a
    folder stored relative to its sweep's cwd (``--sweep`` given the absolute path, or ``.`` inside the
    folder, from elsewhere than where the sweep ran)."""
    key = sweep_key(stored)
    ends = os.path.isabs(spelling) and not os.path.isabs(key) and not key.startswith(".")
    return len(key) if spelling == key or (ends and spelling.endswith(os.sep + key)) else 0


def closest(items: Sequence[T], score: Callable[[T], int]) -> T | None:
    """The first of ``items`` (newest first) with the highest :func:`folder_match` ``score``; None if none matches."""
    scores = [score(item) for item in items]
    best = max(range(len(items)), key=scores.__getitem__, default=None)
    return items[best] if best is not None and scores[best] else None


def quote(value: str) -> str:
    """A string literal for an MLflow filter."""
    mark = '"' if "'" in value else "'"
    if mark in value:
        raise GloveExpError(f"cannot filter on a value with both kinds of quote: {value!r}")
    return f"{mark}{value}{mark}"


def open_client(uri: str) -> mlflow.MlflowClient:
    """A client of the existing store at ``uri``; a missing or unreadable store is a user error (a
    missing SQLite store is not opened: that would create an empty database)."""
    path = sqlite_path(uri)  # without the URI's ?query (e.g. ?timeout=10)
    if path is not None and not path.is_file():
        raise GloveExpError(f"no MLflow database at {path}; run glove-exp first or pass --tracking-uri")
    try:
        return mlflow.MlflowClient(uri)
    except STORE_ERRORS as err:
        raise store_error(uri, err) from err


def find_experiment(client: mlflow.MlflowClient, name: str) -> Experiment:
    try:
        found = client.get_experiment_by_name(name)
        if found is None:
            available = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
            raise GloveExpError(f"unknown experiment {name!r} in {client.tracking_uri}; available: {available}")
    except STORE_ERRORS as err:
        raise store_error(client.tracking_uri, err) from err
    return found


def search_frame(client: mlflow.MlflowClient, experiment_ids: list[str], filter_string: str = "") -> pd.DataFrame:
    """The runs as MLflow's fluent ``search_runs(output_format="pandas")`` gives them: ``run_id``,
    ``experiment_id``, ``status``, ``artifact_uri``, ``start_time`` and ``end_time`` (UTC datetimes),
    then ``metrics.<key>`` (NaN where a run lacks it), ``params.<key>`` and ``tags.<key>`` (None)."""
    return run_frame(search_all(client, experiment_ids, filter_string))


def search_all(client: mlflow.MlflowClient, experiment_ids: list[str], filter_string: str = "") -> list[Run]:
    """Every active run that ``filter_string`` selects, page by page, newest first."""
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, ViewType.ACTIVE_ONLY, PAGE_SIZE, page_token=token)
        runs, token = runs + list(page), page.token
        if not token:
            return runs


def run_frame(runs: list[Run]) -> pd.DataFrame:
    """``runs`` as :func:`search_frame` gives them."""
    data: dict[str, list[object]] = {
        "run_id": [run.info.run_id for run in runs],
        "experiment_id": [run.info.experiment_id for run in runs],
        "status": [run.info.status for run in runs],
        "artifact_uri": [run.info.artifact_uri for run in runs],
        "start_time": [pd.to_datetime(run.info.start_time, unit="ms", utc=True) for run in runs],
        "end_time": [pd.to_datetime(run.info.end_time, unit="ms", utc=True) for run in runs],
    }
    for prefix, null in (("metrics", np.nan), ("params", None), ("tags", None)):
        values = [getattr(run.data, prefix) for run in runs]
        keys = dict.fromkeys(key for run_values in values for key in run_values)
        data |= {f"{prefix}.{key}": [run_values.get(key, null) for run_values in values] for key in keys}
    return pd.DataFrame(data)


def is_summary_run(runs: pd.DataFrame) -> pd.Series:
    """Per run, whether it summarises others rather than trains: a sweep's parent or a ``--log`` report run."""
    return (column(runs, f"tags.{ROLE_TAG}") == SWEEP_ROLE).fillna(False) | (
        column(runs, f"tags.{REPORT_TAG}") == "true"
    ).fillna(False)


def search(
    client: mlflow.MlflowClient, experiment: Experiment, filter_string: str = "", summaries: bool = False
) -> pd.DataFrame:
    """All runs of ``experiment`` matching ``filter_string``, newest first; sweep parents and report runs
    (:func:`is_summary_run`) left out unless ``summaries``."""
    try:
        runs = search_frame(client, [experiment.experiment_id], filter_string)
    except STORE_ERRORS as err:
        raise store_error(client.tracking_uri, err) from err
    if runs.empty:
        return runs
    runs = runs if summaries else runs[~is_summary_run(runs)]
    return runs.sort_values("start_time", ascending=False, kind="stable")


def runs_frame(
    experiment: str, tracking_uri: str | None = None, filter_string: str = "", summaries: bool = False
) -> pd.DataFrame:
    """The runs of ``experiment`` (any status; ``filter_string`` as MLflow's search takes it) in the store
    at ``tracking_uri`` (default: glove-exp's, ``$MLFLOW_TRACKING_URI`` else ``mlflow.db`` in the cwd),
    one row per run, newest first, in the frame of ``mlflow.search_runs(output_format="pandas")``
    (:func:`search_frame`), read through a client of that store: MLflow's process-wide URI is left alone.
    Sweep parents (tag ``glove_exp.role=sweep``) and report runs (``glove_exp.report=true``) are left
    out unless ``summaries``; their tags tell them apart."""
    uri = tracking_uri or default_tracking_uri()
    client = open_client(uri)
    return search(client, find_experiment(client, experiment), filter_string, summaries).reset_index(drop=True)


def resolve_sweep(client: mlflow.MlflowClient, experiment: Experiment, sweep: str) -> str:
    """The ``sweep_id`` tag as stored for ``sweep`` (``latest``: :func:`latest_sweep`). Parent runs count:
    a sweep whose jobs all found their configs finished has no runs of its own. A folder of a sweep that
    the same command ran again since is that sweep's newest folder (:func:`reopened`)."""
    try:
        if sweep == "latest":
            return latest_sweep(client, experiment)
        stored = stored_sweep(client, experiment, sweep)
        return reopened(client, experiment, stored) or stored
    except STORE_ERRORS as err:
        raise store_error(client.tracking_uri, err) from err


def reopened(client: mlflow.MlflowClient, experiment: Experiment, sweep_id: str) -> str | None:
    """The ``sweep_id`` of the newest parent run that ran in folder ``sweep_id`` (its
    :data:`~glove_exp.app.identity.SWEEP_DIRS_TAG`): the folder it ran in last, as the same command
    again reopens the parent; None where no parent remembers that folder."""
    wanted = sweep_key(sweep_id)
    like = quote(f"%{os.path.basename(wanted)}%")  # "%" or "_" in a folder's name only widen the search
    where = f"tags.`{ROLE_TAG}` = {quote(SWEEP_ROLE)} and tags.`{SWEEP_DIRS_TAG}` LIKE {like}"
    parents = search_all(client, [experiment.experiment_id], where)  # newest first
    parent = closest(parents, lambda p: max((folder_match(wanted, d) for d in sweep_dirs(p.data.tags)), default=0))
    return parent.data.tags["sweep_id"] if parent is not None else None


def latest_sweep(client: mlflow.MlflowClient, experiment: Experiment) -> str:
    """That of the run that started or ended last, in two one-run searches (MLflow sorts the end time of
    running runs, None, last). A parent reopened by the same command again ends after its first sweep's runs."""
    newest_first = [newest(client, experiment, SWEPT, f"attributes.{time} DESC") for time in ("end_time", "start_time")]
    runs = [run for run in newest_first if run is not None]
    if not runs:
        raise GloveExpError(f"no sweeps in experiment {experiment.name!r}")
    return max(runs, key=lambda run: run.info.end_time or run.info.start_time).data.tags["sweep_id"]


def stored_sweep(client: mlflow.MlflowClient, experiment: Experiment, sweep: str) -> str:
    """``sweep`` as stored: one one-run search per spelling, and all the sweeps' runs only when none is
    stored so (``hydra.sweep.dir=./sweeps/a/``) or the sweep is unknown."""
    wanted = sweep_spellings(sweep)
    exact = [newest(client, experiment, f"tags.sweep_id = {quote(s)}") for s in sorted(wanted | {sweep})]
    if runs := [run for run in exact if run is not None]:
        return max(runs, key=lambda run: run.info.start_time).data.tags["sweep_id"]
    ids = list(
        dict.fromkeys(run.data.tags["sweep_id"] for run in search_all(client, [experiment.experiment_id], SWEPT))
    )
    if (found := closest(ids, lambda stored: max(folder_match(spelling, stored) for spelling in wanted))) is not None:
        return found
    for spelling in sorted(wanted):  # an earlier folder of a sweep run again, whose jobs all found their runs
        if (moved := reopened(client, experiment, spelling)) is not None:
            return moved
    raise GloveExpError(
        f"unknown sweep {sweep!r} in experiment {experiment.name!r}; recent sweeps: {', '.join(ids[:5]) or 'none'}"
    )


def newest(
    client: mlflow.MlflowClient, experiment: Experiment, where: str, order: str = "attributes.start_time DESC"
) -> Run | None:
    """The first run that ``where`` selects in ``order``, if any."""
    runs = client.search_runs([experiment.experiment_id], where, ViewType.ACTIVE_ONLY, 1, order_by=[order])
    return runs[0] if runs else None


def finished_among(client: mlflow.MlflowClient, experiment_ids: list[str], run_ids: Iterable[str]) -> list[Run]:
    """The FINISHED runs among ``run_ids``, in one search."""
    listed = ", ".join(quote(run_id) for run_id in sorted(set(run_ids)))
    if not listed:
        return []
    return search_all(client, experiment_ids, f"attributes.run_id IN ({listed}) and attributes.status = 'FINISHED'")


def sweep_parents(client: mlflow.MlflowClient, experiment: Experiment, sweep_id: str) -> list[Run]:
    where = f"tags.sweep_id = {quote(sweep_id)} and tags.`{ROLE_TAG}` = {quote(SWEEP_ROLE)}"
    return search_all(client, [experiment.experiment_id], where)


def finished_children(client: mlflow.MlflowClient, experiment_ids: list[str], parent_ids: Iterable[str]) -> list[Run]:
    """The FINISHED runs under the runs ``parent_ids`` (tag ``mlflow.parentRunId``), whichever folder they ran in."""
    where = f"tags.`{MLFLOW_PARENT_RUN_ID}` = {{}} and attributes.status = 'FINISHED'"
    return [run for parent in parent_ids for run in search_all(client, experiment_ids, where.format(quote(parent)))]


def found_by_sweep(client: mlflow.MlflowClient, parents: list[Run]) -> set[str]:
    """The runs that the skipped jobs of the sweep of ``parents`` found (another sweep's, or single runs),
    as its parent runs recorded them (:data:`FOUND_ARTIFACT`)."""
    found: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="glove-exp-report-") as tmp:
        for parent in parents:
            run_id = parent.info.run_id
            if any(item.path == FOUND_ARTIFACT for item in client.list_artifacts(run_id)):
                path = client.download_artifacts(run_id, FOUND_ARTIFACT, str(Path(tmp) / run_id))
                found |= set(json.loads(Path(path).read_text(encoding="utf-8"))["run_ids"])
    return found


@dataclass(frozen=True)
class Selection:
    """The FINISHED runs a report reads, newest first; for a sweep, its ``sweep_id`` as stored and the ids
    of the runs its skipped jobs found (:func:`found_by_sweep`), which are among ``runs``."""

    runs: pd.DataFrame
    sweep: str | None = None
    found: frozenset[str] = frozenset()


def of_sweep(client: mlflow.MlflowClient, experiment: Experiment, sweep_id: str, runs: pd.DataFrame) -> Selection:
    """A sweep's own ``runs`` (its ``sweep_id`` tag), the FINISHED runs its skipped jobs found, and its
    parent's FINISHED children from the folders it ran in before (a sweep interrupted again)."""
    try:
        parents = sweep_parents(client, experiment, sweep_id)
        earlier = finished_among(client, [experiment.experiment_id], found_by_sweep(client, parents))
        children = finished_children(client, [experiment.experiment_id], (p.info.run_id for p in parents))
    except STORE_ERRORS as err:
        raise store_error(client.tracking_uri, err) from err
    found = frozenset(run.info.run_id for run in earlier)
    own = set(runs["run_id"])
    others = list({run.info.run_id: run for run in earlier + children if run.info.run_id not in own}.values())
    if others:
        runs = pd.concat([runs, run_frame(others)]).sort_values("start_time", ascending=False, kind="stable")
    return Selection(runs.reset_index(drop=True), sweep_id, found)


def load_runs(uri: str, experiment: str, sweep: str | None = None) -> Selection:
    """FINISHED runs of ``experiment``, report runs left out, or those of one ``sweep`` (``latest`` for the
    newest) with the runs its skipped jobs found."""
    client = open_client(uri)
    found = find_experiment(client, experiment)
    query, where, stored = "attributes.status = 'FINISHED'", f"experiment {experiment!r}", None
    if sweep is not None:
        stored = resolve_sweep(client, found, sweep)
        query += f" and tags.sweep_id = {quote(stored)}"
        where = f"sweep {stored!r} of {where}"
    runs = search(client, found, query)
    selection = of_sweep(client, found, stored, runs) if stored is not None else Selection(runs.reset_index(drop=True))
    if selection.runs.empty:
        raise GloveExpError(f"no FINISHED runs in {where}")
    return selection

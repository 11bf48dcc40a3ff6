"""The ``glove-exp-report`` console script: compare the FINISHED runs of an experiment or a sweep.

It reads MLflow (never the sweep folders). Runs that differ only in ``trainer.seed`` form a group
(``--by KEY`` groups by chosen params instead); each group gets n, mean, sample standard deviation
and a 95 % Student t interval of the validation and test accuracy, and groups are ranked by mean
validation accuracy. The validation accuracy is that of the model that was kept and tested
(``val/selected_accuracy``: the best epoch with early stopping, else the last one), never the best
epoch's; runs without a validation split show "–" and rank last. The test columns are for
reading, not choosing.

Output: the group table on stdout, and ``results.md`` (groups and runs), ``results.csv`` (one row
per group), ``runs.csv`` (one row per run; raw values, fractions not percentages) and
``accuracy.png`` (group means with 95 % interval bars). With ``--log`` they go to a run
``report-<sweep or experiment>`` tagged ``glove_exp.report=true``, with the best group's metrics
and the group table as an MLflow table; for a sweep it becomes the parent of the sweep's runs.
Later reports leave such runs out.

Metric names: current runs log ``val/selected_accuracy``, ``test/accuracy``, ...; stores written
before carry ``selected_val_accuracy``, ``test_accuracy``, ...; both are read (see
:data:`METRIC_ALIASES`).

Sweep ids are the ``sweep_id`` tag, Hydra's sweep folder as the job saw it (``multirun/<date>/<time>``
by default). ``--sweep`` is compared after ``os.path.normpath`` and, for a path that exists or is
absolute, also in its absolute and cwd-relative spellings, so ``./multirun/x/``, ``multirun/x`` and
``$PWD/multirun/x`` all find the same sweep.
"""

from __future__ import annotations

import argparse
import html
import math
import os
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import mlflow
import pandas as pd
from matplotlib.figure import Figure
from mlflow.exceptions import MlflowException
from scipy import stats
from sqlalchemy.exc import SQLAlchemyError

from glove_exp.app import tracking
from glove_exp.app.interrupts import Interrupts
from glove_exp.core.errors import GloveExpError
from glove_exp.io.files import spreadsheet_safe

PROG = "glove-exp-report"
REPORT_TAG = "glove_exp.report"
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests child runs by
FILES = ("results.md", "results.csv", "runs.csv", "accuracy.png")
TABLE_ARTIFACT = "results_table.json"  # the group table as an MLflow table (shown in the UI)
SEED_PARAM = "params.trainer.seed"
MISSING = "–"
PLOT_LIMIT = 50  # groups drawn in accuracy.png (the best ones)
# current metric name -> older spellings, read when a run lacks the current one
METRIC_ALIASES: dict[str, tuple[str, ...]] = {
    "val/selected_accuracy": ("selected_val_accuracy",),
    "test/accuracy": ("test_accuracy",),
    "test/macro_f1": ("test_macro_f1",),
    "train/epochs_run": ("epochs_run",),
    "train/best_epoch": ("best_epoch",),
    "train/selected_epoch": ("selected_epoch",),
    "time/train_s": ("train_time_s",),
    "time/total_s": ("total_time_s",),
    "train/loss": ("train_loss",),
    "train/accuracy": ("train_accuracy",),
    "val/loss": ("val_loss",),
    "val/accuracy": ("val_accuracy",),
    "time/epoch_s": ("epoch_time_s",),
}
DEFAULT_SORT = "val/selected_accuracy"
# run-table column -> MLflow columns, the first present wins
DESCRIBE: dict[str, tuple[str, ...]] = {
    "dataset": ("tags.dataset", "params.dataset.name"),
    "embeddings": ("tags.embeddings", "params.embeddings.name"),
    "pooling": ("tags.pooling", "params.model.pooling"),
    "max_tokens": ("params.trainer.max_tokens",),
    "hidden_sizes": ("params.model.hidden_sizes",),
    "activation": ("params.model.activation",),
    "optimizer": ("params.optimizer.name",),
    "lr": ("params.optimizer.lr",),
}
# run-table column -> metric
RUN_METRICS = {
    "val_accuracy": "val/selected_accuracy",
    "test_accuracy": "test/accuracy",
    "macro_f1": "test/macro_f1",
    "epochs": "train/epochs_run",
    "train_s": "time/train_s",
}
INTERVALS = ("val_accuracy", "test_accuracy")  # summarised by mean, std and 95 % interval per group
STORE_ERRORS = (MlflowException, SQLAlchemyError, OSError)  # unreachable server, broken database file


def _store_error(uri: str, err: Exception) -> GloveExpError:
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return GloveExpError(f"cannot read the tracking store {uri}: {first_line}")


def default_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the current folder (as ``glove-exp`` does)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd()}/mlflow.db"


def sweep_key(sweep: str) -> str:
    """The form sweep ids are compared in."""
    return os.path.normpath(sweep)


def sweep_spellings(sweep: str) -> set[str]:
    """``sweep`` as given, absolute, and relative to the cwd (all normalised)."""
    spellings = {sweep_key(sweep)}
    if os.path.isabs(sweep) or os.path.exists(sweep):
        absolute = os.path.abspath(sweep)
        spellings |= {sweep_key(absolute), sweep_key(os.path.relpath(absolute))}
    return spellings


def _column(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name] if name in runs.columns else pd.Series(pd.NA, index=runs.index, dtype=object)


def _first_present(runs: pd.DataFrame, names: tuple[str, ...]) -> pd.Series:
    """Per run, the value of the first of ``names`` that it has."""
    values = _column(runs, names[0])
    for name in names[1:]:
        values = values.where(values.notna(), _column(runs, name))
    return values


def _quote(value: str) -> str:
    """A string literal for an MLflow filter."""
    quote = '"' if "'" in value else "'"
    if quote in value:
        raise GloveExpError(f"cannot filter on a value with both kinds of quote: {value!r}")
    return f"{quote}{value}{quote}"


def _check_store(uri: str) -> None:
    """A SQLite store must already exist: opening a missing one would create an empty database."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///").split("?")[0])
        if not path.is_file():
            raise GloveExpError(f"no MLflow database at {path}; run glove-exp first or pass --tracking-uri")


def _search(experiment: str, filter_string: str = "") -> pd.DataFrame:
    """All runs of ``experiment`` matching ``filter_string``, newest first, report runs left out."""
    try:
        runs = mlflow.search_runs(experiment_names=[experiment], filter_string=filter_string, output_format="pandas")
    except STORE_ERRORS as err:
        raise _store_error(mlflow.get_tracking_uri(), err) from err
    if runs.empty:
        return runs
    runs = runs[_column(runs, f"tags.{REPORT_TAG}") != "true"]
    return runs.sort_values("start_time", ascending=False, kind="stable")


def _check_experiment(uri: str, experiment: str) -> None:
    try:
        client = mlflow.MlflowClient(uri)
        if client.get_experiment_by_name(experiment) is None:
            available = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
            raise GloveExpError(f"unknown experiment {experiment!r} in {uri}; available: {available}")
    except STORE_ERRORS as err:
        raise _store_error(uri, err) from err


def resolve_sweep(experiment: str, sweep: str) -> str:
    """The ``sweep_id`` tag as stored for ``sweep`` (``latest``: that of the newest run with one)."""
    runs = _search(experiment)
    ids = [s for s in _column(runs, "tags.sweep_id").dropna().tolist() if s]  # newest first
    if sweep == "latest":
        if not ids:
            raise GloveExpError(f"no sweeps in experiment {experiment!r}")
        return ids[0]
    wanted = sweep_spellings(sweep)
    for stored in ids:
        if sweep_key(stored) in wanted:
            return stored
    available = list(dict.fromkeys(ids))[:5]
    raise GloveExpError(
        f"unknown sweep {sweep!r} in experiment {experiment!r}; recent sweeps: {', '.join(available) or 'none'}"
    )


def load_runs(uri: str, experiment: str, sweep: str | None = None) -> pd.DataFrame:
    """FINISHED runs of ``experiment`` (of one sweep, or ``latest``), as ``mlflow.search_runs`` gives them.

    Report runs are left out. Raises :class:`GloveExpError` for a missing store, experiment or sweep,
    or when nothing finished.
    """
    _check_store(uri)
    mlflow.set_tracking_uri(uri)
    _check_experiment(uri, experiment)
    query = "attributes.status = 'FINISHED'"
    where = f"experiment {experiment!r}"
    if sweep is not None:
        stored = resolve_sweep(experiment, sweep)
        query += f" and tags.sweep_id = {_quote(stored)}"
        where = f"sweep {stored!r} of {where}"
    runs = _search(experiment, query)
    if runs.empty:
        raise GloveExpError(f"no FINISHED runs in {where}")
    return runs.reset_index(drop=True)


def canonical_metric(name: str) -> str:
    """The current spelling of a metric name (``test_accuracy`` -> ``test/accuracy``)."""
    name = name.removeprefix("metrics.")
    return next((new for new, old in METRIC_ALIASES.items() if name in old), name)


def metric(runs: pd.DataFrame, name: str) -> pd.Series:
    """Per run, metric ``name`` under its current spelling, else an older one; floats, NaN where absent."""
    new = canonical_metric(name)
    columns = tuple(f"metrics.{n}" for n in (new, *METRIC_ALIASES.get(new, ())))
    return pd.to_numeric(_first_present(runs, columns), errors="coerce").astype(float)


def check_sort(runs: pd.DataFrame, sort: str) -> str:
    """The current spelling of ``sort``; a metric no run has is a user error that lists those there are."""
    wanted = canonical_metric(sort)
    available = sorted({canonical_metric(c) for c in runs.columns if c.startswith("metrics.")})
    if wanted not in available:
        raise GloveExpError(f"unknown metric {sort!r} for --sort; available: {', '.join(available) or 'none'}")
    return wanted


def group_params(runs: pd.DataFrame, by: list[str] | None) -> list[str]:
    """The ``params.*`` columns that define a group: ``by`` in its order, else every param but
    ``trainer.seed``, sorted."""
    params = sorted(c for c in runs.columns if c.startswith("params."))
    if by is None:
        return [c for c in params if c != SEED_PARAM]
    unknown = [key for key in by if f"params.{key.removeprefix('params.')}" not in params]
    if unknown:
        available = ", ".join(sorted(c.removeprefix("params.") for c in params)) or "none"
        raise GloveExpError(f"unknown param {unknown[0]!r} for --by; available: {available}")
    return list(dict.fromkeys(f"params.{key.removeprefix('params.')}" for key in by))


def _param_text(value: object, digits: int) -> str:
    """A param value for a label: non-integer numbers to ``digits`` significant digits."""
    if _is_missing(value):
        return MISSING
    text = str(value)
    try:
        number = float(text)
    except ValueError:
        return text
    return f"{number:.{digits}g}" if math.isfinite(number) and not re.fullmatch(r"-?\d+", text) else text


def group_labels(keys: pd.DataFrame, names: list[str], by_given: bool) -> list[str]:
    """``key=value`` of the group params (``--by``), or of those that differ between groups; a lone
    group without ``--by`` is named by its runs' name(s). Numbers get as few digits as keep labels apart."""
    shown = list(keys.columns) if by_given else [c for c in keys.columns if keys[c].nunique(dropna=False) > 1]
    if not shown:
        return [" / ".join(dict.fromkeys(names)) or "all runs"] * len(keys)
    for digits in range(3, 18):
        labels = [
            " ".join(f"{c.removeprefix('params.')}={_param_text(v, digits)}" for c, v in zip(shown, row))
            for row in keys[shown].itertuples(index=False)
        ]
        if len(set(labels)) == len(labels):
            break
    return labels


def run_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: name, seed, :data:`DESCRIBE` params and :data:`RUN_METRICS` (raw values)."""
    table = pd.DataFrame(
        {"run": _column(runs, "tags.mlflow.runName"), "seed": pd.to_numeric(_column(runs, SEED_PARAM), errors="coerce")}
    )
    for name, sources in DESCRIBE.items():
        table[name] = _first_present(runs, sources)
    table["lr"] = pd.to_numeric(table["lr"], errors="coerce")
    for name, key in RUN_METRICS.items():
        table[name] = metric(runs, key)
    table["epochs"] = table["epochs"].fillna(pd.to_numeric(_column(runs, "params.trainer.epochs"), errors="coerce"))
    table["run_id"] = runs["run_id"]
    return table


def _interval(values: pd.Series) -> pd.Series:
    """Count, mean, sample std and the 95 % Student t interval (NaN below two values) of one group's values."""
    values = values.dropna()
    n, mean, std = len(values), values.mean(), values.std(ddof=1)
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return pd.Series({"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half})


def group_runs(
    runs: pd.DataFrame, by: list[str] | None = None, sort: str = DEFAULT_SORT
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(groups, run rows)``: one row per group (see the module docstring), best mean ``sort`` first,
    and :func:`run_table` with a ``group`` column, in group order and best ``sort`` first within a group."""
    sort = check_sort(runs, sort)
    keys = group_params(runs, by)
    table = run_table(runs)
    table["_sort"] = metric(runs, sort)
    gid = runs.groupby(keys, dropna=False, sort=False).ngroup() if keys else pd.Series(0, index=runs.index)
    grouped = table.groupby(gid, sort=False)
    first = runs.groupby(gid, sort=False)[keys].first() if keys else pd.DataFrame(index=[0])
    names = grouped["run"].agg(lambda s: " / ".join(dict.fromkeys(s.dropna().astype(str)))).tolist()
    groups = pd.DataFrame({"group": group_labels(first, names, by is not None)}, index=first.index)
    for name in DESCRIBE:  # context columns, where every group has one value
        if grouped[name].nunique(dropna=False).max() == 1:
            groups[name] = grouped[name].first()
    groups["n"] = grouped.size()
    groups["epochs_min"], groups["epochs_max"] = grouped["epochs"].min(), grouped["epochs"].max()
    for name in INTERVALS:
        summary = grouped[name].apply(_interval).unstack().astype({"n": int})
        for stat in summary.columns:
            groups[f"{name}_{stat}"] = summary[stat]
    groups["macro_f1_mean"] = grouped["macro_f1"].mean()
    groups["train_s_mean"] = grouped["train_s"].mean()
    groups["sort_mean"] = grouped["_sort"].mean()
    groups["run_ids"] = grouped["run_id"].agg(" ".join)
    groups = groups.sort_values("sort_mean", ascending=False, na_position="last", kind="stable")
    rank = pd.Series(range(len(groups)), index=groups.index)
    table["group"] = groups["group"].reindex(gid).to_numpy()
    table["_rank"] = rank.reindex(gid).to_numpy()
    table = table.sort_values(["_rank", "_sort"], ascending=[True, False], na_position="last", kind="stable")
    run_rows = table[["group", *(c for c in table.columns if c not in ("group", "_rank", "_sort"))]]
    groups = groups.rename(columns={"sort_mean": f"{sort}_mean"})
    if sort in RUN_METRICS.values():  # already a column
        groups = groups.drop(columns=f"{sort}_mean")
    return groups.reset_index(drop=True), run_rows.reset_index(drop=True)


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _text(value: object) -> str:
    """A Markdown cell: one line, ``\\`` and ``|`` escaped, no raw HTML."""
    if _is_missing(value):
        return MISSING
    one_line = re.sub(r"\s+", " ", str(value)).strip()
    return html.escape(one_line, quote=False).replace("\\", "\\\\").replace("|", "\\|")


def _number(spec: str, scale: float = 1.0) -> Callable[[object], str]:
    return lambda value: MISSING if _is_missing(value) else format(scale * float(value), spec)


_percent = _number(".2f", 100.0)


def _short_id(value: object) -> str:
    return str(value)[:8]


def _span(low: pd.Series, high: pd.Series, fmt: Callable[[object], str], template: str, collapse: bool) -> pd.Series:
    """``template`` filled with formatted ``low`` and ``high`` ("–" where missing; one value where they
    agree and ``collapse``)."""
    return pd.Series(
        [
            MISSING if _is_missing(lo) else fmt(lo) if collapse and lo == hi else template.format(fmt(lo), fmt(hi))
            for lo, hi in zip(low, high)
        ],
        index=low.index,
        dtype=object,
    )


def _display(table: pd.DataFrame, columns: dict[str, tuple[str, Callable[[object], str]]]) -> pd.DataFrame:
    """Cells as text: ``columns`` maps a table column to (header, formatter); absent columns are skipped."""
    return pd.DataFrame(
        {header: table[name].map(fmt) for name, (header, fmt) in columns.items() if name in table.columns}
    )


def common_settings(groups: pd.DataFrame) -> dict[str, object]:
    """The :data:`DESCRIBE` columns with one value in every group (the group table leaves them out)."""
    return {
        name: groups[name].iloc[0]
        for name in DESCRIBE
        if name in groups.columns and groups[name].nunique(dropna=False) == 1
    }


def group_display(groups: pd.DataFrame) -> pd.DataFrame:
    """The group table as Markdown-ready text: percentages, ``lr`` to 3 significant digits, "–" for
    missing; context columns only where groups differ in them."""
    partial = (groups["val_accuracy_n"] > 0) & (groups["val_accuracy_n"] < groups["n"])
    shown = groups.drop(columns=list(common_settings(groups))).assign(
        n=[f"{n} ({k} with val)" if p else str(n) for n, k, p in zip(groups["n"], groups["val_accuracy_n"], partial)],
        epochs=_span(groups["epochs_min"], groups["epochs_max"], _number(".0f"), "{}–{}", collapse=True),
        **{
            f"{n}_ci": _span(groups[f"{n}_ci_low"], groups[f"{n}_ci_high"], _percent, "[{}, {}]", False)
            for n in INTERVALS
        },
    )
    columns = {"group": ("config", _text)}
    columns |= {name: (name.replace("_", " "), _text) for name in DESCRIBE if name != "lr"}
    columns |= {
        "lr": ("lr", _number(".3g")),
        "n": ("n", str),  # runs; with validation where only some have it
        "epochs": ("epochs", str),
        "val_accuracy_mean": ("val acc %", _percent),
        "val_accuracy_std": ("val sd", _percent),
        "val_accuracy_ci": ("val 95% CI", str),
        "test_accuracy_mean": ("test acc %", _percent),
        "test_accuracy_std": ("test sd", _percent),
        "test_accuracy_ci": ("test 95% CI", str),
        "macro_f1_mean": ("macro-F1 %", _percent),
        "train_s_mean": ("train s", _number(".1f")),
    }
    columns |= {c: (f"mean {c.removesuffix('_mean')}", _number(".4g")) for c in groups.columns if "/" in c}
    return _display(shown, columns)


def run_display(run_rows: pd.DataFrame) -> pd.DataFrame:
    """The per-run table as Markdown-ready text."""
    return _display(
        run_rows,
        {
            "run": ("run", _text),
            "seed": ("seed", _number(".0f")),
            "group": ("config", _text),
            "epochs": ("epochs", _number(".0f")),
            "val_accuracy": ("val acc %", _percent),
            "test_accuracy": ("test acc %", _percent),
            "macro_f1": ("macro-F1 %", _percent),
            "train_s": ("train s", _number(".1f")),
            "run_id": ("run id", _short_id),
        },
    )


def to_markdown(display: pd.DataFrame) -> str:
    """A GitHub Markdown table of text cells (from :func:`group_display` / :func:`run_display`)."""
    left = {
        "config",
        "run",
        *(name.replace("_", " ") for name in DESCRIBE if name not in ("lr", "max_tokens")),
        "run id",
    }
    align = ["left" if header in left else "right" for header in display.columns]
    return display.to_markdown(index=False, tablefmt="pipe", disable_numparse=True, colalign=align) + "\n"


def write_csv(table: pd.DataFrame, path: Path) -> None:
    table.map(spreadsheet_safe).to_csv(path, index=False)


def accuracy_figure(groups: pd.DataFrame, title: str) -> Figure:
    """Group means of validation and test accuracy (%) with 95 % interval bars, best group on top."""
    shown = groups.head(PLOT_LIMIT)
    labels = [textwrap.fill(f"{label} (n={n})", width=40) for label, n in zip(shown["group"], shown["n"])]
    row_height = 0.18 * max(label.count("\n") + 1 for label in labels) + 0.12
    fig = Figure(figsize=(10, 1.4 + row_height * len(shown)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    positions = list(range(len(shown)))
    for ax, name, split in zip(axes, INTERVALS, ("validation", "test")):
        mean = 100 * shown[f"{name}_mean"]
        half = (100 * (shown[f"{name}_ci_high"] - shown[f"{name}_mean"])).fillna(0.0)
        ax.errorbar(mean, positions, xerr=half, fmt="o", capsize=3, color="tab:blue")
        ax.set_xlabel(f"{split} accuracy (%)\ngroup mean ± 95 % interval (Student t; none for n=1)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(positions, labels=labels, fontsize=8)
    axes[0].invert_yaxis()
    more = f" (best {PLOT_LIMIT} of {len(groups)} groups)" if len(groups) > PLOT_LIMIT else ""
    fig.suptitle(textwrap.fill(title + more, width=100), fontsize=10)
    return fig


def write_report(
    groups: pd.DataFrame, run_rows: pd.DataFrame, out: Path, title: str, note: str
) -> tuple[list[Path], Figure]:
    """:data:`FILES` in ``out``; returns their paths and the figure. A folder that cannot be written is a user error."""
    md, groups_csv, runs_csv, png = (out / name for name in FILES)
    text = (
        f"# {_text(title)}\n\n{_text(note)}\n\n{to_markdown(group_display(groups))}\n"
        f"## Runs\n\n{to_markdown(run_display(run_rows))}"
    )
    figure = accuracy_figure(groups, title)
    try:
        out.mkdir(parents=True, exist_ok=True)
        md.write_text(text, encoding="utf-8")
        write_csv(groups, groups_csv)
        write_csv(run_rows, runs_csv)
        figure.savefig(png, dpi=120)
    except OSError as err:
        raise GloveExpError(f"cannot write the report to {out}: {err.strerror or err}") from err
    return [md, groups_csv, runs_csv, png], figure


def best_group_metrics(groups: pd.DataFrame) -> dict[str, float]:
    """The top group's summary, as metrics for the report run (missing values left out)."""
    best = groups.iloc[0]
    values = {
        "val/accuracy_mean": best["val_accuracy_mean"],
        "val/accuracy_std": best["val_accuracy_std"],
        "val/accuracy_ci95": best["val_accuracy_ci_high"] - best["val_accuracy_mean"],
        "test/accuracy_mean": best["test_accuracy_mean"],
        "test/accuracy_std": best["test_accuracy_std"],
        "test/accuracy_ci95": best["test_accuracy_ci_high"] - best["test_accuracy_mean"],
        "test/macro_f1_mean": best["macro_f1_mean"],
        "n_runs": best["n"],
        "n_groups": len(groups),
    }
    return {k: float(v) for k, v in values.items() if not _is_missing(v)}


def log_report(uri: str, experiment: str, sweep: str | None, report_files: tuple[list[Path], Figure], groups: pd.DataFrame,
               params: dict[str, str], run_ids: list[str]) -> str:  # fmt: skip
    """A new FINISHED run ``report-<sweep or experiment>`` with the best group's metrics (``val/accuracy_mean``,
    ...), the group table (:data:`TABLE_ARTIFACT`), the figure and the files; for a sweep, the parent of
    the sweep's runs that have none (the MLflow UI nests them under it). Returns its id."""
    files, figure = report_files
    tags = {
        REPORT_TAG: "true",
        "best_group": str(groups["group"].iloc[0])[:5000],
        **({"sweep_id": sweep} if sweep else {}),
    }
    experiment_id = tracking.open_experiment(uri, experiment)
    try:
        with tracking.tracked_run(experiment_id, f"report-{sweep or experiment}", tags, Interrupts(PROG)) as report_run:
            report_run.log_params(params)
            report_run.log_metrics(best_group_metrics(groups))
            report_run.call(mlflow.log_table, groups, artifact_file=TABLE_ARTIFACT)
            report_run.call(mlflow.log_figure, figure, FILES[-1])
            for path in files[:-1]:
                report_run.call(mlflow.log_artifact, str(path))
        if sweep:
            client = mlflow.MlflowClient(uri)
            for run_id in run_ids:
                if PARENT_TAG not in client.get_run(run_id).data.tags:
                    client.set_tag(run_id, PARENT_TAG, report_run.run_id)
    except STORE_ERRORS as err:
        raise GloveExpError(f"cannot log the report to {uri}: {str(err).strip().splitlines()[0]}") from err
    return report_run.run_id


def _path_part(text: str, fallback: str) -> str:
    """One safe folder name: letters, digits and ``. _ -`` only, never ``.``/``..`` or hidden."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or fallback


def default_out(experiment: str, sweep: str | None) -> Path:
    """``reports/<experiment>/all`` or ``reports/<experiment>/<sweep id, / turned into _>``; always inside ``reports/``."""
    leaf = _path_part(sweep_key(sweep), "sweep") if sweep else "all"
    return Path("reports") / _path_part(experiment, "experiment") / leaf


def _keys(values: list[str] | None) -> list[str] | None:
    """``--by a,b --by c`` -> ``[a, b, c]``."""
    if values is None:
        return None
    keys = [key.strip() for value in values for key in value.split(",") if key.strip()]
    return keys or None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Compare the FINISHED MLflow runs of a glove-exp experiment or sweep. Runs that differ only in "
        "trainer.seed form a group; each group gets n, mean, std and a 95 % Student t interval of the validation "
        "accuracy of the kept model (best epoch with early stopping, else the last) and of the test accuracy. "
        "Prints the group table (best mean validation accuracy first; runs without validation last) and writes "
        "results.md, results.csv (groups), runs.csv and accuracy.png.",
    )
    parser.add_argument("--experiment", default="glove-exp", help="MLflow experiment name (default: %(default)s)")
    parser.add_argument(
        "--sweep",
        help="only runs of this sweep: its sweep_id tag, i.e. Hydra's sweep folder such as "
        "multirun/2026-11-25/12-00-00 (compared after os.path.normpath; absolute or relative to the cwd), "
        "or 'latest' for the sweep of the most recently started run",
    )
    parser.add_argument(
        "--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for the files (default: reports/<experiment>/all, or with --sweep "
        "reports/<experiment>/<sweep id with / as _>, e.g. reports/glove-exp/multirun_2026-11-25_12-00-00; "
        "characters other than letters, digits, '.', '_', '-' become '_')",
    )
    parser.add_argument(
        "--by",
        action="append",
        metavar="KEY",
        help="group by these params instead (repeatable or comma-separated, e.g. --by model.pooling,optimizer.lr); "
        "default: every param except trainer.seed, i.e. one group per configuration",
    )
    parser.add_argument(
        "--sort",
        default=DEFAULT_SORT,
        help="metric whose group mean ranks the groups, highest first; current or old spelling "
        "(test/accuracy or test_accuracy). Default: %(default)s, the kept model's validation accuracy; "
        "choose by validation, never by test",
    )
    parser.add_argument(
        "--log",
        action="store_true",
        help="log a new MLflow run report-<sweep or experiment> (tag glove_exp.report=true) in the same experiment: "
        "the best group's val/accuracy_mean, val/accuracy_std, test/accuracy_mean, ..., n_runs, the group table "
        f"({TABLE_ARTIFACT}), the figure and the files; with --sweep it becomes the parent of the sweep's runs. "
        "Reports leave such runs out",
    )
    args = parser.parse_args(argv)
    args.by = _keys(args.by)
    return args


def report(args: argparse.Namespace) -> None:
    """Load, group, print, write and optionally log; user errors raise :class:`GloveExpError`."""
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise GloveExpError(f"--out {args.out} is a file, not a folder")
    uri = args.tracking_uri or default_uri()
    if uri.startswith(("http://", "https://")):  # MLflow's default retries take minutes to give up
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    runs = load_runs(uri, args.experiment, args.sweep)
    sweep = str(runs["tags.sweep_id"].iloc[0]) if args.sweep and "tags.sweep_id" in runs.columns else None
    sort = check_sort(runs, args.sort)
    groups, run_rows = group_runs(runs, args.by, sort)
    title = f"{args.experiment}: sweep {sweep}" if sweep else f"{args.experiment}: all finished runs"
    grouping = f"grouped by {', '.join(args.by)}" if args.by else "one group per configuration, over trainer.seed"
    common = ", ".join(f"{name} {_param_text(value, 3)}" for name, value in common_settings(groups).items())
    note = (
        f"{len(run_rows)} runs in {len(groups)} groups ({grouping}), best mean {sort} first. Accuracies in %: "
        "group mean, sample standard deviation (sd) and 95% Student t interval (CI); validation is the kept "
        f"model's; {MISSING} where a group has no value, or a single run for sd and CI."
        + (f" Same in every group: {common}." if common else "")
    )
    print(f"{title}\n\n{note}\n")
    print(to_markdown(group_display(groups)))
    report_files = write_report(groups, run_rows, args.out or default_out(args.experiment, sweep), title, note)
    print(f"wrote {', '.join(str(f) for f in report_files[0])}")
    if args.log:
        params = {"sort": sort, "group_by": ",".join(args.by) if args.by else "all params but trainer.seed"}
        run_id = log_report(uri, args.experiment, sweep, report_files, groups, params, list(runs["run_id"]))
        print(f"logged to MLflow run {run_id} (report-{sweep or args.experiment}) in {uri}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``glove-exp-report``: user errors print one line on stderr and exit 2."""
    args = parse_args(argv)
    try:
        report(args)
    except GloveExpError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

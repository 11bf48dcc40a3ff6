"""Metric names are read in their current spelling (``test/accuracy``) and in that of stores written
before the rename (``test_accuracy``; :data:`METRIC_ALIASES`)."""

from __future__ import annotations

import math
import re

import pandas as pd
from scipy import stats

from glove_exp.core.errors import GloveExpError

SEED_PARAM = "params.trainer.seed"
MISSING = "–"
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
RUN_METRICS = {"val_accuracy": "val/selected_accuracy", "test_accuracy": "test/accuracy", "macro_f1": "test/macro_f1",
               "epochs": "train/epochs_run", "train_s": "time/train_s"}  # fmt: skip
INTERVALS = ("val_accuracy", "test_accuracy")  # summarised by mean, std and 95 % interval per group


def is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def column(runs: pd.DataFrame, name: str) -> pd.Series:
    """Column ``name`` of ``runs``, or all missing where no run has it."""
    return runs[name] if name in runs.columns else pd.Series(pd.NA, index=runs.index, dtype=object)


def first_present(runs: pd.DataFrame, names: tuple[str, ...]) -> pd.Series:
    """Per run, the value of the first of ``names`` that it has."""
    values = column(runs, names[0])
    for name in names[1:]:
        values = values.where(values.notna(), column(runs, name))
    return values


def canonical_metric(name: str) -> str:
    """The current spelling of a metric name (``test_accuracy`` -> ``test/accuracy``)."""
    name = name.removeprefix("metrics.")
    return next((new for new, old in METRIC_ALIASES.items() if name in old), name)


def metric(runs: pd.DataFrame, name: str) -> pd.Series:
    """Per run, metric ``name`` under its current spelling, else an older one; floats, NaN where absent."""
    new = canonical_metric(name)
    columns = tuple(f"metrics.{n}" for n in (new, *METRIC_ALIASES.get(new, ())))
    return pd.to_numeric(first_present(runs, columns), errors="coerce").astype(float)


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


def param_text(value: object, digits: int) -> str:
    """A param value for a label: non-integer numbers to ``digits`` significant digits."""
    if is_missing(value):
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
            " ".join(f"{c.removeprefix('params.')}={param_text(v, digits)}" for c, v in zip(shown, row))
            for row in keys[shown].itertuples(index=False)
        ]
        if len(set(labels)) == len(labels):
            break
    return labels


def run_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: name, seed, :data:`DESCRIBE` params and :data:`RUN_METRICS` (raw values)."""
    table = pd.DataFrame(
        {"run": column(runs, "tags.mlflow.runName"), "seed": pd.to_numeric(column(runs, SEED_PARAM), errors="coerce")}
    )
    for name, sources in DESCRIBE.items():
        table[name] = first_present(runs, sources)
    table["lr"] = pd.to_numeric(table["lr"], errors="coerce")
    for name, key in RUN_METRICS.items():
        table[name] = metric(runs, key)
    table["epochs"] = table["epochs"].fillna(pd.to_numeric(column(runs, "params.trainer.epochs"), errors="coerce"))
    table["run_id"] = runs["run_id"]
    return table


def interval(values: pd.Series) -> pd.Series:
    """Count, mean, sample std and the 95 % Student t interval (NaN below two values) of one group's values."""
    values = values.dropna()
    n, mean, std = len(values), values.mean(), values.std(ddof=1)
    half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return pd.Series({"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half})


def group_runs(
    runs: pd.DataFrame, by: list[str] | None = None, sort: str = DEFAULT_SORT
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(groups, run rows)``. Runs that differ only in ``trainer.seed`` (or share the ``by`` params) form
    a group, with n, mean, sample std and 95 % Student t interval of :data:`INTERVALS`, best mean ``sort``
    first; the run rows are :func:`run_table` with a ``group`` column, best ``sort`` first in a group."""
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
        summary = grouped[name].apply(interval).unstack().astype({"n": int})
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


def common_settings(groups: pd.DataFrame) -> dict[str, object]:
    """The :data:`DESCRIBE` columns with one value in every group (the group table leaves them out)."""
    return {
        name: groups[name].iloc[0]
        for name in DESCRIBE
        if name in groups.columns and groups[name].nunique(dropna=False) == 1
    }


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
    return {k: float(v) for k, v in values.items() if not is_missing(v)}

"""Metric names are read in their current spelling (``test/accuracy``) and in that of stores written
before the rename (``test_accuracy``; :data:`METRIC_ALIASES`)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from scipy.special import stdtrit  # Student t's quantile; scipy.stats' import took 0.5 s

from glove_exp.app.identity import GROUP_TAG
from glove_exp.core.errors import GloveExpError

SEED_PARAM = "params.trainer.seed"
GROUP_COLUMN = f"tags.{GROUP_TAG}"
# Older runs logged what the data gave them (vocabulary size, OOV rate, split sizes) as params: that
# varies with the seed's split, so it names no configuration.
DATA_PARAMS = "params.data."
MISSING = "–"
SEED_IN_NAME = re.compile(r"-seed=?\d+(?=-|$)")  # as run_name writes a seed: ``max-seed=2``, ``mean-trial3-seed1``
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
FALLBACK_SORT = "test/accuracy"  # ranks the groups when no run has a validation split
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
# what summary_frame summarises by default; val/accuracy as logged is the last epoch's, not the kept model's
SUMMARY_METRICS = ("val/selected_accuracy", "test/accuracy", "test/macro_f1", "train/epochs_run", "time/train_s")
FRACTIONS = ("accuracy", "f1", "rate")  # metric names ending so lie in [0, 1]
NON_NEGATIVE = ("time/", "data/", "train/epochs", "train/best_epoch", "train/selected_epoch")


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


def check_sort(runs: pd.DataFrame, sort: str | None) -> str:
    """The current spelling of ``sort``; a metric no run has is a user error that lists those there are.
    None: :data:`DEFAULT_SORT`, else (no run has a validation split) :data:`FALLBACK_SORT`."""
    available = sorted(
        {canonical_metric(c) for c in runs.columns if c.startswith("metrics.") and runs[c].notna().any()}
    )
    if sort is None:
        return DEFAULT_SORT if DEFAULT_SORT in available or FALLBACK_SORT not in available else FALLBACK_SORT
    wanted = canonical_metric(sort)
    if wanted not in available:
        raise GloveExpError(f"unknown metric {sort!r} for --sort; available: {', '.join(available) or 'none'}")
    return wanted


def group_params(runs: pd.DataFrame, by: list[str] | None) -> list[str]:
    """The ``params.*`` columns that define a group: ``by`` in its order, else every param but
    ``trainer.seed`` and the older runs' ``data.*``, sorted."""
    params = sorted(c for c in runs.columns if c.startswith("params."))
    if by is None:
        return [c for c in params if c != SEED_PARAM and not c.startswith(DATA_PARAMS)]
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
    group without ``--by`` is named by ``names`` (per group, its runs' names without their seeds: see
    :func:`label_groups`). Numbers get as few digits as keep labels apart."""
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


def metric_range(name: str) -> tuple[float, float]:
    """The values metric ``name`` can take: accuracies, F1 scores and rates ``[0, 1]``, times, counts and
    losses ``[0, inf)``, anything else unbounded."""
    name = canonical_metric(name)
    if name.endswith(FRACTIONS) or name.startswith("test/f1/"):
        return 0.0, 1.0
    if name.startswith(NON_NEGATIVE) or name.endswith("loss"):
        return 0.0, math.inf
    return -math.inf, math.inf


def interval(values: pd.Series, bounds: tuple[float, float] = (-math.inf, math.inf)) -> pd.Series:
    """Count, mean, sample std, the 95 % Student t interval's half width (NaN below two values) and that
    interval clipped to ``bounds``, the values' range (with n=2 it spans far beyond it)."""
    values = values.dropna()
    n, mean, std = len(values), values.mean(), values.std(ddof=1)
    half = stdtrit(n - 1, 0.975) * std / math.sqrt(n) if n > 1 else math.nan
    low, high = np.clip([mean - half, mean + half], *bounds)  # NaN stays NaN
    return pd.Series({"n": n, "mean": mean, "std": std, "ci_half": half, "ci_low": low, "ci_high": high})


def summarise(table: pd.DataFrame, group: pd.Series, bounds: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Per group (``group``: each row's group number), :func:`interval` of each column of ``table``
    named in ``bounds``, as columns ``<column>_<n, mean, std, ci_half, ci_low, ci_high>``."""
    grouped = table.groupby(group, sort=False)
    columns = {}
    for name, limits in bounds.items():
        summary = grouped[name].apply(interval, bounds=limits).unstack().astype({"n": int})
        columns |= {f"{name}_{stat}": summary[stat] for stat in summary.columns}
    return pd.DataFrame(columns)


def group_numbers(runs: pd.DataFrame, keys: list[str], by: list[str] | None) -> pd.Series:
    """Per run, the number of its group: by the ``keys`` params with ``by``; else by the
    ``glove_exp.group_id`` tag, and by the ``keys`` params for runs written before there was one."""
    by_params = runs.groupby(keys, dropna=False, sort=False).ngroup() if keys else pd.Series(0, index=runs.index)
    if by is not None:
        return by_params
    tag = column(runs, GROUP_COLUMN)
    has_tag = tag.notna() & (tag.astype(str) != "")
    key = tag.astype(str).where(has_tag, "params " + by_params.astype(str))
    return pd.Series(pd.factorize(key)[0], index=runs.index)


def label_groups(runs: pd.DataFrame, by: list[str] | None) -> tuple[pd.Series, pd.DataFrame]:
    """``(group numbers, groups)``: per run, the number of its group (:func:`group_numbers`); per group
    number, its ``group`` label (:func:`group_labels`, with the id where labels would clash) and, without
    ``by``, its ``group_id`` (None for runs written before the tag)."""
    keys = group_params(runs, by)
    gid = group_numbers(runs, keys, by)
    per_group = runs.groupby(gid, sort=False)
    # a group_id leaves out settings such as paths that vary within a group: they name no group
    keys = [key for key in keys if (per_group[key].nunique(dropna=False) <= 1).all()]
    first = per_group[keys].first() if keys else pd.DataFrame(index=pd.Index(gid.unique()))
    run_names = column(runs, "tags.mlflow.runName").groupby(gid, sort=False)
    names = run_names.agg(lambda s: " / ".join(dict.fromkeys(SEED_IN_NAME.sub("", n) for n in s.dropna().astype(str))))
    names = names.reindex(first.index)
    groups = pd.DataFrame({"group": group_labels(first, names.fillna("").tolist(), by is not None)}, index=first.index)
    if by is None:
        ids = column(runs, GROUP_COLUMN).groupby(gid, sort=False).first().reindex(first.index)
        groups["group_id"] = ids.astype(object).where(ids.notna(), None)
        clash = groups["group"].duplicated(keep=False) & groups["group_id"].notna()
        groups.loc[clash, "group"] += " (" + groups.loc[clash, "group_id"].astype(str).str[:8] + ")"
    return gid, groups


def ranked(groups: pd.DataFrame, values: pd.Series, then: pd.Series, gid: pd.Series) -> pd.DataFrame:
    """``groups`` best group mean of the runs' ``values`` first, with that mean as ``sort_mean``; groups
    without one last, and these (and ties) by their mean of the runs' ``then`` (the test accuracy: the
    groups without a validation split among those with one), whichever metrics ``groups`` summarises."""
    groups = groups.assign(
        sort_mean=values.groupby(gid, sort=False).mean(), then_mean=then.groupby(gid, sort=False).mean()
    )
    ordered = groups.sort_values(["sort_mean", "then_mean"], ascending=False, na_position="last", kind="stable")
    return ordered.drop(columns="then_mean")


def summary_frame(
    runs: pd.DataFrame,
    metrics: tuple[str, ...] = SUMMARY_METRICS,
    by: list[str] | None = None,
    sort: str | None = None,
) -> pd.DataFrame:
    """One row per group of the FINISHED runs of ``runs`` (a ``runs_frame``): per ``glove_exp.group_id``
    tag (older runs without it: per set of params but ``trainer.seed``), or per set of ``by`` params.
    Columns ``group`` (label), ``group_id`` (without ``by``), ``n``, per metric ``<metric>_n``, ``_mean``,
    ``_std``, ``_ci_half`` (95 % Student t half width) and ``_ci_low``, ``_ci_high`` (that interval,
    clipped to :func:`metric_range`), and ``run_ids``; best mean ``sort`` first (None: :func:`check_sort`'s
    default)."""
    if "status" in runs.columns:
        runs = runs[runs["status"] == "FINISHED"]
    if runs.empty:
        raise GloveExpError("no FINISHED runs to summarise")
    sort = check_sort(runs, sort)
    names = list(dict.fromkeys(canonical_metric(name) for name in metrics))
    table = pd.DataFrame({name: metric(runs, name) for name in names}, index=runs.index)
    gid, groups = label_groups(runs, by)
    groups["n"] = gid.value_counts()
    groups = groups.join(summarise(table, gid, {name: metric_range(name) for name in names}))
    groups["run_ids"] = runs["run_id"].groupby(gid, sort=False).agg(" ".join)
    ranking = ranked(groups, metric(runs, sort), metric(runs, FALLBACK_SORT), gid)
    return ranking.drop(columns="sort_mean").reset_index(drop=True)


def group_runs(
    runs: pd.DataFrame, by: list[str] | None = None, sort: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(groups, run rows)``. Runs of one ``glove_exp.group_id`` (older runs: that differ only in
    ``trainer.seed``; with ``by``: that share the ``by`` params) form a group, with n, mean, sample std and
    95 % Student t interval (clipped to [0, 1]) of :data:`INTERVALS`, best mean ``sort`` first (None:
    :func:`check_sort`'s default); the run rows are :func:`run_table` with a ``group`` column, best ``sort`` first in a group."""
    sort = check_sort(runs, sort)
    table = run_table(runs)
    table["_sort"] = metric(runs, sort)
    gid, groups = label_groups(runs, by)
    grouped = table.groupby(gid, sort=False)
    for name in DESCRIBE:  # context columns, where every group has one value
        if grouped[name].nunique(dropna=False).max() == 1:
            groups[name] = grouped[name].first()
    groups["n"] = grouped.size()
    groups["epochs_min"], groups["epochs_max"] = grouped["epochs"].min(), grouped["epochs"].max()
    groups = groups.join(summarise(table, gid, {name: (0.0, 1.0) for name in INTERVALS}))
    groups["macro_f1_mean"] = grouped["macro_f1"].mean()
    groups["train_s_mean"] = grouped["train_s"].mean()
    groups["run_ids"] = grouped["run_id"].agg(" ".join)
    groups = ranked(groups, table["_sort"], metric(runs, FALLBACK_SORT), gid)
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
        "val/accuracy_ci95": best["val_accuracy_ci_half"],
        "val/accuracy_ci_low": best["val_accuracy_ci_low"],
        "val/accuracy_ci_high": best["val_accuracy_ci_high"],
        "test/accuracy_mean": best["test_accuracy_mean"],
        "test/accuracy_std": best["test_accuracy_std"],
        "test/accuracy_ci95": best["test_accuracy_ci_half"],
        "test/accuracy_ci_low": best["test_accuracy_ci_low"],
        "test/accuracy_ci_high": best["test_accuracy_ci_high"],
        "test/macro_f1_mean": best["macro_f1_mean"],
        "n_runs": best["n"],
        "n_groups": len(groups),
    }
    return {k: float(v) for k, v in values.items() if not is_missing(v)}

"""Two runs' params side by side (``--diff``), and two groups of seeds over the seeds they share
(``--paired``): the mean difference of a metric with its paired 95 % Student t interval."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from glove_exp.core.errors import GloveExpError
from glove_exp.report.render import format_table
from glove_exp.report.statistics import (
    FALLBACK_SORT,
    MISSING,
    SEED_PARAM,
    check_sort,
    column,
    interval,
    is_missing,
    metric,
    metric_range,
)

RECENT = 5  # runs or groups named when one is not found (the newest runs, the best groups)


def run_label(run: pd.Series) -> str:
    return f"{str(run['run_id'])[:8]} ({run.get('tags.mlflow.runName') or 'unnamed'})"


def find_run(runs: pd.DataFrame, wanted: str, where: str) -> pd.Series:
    """The row of run ``wanted`` (newest first in ``runs``): a run id or unique prefix of one, else a
    unique run name; else a user error naming the newest runs."""
    ids, names = runs["run_id"].astype(str), column(runs, "tags.mlflow.runName")
    for found in (runs[ids.str.startswith(wanted)] if wanted else runs.iloc[:0], runs[names == wanted]):
        if len(found) == 1:
            return found.iloc[0]
        if len(found) > 1:
            matches = ", ".join(run_label(run) for _, run in found.head(RECENT).iterrows())
            raise GloveExpError(f"run {wanted!r} is ambiguous in {where}: {len(found)} runs match, e.g. {matches}")
    recent = ", ".join(run_label(run) for _, run in runs.head(RECENT).iterrows()) or "none"
    raise GloveExpError(f"unknown run {wanted!r} in {where}; recent runs: {recent}")


def param_value(run: pd.Series, key: str) -> str:
    value = run.get(key)
    return MISSING if is_missing(value) else str(value)


def diff_params(a: pd.Series, b: pd.Series) -> pd.DataFrame:
    """The params in which runs ``a`` and ``b`` differ (absent from one: "–"), as columns ``param``, ``a``, ``b``."""
    keys = sorted({key for key in (*a.index, *b.index) if key.startswith("params.")})
    rows = [(key.removeprefix("params."), param_value(a, key), param_value(b, key)) for key in keys]
    return pd.DataFrame([row for row in rows if row[1] != row[2]], columns=["param", "a", "b"])


def find_group(groups: pd.DataFrame, wanted: str, where: str) -> pd.Series:
    """The group ``wanted`` of ``groups`` (a ``summary_frame``): its ``group_id`` or a unique prefix of
    one, else its label; else a user error naming the first :data:`RECENT` groups (best first)."""
    ids = column(groups, "group_id").fillna("").astype(str)
    for found in (groups[(ids != "") & ids.str.startswith(wanted)], groups[groups["group"] == wanted]):
        if len(found) == 1:
            return found.iloc[0]
        if len(found) > 1:
            raise GloveExpError(f"group {wanted!r} is ambiguous in {where}: {len(found)} group ids start with it")
    listed = [f"{i[:8] or '(no id)'} {label} (n={n})" for i, label, n in zip(ids, groups["group"], groups["n"])]
    known = ", ".join(listed[:RECENT]) + (f" and {len(listed) - RECENT} more" if len(listed) > RECENT else "")
    raise GloveExpError(f"unknown group {wanted!r} in {where}; groups: {known or 'none'}")


@dataclass(frozen=True)
class Paired:
    """Groups ``a`` and ``b`` on ``metric`` over their shared seeds: ``per_seed`` has columns ``seed``,
    ``a``, ``b``, ``difference`` (a - b); ``summary`` is :func:`interval` of the differences (clipped to
    the widest difference the metric allows; NaN below two shared seeds)."""

    metric: str
    a: pd.Series
    b: pd.Series
    per_seed: pd.DataFrame
    summary: pd.Series


def group_members(runs: pd.DataFrame, group: pd.Series) -> pd.DataFrame:
    """The rows of ``runs`` in ``group`` (a row of a ``summary_frame`` of them)."""
    return runs[runs["run_id"].isin(str(group["run_ids"]).split())]


def pair_sort(runs: pd.DataFrame, a: pd.Series, b: pd.Series) -> str:
    """The metric groups ``a`` and ``b`` compare by default: validation where both have it, else test."""
    defaults = {check_sort(group_members(runs, group), None) for group in (a, b)}
    return defaults.pop() if len(defaults) == 1 else FALLBACK_SORT


def seed_values(runs: pd.DataFrame, group: pd.Series, name: str) -> pd.DataFrame:
    """Per seed, the group's value of metric ``name``: the newest run's where a seed ran more than once."""
    members = group_members(runs, group)
    values = pd.DataFrame(
        {"seed": pd.to_numeric(column(members, SEED_PARAM), errors="coerce"), "value": metric(members, name)}
    )
    newest_first = values.loc[members.sort_values("start_time", ascending=False, kind="stable").index]
    return newest_first.dropna().drop_duplicates("seed")


def paired(runs: pd.DataFrame, a: pd.Series, b: pd.Series, name: str) -> Paired:
    """:class:`Paired` for groups ``a`` and ``b`` (rows of a ``summary_frame`` of ``runs``) on metric ``name``."""
    per_seed = seed_values(runs, a, name).merge(seed_values(runs, b, name), on="seed", suffixes=("_a", "_b"))
    per_seed = per_seed.rename(columns={"value_a": "a", "value_b": "b"}).sort_values("seed", kind="stable")
    per_seed = per_seed.assign(seed=per_seed["seed"].astype(int), difference=per_seed["a"] - per_seed["b"])
    low, high = metric_range(name)
    summary = interval(per_seed["difference"], bounds=(low - high, high - low))
    return Paired(name, a, b, per_seed.reset_index(drop=True), summary)


def metric_text(name: str, value: object, sign: str = "") -> str:
    """A value of metric ``name``: fractions (accuracies, F1) in % to 2 decimals, others to 4 digits."""
    if is_missing(value):
        return MISSING
    return format(100 * float(value), f"{sign}.2f") if metric_range(name) == (0.0, 1.0) else format(value, f"{sign}.4g")


def group_text(group: pd.Series) -> str:
    return f"{group['group']} (group id {str(group.get('group_id') or '–')[:12]}, n={group['n']})"


def paired_summary(result: Paired) -> pd.DataFrame:
    """One row: the groups, the metric and :attr:`Paired.summary` (raw values)."""
    groups = {f"{key}_{side}": group.get(key) for side, group in (("a", result.a), ("b", result.b))
              for key in ("group", "group_id")}  # fmt: skip
    return pd.DataFrame([{"metric": result.metric, **groups, **result.summary.to_dict()}]).astype({"n": int})


def paired_report(result: Paired, fmt: str) -> str:
    """:func:`paired_summary` and the per-seed table in ``fmt``; for Markdown, the summary in words, values
    of fractions in % and their differences in percentage points."""
    if fmt != "markdown":
        return f"{format_table(paired_summary(result), fmt)}\n{format_table(result.per_seed, fmt)}"
    name, summary = result.metric, result.summary
    unit = " pp" if metric_range(name) == (0.0, 1.0) else ""  # percentage points
    n = int(summary["n"])
    scale = " (in %; differences in percentage points, pp)" if unit else ""
    lines = [f"{name}, A - B over the {n} seed(s) both groups ran{scale}", f"A: {group_text(result.a)}",
             f"B: {group_text(result.b)}"]  # fmt: skip
    if n < 2:
        lines.append(f"only {n} shared seed(s): a paired interval needs at least 2")
    else:
        low, high = (metric_text(name, summary[key], "+") for key in ("ci_low", "ci_high"))
        lines.append(
            f"mean difference {metric_text(name, summary['mean'], '+')}{unit}, sd {metric_text(name, summary['std'])}{unit}, "
            f"95 % paired t interval [{low}, {high}]{unit}"
        )
    table = pd.DataFrame(
        {
            "seed": result.per_seed["seed"].astype(str),
            **{
                head: result.per_seed[key].map(lambda v: metric_text(name, v)) for head, key in (("A", "a"), ("B", "b"))
            },
            "A - B": result.per_seed["difference"].map(lambda v: metric_text(name, v, "+")),
        }
    )
    return "\n".join(lines) + "\n\n" + format_table(table, fmt)

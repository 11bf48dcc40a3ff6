"""Markdown tables show percentages, the CSV files raw values (fractions); CSV cells cannot start a
spreadsheet formula, and Markdown cells carry no raw HTML."""

from __future__ import annotations

import html
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from glove_exp.core.errors import GloveExpError
from glove_exp.io.console import counted
from glove_exp.io.files import spreadsheet_safe
from glove_exp.report.statistics import DESCRIBE, INTERVALS, MISSING, common_settings, is_missing, param_text

FILES = ("results.md", "results.csv", "runs.csv", "accuracy.png")
FORMATS = ("markdown", "csv", "json")
PLOT_LIMIT = 50  # groups drawn in accuracy.png (the best ones)


def _text(value: object) -> str:
    """A Markdown cell: one line, ``\\`` and ``|`` escaped, no raw HTML."""
    if is_missing(value):
        return MISSING
    one_line = re.sub(r"\s+", " ", str(value)).strip()
    return html.escape(one_line, quote=False).replace("\\", "\\\\").replace("|", "\\|")


def _number(spec: str, scale: float = 1.0) -> Callable[[object], str]:
    return lambda value: MISSING if is_missing(value) else format(scale * float(value), spec)


_percent = _number(".2f", 100.0)


def _span(low: pd.Series, high: pd.Series, fmt: Callable[[object], str], template: str, collapse: bool) -> pd.Series:
    """``template`` filled with formatted ``low`` and ``high`` ("–" where missing; one value where they
    agree and ``collapse``)."""
    return pd.Series(
        [
            MISSING if is_missing(lo) else fmt(lo) if collapse and lo == hi else template.format(fmt(lo), fmt(hi))
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
    columns = {"group": ("config", _text), "group_id": ("group id", lambda value: _text(value)[:8])}
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
            "run_id": ("run id", lambda value: str(value)[:8]),
        },
    )


def to_markdown(display: pd.DataFrame) -> str:
    """A GitHub Markdown table of text cells (from :func:`group_display` / :func:`run_display`)."""
    numeric = ("lr", "max_tokens")
    left = {
        "config",
        "group id",
        "run",
        "run id",
        "param",
        "a",
        "b",
        *(name.replace("_", " ") for name in DESCRIBE if name not in numeric),
    }
    align = ["left" if header in left else "right" for header in display.columns]
    return display.to_markdown(index=False, tablefmt="pipe", disable_numparse=True, colalign=align) + "\n"


def summary_note(groups: pd.DataFrame, n_runs: int, by: list[str] | None, sort: str, found: int = 0) -> str:
    """The paragraph under the title: grouping, ranking, columns and the settings every group shares
    (``found``: how many of the runs a sweep's skipped jobs found, trained before it)."""
    grouping = f"grouped by {', '.join(by)}" if by else "one group per configuration, over trainer.seed"
    common = ", ".join(f"{name} {param_text(value, 3)}" for name, value in common_settings(groups).items())
    earlier = f" ({found} finished before the sweep, found by its skipped jobs)" if found else ""
    return (
        f"{counted(n_runs, 'run')}{earlier} in {counted(len(groups), 'group')} ({grouping}), best mean {sort} first. "
        "Accuracies in %: group mean, sample standard deviation (sd) and 95% Student t interval (CI); validation "
        f"is the kept model's; {MISSING} where a group has no value, or a single run for sd and CI."
        + (f" Same in every group: {common}." if common else "")
    )


def best_group_line(groups: pd.DataFrame) -> str:
    """One line on the top group: its label, n and validation and test accuracy (mean and 95 % interval)."""
    best = groups.iloc[0]
    parts = []
    for name, split in zip(INTERVALS, ("val", "test")):
        if is_missing(best[f"{name}_mean"]):  # no validation split
            continue
        low, high = best[f"{name}_ci_low"], best[f"{name}_ci_high"]
        spread = "" if is_missing(low) else f" [{_percent(low)}, {_percent(high)}]"
        parts.append(f"{split} {_percent(best[f'{name}_mean'])} %{spread}")
    return f"best of {counted(len(groups), 'group')}: {best['group']} (n={best['n']}): {', '.join(parts)}"


def format_table(table: pd.DataFrame, fmt: str) -> str:
    """``table`` as GitHub Markdown (text cells, e.g. from :func:`group_display`), CSV (cells that cannot
    start a spreadsheet formula) or JSON (a list of records, one line)."""
    if fmt == "csv":
        return table.map(spreadsheet_safe).to_csv(index=False)
    if fmt == "json":
        return table.to_json(orient="records", force_ascii=False) + "\n"
    return to_markdown(table)


def write_csv(table: pd.DataFrame, path: Path) -> None:
    table.map(spreadsheet_safe).to_csv(path, index=False)


def accuracy_figure(groups: pd.DataFrame, title: str) -> Figure:
    """Group means of validation and test accuracy (%) with 95 % interval bars, best group on top; no
    validation panel where no group has a validation split."""
    shown = groups.head(PLOT_LIMIT)
    labels = [textwrap.fill(f"{label} (n={n})", width=40) for label, n in zip(shown["group"], shown["n"])]
    row_height = 0.18 * max(label.count("\n") + 1 for label in labels) + 0.12
    fig = Figure(figsize=(10, 1.4 + row_height * len(shown)), layout="constrained")
    splits = list(zip(INTERVALS, ("validation", "test")))
    panels = [(name, split) for name, split in splits if shown[f"{name}_mean"].notna().any()] or splits[-1:]
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    positions = list(range(len(shown)))
    for ax, (name, split) in zip(axes, panels):
        mean = 100 * shown[f"{name}_mean"]
        low, high = (100 * shown[f"{name}_{stat}"] for stat in ("ci_low", "ci_high"))
        bars = [(mean - low).fillna(0.0), (high - mean).fillna(0.0)]  # uneven where clipped to 0-100
        ax.errorbar(mean, positions, xerr=bars, fmt="o", capsize=3, color="tab:blue")
        ax.set_xlabel(f"{split} accuracy (%)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    fig.supxlabel("group mean, 95 % interval (Student t, within 0-100; none for n=1)", fontsize=9)
    axes[0].set_yticks(positions, labels=labels, fontsize=8)
    axes[0].invert_yaxis()
    more = f" (best {PLOT_LIMIT} of {len(groups)} groups)" if len(groups) > PLOT_LIMIT else ""
    fig.suptitle(textwrap.fill(title + more, width=100), fontsize=10)
    return fig


def write_report(groups: pd.DataFrame, run_rows: pd.DataFrame, out: Path, title: str, note: str) -> list[Path]:
    """:data:`FILES` in ``out``; returns their paths. A folder that cannot be written is a user error."""
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
    return [md, groups_csv, runs_csv, png]

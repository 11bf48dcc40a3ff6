"""The ``glove-exp-report`` console script: compare the FINISHED runs of an experiment or a sweep.

It reads MLflow (never the sweep folders), prints a Markdown comparison table, best validation
accuracy first, and writes ``results.md``, ``results.csv`` (raw values) and ``test_accuracy.png``.
Runs are ranked by a validation metric by default: the test columns are for reading, not choosing.
With ``--log`` the three files are attached to a run ``report-<sweep or experiment>`` tagged
``glove_exp.report=true``; later reports leave such runs out.

Sweep ids are the ``sweep_id`` tag, Hydra's sweep folder as the job saw it (``multirun/<date>/<time>``
by default). ``--sweep`` is compared after ``os.path.normpath`` and, for a path that exists or is
absolute, also in its absolute and cwd-relative spellings, so ``./multirun/x/``, ``multirun/x`` and
``$PWD/multirun/x`` all find the same sweep.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from glove_exp import tracking
from glove_exp.errors import GloveExpError

log = logging.getLogger(__name__)
PROG = "glove-exp-report"
REPORT_TAG = "glove_exp.report"
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests child runs by
FILES = ("results.md", "results.csv", "test_accuracy.png")
# table column -> (MLflow column(s), first present wins; Markdown header)
COLUMNS: dict[str, tuple[tuple[str, ...], str]] = {
    "run": (("tags.mlflow.runName",), "run"),
    "dataset": (("tags.dataset", "params.dataset.name"), "dataset"),
    "embeddings": (("tags.embeddings", "params.embeddings.name"), "embeddings"),
    "pooling": (("tags.pooling", "params.model.pooling"), "pooling"),
    "max_tokens": (("params.trainer.max_tokens",), "max tokens"),
    "hidden_sizes": (("params.model.hidden_sizes",), "hidden"),
    "activation": (("params.model.activation",), "activation"),
    "optimizer": (("params.optimizer.name",), "optimizer"),
    "lr": (("params.optimizer.lr",), "lr"),
    "epochs": (("params.trainer.epochs",), "epochs"),
    "val_accuracy": (("metrics.best_val_accuracy",), "val acc %"),
    "test_accuracy": (("metrics.test_accuracy",), "test acc %"),
    "macro_f1": (("metrics.test_macro_f1",), "macro-F1 %"),
    "train_s": (("metrics.train_time_s",), "train s"),
    "run_id": (("run_id",), "run id"),
}
PERCENT = ("val_accuracy", "test_accuracy", "macro_f1")
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
        runs = tracking.retry_locked(mlflow.search_runs)(
            experiment_names=[experiment], filter_string=filter_string, output_format="pandas"
        )
    except STORE_ERRORS as err:
        raise _store_error(mlflow.get_tracking_uri(), err) from err
    if runs.empty:
        return runs
    runs = runs[_column(runs, f"tags.{REPORT_TAG}") != "true"]
    return runs.sort_values("start_time", ascending=False, kind="stable")


def _check_experiment(uri: str, experiment: str) -> None:
    try:
        client = mlflow.MlflowClient(uri)
        found = tracking.retry_locked(client.get_experiment_by_name)(experiment)
        if found is None:
            names = sorted(e.name for e in tracking.retry_locked(client.search_experiments)())
            available = ", ".join(names) or "none"
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
    return runs


def config_labels(runs: pd.DataFrame) -> list[str]:
    """Run name plus the Hydra overrides that differ between runs; duplicates get the short run id."""
    parsed = [
        dict(item.split("=", 1) if "=" in item else (item, "") for item in str(text).split())
        if isinstance(text, str) else {}
        for text in _column(runs, "tags.hydra_overrides")
    ]  # fmt: skip
    keys = list(dict.fromkeys(k for overrides in parsed for k in overrides))
    differing = [k for k in keys if len({overrides.get(k) for overrides in parsed}) > 1]
    names = _column(runs, "tags.mlflow.runName").fillna("").astype(str).tolist()
    labels = [" ".join([name, *(f"{k}={o[k]}" for k in differing if k in o)]) for name, o in zip(names, parsed)]
    ids = _column(runs, "run_id").astype(str).tolist()
    return [f"{label} ({rid[:8]})" if labels.count(label) > 1 else label for label, rid in zip(labels, ids)]


def comparison_table(runs: pd.DataFrame, sort: str = "best_val_accuracy") -> pd.DataFrame:
    """One row per run with :data:`COLUMNS` (raw values) plus ``label``, best ``sort`` metric first."""
    key = f"metrics.{sort}"
    if key not in runs.columns:
        metrics = sorted(c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics."))
        raise GloveExpError(f"unknown metric {sort!r} for --sort; available: {', '.join(metrics) or 'none'}")
    table = pd.DataFrame(index=runs.index)
    for name, (sources, _) in COLUMNS.items():
        values = pd.Series(pd.NA, index=runs.index, dtype=object)
        for source in reversed(sources):  # the first source that has a value wins
            values = _column(runs, source).where(_column(runs, source).notna(), values)
        table[name] = values
    for name in (*PERCENT, "train_s"):
        table[name] = pd.to_numeric(table[name], errors="coerce")
    table["label"] = config_labels(runs)
    order = pd.to_numeric(runs[key], errors="coerce").sort_values(ascending=False, na_position="last", kind="stable")
    return table.loc[order.index].reset_index(drop=True)


def _cell(name: str, value: object) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    if name in PERCENT:
        return f"{100 * float(value):.2f}"
    if name == "train_s":
        return f"{float(value):.1f}"
    if name == "run_id":
        return str(value)[:8]
    return re.sub(r"\s+", " ", str(value)).replace("\\", "\\\\").replace("|", "\\|")


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table of :data:`COLUMNS`: percentages as ``85.41``, ``|`` escaped."""
    names = [n for n in COLUMNS if n in table.columns]
    numeric = {*PERCENT, "train_s", "max_tokens", "lr", "epochs"}
    lines = [
        "| " + " | ".join(COLUMNS[n][1] for n in names) + " |",
        "|" + "|".join("---:" if n in numeric else "---" for n in names) + "|",
    ]
    for row in table[names].itertuples(index=False):
        lines.append("| " + " | ".join(_cell(n, v) for n, v in zip(names, row)) + " |")
    return "\n".join(lines) + "\n"


def plot_test_accuracy(table: pd.DataFrame, path: Path, title: str = "test accuracy") -> Path:
    """Horizontal bars of test accuracy (%) per configuration label, in table order (top first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = 100 * pd.to_numeric(table["test_accuracy"], errors="coerce").fillna(0.0)
    positions = list(range(len(table)))
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.4 * len(table)))
    try:
        bars = ax.barh(positions, values, color="tab:blue")
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], padding=3, fontsize=8)
        ax.set_yticks(positions, labels=table["label"].astype(str).tolist(), fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("test accuracy (%)")
        ax.set_xlim(0, min(100.0, max(values.max(), 1.0) * 1.1))
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


def write_report(table: pd.DataFrame, out: Path, title: str) -> list[Path]:
    """``results.md``, ``results.csv`` and ``test_accuracy.png`` in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    md, csv, png = (out / name for name in FILES)
    md.write_text(f"# {title}\n\n{to_markdown(table)}", encoding="utf-8")
    table.to_csv(csv, index=False)
    plot_test_accuracy(table, png, title=f"{title}: test accuracy")
    return [md, csv, png]


def log_report(uri: str, experiment: str, sweep: str | None, files: list[Path], sort: str, run_ids: list[str]) -> str:
    """Attach ``files`` to a new FINISHED run ``report-<sweep or experiment>`` and, for a sweep,
    make it the parent of the sweep's runs that have none (the MLflow UI nests them under it);
    returns its id."""
    tags = {REPORT_TAG: "true", **({"sweep_id": sweep} if sweep else {})}
    with tracking.tracked_run(uri, experiment, f"report-{sweep or experiment}", tags) as active:
        tracking.log_params({"sort": sort})
        for path in files:
            tracking.log_artifact(str(path))
    if sweep:
        client = mlflow.MlflowClient(uri)
        for run_id in run_ids:
            if PARENT_TAG not in tracking.retry_locked(client.get_run)(run_id).data.tags:
                tracking.retry_locked(client.set_tag)(run_id, PARENT_TAG, active.info.run_id)
    return active.info.run_id


def default_out(experiment: str, sweep: str | None) -> Path:
    """``reports/<experiment>/all`` or ``reports/<experiment>/<sweep id, / turned into _>``."""
    leaf = re.sub(r"[^A-Za-z0-9._-]+", "_", sweep_key(sweep)).strip("._") if sweep else "all"
    return Path("reports") / re.sub(r"[^A-Za-z0-9._-]+", "_", experiment) / (leaf or "sweep")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Compare the FINISHED MLflow runs of a glove-exp experiment or sweep: print a Markdown "
        "table (best validation first) and write results.md, results.csv and test_accuracy.png.",
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
        "reports/<experiment>/<sweep id with / as _>, e.g. reports/glove-exp/multirun_2026-11-25_12-00-00)",
    )
    parser.add_argument(
        "--sort",
        default="best_val_accuracy",
        help="metric to rank by, highest first (default: %(default)s; choose by validation, never by test)",
    )
    parser.add_argument(
        "--log",
        action="store_true",
        help="attach the files to a new MLflow run report-<sweep or experiment> (tag glove_exp.report=true) "
        "in the same experiment; reports leave such runs out",
    )
    return parser.parse_args(argv)


def report(args: argparse.Namespace) -> None:
    """Load, tabulate, print, write and optionally log; user errors raise :class:`GloveExpError`."""
    uri = args.tracking_uri or default_uri()
    if uri.startswith(("http://", "https://")):  # MLflow's default retries take minutes to give up
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    runs = load_runs(uri, args.experiment, args.sweep)
    sweep = str(runs["tags.sweep_id"].iloc[0]) if args.sweep and "tags.sweep_id" in runs.columns else None
    table = comparison_table(runs, args.sort)
    title = f"{args.experiment}: sweep {sweep}" if sweep else f"{args.experiment}: all finished runs"
    print(f"{title} ({len(table)} runs, best {args.sort} first)\n")
    print(to_markdown(table))
    out = args.out or default_out(args.experiment, sweep)
    files = write_report(table, out, title)
    print(f"wrote {', '.join(str(f) for f in files)}")
    if args.log:
        run_id = log_report(uri, args.experiment, sweep, files, args.sort, list(runs["run_id"]))
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

"""Reads MLflow, never the sweep folders, only through an ``MlflowClient`` of the chosen URI (no process-wide one)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from glove_exp.app.interrupts import Interrupts
from glove_exp.app.schema import default_tracking_uri
from glove_exp.app.store import Store
from glove_exp.app.tracking import tracked_run
from glove_exp.core.errors import GloveExpError, first_line
from glove_exp.report.query import REPORT_TAG, STORE_ERRORS, load_runs, sweep_key
from glove_exp.report.render import FILES, group_display, summary_note, to_markdown, write_report
from glove_exp.report.statistics import DEFAULT_SORT, best_group_metrics, check_sort, group_runs

PROG = "glove-exp-report"
TABLE_ARTIFACT = "results_table.json"  # the group table as an MLflow table (shown in the UI)


def log_report(uri: str, experiment: str, sweep: str | None, report_files: tuple[list[Path], Figure], groups: pd.DataFrame,
               params: dict[str, str], run_ids: list[str]) -> str:  # fmt: skip
    """The id of a new FINISHED run ``report-<sweep or experiment>`` (user and source tags as ``start_run``
    gives) with the best group's metrics, table, figure and files; for a sweep, the parent of its runs
    that have none (the MLflow UI nests them under it)."""
    files, figure = report_files
    run_name = f"report-{sweep or experiment}"
    tags = {
        REPORT_TAG: "true",
        "best_group": str(groups["group"].iloc[0])[:5000],
        **({"sweep_id": sweep} if sweep else {}),
        MLFLOW_RUN_NAME: run_name,
    }
    store = Store.open(uri, experiment)
    try:
        with tracked_run(store, run_name, tags, Interrupts(PROG)) as run:
            run.log_params(params)  # each write on its own: a signal is raised between two of them
            run.log_metrics(best_group_metrics(groups))
            run.call(store.client.log_table, groups, artifact_file=TABLE_ARTIFACT)
            run.call(store.client.log_figure, figure, FILES[-1])
            for path in files[:-1]:
                run.call(store.client.log_artifact, str(path))
        if sweep:
            for child in run_ids:
                if MLFLOW_PARENT_RUN_ID not in store.client.get_run(child).data.tags:
                    store.client.set_tag(child, MLFLOW_PARENT_RUN_ID, run.run_id)
    except STORE_ERRORS as err:
        raise GloveExpError(f"cannot log the report to {uri}: {first_line(err)}") from err
    return run.run_id


def _path_part(text: str, fallback: str) -> str:
    """One safe folder name: letters, digits and ``. _ -`` only, never ``.``/``..`` or hidden."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or fallback


def default_out(experiment: str, sweep: str | None) -> Path:
    """``reports/<experiment>/all`` or ``reports/<experiment>/<sweep id, / turned into _>``; always inside ``reports/``."""
    leaf = _path_part(sweep_key(sweep), "sweep") if sweep else "all"
    return Path("reports") / _path_part(experiment, "experiment") / leaf


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
        "--tracking-uri",
        help="default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db?timeout=10 (as for glove-exp)",
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
        action="extend",  # --by a,b --by c: [a, b, c]
        type=lambda value: [key.strip() for key in value.split(",") if key.strip()],
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
    args.by = args.by or None
    return args


def report(args: argparse.Namespace) -> None:
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise GloveExpError(f"--out {args.out} is a file, not a folder")
    uri = args.tracking_uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):  # MLflow's default retries take minutes to give up
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    runs = load_runs(uri, args.experiment, args.sweep)
    sweep = str(runs["tags.sweep_id"].iloc[0]) if args.sweep and "tags.sweep_id" in runs.columns else None
    sort = check_sort(runs, args.sort)
    groups, run_rows = group_runs(runs, args.by, sort)
    title = f"{args.experiment}: sweep {sweep}" if sweep else f"{args.experiment}: all finished runs"
    note = summary_note(groups, len(run_rows), args.by, sort)
    print(f"{title}\n\n{note}\n")
    print(to_markdown(group_display(groups)))
    report_files = write_report(groups, run_rows, args.out or default_out(args.experiment, sweep), title, note)
    print(f"wrote {', '.join(str(f) for f in report_files[0])}")
    if args.log:
        params = {"sort": sort, "group_by": ",".join(args.by) if args.by else "all params but trainer.seed"}
        run_id = log_report(uri, args.experiment, sweep, report_files, groups, params, list(runs["run_id"]))
        print(f"logged to MLflow run {run_id} (report-{sweep or args.experiment}) in {uri}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        report(args)
    except GloveExpError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

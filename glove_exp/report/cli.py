"""Reads MLflow, never the sweep folders, only through an ``MlflowClient`` of the chosen URI (no process-wide one)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from glove_exp.app.schema import default_tracking_uri
from glove_exp.app.store import Store
from glove_exp.core.errors import GloveExpError
from glove_exp.io.console import quiet_environment, say
from glove_exp.report.compare import diff_params, find_group, find_run, pair_sort, paired, paired_report, run_label
from glove_exp.report.publish import PROG, TABLE_ARTIFACT, log_report
from glove_exp.report.query import load_runs, runs_frame, sweep_key
from glove_exp.report.render import FORMATS, format_table, group_display, summary_note, write_report
from glove_exp.report.statistics import DEFAULT_SORT, FALLBACK_SORT, check_sort, group_runs, summary_frame


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
        description="Compare the FINISHED MLflow runs of a glove-exp experiment or sweep. The seeds of one configuration "
        "(tag glove_exp.group_id; older runs without it: runs that differ only in trainer.seed) form a group; each group gets n, mean, std and a 95 % Student t interval of the validation "
        "accuracy of the kept model (best epoch with early stopping, else the last) and of the test accuracy. "
        "Prints the group table (best mean validation accuracy first; runs without validation last) and writes "
        "results.md, results.csv (groups), runs.csv and accuracy.png.",
    )
    parser.add_argument("--experiment", default="glove-exp", help="MLflow experiment name (default: %(default)s)")
    parser.add_argument(
        "--sweep",
        help="only runs of this sweep: its sweep_id tag, i.e. Hydra's sweep folder such as "
        "multirun/2026-11-25/12-00-00 (compared after os.path.normpath; absolute or relative to the cwd), "
        "or 'latest' for the sweep that ran last; with the runs its skipped jobs found "
        "(configs another sweep or a single run had finished)",
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
        "default: the glove_exp.group_id tag (every result-relevant setting but trainer.seed; for older runs without "
        "it, every param but trainer.seed), i.e. one group per configuration",
    )
    parser.add_argument(
        "--sort",
        help="metric whose group mean ranks the groups, highest first; current or old spelling "
        f"(test/accuracy or test_accuracy). Default: {DEFAULT_SORT}, the kept model's validation accuracy "
        f"(choose by validation, never by test), or {FALLBACK_SORT} where no run has a validation split",
    )
    compare = parser.add_mutually_exclusive_group()
    compare.add_argument(
        "--log",
        action="store_true",
        help="log a new MLflow run report-<sweep or experiment> (tag glove_exp.report=true) in the same experiment: "
        "the best group's val/accuracy_mean, val/accuracy_std, test/accuracy_mean, ..., n_runs, the group table "
        f"({TABLE_ARTIFACT}), the figure and the files; with --sweep it becomes the parent of the sweep's runs. "
        "Reports leave such runs out",
    )
    compare.add_argument(
        "--diff",
        nargs=2,
        metavar=("RUN_A", "RUN_B"),
        help="instead of the report, print the params in which two runs differ, with both values (a run: its id, "
        "a unique prefix of one, or a unique run name; any status)",
    )
    compare.add_argument(
        "--paired",
        nargs=2,
        metavar=("GROUP_A", "GROUP_B"),
        help="instead of the report, compare two groups (their glove_exp.group_id or a unique prefix, or the "
        "config label) over the seeds both ran: the mean difference A - B of the --sort metric, its paired 95 %% "
        "Student t interval, and a per-seed table (FINISHED runs; with --sweep, of that sweep)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="markdown",
        help="how tables are printed: markdown (default; accuracies in %%) or csv or json (raw values, one JSON "
        "list of records per table; tables only, other lines go to stderr)",
    )
    args = parser.parse_args(argv)
    args.by = args.by or None
    return args


def diff(args: argparse.Namespace, uri: str) -> None:
    """``--diff``: the params in which two runs differ."""
    runs = runs_frame(args.experiment, uri)
    where = f"experiment {args.experiment!r}"
    a, b = (find_run(runs, wanted, where) for wanted in args.diff)
    table = diff_params(a, b)
    if args.format == "markdown":
        say(f"a: {run_label(a)}\nb: {run_label(b)}\n")
        if table.empty:
            say("no param differs")
            return
    say(format_table(table, args.format), end="")


def compare_groups(args: argparse.Namespace, uri: str) -> None:
    """``--paired``: two groups over their shared seeds."""
    runs = load_runs(uri, args.experiment, args.sweep).runs
    sort = check_sort(runs, args.sort)
    groups = summary_frame(runs, metrics=(sort,), sort=sort)
    where = f"experiment {args.experiment!r}" + (f", sweep {args.sweep!r}" if args.sweep else "")
    a, b = (find_group(groups, wanted, where) for wanted in args.paired)
    sort = pair_sort(runs, a, b) if args.sort is None else sort
    say(paired_report(paired(runs, a, b, sort), args.format), end="")


def report(args: argparse.Namespace) -> None:
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise GloveExpError(f"--out {args.out} is a file, not a folder")
    uri = args.tracking_uri or default_tracking_uri()
    if uri.startswith(("http://", "https://")):  # MLflow's default retries take minutes to give up
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    if args.diff or args.paired:
        (diff if args.diff else compare_groups)(args, uri)
        return
    selected = load_runs(uri, args.experiment, args.sweep)
    runs, sweep = selected.runs, selected.sweep
    found = runs["run_id"].isin(selected.found)  # runs the sweep's skipped jobs found
    sort = check_sort(runs, args.sort)
    groups, run_rows = group_runs(runs, args.by, sort)
    title = f"{args.experiment}: sweep {sweep}" if sweep else f"{args.experiment}: all finished runs"
    note = summary_note(groups, len(run_rows), args.by, sort, int(found.sum()))
    markdown = args.format == "markdown"
    status = sys.stdout if markdown else sys.stderr  # csv and json print the table alone
    if markdown:
        say(f"{title}\n\n{note}\n")
    say(format_table(group_display(groups) if markdown else groups, args.format), end="")
    report_files = write_report(groups, run_rows, args.out or default_out(args.experiment, sweep), title, note)
    say(f"wrote {', '.join(str(f) for f in report_files)}", stream=status)
    if args.log:
        params = {
            "sort": sort,
            "group_by": ",".join(args.by) if args.by else "glove_exp.group_id (seeds of one config)",
        }
        run_ids = list(runs.loc[~found, "run_id"])  # found runs keep their parents
        run_id = log_report(Store.open(uri, args.experiment), sweep, report_files, groups, params, run_ids)
        say(f"logged to MLflow run {run_id} (report-{sweep or args.experiment}) in {uri}", stream=status)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_environment(sys.stderr.isatty())
    try:
        report(args)
    except GloveExpError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

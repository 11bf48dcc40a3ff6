"""glove-exp-report on a small SQLite store of fake runs: a sweep with current metric names and seeds,
a sweep with the old names, FAILED runs, a lone run, and an experiment ``..`` of runs with hostile names."""

from __future__ import annotations

import csv
import io
import math
import shutil
import statistics
import subprocess
import sys
import warnings
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag

from glove_exp.app.store import Store
from glove_exp.core.errors import GloveExpError
from glove_exp.io.files import spreadsheet_safe
from glove_exp.report import cli, query, render
from glove_exp.report.statistics import group_runs, summary_frame

OLD_SWEEP = "multirun/2026-11-24/10-00-00"
NEW_SWEEP = "multirun/2026-11-25/12-00-00"
FAILED_SWEEP = "multirun/2026-11-01/09-00-00"  # nothing finished
T0 = 1_790_000_000_000  # ms
T_975 = {1: 12.706204736174705, 2: 4.302652729911275}  # Student t quantiles by degrees of freedom (tables)
LONG_LR = "0.0012345678901234567"


def add_run(uri: str, name: str, *, val: float | None, test: float, lr: str = "0.01", seed: int = 0, start: int,
            sweep: str | None = None, status: str = "FINISHED", history: list[float] | None = None,
            old_names: bool = False, pooling: str = "mean", activation: str = "relu",
            experiment: str = "glove-exp") -> str:  # fmt: skip
    """One training-like run with the tags, params and metrics glove-exp logs (``val=None``: no
    validation split). ``history`` is the per-epoch validation accuracy; the kept model is the last
    epoch, ``val``. ``old_names``: the metric names of stores written before the rename."""
    client = mlflow.MlflowClient(uri)
    experiment_id = Store.open(uri, experiment).experiment_id
    tags = {"mlflow.runName": name, "dataset": "ag_news", "embeddings": "glove50", "pooling": pooling}
    if sweep:
        tags |= {"sweep_id": sweep, "hydra_job_num": "0", "hydra_overrides": f"optimizer.lr={lr} trainer.seed={seed}"}
    run = client.create_run(experiment_id, start_time=T0 + start, tags=tags, run_name=name)
    params = {"model.pooling": pooling, "model.hidden_sizes": "[128]", "model.activation": activation,
              "optimizer.name": "adam", "optimizer.lr": lr, "trainer.max_tokens": "64", "trainer.epochs": "3",
              "trainer.seed": str(seed), "dataset.val_fraction": "0.0" if val is None else "0.1"}  # fmt: skip
    history = history or ([] if val is None else [val - 0.1, val - 0.05, val])
    best = max(history) if history else None
    if old_names:
        final = {"test_accuracy": test, "test_macro_f1": test - 0.01, "epochs_run": 3, "train_time_s": 12.5,
                 "selected_epoch": 3, "selected_val_accuracy": val, "best_val_accuracy": best}  # fmt: skip
        per_epoch = "val_accuracy"
    else:
        final = {"test/accuracy": test, "test/macro_f1": test - 0.01, "test/f1/World": test, "train/epochs_run": 3,
                 "train/selected_epoch": 3, "time/train_s": 12.5, "time/total_s": 20.0, "val/selected_accuracy": val,
                 "train/best_epoch": history.index(best) + 1 if history else None}  # fmt: skip
        per_epoch = "val/accuracy"
    metrics = [Metric(k, v, T0 + start, 0) for k, v in final.items() if v is not None]
    metrics += [Metric(per_epoch, v, T0 + start, step) for step, v in enumerate(history, start=1)]
    client.log_batch(
        run.info.run_id,
        metrics=metrics,
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    client.set_terminated(run.info.run_id, status=status, end_time=T0 + start + 1000)
    return run.info.run_id


# NEW_SWEEP: lr=0.01 over 3 seeds, lr=0.1 over 2, LONG_LR once (its best epoch, 0.95, beats every
# kept model; the kept one, the last, does not), one run without validation (best test accuracy)
A_VAL, A_TEST = [0.90, 0.88, 0.89], [0.85, 0.84, 0.86]
B_VAL, B_TEST = [0.70, 0.74], [0.71, 0.73]
HOSTILE = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "<img src=x onerror=alert(1)>&co"]


def make_store(folder: Path, empty: Path) -> str:
    """The store of the module docstring in ``folder``, from a copy of the ``empty`` database."""
    shutil.copyfile(empty, folder / "mlflow.db")
    uri = f"sqlite:///{folder}/mlflow.db"
    add_run(uri, "old-a", val=0.80, test=0.79, lr="0.1", start=0, sweep=OLD_SWEEP, old_names=True)
    add_run(uri, "old-b", val=0.78, test=0.83, lr="0.01", start=1000, sweep=OLD_SWEEP, old_names=True,
            history=[0.70, 0.95, 0.78])  # fmt: skip
    add_run(
        uri, "old-failed", val=0.99, test=0.99, lr="1.0", start=2000, sweep=OLD_SWEEP, status="FAILED", old_names=True
    )
    for seed, (val, test) in enumerate(zip(A_VAL, A_TEST)):
        add_run(uri, f"a-{seed}", val=val, test=test, lr="0.01", seed=seed, start=3000 + seed, sweep=NEW_SWEEP)
    for seed, (val, test) in enumerate(zip(B_VAL, B_TEST)):
        add_run(uri, "new|pipe", val=val, test=test, lr="0.1", seed=seed, start=3100 + seed, sweep=NEW_SWEEP)
    add_run(uri, "kept-last", val=0.80, test=0.80, lr=LONG_LR, start=3200, sweep=NEW_SWEEP, history=[0.70, 0.95, 0.80])
    add_run(uri, "no-val", val=None, test=0.99, start=3300, sweep=NEW_SWEEP)
    add_run(uri, "new-failed", val=0.99, test=0.99, start=3400, sweep=NEW_SWEEP, status="FAILED")
    add_run(uri, "lone", val=0.60, test=0.61, lr="0.001", start=5000, pooling="max")
    add_run(uri, "broken", val=0.5, test=0.5, start=-1000, sweep=FAILED_SWEEP, status="FAILED")
    for i, name in enumerate(HOSTILE):  # experiment "..", runs named to attack spreadsheets and Markdown
        add_run(uri, name, val=0.5 + i / 100, test=0.5, lr="-0.5" if i == 0 else "0.01", seed=i, start=i,
                activation="=evil()", pooling="<b>x</b>", experiment="..")  # fmt: skip
    return uri


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory) -> Path:
    """A database with MLflow's tables and no experiment of ours: creating the tables takes seconds."""
    path = tmp_path_factory.mktemp("empty") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory, empty_db) -> str:
    return make_store(tmp_path_factory.mktemp("store"), empty_db)


@pytest.fixture(scope="module")
def new_sweep(store) -> tuple[pd.DataFrame, pd.DataFrame]:
    return group_runs(query.load_runs(store, "glove-exp", NEW_SWEEP).runs)


def run_cli(capsys, *args: str) -> tuple[str, str]:
    cli.main(list(args))
    captured = capsys.readouterr()
    return captured.out, captured.err


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def md_rows(text: str) -> list[list[str]]:
    """The cells of a Markdown table's body rows (header and rule dropped)."""
    lines = [line for line in text.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def interval(values: list[float]) -> tuple[float, float, float]:
    """Mean, sample std and the 95 % interval's half width, independent of the report's code."""
    mean, std = statistics.fmean(values), statistics.stdev(values)
    return mean, std, T_975[len(values) - 1] * std / math.sqrt(len(values))


def test_groups_runs_that_differ_only_in_seed(new_sweep):
    groups, runs = new_sweep
    assert groups["group"].tolist() == [
        "dataset.val_fraction=0.1 optimizer.lr=0.01",
        f"dataset.val_fraction=0.1 optimizer.lr={float(LONG_LR):.3g}",
        "dataset.val_fraction=0.1 optimizer.lr=0.1",
        "dataset.val_fraction=0 optimizer.lr=0.01",  # no validation: last, though its test accuracy is best
    ]
    assert groups["n"].tolist() == [3, 1, 2, 1]
    for index, (val, test) in ((0, (A_VAL, A_TEST)), (2, (B_VAL, B_TEST))):
        for name, values in (("val_accuracy", val), ("test_accuracy", test)):
            mean, std, half = interval(values)
            assert groups.at[index, f"{name}_mean"] == pytest.approx(mean)
            assert groups.at[index, f"{name}_std"] == pytest.approx(std)
            assert groups.at[index, f"{name}_ci_low"] == pytest.approx(mean - half)
            assert groups.at[index, f"{name}_ci_high"] == pytest.approx(mean + half)
    lone = groups.iloc[1]
    assert (
        lone["val_accuracy_mean"] == 0.80
        and math.isnan(lone["val_accuracy_std"])
        and math.isnan(lone["val_accuracy_ci_low"])
    )
    assert math.isnan(groups.iloc[3]["val_accuracy_mean"])
    assert sorted(groups.iloc[0]["run_ids"].split()) == sorted(runs["run_id"].head(3))
    # runs in group order, best validation first within a group
    assert runs["run"].tolist() == ["a-0", "a-2", "a-1", "kept-last", "new|pipe", "new|pipe", "no-val"]
    assert runs["seed"].tolist()[:3] == [0, 2, 1]


def test_ranks_by_the_kept_models_validation_accuracy_in_both_spellings(store, new_sweep):
    groups, runs = new_sweep
    kept = runs.set_index("run").loc["kept-last"]
    assert kept["val_accuracy"] == 0.80  # not its best epoch's 0.95, which would rank it first
    assert groups["group"].iloc[0].endswith("lr=0.01")
    old_groups, old_runs = group_runs(query.load_runs(store, "glove-exp", OLD_SWEEP).runs)
    assert old_runs["run"].tolist() == ["old-a", "old-b"]  # old-b's best epoch (0.95) is not the kept one (0.78)
    assert old_runs["val_accuracy"].tolist() == [0.80, 0.78]
    assert old_runs["test_accuracy"].tolist() == [0.79, 0.83]
    assert old_runs["macro_f1"].tolist() == pytest.approx([0.78, 0.82])
    assert old_runs["epochs"].tolist() == [3, 3] and old_runs["train_s"].tolist() == [12.5, 12.5]
    assert old_groups["val_accuracy_mean"].tolist() == [0.80, 0.78]


def test_latest_sweep_table_and_files(store, tmp_path, capsys):
    out, _ = run_cli(capsys, "--tracking-uri", store, "--sweep", "latest", "--out", str(tmp_path / "r"))
    assert "old-b" not in out and "lone" not in out and NEW_SWEEP in out
    rows = md_rows(out.split("wrote")[0])
    assert [r[0] for r in rows] == [
        "dataset.val_fraction=0.1 optimizer.lr=0.01",
        "dataset.val_fraction=0.1 optimizer.lr=0.00123",
        "dataset.val_fraction=0.1 optimizer.lr=0.1",
        "dataset.val_fraction=0 optimizer.lr=0.01",
    ]
    header = [c.strip() for c in next(line for line in out.splitlines() if line.startswith("|")).strip("|").split("|")]
    cells = [dict(zip(header, row)) for row in rows]
    mean, std, half = interval(A_VAL)
    assert cells[0]["n"] == "3" and cells[0]["epochs"] == "3" and cells[0]["lr"] == "0.01"
    assert cells[0]["val acc %"] == f"{100 * mean:.2f}" and cells[0]["val sd"] == f"{100 * std:.2f}"
    assert cells[0]["val 95% CI"] == f"[{100 * (mean - half):.2f}, {100 * (mean + half):.2f}]"
    assert cells[1]["lr"] == "0.00123"  # 3 significant digits, not 19
    assert "dataset" not in header and "Same in every group: dataset ag_news, embeddings glove50, pooling mean" in out
    assert (cells[1]["val acc %"], cells[1]["val sd"], cells[1]["val 95% CI"]) == ("80.00", "–", "–")  # n = 1
    assert (cells[3]["val acc %"], cells[3]["val 95% CI"], cells[3]["test acc %"]) == ("–", "–", "99.00")
    groups_csv = csv_rows(tmp_path / "r" / "results.csv")
    assert [r["n"] for r in groups_csv] == ["3", "1", "2", "1"]
    assert float(groups_csv[0]["test_accuracy_mean"]) == pytest.approx(
        statistics.fmean(A_TEST)
    )  # raw, not a percentage
    runs_csv = csv_rows(tmp_path / "r" / "runs.csv")
    assert [r["run"] for r in runs_csv] == ["a-0", "a-2", "a-1", "kept-last", "new|pipe", "new|pipe", "no-val"]
    assert float(runs_csv[3]["lr"]) == float(LONG_LR)
    md = (tmp_path / "r" / "results.md").read_text(encoding="utf-8")
    assert NEW_SWEEP in md and "new\\|pipe" in md and "## Runs" in md
    assert len(md_rows(md.split("## Runs")[0])) == 4 and len(md_rows(md.split("## Runs")[1])) == 7
    png = (tmp_path / "r" / "accuracy.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert str(tmp_path / "r" / "results.csv") in out


@pytest.mark.parametrize("args", [("--sweep", NEW_SWEEP), ("--diff", "a-0", "a-1")])
def test_a_report_whose_stdout_is_closed_still_writes_its_files_and_exits_0(store, tmp_path, args):
    """``glove-exp-report | head -1``: the reader is gone before the first line (as a pipe's reader that
    read it would be for the rest), and the report still writes its files."""
    command = [sys.executable, "-m", "glove_exp.report.cli", "--tracking-uri", store, "--out", str(tmp_path), *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    assert (proc.wait(timeout=120), proc.stderr.read()) == (0, "")
    assert (tmp_path / "results.md").is_file() == (args[0] == "--sweep")


def test_one_run_is_one_run_in_one_group(store, new_sweep):
    groups, _ = new_sweep
    assert render.summary_note(groups.head(1), 1, None, "val/selected_accuracy").startswith("1 run in 1 group (")
    assert render.best_group_line(groups.head(1)).startswith("best of 1 group: ")
    assert render.summary_note(groups, 7, None, "val/selected_accuracy").startswith("7 runs in 4 groups (")


def test_whole_experiment_default_out_and_old_names(store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    run_cli(capsys)
    runs = csv_rows(tmp_path / "reports" / "glove-exp" / "all" / "runs.csv")
    assert {r["run"] for r in runs} == {
        "a-0",
        "a-1",
        "a-2",
        "new|pipe",
        "kept-last",
        "no-val",
        "old-a",
        "old-b",
        "lone",
    }
    assert len(runs) == 10  # two new|pipe seeds; FAILED runs left out
    # old-a (lr 0.1, seed 0) and the lr=0.1 seeds of the new sweep share a configuration: one group of 3
    groups = csv_rows(tmp_path / "reports" / "glove-exp" / "all" / "results.csv")
    by_label = {g["group"]: g for g in groups}
    assert by_label["dataset.val_fraction=0.1 model.pooling=mean optimizer.lr=0.1"]["n"] == "3"
    mean = statistics.fmean([*B_VAL, 0.80])
    assert float(
        by_label["dataset.val_fraction=0.1 model.pooling=mean optimizer.lr=0.1"]["val_accuracy_mean"]
    ) == pytest.approx(mean)


def test_by_keys(store, tmp_path, capsys):
    runs = query.load_runs(store, "glove-exp").runs
    groups, _ = group_runs(runs, ["model.pooling"])
    assert groups["group"].tolist() == ["model.pooling=mean", "model.pooling=max"]
    assert groups["n"].tolist() == [9, 1] and groups["val_accuracy_n"].tolist() == [8, 1]
    assert render.group_display(groups)["n"].tolist() == ["9 (8 with val)", "1"]
    assert "pooling" in groups.columns and "lr" not in groups.columns  # context columns only where one value per group
    values = [0.80, 0.78, *A_VAL, *B_VAL, 0.80]  # no-val has no validation value
    mean, std = statistics.fmean(values), statistics.stdev(values)
    assert groups.at[0, "val_accuracy_mean"] == pytest.approx(mean) and groups.at[
        0, "val_accuracy_std"
    ] == pytest.approx(std)
    twice, _ = group_runs(runs, ["optimizer.lr", "model.pooling"])
    out, _ = run_cli(
        capsys, "--tracking-uri", store, "--by", "optimizer.lr,model.pooling", "--out", str(tmp_path / "a")
    )
    run_cli(
        capsys, "--tracking-uri", store, "--by", "optimizer.lr", "--by", "model.pooling", "--out", str(tmp_path / "b")
    )
    assert [g["group"] for g in csv_rows(tmp_path / "a" / "results.csv")] == twice["group"].tolist()
    assert (tmp_path / "a" / "results.csv").read_text() == (tmp_path / "b" / "results.csv").read_text()
    assert "grouped by optimizer.lr, model.pooling" in out
    assert twice["group"].iloc[0] == "optimizer.lr=0.01 model.pooling=mean"


def test_sort_accepts_either_spelling(store, tmp_path, capsys):
    runs = query.load_runs(store, "glove-exp", NEW_SWEEP).runs
    new, _ = group_runs(runs, sort="test/accuracy")
    old, _ = group_runs(runs, sort="test_accuracy")
    assert new["group"].tolist() == old["group"].tolist()
    assert new["group"].iloc[0] == "dataset.val_fraction=0 optimizer.lr=0.01"  # the best test accuracy
    out, _ = run_cli(
        capsys, "--tracking-uri", store, "--sweep", NEW_SWEEP, "--sort", "time/total_s", "--out", str(tmp_path)
    )
    assert "best mean time/total_s first" in out and "mean time/total_s" in out.splitlines()[4]
    out, _ = run_cli(
        capsys, "--tracking-uri", store, "--sweep", NEW_SWEEP, "--sort", "test_macro_f1", "--out", str(tmp_path)
    )
    assert md_rows(out.split("wrote")[0])[0][0] == "dataset.val_fraction=0 optimizer.lr=0.01"


def test_log_report_parent_metrics_table_and_figure(tmp_path, capsys, empty_db):
    uri = make_store(tmp_path, empty_db)
    elsewhere = f"sqlite:///{tmp_path}/elsewhere.db"
    mlflow.set_tracking_uri(elsewhere)  # the report's MLflow calls use their own client, not this
    run_cli(capsys, "--tracking-uri", uri, "--sweep", NEW_SWEEP, "--out", str(tmp_path / "r1"), "--log")
    assert mlflow.get_tracking_uri() == elsewhere and mlflow.active_run() is None
    assert not (tmp_path / "elsewhere.db").exists()
    mlflow.set_tracking_uri(uri)
    reports = mlflow.search_runs(experiment_names=["glove-exp"], filter_string="tags.`glove_exp.report` = 'true'")
    assert len(reports) == 1
    row = reports.iloc[0]
    assert row["tags.sweep_id"] == NEW_SWEEP and row["tags.mlflow.runName"] == f"report-{NEW_SWEEP}"
    assert row["status"] == "FINISHED" and row["tags.best_group"] == "dataset.val_fraction=0.1 optimizer.lr=0.01"
    val_mean, val_std, val_half = interval(A_VAL)
    test_mean, test_std, test_half = interval(A_TEST)
    expected = {"val/accuracy_mean": val_mean, "val/accuracy_std": val_std, "val/accuracy_ci95": val_half,
                "test/accuracy_mean": test_mean, "test/accuracy_std": test_std, "test/accuracy_ci95": test_half,
                "n_runs": 3, "n_groups": 4}  # fmt: skip
    for name, value in expected.items():
        assert row[f"metrics.{name}"] == pytest.approx(value), name
    assert row["params.sort"] == "val/selected_accuracy"
    assert row["tags.mlflow.source.type"] == "LOCAL" and row["tags.mlflow.user"]  # as mlflow.start_run tags a run
    run_id = row["run_id"]
    artifacts = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(run_id)}
    assert artifacts == {*render.FILES, cli.TABLE_ARTIFACT}
    for name in render.FILES:  # the report's files as written, the figure drawn once
        logged = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name, dst_path=str(tmp_path / "got"))
        assert Path(logged).read_bytes() == (tmp_path / "r1" / name).read_bytes(), name
    mlflow.set_experiment("glove-exp")
    table = mlflow.load_table(cli.TABLE_ARTIFACT, run_ids=[run_id])
    assert table["group"].tolist()[0] == row["tags.best_group"] and table["n"].tolist() == [3, 1, 2, 1]
    children = mlflow.search_runs(
        experiment_names=["glove-exp"], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'"
    )
    assert sorted(children["tags.mlflow.runName"]) == [
        "a-0",
        "a-1",
        "a-2",
        "kept-last",
        "new|pipe",
        "new|pipe",
        "no-val",
    ]
    # the report run carries the sweep's tag and is newest, yet neither rows nor `latest` see it
    run_cli(capsys, "--tracking-uri", uri, "--sweep", "latest", "--out", str(tmp_path / "r2"))
    assert len(csv_rows(tmp_path / "r2" / "runs.csv")) == 7
    out, _ = run_cli(capsys, "--tracking-uri", uri, "--out", str(tmp_path / "r3"))
    assert "report-" not in out and len(csv_rows(tmp_path / "r3" / "runs.csv")) == 10


@pytest.mark.parametrize("page_size", [query.PAGE_SIZE, 3])
def test_runs_frame_is_what_mlflow_search_runs_gives(store, monkeypatch, page_size):
    monkeypatch.setattr(query, "PAGE_SIZE", page_size)  # 3: the 10 finished runs come in 4 pages
    client = mlflow.MlflowClient(store)
    experiment_id = client.get_experiment_by_name("glove-exp").experiment_id
    ours = query.search_frame(client, [experiment_id], "attributes.status = 'FINISHED'")
    mlflow.set_tracking_uri(store)
    theirs = mlflow.search_runs([experiment_id], "attributes.status = 'FINISHED'", output_format="pandas")
    assert len(ours) == 10 and sorted(ours.columns) == sorted(theirs.columns)
    assert ours.columns[:6].tolist() == theirs.columns[:6].tolist()  # then metrics, params and tags
    pd.testing.assert_frame_equal(ours, theirs[ours.columns])
    empty = query.search_frame(client, [experiment_id], "attributes.status = 'KILLED'")
    pd.testing.assert_frame_equal(
        empty, mlflow.search_runs([experiment_id], "attributes.status = 'KILLED'", output_format="pandas")
    )


def test_default_store_is_mlflow_db_in_the_cwd(store, tmp_path, monkeypatch, capsys):
    """``default_tracking_uri()``'s ``?timeout=10`` is no part of the file the report checks for."""
    shutil.copyfile(store.removeprefix("sqlite:///"), tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out, _ = run_cli(capsys, "--sweep", "latest")
    assert NEW_SWEEP in out and (tmp_path / "reports" / "glove-exp" / "multirun_2026-11-25_12-00-00").is_dir()
    (tmp_path / "mlflow.db").unlink()
    line = assert_user_error(capsys)
    assert line.endswith(f"no MLflow database at {tmp_path / 'mlflow.db'}; run glove-exp first or pass --tracking-uri")
    assert not (tmp_path / "mlflow.db").exists()


def test_plot_labels_fit_and_no_warnings(store, new_sweep, tmp_path):
    groups, runs = new_sweep
    long = groups.assign(group=["x" * 150, "model.dropout=0.5 " * 8, "short", "y=1"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        render.write_report(long, runs, tmp_path, "a title " * 20, "note")
        figure = render.accuracy_figure(long, "a title " * 20)
    assert [str(w.message) for w in caught] == []
    figure.draw_without_rendering()
    box = figure.bbox
    labels = figure.axes[0].get_yticklabels()
    texts = ["".join(label.get_text().split()) for label in labels]  # wrapped, never cut
    assert texts == ["".join(f"{g} (n={n})".split()) for g, n in zip(long["group"], long["n"])]
    for label in labels:  # all of each label inside the figure
        extent = label.get_window_extent()
        assert extent.x0 >= box.x0 and extent.x1 <= box.x1 and extent.y0 >= box.y0 and extent.y1 <= box.y1
    assert [ax.get_xlabel() for ax in figure.axes] == ["validation accuracy (%)", "test accuracy (%)"]
    assert "95 % interval" in figure.get_supxlabel()
    without_val = render.accuracy_figure(long.assign(val_accuracy_mean=math.nan), "no validation split")
    assert [ax.get_xlabel() for ax in without_val.axes] == ["test accuracy (%)"]


# --- safety ---


def test_csv_cells_cannot_be_formulas(store, tmp_path, capsys):
    run_cli(capsys, "--tracking-uri", store, "--experiment", "..", "--out", str(tmp_path))
    runs = csv_rows(tmp_path / "runs.csv")
    assert sorted(r["run"] for r in runs) == sorted("'" + name if name[0] in "=+-@\t" else name for name in HOSTILE)
    assert {r["activation"] for r in runs} == {"'=evil()"}
    assert "-0.5" in {r["lr"] for r in runs}  # a negative number stays a number
    groups = csv_rows(tmp_path / "results.csv")
    assert {g["activation"] for g in groups} == {"'=evil()"}
    assert spreadsheet_safe("-3.5e-2") == "-3.5e-2" and spreadsheet_safe(-2.0) == -2.0
    assert spreadsheet_safe("\rx") == "'\rx"


def test_confusion_matrix_csv_cells_cannot_be_formulas():
    import numpy as np

    from glove_exp.app.tracking import confusion_csv

    rows = list(csv.reader(io.StringIO(confusion_csv(np.eye(2, dtype=int), ["=HYPERLINK()", "@b"]))))
    assert rows[0][1:] == ["'=HYPERLINK()", "'@b"] and [r[0] for r in rows[1:]] == ["'=HYPERLINK()", "'@b"]


def test_markdown_has_no_raw_html(store, tmp_path, capsys):
    run_cli(capsys, "--tracking-uri", store, "--experiment", "..", "--out", str(tmp_path))
    md = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "<img" not in md and "&lt;img src=x onerror=alert(1)&gt;&amp;co" in md
    assert "<b>" not in md and "pooling &lt;b&gt;x&lt;/b&gt;" in md  # in the settings common to all groups
    display = render.run_display(
        pd.DataFrame({"run": ["a|b\nc <b>"], "val_accuracy": [0.85412], "run_id": ["0123456789"]})
    )
    assert render.to_markdown(display).splitlines()[2] == "| a\\|b c &lt;b&gt; |       85.41 | 01234567 |"


@pytest.mark.parametrize(
    ("experiment", "sweep"),
    [
        ("..", None),
        ("../..", "../../etc"),
        ("a/../../b", "/abs/../../x"),
        (".", ".."),
        ("/", "."),
        (".hidden", "multirun/x"),
    ],
)
def test_default_out_stays_in_reports(experiment, sweep, tmp_path):
    out = cli.default_out(experiment, sweep)
    assert out.parts[0] == "reports" and len(out.parts) == 3
    assert (tmp_path / out).resolve().is_relative_to((tmp_path / "reports").resolve())
    assert not any(part.startswith(".") for part in out.parts)


def test_experiment_dot_dot_writes_under_reports(store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_cli(capsys, "--tracking-uri", store, "--experiment", "..")
    assert (tmp_path / "reports" / "experiment" / "all" / "results.md").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]


def assert_user_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(args))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if " INFO mlflow" not in line]  # a new store's set-up log
    assert len(lines) == 1 and lines[0].startswith("glove-exp-report: error: ") and "Traceback" not in err
    return lines[0]


def test_out_is_a_file(store, tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    line = assert_user_error(capsys, "--tracking-uri", store, "--out", str(tmp_path / "taken"))
    assert "taken" in line and "is a file" in line
    line = assert_user_error(capsys, "--tracking-uri", store, "--out", str(tmp_path / "taken" / "sub"))
    assert "cannot write the report" in line and (tmp_path / "taken").read_text() == "x"


def test_unknown_by_and_sort_list_the_available(store, tmp_path, capsys):
    line = assert_user_error(
        capsys, "--tracking-uri", store, "--by", "model.pooling,model.nope", "--out", str(tmp_path)
    )
    assert "'model.nope'" in line and "model.pooling" in line and "trainer.seed" in line
    line = assert_user_error(capsys, "--tracking-uri", store, "--sort", "nope", "--out", str(tmp_path))
    assert "'nope'" in line and "val/selected_accuracy" in line and "test/accuracy" in line
    assert "test_accuracy" not in line  # old spellings are listed under their current name


def test_runs_without_a_validation_split_rank_by_test_accuracy_unless_told(empty_db, tmp_path, capsys):
    """As a seed_tutorial sweep logs them (``dataset.val_fraction=0``): no run has val/selected_accuracy."""
    shutil.copyfile(empty_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for seed, (low, high) in enumerate([(0.80, 0.85), (0.81, 0.86)]):
        add_run(uri, f"mean-{seed}", val=None, test=low, seed=seed, start=seed, sweep=NEW_SWEEP)
        add_run(
            uri, f"flatten-{seed}", val=None, test=high, seed=seed, start=10 + seed, sweep=NEW_SWEEP, pooling="flatten"
        )
    out, _ = run_cli(capsys, "--tracking-uri", uri, "--sweep", "latest", "--out", str(tmp_path / "report"))
    assert "4 runs in 2 groups" in out and "best mean test/accuracy first" in out
    assert [row[0] for row in md_rows(out.split("wrote")[0])] == ["model.pooling=flatten", "model.pooling=mean"]
    line = assert_user_error(capsys, "--tracking-uri", uri, "--sort", "val/selected_accuracy", "--out", str(tmp_path))
    assert "'val/selected_accuracy'" in line and "test/accuracy" in line
    runs = query.load_runs(uri, "glove-exp").runs
    assert list(summary_frame(runs)["group"]) == list(group_runs(runs)[0]["group"]) == [
        "model.pooling=flatten", "model.pooling=mean",
    ]  # fmt: skip
    add_run(uri, "max-0", val=0.7, test=0.7, start=20, sweep=NEW_SWEEP, pooling="max")  # another group validates
    add_run(uri, "sum-0", val=None, test=0.9, start=-5, sweep=NEW_SWEEP, pooling="sum")  # the oldest run
    runs = query.load_runs(uri, "glove-exp").runs
    poolings = [label.rsplit("=", 1)[1] for label in group_runs(runs)[0]["group"]]
    assert (
        poolings
        == [label.rsplit("=", 1)[1] for label in summary_frame(runs)["group"]]
        == ["max", "sum", "flatten", "mean"]
    )
    only_val = summary_frame(runs, metrics=("val/selected_accuracy",))  # as --paired summarises them
    assert [label.rsplit("=", 1)[1] for label in only_val["group"]] == ["max", "sum", "flatten", "mean"]
    flatten, mean = (f"dataset.val_fraction=0 model.pooling={pooling}" for pooling in ("flatten", "mean"))
    out, _ = run_cli(capsys, "--tracking-uri", uri, "--paired", flatten, mean)
    assert out.startswith("test/accuracy, A - B over the 2 seed(s) both groups ran")
    assert "mean difference +5.00 pp" in out


def test_unknown_experiment(store, tmp_path, capsys):
    line = assert_user_error(capsys, "--tracking-uri", store, "--experiment", "nope", "--out", str(tmp_path))
    assert "'nope'" in line and "glove-exp" in line  # lists what exists


def test_unknown_sweep_lists_recent(store, tmp_path, capsys):
    line = assert_user_error(capsys, "--tracking-uri", store, "--sweep", "multirun/1999", "--out", str(tmp_path))
    assert "multirun/1999" in line and NEW_SWEEP in line and OLD_SWEEP in line


def test_sweep_path_spellings(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    client = query.open_client(store)
    experiment = query.find_experiment(client, "glove-exp")
    for spelling in (f"./{OLD_SWEEP}/", str(tmp_path / OLD_SWEEP)):
        assert query.resolve_sweep(client, experiment, spelling) == OLD_SWEEP


def test_a_sweep_folder_is_found_from_outside_the_folder_its_sweep_ran_in(store, tmp_path, monkeypatch):
    """Stored relative to the sweep's cwd; named by its absolute path, or ``.`` inside it, from elsewhere."""
    client = query.open_client(store)
    experiment = query.find_experiment(client, "glove-exp")
    inside = tmp_path / "work" / OLD_SWEEP
    inside.mkdir(parents=True)
    monkeypatch.chdir(inside)
    assert query.resolve_sweep(client, experiment, ".") == OLD_SWEEP
    monkeypatch.chdir(tmp_path)
    assert query.resolve_sweep(client, experiment, f"work/{OLD_SWEEP}") == OLD_SWEEP
    assert query.resolve_sweep(client, experiment, str(tmp_path / "gone" / NEW_SWEEP)) == NEW_SWEEP
    with pytest.raises(GloveExpError, match="unknown sweep"):  # relative, and not here: only as typed
        query.resolve_sweep(client, experiment, f"gone/{NEW_SWEEP}")
    with pytest.raises(GloveExpError, match="unknown sweep"):  # the end of a stored folder, not all of it
        query.resolve_sweep(client, experiment, str(tmp_path / "12-00-00"))


def test_a_sweep_stored_as_typed_is_found_by_any_spelling(tmp_path, empty_db, monkeypatch):
    """``hydra.sweep.dir=./sweeps/a/`` is stored so; ``--sweep sweeps/a`` still finds it."""
    uri = make_store(tmp_path, empty_db)
    add_run(uri, "typed", val=0.8, test=0.8, start=9000, sweep="./sweeps/a/")
    monkeypatch.chdir(tmp_path)
    client = query.open_client(uri)
    experiment = query.find_experiment(client, "glove-exp")
    for spelling in ("sweeps/a", "./sweeps/a/", str(tmp_path / "sweeps" / "a")):
        assert query.resolve_sweep(client, experiment, spelling) == "./sweeps/a/"
    assert query.resolve_sweep(client, experiment, "latest") == "./sweeps/a/"  # the newest run's


def test_no_finished_runs(store, tmp_path, capsys):
    line = assert_user_error(capsys, "--tracking-uri", store, "--sweep", FAILED_SWEEP, "--out", str(tmp_path / "r"))
    assert "no FINISHED runs" in line and FAILED_SWEEP in line and not (tmp_path / "r").exists()


def test_missing_or_broken_store(tmp_path, capsys):
    line = assert_user_error(capsys, "--tracking-uri", f"sqlite:///{tmp_path}/none/mlflow.db")
    assert "no MLflow database" in line and not (tmp_path / "none").exists()
    (tmp_path / "bad.db").write_text("not a database")
    line = assert_user_error(capsys, "--tracking-uri", f"sqlite:///{tmp_path}/bad.db")
    assert "cannot read the tracking store" in line


@pytest.mark.parametrize(
    ("argv", "by"),
    [([], None), (["--by", " a, b ", "--by", "c"], ["a", "b", "c"]), (["--by", " , "], None), (["--by", ""], None)],
)
def test_by_is_split_on_commas_without_blank_keys(argv, by):
    assert cli.parse_args(argv).by == by

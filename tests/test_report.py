"""glove-exp-report on a small SQLite store of fake runs: two sweeps, a FAILED run, a lone run."""

from __future__ import annotations

import csv
from pathlib import Path

import mlflow
import pytest
from mlflow.entities import Metric, Param, RunTag

from glove_exp import report, tracking

OLD_SWEEP = "multirun/2026-11-24/10-00-00"
NEW_SWEEP = "multirun/2026-11-25/12-00-00"
T0 = 1_790_000_000_000  # ms


def add_run(uri: str, name: str, *, val: float, test: float, lr: str, start: int, sweep: str | None = None,
            status: str = "FINISHED") -> str:  # fmt: skip
    """One training-like run with the tags, params and metrics glove-exp logs."""
    client = mlflow.MlflowClient(uri)
    experiment_id = tracking.ensure_experiment(uri, "glove-exp")
    tags = {"mlflow.runName": name, "dataset": "ag_news", "embeddings": "glove50", "pooling": "mean"}
    if sweep:
        tags |= {"sweep_id": sweep, "hydra_job_num": "0", "hydra_overrides": f"optimizer.lr={lr} trainer.epochs=3"}
    run = client.create_run(experiment_id, start_time=T0 + start, tags=tags, run_name=name)
    params = {"model.hidden_sizes": "[128]", "model.activation": "relu", "optimizer.name": "adam",
              "optimizer.lr": lr, "trainer.max_tokens": "64", "trainer.epochs": "3"}  # fmt: skip
    metrics = {"best_val_accuracy": val, "test_accuracy": test, "test_macro_f1": test - 0.01, "train_time_s": 12.5}
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, v, T0 + start, 0) for k, v in metrics.items()],
        params=[Param(k, v) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    client.set_terminated(run.info.run_id, status=status, end_time=T0 + start + 1000)
    return run.info.run_id


def make_store(folder: Path) -> str:
    uri = f"sqlite:///{folder}/mlflow.db"
    add_run(uri, "old-a", val=0.80, test=0.79, lr="0.1", start=0, sweep=OLD_SWEEP)
    add_run(uri, "old-b", val=0.85, test=0.83, lr="0.01", start=1000, sweep=OLD_SWEEP)
    add_run(uri, "old-failed", val=0.99, test=0.99, lr="1.0", start=2000, sweep=OLD_SWEEP, status="FAILED")
    add_run(uri, "new|pipe", val=0.70, test=0.71, lr="0.1", start=3000, sweep=NEW_SWEEP)
    add_run(uri, "new-best", val=0.90, test=0.8541, lr="0.01", start=4000, sweep=NEW_SWEEP)
    add_run(uri, "lone", val=0.60, test=0.61, lr="0.001", start=5000)
    return uri


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return make_store(tmp_path_factory.mktemp("store"))


def run_cli(capsys, *args: str) -> tuple[str, str]:
    report.main(list(args))
    captured = capsys.readouterr()
    return captured.out, captured.err


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_sweep_table_best_val_first_finished_only(store):
    table = report.comparison_table(report.load_runs(store, "glove-exp", OLD_SWEEP))
    assert table["run"].tolist() == ["old-b", "old-a"]  # the FAILED run and other sweeps left out
    assert table["val_accuracy"].tolist() == [0.85, 0.80]
    assert table["label"].tolist() == ["old-b optimizer.lr=0.01", "old-a optimizer.lr=0.1"]


def test_sweep_path_spellings(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for spelling in (f"./{OLD_SWEEP}/", str(tmp_path / OLD_SWEEP)):
        assert report.resolve_sweep("glove-exp", spelling) == OLD_SWEEP


def test_latest_sweep_and_files(store, tmp_path, capsys):
    out, _ = run_cli(capsys, "--tracking-uri", store, "--sweep", "latest", "--out", str(tmp_path / "r"))
    assert "new-best" in out and "new\\|pipe" in out and "old-b" not in out and "lone" not in out
    row = "| new-best | ag_news | glove50 | mean | 64 | [128] | relu | adam | 0.01 | 3 | 90.00 | 85.41 | 84.41 | 12.5 |"
    assert row in out
    rows = csv_rows(tmp_path / "r" / "results.csv")
    assert [r["run"] for r in rows] == ["new-best", "new|pipe"]
    assert float(rows[0]["test_accuracy"]) == pytest.approx(0.8541)  # raw, not a percentage
    md = (tmp_path / "r" / "results.md").read_text(encoding="utf-8")
    assert NEW_SWEEP in md and md.count("\n| ") == 3  # header + 2 rows
    png = (tmp_path / "r" / "test_accuracy.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert str(tmp_path / "r" / "results.csv") in out


def test_whole_experiment_default_out(store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    out, _ = run_cli(capsys)
    for name in ("new-best", "old-b", "old-a", "new\\|pipe", "lone"):
        assert name in out
    assert "old-failed" not in out
    rows = csv_rows(tmp_path / "reports" / "glove-exp" / "all" / "results.csv")
    assert [r["run"] for r in rows] == ["new-best", "old-b", "old-a", "new|pipe", "lone"]


def test_log_report_excluded_later(tmp_path, capsys):
    uri = make_store(tmp_path)
    run_cli(capsys, "--tracking-uri", uri, "--sweep", NEW_SWEEP, "--out", str(tmp_path / "r1"), "--log")
    mlflow.set_tracking_uri(uri)
    reports = mlflow.search_runs(experiment_names=["glove-exp"], filter_string="tags.`glove_exp.report` = 'true'")
    assert len(reports) == 1
    assert reports["tags.sweep_id"].iloc[0] == NEW_SWEEP
    assert reports["tags.mlflow.runName"].iloc[0] == f"report-{NEW_SWEEP}"
    assert reports["status"].iloc[0] == "FINISHED"
    artifacts = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(reports["run_id"].iloc[0])}
    assert artifacts == set(report.FILES)
    children = mlflow.search_runs(experiment_names=["glove-exp"], filter_string=f"tags.`mlflow.parentRunId` = '{reports['run_id'].iloc[0]}'")
    assert sorted(children["tags.mlflow.runName"]) == ["new-best", "new|pipe"]  # the sweep's runs, nested under it
    # the report run carries the sweep's tag and is newest, yet neither rows nor `latest` see it
    run_cli(capsys, "--tracking-uri", uri, "--sweep", "latest", "--out", str(tmp_path / "r2"))
    assert [r["run"] for r in csv_rows(tmp_path / "r2" / "results.csv")] == ["new-best", "new|pipe"]
    out, _ = run_cli(capsys, "--tracking-uri", uri, "--out", str(tmp_path / "r3"))
    assert "report-" not in out and len(csv_rows(tmp_path / "r3" / "results.csv")) == 5


def assert_user_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        report.main(list(args))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    line = err.splitlines()[-1]
    assert line.startswith("glove-exp-report: error: ") and "Traceback" not in err
    return line


def test_unknown_experiment(store, tmp_path, capsys):
    line = assert_user_error(capsys, "--tracking-uri", store, "--experiment", "nope", "--out", str(tmp_path))
    assert "'nope'" in line and "glove-exp" in line  # lists what exists


def test_unknown_sweep_lists_recent(store, tmp_path, capsys):
    line = assert_user_error(capsys, "--tracking-uri", store, "--sweep", "multirun/1999", "--out", str(tmp_path))
    assert "multirun/1999" in line and NEW_SWEEP in line and OLD_SWEEP in line


def test_no_finished_runs(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    add_run(uri, "broken", val=0.5, test=0.5, lr="0.1", start=0, sweep=OLD_SWEEP, status="FAILED")
    line = assert_user_error(capsys, "--tracking-uri", uri, "--sweep", OLD_SWEEP, "--out", str(tmp_path / "r"))
    assert "no FINISHED runs" in line and OLD_SWEEP in line


def test_missing_or_broken_store_and_bad_sort(store, tmp_path, capsys):
    line = assert_user_error(capsys, "--tracking-uri", f"sqlite:///{tmp_path}/none/mlflow.db")
    assert "no MLflow database" in line and not (tmp_path / "none").exists()
    (tmp_path / "bad.db").write_text("not a database")
    line = assert_user_error(capsys, "--tracking-uri", f"sqlite:///{tmp_path}/bad.db")
    assert "cannot read the tracking store" in line
    line = assert_user_error(capsys, "--tracking-uri", store, "--sort", "nope", "--out", str(tmp_path))
    assert "best_val_accuracy" in line


def test_markdown_escapes_and_formats():
    import pandas as pd

    table = pd.DataFrame([{"run": "a|b\nc", "val_accuracy": 0.85412, "run_id": "0123456789abcdef", "label": "x"}])
    text = report.to_markdown(table)
    assert text.splitlines()[2] == "| a\\|b c | 85.41 | 01234567 |"

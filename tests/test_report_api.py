"""The report as a library and its comparisons, on runs written by hand with an ``MlflowClient`` (no
training): ``runs_frame``, ``summary_frame``, grouping by ``glove_exp.group_id``, clipped intervals,
``--diff``, ``--paired``, ``--format`` and the sweep parent's summary."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from glove_exp.app.identity import CONFIG_TAG, GROUP_TAG, ROLE_TAG
from glove_exp.app.store import Store
from glove_exp.core.errors import GloveExpError
from glove_exp.report import cli, compare, publish, query, render, runs_frame, summary_frame
from glove_exp.report.query import REPORT_TAG
from glove_exp.report.statistics import group_runs, interval, metric_range

T0 = 1_790_000_000_000  # ms
T_975_1 = 12.706204736174705  # Student t 0.975 quantile, 1 degree of freedom (tables)
GROUP_A, GROUP_B = "aaaa1111bbbb", "cccc2222dddd"
# seed -> (val/selected_accuracy, test/accuracy); B's seed 2 FAILED, seed 3 is B's alone
A_RUNS = {0: (0.90, 0.85), 1: (0.88, 0.84), 2: (0.89, 0.86)}
B_RUNS = {0: (0.86, 0.83), 1: (0.87, 0.82), 3: (0.80, 0.81)}
OLD_RUNS = {5: (0.99, 0.98), 6: (0.60, 0.59)}  # written before the group tag: n=2, far apart


def add_run(client: mlflow.MlflowClient, experiment_id: str, name: str, start: int, *, seed: int = 0,
            lr: str = "0.01", metrics: dict[str, float] | None = None, tags: dict[str, str] | None = None,
            status: str = "FINISHED", cache_dir: str = "/cache", extra: dict[str, str] | None = None) -> str:  # fmt: skip
    """A run with glove-exp's params (``lr``, ``seed``, a path that is no part of the config, ``extra``) and
    the given final metrics and tags."""
    run = client.create_run(experiment_id, start_time=T0 + start, run_name=name)
    params = {"optimizer.lr": lr, "trainer.seed": str(seed), "model.pooling": "mean", "embeddings.cache_dir": cache_dir,
              **(extra or {})}  # fmt: skip
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(key, value, T0 + start, 0) for key, value in (metrics or {}).items()],
        params=[Param(key, value) for key, value in params.items()],
        tags=[RunTag(key, value) for key, value in (tags or {}).items()],
    )
    client.set_terminated(run.info.run_id, status=status, end_time=T0 + start + 1000)
    return run.info.run_id


def scores(val: float, test: float) -> dict[str, float]:
    return {"val/selected_accuracy": val, "test/accuracy": test, "test/macro_f1": test - 0.01, "time/train_s": 2.0}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, dict[str, str]]:
    """The store's URI and run ids by name: a sweep parent over groups A and B, their runs (they differ in a
    path that is not config), a FAILED run, two older runs without the group tag (with the ``data.*``
    params of their time) and a report run."""
    folder = tmp_path_factory.mktemp("api-store")
    uri = f"sqlite:///{folder}/mlflow.db"
    store = Store.open(uri, "glove-exp")
    client, experiment_id = store.client, store.experiment_id
    ids = {"parent": add_run(client, experiment_id, "sweep-parent", 0, tags={ROLE_TAG: "sweep"}, status="RUNNING")}
    child = {MLFLOW_PARENT_RUN_ID: ids["parent"]}
    for group, lr, runs in ((GROUP_A, "0.01", A_RUNS), (GROUP_B, "0.1", B_RUNS)):
        for seed, values in runs.items():
            tags = {GROUP_TAG: group, CONFIG_TAG: f"{group}{seed}", **child}
            name = f"{lr}-seed={seed}"
            ids[name] = add_run(client, experiment_id, name, 10 + seed, seed=seed, lr=lr, metrics=scores(*values),
                                tags=tags, cache_dir=f"/cache{seed}")  # fmt: skip
    failed = {GROUP_TAG: GROUP_B, **child}
    ids["failed"] = add_run(client, experiment_id, "0.1-seed=2", 20, seed=2, lr="0.1", metrics=scores(0.1, 0.1),
                            tags=failed, status="FAILED")  # fmt: skip
    for seed, values in OLD_RUNS.items():
        data = {"data.vocab_size": str(1000 + seed)}  # as older runs logged it: it varies with the split
        ids[f"old-{seed}"] = add_run(client, experiment_id, f"old-{seed}", seed, seed=seed, lr="0.5",
                                     metrics=scores(*values), extra=data)  # fmt: skip
    ids["report"] = add_run(client, experiment_id, "report-x", 30, tags={REPORT_TAG: "true"})
    return uri, ids


def run_cli(capsys, *args: str) -> str:
    cli.main(list(args))
    return capsys.readouterr().out


def user_error(capsys, *args: str) -> str:
    """The one stderr line of a ``glove-exp-report`` that exits 2."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(list(args))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glove-exp-report: error: ")
    return lines[0]


def test_import_is_light_and_exports_the_api():
    code = (
        "import sys, glove_exp.report as r; print(sorted(r.__all__), 'mlflow' in sys.modules, 'pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["['log_sweep_summary',", "'runs_frame',", "'summary_frame']", "False", "False"]


def test_runs_frame_leaves_parents_and_reports_out(store, monkeypatch):
    uri, ids = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # tracking_uri=None: glove-exp's default rule
    runs = runs_frame("glove-exp")
    assert set(runs["run_id"]) == set(ids.values()) - {ids["parent"], ids["report"]}
    assert runs["start_time"].is_monotonic_decreasing  # newest first, as search_runs orders them
    everything = runs_frame("glove-exp", uri, summaries=True)
    assert set(everything["run_id"]) == set(ids.values())
    parent = everything.set_index("run_id").loc[ids["parent"]]
    assert parent[f"tags.{ROLE_TAG}"] == "sweep" and parent["status"] == "RUNNING"
    mlflow.set_tracking_uri(uri)
    try:
        theirs = mlflow.search_runs(experiment_names=["glove-exp"], output_format="pandas")
    finally:
        mlflow.set_tracking_uri(None)  # back to MLflow's default rule
    pd.testing.assert_frame_equal(everything, theirs[everything.columns])
    finished = runs_frame("glove-exp", uri, "attributes.status = 'FINISHED'")
    assert ids["failed"] not in set(finished["run_id"]) and len(finished) == 8


def test_summary_frame_one_row_per_group_id(store):
    uri, _ = store
    summary = summary_frame(runs_frame("glove-exp", uri))
    # the older runs group by their params, but for the seed and data.vocab_size
    assert summary["group_id"].tolist() == [GROUP_A, GROUP_B, None]
    assert summary["n"].tolist() == [3, 3, 2]  # B's FAILED run left out
    for row, runs in ((0, A_RUNS), (1, B_RUNS)):
        for index, name in enumerate(("val/selected_accuracy", "test/accuracy")):
            values = [pair[index] for pair in runs.values()]
            mean, std = statistics.fmean(values), statistics.stdev(values)
            half = 4.302652729911275 * std / math.sqrt(3)
            assert summary.at[row, f"{name}_mean"] == pytest.approx(mean)
            assert summary.at[row, f"{name}_std"] == pytest.approx(std)
            assert summary.at[row, f"{name}_ci_low"] == pytest.approx(max(mean - half, 0))
            assert summary.at[row, f"{name}_ci_high"] == pytest.approx(min(mean + half, 1))
    assert summary.at[0, "time/train_s_mean"] == 2.0 and summary.at[0, "time/train_s_ci_low"] == 2.0
    assert "optimizer.lr=0.01" in summary.at[0, "group"]


def test_n2_intervals_stay_within_the_metrics_range(store):
    uri, _ = store
    old = summary_frame(runs_frame("glove-exp", uri)).iloc[2]
    values = [val for val, _ in OLD_RUNS.values()]
    half = T_975_1 * statistics.stdev(values) / math.sqrt(2)
    assert old["val/selected_accuracy_ci_half"] == pytest.approx(half) and half > 2  # unclipped: [-168, 327] %
    assert (old["val/selected_accuracy_ci_low"], old["val/selected_accuracy_ci_high"]) == (0.0, 1.0)
    groups, _ = group_runs(runs_frame("glove-exp", uri, "attributes.status = 'FINISHED'"))
    assert groups["val_accuracy_ci_low"].min() >= 0 and groups["val_accuracy_ci_high"].max() <= 1
    assert render.group_display(groups)["val 95% CI"].iloc[-1] == "[0.00, 100.00]"


@pytest.mark.parametrize(
    ("name", "bounds"),
    [("val/selected_accuracy", (0, 1)), ("test_accuracy", (0, 1)), ("test/macro_f1", (0, 1)),
     ("test/f1/Sci_Tech", (0, 1)), ("data/oov_rate", (0, 1)), ("time/train_s", (0, math.inf)),
     ("train/loss", (0, math.inf)), ("data/vocab_size", (0, math.inf)), ("custom", (-math.inf, math.inf))],
)  # fmt: skip
def test_metric_range(name, bounds):
    assert metric_range(name) == bounds


@pytest.mark.parametrize("n", [2, 3, 5, 10, 31, 200])
def test_interval_is_students_t(n):
    from scipy import stats

    values = pd.Series([(0.3 + 0.4 * i / n) ** 2 for i in range(n)])
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    assert interval(values)["ci_half"] == pytest.approx(half, rel=1e-12)


def test_interval_clips_only_past_the_bounds():
    inside = interval(pd.Series([0.5, 0.6, 0.55]), bounds=(0, 1))
    assert inside["ci_low"] == pytest.approx(inside["mean"] - inside["ci_half"])
    single = interval(pd.Series([0.5]), bounds=(0, 1))
    assert single["n"] == 1 and math.isnan(single["ci_low"]) and math.isnan(single["ci_half"])


def test_report_groups_by_the_tag_and_by_keys_still_by_params(store):
    uri, ids = store
    runs = runs_frame("glove-exp", uri, "attributes.status = 'FINISHED'")
    groups, _ = group_runs(runs)  # A's runs differ in embeddings.cache_dir, yet share their group_id
    assert groups["n"].tolist() == [3, 3, 2] and groups["group_id"].tolist() == [GROUP_A, GROUP_B, None]
    by_lr, _ = group_runs(runs, ["optimizer.lr"])
    assert by_lr["group"].tolist() == ["optimizer.lr=0.01", "optimizer.lr=0.1", "optimizer.lr=0.5"]
    assert "group_id" not in by_lr.columns


def test_format_csv_and_json_parse_back(store, tmp_path, capsys):
    uri, _ = store
    out = run_cli(capsys, "--tracking-uri", uri, "--format", "json", "--out", str(tmp_path / "j"))
    records = json.loads(out)
    assert [r["group_id"] for r in records] == [GROUP_A, GROUP_B, None] and records[0]["n"] == 3
    assert records[0]["val_accuracy_mean"] == pytest.approx(statistics.fmean(v for v, _ in A_RUNS.values()))
    out = run_cli(capsys, "--tracking-uri", uri, "--format", "csv", "--out", str(tmp_path / "c"))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["group_id"] for r in rows] == [GROUP_A, GROUP_B, ""] and rows[2]["val_accuracy_ci_high"] == "1.0"
    out = run_cli(capsys, "--tracking-uri", uri, "--out", str(tmp_path / "m"))
    assert "| aaaa1111   |" in out  # Markdown shows the group id's start, for --paired


def test_diff_prints_the_params_that_differ(store, capsys):
    uri, ids = store
    out = run_cli(capsys, "--tracking-uri", uri, "--diff", ids["0.01-seed=0"][:10], "0.1-seed=1")
    assert out.splitlines()[0] == f"a: {ids['0.01-seed=0'][:8]} (0.01-seed=0)"
    rows = json.loads(
        run_cli(capsys, "--tracking-uri", uri, "--format", "json", "--diff", ids["0.01-seed=0"], ids["0.1-seed=1"])
    )
    assert rows == [
        {"param": "embeddings.cache_dir", "a": "/cache0", "b": "/cache1"},
        {"param": "optimizer.lr", "a": "0.01", "b": "0.1"},
        {"param": "trainer.seed", "a": "0", "b": "1"},
    ]
    assert "| optimizer.lr" in out and "no param differs" not in out
    same = run_cli(capsys, "--tracking-uri", uri, "--diff", ids["old-5"], ids["old-5"])
    assert same.strip().endswith("no param differs")


def test_diff_unknown_run_names_recent_ones(store, capsys):
    uri, ids = store
    line = user_error(capsys, "--tracking-uri", uri, "--diff", "nope", ids["old-5"])
    assert "unknown run 'nope'" in line and "recent runs:" in line and ids["failed"][:8] in line


def paired_expected(seeds: list[int]) -> tuple[float, float, float]:
    """Mean difference A - B of the validation accuracy over ``seeds`` and its 95 % interval, by hand."""
    differences = [A_RUNS[seed][0] - B_RUNS[seed][0] for seed in seeds]
    mean = statistics.fmean(differences)
    half = T_975_1 * statistics.stdev(differences) / math.sqrt(len(differences))
    return mean, mean - half, mean + half


def test_paired_over_shared_seeds(store, capsys):
    uri, _ = store
    out = run_cli(capsys, "--tracking-uri", uri, "--paired", GROUP_A[:4], GROUP_B, "--format", "json")
    summary, per_seed = (json.loads(line) for line in out.splitlines() if line)
    mean, low, high = paired_expected([0, 1])  # B's seed 2 FAILED; seed 3 is B's alone
    assert summary[0]["n"] == 2 and summary[0]["metric"] == "val/selected_accuracy"
    assert (summary[0]["mean"], summary[0]["ci_low"], summary[0]["ci_high"]) == pytest.approx((mean, low, high))
    assert summary[0]["group_id_a"] == GROUP_A and summary[0]["group_id_b"] == GROUP_B
    assert [row["seed"] for row in per_seed] == [0, 1]
    assert [row["difference"] for row in per_seed] == pytest.approx([0.04, 0.01])
    text = run_cli(capsys, "--tracking-uri", uri, "--paired", GROUP_A, GROUP_B)
    assert f"mean difference +{100 * mean:.2f} pp" in text
    assert f"95 % paired t interval [{100 * low:+.2f}, {100 * high:+.2f}] pp" in text
    assert "|      0 | 90.00 | 86.00 |   +4.00 |" in text
    by_test = json.loads(run_cli(capsys, "--tracking-uri", uri, "--paired", GROUP_A, GROUP_B, "--sort", "test/accuracy",
                                 "--format", "json").splitlines()[0])  # fmt: skip
    assert by_test[0]["metric"] == "test/accuracy" and by_test[0]["mean"] == pytest.approx(0.02)


def test_paired_with_fewer_than_two_shared_seeds(store, capsys):
    uri, _ = store
    out = run_cli(
        capsys, "--tracking-uri", uri, "--paired", GROUP_A, "optimizer.lr=0.5"
    )  # the untagged group, by label
    assert "only 0 shared seed(s): a paired interval needs at least 2" in out


def test_paired_unknown_group_lists_the_groups(store, capsys):
    uri, _ = store
    line = user_error(capsys, "--tracking-uri", uri, "--paired", GROUP_A, "ffff")
    assert "unknown group 'ffff'" in line and GROUP_A[:8] in line and GROUP_B[:8] in line


def test_an_unknown_group_names_the_best_few_of_many():
    groups = pd.DataFrame({"group_id": [f"{i:02d}" * 16 for i in range(8)], "group": [f"lr={i}" for i in range(8)],
                           "n": [3] * 8})  # fmt: skip
    with pytest.raises(GloveExpError) as err:
        compare.find_group(groups, "ffff", "experiment 'x'")
    assert str(err.value).endswith("groups: 00000000 lr=0 (n=3), 01010101 lr=1 (n=3), 02020202 lr=2 (n=3), "
                                   "03030303 lr=3 (n=3), 04040404 lr=4 (n=3) and 3 more")  # fmt: skip


def test_log_sweep_summary_onto_the_parent(store, tmp_path):
    uri, ids = store
    copy = tmp_path / "mlflow.db"  # the module's store stays as it was for the other tests
    shutil.copyfile(uri.removeprefix("sqlite:///"), copy)
    sweep_store = Store.open(f"sqlite:///{copy}", "glove-exp")
    line = publish.log_sweep_summary(sweep_store, ids["parent"])
    assert line.startswith("sweep: best of 2 groups: optimizer.lr=0.01 (n=3): val 89.00 % [")
    client = sweep_store.client
    parent = client.get_run(ids["parent"])
    artifacts = {a.path for a in client.list_artifacts(ids["parent"])}
    assert artifacts == {*render.FILES, publish.TABLE_ARTIFACT}
    mean, std = statistics.fmean(v for v, _ in A_RUNS.values()), statistics.stdev(v for v, _ in A_RUNS.values())
    assert parent.data.metrics["val/accuracy_mean"] == pytest.approx(mean)
    assert parent.data.metrics["val/accuracy_std"] == pytest.approx(std)
    assert parent.data.metrics["n_runs"] == 3 and parent.data.metrics["n_groups"] == 2
    assert parent.data.tags["best_group"] == "optimizer.lr=0.01"
    table = json.loads(
        Path(client.download_artifacts(ids["parent"], publish.TABLE_ARTIFACT, str(tmp_path))).read_text()
    )
    assert table["columns"][:2] == ["group", "group_id"] and len(table["data"]) == 2


def test_log_sweep_summary_counts_the_runs_its_skipped_jobs_found(store, tmp_path):
    uri, ids = store
    shutil.copyfile(uri.removeprefix("sqlite:///"), tmp_path / "mlflow.db")
    sweep_store = Store.open(f"sqlite:///{tmp_path}/mlflow.db", "glove-exp")
    found = [ids["old-5"], ids["old-6"], ids["failed"], ids["0.01-seed=0"]]  # no parent; FAILED; a child already
    line = publish.log_sweep_summary(sweep_store, ids["parent"], found)
    assert line.startswith("sweep: best of 3 groups: optimizer.lr=0.01 (n=3): val 89.00 % [")
    metrics = sweep_store.client.get_run(ids["parent"]).data.metrics
    assert metrics["n_groups"] == 3
    path = sweep_store.client.download_artifacts(ids["parent"], publish.TABLE_ARTIFACT, str(tmp_path))
    table = pd.read_json(io.StringIO(Path(path).read_text()), orient="split")
    assert dict(zip(table["group"], table["n"])) == {
        "optimizer.lr=0.01": 3,
        "optimizer.lr=0.1": 3,
        "optimizer.lr=0.5": 2,
    }
    recorded = sweep_store.client.download_artifacts(ids["parent"], query.FOUND_ARTIFACT, str(tmp_path))
    assert sorted(json.loads(Path(recorded).read_text())["run_ids"]) == sorted(set(found) - {ids["failed"]})


def test_log_sweep_summary_without_finished_children(store, tmp_path):
    uri, ids = store
    shutil.copyfile(uri.removeprefix("sqlite:///"), tmp_path / "mlflow.db")
    sweep_store = Store.open(f"sqlite:///{tmp_path}/mlflow.db", "glove-exp")
    line = publish.log_sweep_summary(sweep_store, ids["old-5"])
    assert line == f"sweep: no FINISHED runs under parent run {ids['old-5']}; nothing logged"
    assert sweep_store.client.list_artifacts(ids["old-5"]) == []
    assert "n_runs" not in sweep_store.client.get_run(ids["old-5"]).data.metrics


def test_the_best_group_line_leaves_out_a_missing_validation_accuracy():
    import pandas as pd

    from glove_exp.report.render import best_group_line

    group = {"group": "model.pooling=mean", "n": 1, "val_accuracy_mean": float("nan"), "val_accuracy_ci_low": float("nan"),
             "val_accuracy_ci_high": float("nan"), "test_accuracy_mean": 0.8, "test_accuracy_ci_low": float("nan"),
             "test_accuracy_ci_high": float("nan")}  # fmt: skip
    assert best_group_line(pd.DataFrame([group])) == "best of 1 group: model.pooling=mean (n=1): test 80.00 %"


@pytest.mark.parametrize(
    ("names", "label"),
    [
        (["max-seed=0", "max-seed=1", "max-seed=2"], "max"),  # a sweep over seeds alone
        (["mean-trial3-seed0", "mean-trial3-seed1"], "mean-trial3"),  # a search's trial of two seeds
        (
            ["seed_tutorial-flatten-seed=0-lr=0.1", "seed_tutorial-flatten-seed=1-lr=0.1"],
            "seed_tutorial-flatten-lr=0.1",
        ),
        (["mean", "mean"], "mean"),  # single runs
        (["seedless-seed=3", "other"], "other / seedless"),  # newest first, as the runs are listed
    ],
)
def test_a_lone_group_is_named_by_its_runs_names_without_their_seeds(tmp_path, names, label):
    store = Store.open(f"sqlite:///{tmp_path}/mlflow.db", "glove-exp")
    for seed, name in enumerate(names):
        add_run(store.client, store.experiment_id, name, seed, seed=seed, metrics=scores(0.8, 0.8))
    summary = summary_frame(runs_frame("glove-exp", f"sqlite:///{tmp_path}/mlflow.db"))
    assert summary["group"].tolist() == [label] and summary["n"].tolist() == [len(names)]

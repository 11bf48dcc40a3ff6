"""The MLflow UI, in headless Chromium, shows what a ``glove-exp -m`` sweep logs: its runs under the
sweep's parent run, their datasets, one group per config (group-by on ``glove_exp.group_id``), metric
charts grouped into sections, the sweep summary on the parent, and the LIME pages.

MLflow 3.17's UI opens an experiment on its GenAI view whatever the experiment's
``mlflow.experimentKind`` tag says (the view follows the ``Model training`` toggle, remembered by the
browser, or ``?workflowType=``); the experiment's runs address (``#/experiments/<id>/runs``) shows the
runs table all the same.

Needs Debian's ``chromium`` (/usr/bin/chromium) and ``playwright`` (the dev extra); skipped without
them. ``GLOVE_EXP_SCREENSHOTS=docs`` also saves the README's screenshots there.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from glove_exp.app import pipeline
from glove_exp.app.identity import GROUP_TAG, ROLE_TAG
from glove_exp.app.parent import read_parent
from glove_exp.app.sweep import record_job
from glove_exp.app.tracking import JobInfo
from glove_exp.report.sweep import SweepSummary
from tests.conftest import mlflow_server, store_uri, tiny_config
from tests.test_parent import sweep_config

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (Debian: apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install -e '.[dev]')")
expect = sync_api.expect

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# Without the networking flags Chromium keeps calling Google's hosts, which a closed network refuses.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
POOLINGS = ("flatten", "mean", "sum")
SEEDS = (0, 1)
SWEPT = ("model.pooling", "trainer.seed")
# What `glove-exp -m model.pooling=flatten,mean,sum trainer.seed=0,1` names its runs.
NAMES = [f"{pooling}-seed={seed}" for pooling in POOLINGS for seed in SEEDS]
LIME_RUN = "mean-seed=0"  # the one run that explains an example
PARENT = re.compile(r"^pooling x seed \d\d:\d\d$")  # the parent run's name: what is swept, and when
WAIT_MS = 30_000  # the UI's first load compiles nothing, but a busy 2-core machine is slow
SCREENSHOTS = os.environ.get("GLOVE_EXP_SCREENSHOTS")


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_data) -> Path:
    """A sweep of 3 poolings x 2 seeds, as ``glove-exp -m model.pooling=flatten,mean,sum trainer.seed=0,1``
    makes it: the sweep callback opens the parent run, the jobs run under it and record their outcome,
    and the callback logs the summary onto the parent and ends it."""
    root = tmp_path_factory.mktemp("ui-store")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        env.setenv("GLOVE_EXP_CACHE_DIR", str(root / "glove-cache"))
        env.setenv("MPLBACKEND", "Agg")
        config = sweep_config(root, "model.pooling=flatten,mean,sum", "trainer.seed=0,1")
        sweep_dir = str(config.hydra.sweep.dir)
        callback = SweepSummary()
        try:
            callback.on_multirun_start(config)
            parent_run_id = read_parent(sweep_dir, store_uri(root))
            for num, (pooling, seed) in enumerate((pooling, seed) for pooling in POOLINGS for seed in SEEDS):
                overrides = (f"model.pooling={pooling}", f"trainer.seed={seed}")
                explain = "explain.num_examples=1" if NAMES[num] == LIME_RUN else "explain.num_examples=0"
                job_config = tiny_config(
                    tiny_data, root, *overrides, "trainer.epochs=2", explain, "tracking.log_model=never"
                )
                job = JobInfo(num=num, sweep_id=sweep_dir, overrides=overrides, varying=SWEPT, parent_run_id=parent_run_id)  # fmt: skip
                result = pipeline.run(job_config, job)
                record_job(sweep_dir, {"num": num, "overrides": list(overrides), "status": "FINISHED", "run_id": result.run_id})  # fmt: skip
            callback.on_multirun_end(config)
        finally:
            callback.end_killed()  # a no-op once the sweep ended
            mlflow.set_tracking_uri(None)
    return root


@pytest.fixture(scope="module")
def server(store) -> Iterator[str]:
    """``mlflow server`` over the store; the runs' artifacts are file:// folders it reads directly.
    Ready once it says it listens on its port (read from its log)."""
    with mlflow_server(store, "--backend-store-uri", store_uri(store)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator:
    expect.set_options(timeout=WAIT_MS)
    with sync_api.sync_playwright() as playwright:  # launch() gives each browser a new empty profile
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(WAIT_MS)  # for actions; expect's own is set above
    yield context.new_page()
    context.close()


def client(store: Path) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(store_uri(store))


def experiment_id(store: Path) -> str:
    return client(store).get_experiment_by_name("glove-exp").experiment_id


def parent_run(store: Path):
    (run,) = client(store).search_runs([experiment_id(store)], f"tags.`{ROLE_TAG}` = 'sweep'")
    return run


def runs_address(server: str, store: Path, query: str = "") -> str:
    """The experiment's runs tab, with no ``workflowType`` in it."""
    return f"{server}/#/experiments/{experiment_id(store)}/runs{query}"


def open_runs(page, server: str, store: Path, mode: str = "TABLE") -> None:
    """The experiment's runs in the Model training view (switched to once with the sidebar's toggle, as a
    user does), the assistant panel closed and the parent run expanded to show the sweep's runs."""
    page.goto(runs_address(server, store))
    expect(page.get_by_role("link", name=PARENT)).to_be_visible()
    page.get_by_role("button", name="Close").click()  # the MLflow Assistant panel, open in a new profile
    page.get_by_text("Model training", exact=True).click()
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    if mode != "TABLE":  # the toggle's address keeps no view mode; the browser remembers the toggle
        page.goto(runs_address(server, store, f"?compareRunsMode={mode}"))
    page.get_by_role("gridcell").filter(has=page.get_by_role("link", name=PARENT)).get_by_role("button").click()
    for name in NAMES:
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()


def section(page, name: str):
    """A chart section's header, such as ``val (4)``."""
    return page.get_by_role("figure").filter(has_text=re.compile(rf"^{re.escape(name)}\s*\(\d+\)"))


def screenshot(page, name: str) -> None:
    if SCREENSHOTS:
        page.mouse.move(0, 0)  # no hover highlight in the picture
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / name), type="png")


def test_the_runs_address_opens_the_runs_table_and_the_toggle_is_remembered(page, server, store):
    page.goto(runs_address(server, store))  # the GenAI view's "Training runs": the same table
    expect(page.get_by_role("heading", name="Training runs", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name=PARENT)).to_be_visible()
    expect(page).not_to_have_url(re.compile("workflowType"))
    page.get_by_text("Model training", exact=True).click()
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    page.goto(f"{server}/#/experiments/{experiment_id(store)}")  # the experiment's own address, next time
    expect(page).to_have_url(re.compile(rf"/experiments/{experiment_id(store)}/runs\?"))
    expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name=PARENT)).to_be_visible()


def test_the_runs_table_shows_the_sweep_under_its_parent_run_with_datasets(page, server, store):
    open_runs(page, server, store)
    for split, context in (("train", "training"), ("val", "validation"), ("test", "test")):
        expect(page.get_by_role("button", name=re.compile(rf"^ag_news-{split} \("))).to_have_count(len(NAMES))
        expect(page.get_by_role("status").filter(has_text=re.compile(rf"^{context}$", re.I))).to_have_count(len(NAMES))  # fmt: skip
    screenshot(page, "mlflow-runs.png")


def test_group_by_the_group_id_shows_one_row_per_config_with_its_seeds(page, server, store):
    children = f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run(store).info.run_id}'"
    runs = client(store).search_runs([experiment_id(store)], children)
    groups: dict[str, list[str]] = {}
    for run in runs:
        groups.setdefault(run.data.tags[GROUP_TAG], []).append(run.info.run_name)
    assert len(groups) == len(POOLINGS) and all(len(names) == len(SEEDS) for names in groups.values())
    open_runs(page, server, store)
    page.get_by_role("button", name="Group by").click()
    page.get_by_role("textbox", name="Search").fill("group_id")
    page.get_by_role("menuitemcheckbox", name=GROUP_TAG, exact=True).click()
    page.keyboard.press("Escape")
    expect(page.get_by_role("button", name=f"Group by: {GROUP_TAG}")).to_be_visible()
    expect(page.get_by_text(re.compile(r"^Group: "))).to_have_count(len(POOLINGS))
    for group_id in groups:  # each group's row counts its seeds' runs
        cell = page.get_by_role("gridcell").filter(has=page.get_by_text(f"Group: {group_id}", exact=True))
        expect(cell.get_by_role("status")).to_have_text(str(len(SEEDS)))
    for name in NAMES:  # the groups come open
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
    # The parent run has no group id: it waits, folded, under "Additional runs".
    expect(page.get_by_role("gridcell").filter(has_text=re.compile(r"^Additional runs")).get_by_role("status")).to_have_text("1")  # fmt: skip
    screenshot(page, "mlflow-groups.png")


def test_the_parent_run_holds_the_sweep_summary(page, server, store):
    parent = parent_run(store)
    page.goto(f"{server}/#/experiments/{experiment_id(store)}/runs/{parent.info.run_id}")
    expect(page.get_by_role("heading", name=parent.info.run_name)).to_be_visible()
    for name in NAMES:  # "Child runs" in "About this run"
        expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
    page.get_by_role("tab", name="Artifacts").click()
    for name in ("accuracy.png", "results_table.json", "results.md", "results.csv", "runs.csv"):
        expect(page.get_by_text(name, exact=True)).to_be_visible()
    page.get_by_text("accuracy.png", exact=True).click()
    expect(page.get_by_role("img", name="accuracy.png")).to_be_visible()  # the group means and intervals


def test_the_chart_view_groups_metrics_into_sections(page, server, store):
    open_runs(page, server, store, mode="CHART")
    for name in ("test", "train", "val", "time"):
        expect(section(page, name)).to_be_visible()
    for name in ("test", "test/f1", "time", "train"):  # folded, so that the val charts come into view
        section(page, name).click()
    chart = page.get_by_role("heading", name="val/accuracy", exact=True)
    expect(chart).to_be_visible()
    card = page.get_by_test_id("experiment-view-compare-runs-card").filter(has=chart)
    expect(card.get_by_text("Step", exact=True)).to_be_visible()  # a line chart over epochs
    for name in NAMES:  # the legend: one line per sweep run
        expect(card.get_by_text(name)).to_be_visible()  # "mean-seed=0 (val/accuracy)"
    section(page, "val").evaluate("header => header.scrollIntoView({block: 'start'})")  # for the picture
    screenshot(page, "mlflow-charts.png")


def test_the_artifact_viewer_shows_a_lime_page(page, server, store, tiny_data):
    (run,) = client(store).search_runs([experiment_id(store)], f"attributes.run_name = '{LIME_RUN}'")
    (artifact,) = [a for a in client(store).list_artifacts(run.info.run_id, "lime") if a.path.endswith(".html")]
    index = int(re.fullmatch(r"lime/example_(\d+)\.html", artifact.path).group(1))
    with (tiny_data["ag_dir"] / "test.csv").open(encoding="utf-8") as handle:
        text = list(csv.DictReader(handle))[index]["text"]
    page.goto(f"{server}/#/experiments/{experiment_id(store)}/runs/{run.info.run_id}/artifacts/{artifact.path}")
    expect(page.get_by_text(artifact.path, exact=True)).to_be_visible()
    expect(page.frame_locator("iframe").get_by_text(text).first).to_be_visible()

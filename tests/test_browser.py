"""The MLflow UI, in headless Chromium, shows what glove-exp logs: a sweep's runs under the report's
parent run, their datasets, metric charts grouped into sections, and the LIME pages.

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

from glove_exp.app import pipeline
from glove_exp.app.tracking import JobInfo
from glove_exp.report import cli as report
from tests.conftest import mlflow_server, store_uri, tiny_config

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (Debian: apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install -e '.[dev]')")
expect = sync_api.expect

pytestmark = [pytest.mark.slow, pytest.mark.browser]

# Without the networking flags Chromium keeps calling Google's hosts, which a closed network refuses.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
SWEEP = "multirun/x/y"
POOLINGS = ("flatten", "mean", "sum")
NAMES = [f"seed_tutorial-{pooling}" for pooling in POOLINGS]
REPORT_RUN = f"report-{SWEEP}"
WAIT_MS = 30_000  # the UI's first load compiles nothing, but a busy 2-core machine is slow
SCREENSHOTS = os.environ.get("GLOVE_EXP_SCREENSHOTS")


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_data) -> Path:
    """A 3-run sweep over ``model.pooling`` named as ``glove-exp -m +experiment=seed_tutorial``
    names it, and the report run (``--log``) that becomes its parent."""
    root = tmp_path_factory.mktemp("ui-store")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)
        env.setenv("GLOVE_EXP_CACHE_DIR", str(root / "glove-cache"))
        env.setenv("MPLBACKEND", "Agg")
        try:
            for num, pooling in enumerate(POOLINGS):
                config = tiny_config(
                    tiny_data, root, f"model.pooling={pooling}", "trainer.epochs=2", "explain.num_examples=1",
                    "explain.num_samples=50", "tracking.log_model=false",
                )  # fmt: skip
                overrides = (f"model.pooling={pooling}",)
                job = JobInfo(num=num, sweep_id=SWEEP, overrides=overrides, preset="seed_tutorial", varying=("model.pooling",))  # fmt: skip
                pipeline.run(config, job)
            report.main(["--tracking-uri", store_uri(root), "--sweep", SWEEP, "--log", "--out", str(root / "reports")])
        finally:
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


def experiment_id(store: Path) -> str:
    return mlflow.MlflowClient(store_uri(store)).get_experiment_by_name("glove-exp").experiment_id


def open_runs(page, server: str, store: Path, mode: str = "TABLE") -> None:
    """The experiment's runs in the model-training view (a new MLflow UI opens on its GenAI view),
    the assistant panel closed and the report run expanded to show the sweep's runs."""
    url = f"{server}/#/experiments/{experiment_id(store)}/runs?workflowType=machine_learning&compareRunsMode={mode}"
    page.goto(url)
    expect(page.get_by_role("link", name=REPORT_RUN, exact=True)).to_be_visible()
    page.get_by_role("button", name="Close").click()  # the MLflow Assistant panel, open in a new profile
    page.get_by_role("gridcell", name=REPORT_RUN).get_by_role("button").click()
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


def test_the_runs_table_shows_the_sweep_under_its_report_run_with_datasets(page, server, store):
    open_runs(page, server, store)
    for split, context in (("train", "training"), ("val", "validation"), ("test", "test")):
        expect(page.get_by_role("button", name=re.compile(rf"^ag_news-{split} \("))).to_have_count(len(NAMES))
        expect(page.get_by_role("status").filter(has_text=re.compile(rf"^{context}$", re.I))).to_have_count(len(NAMES))  # fmt: skip
    screenshot(page, "mlflow-runs.png")


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
        expect(card.get_by_text(name)).to_be_visible()  # "seed_tutorial-mean (val/accuracy)"
    screenshot(page, "mlflow-charts.png")


def test_the_artifact_viewer_shows_a_lime_page(page, server, store, tiny_data):
    client = mlflow.MlflowClient(store_uri(store))
    (run,) = client.search_runs([experiment_id(store)], f"attributes.run_name = '{NAMES[1]}'")
    (artifact,) = [a for a in client.list_artifacts(run.info.run_id, "lime") if a.path.endswith(".html")]
    index = int(re.fullmatch(r"lime/example_(\d+)\.html", artifact.path).group(1))
    with (tiny_data["ag_dir"] / "test.csv").open(encoding="utf-8") as handle:
        text = list(csv.DictReader(handle))[index]["text"]
    page.goto(f"{server}/#/experiments/{experiment_id(store)}/runs/{run.info.run_id}/artifacts/{artifact.path}")
    expect(page.get_by_text(artifact.path, exact=True)).to_be_visible()
    expect(page.frame_locator("iframe").get_by_text(text).first).to_be_visible()

"""``pipeline.run`` in process on the tiny synthetic corpus, checked through the MLflow store it
writes: params, tags, metrics, artifacts, the logged model, and no run for a user error."""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import json
import math
import os
import re
import warnings
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
import numpy as np
import pytest

from glove_exp.app import pipeline
from glove_exp.app.tracking import JobInfo, run_name
from glove_exp.core.arrays import table_rows
from glove_exp.core.errors import DataError, EmbeddingsError, TrainingError
from tests.conftest import CLASSES, experiment_runs, metric_steps, recorded_batches, store_uri, tiny_config

NUM_TEST = 120
NUM_TRAIN = 360  # 400 rows less the 10% validation split
EPOCH_METRICS = ("train/loss", "train/accuracy", "val/loss", "val/accuracy", "time/epoch_s")


@pytest.fixture(autouse=True)
def _store_tables_made(store_in_tmp_path):
    """Each test's ``tmp_path/mlflow.db`` starts with MLflow's tables already made."""


def artifact_dir(run) -> Path:
    """The run's artifact folder (a local ``file://`` URI beside the SQLite store)."""
    uri = urlparse(run.info.artifact_uri)
    assert uri.scheme == "file", run.info.artifact_uri
    return Path(unquote(uri.path))


def read_test_csv(tiny_data) -> list[tuple[str, int]]:
    with (tiny_data["ag_dir"] / "test.csv").open(encoding="utf-8", newline="") as handle:
        return [(row["text"], int(row["label"])) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_data):
    """One tiny run, its result and its MLflow run."""
    store = tmp_path_factory.mktemp("single")
    result = pipeline.run(tiny_config(tiny_data, store))
    [run] = experiment_runs(store)
    return store, result, run


def test_run_returns_its_run_and_accuracies(single):
    _, result, run = single
    assert result.run_id == run.info.run_id
    assert result.name == "mean"  # no preset, no sweep: the pooling
    assert result.val_accuracy == run.data.metrics["val/selected_accuracy"]
    assert result.test_accuracy == run.data.metrics["test/accuracy"]
    assert re.fullmatch(
        r"mean: val \d+\.\d\d% test \d+\.\d\d%( \(best so far\))? \| data .* \| total \d+\.\ds", result.summary
    )


def test_run_is_finished_with_its_artifacts_beside_the_store(single):
    store, _, run = single
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "mean"
    assert artifact_dir(run).is_relative_to(store / "mlartifacts")


def test_params_hold_the_config_and_the_data_sizes(single, tiny_data):
    _, _, run = single
    params = run.data.params
    assert params["model.pooling"] == "mean"
    assert params["optimizer.lr"] == "0.001"
    assert params["trainer.max_tokens"] == "50"
    assert params["trainer.epochs"] == "3"
    assert params["dataset.data_dir"] == str(tiny_data["ag_dir"])
    assert params["embeddings.dim"] == "8"
    assert not [key for key in params if key.startswith("data.")]  # they vary with the seed's split


def test_data_stats_are_metrics_and_a_json_file(single):
    _, _, run = single
    metrics = run.data.metrics
    assert metrics["data/num_test"] == NUM_TEST
    assert metrics["data/feature_dim"] == 8
    assert 0.0 <= metrics["data/oov_rate"] < 1.0
    assert metrics["data/vocab_size"] > 2
    stats = json.loads((artifact_dir(run) / "data_stats.json").read_text())
    assert stats["num_train"] == NUM_TRAIN and stats["num_val"] == 40
    assert sum(stats["class_counts"]["test"].values()) == NUM_TEST
    assert metrics["data/class_counts/test/Sci_Tech"] == stats["class_counts"]["test"]["Sci_Tech"]


def test_the_commit_and_the_package_versions_are_asked_once_per_process(monkeypatch):
    import subprocess

    from glove_exp.app import tracking

    tracking.git_commit.cache_clear()
    tracking.installed_versions.cache_clear()
    asked, real_run, real_version = [], subprocess.run, importlib.metadata.version
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: asked.append("git") or real_run(*a, **k))
    monkeypatch.setattr(importlib.metadata, "version", lambda name: asked.append(name) or real_version(name))
    for _ in range(3):
        commit, versions = tracking.git_commit(), tracking.package_versions()
    assert asked.count("git") == int((tracking.PROJECT_ROOT / ".git").exists()) and commit
    assert versions["version.jax"] == real_version("jax") and asked.count("jax") == 1
    assert tracking.package_versions(prefix="") == {k.removeprefix("version."): v for k, v in versions.items()}


def test_a_run_writes_its_params_and_data_stats_at_once_each_epoch_once_and_its_outcome_at_once(
    tiny_data, tmp_path, monkeypatch
):
    """Each ``log_batch`` is a transaction of the store: a 3-epoch run makes 5 (MLflow's limit allowing)."""
    writes = []
    real = mlflow.MlflowClient.log_batch
    monkeypatch.setattr(
        mlflow.MlflowClient, "log_batch", lambda self, run_id, **kw: writes.append(kw) or real(self, run_id, **kw)
    )
    pipeline.run(tiny_config(tiny_data, tmp_path))
    keys = [({m.key for m in w.get("metrics", [])}, {p.key for p in w.get("params", [])}) for w in writes]
    assert len(keys) == 5
    metrics, params = keys[0]
    assert "trainer.seed" in params and "data/num_test" in metrics
    assert all(step_metrics == set(EPOCH_METRICS) and not p for step_metrics, p in keys[1:4])
    assert {"test/accuracy", "train/selected_epoch", "time/total_s", "time/log_s"} <= keys[4][0]


def test_a_write_beyond_mlflows_batch_limits_is_split(tmp_path, monkeypatch):
    """2,100 metrics, 250 params and a tag: three batches of at most 100 params and 1,000 values each."""
    from mlflow.entities import Metric, Param, RunTag

    from glove_exp.app.interrupts import Interrupts
    from glove_exp.app.store import Store
    from glove_exp.app.tracking import tracked_run

    store = Store.open(store_uri(tmp_path), "limits")
    metrics = [Metric(f"m{i}", float(i), 0, 0) for i in range(2100)]
    params = [Param(f"p{i}", str(i)) for i in range(250)]
    batches = []
    real = mlflow.MlflowClient.log_batch
    monkeypatch.setattr(
        mlflow.MlflowClient, "log_batch", lambda self, run_id, **kw: batches.append(kw) or real(self, run_id, **kw)
    )
    with tracked_run(store, "many", {}, Interrupts()) as run:
        run.write(metrics, params, [RunTag("extra", "1")])
    assert [(len(b["metrics"]), len(b["params"]), len(b["tags"])) for b in batches] == [
        (899, 100, 1), (900, 100, 0), (301, 50, 0),
    ]  # fmt: skip
    logged = store.client.get_run(run.run_id).data
    assert len(logged.metrics) == len(metrics) and logged.metrics["m2099"] == 2099.0
    assert len(logged.params) == 250 and logged.tags["extra"] == "1"


def test_tags_name_the_sources(single, tiny_data):
    _, _, run = single
    tags = run.data.tags
    assert (tags["dataset"], tags["embeddings"], tags["pooling"]) == ("ag_news", "local", "mean")
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", tags["git_commit"])
    assert tags["glove_source"] == str(tiny_data["glove_file"])
    assert tags["version.jax"] == importlib.metadata.version("jax")
    train_csv = tiny_data["ag_dir"] / "train.csv"
    assert tags["data_sha256.train"] == hashlib.sha256(train_csv.read_bytes()).hexdigest()
    assert tags["data_file.train"] == str(train_csv)
    assert "sweep_id" not in tags and "hydra_job_num" not in tags


def test_epoch_metrics_have_one_step_per_epoch(single):
    store, _, run = single
    for key in EPOCH_METRICS:
        assert [step for step, _ in metric_steps(store, run.info.run_id, key)] == [1, 2, 3], key
    metrics = run.data.metrics
    val_accuracy = [value for _, value in metric_steps(store, run.info.run_id, "val/accuracy")]
    assert metrics["train/best_epoch"] == 1 + val_accuracy.index(max(val_accuracy))
    assert metrics["train/selected_epoch"] == metrics["train/epochs_run"] == 3  # no early stopping: the last epoch
    assert metrics["val/selected_accuracy"] == val_accuracy[-1]


def test_final_metrics_and_safe_class_names(single):
    _, _, run = single
    metrics = run.data.metrics
    assert 0.25 < metrics["test/accuracy"] <= 1.0
    names = ["World", "Sports", "Business", "Sci_Tech"]  # "/" would open a chart section
    assert {k for k in metrics if k.startswith("test/f1/")} == {f"test/f1/{name}" for name in names}
    per_class = [metrics[f"test/f1/{name}"] for name in names]
    assert metrics["test/macro_f1"] == pytest.approx(sum(per_class) / len(per_class), abs=1e-12)
    assert {"time/train_s", "time/total_s", "time/data_s", "time/compile_s"} <= set(metrics)
    assert not {k for k in metrics if k.startswith(("num_", "vocab", "empty_", "oov"))}  # sizes are params


def test_artifacts(single):
    _, _, run = single
    folder = artifact_dir(run)
    assert sorted(p.name for p in folder.iterdir()) == [
        "classification_report.json",
        "classification_report.txt",
        "config.yaml",
        "confusion_matrix.csv",
        "confusion_matrix.png",
        "data_stats.json",
        "lime",
    ]
    from omegaconf import OmegaConf

    config = OmegaConf.load(folder / "config.yaml")
    assert config.model.pooling == "mean" and config.trainer.epochs == 3 and config.embeddings.dim == 8
    assert (folder / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((folder / "classification_report.json").read_text(encoding="utf-8"))
    assert report["accuracy"] == pytest.approx(run.data.metrics["test/accuracy"], abs=1e-12)
    assert all(name in (folder / "classification_report.txt").read_text(encoding="utf-8") for name in CLASSES)


def read_confusion(path: Path) -> list[list[int]]:
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][1:] == CLASSES and [row[0] for row in rows[1:]] == CLASSES
    return [[int(count) for count in row[1:]] for row in rows[1:]]


def test_confusion_matrix_counts_the_test_split(single):
    _, _, run = single
    counts = read_confusion(artifact_dir(run) / "confusion_matrix.csv")
    assert sum(map(sum, counts)) == NUM_TEST
    accuracy = sum(counts[i][i] for i in range(len(CLASSES))) / NUM_TEST
    assert accuracy == pytest.approx(run.data.metrics["test/accuracy"], abs=1e-12)
    assert [sum(row) for row in counts] == [NUM_TEST // len(CLASSES)] * len(CLASSES)  # balanced test split


@pytest.mark.parametrize(("classes", "annotated"), [(4, True), (20, True), (21, False), (200, False)])
def test_the_confusion_figure_writes_cell_values_for_few_classes_only(classes, annotated):
    """Many classes' values would be unreadable and slow to draw: a heatmap, a class name every few rows."""
    from glove_exp.app.figures import TICK_LABELS, confusion_figure
    from glove_exp.core.evaluate import evaluate

    labels = np.arange(3 * classes) % classes
    names = [f"c{i}" for i in range(classes)]
    evaluation = evaluate(labels, np.roll(labels, 1), names)
    [axes, *bar] = confusion_figure(evaluation, names).axes
    assert len(bar) == (0 if annotated else 1)  # a colour bar where no values are written
    [image] = axes.images
    np.testing.assert_array_equal(image.get_array(), evaluation.confusion_normalised)
    assert len(axes.texts) == (classes * classes if annotated else 0)
    shown = [label.get_text() for label in axes.get_xticklabels()]
    assert shown == [label.get_text() for label in axes.get_yticklabels()]
    step = 1 if annotated else math.ceil(classes / TICK_LABELS)
    assert shown == names[::step] and len(shown) <= max(classes if annotated else 0, TICK_LABELS)


def test_the_confusion_figure_is_drawn_as_scikit_learns_display_on_a_fixed_scale():
    """Cells coloured on [0, 1] whatever the values' range, each value written in the colour scale's far
    end from its cell's colour, the axes named as scikit-learn's ``ConfusionMatrixDisplay`` names them."""
    from glove_exp.app.figures import confusion_figure
    from glove_exp.core.evaluate import evaluate

    names = ["a", "b", "c"]
    evaluation = evaluate(np.array([0, 0, 0, 0, 1, 1, 2, 2]), np.array([0, 0, 0, 1, 1, 2, 2, 0]), names)
    [axes] = confusion_figure(evaluation, names).axes
    [image] = axes.images
    assert image.get_clim() == (0.0, 1.0)
    dark, light = image.cmap(1.0), image.cmap(0.0)
    values = evaluation.confusion_normalised.ravel()  # 0.75 0.25 0, 0 0.5 0.5, 0.5 0 0.5
    assert [text.get_text() for text in axes.texts] == [f"{value:.2f}" for value in values]
    assert [text.get_color() for text in axes.texts] == [light if value >= 0.5 else dark for value in values]
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("Predicted label", "True label")
    assert axes.get_ylim() == (2.5, -0.5)  # the first class on top


@pytest.mark.parametrize(
    "names", [["World", "Sports", "Business", "Sci/Tech"], ["EducationalInstitution", "Ég_|([{", "c"]]
)
def test_a_confusion_figure_is_laid_out_once_per_class_names_as_constrained_layout_would(names):
    """The second figure of the same class names reuses the first's layout; the axes sit within a few pixels
    of where constrained layout puts them, and every text (title, names, values) that constrained layout
    keeps inside the figure is inside it."""
    from matplotlib.figure import Figure
    from matplotlib.text import Text

    from glove_exp.app.figures import annotated_layout, confusion_figure, plot_confusion
    from glove_exp.core.evaluate import evaluate

    labels = np.arange(4 * len(names)) % len(names)
    evaluation = evaluate(labels, np.roll(labels, 1), names)
    annotated_layout.cache_clear()
    title = "seed_tutorial-flatten-seed=0: test accuracy 85.6%"
    figure = confusion_figure(evaluation, names, title)
    confusion_figure(evaluation, names, "Égypte (p_q): test accuracy 80.0%")
    assert (annotated_layout.cache_info().misses, annotated_layout.cache_info().hits) == (1, 1)

    reference = Figure(figsize=figure.get_size_inches(), layout="constrained")
    axes = reference.add_subplot()
    plot_confusion(axes, evaluation.confusion_normalised, names)
    axes.set_title(title)
    reference.draw_without_rendering()
    figure.draw_without_rendering()
    pixels = np.tile(figure.get_size_inches() * figure.dpi, 2)
    offset = (np.array(figure.axes[0].get_position().bounds) - np.array(axes.get_position().bounds)) * pixels
    assert np.abs(offset).max() <= 5
    width, height = pixels[:2]

    def inside(box) -> bool:
        return 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height

    def texts(fig):
        return [text for text in fig.findobj(Text) if text.get_visible() and text.get_text()]

    assert len(texts(figure)) >= len(names) ** 2 + 2 * len(names) + 1  # the values, both axes' names, the title
    for text, same in zip(texts(figure), texts(reference), strict=True):
        assert text.get_text() == same.get_text()
        # constrained layout centres the title on the axes: past long class names it runs off the right side
        assert inside(text.get_window_extent()) or not inside(same.get_window_extent()), text.get_text()


def lime_pages(run) -> dict[int, str]:
    pages = sorted((artifact_dir(run) / "lime").glob("*.html"))
    return {int(re.fullmatch(r"example_(\d+)\.html", p.name)[1]): p.read_text(encoding="utf-8") for p in pages}


def lime_data(run, index: int) -> dict:
    return json.loads((artifact_dir(run) / "lime" / f"example_{index}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize(("num_classes", "absent"), [(2, 0), (4, 0), (14, 0), (5, 1)])
def test_the_accuracy_and_macro_f1_are_scikit_learns_to_the_bit(num_classes, absent):
    """From the classification report; ``absent``: classes that neither the labels nor the predictions hold."""
    from sklearn.metrics import accuracy_score, f1_score

    from glove_exp.core.evaluate import evaluate

    rng = np.random.default_rng(num_classes)
    present = num_classes - absent
    labels = rng.integers(0, present, 997)
    predictions = np.where(rng.random(997) < 0.7, labels, rng.integers(0, max(present - 1, 1), 997))
    evaluation = evaluate(labels, predictions, [f"c{i}" for i in range(num_classes)])
    assert evaluation.accuracy == accuracy_score(labels, predictions)
    ids = list(range(num_classes))
    assert evaluation.macro_f1 == f1_score(labels, predictions, labels=ids, average="macro", zero_division=0)


def test_lime_pages_name_true_and_predicted_class(single, tiny_data):
    _, _, run = single
    pages = lime_pages(run)
    assert len(pages) == 3
    assert len(list((artifact_dir(run) / "lime").iterdir())) == 6  # a page and its data per example
    rows = read_test_csv(tiny_data)
    for index, page in pages.items():
        text, label = rows[index]
        data = lime_data(run, index)
        assert (data["index"], data["text"], data["true_class"]) == (index, text, CLASSES[label])
        assert data["predicted_class"] in CLASSES and list(data["probabilities"]) == CLASSES
        assert set(data["weights"]) == {data["predicted_class"], data["runner_up"]}
        assert f"True class: <b>{CLASSES[label]}</b>" in page
        assert f"Predicted class: <b>{data['predicted_class']}</b>" in page


def test_logged_model_predicts_what_the_run_evaluated(single, tiny_data):
    """The pyfunc reloaded from the store reproduces the logged confusion matrix exactly, from a
    list, a Series and a DataFrame."""
    import pandas as pd

    store, _, run = single
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    rows = read_test_csv(tiny_data)
    texts = pd.Series([text for text, _ in rows])
    frames = [model.predict(data) for data in (pd.DataFrame({"text": texts}), texts, texts.tolist())]
    for frame in frames:
        assert list(frame.columns) == CLASSES
        assert frame.sum(axis=1).to_numpy() == pytest.approx([1.0] * NUM_TEST, abs=1e-5)
    predicted = [frame.to_numpy().argmax(axis=1).tolist() for frame in frames]
    assert predicted[0] == predicted[1] == predicted[2]
    counts = [[0] * len(CLASSES) for _ in CLASSES]
    for (_, label), guess in zip(rows, predicted[0]):
        counts[label][guess] += 1
    assert counts == read_confusion(artifact_dir(run) / "confusion_matrix.csv")
    for index, page in lime_pages(run).items():
        assert f"Predicted class: <b>{CLASSES[predicted[0][index]]}</b>" in page
        assert lime_data(run, index)["predicted_class"] == CLASSES[predicted[0][index]]


@pytest.mark.parametrize("norm", ["none", "batch", "layer"])
def test_the_logged_model_of_each_norm_scores_the_test_split_as_the_run_did(norm, tiny_data, tmp_path, loading_store):
    """Batch norm's running statistics travel with the logged model: reloaded from the store, it
    reproduces the run's own test predictions (its confusion matrix) exactly."""
    pipeline.run(tiny_config(tiny_data, tmp_path, f"model.norm={norm}", "explain.num_examples=0", "trainer.epochs=2"))
    [run] = experiment_runs(tmp_path)
    assert run.data.params["model.norm"] == norm
    loading_store(store_uri(tmp_path))
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    rows = read_test_csv(tiny_data)
    predicted = model.predict([text for text, _ in rows]).to_numpy().argmax(axis=1)
    counts = [[0] * len(CLASSES) for _ in CLASSES]
    for (_, label), guess in zip(rows, predicted):
        counts[label][guess] += 1
    assert counts == read_confusion(artifact_dir(run) / "confusion_matrix.csv")
    accuracy = np.mean([guess == label for (_, label), guess in zip(rows, predicted)])
    assert accuracy == pytest.approx(run.data.metrics["test/accuracy"], abs=1e-12)


def test_on_a_cpu_validation_test_and_explanation_batches_keep_the_looked_up_vectors_in_cache(
    tiny_data, tmp_path, monkeypatch
):
    """A model reading 16,384 tokens of 8-d vectors (512 KiB a document) scores 16 documents a batch
    (8 MiB), not ``eval_batch_size``: the validation split's 40, the test split's 120, LIME's 50."""
    import jax

    if jax.default_backend() != "cpu":
        pytest.skip("an accelerator takes eval_batch_size rows")
    rows = recorded_batches(monkeypatch)
    overrides = ("trainer.precompute_features=false", "trainer.max_tokens=16384", "trainer.epochs=1")
    pipeline.run(tiny_config(tiny_data, tmp_path, *overrides))
    assert len(rows) > 10 and set(rows) == {16}


def test_logged_model_stores_its_table_as_float16(single):
    store, _, run = single
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    folder = Path(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model")) / "artifacts" / "predictor"
    vocab_size = int(run.data.metrics["data/vocab_size"])
    table = np.load(folder / "table.npy")
    assert table.dtype == np.float16
    assert table.shape == (table_rows(vocab_size), 8)  # as it trained: rows beyond the vocabulary
    assert table[2:vocab_size].any(axis=1).all() and not table[vocab_size:].any()
    words = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
    assert len(words) + 2 == int(run.data.metrics["data/vocab_size"])


def test_a_model_saved_before_the_layers_loads_as_before(single, tmp_path, loading_store):
    """Models logged before glove_exp/app existed import ``glove_exp.serving.GloveClassifier`` and
    store ``build_model``'s keyword arguments (no ``sif_a``) in model.json: both still load."""
    from glove_exp.app.serving import Predictor
    from glove_exp.serving import GloveClassifier

    store, _, run = single
    loading_store(f"sqlite:///{store}/mlflow.db")
    folder = Path(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model", dst_path=str(tmp_path)))
    meta_file = folder / "artifacts" / "predictor" / "model.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    del meta["model"]["sif_a"]
    meta_file.write_text(json.dumps(meta), encoding="utf-8")
    assert GloveClassifier.__module__ == "glove_exp.app.serving"
    model = mlflow.pyfunc.load_model(str(folder))
    expected = Predictor.load(folder / "artifacts" / "predictor").predict_proba(["stocks oil market", "team goal"])
    np.testing.assert_allclose(model.predict(["stocks oil market", "team goal"]).to_numpy(), expected, rtol=1e-6)


@pytest.mark.slow
def test_same_config_and_seed_reproduce_the_same_numbers(single, tiny_data, tmp_path):
    first_store, _, first = single
    pipeline.run(tiny_config(tiny_data, tmp_path, "explain.num_examples=0", "tracking.log_model=false"))
    [second] = experiment_runs(tmp_path)
    for key in ("test/accuracy", "val/selected_accuracy", "test/macro_f1", "train/best_epoch"):
        assert second.data.metrics[key] == first.data.metrics[key], key
    for key in ("val/loss", "train/loss", "val/accuracy"):
        assert metric_steps(tmp_path, second.info.run_id, key) == metric_steps(first_store, first.info.run_id, key), key


# --- no validation split: the tutorial's data use ---------------------------------------------


def test_val_fraction_0_trains_on_all_rows_and_logs_no_val_metrics(tiny_data, tmp_path):
    result = pipeline.run(
        tiny_config(tiny_data, tmp_path, "dataset.val_fraction=0", "explain.num_examples=0", "tracking.log_model=false")
    )
    [run] = experiment_runs(tmp_path)
    assert result.val_accuracy is None and "val –" in result.summary
    assert run.data.metrics["data/num_train"] == 400
    assert not [key for key in run.data.metrics if key.startswith("val/")]
    assert run.data.metrics["train/selected_epoch"] == run.data.metrics["train/epochs_run"] == 3
    assert "train/best_epoch" not in run.data.metrics


# --- user errors: one exception, no run left behind --------------------------------------------


def test_a_diverging_run_names_the_epoch_warns_nothing_and_ends_failed(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path, "optimizer.lr=1e30", "trainer.epochs=20")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no floating-point warning may reach the user, whatever the CPU
        with pytest.raises(
            TrainingError, match=r"training diverged: (train|val) loss is nan in epoch (\d+); lower optimizer\.lr"
        ) as err:
            pipeline.run(config)
    epoch = int(re.search(r"epoch (\d+)", str(err.value))[1])
    [run] = experiment_runs(tmp_path)
    assert run.info.status == "FAILED" and run.info.end_time is not None
    assert [step for step, _ in metric_steps(tmp_path, run.info.run_id, "train/loss")] == list(range(1, epoch))
    assert "test/accuracy" not in run.data.metrics


@pytest.mark.parametrize(
    "split, says",
    [("dataset.val_fraction=0.1", "val loss is nan in epoch 1"),
     ("dataset.val_fraction=0", "the test predictions hold NaN or inf after epoch 1")],
)  # fmt: skip
def test_a_step_that_diverges_after_the_last_train_loss_ends_failed(split, says, tiny_data, tmp_path):
    """One batch per epoch: the epoch's train loss is the parameters' before the step that diverged."""
    config = tiny_config(tiny_data, tmp_path, "optimizer.lr=1e30", "trainer.epochs=1", split)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(TrainingError, match=rf"training diverged: {says}; lower optimizer\.lr"):
            pipeline.run(config)
    [run] = experiment_runs(tmp_path)
    assert run.info.status == "FAILED" and "test/accuracy" not in run.data.metrics


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("dataset.data_dir={tmp}/missing", DataError),
        ("embeddings.path={tmp}/missing.txt", EmbeddingsError),
        ("embeddings.dim=9", EmbeddingsError),
    ],
)
def test_an_input_error_leaves_no_run(case, error, tiny_data, tmp_path):
    with pytest.raises(error):
        pipeline.run(tiny_config(tiny_data, tmp_path, case.format(tmp=tmp_path)))
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_an_unreachable_hub_fails_at_once_naming_the_fixes(tiny_data, tmp_path, unreachable_hub):
    config = tiny_config(tiny_data, tmp_path, "dataset.data_dir=null")
    with pytest.raises(
        DataError,
        match=r"cannot reach the Hugging Face hub at http://127\.0\.0\.1:\d+ to load fancyzhx/ag_news .*dataset\.data_dir.*HF_HUB_OFFLINE=1",
    ):
        pipeline.run(config)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


def test_each_split_is_an_mlflow_dataset_input_with_its_source(single, tiny_data):
    _, _, run = single
    inputs = {
        tag.value: d.dataset for d in run.inputs.dataset_inputs for tag in d.tags if tag.key == "mlflow.data.context"
    }
    assert sorted(inputs) == ["test", "training", "validation"]
    assert inputs["training"].name == "ag_news-train" and inputs["test"].name == "ag_news-test"
    assert json.loads(inputs["training"].source)["uri"] == (tiny_data["ag_dir"] / "train.csv").as_uri()
    assert json.loads(inputs["validation"].source)["uri"] == (tiny_data["ag_dir"] / "train.csv").as_uri()
    assert json.loads(inputs["test"].source)["uri"] == (tiny_data["ag_dir"] / "test.csv").as_uri()
    assert json.loads(inputs["test"].profile)["num_rows"] == NUM_TEST
    assert len({d.digest for d in inputs.values()}) == 3
    columns = [{"type": "string", "name": name, "required": True} for name in ("text", "label")]
    assert all(json.loads(d.schema) == {"mlflow_colspec": columns} for d in inputs.values())


@pytest.mark.parametrize("refusals", [1, 3, 4])
def test_datasets_logged_at_the_same_moment_by_parallel_jobs_are_linked_on_later_tries(
    tmp_path, tiny_data, monkeypatch, refusals
):
    """MLflow's SQL store looks the datasets up, then inserts the missing ones: on PostgreSQL a job
    racing others gets a unique-key error once per dataset another job commits first
    (tests/test_postgres.py met two in a row). Up to one refusal per split, the run still gets all
    three inputs; a fourth refusal is not a race and fails the run."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST

    log_inputs, tries = mlflow.MlflowClient.log_inputs, []

    def racing_log_inputs(client, run_id, datasets=None, **kwargs):
        tries.append(len(datasets))
        if len(tries) <= refusals:
            raise MlflowException('duplicate key value violates unique constraint "dataset_pk"', BAD_REQUEST)
        return log_inputs(client, run_id, datasets, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "log_inputs", racing_log_inputs)
    config = tiny_config(tiny_data, tmp_path, "explain.num_examples=0", "tracking.log_model=false")
    if refusals > 3:
        with pytest.raises(MlflowException, match="duplicate key"):
            pipeline.run(config)
    else:
        pipeline.run(config)
    [run] = experiment_runs(tmp_path)
    assert tries == [3] * min(refusals + 1, 4)
    assert run.info.status == ("FAILED" if refusals > 3 else "FINISHED")
    assert len(run.inputs.dataset_inputs) == (0 if refusals > 3 else 3)


@pytest.mark.parametrize(
    ("job", "expected"),
    [
        (JobInfo(), "mean"),
        (JobInfo(preset="swem"), "swem"),
        (
            JobInfo(num=4, overrides=("model.pooling=flatten", "trainer.seed=1", "a.b=c"), preset="seed_tutorial",
                             varying=("model.pooling", "trainer.seed")),
            "seed_tutorial-flatten-seed=1",
        ),
        (JobInfo(num=1, overrides=("model.pooling=mean", "trainer.max_tokens=100"), varying=("model.pooling", "trainer.max_tokens")), "mean-max_tokens=100"),
        (JobInfo(num=7, overrides=("model.pooling=mean",), trial=3), "mean-trial3"),
        (JobInfo(num=7, overrides=("trainer.seed=1", "hparams_search.seeds=2"), trial=3), "mean-trial3-seed1"),
        (JobInfo(num=1, overrides=("model.pooling=max",), varying=("model.pooling",)), "max"),  # the name is the pooling
        (JobInfo(num=2, overrides=("trainer.epochs=3",)), "mean-2"),
    ],
)  # fmt: skip
def test_run_names_say_what_differs(job, expected, tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path, *(o for o in job.overrides if not o.startswith("a.")))
    assert run_name(config, job) == expected


@pytest.mark.parametrize(
    ("job", "seedless"),
    [
        (JobInfo(num=4, overrides=("model.pooling=flatten", "trainer.seed=12"), varying=("model.pooling", "trainer.seed")), "flatten"),
        (JobInfo(num=1, overrides=("trainer.seed=3", "trainer.max_tokens=100"), varying=("trainer.seed", "trainer.max_tokens")), "mean-max_tokens=100"),
        (JobInfo(num=7, overrides=("trainer.seed=1", "hparams_search.seeds=2"), trial=3), "mean-trial3"),
    ],
)  # fmt: skip
def test_the_report_reads_the_seed_out_of_run_names_as_they_are_written(job, seedless, tiny_data, tmp_path):
    """A lone group is labelled by its runs' names without their seeds (report.statistics.SEED_IN_NAME)."""
    from glove_exp.report.statistics import SEED_IN_NAME

    config = tiny_config(tiny_data, tmp_path, *job.overrides)
    assert SEED_IN_NAME.sub("", run_name(config, job)) == seedless


def test_runs_left_running_by_a_dead_process_end_killed(tmp_path):
    import socket
    import subprocess

    from glove_exp.app.store import Store

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = Store.open(uri, "glove-exp").experiment_id
    dead = subprocess.Popen(["true"])
    dead.wait()
    client = mlflow.MlflowClient(uri)
    tags = {"host": socket.gethostname()}
    orphan = client.create_run(experiment_id, tags={**tags, "pid": str(dead.pid)}).info.run_id
    alive = client.create_run(experiment_id, tags={**tags, "pid": str(os.getpid())}).info.run_id
    Store.open(uri, "glove-exp")
    assert client.get_run(orphan).info.status == "KILLED"
    assert client.get_run(alive).info.status == "RUNNING"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.max_tokens=100000000", "trainer.max_tokens"),
        ("model.hidden_sizes=[1000000000]", "model.hidden_sizes"),
        ("explain.num_samples=1000000000", "explain.num_samples"),
    ],
)
def test_a_run_that_cannot_fit_in_memory_is_refused_before_any_array(override, key, tiny_data, tmp_path):
    from glove_exp.core.errors import ConfigError

    with pytest.raises(
        ConfigError,
        match=rf"needs about [\d.]+ GiB, mostly for {re.escape(key)} .* GiB are available: lower {re.escape(key)}$",
    ):
        pipeline.run(tiny_config(tiny_data, tmp_path, override))
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


@pytest.mark.slow
def test_a_batch_larger_than_the_data_is_the_whole_split(tiny_data, tmp_path):
    config = tiny_config(
        tiny_data, tmp_path, "trainer.batch_size=1000000000", "explain.num_examples=0", "tracking.log_model=false"
    )
    result = pipeline.run(config)
    assert 0.0 <= result.test_accuracy <= 1.0


@pytest.mark.slow
def test_class_names_that_break_metric_names_or_plots_are_made_safe(tiny_data, tmp_path):
    config = tiny_config(tiny_data, tmp_path, "explain.num_examples=1", "tracking.log_model=false")
    config.dataset.class_names = ["a//b", "$x^2$", "a__b", "</b><script>"]
    pipeline.run(config)
    [run] = experiment_runs(tmp_path)
    assert run.info.status == "FINISHED"
    f1 = sorted(k.removeprefix("test/f1/") for k in run.data.metrics if k.startswith("test/f1/"))
    assert len(f1) == 4 and all("/" not in name and "$" not in name for name in f1)
    assert (artifact_dir(run) / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"


def test_a_dataset_input_larger_than_its_schema_sample_keeps_every_row_in_its_digest_and_profile(monkeypatch):
    from glove_exp.app import tracking
    from glove_exp.app.schema import DatasetConfig
    from glove_exp.io.datasets import Split, Splits

    monkeypatch.setattr(tracking, "SCHEMA_ROWS", 3)
    texts = [f"text {i}" for i in range(10)]
    labels = np.arange(10, dtype=np.int32) % 4
    splits = Splits(Split(texts, labels), None, Split(texts[:3], labels[:3]), {})
    dataset = DatasetConfig(name="ag_news", hub_id="fancyzhx/ag_news", class_names=["a", "b", "c", "d"])
    [train, test] = [entry.dataset for entry in tracking.dataset_inputs(splits, dataset)]
    assert json.loads(train.profile) == {"num_rows": 10, "num_elements": 20}
    assert train.digest != test.digest  # the 3 sampled rows are test's 3 rows
    assert train.schema == test.schema

"""A sweep's shared work, done once (glove_exp.app.shared, glove_exp.app.reuse, glove_exp.io.arrays_cache):
jobs whose texts, labels, vectors and token settings agree reuse the tokens, and the features too when
the feature settings agree, from memory in one process and from the cache dir across processes."""

from __future__ import annotations

import json
import logging
import os
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from glove_exp.app import pipeline, reuse, stages
from glove_exp.app.shared import Codec, SharedWork
from glove_exp.app.stages import StageTimer, prepare
from glove_exp.core import text
from glove_exp.io import arrays_cache, datasets
from glove_exp.io.arrays_cache import Entry, get_or_build
from glove_exp.io.files import file_sha256, sha256_file
from tests.conftest import experiment_runs, tiny_config, write_csv

SAME_CONTENT = ("dataset.val_fraction=0",)  # no seeded validation split: every seed has the same splits


def counter(monkeypatch, module, name: str) -> list[int]:
    """One item per call of ``module.name`` from here on."""
    calls: list[int] = []
    function = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.fixture
def encodes(monkeypatch) -> list[int]:
    """One item per encoding of the tokens stage (each builds its vocabulary)."""
    return counter(monkeypatch, text, "build_vocabulary")


@pytest.fixture
def tokenizes(monkeypatch) -> list[int]:
    """One item per tokenisation of documents."""
    return counter(monkeypatch, text, "tokenize_all")


@pytest.fixture
def features_made(monkeypatch) -> list[int]:
    """One item per features stage that made its inputs."""
    calls: list[int] = []
    make = stages.frozen_inputs

    def counted(*args, **kwargs):
        calls.append(1)
        return make(*args, **kwargs)

    monkeypatch.setattr(stages, "frozen_inputs", counted)
    return calls


def prepared(tiny_data, tmp_path, shared, *overrides):
    return prepare(tiny_config(tiny_data, tmp_path, *overrides), StageTimer(), shared=shared)


def assert_same_prepared(a, b) -> None:
    """Equal arrays and facts, whether or not they are the same objects."""
    assert a.encoded.ids.keys() == b.encoded.ids.keys()
    for split, ids in a.encoded.ids.items():
        assert (ids is None) == (b.encoded.ids[split] is None)
        if ids is not None:
            np.testing.assert_array_equal(ids, b.encoded.ids[split])
            assert ids.dtype == b.encoded.ids[split].dtype
    assert a.encoded.words == b.encoded.words
    for name in ("counts", "table", "vector_rows"):
        np.testing.assert_array_equal(getattr(a.encoded, name), getattr(b.encoded, name))
    assert a.encoded.oov_rate == b.encoded.oov_rate
    assert a.inputs.precomputed == b.inputs.precomputed
    for name in ("train", "val"):
        x, y = getattr(a.inputs, name), getattr(b.inputs, name)
        assert (x is None) == (y is None)
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape
            np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))
    for x, y in zip(a.inputs.consts, b.inputs.consts):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --- in one process: memory ----------------------------------------------------------------------


def test_jobs_with_the_same_content_reuse_the_tokens_and_features_in_memory(
    tiny_data, tmp_path, encodes, features_made
):
    shared = SharedWork()
    first = prepared(tiny_data, tmp_path, shared, *SAME_CONTENT, "trainer.seed=0")
    timer = StageTimer()
    second = prepare(tiny_config(tiny_data, tmp_path, *SAME_CONTENT, "trainer.seed=1"), timer, shared=shared)
    assert second.encoded is first.encoded and second.inputs is first.inputs
    assert len(encodes) == len(features_made) == 1
    assert list(timer.seconds) == ["data", "vectors", "tokens", "features"]  # the stages keep their names
    # the head's settings leave the features as they are
    head = prepared(tiny_data, tmp_path, shared, *SAME_CONTENT, "model.hidden_sizes=[8]", "model.dropout=0.5")
    assert head.inputs is first.inputs and len(features_made) == 1
    assert not first.encoded.ids["train"].flags.writeable  # later jobs get the same arrays: nobody writes to them


@pytest.mark.parametrize(
    "override", ["trainer.max_tokens=20", "embeddings.lowercase=false", "embeddings.serving_words=0"]
)
def test_other_token_settings_encode_again(override, tiny_data, tmp_path, encodes):
    shared = SharedWork()
    first = prepared(tiny_data, tmp_path, shared, *SAME_CONTENT)
    other = prepared(tiny_data, tmp_path, shared, *SAME_CONTENT, override)
    assert other.encoded is not first.encoded and len(encodes) == 2


def test_another_seed_with_a_validation_split_encodes_again(tiny_data, tmp_path, encodes):
    shared = SharedWork()
    first = prepared(tiny_data, tmp_path, shared, "trainer.seed=0")  # val_fraction 0.1: the seed draws it
    other = prepared(tiny_data, tmp_path, shared, "trainer.seed=1")
    again = prepared(tiny_data, tmp_path, shared, "trainer.seed=0")
    assert other.encoded is not first.encoded and again.encoded is first.encoded and len(encodes) == 2


def test_other_feature_settings_reuse_the_tokens_only(tiny_data, tmp_path, encodes, features_made):
    shared = SharedWork()
    first = prepared(tiny_data, tmp_path, shared, *SAME_CONTENT)
    for i, override in enumerate(["model.pooling=max", "trainer.feature_dtype=float32", "model.weighting=sif"]):
        other = prepared(tiny_data, tmp_path, shared, *SAME_CONTENT, override)
        assert other.encoded is first.encoded and other.inputs is not first.inputs
        assert len(features_made) == 2 + i
    assert len(encodes) == 1


def test_a_changed_text_or_label_is_another_key(tiny_data, tmp_path):
    from glove_exp.io.datasets import Split, Splits, load_splits
    from glove_exp.io.vectors import load_word_vectors

    config = tiny_config(tiny_data, tmp_path, *SAME_CONTENT)
    splits, vectors = load_splits(config.dataset, 0), load_word_vectors(config.embeddings, progress=False)
    key = reuse.tokens_key(config, splits, vectors)
    test = splits.test
    texts = [test.texts[0] + " ", *test.texts[1:]]
    labels = test.labels.copy()
    labels[0] = (labels[0] + 1) % 4
    # moving a character across a document boundary changes no concatenation, but the lengths
    moved = [test.texts[0] + test.texts[1][0], test.texts[1][1:], *test.texts[2:]]
    others = [Split(texts, test.labels), Split(test.texts, labels), Split(moved, test.labels)]
    keys = {reuse.tokens_key(config, Splits(splits.train, None, other, {}), vectors) for other in others}
    assert key == reuse.tokens_key(config, load_splits(config.dataset, 1), vectors)
    assert len(keys) == 3 and key not in keys
    assert splits.test.digest is splits.test.digest  # worked out once per split, then kept


def test_memory_holds_the_latest_few_of_each_kind_within_its_bytes():
    shared = SharedWork(entries=2, memory_bytes=1000, disk_bytes=None)
    for key in "abc":
        shared.reuse("tokens", key, lambda: object(), lambda value: 100)
    shared.reuse("features", "x", lambda: object(), lambda value: 100)
    assert shared.held("tokens") == ["b", "c"] and shared.held("features") == ["x"]
    shared.reuse("tokens", "b", lambda: pytest.fail("b is held"), lambda value: 100)
    assert shared.held("tokens") == ["c", "b"]  # used last
    shared.reuse("features", "large", lambda: object(), lambda value: 950)
    assert shared.held("tokens") == [] and shared.held("features") == ["large"]  # the oldest went first
    shared.reuse("features", "huge", lambda: object(), lambda value: 5000)
    assert shared.held("features") == []  # larger than the budget alone


def test_a_pickled_shared_work_is_empty_with_the_same_bounds():
    """What a launcher (joblib, Ray, submitit) ships to its workers with the task function."""
    shared = SharedWork(entries=5, memory_bytes=None, disk_bytes=123)
    shared.reuse("tokens", "a", lambda: np.zeros(10**6), lambda value: value.nbytes)
    copy = pickle.loads(pickle.dumps(shared))
    assert (copy.entries, copy.memory_bytes, copy.disk_bytes) == (5, None, 123)
    assert copy.held("tokens") == [] and shared.held("tokens") == ["a"]
    assert len(pickle.dumps(shared)) < 1000


# --- across processes: the cache dir -------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        (),  # a validation split; mean pooling precomputed as float16
        ("model.weighting=sif", "model.standardize=true", "trainer.feature_dtype=bfloat16"),
        ("model.pooling=flatten", "model.standardize=true"),  # not precomputed: the moments only
        ("embeddings.trainable=true",),  # nothing to cache on disk but the tokens
    ],
    ids=["default", "sif-standardize-bfloat16", "flatten", "trainable"],
)
def test_a_new_process_reads_what_an_earlier_one_cached(overrides, tiny_data, tmp_path, monkeypatch):
    built = prepared(tiny_data, tmp_path, SharedWork(), *overrides)
    fresh = prepared(tiny_data, tmp_path, None, *overrides)  # no sharing at all
    costly = not overrides or "model.standardize=true" in overrides
    if costly:
        monkeypatch.setattr(stages, "frozen_inputs", lambda *args: pytest.fail("the features are cached"))
    monkeypatch.setattr(text, "build_vocabulary", lambda *args: pytest.fail("the tokens are cached"))
    read = prepared(tiny_data, tmp_path, SharedWork(), *overrides)  # as another process would
    assert read.encoded is not built.encoded
    assert_same_prepared(read, fresh)
    assert_same_prepared(built, fresh)
    cache = Path(tiny_config(tiny_data, tmp_path).embeddings.cache_dir)
    assert len(list((cache / "tokens").glob("[0-9a-f]*/manifest.json"))) == 1
    assert len(list((cache / "features").glob("[0-9a-f]*/manifest.json"))) == int(costly)


@pytest.mark.parametrize("damage", ["flip", "truncate", "no manifest", "bad manifest", "no array"])
def test_a_corrupt_entry_is_built_again(damage, tiny_data, tmp_path, caplog):
    prepared(tiny_data, tmp_path, SharedWork(), *SAME_CONTENT)
    cache = Path(tiny_config(tiny_data, tmp_path).embeddings.cache_dir)
    [entry] = (cache / "tokens").glob("[0-9a-f]*")
    ids = entry / "ids_train.npy"
    if damage == "flip":
        data = bytearray(ids.read_bytes())
        data[-1] ^= 1
        ids.write_bytes(bytes(data))
    elif damage == "truncate":
        ids.write_bytes(ids.read_bytes()[:-100])
    elif damage == "no manifest":
        (entry / "manifest.json").unlink()
    elif damage == "bad manifest":
        (entry / "manifest.json").write_text("{")
    else:
        ids.unlink()
    with caplog.at_level(logging.WARNING):
        rebuilt = prepared(tiny_data, tmp_path, SharedWork(), *SAME_CONTENT)
    assert "is corrupt" in caplog.text
    assert_same_prepared(rebuilt, prepared(tiny_data, tmp_path, None, *SAME_CONTENT))
    assert arrays_cache.read_entry(entry).arrays["ids_train"].shape == rebuilt.encoded.ids["train"].shape  # rewritten


def data_dir(folder: Path, train: list[str], test: list[str]) -> Path:
    folder.mkdir(parents=True)
    write_csv(folder / "train.csv", train, [i % 4 for i in range(len(train))])
    write_csv(folder / "test.csv", test, [i % 4 for i in range(len(test))])
    return folder


# Texts in several scripts, an empty one, and AG News' debris for ``dataset.unescape``
TRAIN = [
    "Iraq #39;s oil \\$1bn",
    "AT amp;T caf\u00e9",
    "  ",
    "\u0645\u0631\u062d\u0628\u0627 \U0001f600 team",
    "x \u2028 y",
] * 8
TEST = ["the champ; won", "NASA &lt;b&gt;probe&lt;/b&gt;", "\u00fcber", "stocks fell"] * 3


def splits_of(tiny_data, tmp_path, folder: Path, shared, *overrides: str):
    config = tiny_config({**tiny_data, "ag_dir": folder}, tmp_path, *overrides)
    return stages.dataset_splits(config, shared)[0]


def assert_same_splits(a, b) -> None:
    for x, y in zip(a.parts().values(), b.parts().values()):
        assert x.texts == y.texts
        np.testing.assert_array_equal(x.labels, y.labels)
        assert x.labels.dtype == y.labels.dtype and x.digest == y.digest
    assert a.files == b.files


@pytest.mark.parametrize("unescape", [False, True])
def test_a_new_process_reads_the_data_an_earlier_one_read(unescape, tiny_data, tmp_path, monkeypatch, caplog):
    folder = data_dir(tmp_path / "data", TRAIN, TEST)
    option = f"dataset.unescape={str(unescape).lower()}"
    datasets._load_raw.cache_clear()
    with caplog.at_level(logging.WARNING):
        built = splits_of(tiny_data, tmp_path, folder, SharedWork(), option)
    assert "train.csv: 8 empty or whitespace-only texts" in caplog.text
    datasets._load_raw.cache_clear()
    fresh = splits_of(tiny_data, tmp_path, folder, None, option)  # no sharing: read from the files
    monkeypatch.setattr(datasets, "read_file", lambda *args: pytest.fail("the data are cached"))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        read = splits_of(tiny_data, tmp_path, folder, SharedWork(), option)  # as another process would
    assert "train.csv: 8 empty or whitespace-only texts" in caplog.text  # said again, as reading them says it
    assert_same_splits(read, fresh)
    assert_same_splits(built, fresh)
    assert ("Iraq's oil $1bn" in read.train.texts + read.val.texts) == unescape


def test_the_data_key_follows_the_files_content_and_the_reading_settings(tiny_data, tmp_path, monkeypatch):
    folder = data_dir(tmp_path / "data", TRAIN, TEST)
    elsewhere = data_dir(tmp_path / "copy", TRAIN, TEST)
    first = splits_of(tiny_data, tmp_path, folder, SharedWork())
    (folder / "test.csv").unlink()
    write_csv(folder / "test.csv", ["a changed test text", *TEST[1:]], [i % 4 for i in range(len(TEST))])
    changed = splits_of(tiny_data, tmp_path, folder, SharedWork())
    assert changed.test.texts[0] == "a changed test text" and changed.train.texts == first.train.texts
    assert changed.test.texts[1] == "NASA <b>probe</b>"  # ag_news repairs its texts
    raw = splits_of(tiny_data, tmp_path, folder, SharedWork(), "dataset.unescape=false")
    assert raw.test.texts[1] == "NASA &lt;b&gt;probe&lt;/b&gt;"
    cache = Path(tiny_config(tiny_data, tmp_path).embeddings.cache_dir)
    assert len(list((cache / "data").glob("[0-9a-f]*/manifest.json"))) == 3
    monkeypatch.setattr(datasets, "read_file", lambda *args: pytest.fail("the same content is cached"))
    copied = splits_of(tiny_data, tmp_path, elsewhere, SharedWork())  # first's content in another folder
    assert copied.test.texts == first.test.texts
    assert copied.files == {split: str(elsewhere / f"{split}.csv") for split in ("train", "test")}  # its own files


@pytest.mark.parametrize(
    "overrides",
    [(), ("dataset.max_train_samples=300",), ("embeddings.lowercase=false", "embeddings.drop_oov=true"),
     ("dataset.val_fraction=0", "trainer.max_tokens=7")],
    ids=["default", "sample", "cased-drop-oov", "no-validation"],
)  # fmt: skip
def test_seeds_take_their_tokens_from_the_data_tokenised_once(overrides, tiny_data, tmp_path, tokenizes):
    shared = SharedWork()
    for seed in range(3):  # each draws its own splits
        before = len(tokenizes)
        taken = prepared(tiny_data, tmp_path, shared, *overrides, f"trainer.seed={seed}")
        assert len(tokenizes) - before == int(seed == 0)
        assert_same_prepared(taken, prepared(tiny_data, tmp_path, None, *overrides, f"trainer.seed={seed}"))
    before = len(tokenizes)
    read = prepared(tiny_data, tmp_path, SharedWork(), *overrides, "trainer.seed=3")  # a new process, a new seed
    assert len(tokenizes) == before
    assert_same_prepared(read, prepared(tiny_data, tmp_path, None, *overrides, "trainer.seed=3"))
    cache = Path(tiny_config(tiny_data, tmp_path).embeddings.cache_dir)
    assert len(list((cache / "corpus").glob("[0-9a-f]*/manifest.json"))) == 1


def test_a_file_is_hashed_again_once_it_changed(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\nold,0\n")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = file_sha256(path)
    path.write_text("text,label\nnew,0\n")  # the same size
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    assert file_sha256(path) == sha256_file(path) != before


def test_a_cache_dir_that_cannot_be_made_still_runs(tiny_data, tmp_path, monkeypatch):
    """Running as root makes a read-only folder writable: a folder under a regular file cannot be made."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(reuse, "cache_dir", lambda config: blocker / "cache")
    shared = SharedWork()
    first = prepared(tiny_data, tmp_path, shared, *SAME_CONTENT)
    assert shared.held("tokens") and shared.held("features")  # memory still serves the jobs of this process
    assert_same_prepared(first, prepared(tiny_data, tmp_path, SharedWork(), *SAME_CONTENT))


def test_a_run_gives_the_same_results_with_and_without_the_shared_work(tiny_data, tmp_path, store_in_tmp_path):
    overrides = (
        "trainer.epochs=1",
        "explain.num_examples=0",
        "tracking.log_model=never",
        "tracking.skip_finished=false",
    )
    config = tiny_config(tiny_data, tmp_path, *overrides)
    alone = pipeline.run(config)
    built = pipeline.run(config, shared=(shared := SharedWork()))
    from_memory = pipeline.run(config, shared=shared)
    from_disk = pipeline.run(config, shared=SharedWork())
    results = [(r.val_accuracy, r.test_accuracy) for r in (alone, built, from_memory, from_disk)]
    assert results == [results[0]] * 4


def test_the_jobs_of_a_glove_exp_sweep_share_one_encoding(
    tiny_overrides, tmp_path, store_in_tmp_path, encodes, monkeypatch
):
    """``glove-exp -m`` in this process: main() hands its SharedWork to every job of the basic launcher."""
    import signal
    import sys

    from glove_exp.app import cli

    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for name in ("HYDRA_FULL_ERROR", "NO_COLOR", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_LOGGING_LEVEL"):
        monkeypatch.delenv(name, raising=False)  # main() sets them; restored after the test
    monkeypatch.chdir(tmp_path)
    overrides = ["embeddings.dim=8", "dataset.val_fraction=0", "trainer.epochs=1", "explain.num_examples=0"]
    no_logging = ["hydra/job_logging=none", "hydra/hydra_logging=none"]
    args = ["-m", *tiny_overrides, *overrides, "tracking.log_model=never", "trainer.seed=0,1", *no_logging]
    monkeypatch.setattr(sys, "argv", ["glove-exp", *args])
    try:
        cli.main()
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert len(encodes) == 1
    assert len(experiment_runs(tmp_path)) == 2


# --- the array cache itself ----------------------------------------------------------------------


def codec() -> Codec:
    return Codec(lambda value: Entry({"x": value}, {"n": len(value)}), lambda entry: np.array(entry.arrays["x"]))


def test_entries_past_the_byte_bound_go_least_recently_used_first(tmp_path):
    encode, decode = codec().encode, codec().decode
    for age, key in enumerate(("c", "b", "a")):  # a oldest: its manifest's time an hour back
        get_or_build(tmp_path, key, lambda: np.zeros(1000, np.uint8), encode, decode, max_bytes=10**6)
        used = time.time() - 100 - 1000 * age
        os.utime(tmp_path / key / "manifest.json", (used, used))
    get_or_build(tmp_path, "a", lambda: pytest.fail("a is cached"), encode, decode, max_bytes=10**6)  # used: newest
    size = sum(path.stat().st_size for path in (tmp_path / "a").iterdir())
    get_or_build(tmp_path, "d", lambda: np.zeros(1000, np.uint8), encode, decode, max_bytes=3 * size)
    assert sorted(path.name for path in tmp_path.iterdir() if not path.name.startswith(".")) == ["a", "c", "d"]
    get_or_build(tmp_path, "e", lambda: np.zeros(10**5, np.uint8), encode, decode, max_bytes=size)
    assert [path.name for path in tmp_path.iterdir() if not path.name.startswith(".")] == ["e"]  # kept alone


def test_parallel_builders_of_one_entry_build_it_once(tmp_path):
    encode, decode = codec().encode, codec().decode
    builds, results, together = [], [], threading.Barrier(3)

    def build():
        builds.append(1)
        return np.arange(10)

    def job():
        together.wait()  # the three ask at once
        results.append(get_or_build(tmp_path, "k", build, encode, decode, max_bytes=10**6))

    threads = [threading.Thread(target=job) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(builds) == 1 and sorted(read for _, read in results) == [False, True, True]
    for value, _ in results:
        np.testing.assert_array_equal(value, np.arange(10))


def test_a_reader_without_the_lock_leaves_a_folder_whose_rename_may_be_landing(tmp_path, caplog):
    decode = codec().decode
    assert arrays_cache.store(tmp_path / "k", Entry({"x": np.arange(3)}))
    (tmp_path / "k" / "manifest.json").unlink()  # as a reader sees it when the rename lands mid-read
    assert arrays_cache.load(tmp_path / "k", decode, locked=False) is None
    assert (tmp_path / "k").is_dir() and "corrupt" not in caplog.text
    assert arrays_cache.load(tmp_path / "k", decode, locked=True) is None  # under the lock: corrupt
    assert not (tmp_path / "k").exists() and "files are missing" in caplog.text


def test_a_second_writer_leaves_the_first_entry_and_no_temporaries(tmp_path):
    assert arrays_cache.store(tmp_path / "k", Entry({"x": np.arange(3)}, {"by": "first"}))
    assert not arrays_cache.store(tmp_path / "k", Entry({"x": np.arange(4)}, {"by": "second"}))
    assert json.loads((tmp_path / "k" / "manifest.json").read_text())["facts"] == {"by": "first"}
    assert [path.name for path in tmp_path.iterdir()] == ["k"]
    assert arrays_cache.read_entry(tmp_path / "k").arrays["x"].tolist() == [0, 1, 2]


def test_an_entry_stores_no_pickles_and_reads_back_read_only(tmp_path):
    with pytest.raises(ValueError):
        arrays_cache.store(tmp_path / "k", Entry({"x": np.array([{"a": 1}], dtype=object)}))
    assert not (tmp_path / "k").exists()
    arrays_cache.store(tmp_path / "k", Entry({"x": np.arange(3.0)}))
    assert not arrays_cache.read_entry(tmp_path / "k").arrays["x"].flags.writeable

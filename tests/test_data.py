"""Dataset loading from local files: layouts, validation split, and one-line errors."""

from pathlib import Path

import numpy as np
import pytest

from glove_exp.config import DatasetConfig
from glove_exp.data import _load_raw, load_splits
from glove_exp.errors import DataError
from tests.conftest import CLASSES, make_corpus, write_csv


@pytest.fixture(autouse=True)
def fresh_cache():
    _load_raw.cache_clear()


def config(folder: Path, **kw) -> DatasetConfig:
    return DatasetConfig(
        name="ag_news",
        hub_id="fancyzhx/ag_news",
        class_names=CLASSES,
        data_dir=str(folder),
        headless_columns=["class", "title", "description"],
        **kw,
    )


def test_local_csv_with_stratified_seeded_validation_split(ag_dir):
    splits = load_splits(config(ag_dir), seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (360, 40, 120)
    assert np.bincount(splits.val.labels).tolist() == [10, 10, 10, 10]
    assert splits.files == {"train": str(ag_dir / "train.csv"), "test": str(ag_dir / "test.csv")}
    again = load_splits(config(ag_dir), seed=0)
    assert again.val.texts == splits.val.texts
    assert load_splits(config(ag_dir), seed=1).val.texts != splits.val.texts


def test_train_and_val_keep_the_file_order(ag_dir):
    """Unshuffled training (the seed tutorial) then sees batches in the file's order."""
    order = {text: row for row, text in enumerate(make_corpus(400, seed=1)[0])}
    splits = load_splits(config(ag_dir), seed=0)
    for split in (splits.train, splits.val):
        rows = [order[text] for text in split.texts]
        assert rows == sorted(rows)


def test_original_headless_ag_news_csv(tmp_path):
    rows = '"3","Fears for T N pension","Unions say they are disappointed."\n"4","Space race","A second team of rocketeers."\n'
    for split in ("train", "test"):
        (tmp_path / f"{split}.csv").write_text(rows * 10, encoding="utf-8")
    splits = load_splits(config(tmp_path), seed=0)
    assert splits.test.texts[0] == "Fears for T N pension Unions say they are disappointed."
    assert splits.test.labels[:2].tolist() == [2, 3]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_parquet_and_json_lines(tmp_path, fmt):
    import pandas as pd

    for split, n in (("train", 80), ("test", 20)):
        texts, labels = make_corpus(n, seed=3)
        frame = pd.DataFrame({"text": texts, "label": labels})
        frame.to_parquet(tmp_path / f"{split}.parquet") if fmt == "parquet" else frame.to_json(
            tmp_path / f"{split}.jsonl", orient="records", lines=True
        )
    splits = load_splits(config(tmp_path), seed=0)
    assert len(splits.test) == 20 and set(splits.train.labels.tolist()) == {0, 1, 2, 3}


def test_max_train_samples_subsamples_stratified(ag_dir):
    splits = load_splits(config(ag_dir, max_train_samples=200), seed=0)
    assert len(splits.train) + len(splits.val) == 200


def test_empty_texts_are_kept_and_reported(tmp_path, caplog):
    texts, labels = make_corpus(40, seed=1)
    texts[3] = "   "
    write_csv(tmp_path / "train.csv", texts, labels)
    write_csv(tmp_path / "test.csv", *make_corpus(8, seed=2))
    splits = load_splits(config(tmp_path), seed=0)
    assert len(splits.train) + len(splits.val) == 40
    assert "1 empty or whitespace-only texts" in caplog.text


def errors(tmp_path: Path, train: str | bytes, test: str | None = None) -> str:
    data = train.encode() if isinstance(train, str) else train
    (tmp_path / "train.csv").write_bytes(data)
    (tmp_path / "test.csv").write_text(test or "text,label\nok,0\nfine,1\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_splits(config(tmp_path), seed=0)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_splits(config(tmp_path / "nope"), seed=0)


def test_data_dir_without_split_files(tmp_path):
    with pytest.raises(DataError, match=r"has no train split: expected one of train\.csv"):
        load_splits(config(tmp_path), seed=0)


def test_missing_columns(tmp_path):
    assert "missing column(s) ['text', 'label']" in errors(tmp_path, "body,y\nhello,0\n")


def test_label_outside_the_classes(tmp_path):
    message = errors(tmp_path, "text,label\nhello,0\nworld,7\n")
    assert "row 2: label 7 is outside the 4 classes" in message


def test_non_integer_label(tmp_path):
    assert "row 1: label 'sports' is not an integer" in errors(tmp_path, "text,label\nhello,sports\n")


def test_single_class(tmp_path):
    assert "single class" in errors(tmp_path, "text,label\n" + "hello,1\n" * 20)


def test_non_utf8_bytes_name_file_and_line(tmp_path):
    message = errors(tmp_path, b"text,label\nhello,0\ncaf\xe9,1\n")
    assert "train.csv: line 3" in message and "UTF-8" in message


def test_hub_unreachable_points_at_data_dir(monkeypatch):
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # past the reachability check, into datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'fancyzhx/ag_news' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    cfg = config(Path("."))
    cfg.data_dir = None
    with pytest.raises(
        DataError, match=r"could not load fancyzhx/ag_news from the Hugging Face hub .*dataset\.data_dir"
    ):
        load_splits(cfg, seed=0)


def test_hub_path_joins_text_fields(tmp_path, monkeypatch):
    """The hub branch through `datasets.load_dataset`, fed a local dataset folder instead of a hub id."""
    import pandas as pd
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no reachability check for a local folder

    repo = tmp_path / "dbpedia_like"
    repo.mkdir()
    for split, n in (("train", 40), ("test", 8)):
        labels = [i % 2 for i in range(n)]
        pd.DataFrame(
            {"label": labels, "title": [f"Title {i}" for i in range(n)], "content": [f"body {i}." for i in range(n)]}
        ).to_parquet(repo / f"{split}.parquet")
    cfg = DatasetConfig(
        name="dbpedia_like", hub_id=str(repo), class_names=["A", "B"], text_fields=["title", "content"], data_dir=None
    )
    splits = load_splits(cfg, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (36, 4, 8)
    assert splits.test.texts[3] == "Title 3 body 3." and splits.test.labels.tolist() == [0, 1] * 4
    assert splits.files == {}

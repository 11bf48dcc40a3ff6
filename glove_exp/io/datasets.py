"""Train and test from the hub or ``dataset.data_dir``; validation is carved from train, stratified and seeded."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import logging
import math
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np

from glove_exp.core.errors import DataError, first_line
from glove_exp.io.tables import SUFFIXES, Layout, Table, read_file, require_columns, shown

log = logging.getLogger(__name__)
OFFLINE_FIX = "run once without HF_HUB_OFFLINE, or point dataset.data_dir (or GLOVE_EXP_DATA_DIR) at train/test files"


class DatasetSettings(Protocol):
    """What :func:`load_splits` reads; read-only, so any object with these attributes will do."""

    @property
    def hub_id(self) -> str: ...
    @property
    def hub_config(self) -> str | None: ...
    @property
    def text_fields(self) -> Sequence[str]: ...
    @property
    def label_field(self) -> str: ...
    @property
    def class_names(self) -> Sequence[str]: ...
    @property
    def train_split(self) -> str: ...
    @property
    def test_split(self) -> str: ...
    @property
    def val_fraction(self) -> float: ...
    @property
    def data_dir(self) -> str | None: ...
    @property
    def headless_columns(self) -> Sequence[str] | None: ...
    @property
    def max_train_samples(self) -> int | None: ...
    @property
    def unescape(self) -> bool: ...


@dataclass(frozen=True)
class Split:
    texts: list[str]  # N documents, text fields joined with a space
    labels: np.ndarray  # [N] int32 in [0, num_classes)

    def __len__(self) -> int:
        return len(self.texts)

    @functools.cached_property
    def digest(self) -> bytes:
        """A hash of the texts and labels, worked out once per split (the jobs of a sweep share theirs)."""
        digest = hashlib.blake2b(digest_size=16)
        # the lengths make the concatenation unambiguous: 28 M characters (120k news) in 0.15 s
        digest.update(np.fromiter(map(len, self.texts), np.int64, len(self.texts)).tobytes())
        digest.update("".join(self.texts).encode("utf-8", "surrogatepass"))
        digest.update(np.ascontiguousarray(self.labels, "<i8").tobytes())
        return digest.digest()


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split | None  # None with dataset.val_fraction=0 (the tutorial's data use)
    test: Split
    files: dict[str, str]  # split -> local file path (empty for hub data)
    # "train" and "val" -> [N] rows of the Data's train split they hold, in order (test is all of its own)
    rows: dict[str, np.ndarray] = field(default_factory=dict)

    def parts(self) -> dict[str, Split | None]:
        return {"train": self.train, "val": self.val, "test": self.test}


@dataclass(frozen=True)
class Data:
    """Train and test as read (and repaired): every seed carves its splits from them."""

    train: Split
    test: Split
    files: dict[str, str]  # split -> local file path (empty for hub data)


def layout_of(cfg: DatasetSettings) -> Layout:
    return Layout(tuple(cfg.text_fields), cfg.label_field, len(cfg.class_names), tuple(cfg.headless_columns or ()))


def data_files(cfg: DatasetSettings) -> dict[str, Path]:
    """The train and test files of ``cfg.data_dir`` by split (empty for hub data)."""
    return {} if cfg.data_dir is None else _local_files(cfg.data_dir, (cfg.train_split, cfg.test_split))


def _local_files(data_dir: str, splits: Sequence[str]) -> dict[str, Path]:
    folder = existing_data_dir(data_dir)
    return {split: _find_file(folder, split) for split in splits}


def read_data(cfg: DatasetSettings) -> Data:
    """Train and test from the hub or ``cfg.data_dir``, read now, repaired if ``cfg.unescape``."""
    return _read_raw(*_raw_settings(cfg))


def load_splits(cfg: DatasetSettings, seed: int) -> Splits:
    """Read train and test (once per process for the same settings), check them against ``cfg`` and
    carve the validation split."""
    return carve_splits(_load_raw(*_raw_settings(cfg)), cfg, seed)


def _raw_settings(cfg: DatasetSettings) -> tuple[str, str | None, str, str, str | None, Layout, bool]:
    return cfg.hub_id, cfg.hub_config, cfg.train_split, cfg.test_split, cfg.data_dir, layout_of(cfg), cfg.unescape


def carve_splits(data: Data, cfg: DatasetSettings, seed: int) -> Splits:
    """``data`` checked against ``cfg``, its training sample and validation split drawn with ``seed``."""
    train, test, files = data.train, data.test, data.files
    where = files.get(cfg.train_split, f"{cfg.hub_id}:{cfg.train_split}")
    _check_classes(train, test, cfg.class_names, where)
    rows = np.arange(len(train))
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(train):
        rows = _stratified(train, cfg.max_train_samples, seed, "dataset.max_train_samples", where)[0]
        train = _take(train, rows)
    if cfg.val_fraction == 0:
        return Splits(train=train, val=None, test=test, files=files, rows={"train": rows})
    val_size = max(int(round(len(train) * cfg.val_fraction)), len(cfg.class_names))
    keep, rest = _stratified(train, len(train) - val_size, seed, "dataset.val_fraction", where)
    return Splits(_take(train, keep), _take(train, rest), test, files, {"train": rows[keep], "val": rows[rest]})


def _check_classes(train: Split, test: Split, class_names: Sequence[str], where: str) -> None:
    trained = np.bincount(train.labels, minlength=len(class_names))
    if np.count_nonzero(trained) < 2:
        raise DataError(
            f"{where}: the train split has a single class (label {int(train.labels[0])}); a classifier needs at least two"
        )
    tested = np.bincount(test.labels, minlength=len(class_names))
    for label in np.flatnonzero((trained == 0) & (tested > 0)):
        log.warning(
            "class %r (label %d) has %d test rows but no training rows in %s: the model cannot predict it",
            class_names[label], label, tested[label], where,
        )  # fmt: skip


# Entities whose "&" was lost, as AG News stores them: "Iraq #39;s", "AT amp;T", "to  quot;do": the
# "&" became a space, which is taken back with it. A named one must not end a word ("champ;"). Three
# patterns, each starting with what the regex engine can skip to, the last two only where they can
# match: as one pattern (" ?(...)") they took 0.13 s of AG News' 19,385 texts, 0.05 s now.
_SPACED_ENTITY = re.compile(r" (#\d+|quot|amp|lt|gt);")
_BARE_NUMBER = re.compile(r"(?<!&)(#\d+);")
_BARE_NAME = re.compile(r"(?<![&\w])(quot|amp|lt|gt);")
_NAMES = ("quot;", "amp;", "lt;", "gt;")
_BACKSLASHES = re.compile(r"\\+")  # AG News' line continuations ("early\\and") and escapes ("\\$1bn")


def restore_ampersands(text: str) -> str:
    """``text`` with the ``&`` of each entity that lost it put back (a space before it taken back)."""
    text = _SPACED_ENTITY.sub(r"&\1;", text)
    if text.count("#") > text.count("&#"):
        text = _BARE_NUMBER.sub(r"&\1;", text)
    if any(text.count(name) > text.count("&" + name) for name in _NAMES):
        text = _BARE_NAME.sub(r"&\1;", text)
    return text


def unescape_text(text: str) -> str:
    """Repair HTML and escape debris: entities without their ``&``, then all entities
    (``html.unescape``), backslashes as spaces, and runs of whitespace as one space."""
    if ";" in text:  # every lost entity ends in ";"
        text = restore_ampersands(text)
    text = html.unescape(text)
    if "\\" in text:
        text = _BACKSLASHES.sub(" ", text)
    return " ".join(text.split())


def existing_data_dir(data_dir: str) -> Path:
    folder = Path(data_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise DataError(f"dataset.data_dir {folder} is a file: point it at the folder holding the train and test files")
    if not folder.is_dir():
        raise DataError(f"dataset.data_dir {folder} does not exist (is GLOVE_EXP_DATA_DIR set right?)")
    return folder


def _read_raw(
    hub_id: str,
    hub_config: str | None,
    train_split: str,
    test_split: str,
    data_dir: str | None,
    layout: Layout,
    unescape: bool,
) -> Data:
    if data_dir is None:
        splits = [_from_hub(hub_id, hub_config, split, layout) for split in (train_split, test_split)]
        files = {}
    else:
        paths = _local_files(data_dir, (train_split, test_split))
        splits = [_to_split(*read_file(paths[split], layout), layout) for split in (train_split, test_split)]
        files = {split: str(path) for split, path in paths.items()}
    if unescape:
        splits = [Split([unescape_text(text) for text in part.texts], part.labels) for part in splits]
    data = Data(splits[0], splits[1], files)
    warn_empty(data, (train_split, test_split), hub_id)
    return data


# Jobs in one process that load their splits without a SharedWork share the parsed (and repaired) data:
# every argument that affects it is a key, and only the repaired texts are kept.
_load_raw = functools.lru_cache(maxsize=4)(_read_raw)


def warn_empty(data: Data, names: tuple[str, str], hub_id: str) -> None:
    """Say how many of train's and test's (``names``) texts are empty or whitespace only: they train as
    all-padding rows."""
    for name, part in zip(names, (data.train, data.test)):
        if empty := sum(not text.strip() for text in part.texts):
            where = data.files.get(name, f"{hub_id}:{name}")
            log.warning("%s: %d empty or whitespace-only texts (kept as all-padding rows)", where, empty)


def _find_file(folder: Path, split: str) -> Path:
    found = [folder / f"{split}{suffix}" for suffix in SUFFIXES if (folder / f"{split}{suffix}").exists()]
    if folders := [path.name for path in found if path.is_dir()]:
        raise DataError(f"dataset.data_dir {folder}: {folders[0]} is a folder, not a file of the {split} split")
    if not found:
        names = ", ".join(f"{split}{suffix}" for suffix in SUFFIXES)
        raise DataError(f"dataset.data_dir {folder} has no {split} split: expected one of {names}")
    if len(found) > 1:
        names = " and ".join(path.name for path in found)
        raise DataError(f"dataset.data_dir {folder} has two {split} files, {names}: keep one")
    return found[0]


def check_hub_reachable(hub_id: str, seconds: float = 3.0) -> None:
    """Fail in seconds when the hub cannot be reached (``datasets`` would retry for a minute), unless
    ``HF_HUB_OFFLINE=1`` has ``datasets`` read its cache."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=seconds).close()
    except OSError as err:
        raise DataError(
            f"cannot reach the Hugging Face hub at {constants.ENDPOINT} to load {hub_id} ({err.strerror or err}); "
            "set dataset.data_dir (or GLOVE_EXP_DATA_DIR) to local train/test files, or HF_HUB_OFFLINE=1 to use the datasets cache"
        ) from None


def _from_hub(hub_id: str, hub_config: str | None, split: str, layout: Layout) -> Split:
    check_hub_reachable(hub_id)
    import datasets

    log.info("loading %s (%s) from the Hugging Face hub", hub_id, split)
    try:
        table = datasets.load_dataset(hub_id, hub_config, split=split)
    except Exception as err:  # connection, missing dataset, auth: all mean "use local files"
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            message = f"{hub_id} is not in the datasets cache, and HF_HUB_OFFLINE=1 keeps the hub out: {OFFLINE_FIX}"
            raise DataError(message) from None
        first = str(err).splitlines()[0] if str(err) else ""
        raise DataError(
            f"could not load {hub_id} from the Hugging Face hub ({type(err).__name__}: {first}); "
            "download it elsewhere and point dataset.data_dir (or GLOVE_EXP_DATA_DIR) at a folder with train/test files"
        ) from None
    where = f"{hub_id}:{split}"
    require_columns(where, layout.needed, table.column_names)
    return _to_split(Table(where, table.to_dict(), None), False, layout)


def _to_split(table: Table, headless: bool, layout: Layout) -> Split:
    """The split of ``table``: the original headless CSV has the label first, counting classes from 1."""
    label_field, *text_fields = layout.headless_columns if headless else (layout.label_field, *layout.text_fields)
    if not table.columns[label_field]:
        raise DataError(f"{table.where}: no data rows")
    columns = [table.columns[f] for f in text_fields]
    try:
        texts = [" ".join(parts) for parts in zip(*columns)]
    except TypeError:  # a missing (null) field, or one that is not text
        texts = [_joined(table, row, text_fields, parts) for row, parts in enumerate(zip(*columns))]
    labels = _labels(table, table.columns[label_field], int(headless), layout.num_classes)
    if not any(text.strip() for text in texts):
        raise DataError(f"{table.where}: all {len(texts)} texts are empty ({', '.join(text_fields)})")
    return Split(texts=texts, labels=labels)


def _joined(table: Table, row: int, fields: Sequence[str], parts: tuple[Any, ...]) -> str:
    """The row's text fields joined with a space; a missing (null) field is empty."""
    for name, part in zip(fields, parts):
        if part is not None and not isinstance(part, str):
            raise DataError(f"{table.at(row)}: {name} {shown(repr(part))} ({type(part).__name__}) is not text")
    return " ".join("" if part is None else part for part in parts)


def _labels(table: Table, values: Sequence[Any], offset: int, num_classes: int) -> np.ndarray:
    labels = [_label(table, row, value) for row, value in enumerate(values)]
    outside = [row for row, label in enumerate(labels) if not offset <= label < offset + num_classes]
    if outside:
        row = outside[0]
        value = values[row].strip() if isinstance(values[row], str) else repr(values[row])  # a number either way
        raise DataError(
            f"{table.at(row)}: label {shown(value)} is outside the {num_classes} classes of the config "
            f"(expected {offset}..{num_classes - 1 + offset}; {len(outside)} such rows)"
        )
    return np.asarray(labels, dtype=np.int32) - offset


def _label(table: Table, row: int, value: Any) -> int:
    label = _as_int(value)
    if label is None:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{table.at(row)}: the label is missing")
        raise DataError(f"{table.at(row)}: label {shown(repr(value))} is not an integer")
    return label


def _as_int(value: Any) -> int | None:
    """An integer label from an int, an integral float or their text (``"3"``, ``"3.0"``); else None."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value)
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _stratified(split: Split, train_size: int, seed: int, key: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``split`` to keep (``train_size`` of them) and the rest, each in file order."""
    try:
        keep, rest = stratified_split(split.labels, train_size, seed)
    except ValueError as err:
        raise DataError(f"{where}: cannot split train for {key} ({first_line(err)})") from None
    return np.sort(keep), np.sort(rest)


def stratified_split(labels: np.ndarray, train_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``train_size`` of the rows of ``[N]`` ``labels`` and the others, each class in proportion: the rows
    scikit-learn's ``train_test_split(range(N), train_size=train_size, stratify=labels, random_state=seed)``
    draws, in another order (tests/test_datasets.py holds it to that), without its import (0.9 s of
    each run); raises ValueError where it would."""
    test_size = len(labels) - train_size
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise ValueError(f"the classes {classes[counts < 2].tolist()} have a single row")
    if min(train_size, test_size) < len(classes):
        raise ValueError(f"{train_size} and {test_size} rows cannot each hold the {len(classes)} classes")
    rows = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    train_counts = _approximate_mode(counts, train_size, rng)
    test_counts = _approximate_mode(counts - train_counts, test_size, rng)
    train, test = [], []
    for class_rows, count, train_count, test_count in zip(rows, counts, train_counts, test_counts):
        drawn = class_rows[rng.permutation(count)]
        train.append(drawn[:train_count])
        test.append(drawn[train_count : train_count + test_count])
    return np.concatenate(train), np.concatenate(test)


def _approximate_mode(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of ``draws`` rows each class of ``counts`` gives: its share rounded down, then one more for
    the classes of the largest remainders, ties drawn at random (scikit-learn's ``_approximate_mode``)."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    missing = int(draws - floored.sum())
    remainder = continuous - floored
    for value in np.unique(remainder)[::-1]:
        if missing == 0:
            break
        (tied,) = np.where(remainder == value)
        added = min(len(tied), missing)
        floored[rng.choice(tied, size=added, replace=False)] += 1
        missing -= added
    return floored.astype(int)


def _take(split: Split, rows: np.ndarray) -> Split:
    return Split(texts=[split.texts[i] for i in rows], labels=split.labels[rows])

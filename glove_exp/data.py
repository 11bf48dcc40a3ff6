"""Dataset loading through Hugging Face ``datasets``: from the hub, or from local files.

Local files (``dataset.data_dir``) are ``train`` and ``test`` as CSV, Parquet or JSON Lines in the
hub's own column layout, or the original headless CSV of Zhang et al. (first column the 1-based
class, the remaining columns the text fields). A validation split is carved from train,
stratified and seeded; the test split is only read for the final report.
"""

from __future__ import annotations

import csv
import functools
import html
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from sklearn.model_selection import train_test_split

from glove_exp.config import DatasetConfig
from glove_exp.errors import DataError

log = logging.getLogger(__name__)

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".jsonl": "json", ".json": "json"}


@dataclass(frozen=True)
class Split:
    texts: list[str]  # N documents, text fields joined with a space
    labels: np.ndarray  # [N] int32 in [0, num_classes)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class Splits:
    train: Split
    val: Split | None  # None with dataset.val_fraction=0 (the tutorial's data use)
    test: Split
    files: dict[str, str]  # split -> local file path (empty for hub data)

    def parts(self) -> dict[str, Split | None]:
        return {"train": self.train, "val": self.val, "test": self.test}


def load_splits(cfg: DatasetConfig, seed: int) -> Splits:
    """Read train and test, check them against ``cfg`` and carve the validation split."""
    layout = _Layout(tuple(cfg.text_fields), cfg.label_field, len(cfg.class_names), tuple(cfg.headless_columns or ()))
    train, test, files = _load_raw(cfg.hub_id, cfg.hub_config, cfg.train_split, cfg.test_split, cfg.data_dir, layout)
    if cfg.unescape:
        train, test = (Split([unescape_text(text) for text in part.texts], part.labels) for part in (train, test))
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(train):
        train = _stratified(train, cfg.max_train_samples, seed, "dataset.max_train_samples")[0]
    if cfg.val_fraction == 0:
        return Splits(train=train, val=None, test=test, files=files)
    val_size = max(int(round(len(train) * cfg.val_fraction)), len(cfg.class_names))
    train, val = _stratified(train, len(train) - val_size, seed, "dataset.val_fraction")
    return Splits(train=train, val=val, test=test, files=files)


# Entities whose "&" was lost, as AG News stores them: "Iraq #39;s", "AT amp;T", "to  quot;do": the
# "&" became a space, which is taken back with it. A named one must not end a word ("champ;").
_LOST_AMPERSAND = re.compile(r" ?((?<!&)#\d+|(?<![&\w])(?:quot|amp|lt|gt));")
_BACKSLASHES = re.compile(r"\\+")  # AG News' line continuations ("early\\and") and escapes ("\\$1bn")


def unescape_text(text: str) -> str:
    """Repair HTML and escape debris: entities without their ``&``, then all entities
    (``html.unescape``), backslashes as spaces, and runs of whitespace as one space."""
    text = html.unescape(_LOST_AMPERSAND.sub(r"&\1;", text))
    return " ".join(_BACKSLASHES.sub(" ", text).split())


@dataclass(frozen=True)
class _Layout:
    text_fields: tuple[str, ...]
    label_field: str
    num_classes: int
    headless_columns: tuple[str, ...]  # the original headless CSV's columns, label first; () if none


def existing_data_dir(data_dir: str) -> Path:
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise DataError(f"dataset.data_dir {folder} does not exist (is GLOVE_EXP_DATA_DIR set right?)")
    return folder


@functools.lru_cache(maxsize=4)
def _load_raw(
    hub_id: str, hub_config: str | None, train_split: str, test_split: str, data_dir: str | None, layout: _Layout
) -> tuple[Split, Split, dict[str, str]]:
    """Sweep jobs in one process share the parsed data: every argument that affects it is a key."""
    if data_dir is None:
        return _from_hub(hub_id, hub_config, train_split, layout), _from_hub(hub_id, hub_config, test_split, layout), {}
    folder = existing_data_dir(data_dir)
    files = {split: _find_file(folder, split) for split in (train_split, test_split)}
    splits = [_from_file(files[split], layout) for split in (train_split, test_split)]
    return splits[0], splits[1], {split: str(path) for split, path in files.items()}


def _find_file(folder: Path, split: str) -> Path:
    found = [folder / f"{split}{suffix}" for suffix in SUFFIXES if (folder / f"{split}{suffix}").is_file()]
    if not found:
        names = ", ".join(f"{split}{suffix}" for suffix in SUFFIXES)
        raise DataError(f"dataset.data_dir {folder} has no {split} split: expected one of {names}")
    return found[0]


def check_hub_reachable(hub_id: str, seconds: float = 3.0) -> None:
    """Fail in seconds when the hub cannot be reached: ``datasets`` would retry for a minute.

    With ``HF_HUB_OFFLINE=1`` (Hugging Face's own switch) ``datasets`` reads its cache instead.
    """
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


def _from_hub(hub_id: str, hub_config: str | None, split: str, layout: _Layout) -> Split:
    check_hub_reachable(hub_id)
    import datasets

    log.info("loading %s (%s) from the Hugging Face hub", hub_id, split)
    try:
        table = datasets.load_dataset(hub_id, hub_config, split=split)
    except Exception as err:  # connection, missing dataset, auth: all mean "use local files"
        first = str(err).splitlines()[0] if str(err) else ""
        raise DataError(
            f"could not load {hub_id} from the Hugging Face hub ({type(err).__name__}: {first}); "
            "download it elsewhere and point dataset.data_dir (or GLOVE_EXP_DATA_DIR) at a folder with train/test files"
        ) from None
    return _to_split(
        table.to_dict(), layout.text_fields, layout.label_field, 0, layout.num_classes, f"{hub_id}:{split}"
    )


def _from_file(path: Path, layout: _Layout) -> Split:
    import datasets

    builder = SUFFIXES[path.suffix]
    if builder != "parquet":
        _check_utf8(path)
    text_fields, label_field, offset, options = layout.text_fields, layout.label_field, 0, {}
    if builder == "csv":
        header = _first_row(path)
        if not _has_columns(header, layout) and layout.headless_columns and len(header) == len(layout.headless_columns):
            text_fields, label_field, offset = layout.headless_columns[1:], layout.headless_columns[0], 1
            options = {"column_names": list(layout.headless_columns)}
    table = _quietly(lambda: datasets.load_dataset(builder, data_files=str(path), split="train", **options))
    missing = [c for c in (*text_fields, label_field) if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; found {table.column_names}")
    return _to_split(table.to_dict(), text_fields, label_field, offset, layout.num_classes, str(path))


def _quietly(load: Callable[[], Any]) -> Any:
    """Run ``load`` without datasets' progress bars (a local file converts in a blink)."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        return load()
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _check_utf8(path: Path) -> None:
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path}: line {line}: bytes that are not UTF-8 ({err.reason}); re-save the file as UTF-8"
        ) from None


def _first_row(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle), [])


def _has_columns(header: list[str], layout: _Layout) -> bool:
    return all(c in header for c in (*layout.text_fields, layout.label_field))


def _to_split(
    columns: dict[str, list[Any]], text_fields, label_field: str, offset: int, num_classes: int, where: str
) -> Split:
    texts = [
        " ".join("" if part is None else str(part) for part in parts)
        for parts in zip(*(columns[f] for f in text_fields))
    ]
    labels = _labels(columns[label_field], offset, num_classes, where)
    empty = sum(not text.strip() for text in texts)
    if empty:
        log.warning("%s: %d empty or whitespace-only texts (kept as all-padding rows)", where, empty)
    return Split(texts=texts, labels=labels)


def _labels(values: list[Any], offset: int, num_classes: int, where: str) -> np.ndarray:
    labels = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values):
        try:
            labels[row] = _as_int(value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: row {row + 1}: label {value!r} is not an integer") from None
    labels -= offset
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        row = int(bad[0])
        raise DataError(
            f"{where}: row {row + 1}: label {int(labels[row]) + offset} is outside the {num_classes} classes of the config "
            f"(expected {offset}..{num_classes - 1 + offset}; {bad.size} such rows)"
        )
    return labels.astype(np.int32)


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        raise TypeError(value)
    number = float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


def _stratified(split: Split, train_size: int, seed: int, key: str) -> tuple[Split, Split]:
    """Seeded stratified partition into ``train_size`` and the rest."""
    classes = np.unique(split.labels)
    if classes.size < 2:
        raise DataError(
            f"the train split has a single class (label {int(classes[0])}); a classifier needs at least two"
        )
    try:
        keep, rest = train_test_split(
            np.arange(len(split)), train_size=train_size, stratify=split.labels, random_state=seed
        )
    except ValueError as err:
        raise DataError(f"cannot split train for {key} ({err})") from None
    return _take(split, np.sort(keep)), _take(split, np.sort(rest))  # both in file order


def _take(split: Split, rows: np.ndarray) -> Split:
    return Split(texts=[split.texts[i] for i in rows], labels=split.labels[rows])

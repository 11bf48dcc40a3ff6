"""Dataset loading: from the hub through Hugging Face ``datasets``, or from local files.

Local files (``dataset.data_dir``) are ``train`` and ``test`` as CSV, Parquet or JSON Lines (``.json``:
also one array of objects) in the hub's own column layout, or the original headless CSV of Zhang et
al. (first column the 1-based class, the remaining columns the text fields). They are read here
(``csv``, ``json``, ``pyarrow.parquet``), not by ``datasets``: a path is never a glob pattern, and
every problem is one :class:`DataError` line naming the file and its line (or row). A validation
split is carved from train, stratified and seeded; the test split is only read for the final report.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import html
import itertools
import json
import logging
import math
import re
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlparse

import numpy as np
from sklearn.model_selection import train_test_split

from glove_exp.app.schema import DatasetConfig
from glove_exp.core.errors import DataError

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
    train, test, files = _load_raw(
        cfg.hub_id, cfg.hub_config, cfg.train_split, cfg.test_split, cfg.data_dir, layout, cfg.unescape
    )
    where = files.get(cfg.train_split, f"{cfg.hub_id}:{cfg.train_split}")
    _check_classes(train, test, cfg.class_names, where)
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(train):
        train = _stratified(train, cfg.max_train_samples, seed, "dataset.max_train_samples", where)[0]
    if cfg.val_fraction == 0:
        return Splits(train=train, val=None, test=test, files=files)
    val_size = max(int(round(len(train) * cfg.val_fraction)), len(cfg.class_names))
    train, val = _stratified(train, len(train) - val_size, seed, "dataset.val_fraction", where)
    return Splits(train=train, val=val, test=test, files=files)


def _check_classes(train: Split, test: Split, class_names: Sequence[str], where: str) -> None:
    """Refuse a single training class; warn about classes that are tested but never trained."""
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
# "&" became a space, which is taken back with it. A named one must not end a word ("champ;").
_LOST_AMPERSAND = re.compile(r" ?((?<!&)#\d+|(?<![&\w])(?:quot|amp|lt|gt));")
_BACKSLASHES = re.compile(r"\\+")  # AG News' line continuations ("early\\and") and escapes ("\\$1bn")


def unescape_text(text: str) -> str:
    """Repair HTML and escape debris: entities without their ``&``, then all entities
    (``html.unescape``), backslashes as spaces, and runs of whitespace as one space."""
    if ";" in text:  # every lost entity ends in ";" (the test is fast; the pattern is slow to scan a text without one)
        text = _LOST_AMPERSAND.sub(r"&\1;", text)
    text = html.unescape(text)
    if "\\" in text:
        text = _BACKSLASHES.sub(" ", text)
    return " ".join(text.split())


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
    hub_id: str,
    hub_config: str | None,
    train_split: str,
    test_split: str,
    data_dir: str | None,
    layout: _Layout,
    unescape: bool,
) -> tuple[Split, Split, dict[str, str]]:
    """Sweep jobs in one process share the parsed (and repaired) data: every argument that affects
    it is a key, and only the repaired texts are kept."""
    if data_dir is None:
        splits = [_from_hub(hub_id, hub_config, split, layout) for split in (train_split, test_split)]
        files = {}
    else:
        folder = existing_data_dir(data_dir)
        paths = {split: _find_file(folder, split) for split in (train_split, test_split)}
        splits = [_from_file(paths[split], layout) for split in (train_split, test_split)]
        files = {split: str(path) for split, path in paths.items()}
    if unescape:
        splits = [Split([unescape_text(text) for text in part.texts], part.labels) for part in splits]
    return splits[0], splits[1], files


def _find_file(folder: Path, split: str) -> Path:
    found = [folder / f"{split}{suffix}" for suffix in SUFFIXES if (folder / f"{split}{suffix}").is_file()]
    if not found:
        names = ", ".join(f"{split}{suffix}" for suffix in SUFFIXES)
        raise DataError(f"dataset.data_dir {folder} has no {split} split: expected one of {names}")
    if len(found) > 1:
        names = " and ".join(path.name for path in found)
        raise DataError(f"dataset.data_dir {folder} has two {split} files, {names}: keep one")
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
    where = f"{hub_id}:{split}"
    _require(where, (*layout.text_fields, layout.label_field), table.column_names)
    return _to_split(
        _Table(where, table.to_dict(), None), layout.text_fields, layout.label_field, 0, layout.num_classes
    )


@dataclass(frozen=True)
class _Table:
    """Columns read from one file (or hub split), and where each row came from for messages."""

    where: str  # the file, or hub_id:split
    columns: dict[str, Sequence[Any]]  # at least the text and label columns, all of one length
    lines: Sequence[int] | None  # the file line each row starts on; None: rows are only counted

    def at(self, row: int) -> str:
        return f"{self.where}: line {self.lines[row]}" if self.lines is not None else f"{self.where}: row {row + 1}"


def _from_file(path: Path, layout: _Layout) -> Split:
    """Read ``path`` ourselves (no ``datasets``: no glob patterns, and every error knows its line)."""
    text_fields, label_field, offset = layout.text_fields, layout.label_field, 0
    kind = SUFFIXES[path.suffix]
    if kind == "parquet":
        table = _read_parquet(path, (*text_fields, label_field))
    elif kind == "json":
        table = _read_json(path, _read_text(path), (*text_fields, label_field))
    else:
        # Streamed from the file: millions of rows never exist as one string (UCS-2 or UCS-4 in
        # Python as soon as one character is not Latin-1) beside their columns.
        try:
            with path.open(encoding="utf-8-sig", newline="") as handle:
                table, headless = _read_csv(path, handle, layout)
        except UnicodeDecodeError:
            _read_text(path)  # raises the DataError that names the line
            raise
        if headless:
            text_fields, label_field, offset = layout.headless_columns[1:], layout.headless_columns[0], 1
    return _to_split(table, text_fields, label_field, offset, layout.num_classes)


def _read_text(path: Path) -> str:
    """The file as text: UTF-8 (a byte-order mark is dropped), not empty."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path}: line {line}: bytes that are not UTF-8 ({err.reason}); re-save the file as UTF-8"
        ) from None
    if not text.strip():
        raise DataError(f"{path}: the file is empty")
    return text


def _read_csv(path: Path, handle: TextIO, layout: _Layout) -> tuple[_Table, bool]:
    """The CSV's columns, and whether it is the headless original layout (no header line)."""
    with _unlimited_csv_fields():
        records = _csv_records(path, handle)
        leading = []  # records up to the first one that is not blank
        for record in records:
            leading.append(record)
            if "".join(record[1]).strip():
                break
        if not leading or not "".join(leading[-1][1]).strip():
            raise DataError(f"{path}: the file is empty")
        records = itertools.chain(leading, records)
        first_line, first = next(records)
        headless = not _has_columns(first, layout) and len(first) == len(layout.headless_columns) > 0
        if not headless:
            _require(str(path), (*layout.text_fields, layout.label_field), first)
        names = list(layout.headless_columns) if headless else first
        # One list per column, no object per row: 120k retained rows would cost as much garbage collection as parsing.
        columns: list[list[str]] = [[] for _ in names]
        lines: list[int] = []
        for line, row in itertools.chain([(first_line, first)] if headless else [], records):
            if len(row) != len(names):
                raise DataError(
                    f"{path}: line {line}: {len(row)} field{'s' * (len(row) != 1)}, expected {len(names)} "
                    f"({_shown(repr(names))})"
                )
            lines.append(line)
            for column, value in zip(columns, row):
                column.append(value)
    if not lines:
        raise DataError(f"{path}: line {first_line}: a header but no data rows")
    return _Table(str(path), dict(zip(names, columns)), lines), headless


def _csv_records(path: Path, handle: TextIO) -> Iterator[tuple[int, list[str]]]:
    """``(line, fields)`` of each record, with the line it starts on; blank lines are skipped, as pandas does."""
    reader = csv.reader(handle, strict=True)
    start = 1
    try:
        for row in reader:
            if row:
                yield start, row
            start = reader.line_num + 1
    except csv.Error as err:
        problem = "a quoted field that never ends" if str(err) == "unexpected end of data" else f"not valid CSV ({err})"
        raise DataError(f"{path}: line {start}: {problem}") from None


@contextlib.contextmanager
def _unlimited_csv_fields() -> Iterator[None]:
    """Long texts are fine (pandas has no limit); ``csv``'s default stops at 128 KiB a field."""
    previous = csv.field_size_limit(2**31 - 1)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _read_json(path: Path, text: str, needed: tuple[str, ...]) -> _Table:
    """JSON Lines (one object a line), or one JSON array of objects."""
    if text.lstrip().startswith("["):
        records, lines = _parse_json(path, text, 1), None
    else:
        numbered = [(number, line) for number, line in enumerate(text.split("\n"), 1) if line.strip()]
        records = [_parse_json(path, line, number) for number, line in numbered]
        lines = [number for number, _ in numbered]
    if not records:
        raise DataError(f"{path}: an empty JSON array")
    table = _Table(str(path), {}, lines)
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{table.at(row)}: a JSON {_json_type(record)}, not an object")
    _require(table.at(0), needed, list(records[0]))
    return _Table(str(path), {name: [record.get(name) for record in records] for name in needed}, lines)


def _parse_json(path: Path, text: str, line: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: line {line + err.lineno - 1}: not valid JSON ({err.msg}, column {err.colno})"
        ) from None
    except RecursionError:
        raise DataError(f"{path}: line {line}: not valid JSON (nested too deeply)") from None


def _json_type(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _read_parquet(path: Path, needed: tuple[str, ...]) -> _Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
        _require(str(path), needed, file.schema_arrow.names)
        table = file.read(columns=list(dict.fromkeys(needed)))
        return _Table(str(path), {name: table.column(name).to_pylist() for name in needed}, None)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({_first_line(err)})") from None


def _first_line(err: Exception) -> str:
    return next(iter(str(err).splitlines()), type(err).__name__)


def _require(where: str, needed: tuple[str, ...], found: list[str]) -> None:
    missing = [c for c in dict.fromkeys(needed) if c not in found]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; found {_shown(repr(found))}")
    repeated = [c for c in dict.fromkeys(needed) if found.count(c) > 1]
    if repeated:
        raise DataError(f"{where}: column(s) {repeated} appear more than once in {_shown(repr(found))}")


def _has_columns(header: list[str], layout: _Layout) -> bool:
    return all(c in header for c in (*layout.text_fields, layout.label_field))


def _to_split(table: _Table, text_fields: Sequence[str], label_field: str, offset: int, num_classes: int) -> Split:
    if not table.columns[label_field]:
        raise DataError(f"{table.where}: no data rows")
    columns = [table.columns[f] for f in text_fields]
    try:
        texts = [" ".join(parts) for parts in zip(*columns)]
    except TypeError:  # a missing (null) field, or one that is not text
        texts = [_joined(table, row, text_fields, parts) for row, parts in enumerate(zip(*columns))]
    labels = _labels(table, table.columns[label_field], offset, num_classes)
    empty = sum(not text.strip() for text in texts)
    if empty:
        log.warning("%s: %d empty or whitespace-only texts (kept as all-padding rows)", table.where, empty)
    return Split(texts=texts, labels=labels)


def _joined(table: _Table, row: int, fields: Sequence[str], parts: tuple[Any, ...]) -> str:
    """The row's text fields joined with a space; a missing (null) field is empty."""
    for field, part in zip(fields, parts):
        if part is not None and not isinstance(part, str):
            raise DataError(f"{table.at(row)}: {field} {_shown(repr(part))} ({type(part).__name__}) is not text")
    return " ".join("" if part is None else part for part in parts)


def _labels(table: _Table, values: Sequence[Any], offset: int, num_classes: int) -> np.ndarray:
    labels = [_label(table, row, value) for row, value in enumerate(values)]
    outside = [row for row, label in enumerate(labels) if not offset <= label < offset + num_classes]
    if outside:
        row = outside[0]
        value = values[row].strip() if isinstance(values[row], str) else repr(values[row])  # a number either way
        raise DataError(
            f"{table.at(row)}: label {_shown(value)} is outside the {num_classes} classes of the config "
            f"(expected {offset}..{num_classes - 1 + offset}; {len(outside)} such rows)"
        )
    return np.asarray(labels, dtype=np.int32) - offset


def _label(table: _Table, row: int, value: Any) -> int:
    label = _as_int(value)
    if label is None:
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{table.at(row)}: the label is missing")
        raise DataError(f"{table.at(row)}: label {_shown(repr(value))} is not an integer")
    return label


def _as_int(value: Any) -> int | None:
    """An integer label from an int, an integral float or their text (``"3"``, ``"3.0"``); else None."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _shown(text: str) -> str:
    """Values from the data, cut short for a message."""
    return text if len(text) <= 60 else text[:57] + "..."


def _stratified(split: Split, train_size: int, seed: int, key: str, where: str) -> tuple[Split, Split]:
    """Seeded stratified partition into ``train_size`` and the rest."""
    try:
        keep, rest = train_test_split(
            np.arange(len(split)), train_size=train_size, stratify=split.labels, random_state=seed
        )
    except ValueError as err:
        raise DataError(f"{where}: cannot split train for {key} ({_first_line(err)})") from None
    return _take(split, np.sort(keep)), _take(split, np.sort(rest))  # both in file order


def _take(split: Split, rows: np.ndarray) -> Split:
    return Split(texts=[split.texts[i] for i in rows], labels=split.labels[rows])

"""Not ``datasets``: a path is never a glob, and every problem is one :class:`DataError` line naming the file
and its line (or row). A CSV has a header, or is Zhang et al.'s headless original (1-based class, then texts)."""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from glove_exp.core.errors import DataError, first_line

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".jsonl": "json", ".json": "json"}


@dataclass(frozen=True)
class Layout:
    """The columns the dataset config names, which the readers look for."""

    text_fields: tuple[str, ...]
    label_field: str
    num_classes: int
    headless_columns: tuple[str, ...]  # the original headless CSV's columns, label first; () if none

    @property
    def needed(self) -> tuple[str, ...]:
        return (*self.text_fields, self.label_field)


@dataclass(frozen=True)
class Table:
    """Columns read from one file (or hub split), and where each row came from for messages."""

    where: str  # the file, or hub_id:split
    columns: dict[str, Sequence[Any]]  # at least the text and label columns, all of one length
    lines: Sequence[int] | None  # the file line each row starts on; None: rows are only counted

    def at(self, row: int) -> str:
        return f"{self.where}: line {self.lines[row]}" if self.lines is not None else f"{self.where}: row {row + 1}"


def read_file(path: Path, layout: Layout) -> tuple[Table, bool]:
    """The columns of ``path`` (its suffix says the format), and whether it is the headless original CSV."""
    kind = SUFFIXES[path.suffix]
    if kind == "parquet":
        return _read_parquet(path, layout.needed), False
    if kind == "json":
        return _read_json(path, _read_text(path), layout.needed), False
    # Streamed from the file: millions of rows never exist as one string (UCS-2 or UCS-4 in
    # Python as soon as one character is not Latin-1) beside their columns.
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            return _read_csv(path, handle, layout)
    except UnicodeDecodeError:
        _read_text(path)  # raises the DataError that names the line
        raise


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


def _read_csv(path: Path, handle: TextIO, layout: Layout) -> tuple[Table, bool]:
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
        headless = not set(layout.needed) <= set(first) and len(first) == len(layout.headless_columns) > 0
        if not headless:
            require_columns(str(path), layout.needed, first)
        names = list(layout.headless_columns) if headless else first
        # One list per column, no object per row: 120k retained rows would cost as much garbage collection as parsing.
        columns: list[list[str]] = [[] for _ in names]
        lines: list[int] = []
        for line, row in itertools.chain([(first_line, first)] if headless else [], records):
            if len(row) != len(names):
                raise DataError(
                    f"{path}: line {line}: {len(row)} field{'s' * (len(row) != 1)}, expected {len(names)} "
                    f"({shown(repr(names))})"
                )
            lines.append(line)
            for column, value in zip(columns, row):
                column.append(value)
    if not lines:
        raise DataError(f"{path}: line {first_line}: a header but no data rows")
    return Table(str(path), dict(zip(names, columns)), lines), headless


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


def _read_json(path: Path, text: str, needed: tuple[str, ...]) -> Table:
    """JSON Lines (one object a line), or one JSON array of objects."""
    if text.lstrip().startswith("["):
        records, lines = _parse_json(path, text, 1), None
    else:
        numbered = [(number, line) for number, line in enumerate(text.split("\n"), 1) if line.strip()]
        records = [_parse_json(path, line, number) for number, line in numbered]
        lines = [number for number, _ in numbered]
    if not records:
        raise DataError(f"{path}: an empty JSON array")
    table = Table(str(path), {}, lines)
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{table.at(row)}: a JSON {_json_type(record)}, not an object")
    require_columns(table.at(0), needed, list(records[0]))
    return Table(str(path), {name: [record.get(name) for record in records] for name in needed}, lines)


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


def _read_parquet(path: Path, needed: tuple[str, ...]) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
        require_columns(str(path), needed, file.schema_arrow.names)
        table = file.read(columns=list(dict.fromkeys(needed)))
        return Table(str(path), {name: table.column(name).to_pylist() for name in needed}, None)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({first_line(err)})") from None


def require_columns(where: str, needed: tuple[str, ...], found: list[str]) -> None:
    missing = [c for c in dict.fromkeys(needed) if c not in found]
    if missing:
        raise DataError(f"{where}: missing column(s) {missing}; found {shown(repr(found))}")
    repeated = [c for c in dict.fromkeys(needed) if found.count(c) > 1]
    if repeated:
        raise DataError(f"{where}: column(s) {repeated} appear more than once in {shown(repr(found))}")


def shown(text: str) -> str:
    """Values from the data, cut short for a message."""
    return text if len(text) <= 60 else text[:57] + "..."

"""GloVe text files: a ``word v0 .. v{dim-1}`` line per word (:func:`parse_glove_text` has the parser's rules)."""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import os
import re
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from tqdm import tqdm

from glove_exp.core.errors import EmbeddingsError
from glove_exp.core.vectors import WordVectors

log = logging.getLogger(__name__)

# Pieces of the file, each parsed by one thread (the CSV reader's own threads cost a fifth more CPU):
# one piece per parser in flight and the one in use, each in a buffer read in turn (a fresh buffer per
# piece costs more in page faults than the parse). 8 to 16 MB parsed fastest on 2 cores.
CHUNK_BYTES = 16 << 20
MAX_PARSERS = 8  # threads; each holds a piece and its table (about 24 MB)
# The CSV reader's blocks: 1,600 to 2,400 lines, whose text and columns stay in a core's cache, 1 MB at
# 50-d and 4.2 MB at 300-d (8 MB blocks took a quarter more CPU at 50-d, 1 MB ones 7% more at 300-d,
# where each block has more columns to convert).
BLOCK_BYTES = 1 << 20
BLOCK_BYTES_PER_DIM = 14 << 10
FALLBACK_BYTES = 1 << 20  # pieces the CSV reader refuses are split down to this size
MAX_BAD_FRACTION = 0.5
HEAD_BYTES = 64 << 10  # sniffed before parsing
SAMPLE_LINES = 100
# what a file that is not GloVe text is, by its first bytes, and what to do
MAGIC = {
    b"\x1f\x8b": "a gzip-compressed file; decompress it first (gunzip)",
    b"PK\x03\x04": "a zip archive; extract the .txt inside (unzip), or use embeddings=<variant> (e.g. glove_6b_100d) to download and extract it",
    b"\xfd7zXZ\x00": "an xz-compressed file; decompress it first (unxz)",
    b"\xff\xfe": "UTF-16 text; GloVe text files are UTF-8 (iconv -f UTF-16 -t UTF-8)",
    b"\xfe\xff": "UTF-16 text; GloVe text files are UTF-8 (iconv -f UTF-16 -t UTF-8)",
}
CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\t\n\r")
WORD2VEC_HEADER = re.compile(rb"\d+ \d+")
LINE_BREAK = re.compile(r"\r\n|\r|\n")  # as the CSV reader splits lines (it skips empty ones)
CsvPart = tuple[pa.Table | None, list[str]]  # the rows the CSV reader parsed, and the lines it handed back


@dataclass
class ParseStats:
    lines: int = 0
    malformed: int = 0
    examples: list[str] = field(default_factory=list)  # first few malformed lines, shortened
    words: set[str] = field(default_factory=set)  # distinct, to count the duplicates

    def bad(self, line: str) -> None:
        self.malformed += 1
        if len(self.examples) < 3:
            self.examples.append(line[:60])


def read_glove_text(path: Path, dim: int, progress: bool = True) -> WordVectors:
    """:func:`parse_glove_text` into one :class:`WordVectors` in memory."""
    words: list[str] = []
    blocks = [np.zeros((0, dim), np.float32)]
    for block_words, block in parse_glove_text(path, dim, progress):
        words += block_words
        blocks.append(block)
    return WordVectors(words, np.concatenate(blocks), source=str(path))


def parse_glove_text(path: Path, dim: int, progress: bool = True) -> Iterator[tuple[list[str], np.ndarray]]:
    """Blocks of (words, ``[n, dim]`` float32 vectors), in file order except that the lines parsed from
    the right follow the others of their piece. The file is sniffed (:func:`_sniff`), then read in 16 MB
    pieces, parsed by the CSV reader (space-separated, no quoting, float32 columns) on one thread per
    core while earlier ones are used. Lines that fail every parse are skipped and counted; the file is
    refused if most of its lines were bad, or with the line of a NaN or infinite value. Words that repeat
    an earlier one are counted in a warning (row lookups keep the first)."""
    start = _sniff(path, dim)
    stats = ParseStats()
    parsers = parser_count()
    pieces = _line_chunks(path, start, buffers=parsers + 1)
    bar = (
        tqdm(
            total=path.stat().st_size, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
            desc=f"parse {path.name}",
        )
        if progress
        else contextlib.nullcontext()  # a disabled tqdm still imports multiprocessing for its lock
    )  # fmt: skip
    with bar, ThreadPoolExecutor(max_workers=parsers, thread_name_prefix="glove-parse") as pool:
        pending = deque(pool.submit(_parse_piece, *piece, dim) for piece in itertools.islice(pieces, parsers))
        while pending:
            offset, size, text, parts = pending.popleft().result()
            if (piece := next(pieces, None)) is not None:  # into the buffer of the piece used before this one
                pending.append(pool.submit(_parse_piece, *piece, dim))
            for table, other_width in parts:
                for words, vectors in _table_blocks(table, stats) + _other_width_block(other_width, dim, stats):
                    _check_finite(path, dim, text, offset, words, vectors)
                    stats.words.update(words)  # here, while the parsers work on the next pieces
                    yield words, vectors
            if progress:
                bar.update(size)
    _check_malformed(path, dim, stats)
    if duplicates := stats.lines - stats.malformed - len(stats.words):
        log.warning("%s: %d duplicate words; kept the first vector of each", path, duplicates)
    log.info("parsed %d lines of %d-d vectors from %s", stats.lines - stats.malformed, dim, path)


def parser_count() -> int:
    """Threads that parse pieces: Arrow's CPU count (which honours ``OMP_NUM_THREADS``), at most ``MAX_PARSERS``."""
    return min(pa.cpu_count(), MAX_PARSERS)


def _parse_piece(offset: int, piece: memoryview, dim: int) -> tuple[int, int, memoryview | bytes, list[CsvPart]]:
    """(offset, size in the file, text made valid UTF-8, CSV parts) of the piece at byte ``offset``."""
    text = _valid_utf8(piece)
    return offset, len(piece), text, _csv_parts(text, dim)


def _csv_parts(text: memoryview | bytes, dim: int) -> list[CsvPart]:
    """``text`` through the CSV reader; a piece the reader refuses is split into eight and tried
    again, and below ``FALLBACK_BYTES`` handed back line by line (split and skipped as the reader
    does, so that the result does not depend on where the file was cut)."""
    other_width: list[str] = []

    def keep_other_width(row: pacsv.InvalidRow) -> str:
        other_width.append(row.text)
        return "skip"

    try:
        return [(pacsv.read_csv(pa.py_buffer(text), **_csv_options(dim, keep_other_width)), other_width)]
    except pa.ArrowInvalid as err:
        pieces = _split_at_lines(text, 8) if len(text) > FALLBACK_BYTES else [text]
        if len(pieces) == 1:
            log.debug("%s; parsing %d bytes line by line", str(err).splitlines()[0], len(text))
            return [(None, [line for line in LINE_BREAK.split(str(text, "utf-8")) if line])]
    return [part for piece in pieces for part in _csv_parts(piece, dim)]


def _csv_options(dim: int, invalid_row_handler: Callable[[pacsv.InvalidRow], str]) -> dict:
    names = ["word", *(f"v{i}" for i in range(dim))]
    return {
        "read_options": pacsv.ReadOptions(
            column_names=names, encoding="utf8", block_size=max(BLOCK_BYTES, dim * BLOCK_BYTES_PER_DIM),
            use_threads=False,  # parse_glove_text parses a piece per thread
        ),
        "parse_options": pacsv.ParseOptions(delimiter=" ", quote_char=False, escape_char=False, invalid_row_handler=invalid_row_handler),
        "convert_options": pacsv.ConvertOptions(
            column_types={"word": pa.string(), **{n: pa.float32() for n in names[1:]}},
            null_values=[], strings_can_be_null=False, quoted_strings_can_be_null=False,
            check_utf8=False,  # _valid_utf8 has checked the whole piece
        ),
    }  # fmt: skip


def _split_at_lines(text: memoryview | bytes, count: int) -> list[memoryview]:
    """``text`` in at most ``count`` pieces that end at line breaks (the last one may not)."""
    data = bytes(text)
    step = max(len(data) // count, 1)
    cuts = [0]
    while (cut := data.find(b"\n", cuts[-1] + step - 1) + 1) and cut < len(data):
        cuts.append(cut)
    cuts.append(len(data))
    return [memoryview(data)[a:b] for a, b in zip(cuts, cuts[1:])]


def _table_blocks(table: pa.Table | None, stats: ParseStats) -> list[tuple[list[str], np.ndarray]]:
    """(words, vectors) per record batch: ``to_tensor`` writes a batch's floats row-major in one pass."""
    if table is None:
        return []
    stats.lines += len(table)
    return [
        (batch.column(0).to_pylist(), batch.drop_columns(["word"]).to_tensor(row_major=True).to_numpy())
        for batch in table.to_batches()
        if len(batch)
    ]


def _other_width_block(lines: list[str], dim: int, stats: ParseStats) -> list[tuple[list[str], np.ndarray]]:
    """The lines the CSV reader did not parse, parsed from the right (the bad ones counted)."""
    stats.lines += len(lines)
    parsed = []
    for line in lines:
        entry = _parse_from_right(line, dim)
        if entry is None:
            stats.bad(line)
        else:
            parsed.append(entry)
    return [([word for word, _ in parsed], np.stack([vector for _, vector in parsed]))] if parsed else []


def _line_chunks(path: Path, start: int = 0, buffers: int = 2) -> Iterator[tuple[int, memoryview]]:
    """(offset, piece) from byte ``start`` on, pieces of about ``CHUNK_BYTES`` ending at a line break (the
    last may not): views of ``buffers`` buffers read in turn, so a piece stays valid until ``buffers - 1``
    more are read."""
    with open(path, "rb") as handle:
        rest = os.fstat(handle.fileno()).st_size - start  # < 0 past a header line without a line break
        size = max(min(CHUNK_BYTES, rest + 1), 1)  # a small file: one small read
        ring = [bytearray(size) for _ in range(buffers)]
        for turn in itertools.count():
            handle.seek(start)
            buffer = ring[turn % buffers]
            read = handle.readinto(buffer)
            while read == len(buffer) and buffer.rfind(b"\n") < 0:  # a line longer than the buffer
                ring[turn % buffers] = buffer = buffer + bytearray(len(buffer))
                read += handle.readinto(memoryview(buffer)[read:])
            if not read:
                return
            cut = read if read < len(buffer) else buffer.rfind(b"\n") + 1
            yield start, memoryview(buffer)[:cut]
            start += cut


def _valid_utf8(chunk: memoryview) -> memoryview | bytes:
    """``chunk`` with bytes that are not UTF-8 (seen in some crawled vocabularies) replaced by
    U+FFFD: pyarrow can only hand valid UTF-8 lines to the handler of lines of another width."""
    offsets = pa.py_buffer(np.array([0, len(chunk)], np.int64))
    try:  # arrow validates ten times faster than bytes.decode
        pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(chunk)]).validate(full=True)
        return chunk
    except pa.ArrowInvalid:
        return str(chunk, "utf-8", "replace").encode("utf-8")


def _sniff(path: Path, dim: int) -> int:
    """Refuse a file that is not GloVe text, or whose lines mostly hold another number of values than
    ``dim``; returns where the vectors start, past a word2vec header (the lines tell the dimension)."""
    with open(path, "rb") as handle:
        head = handle.read(HEAD_BYTES)
        complete = not handle.read(1)
    if not head.strip():
        raise EmbeddingsError(f"{path} is empty; point embeddings.path at a GloVe text file")
    for magic, what in MAGIC.items():
        if head.startswith(magic):
            raise EmbeddingsError(f"{path}: {what}")
    if b"\x00" in head or len(head) - len(head.translate(None, CONTROL_BYTES)) > len(head) // 20:
        raise EmbeddingsError(f"{path}: binary, not a GloVe text file (a word2vec .bin? convert it to text first)")
    lines = head.split(b"\n") if complete else head.split(b"\n")[:-1]  # the last one may be cut off
    start = 0
    if lines and dim != 1 and WORD2VEC_HEADER.fullmatch(lines[0].strip()):  # "<count> <dim>": no vector
        log.warning("%s: line 1 is a word2vec header (%s); skipped it", path, lines[0].strip().decode())
        start = len(lines[0]) + 1
        lines = lines[1:]
    sample = [line.strip() for line in lines[:SAMPLE_LINES] if line.strip()]
    if sum(b"\t" in line for line in sample) * 2 > len(sample):
        raise EmbeddingsError(f"{path}: tab-separated; GloVe text files separate fields with spaces (tr '\\t' ' ')")
    _check_width(path, dim, Counter(len(line.split(b" ")) - 1 for line in sample))
    return start


def _check_width(path: Path, dim: int, widths: Counter[int]) -> None:
    if not widths:
        return  # no complete line in the head: the parser judges the lines
    width, count = widths.most_common(1)[0]
    if width == dim or 2 * count <= widths.total():
        return
    if width == 0:
        raise EmbeddingsError(
            f"{path}: its lines hold a single field, not a word and {dim} numbers separated by spaces; "
            "not a GloVe text file"
        )
    raise EmbeddingsError(f"{path} holds {width}-d vectors but embeddings.dim={dim}; set embeddings.dim={width}")


def _parse_from_right(line: str, dim: int) -> tuple[str, np.ndarray] | None:
    fields = line.rstrip().rsplit(" ", dim)
    if len(fields) != dim + 1 or not fields[0]:
        return None
    try:
        with np.errstate(over="ignore"):  # beyond float32's range: inf, refused by _check_finite
            vector = np.array(fields[1:], dtype=np.float32)
    except ValueError:
        return None
    return fields[0], vector


def _check_finite(
    path: Path, dim: int, text: memoryview | bytes, offset: int, words: list[str], vectors: np.ndarray
) -> None:
    """Refuse NaN or infinite values (which would only surface as a diverged training run),
    naming the first such line of ``text``, the piece of the file at byte ``offset``."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(vectors.sum()):  # NaN and inf carry through a sum: one pass, no mask (5x faster)
            return
    bad = ~np.isfinite(vectors).all(axis=1)
    if not bad.any():
        return  # only the sum was beyond float32's range
    word = words[int(np.argmax(bad))]
    lines = enumerate(str(text, "utf-8").split("\n"), start=_line_number(path, offset))
    number = next((n for n, line in lines if _is_nonfinite_entry(line, dim, word)), None)
    where = f"line {number} ({word!r})" if number else f"the line of {word!r}"  # None: pyarrow split it at a lone \r
    raise EmbeddingsError(f"{path}: {where} holds NaN, inf or a value beyond float32's range; fix or delete that line")


def _line_number(path: Path, offset: int) -> int:
    """The line (from 1) that starts at byte ``offset``: line breaks are counted only for an error."""
    breaks = 0
    with open(path, "rb") as handle:
        while offset > 0 and (block := handle.read(min(offset, 1 << 20))):
            breaks += block.count(b"\n")
            offset -= len(block)
    return breaks + 1


def _is_nonfinite_entry(line: str, dim: int, word: str) -> bool:
    entry = _parse_from_right(line, dim)
    return entry is not None and entry[0] == word and not np.isfinite(entry[1]).all()


def _check_malformed(path: Path, dim: int, stats: ParseStats) -> None:
    if stats.lines == 0:  # say, nothing but a word2vec header
        raise EmbeddingsError(f"{path} holds no vectors; point embeddings.path at a GloVe text file")
    if stats.malformed == 0:
        return
    message = f"{path}: {stats.malformed} of {stats.lines} lines do not hold a word and {dim} numbers (e.g. {stats.examples[0]!r})"
    if stats.malformed > MAX_BAD_FRACTION * stats.lines:
        raise EmbeddingsError(f"{message}: most lines are bad, this is not a {dim}-d GloVe text file")
    log.warning("%s; skipped them", message)


def write_glove_text(vectors: WordVectors, path: Path, decimals: int = 5) -> Path:
    """Stanford's text format, e.g. ``glove.6B.50d.txt`` rebuilt from the packaged vectors for benchmarks."""
    with open(path, "w", encoding="utf-8") as out:
        for start in range(0, len(vectors), 50_000):
            chunk = np.asarray(vectors.vectors[start : start + 50_000])
            buffer = io.StringIO()
            np.savetxt(buffer, chunk, fmt=f"%.{decimals}f", delimiter=" ")
            lines = buffer.getvalue().splitlines()
            out.writelines(f"{w} {line}\n" for w, line in zip(vectors.words[start : start + 50_000], lines))
    return path

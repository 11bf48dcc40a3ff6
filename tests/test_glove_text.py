"""The GloVe text format: the pieced parse, sniffing, the width, finite and malformed checks, and writing."""

import gzip
import io
import logging
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from glove_exp.core.errors import EmbeddingsError
from glove_exp.core.vectors import WordVectors
from glove_exp.io import glove_text
from glove_exp.io.glove_text import read_glove_text, write_glove_text
from glove_exp.io.vectors import load_glove_text_cached


def lines(*rows: str) -> str:
    return "".join(row + "\n" for row in rows)


def test_reads_words_and_vectors(glove_file):
    vectors = read_glove_text(glove_file, 8, progress=False)
    assert len(vectors) == 34 and vectors.dim == 8 and vectors.vectors.dtype == np.float32
    first = glove_file.read_text().splitlines()[0].split(" ")
    assert vectors.words[0] == first[0]
    np.testing.assert_allclose(vectors.vectors[0], np.array(first[1:], dtype=np.float32))
    assert vectors.lookup()["nasa"] == vectors.words.index("nasa")


def test_tokens_with_spaces_are_parsed_from_the_right(tmp_path):
    path = tmp_path / "840b.txt"
    path.write_text(lines("the 1 2 3", ". . . 4 5 6", "at name@domain.com 7 8 9", "cat 1e-3 -2.5 3"), encoding="utf-8")
    vectors = read_glove_text(path, 3, progress=False)
    assert set(vectors.words) == {"the", ". . .", "at name@domain.com", "cat"}
    np.testing.assert_array_equal(vectors.vectors[vectors.lookup()[". . ."]], [4, 5, 6])
    np.testing.assert_allclose(vectors.vectors[vectors.lookup()["cat"]], [1e-3, -2.5, 3])


def test_malformed_lines_are_skipped_counted_and_warned(tmp_path, caplog):
    good = [f"w{i} {i} {i} {i}" for i in range(10)]
    path = tmp_path / "some-bad.txt"
    path.write_text(lines(*good[:5], "broken 1 2", "also x y z", *good[5:]), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        vectors = read_glove_text(path, 3, progress=False)
    assert vectors.words == [f"w{i}" for i in range(10)]
    assert "2 of 12 lines do not hold a word and 3 numbers" in caplog.text


def test_mostly_malformed_file_is_refused(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text(lines("a 1 2 3", "b 1 2", "c 1", "d 1 2", "e 1 2 3 x y", "f 1 2 3"), encoding="utf-8")
    with pytest.raises(EmbeddingsError, match="most lines are bad"):
        read_glove_text(path, 3, progress=False)


def test_dimension_mismatch_names_the_fix(glove_file):
    with pytest.raises(EmbeddingsError, match=r"holds 8-d vectors but embeddings.dim=50; set embeddings.dim=8"):
        read_glove_text(glove_file, 50, progress=False)


def test_non_utf8_words_do_not_crash(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9 1 2\nok 3 4\n")
    vectors = read_glove_text(path, 2, progress=False)
    assert vectors.words == ["caf\ufffd", "ok"]


def test_write_glove_text_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    original = WordVectors(["the", "of", "naïve"], rng.normal(size=(3, 4)).astype(np.float32), "test")
    path = write_glove_text(original, tmp_path / "out.txt")
    parsed = read_glove_text(path, 4, progress=False)
    assert parsed.words == original.words
    np.testing.assert_allclose(parsed.vectors, original.vectors, atol=1e-5)


# --- files that are not GloVe text are named for what they are, before any parsing ---

GLOVE_LINES = lines(*(f"w{i} {i}.5 -{i} {i}e-3" for i in range(20)))


def zipped(text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # stored: the text is readable inside the zip
        archive.writestr("glove.3d.txt", text)
    return buffer.getvalue()


def word2vec_bin(count: int, dim: int) -> bytes:
    rng = np.random.default_rng(0)
    rows = (f"w{i} ".encode() + rng.normal(size=dim).astype("<f4").tobytes() for i in range(count))
    return f"{count} {dim}\n".encode() + b"".join(rows)


@pytest.mark.parametrize(
    "content, message",
    [
        (gzip.compress(GLOVE_LINES.encode()), r"a gzip-compressed file; decompress it first \(gunzip\)"),
        (zipped(GLOVE_LINES), r"a zip archive; extract the .txt inside .*, or use embeddings=<variant>"),
        (GLOVE_LINES.replace(" ", "\t").encode(), "tab-separated; GloVe text files separate fields with spaces"),
        (word2vec_bin(20, 3), r"binary, not a GloVe text file \(a word2vec .bin\?"),
        (GLOVE_LINES.encode("utf-16"), "UTF-16 text; GloVe text files are UTF-8"),
        (lines(*(f"w{i}" for i in range(20))).encode(), "its lines hold a single field, not a word and 3 numbers"),
        (b"300 3\n" + GLOVE_LINES.encode() + b"broken\n", None),
    ],
    ids=["gzip", "zip", "tab", "word2vec-bin", "utf16", "word-list", "control"],
)
def test_files_that_are_not_glove_text_say_what_they_are(tmp_path, content, message):
    path = tmp_path / "vectors.txt"
    path.write_bytes(content)
    if message is None:  # a text file with a header and one bad line: loads, so the sniffing is not too eager
        assert len(load_glove_text_cached(path, 3, tmp_path / "cache", progress=False)) == 20
        return
    with pytest.raises(EmbeddingsError, match=rf"^{re.escape(str(path))}: {message}") as caught:
        load_glove_text_cached(path, 3, tmp_path / "cache", progress=False)
    assert "embeddings.dim=" not in str(caught.value)
    assert list((tmp_path / "cache" / "vectors").iterdir()) == []


def test_word2vec_header_is_skipped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "w2v.txt"
    path.write_text("20 3\n" + GLOVE_LINES, encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        vectors = load_glove_text_cached(path, 3, tmp_path / "cache", progress=False)
    assert vectors.words == [f"w{i}" for i in range(20)]
    assert "line 1 is a word2vec header (20 3); skipped it" in caplog.text
    assert "do not hold a word" not in caplog.text  # not counted as a malformed line


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e39"])
@pytest.mark.parametrize("word", ["bad", ". . ."])  # ". . .": a token with spaces, parsed from the right
def test_nonfinite_values_are_refused_naming_the_line_and_nothing_is_cached(tmp_path, monkeypatch, value, word):
    monkeypatch.setattr(glove_text, "CHUNK_BYTES", 64)  # several pieces: the line number spans them
    rows = [f"w{i} {i}.5 -{i} {i}e-3" for i in range(40)]
    rows[29] = f"{word} 1 {value} 2"
    path = tmp_path / "nan.txt"
    path.write_text("40 3\n\n\n" + lines(*rows), encoding="utf-8")  # a header and blank lines count too
    cache = tmp_path / "cache"
    with pytest.raises(
        EmbeddingsError,
        match=rf"^{re.escape(str(path))}: line 33 \('{re.escape(word)}'\) holds NaN, inf or a value beyond",
    ):
        load_glove_text_cached(path, 3, cache, progress=False)
    assert list((cache / "vectors").iterdir()) == [], "a cache or temporary folder was left behind"


def test_finite_values_whose_sum_is_beyond_float32s_range_are_kept(tmp_path):
    path = tmp_path / "large.txt"
    path.write_text(lines("big 3e38 3e38 3e38", "small -3e38 -3e38 1", *(f"w{i} {i} 0 1" for i in range(20))))
    vectors = read_glove_text(path, 3, progress=False)
    np.testing.assert_array_equal(vectors.vectors[:2], np.array([[3e38] * 3, [-3e38, -3e38, 1]], np.float32))


def test_lines_of_another_width_that_are_not_utf8_print_no_traceback(tmp_path, monkeypatch):
    unraisable = []  # pyarrow's handler of such lines failed to decode them: "Exception ignored in ..." on stderr
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    path = tmp_path / "mixed.txt"
    path.write_bytes(GLOVE_LINES.encode() + b"caf\xe9 1 2\ncaf\xe9 1 2 3\n")
    vectors = read_glove_text(path, 3, progress=False)
    assert vectors.words[-1] == "caf\ufffd" and len(vectors) == 21
    assert unraisable == []


# --- the fast parser (pieces, background reads, refused pieces split) agrees with each line parsed on its own ---


def reference_parse(content: bytes, dim: int) -> tuple[list[tuple[str, np.ndarray]], int]:
    """Each line on its own, as ``parse_glove_text`` documents it: lines end at \\n, \\r\\n or \\r,
    empty ones are skipped; ``dim + 1`` fields are a word and its vector, other lines give their
    last ``dim`` fields to the vector and the rest to the word. Returns the entries and the number
    of bad lines."""
    entries, bad = [], 0
    for line in re.split(r"\r\n|\r|\n", content.decode("utf-8", "replace")):
        fields = line.split(" ")
        if len(fields) != dim + 1:
            fields = line.rstrip().rsplit(" ", dim)
        try:
            vector = np.array(fields[1:], dtype=np.float32)
        except ValueError:
            vector = None
        if line and (vector is None or len(fields) != dim + 1 or not fields[0]):
            bad += 1
        elif line:
            entries.append((fields[0], vector))
    return entries, bad


def tricky_glove_file(path: Path, dim: int = 3, count: int = 400) -> bytes:
    """A word2vec header, then plain lines mixed with tokens holding spaces, trailing spaces,
    CRLF ends, empty lines, bytes that are not UTF-8, non-ASCII words and malformed lines (too
    short, or a word where a number belongs, which makes the CSV reader refuse the whole piece)."""
    rng = np.random.default_rng(7)
    kinds = [
        b"w%d %s",
        b". . . %d %s",
        b"at name%d@domain.com %s",
        b"a  b%d %s",
        b"trail%d %s ",
        b"crlf%d %s\r",
        b"caf\xe9%d %s",
        "naïve日本%d %s".encode(),
        b"",
        b"short%d 1 2",
        b"bad%d x 1 2",
    ]
    rows = [b"%d %d" % (count, dim)]
    for i, kind in enumerate(rng.choice(len(kinds), size=count, p=[0.6] + [0.04] * 10)):
        values = b" ".join(f"{v:.5g}".encode() for v in rng.normal(0, 0.4, dim))
        template = kinds[kind]
        rows.append(template % ((i, values) if template.count(b"%") == 2 else (i,)) if template else b"")
    content = b"\n".join(rows) + b"\n"
    path.write_bytes(content)
    return content[content.index(b"\n") + 1 :]  # past the header


@pytest.mark.parametrize("parsers", [1, 3])
@pytest.mark.parametrize("chunk_bytes, fallback_bytes", [(None, None), (1000, 100), (64, 10)])
def test_parser_matches_each_line_parsed_on_its_own(
    tmp_path, monkeypatch, caplog, chunk_bytes, fallback_bytes, parsers
):
    monkeypatch.setattr(glove_text, "parser_count", lambda: parsers)
    if chunk_bytes:  # many pieces, each line refused by the reader alone in its sub-piece
        monkeypatch.setattr(glove_text, "CHUNK_BYTES", chunk_bytes)
        monkeypatch.setattr(glove_text, "FALLBACK_BYTES", fallback_bytes)
    path = tmp_path / "tricky.txt"
    expected, bad = reference_parse(tricky_glove_file(path), 3)
    with caplog.at_level(logging.WARNING):
        parsed = read_glove_text(path, 3, progress=False)
    assert sorted(parsed.words) == sorted(word for word, _ in expected)
    rows = parsed.lookup()
    for word, vector in expected:
        np.testing.assert_array_equal(parsed.vectors[rows[word]], vector, err_msg=word)
    assert f"{bad} of {len(expected) + bad} lines do not hold a word and 3 numbers" in caplog.text
    plain = [word for word in parsed.words if re.fullmatch(r"w\d+", word)]
    assert plain == sorted(plain, key=lambda word: int(word[1:]))  # lines the reader parses keep file order


def test_a_refused_piece_is_split_so_few_lines_go_one_by_one(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(glove_text, "FALLBACK_BYTES", 2000)
    rows = [f"w{i} {i}.5 -{i}.25 {i}e-3" for i in range(5000)]
    rows[1234] = "bad x 1 2"  # a word where a number belongs: the reader refuses its whole piece
    path = tmp_path / "one-bad.txt"
    path.write_text(lines(*rows), encoding="utf-8")
    with caplog.at_level(logging.DEBUG, logger="glove_exp.io.glove_text"):
        vectors = read_glove_text(path, 3, progress=False)
    assert len(vectors) == 4999 and "bad" not in vectors.lookup()
    line_by_line = [int(n) for n in re.findall(r"parsing (\d+) bytes line by line", caplog.text)]
    assert line_by_line and sum(line_by_line) <= 2000 < path.stat().st_size // 10


def test_line_chunks_end_at_line_breaks_and_grow_for_long_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(glove_text, "CHUNK_BYTES", 64)
    content = lines("header 2", "a 1 2", "long " + " ".join(["0.125"] * 100), "b 3 4") + "c 5 6"  # no final break
    path = tmp_path / "lines.txt"
    path.write_text(content, encoding="utf-8")
    start = len("header 2\n")
    pieces = [(offset, bytes(piece)) for offset, piece in glove_text._line_chunks(path, start)]
    assert b"".join(piece for _, piece in pieces) == content[start:].encode()
    assert all(piece.endswith(b"\n") for _, piece in pieces[:-1]) and len(pieces) >= 2
    assert [offset for offset, _ in pieces] == list(np.cumsum([start] + [len(p) for _, p in pieces[:-1]]))
    assert any(len(piece) > 64 for _, piece in pieces)  # the long line came whole


def test_progress_bar_counts_the_whole_file(glove_file, capsys):
    read_glove_text(glove_file, 8, progress=True)
    err = capsys.readouterr().err
    assert f"parse {glove_file.name}" in err and "100%" in err
    read_glove_text(glove_file, 8, progress=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("buffers", [2, 3, 5])
def test_a_piece_stays_whole_until_as_many_more_as_there_are_other_buffers_are_read(tmp_path, monkeypatch, buffers):
    monkeypatch.setattr(glove_text, "CHUNK_BYTES", 64)
    path = tmp_path / "many.txt"
    path.write_text(lines(*(f"w{i} {i} {i}.5" for i in range(200))), encoding="utf-8")
    content = path.read_bytes()
    held = []  # (offset, view): what a parser or the reader of parse_glove_text still holds
    for offset, piece in glove_text._line_chunks(path, 0, buffers):
        held = [*held[-(buffers - 1) :], (offset, piece)] if buffers > 1 else [(offset, piece)]
        assert all(bytes(view) == content[at : at + len(view)] for at, view in held)
    assert len(held) == buffers


def test_duplicate_words_are_counted_once_across_pieces(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(glove_text, "CHUNK_BYTES", 64)
    path = tmp_path / "dups.txt"
    path.write_text(lines(*(f"w{i % 150} {i} {i}.5" for i in range(200))), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        vectors = read_glove_text(path, 2, progress=False)
    assert len(vectors) == 200 and vectors.lookup()["w3"] == 3
    assert "50 duplicate words; kept the first vector of each" in caplog.text


@pytest.mark.parametrize("content", [b"20 3", b"20 3\n", b""])
def test_line_chunks_of_nothing_past_the_start(tmp_path, content):
    path = tmp_path / "header-only.txt"
    path.write_bytes(content)
    assert list(glove_text._line_chunks(path, len(content) + 1 - content.endswith(b"\n"))) == []

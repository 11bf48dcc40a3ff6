"""Readers see the old file or the complete new one, never a part; killed writers' temporaries are cleared."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from glove_exp.core.arrays import row_blocks

log = logging.getLogger(__name__)

# .<final name>.<host>.<pid>.<8 hex>.tmp: the host keeps a shared cache safe from other machines' pids
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]*)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")


def temp_path(path: Path) -> Path:
    """A unique name next to ``path`` that records this host and process (:func:`remove_stale_temps`)."""
    return path.with_name(f".{path.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete (and return) the temporaries in ``folder`` of writers on this host that no longer run, as a
    SIGKILL mid-write leaves them; those of live processes (a parallel job) and other hosts stay."""
    try:
        entries = list(folder.iterdir())
    except OSError:  # no folder yet (or not a folder: the caller reports that)
        return []
    stale = []
    for entry in entries:
        match = TEMP_NAME.fullmatch(entry.name)
        if match and match["host"] == _host() and not pid_alive(int(match["pid"])):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            log.info("deleted %s, left behind by process %s that no longer runs", entry, match["pid"])
            stale.append(entry)
    return stale


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())


def pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> Path:
    """``write`` into a temporary file next to ``path``, renamed to ``path`` once complete (removed on error)."""
    tmp = temp_path(path)
    try:
        with open(tmp, "xb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_as(path: Path, array: np.ndarray, dtype: np.dtype, block_bytes: int = 4 << 20) -> Path:
    """``array`` saved as a ``.npy`` file of ``dtype``, converted into the file's mapping ``block_bytes`` of
    ``array`` at a time: no converted copy of the whole array is ever in memory (on a VM, the first touch
    of memory can cost more than the conversion; a logged model's first save took 0.58 s, 0.47 s of it
    the kernel's)."""
    if array.size == 0:  # nothing to map
        np.save(path, array.astype(dtype))
        return path
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=array.shape)
    for block in row_blocks(len(array), array[:1].nbytes, block_bytes):
        out[block] = array[block]
    out.flush()
    del out  # unmapped: the file is complete
    return path


def file_sha256(path: Path) -> str:
    """:func:`sha256_file`, read once per process while the file keeps its size and modification time
    (the jobs of a sweep key their data by it and tag their runs with it)."""
    stat = path.stat()
    return _sha256_of(path.resolve(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256_of(path: Path, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # keys: a changed file is read again
    return sha256_file(path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def spreadsheet_safe(value: object) -> object:
    """A CSV cell a spreadsheet will not run as a formula: text starting ``= + - @`` (or tab / CR)
    gets a leading ``'``; numbers, also negative ones written as text, stay as they are."""
    if not isinstance(value, str) or not value.startswith(("=", "+", "-", "@", "\t", "\r")):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def available_memory() -> int:
    """Bytes the kernel says are available (``MemAvailable``), else the free pages."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")

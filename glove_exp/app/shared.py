"""The work that a sweep's jobs share, done once: a job whose tokens (or features) have the same key as
an earlier job's reuses them. In one process a :class:`SharedWork` holds the latest few of each kind
in memory; jobs in other processes (joblib, Ray, submitit, the next ``glove-exp``) read them from
``<embeddings.cache_dir>/<kind>/<key>/`` (:mod:`glove_exp.io.arrays_cache`). Light to import: the
console script makes one before it knows whether any job will run."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from glove_exp.io.arrays_cache import Entry, get_or_build
from glove_exp.io.files import available_memory

T = TypeVar("T")
MEMORY_ENTRIES = 3  # of each kind: a sweep over seeds and a few poolings finds its features
DISK_BYTES = 2 << 30  # of each kind's folder; the least recently used entries go first


@dataclass(frozen=True)
class Codec(Generic[T]):
    """How a value is stored as arrays on disk, and rebuilt from them."""

    encode: Callable[[T], Entry]
    decode: Callable[[Entry], T]


class SharedWork:
    """Values by kind and key, the ``entries`` most recently used of each kind in memory (all of them
    ``memory_bytes`` at most; default a quarter of the memory available at the first one), and on
    disk unless ``disk_bytes`` is None. Pickled (a launcher ships it to its workers with the task
    function), it is an empty one with the same bounds: memory is per process, the disk is shared."""

    def __init__(
        self, entries: int = MEMORY_ENTRIES, memory_bytes: int | None = None, disk_bytes: int | None = DISK_BYTES
    ):
        self.entries, self.memory_bytes, self.disk_bytes = entries, memory_bytes, disk_bytes
        self._held: OrderedDict[tuple[str, str], tuple[Any, int]] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()  # a threading launcher runs jobs side by side
        self._budget = memory_bytes  # set at the first value: this machine's memory, not the pickler's

    def __reduce__(self) -> tuple[type[SharedWork], tuple[int, int | None, int | None]]:
        return SharedWork, (self.entries, self.memory_bytes, self.disk_bytes)

    def reuse(
        self, kind: str, key: str, build: Callable[[], T], nbytes: Callable[[T], int],
        cache_dir: Path | None = None, codec: Codec[T] | None = None,
    ) -> tuple[T, str]:  # fmt: skip
        """The value of ``(kind, key)`` and where it came from: ``memory``, ``disk`` (``cache_dir /
        kind``, with ``codec``) or ``built`` by ``build()``."""
        with self._lock:
            if (kind, key) in self._held:
                self._held.move_to_end((kind, key))
                return self._held[(kind, key)][0], "memory"
        if cache_dir is not None and codec is not None and self.disk_bytes is not None:
            value, read = get_or_build(cache_dir / kind, key, build, codec.encode, codec.decode, self.disk_bytes)
            source = "disk" if read else "built"
        else:
            value, source = build(), "built"
        self._keep(kind, key, value, nbytes(value))
        return value, source

    def held(self, kind: str) -> list[str]:
        """The keys of ``kind`` in memory, least recently used first."""
        with self._lock:
            return [key for held_kind, key in self._held if held_kind == kind]

    def _keep(self, kind: str, key: str, value: Any, size: int) -> None:
        with self._lock:
            if self._budget is None:
                self._budget = available_memory() // 4
            self._held[(kind, key)] = (value, size)
            self._held.move_to_end((kind, key))
            same_kind = [held for held in self._held if held[0] == kind]
            for old in same_kind[: max(len(same_kind) - self.entries, 0)]:
                del self._held[old]
            while self._held and sum(held_size for _, held_size in self._held.values()) > self._budget:
                self._held.popitem(last=False)  # the newest too, if it alone is larger than the budget

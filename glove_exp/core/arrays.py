"""Host arrays as the device takes them: on a 64-byte boundary (on a CPU, ``jax.device_put`` then
shares the array instead of copying it) and, for an embedding table, with rows rounded up
(:func:`table_rows`)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

ALIGNMENT = 64  # bytes; NumPy's large arrays start 16 bytes past such a boundary


def table_rows(vocab_size: int) -> int:
    """The rows of a vocabulary's table on the device: its size rounded up to a multiple of a sixteenth of
    the next power of two (at least 64). Seeds that draw their own splits have vocabularies some hundred
    words apart; with tables of the same rows, the programs that take them have the same shapes, and
    JAX's compilation cache serves them (compiling ``flatten``'s training anew took 0.9 to 1.2 s)."""
    step = max(64, (1 << max(vocab_size - 1, 0).bit_length()) // 16)
    return -(-vocab_size // step) * step


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``np.empty`` on an :data:`ALIGNMENT` boundary."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    raw = np.empty(size + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + size].view(dtype).reshape(shape)


def zero_padded(x: np.ndarray, rows: int) -> np.ndarray:
    """``x`` with zero rows after its own, ``rows`` in all, aligned: ``x`` itself when it is so already
    (:func:`glove_exp.core.text.embedding_matrix` makes its tables so)."""
    if len(x) == rows and x.flags.c_contiguous and x.ctypes.data % ALIGNMENT == 0:
        return x
    out = aligned_empty((rows, *x.shape[1:]), x.dtype)
    out[: len(x)] = x
    out[len(x) :] = 0
    return out


def row_blocks(rows: int, row_bytes: int, block_bytes: int) -> Iterator[slice]:
    """Consecutive slices of ``rows`` rows, each about ``block_bytes`` of rows of ``row_bytes`` (one row at least)."""
    step = max(1, block_bytes // max(1, row_bytes))
    return (slice(start, min(start + step, rows)) for start in range(0, rows, step))

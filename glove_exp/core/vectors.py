"""The vector table type: words and their pre-trained vectors, row by row."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class WordVectors:
    """``vectors[i]`` ([V, D] float32, possibly memory-mapped) is the vector of ``words[i]``."""

    words: list[str]
    vectors: np.ndarray
    source: str
    _lookup: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.words)

    def lookup(self) -> dict[str, int]:
        """word -> row (the first row where a word occurs twice), built once."""
        if not self._lookup:
            self._lookup.update(zip(reversed(self.words), range(len(self.words) - 1, -1, -1)))
        return self._lookup

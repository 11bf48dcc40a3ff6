"""Text -> token ids: the tutorial's Keras tokeniser rules, a vocabulary of words that have a
vector, and post-padded / post-truncated id matrices.

Index 0 is padding and index 1 stands for every word without a vector; both map to zero rows in
the embedding matrix. Vocabulary words start at index 2, most frequent first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import TYPE_CHECKING

import numpy as np

from glove_exp.errors import EmbeddingsError

if TYPE_CHECKING:
    from glove_exp.embeddings import WordVectors

PAD, OOV = 0, 1
NUM_SPECIAL = 2
# keras.preprocessing.text.Tokenizer's default `filters` (the apostrophe is not among them).
KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
_TO_SPACE = str.maketrans({c: " " for c in KERAS_FILTERS})


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Split like Keras' ``text_to_word_sequence``: filters become spaces, split on spaces."""
    if lowercase:
        text = text.lower()
    return [token for token in text.translate(_TO_SPACE).split(" ") if token]


def tokenize_all(texts: Iterable[str], lowercase: bool = True) -> list[list[str]]:
    return [tokenize(text, lowercase) for text in texts]


@dataclass(frozen=True)
class Vocabulary:
    """Words with a vector; ``words[i]`` has token id ``i + NUM_SPECIAL``."""

    words: list[str]
    vector_rows: np.ndarray  # [V] int64: row of each word in the WordVectors it was built from
    counts: np.ndarray  # [V + NUM_SPECIAL] int64: occurrences in the counted split (0 for specials)

    def __len__(self) -> int:
        return len(self.words) + NUM_SPECIAL

    def index(self) -> dict[str, int]:
        return {word: i + NUM_SPECIAL for i, word in enumerate(self.words)}


def build_vocabulary(
    token_lists: Sequence[list[str]], vectors: WordVectors, count_lists: Sequence[list[str]] | None = None
) -> Vocabulary:
    """Vocabulary of every word in ``token_lists`` that has a vector, most frequent first.

    ``count_lists`` (default ``token_lists``) gives the frequencies stored in ``counts``: pass the
    training split only so that frequency weights depend on training data alone.
    """
    frequencies = Counter(chain.from_iterable(token_lists))
    lookup = vectors.lookup()
    # Counter keeps first-seen order, so the stable sort breaks frequency ties by first occurrence.
    words = [w for w, _ in sorted(frequencies.items(), key=lambda item: -item[1]) if w in lookup]
    if not words:
        raise EmbeddingsError(
            f"no word of the data has a vector in {vectors.source} (OOV rate 100%); "
            "check the language of the vectors and embeddings.lowercase"
        )
    train_counts = frequencies if count_lists is None else Counter(chain.from_iterable(count_lists))
    counts = np.zeros(len(words) + NUM_SPECIAL, dtype=np.int64)
    counts[NUM_SPECIAL:] = [train_counts.get(w, 0) for w in words]
    rows = np.fromiter((lookup[w] for w in words), dtype=np.int64, count=len(words))
    return Vocabulary(words=words, vector_rows=rows, counts=counts)


def encode(
    token_lists: Sequence[list[str]], index: dict[str, int], max_tokens: int, drop_oov: bool = False
) -> np.ndarray:
    """Token lists -> ``[N, max_tokens]`` int32 ids, post-padded with 0 and post-truncated.

    Unknown words become ``OOV`` (a zero vector that still takes a position, as in the tutorial)
    or, with ``drop_oov``, are removed before truncation.
    """
    lengths = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
    flat = np.fromiter(
        map(index.get, chain.from_iterable(token_lists), repeat(OOV)), dtype=np.int32, count=int(lengths.sum())
    )
    if drop_oov:
        kept = flat != OOV
        lengths = np.bincount(np.repeat(np.arange(len(lengths)), lengths)[kept], minlength=len(lengths))
        flat = flat[kept]
    starts = np.cumsum(lengths) - lengths  # where each document begins in ``flat``
    positions = np.arange(max_tokens)
    filled = positions[None, :] < np.minimum(lengths, max_tokens)[:, None]  # [N, max_tokens]
    out = np.zeros((len(lengths), max_tokens), dtype=np.int32)
    out[filled] = flat[(starts[:, None] + positions[None, :])[filled]]
    return out


def oov_rate(token_lists: Sequence[list[str]], index: dict[str, int]) -> float:
    """Fraction of tokens (not types) without a vector."""
    total = sum(map(len, token_lists))
    missing = total - sum(map(index.__contains__, chain.from_iterable(token_lists)))
    return missing / total if total else 0.0


def embedding_matrix(vocab: Vocabulary, vectors: WordVectors) -> np.ndarray:
    """``[len(vocab), dim]`` float32 rows for the vocabulary; padding and OOV rows are zero."""
    matrix = np.zeros((len(vocab), vectors.dim), dtype=np.float32)
    matrix[NUM_SPECIAL:] = vectors.vectors[vocab.vector_rows]
    return matrix


def sif_weights(counts: np.ndarray, a: float) -> np.ndarray:
    """Smooth inverse frequency ``a / (a + p(w))`` per token id, ``[V]`` float32 (0 for padding)."""
    p = counts / max(int(counts.sum()), 1)
    weights = (a / (a + p)).astype(np.float32)
    weights[PAD] = 0.0
    return weights


@dataclass(frozen=True)
class Encoded:
    """Every split as token ids over one vocabulary, with the embedding rows of that vocabulary."""

    ids: dict[str, np.ndarray | None]  # split -> [N, max_tokens] int32 (None: no such split)
    words: list[str]  # token id = position + NUM_SPECIAL
    counts: np.ndarray  # [V] int64 occurrences in the train split
    table: np.ndarray  # [V, D] float32, padding and OOV rows zero
    oov_rate: float  # share of train tokens without a vector

    def sizes(self) -> dict[str, int | float]:
        """Facts about the encoded data that are constant for a run."""
        present = {split: ids for split, ids in self.ids.items() if ids is not None}
        return {
            "vocab_size": len(self.words) + NUM_SPECIAL,
            "oov_rate": round(self.oov_rate, 6),
            "embedding_dim": int(self.table.shape[1]),
            **{f"num_{split}": len(ids) for split, ids in present.items()},
            **{f"empty_{split}": int((ids == PAD).all(axis=1).sum()) for split, ids in present.items()},
        }


def encode_splits(
    texts: dict[str, list[str] | None], vectors: WordVectors, lowercase: bool, max_tokens: int, drop_oov: bool
) -> Encoded:
    """Tokenise every split, build the vocabulary (frequencies from ``train``) and encode."""
    tokens = {split: tokenize_all(docs, lowercase) for split, docs in texts.items() if docs is not None}
    vocab = build_vocabulary([t for lists in tokens.values() for t in lists], vectors, count_lists=tokens["train"])
    index = vocab.index()
    ids = {split: encode(tokens[split], index, max_tokens, drop_oov) if split in tokens else None for split in texts}
    return Encoded(ids, vocab.words, vocab.counts, embedding_matrix(vocab, vectors), oov_rate(tokens["train"], index))

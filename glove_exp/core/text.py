"""Token ids: 0 is padding and 1 every word outside the vocabulary (both zero rows in the embedding
matrix); the vocabulary starts at 2: the training words that have a vector, most frequent first, then
the vectors' most frequent words (for new text) in the vectors' order."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from glove_exp.core.arrays import aligned_empty, row_blocks, table_rows
from glove_exp.core.errors import DataError, EmbeddingsError
from glove_exp.core.vectors import WordVectors

PAD, OOV = 0, 1
NUM_SPECIAL = 2
# keras.preprocessing.text.Tokenizer's default `filters` (the apostrophe is not among them).
KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
_TO_SPACE = str.maketrans({c: " " for c in KERAS_FILTERS})
# Every filter and the space are ASCII, and UTF-8 never uses ASCII bytes inside a multi-byte
# character, so splitting the UTF-8 bytes at these bytes splits the text at these characters.
_IN_TOKEN = np.ones(256, dtype=bool)
_IN_TOKEN[[ord(c) for c in KERAS_FILTERS + " "]] = False
_CHUNK_DOCS = 4096
_ENCODE_DOCS = 65536
_TABLE_BLOCK_BYTES = 4 << 20  # of vector rows that :func:`embedding_matrix` gathers at a time


def tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Keras' ``text_to_word_sequence``: filters become spaces, then only the space splits (other
    whitespace such as ``\\r`` or ``\\xa0`` stays inside tokens)."""
    if lowercase:
        text = text.lower()
    return [token for token in text.translate(_TO_SPACE).split(" ") if token]


@dataclass(frozen=True)
class Tokens:
    """Tokenised documents: token ``j`` is ``types[codes[j]]``, document ``i`` is the next
    ``lengths[i]`` tokens."""

    types: list[str]  # [W] distinct tokens in order of first occurrence
    codes: np.ndarray  # [T] int32: each token's position in ``types``
    lengths: np.ndarray  # [N] int64: tokens per document

    def __len__(self) -> int:
        return len(self.lengths)

    def split(self, sizes: Sequence[int]) -> list[Tokens]:
        """Consecutive parts of ``sizes`` documents each, sharing ``types``."""
        doc_bounds = np.cumsum([0, *sizes])
        token_bounds = np.concatenate([[0], np.cumsum(self.lengths)])[doc_bounds]
        return [
            Tokens(self.types, self.codes[token_bounds[i] : token_bounds[i + 1]], self.lengths[a:b])
            for i, (a, b) in enumerate(zip(doc_bounds[:-1], doc_bounds[1:]))
        ]

    def take(self, docs: np.ndarray) -> Tokens:
        """Documents ``docs`` (``[n]`` positions), in that order, sharing ``types``."""
        lengths = self.lengths[docs]
        starts = (np.cumsum(self.lengths) - self.lengths)[docs]
        # token j of the result is token (j - where its document starts in the result) + where it starts here
        offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        return Tokens(self.types, self.codes[offsets + np.arange(len(offsets))], lengths)

    def lists(self) -> list[list[str]]:
        """One list of token strings per document, as :func:`tokenize` gives them."""
        words = [self.types[code] for code in self.codes.tolist()]
        ends = np.cumsum(self.lengths).tolist()
        return [words[end - length : end] for end, length in zip(ends, self.lengths.tolist())]

    def type_ids(self, index: dict[str, int]) -> np.ndarray:
        """``[W]`` int32 id of every distinct token, ``OOV`` for words not in ``index``."""
        return np.fromiter((index.get(word, OOV) for word in self.types), dtype=np.int32, count=len(self.types))


def tokenize_all(texts: Iterable[str], lowercase: bool = True) -> Tokens:
    """:func:`tokenize` for many documents at once, on their UTF-8 bytes in numpy and Arrow."""
    docs = texts if isinstance(texts, list) else list(texts)
    # A chunk at a time (lowercased, split, numbered by its own words), so the byte-sized
    # temporaries stay small (in cache, no fresh pages) and only the int32 codes outlive a chunk;
    # unifying the chunks' dictionaries numbers the words in order of first occurrence.
    chunks, lengths = [], []
    for start in range(0, len(docs), _CHUNK_DOCS):
        chunk = docs[start : start + _CHUNK_DOCS]
        words, counts = _split_bytes([text.lower() for text in chunk] if lowercase else chunk)
        chunks.append(words.dictionary_encode())
        lengths.append(counts)
    encoded = pa.chunked_array(chunks, pa.dictionary(pa.int32(), pa.large_binary())).unify_dictionaries()
    del chunks  # their own numbering: one int32 per token that the unified codes replace
    dictionary = encoded.chunk(0).dictionary.to_pylist() if encoded.num_chunks else []
    codes = [chunk.indices.to_numpy() for chunk in encoded.chunks]
    tokens = Tokens(
        types=[word.decode("utf-8", "surrogatepass") for word in dictionary],
        codes=np.concatenate(codes) if codes else np.zeros(0, dtype=np.int32),
        lengths=np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64),
    )
    del encoded, codes
    # Arrow's allocator keeps the freed chunks' pages for reuse: give them back (~0.3 GB per 650k documents).
    pa.default_memory_pool().release_unused()
    return tokens


def _split_bytes(docs: list[str]) -> tuple[pa.LargeBinaryArray, np.ndarray]:
    """Tokens of ``docs`` back to back as UTF-8 bytes ``[T]`` and tokens per document ``[N]``."""
    # A filter character before, between and after the documents keeps every token in its document.
    data = np.frombuffer(("\n" + "\n".join(docs) + "\n").encode("utf-8", "surrogatepass"), dtype=np.uint8)  # [B]
    inside = _IN_TOKEN[data]  # [B] bytes that belong to a token
    edges = np.flatnonzero(inside[1:] != inside[:-1]) + 1  # token starts and ends, alternating
    starts, ends = edges[0::2], edges[1::2]  # [T] each
    token_offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(ends - starts, out=token_offsets[1:])
    words = pa.Array.from_buffers(
        pa.large_binary(), len(starts), [None, pa.py_buffer(token_offsets), pa.py_buffer(data[inside])]
    )
    sizes = np.fromiter(map(_utf8_size, docs), dtype=np.int64, count=len(docs))  # [N] bytes per document
    doc_starts = np.cumsum(sizes + 1) - sizes  # [N] where each document begins in ``data``
    return words, np.diff(np.searchsorted(starts, doc_starts), append=len(starts))


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


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


def build_vocabulary(train: Tokens, vectors: WordVectors, serving_words: int = 0, lowercase: bool = True) -> Vocabulary:
    """The words of ``train`` that have a vector, most frequent first (ties: the first to occur in
    ``train`` first), then those of the first ``serving_words`` rows of ``vectors`` (GloVe files are
    sorted by frequency) not among them, with count 0."""
    rows = vector_rows(train.types, vectors)
    counts = np.bincount(train.codes, minlength=len(train.types))
    first = np.full(len(train.types), len(train.codes), np.int64)  # where each type first occurs in ``train``
    np.minimum.at(first, train.codes, np.arange(len(train.codes)))
    order = np.lexsort((first, -counts))
    order = order[(rows[order] >= 0) & (counts[order] > 0)]  # ``types`` may hold other splits' words too
    if not len(train.codes):  # not the vectors' fault: say so before the OOV rate does
        raise DataError("the training texts hold no words: every one is empty, spaces or punctuation")
    if not len(order):
        raise EmbeddingsError(
            f"no word of the training data has a vector in {vectors.source} (OOV rate 100%); "
            "check the language of the vectors and embeddings.lowercase"
        )
    words = [train.types[i] for i in order.tolist()]
    extra = frequent_words(vectors, serving_words, lowercase, known=set(words))
    return Vocabulary(
        words=words + [vectors.words[row] for row in extra],
        vector_rows=np.concatenate([rows[order], np.array(extra, dtype=np.int64)]),
        counts=np.concatenate([np.zeros(NUM_SPECIAL, np.int64), counts[order], np.zeros(len(extra), np.int64)]),
    )


def vector_rows(words: Sequence[str], vectors: WordVectors) -> np.ndarray:
    """``[len(words)]`` int64: the first row of ``vectors`` holding each of the distinct ``words``, -1
    for none. One Arrow hash join, its table made of ``words`` and probed by every row's word: a table
    of the 400,000 GloVe 6B words took 3 to 6 times as long to make, and a Python dict over 2.2M
    words ten times longer still."""
    position = pc.index_in(pa.array(vectors.words, pa.string()), value_set=pa.array(words, pa.string()))
    position = position.fill_null(-1).to_numpy()  # [N] the index in ``words`` of each row's word, or -1
    held = np.flatnonzero(position >= 0)
    found, first = np.unique(position[held], return_index=True)  # ``held`` ascends: each word's first row
    rows = np.full(len(words), -1, np.int64)
    rows[found] = held[first]
    return rows


def frequent_words(vectors: WordVectors, count: int, lowercase: bool, known: set[str]) -> list[int]:
    """Rows among the first ``count`` whose words are not ``known`` and that :func:`tokenize` can give
    (no filter character or space; lower case if ``lowercase``), each word's first row once."""
    seen, rows = set(known), []
    for row, word in enumerate(vectors.words[:count]):
        if word not in seen and tokenize(word, lowercase) == [word]:
            seen.add(word)
            rows.append(row)
    return rows


def encode(tokens: Tokens, index: dict[str, int], max_tokens: int, drop_oov: bool = False) -> np.ndarray:
    """``[N, max_tokens]`` int32 ids, post-padded and post-truncated; unknown words are ``OOV`` (a zero
    vector that still takes a position, as in the tutorial) or, with ``drop_oov``, dropped first."""
    type_ids, lengths = tokens.type_ids(index), tokens.lengths
    bounds = np.concatenate([[0], np.cumsum(lengths)])  # [N + 1] where each document begins in ``codes``
    out = np.empty((len(lengths), max_tokens), dtype=np.int32)
    for start in range(0, len(lengths), _ENCODE_DOCS):  # no per-token array of the whole corpus
        stop = min(start + _ENCODE_DOCS, len(lengths))
        flat = type_ids[tokens.codes[bounds[start] : bounds[stop]]]
        out[start:stop] = _padded(flat, lengths[start:stop], max_tokens, drop_oov)
    return out


def _padded(flat: np.ndarray, lengths: np.ndarray, max_tokens: int, drop_oov: bool) -> np.ndarray:
    """``[T]`` ids of ``n`` documents of ``lengths`` tokens -> ``[n, max_tokens]``."""
    if drop_oov:
        kept = flat != OOV
        lengths = np.bincount(np.repeat(np.arange(len(lengths)), lengths)[kept], minlength=len(lengths))
        flat = flat[kept]
    starts = np.cumsum(lengths) - lengths  # [n] where each document begins in ``flat``
    padded = np.concatenate([flat, np.zeros(max_tokens, dtype=np.int32)])
    # Row i of the windows is flat[i : i + max_tokens]: gather each document's first tokens,
    # then blank the positions past its end.
    out = np.lib.stride_tricks.sliding_window_view(padded, max_tokens)[starts]  # [n, max_tokens]
    np.copyto(out, PAD, where=np.arange(max_tokens) >= lengths[:, None])
    return out


def oov_rate(tokens: Tokens, index: dict[str, int]) -> float:
    """Fraction of tokens (not types) without a vector."""
    counts = np.bincount(tokens.codes, minlength=len(tokens.types))  # [W] occurrences of each distinct token
    total = int(counts.sum())
    return int(counts[tokens.type_ids(index) == OOV].sum()) / total if total else 0.0


def gather_rows(array: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` for a ``[N, D]`` array in either memory order: np.take (5x faster than indexing),
    along each column of a column-major one (the packaged 6B vectors), whose rows are D scattered
    values: 337,000 of its 400,000 rows took 0.03 s so against 0.06 to 0.4 s row by row."""
    if array.flags.f_contiguous and not array.flags.c_contiguous:
        return np.take(array.T, rows, axis=1).T
    return np.take(array, rows, axis=0)


def embedding_matrix(vocab: Vocabulary, vectors: WordVectors) -> np.ndarray:
    """``[table_rows(len(vocab)), dim]`` float32 as the device takes it (aligned, rows rounded up), padding,
    OOV and the rows past the vocabulary zero, rounded to float16 (the logged model's precision) so that
    the run trains and evaluates on exactly the vectors it serves with. Filled :data:`_TABLE_BLOCK_BYTES`
    of rows at a time, the table is its only large allocation (whole-table gathered, absolute and float16
    copies made the peak 2.5 times the table), and every model takes it as it is (each made a padded copy)."""
    size = len(vocab)
    matrix = aligned_empty((table_rows(size), vectors.dim), np.float32)
    matrix[:NUM_SPECIAL] = 0
    matrix[size:] = 0
    for block in row_blocks(len(vocab.vector_rows), 4 * vectors.dim, _TABLE_BLOCK_BYTES):
        rows = gather_rows(vectors.vectors, vocab.vector_rows[block])  # [block, D]
        if np.abs(rows).max(initial=0) > np.finfo(np.float16).max:
            raise EmbeddingsError(f"{vectors.source} holds values beyond float16's range (±65504)")
        matrix[NUM_SPECIAL + block.start : NUM_SPECIAL + block.stop] = rows.astype(np.float16)
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
    table: np.ndarray  # [table_rows(V), D] float32 (embedding_matrix), padding, OOV and the rows past V zero
    oov_rate: float  # share of train tokens without a vector
    vector_rows: np.ndarray  # [V - NUM_SPECIAL] int64: row of each word in the WordVectors (``table`` from them)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        """Word -> token id, built once: the jobs that share these tokens share it."""
        return {word: i + NUM_SPECIAL for i, word in enumerate(self.words)}

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
    texts: dict[str, list[str] | None],
    vectors: WordVectors,
    lowercase: bool,
    max_tokens: int,
    drop_oov: bool,
    serving_words: int = 0,
) -> Encoded:
    """Every split encoded over the vocabulary of ``train``: validation and test words that training
    never saw are OOV unless among the ``serving_words`` most frequent words, as for new text."""
    present = {split: docs for split, docs in texts.items() if docs is not None}
    parts = dict(zip(present, tokenize_parts(list(present.values()), lowercase)))
    tokens = {split: parts.get(split) for split in texts}
    return encode_tokens(tokens, vectors, max_tokens, drop_oov, serving_words, lowercase)


def tokenize_parts(parts: Sequence[list[str]], lowercase: bool) -> list[Tokens]:
    """:func:`tokenize_all` of the documents of every part, as one Tokens per part sharing ``types``."""
    corpus = tokenize_all([doc for docs in parts for doc in docs], lowercase)
    return corpus.split([len(docs) for docs in parts])


def encode_tokens(
    tokens: dict[str, Tokens | None], vectors: WordVectors, max_tokens: int, drop_oov: bool, serving_words: int,
    lowercase: bool,
) -> Encoded:  # fmt: skip
    """:func:`encode_splits` of splits already tokenised (``lowercase`` as they were)."""
    train = tokens["train"]
    if train is None:
        raise ValueError("the train split is needed to build the vocabulary")
    vocab = build_vocabulary(train, vectors, serving_words, lowercase)
    index = vocab.index()
    ids = {split: None if part is None else encode(part, index, max_tokens, drop_oov) for split, part in tokens.items()}
    return Encoded(
        ids, vocab.words, vocab.counts, embedding_matrix(vocab, vectors), oov_rate(train, index), vocab.vector_rows
    )

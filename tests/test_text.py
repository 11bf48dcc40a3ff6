import random
import tracemalloc
from collections import Counter
from itertools import chain

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glove_exp.core import text as text_module
from glove_exp.core.arrays import ALIGNMENT, table_rows
from glove_exp.core.errors import DataError, EmbeddingsError
from glove_exp.core.text import (
    KERAS_FILTERS,
    NUM_SPECIAL,
    OOV,
    PAD,
    build_vocabulary,
    embedding_matrix,
    encode,
    encode_splits,
    oov_rate,
    sif_weights,
    tokenize,
    tokenize_all,
)
from glove_exp.core.vectors import WordVectors


def keras_text_to_word_sequence(text, filters=KERAS_FILTERS, lower=True, split=" "):
    """Keras 2.x ``text_to_word_sequence``, transcribed, as the parity reference."""
    if lower:
        text = text.lower()
    translate_map = {c: split for c in filters}
    text = text.translate(str.maketrans(translate_map))
    return [i for i in text.split(split) if i]


TRICKY = [
    "Wall St. Bears Claw Back Into the Black (Reuters)",
    "Reuters - Short-sellers, Wall Street's dwindling\\band of ultra-cynics, are seeing green again.",
    "U.S. #36;10 million\tprize\nfor   'rocketeers' -- A&amp;B <b>bold</b> ~50% [note] {x}|y",
    "Ünïcödé café naïve — “quotes” don't",
    "",
    "   ",
    KERAS_FILTERS,
    KERAS_FILTERS + "word" + KERAS_FILTERS,
    "carriage\rreturn vertical\x0btab form\x0cfeed no\xa0break ideo\u3000space line\u2028sep",
    "İstanbul KELVIN\u212a ΟΔΟΣ ΟΔΟΣ. ΣΑΣ Straße ǅ ﬁ",  # multi-code-point and final-sigma lower-casing
    "emoji 👍🏽 zwj 👩‍👩‍👧 combining e\u0301 rtl עברית عربي 中文,日本語",
    "lone \ud800 surrogate",
    "nul\x00inside \x7f del",
    "'quoted' 'twas rock'n'roll ''",
    "tail",  # runs into the next document unless document ends split tokens
    "head",
    " ".join(f"Long{i}-doc" for i in range(5000)),
    "\n\n\t\t",
]


@pytest.mark.parametrize("text", TRICKY)
def test_tokenize_matches_keras_rules(text):
    assert tokenize(text) == keras_text_to_word_sequence(text)


@pytest.mark.parametrize("lowercase", [True, False])
def test_tokenize_all_matches_keras_rules_document_by_document(lowercase):
    expected = [keras_text_to_word_sequence(text, lower=lowercase) for text in TRICKY]
    tokens = tokenize_all(TRICKY, lowercase)
    assert tokens.lists() == expected
    assert tokens.lengths.tolist() == list(map(len, expected))
    assert tokens.types == list(dict.fromkeys(chain.from_iterable(expected)))  # first occurrence order
    assert len(tokenize_all(["", ""])) == 2 and tokenize_all([]).lists() == []


def test_tokenize_all_across_chunks_one_without_tokens():
    short = [text for text in TRICKY if len(text) < 1000]
    # Numbered, so that no repeating pattern hides misplaced chunks.
    numbered = [f"{text}{i}" for i, text in enumerate(short * (text_module._CHUNK_DOCS // len(short) + 1))]
    docs = numbered + ["..."] * 2 * text_module._CHUNK_DOCS + short  # the third chunk has no token
    assert tokenize_all(docs).lists() == [keras_text_to_word_sequence(doc) for doc in docs]


def test_tokenize_keeps_apostrophes_and_case_option():
    assert tokenize("Don't STOP-now!") == ["don't", "stop", "now"]
    assert tokenize("Don't STOP-now!", lowercase=False) == ["Don't", "STOP", "now"]
    assert tokenize("\u0130") == ["i\u0307"] and tokenize("ΟΔΟΣ") == ["οδος"]


# Mostly separators and characters whose handling differs between tokenisers, plus anything.
TEXT = st.text(
    st.one_of(
        st.sampled_from(KERAS_FILTERS + " \r\x0b\x0c\xa0\u3000\u2028'aZİΣß"),
        st.characters(codec="utf-8"),
        st.characters(),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TEXT, max_size=8), st.booleans())
def test_tokenize_all_equals_reference_for_any_text(texts, lowercase):
    expected = [keras_text_to_word_sequence(text, lower=lowercase) for text in texts]
    assert tokenize_all(texts, lowercase).lists() == expected
    assert [tokenize(text, lowercase) for text in texts] == expected


def reference_encode_splits(texts, vectors, lowercase, max_tokens, drop_oov, serving_words=0):
    """Per-document composition: a Counter vocabulary of the train split, then the first
    ``serving_words`` vector rows that are whole lower-case (or any-case) tokens, dict lookups,
    Python padding."""
    tokens = {s: [keras_text_to_word_sequence(t, lower=lowercase) for t in docs] for s, docs in texts.items() if docs}
    train_counts = Counter(chain.from_iterable(tokens["train"]))
    lookup = vectors.lookup()
    words = [w for w, _ in sorted(train_counts.items(), key=lambda item: -item[1]) if w in lookup]
    for w in vectors.words[:serving_words]:
        if w not in words and keras_text_to_word_sequence(w, lower=lowercase) == [w]:
            words.append(w)
    index = {w: i + NUM_SPECIAL for i, w in enumerate(words)}

    def ids(docs):
        out = np.zeros((len(docs), max_tokens), dtype=np.int32)
        for row, doc in enumerate(docs):
            seq = [index.get(w, OOV) for w in doc]
            seq = [i for i in seq if i != OOV] if drop_oov else seq
            out[row, : len(seq[:max_tokens])] = seq[:max_tokens]
        return out

    train_tokens = list(chain.from_iterable(tokens["train"]))
    oov = sum(w not in index for w in train_tokens) / len(train_tokens)
    counts = [0] * NUM_SPECIAL + [train_counts[w] for w in words]
    return {s: ids(tokens[s]) if s in tokens else None for s in texts}, words, counts, oov


POOL = ["the", "The", "cat", "dog", "Fish", "İzmir", "café", "don't", "zebra", "x\xa0y", "a\rb", "ΣΑΣ", "gnu"]
GLUE = [" ", "  ", ", ", ".", "-", "\n", "\t", "!", " (", ") "]


def random_texts(rng, count):
    return ["".join(rng.choice(POOL) + rng.choice(GLUE) for _ in range(rng.randint(0, 12))) for _ in range(count)]


@pytest.mark.parametrize("lowercase", [True, False])
@pytest.mark.parametrize("drop_oov", [False, True])
@pytest.mark.parametrize("serving_words", [0, 5, 100])
def test_encode_splits_matches_reference_composition(lowercase, drop_oov, serving_words):
    rng = random.Random(0)
    texts = {"train": random_texts(rng, 60), "val": None, "test": random_texts(rng, 25)}
    # Ties, words without vectors, both spellings of a lower-cased word, multi-code-point lower
    # case; rows that no text gives as a token (filter characters, a space, upper case).
    wv = vectors(
        ["the", ",", "The", "cat", "dog", "fish", "a b", "Fish", "izmir", "i\u0307zmir", "café", "don't", "σας",
         "ΣΑΣ", "gnu"]
    )  # fmt: skip
    ids, words, counts, oov = reference_encode_splits(texts, wv, lowercase, 7, drop_oov, serving_words)
    encoded = encode_splits(texts, wv, lowercase, max_tokens=7, drop_oov=drop_oov, serving_words=serving_words)
    assert encoded.words == words
    assert encoded.counts.tolist() == counts
    assert encoded.oov_rate == pytest.approx(oov, abs=1e-15)
    assert encoded.ids["val"] is None
    for split in ("train", "test"):
        np.testing.assert_array_equal(encoded.ids[split], ids[split])


def vectors(words, dim=3):
    return WordVectors(
        words=words, vectors=np.arange(len(words) * dim, dtype=np.float32).reshape(len(words), dim) + 1, source="test"
    )


def test_vocabulary_holds_training_words_by_frequency_and_skips_words_without_vectors():
    wv = vectors(["cat", "dog", "fish"])
    train, test = tokenize_all(["dog cat zebra dog", "fish dog cat", "bird"]).split([2, 1])
    vocab = build_vocabulary(train, wv)
    assert vocab.words == ["dog", "cat", "fish"]
    assert vocab.index() == {"dog": 2, "cat": 3, "fish": 4}
    assert vocab.counts.tolist() == [0, 0, 3, 2, 1]
    matrix = embedding_matrix(vocab, wv)
    assert matrix.shape == (table_rows(5), 3) == (64, 3) and matrix.dtype == np.float32  # as the device takes it
    assert matrix.ctypes.data % ALIGNMENT == 0 and matrix.flags.c_contiguous
    assert (matrix[PAD] == 0).all() and (matrix[OOV] == 0).all() and not matrix[5:].any()
    np.testing.assert_array_equal(matrix[2], wv.vectors[1])  # dog
    np.testing.assert_array_equal(matrix[4], wv.vectors[2])  # fish


def test_frequency_ties_go_to_the_word_the_training_documents_hold_first_whatever_the_types_order():
    wv = vectors(["ant", "bee", "cat"])
    # "cat" and "bee" occur first in documents that training does not hold: the types' order is not training's
    tokens = tokenize_all(["cat bee", "ant bee cat", "bee cat ant"])
    train = tokens.take(np.array([1, 2]))
    assert train.types[:3] == ["cat", "bee", "ant"]
    assert build_vocabulary(train, wv).words == ["ant", "bee", "cat"]  # 2 each: in the order training meets them
    assert build_vocabulary(tokenize_all(["ant bee cat", "bee cat ant"]), wv).words == ["ant", "bee", "cat"]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.sampled_from(["a b", "", "c", "b b a", "d!e"]), min_size=1, max_size=12),
    st.data(),
)
def test_taking_documents_equals_tokenising_them(docs, data):
    rows = data.draw(st.lists(st.integers(0, len(docs) - 1), max_size=2 * len(docs)))
    taken = tokenize_all(docs).take(np.array(rows, np.int64))
    assert taken.lists() == [tokenize(docs[row]) for row in rows]
    assert taken.lengths.dtype == np.int64 and taken.codes.dtype == np.int32


def test_words_only_validation_or_test_text_holds_are_oov_unless_among_the_frequent_vector_rows():
    # "ant" and "bee" have vectors but occur only in the test split; "ant" is among the first 3 rows.
    wv = vectors(["the", ",", "ant", "cat", "dog", "bee"])
    texts = {"train": ["the cat", "the dog"], "val": ["the bee"], "test": ["ant bee cat"]}
    without = encode_splits(texts, wv, lowercase=True, max_tokens=3, drop_oov=False, serving_words=0)
    assert without.words == ["the", "cat", "dog"]
    assert without.ids["test"].tolist() == [[OOV, OOV, 3]] and without.ids["val"].tolist() == [[2, OOV, PAD]]
    added = encode_splits(texts, wv, lowercase=True, max_tokens=3, drop_oov=False, serving_words=3)
    assert added.words == ["the", "cat", "dog", "ant"]  # "," is never a token; "the" is in already
    assert added.ids["test"].tolist() == [[5, OOV, 3]]
    assert added.counts.tolist() == [0, 0, 2, 1, 1, 0]  # training frequencies only
    np.testing.assert_array_equal(added.table[5], wv.vectors[2])
    everything = encode_splits(texts, wv, lowercase=True, max_tokens=3, drop_oov=False, serving_words=10**9)
    assert everything.words == ["the", "cat", "dog", "ant", "bee"]


def test_frequent_words_of_another_case_are_added_only_when_text_keeps_its_case():
    wv = vectors(["The", "the", "NASA"])
    train = tokenize_all(["dog"])
    with pytest.raises(EmbeddingsError):  # no training word has a vector, whatever is added
        build_vocabulary(train, wv, serving_words=3)
    train = tokenize_all(["the"], lowercase=False)
    assert build_vocabulary(train, wv, serving_words=3, lowercase=False).words == ["the", "The", "NASA"]
    assert build_vocabulary(train, wv, serving_words=3, lowercase=True).words == ["the"]


def test_training_texts_without_a_word_say_so_not_that_the_vectors_miss_them():
    with pytest.raises(DataError, match="the training texts hold no words: every one is empty, spaces or punctuation"):
        build_vocabulary(tokenize_all(["", "  ", "?!"]), vectors(["the"]))


def test_the_table_holds_float16_values_and_refuses_what_float16_cannot_hold():
    wv = WordVectors(words=["a", "b"], vectors=np.array([[0.1, 1 / 3], [7.0, -2.5]], np.float32), source="test")
    vocab = build_vocabulary(tokenize_all(["a b"]), wv)
    matrix = embedding_matrix(vocab, wv)
    np.testing.assert_array_equal(matrix[NUM_SPECIAL : len(vocab)], wv.vectors.astype(np.float16).astype(np.float32))
    huge = WordVectors(words=["a"], vectors=np.array([[1e6]], np.float32), source="huge.txt")
    with pytest.raises(EmbeddingsError, match="huge.txt holds values beyond float16"):
        embedding_matrix(build_vocabulary(tokenize_all(["a"]), huge), huge)


@pytest.mark.parametrize("order", ["C", "F"])  # F: as the packaged 6B vectors are stored
def test_the_table_is_the_same_from_vectors_in_either_memory_order(order):
    words = [f"w{i}" for i in range(40)]
    values = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    wv = WordVectors(words=words, vectors=np.asarray(values, order=order), source="test")
    vocab = build_vocabulary(tokenize_all(["w31 w4 w4 w17 w0 w39 w4 w17"]), wv)
    matrix = embedding_matrix(vocab, wv)
    assert matrix.flags.c_contiguous and vocab.words == ["w4", "w17", "w31", "w0", "w39"]
    rows = [int(word[1:]) for word in vocab.words]
    np.testing.assert_array_equal(matrix[NUM_SPECIAL : len(vocab)], values[rows].astype(np.float16).astype(np.float32))


def test_the_table_is_its_only_large_allocation_and_blocks_of_rows_make_the_same_table(monkeypatch):
    words = [f"w{i}" for i in range(3000)]
    values = np.random.default_rng(1).normal(size=(3000, 64)).astype(np.float32)
    wv = WordVectors(words=words, vectors=np.asarray(values, order="F"), source="test")
    vocab = build_vocabulary(tokenize_all([" ".join(reversed(words))]), wv, serving_words=3000)
    monkeypatch.setattr(text_module, "_TABLE_BLOCK_BYTES", 256 * 64 * 4)  # a tenth of the table
    tracemalloc.start()
    try:
        matrix = embedding_matrix(vocab, wv)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * matrix.nbytes  # whole-table copies made it 2.5 times
    monkeypatch.setattr(text_module, "_TABLE_BLOCK_BYTES", 7 * 64 * 4)  # blocks of 7 rows, the last one short
    np.testing.assert_array_equal(embedding_matrix(vocab, wv), matrix)
    np.testing.assert_array_equal(
        matrix[NUM_SPECIAL : len(vocab)], values[vocab.vector_rows].astype(np.float16).astype(np.float32)
    )
    assert matrix.shape == (table_rows(3002), 64) and not matrix[:NUM_SPECIAL].any() and not matrix[3002:].any()


def test_vocabulary_without_coverage_fails_with_oov_rate():
    with pytest.raises(EmbeddingsError, match="OOV rate 100%"):
        build_vocabulary(tokenize_all(["Hund Katze"]), vectors(["dog"]))


def test_encode_post_pads_post_truncates_and_maps_oov():
    index = {"a": 2, "b": 3}
    ids = encode(tokenize_all(["a x b", "b b a a b", ""]), index, max_tokens=4)
    assert ids.dtype == np.int32
    assert ids.tolist() == [[2, OOV, 3, PAD], [3, 3, 2, 2], [PAD] * 4]
    dropped = encode(tokenize_all(["x a y b a b"]), index, max_tokens=3, drop_oov=True)
    assert dropped.tolist() == [[2, 3, 2]]


@pytest.mark.parametrize("drop_oov", [False, True])
def test_encode_chunk_by_chunk_equals_one_chunk(monkeypatch, drop_oov):
    rng = np.random.default_rng(0)
    words = ["a", "b", "c", "x", "y"]
    docs = [" ".join(rng.choice(words, size=rng.integers(0, 9))) for _ in range(50)]
    tokens, index = tokenize_all(docs), {"a": 2, "b": 3, "c": 4}
    whole = encode(tokens, index, max_tokens=5, drop_oov=drop_oov)
    monkeypatch.setattr(text_module, "_ENCODE_DOCS", 7)  # 50 documents in 8 chunks, the last one short
    assert np.array_equal(encode(tokens, index, max_tokens=5, drop_oov=drop_oov), whole)
    reference = [[index.get(w, OOV) for w in doc.split() if not drop_oov or w in index][:5] for doc in docs]
    assert whole.tolist() == [ids + [PAD] * (5 - len(ids)) for ids in reference]


def test_oov_rate_counts_tokens():
    assert oov_rate(tokenize_all(["a x", "a a"]), {"a": 2}) == pytest.approx(0.25)
    assert oov_rate(tokenize_all(["", "..."]), {"a": 2}) == 0.0


def test_sif_weights():
    weights = sif_weights(np.array([0, 0, 3, 1]), a=0.25)
    assert weights[PAD] == 0
    np.testing.assert_allclose(weights[2:], [0.25 / (0.25 + 0.75), 0.25 / (0.25 + 0.25)])


def test_vector_rows_are_each_words_first_row_and_minus_one_without():
    vectors = WordVectors(["a", "b", "a", "c d", "é"], np.zeros((5, 2), np.float32), "test")
    assert text_module.vector_rows(["a", "c d", "zz", "é", "b"], vectors).tolist() == [0, 3, -1, 4, 1]

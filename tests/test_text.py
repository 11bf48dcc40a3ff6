import numpy as np
import pytest

from glove_exp.embeddings import WordVectors
from glove_exp.errors import EmbeddingsError
from glove_exp.text import (
    KERAS_FILTERS,
    OOV,
    PAD,
    build_vocabulary,
    embedding_matrix,
    encode,
    oov_rate,
    sif_weights,
    tokenize,
)


def keras_text_to_word_sequence(text, filters=KERAS_FILTERS, lower=True, split=" "):
    """Keras 2.x ``text_to_word_sequence``, transcribed, as the parity reference."""
    if lower:
        text = text.lower()
    translate_map = {c: split for c in filters}
    text = text.translate(str.maketrans(translate_map))
    return [i for i in text.split(split) if i]


@pytest.mark.parametrize(
    "text",
    [
        "Wall St. Bears Claw Back Into the Black (Reuters)",
        "Reuters - Short-sellers, Wall Street's dwindling\\band of ultra-cynics, are seeing green again.",
        "U.S. #36;10 million\tprize\nfor   'rocketeers' -- A&amp;B <b>bold</b> ~50% [note] {x}|y",
        "Ünïcödé café naïve — “quotes” don't",
        "",
        "   ",
    ],
)
def test_tokenize_matches_keras_rules(text):
    assert tokenize(text) == keras_text_to_word_sequence(text)


def test_tokenize_keeps_apostrophes_and_case_option():
    assert tokenize("Don't STOP-now!") == ["don't", "stop", "now"]
    assert tokenize("Don't STOP-now!", lowercase=False) == ["Don't", "STOP", "now"]


def vectors(words, dim=3):
    return WordVectors(
        words=words, vectors=np.arange(len(words) * dim, dtype=np.float32).reshape(len(words), dim) + 1, source="test"
    )


def test_vocabulary_orders_by_frequency_and_skips_words_without_vectors():
    wv = vectors(["cat", "dog", "fish"])
    docs = [["dog", "cat", "zebra"], ["dog", "bird"], ["fish", "dog", "cat"]]
    vocab = build_vocabulary(docs, wv, count_lists=docs[:1])
    assert vocab.words == ["dog", "cat", "fish"]
    assert vocab.index() == {"dog": 2, "cat": 3, "fish": 4}
    assert vocab.counts.tolist() == [0, 0, 1, 1, 0]  # counted in the first document only
    matrix = embedding_matrix(vocab, wv)
    assert matrix.shape == (5, 3)
    assert (matrix[PAD] == 0).all() and (matrix[OOV] == 0).all()
    np.testing.assert_array_equal(matrix[2], wv.vectors[1])  # dog
    np.testing.assert_array_equal(matrix[4], wv.vectors[2])  # fish


def test_vocabulary_without_coverage_fails_with_oov_rate():
    with pytest.raises(EmbeddingsError, match="OOV rate 100%"):
        build_vocabulary([["Hund", "Katze"]], vectors(["dog"]))


def test_encode_post_pads_post_truncates_and_maps_oov():
    index = {"a": 2, "b": 3}
    ids = encode([["a", "x", "b"], ["b", "b", "a", "a", "b"], []], index, max_tokens=4)
    assert ids.dtype == np.int32
    assert ids.tolist() == [[2, OOV, 3, PAD], [3, 3, 2, 2], [PAD] * 4]
    dropped = encode([["x", "a", "y", "b", "a", "b"]], index, max_tokens=3, drop_oov=True)
    assert dropped.tolist() == [[2, 3, 2]]


def test_oov_rate_counts_tokens():
    assert oov_rate([["a", "x"], ["a", "a"]], {"a": 2}) == pytest.approx(0.25)


def test_sif_weights():
    weights = sif_weights(np.array([0, 0, 3, 1]), a=0.25)
    assert weights[PAD] == 0
    np.testing.assert_allclose(weights[2:], [0.25 / (0.25 + 0.75), 0.25 / (0.25 + 0.25)])

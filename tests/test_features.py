"""Precomputed features at scale: a batch at a time into one array, 16-bit storage, streamed
standardisation statistics, and the memory estimate that goes with them (tiny random data)."""

import haiku as hk
import jax
import numpy as np
import pytest

from glove_exp.core.features import (
    FeatureDtype,
    compute_features,
    feature_moments,
    lookup_batch_size,
    make_inputs,
    memory_needs,
)
from glove_exp.core.fit import fit
from glove_exp.core.models import Model, ModelSpec, make_constants, model_from_spec
from glove_exp.core.train import make_optimizer
from tests.conftest import ADAM, FROZEN_MODEL, hyper

V, D, T, N = 50, 8, 10, 203  # N is no multiple of any batch size used here
MODEL = {**FROZEN_MODEL, "hidden_sizes": [16], "activation": "relu"}
FAST_ADAM = {**ADAM, "lr": 1e-2}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(V, D)).astype(np.float32)
    table[:2] = 0.0
    tokens = rng.integers(2, V, size=(N, T)).astype(np.int32)
    tokens[::3, 6:] = 0  # some documents are padded
    labels = (table[tokens].sum(1)[:, 0] > 0).astype(np.int32)
    return table, tokens, labels


def recording(model: Model, shapes: list[tuple[int, ...]]) -> Model:
    """``model`` whose feature function notes the shape of every token batch it is traced with."""

    def apply(params, rng, tokens, consts):
        shapes.append(tokens.shape)
        return model.features.apply(params, rng, tokens, consts)

    return model._replace(features=hk.Transformed(model.features.init, apply))


def mean_features(table: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Masked mean pooling in NumPy, the whole corpus at once."""
    mask = (tokens != 0)[..., None]
    return (table[tokens] * mask).sum(1) / np.maximum(mask.sum(1), 1)


@pytest.mark.parametrize("batch_size", [16, 64, 4096])
def test_features_are_computed_a_batch_at_a_time_and_equal_the_whole_corpus_at_once(data, batch_size):
    table, tokens, _ = data
    shapes = []
    model = recording(model_from_spec(ModelSpec(2, pooling="mean", **MODEL)), shapes)
    features = compute_features(model, tokens, make_constants(table, None, D), batch_size)
    assert features.shape == (N, D) and features.dtype == np.float32
    np.testing.assert_allclose(features, mean_features(table, tokens), rtol=1e-5, atol=1e-6)
    # the function only ever sees token batches of at most batch_size rows: never [N, T, D] vectors
    assert shapes and all(shape[0] <= min(batch_size, 256) and shape[1:] == (T,) for shape in shapes)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_features_can_be_stored_as_16_bit_floats(data, dtype):
    table, tokens, _ = data
    model = model_from_spec(ModelSpec(2, pooling="sum", **MODEL))
    consts = make_constants(table, None, D)
    wide = compute_features(model, tokens, consts, 64)
    narrow = compute_features(model, tokens, consts, 64, FeatureDtype(dtype).numpy)
    assert narrow.dtype == FeatureDtype(dtype).numpy and narrow.nbytes * 2 == wide.nbytes
    precision = {"float16": 2**-11, "bfloat16": 2**-8}[dtype]  # half a unit in the last place
    np.testing.assert_allclose(narrow.astype(np.float32), wide, rtol=precision, atol=1e-6)


def test_streamed_moments_match_numpy_on_the_whole_features(data):
    table, tokens, _ = data
    model = model_from_spec(ModelSpec(2, pooling="mean_max", **MODEL))
    consts = make_constants(table, None, 2 * D)
    features = compute_features(model, tokens, consts, 4096).astype(np.float64)
    mean, std = feature_moments(model, tokens, consts, 16)
    np.testing.assert_allclose(mean, features.mean(0), rtol=1e-5, atol=1e-6)  # float32 features, batched apart
    np.testing.assert_allclose(std, features.std(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_16_bit_features_train_and_predict_like_32_bit_ones(data, dtype):
    table, tokens, labels = data
    model = model_from_spec(ModelSpec(2, pooling="mean", **{**MODEL, "standardize": True}))
    splits = {"train": tokens[:150], "val": tokens[150:], "test": tokens[150:]}
    inputs = make_inputs(
        model, splits, make_constants(table, None, D), standardize=True, precompute=True, batch_size=32, dtype=dtype
    )
    assert inputs.train.dtype == FeatureDtype(dtype).numpy and inputs.train.shape == (150, D)
    np.testing.assert_allclose(inputs.train.astype(np.float32).mean(0), 0.0, atol=2e-3)  # standardised
    result = fit(
        model.head, make_optimizer(**FAST_ADAM, steps_per_epoch=5, epochs=3), (inputs.train, labels[:150]),
        (inputs.val, labels[150:]), inputs.consts, jax.random.PRNGKey(0), hyper(FAST_ADAM, 0.0), epochs=3, batch_size=32,
        eval_batch_size=64, shuffle=True, early_stopping_patience=2, progress=False,
    )  # fmt: skip
    assert len(result.history) == 3 and all(np.isfinite(m.train_loss) for m in result.history)
    # the epochs reuse (donate) the parameter buffers: the returned ones and the constants stay readable
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(result.params))
    assert np.isfinite(np.asarray(inputs.consts.table)).all()


def test_a_lookup_batch_keeps_the_looked_up_vectors_small_on_a_cpu():
    if jax.default_backend() != "cpu":
        pytest.skip("an accelerator takes eval_batch_size rows")
    assert lookup_batch_size(50, 300, 4096) == 128  # 128 x 50 x 300 float32 = 7.3 MiB
    assert lookup_batch_size(50, 50, 4096) == 512
    assert lookup_batch_size(50, 50, 100) == 100
    assert lookup_batch_size(100_000, 300, 4096) == 16


def test_the_memory_estimate_counts_features_at_their_stored_width():
    kwargs = {
        "num_docs": 3_600_000, "text_chars": 3_600_000 * 240, "max_tokens": 50, "dim": 300, "feature_dim": 300,
        "layer_sizes": [128, 2], "batch_size": 1024, "eval_batch_size": 4096, "lime_samples": 3000, "precompute": True,
    }  # fmt: skip
    no_text = {**kwargs, "text_chars": 0}  # the text pipeline's temporaries are gone before the features come
    wide, narrow = memory_needs(**no_text, feature_bytes=4), memory_needs(**no_text, feature_bytes=2)
    assert sum(wide.values()) - sum(narrow.values()) == 3_600_000 * 300 * 2
    narrow = memory_needs(**kwargs, feature_bytes=2)
    # amazon_polarity-sized data with 300-d vectors fits in 12 GB beside its texts: nothing [N, T, D] is counted
    assert sum(narrow.values()) < 8 * 2**30
    flatten = memory_needs(**{**kwargs, "feature_dim": 50 * 300, "precompute": False}, feature_bytes=2)
    assert sum(flatten.values()) < 8 * 2**30


def test_features_are_shared_with_the_device_on_a_cpu(data):
    if jax.default_backend() != "cpu":
        pytest.skip("an accelerator has its own memory")
    table, tokens, _ = data
    features = compute_features(
        model_from_spec(ModelSpec(2, pooling="mean", **MODEL)), tokens, make_constants(table, None, D), 64
    )
    on_device = jax.device_put(features)
    features[0, 0] = 123.0  # training reads the very same memory: no second copy of the features
    assert float(on_device[0, 0]) == 123.0

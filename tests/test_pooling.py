import jax.numpy as jnp
import numpy as np
import pytest

from glove_exp.core.pooling import Pooling, output_dim, pool

# One document of 3 tokens (+1 padding) and one empty document, D=2.
X = np.array(
    [
        [[1.0, -2.0], [3.0, 0.0], [-1.0, 4.0], [0.0, 0.0]],
        [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
    ],
    dtype=np.float32,
)
MASK = np.array([[1, 1, 1, 0], [0, 0, 0, 0]], dtype=np.float32)
TOKENS = X[0, :3]


def run(method, mask=MASK, **kw):
    return np.asarray(pool(jnp.asarray(X), jnp.asarray(mask), Pooling(method), **kw))


@pytest.mark.parametrize(
    "method, expected",
    [
        ("mean", TOKENS.mean(0)),
        ("sum", TOKENS.sum(0)),
        ("max", TOKENS.max(0)),
        ("min", TOKENS.min(0)),
        ("std", TOKENS.std(0)),
        ("mean_max", np.concatenate([TOKENS.mean(0), TOKENS.max(0)])),
    ],
)
def test_masked_pooling_ignores_padding_and_empty_docs_give_zeros(method, expected):
    out = run(method)
    np.testing.assert_allclose(out[0], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[1], 0.0, atol=1e-5)


@pytest.mark.parametrize(
    "method, expected",
    [("mean", X[0].mean(0)), ("max", X[0].max(0)), ("min", X[0].min(0)), ("std", X[0].std(0))],
)
def test_unmasked_pooling_counts_padding_like_the_tutorial(method, expected):
    np.testing.assert_allclose(run(method, mask=np.ones_like(MASK))[0], expected, rtol=1e-5, atol=1e-5)


def test_flatten_keeps_positions():
    out = run("flatten")
    assert out.shape == (2, 8)
    np.testing.assert_array_equal(out[0], X[0].reshape(-1))
    assert (
        output_dim(Pooling.flatten, 4, 2) == 8
        and output_dim(Pooling.mean_max, 4, 2) == 4
        and output_dim(Pooling.hier, 4, 2) == 2
    )


def test_hier_averages_windows_then_takes_max():
    # windows of 2 over the 3 tokens: [1,-2]+[3,0] -> [2,-1]; [3,0]+[-1,4] -> [1,2]; max -> [2,2]
    np.testing.assert_allclose(run("hier", hier_window=2)[0], [2.0, 2.0])
    # a window wider than the document averages the whole document
    np.testing.assert_allclose(run("hier", hier_window=4)[0], TOKENS.mean(0), rtol=1e-6)
    np.testing.assert_allclose(run("hier", hier_window=2)[1], 0.0)
    # window 1 is max pooling
    np.testing.assert_allclose(run("hier", hier_window=1)[0], TOKENS.max(0))

"""Parameter-free features, pooled once per run a batch at a time (never ``[N, T, D]`` at once)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from glove_exp.core.choices import FeatureDtype
from glove_exp.core.models import Constants, Model
from glove_exp.core.train import ApplyFn, make_batches, make_predict


@dataclass(frozen=True)
class Inputs:
    """What training and validation consume: ``[N, F]`` pooled features when ``precomputed``, else ``[N, T]``
    token ids; ``val`` is None without a validation split. The test split is scored as the model serves."""

    train: np.ndarray
    val: np.ndarray | None
    consts: Constants
    precomputed: bool


@functools.lru_cache(maxsize=32)
def _features_apply(model: Model) -> ApplyFn:
    """The same function for the same model, so that its jitted batches trace once per process."""
    return lambda params, state, rng, x, c, is_training: (model.features.apply(params, rng, x, c), state)


def lookup_batch_size(max_tokens: int, dim: int, eval_batch_size: int) -> int:
    """Rows per inference batch of a program that looks vectors up from token ids (the features, and a
    model's predictions). On a CPU the looked-up vectors ``[B, T, D]`` of a batch should stay in cache
    (about 8 MB): 4096 rows of 50 x 300-d vectors (245 MB) pool 3x slower than 128 rows, and 4096 rows
    of 50 x 50-d ones predict 1.1x (flatten) to 2.3x (mean) slower than 512. An accelerator takes
    ``eval_batch_size`` rows."""
    if jax.default_backend() != "cpu":
        return eval_batch_size
    rows = (8 << 20) // (max_tokens * dim * 4)
    return max(16, min(eval_batch_size, 1 << max(rows.bit_length() - 1, 0)))


def compute_features(
    model: Model, tokens: np.ndarray, consts: Constants, batch_size: int, dtype: np.dtype = np.float32
) -> np.ndarray:
    """``[N, T]`` token ids -> ``[N, F]`` parameter-free features as ``dtype``."""
    size = lookup_batch_size(tokens.shape[1], consts.table.shape[1], batch_size)
    return make_predict(_features_apply(model), size, dtype)({}, {}, tokens, consts)


def feature_moments(
    model: Model, tokens: np.ndarray, consts: Constants, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[F]`` mean and population standard deviation of the features of ``tokens``, merged batch
    by batch (Chan et al.'s pairwise update, float64) without keeping the features."""
    count, mean, squares = 0, 0.0, 0.0
    size = lookup_batch_size(tokens.shape[1], consts.table.shape[1], batch_size)
    for batch in make_batches(_features_apply(model), size)({}, {}, tokens, consts):
        values = batch.astype(np.float64)
        batch_mean = values.mean(axis=0)
        delta, total = batch_mean - mean, count + len(values)
        mean = mean + delta * len(values) / total
        squares = squares + ((values - batch_mean) ** 2).sum(axis=0) + delta**2 * count * len(values) / total
        count = total
    return np.asarray(mean), np.sqrt(np.asarray(squares) / max(count, 1))


def make_inputs(
    model: Model, tokens: dict[str, np.ndarray | None], consts: Constants, *, standardize: bool, precompute: bool,
    batch_size: int, dtype: FeatureDtype = FeatureDtype.float32,
) -> Inputs:  # fmt: skip
    """``tokens``: split -> ``[N, T]`` ids or None; precomputed features are stored as ``dtype``."""
    if standardize:
        mean, std = feature_moments(model, tokens["train"], consts, batch_size)
        scale = jnp.asarray(np.where(std > 1e-6, std, 1.0), jnp.float32)  # constant features map to 0, not 0 / 0
        consts = consts._replace(feature_mean=jnp.asarray(mean, jnp.float32), feature_scale=scale)
    if precompute:
        tokens = {
            split: None if ids is None else compute_features(model, ids, consts, batch_size, FeatureDtype(dtype).numpy)
            for split, ids in tokens.items()
            if split != "test"
        }
    return Inputs(tokens["train"], tokens["val"], consts, precompute)


def memory_needs(
    *, num_docs: int, text_chars: int, max_tokens: int, dim: int, feature_dim: int, feature_bytes: int,
    layer_sizes: list[int], batch_size: int, eval_batch_size: int, lime_samples: int, precompute: bool,
) -> dict[str, int]:  # fmt: skip
    """Rough peak bytes that a run adds to the loaded texts and vectors, by the setting that drives each.
    The features array (``feature_bytes`` per value) is shared with the device on a CPU."""
    sizes = [feature_dim, *layer_sizes]
    params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    width = feature_dim if precompute else max_tokens * dim  # what one training example carries
    looked_up = max(batch_size, eval_batch_size) * max_tokens * dim * 4
    return {
        # the text pipeline's arrays per character of text (the lowercased copy, the UTF-8 bytes of
        # each token, their offsets and ids: about 7 bytes per character at peak), freed before the
        # features are computed
        "dataset.max_train_samples": max(text_chars * 7, num_docs * feature_dim * feature_bytes if precompute else 0),
        # token ids of every document and LIME sample, and one looked-up batch (and its pooling) [B, T, D]
        "trainer.max_tokens": (num_docs + lime_samples) * max_tokens * 4 + looked_up * 2,
        # parameters, gradients and Adam's two moments; the layers' activations, both passes
        "model.hidden_sizes": params * 4 * 4 + batch_size * sum(sizes) * 4 * 2,
        "trainer.batch_size": batch_size * width * 4 * 2,  # one batch of inputs and its gradient
        "explain.num_samples": lime_samples * 1024,  # LIME's perturbed texts and its sample matrices
    }  # fmt: skip

"""Poolings of ``x`` ``[B, T, D]`` (zero vectors at padding) under ``mask`` ``[B, T]`` float (1 for a
token, 0 for padding). With ``mask`` all ones, padding counts as tokens, as in the seed tutorial."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from glove_exp.core.choices import Pooling


def _count(mask: jax.Array) -> jax.Array:
    """``[B, 1]`` number of tokens, at least 1 so empty documents pool to zeros."""
    return jnp.maximum(mask.sum(axis=1, keepdims=True), 1.0)


def flatten(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``[B, T * D]``: the vectors side by side (padding is already zero)."""
    return x.reshape(x.shape[0], -1)


def mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    return (x * mask[..., None]).sum(axis=1) / _count(mask)


def sum_(x: jax.Array, mask: jax.Array) -> jax.Array:
    return (x * mask[..., None]).sum(axis=1)


def _masked_extreme(x: jax.Array, mask: jax.Array, reduce: Callable, fill: float) -> jax.Array:
    """Max/min over tokens; documents without tokens give zeros rather than +-inf."""
    valid = mask[..., None] > 0
    value = reduce(jnp.where(valid, x, fill), axis=1)
    return jnp.where(valid.any(axis=1), value, 0.0)


def max_(x: jax.Array, mask: jax.Array) -> jax.Array:
    return _masked_extreme(x, mask, jnp.max, -jnp.inf)


def min_(x: jax.Array, mask: jax.Array) -> jax.Array:
    return _masked_extreme(x, mask, jnp.min, jnp.inf)


def std(x: jax.Array, mask: jax.Array) -> jax.Array:
    """Per-dimension population standard deviation over tokens."""
    mu = mean(x, mask)
    var = ((x - mu[:, None, :]) ** 2 * mask[..., None]).sum(axis=1) / _count(mask)
    return jnp.sqrt(var + 1e-12)


def mean_max(x: jax.Array, mask: jax.Array) -> jax.Array:
    """``[B, 2 * D]``: SWEM-concat."""
    return jnp.concatenate([mean(x, mask), max_(x, mask)], axis=-1)


def hier(x: jax.Array, mask: jax.Array, window: int) -> jax.Array:
    """SWEM-hier: max over the averages of the ``window``-grams whose positions are all tokens; a
    document shorter than the window is averaged whole (its first window)."""
    width = min(window, x.shape[1])
    weighted = x * mask[..., None]
    csum = jnp.pad(jnp.cumsum(weighted, axis=1), ((0, 0), (1, 0), (0, 0)))
    ccount = jnp.pad(jnp.cumsum(mask, axis=1), ((0, 0), (1, 0)))
    sums = csum[:, width:] - csum[:, :-width]  # [B, T - width + 1, D]
    counts = ccount[:, width:] - ccount[:, :-width]  # [B, T - width + 1]
    valid = (counts >= width) | (jnp.arange(counts.shape[1]) == 0)[None, :]
    averages = sums / jnp.maximum(counts, 1.0)[..., None]
    return _masked_extreme(averages, valid.astype(x.dtype), jnp.max, -jnp.inf)


_POOLINGS: dict[Pooling, Callable[[jax.Array, jax.Array], jax.Array]] = {
    Pooling.flatten: flatten,
    Pooling.mean: mean,
    Pooling.sum: sum_,
    Pooling.max: max_,
    Pooling.min: min_,
    Pooling.std: std,
    Pooling.mean_max: mean_max,
}


def pool(x: jax.Array, mask: jax.Array, method: Pooling, hier_window: int = 3) -> jax.Array:
    """Dispatch on ``method``; returns ``[B, F]`` with F given by :func:`output_dim`."""
    if method == Pooling.hier:
        return hier(x, mask, hier_window)
    return _POOLINGS[Pooling(method)](x, mask)


def output_dim(method: Pooling, max_tokens: int, dim: int) -> int:
    return {Pooling.flatten: max_tokens * dim, Pooling.mean_max: 2 * dim}.get(Pooling(method), dim)

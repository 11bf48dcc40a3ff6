"""Token ids -> what the trained function reads: the frozen constants and, for parameter-free
poolings, the pooled features, computed once per run (pure functions of arrays)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from glove_exp.models import Constants, Model
from glove_exp.train import make_predict


@dataclass(frozen=True)
class Inputs:
    """Per split, the arrays the trained function consumes: ``[N, F]`` pooled features when
    ``precomputed``, else ``[N, T]`` token ids; ``val`` is None without a validation split."""

    train: np.ndarray
    val: np.ndarray | None
    test: np.ndarray
    consts: Constants
    precomputed: bool


def compute_features(model: Model, tokens: np.ndarray, consts: Constants, batch_size: int) -> np.ndarray:
    """``[N, T]`` token ids -> ``[N, F]`` parameter-free features, jitted in fixed-size batches."""
    apply = lambda params, rng, x, c, is_training: model.features.apply(params, rng, x, c)  # noqa: E731
    return make_predict(apply, batch_size)({}, tokens, consts)


def standardized(consts: Constants, train_features: np.ndarray) -> Constants:
    """``consts`` with the ``[F]`` mean and standard deviation of the train features (a constant
    feature keeps scale 1, so it maps to 0 instead of dividing by 0)."""
    scale = train_features.std(axis=0)
    return consts._replace(
        feature_mean=jnp.asarray(train_features.mean(axis=0)),
        feature_scale=jnp.asarray(np.where(scale > 1e-6, scale, 1.0)),
    )


def make_inputs(
    model: Model,
    tokens: dict[str, np.ndarray | None],
    consts: Constants,
    *,
    standardize: bool,
    precompute: bool,
    batch_size: int,
) -> Inputs:
    """The inputs of training and evaluation from ``tokens`` (split -> ``[N, T]`` ids or None)."""
    if standardize:
        consts = standardized(consts, compute_features(model, tokens["train"], consts, batch_size))
    if precompute:
        tokens = {
            split: None if ids is None else compute_features(model, ids, consts, batch_size)
            for split, ids in tokens.items()
        }
    return Inputs(tokens["train"], tokens["val"], tokens["test"], consts, precompute)


def memory_needs(
    *,
    num_docs: int,
    max_tokens: int,
    dim: int,
    feature_dim: int,
    layer_sizes: list[int],
    batch_size: int,
    lime_samples: int,
    precompute: bool,
) -> dict[str, int]:
    """Rough peak bytes of a run's largest arrays, by the setting that drives each (float32, int32)."""
    sizes = [feature_dim, *layer_sizes]
    params = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    width = feature_dim if precompute else max_tokens * dim  # what one training example carries
    return {
        # token ids of every document and LIME sample, pooled features, one looked-up batch [B, T, D]
        "trainer.max_tokens": (num_docs + lime_samples) * max_tokens * 4
        + (num_docs * feature_dim * 4 if precompute else 0)
        + min(batch_size, num_docs) * max_tokens * dim * 4,
        # parameters, gradients and Adam's two moments; the layers' activations, both passes
        "model.hidden_sizes": params * 4 * 4 + batch_size * sum(sizes) * 4 * 2,
        "trainer.batch_size": batch_size * width * 4 * 2,  # one batch of inputs and its gradient
        "explain.num_samples": lime_samples * 1024,  # LIME's perturbed texts and its sample matrices
    }  # fmt: skip


def available_memory() -> int:
    """Bytes the kernel says are available (``MemAvailable``), else the free pages."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")

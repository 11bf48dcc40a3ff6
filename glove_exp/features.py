"""Token ids -> what the trained function reads: the frozen constants and, for parameter-free
poolings, the pooled features, computed once per run (pure functions of arrays)."""

from __future__ import annotations

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

"""Haiku models: word vectors -> pooling -> dense head.

The frozen embedding table is not a parameter: it travels in :class:`Constants`, an explicit
input of every apply function, so the optimizer never sees it. With
``embeddings.trainable=true`` it becomes the parameter ``embeddings`` (initialised from GloVe).

Two transforms share the head's parameter names: ``head`` maps pooled features ``[B, F]`` to
logits and ``forward`` maps token ids ``[B, T]`` to logits, so a head trained on precomputed
features serves raw token ids unchanged.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from glove_exp.config import Activation, Init, ModelConfig, Pooling, Weighting
from glove_exp.pooling import output_dim, pool
from glove_exp.text import PAD

ACTIVATIONS: dict[Activation, Callable[[jnp.ndarray], jnp.ndarray]] = {
    Activation.none: lambda x: x,
    Activation.relu: jax.nn.relu,
    Activation.tanh: jnp.tanh,
    Activation.gelu: jax.nn.gelu,
}

INITIALISERS: dict[Init, hk.initializers.Initializer | None] = {
    Init.haiku: None,
    Init.glorot_uniform: hk.initializers.VarianceScaling(1.0, "fan_avg", "uniform"),
    Init.glorot_normal: hk.initializers.VarianceScaling(1.0, "fan_avg", "truncated_normal"),
    Init.he_uniform: hk.initializers.VarianceScaling(2.0, "fan_in", "uniform"),
    Init.he_normal: hk.initializers.VarianceScaling(2.0, "fan_in", "truncated_normal"),
    Init.lecun_normal: hk.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal"),
}


class Constants(NamedTuple):
    """Arrays the model reads but never trains (a pytree, passed into jit as arguments)."""

    table: jnp.ndarray  # [V, D] embedding rows; padding and OOV rows are zero
    token_weights: jnp.ndarray  # [V] per-word weight before pooling (ones, or SIF)
    feature_mean: jnp.ndarray  # [F] subtracted from pooled features (zeros unless standardised)
    feature_scale: jnp.ndarray  # [F] pooled features are divided by it (ones unless standardised)


def make_constants(table: np.ndarray, token_weights: np.ndarray | None, feature_dim: int) -> Constants:
    """Constants with identity weights/standardisation where none are given."""
    weights = np.ones(table.shape[0], np.float32) if token_weights is None else token_weights
    return Constants(
        table=jnp.asarray(table),
        token_weights=jnp.asarray(weights),
        feature_mean=jnp.zeros(feature_dim, jnp.float32),
        feature_scale=jnp.ones(feature_dim, jnp.float32),
    )


class MLP(hk.Module):
    """Dense layers on the last axis: ``[..., F] -> [..., sizes[-1]]``, activation after each,
    dropout (training only) after each when ``dropout > 0``."""

    def __init__(self, sizes: list[int], activation: Activation, dropout: float, init: Init, name: str):
        super().__init__(name=name)
        self.sizes, self.activation, self.dropout, self.init = list(sizes), activation, dropout, init

    def __call__(self, x: jnp.ndarray, is_training: bool) -> jnp.ndarray:
        for i, size in enumerate(self.sizes):
            x = ACTIVATIONS[self.activation](hk.Linear(size, w_init=INITIALISERS[self.init], name=f"dense_{i}")(x))
            if is_training and self.dropout > 0:
                x = hk.dropout(hk.next_rng_key(), self.dropout, x)
        return x


class DenseHead(hk.Module):
    """``[B, F]`` features -> ``[B, num_classes]`` logits: the hidden MLP, then a linear layer."""

    def __init__(self, cfg: ModelConfig, num_classes: int, name: str = "head"):
        super().__init__(name=name)
        self.cfg, self.num_classes = cfg, num_classes

    def __call__(self, features: jnp.ndarray, is_training: bool) -> jnp.ndarray:
        cfg = self.cfg
        x = MLP(cfg.hidden_sizes, cfg.activation, cfg.dropout, cfg.init, name="hidden")(features, is_training)
        return hk.Linear(self.num_classes, w_init=INITIALISERS[cfg.init], name="logits")(x)


def featurize(tokens: jnp.ndarray, consts: Constants, cfg: ModelConfig, trainable: bool, is_training: bool) -> jnp.ndarray:
    """``[B, T]`` token ids -> ``[B, F]`` pooled (and standardised) features.

    Parameter-free unless the embeddings are trainable or ``token_hidden_sizes`` adds per-token
    dense layers before pooling.
    """
    table = consts.table
    if trainable:
        table = hk.get_parameter("embeddings", consts.table.shape, init=lambda *_: consts.table)
    x = table[tokens]  # [B, T, D]
    if cfg.weighting != Weighting.none:  # the constants hold ones otherwise: skip the pass
        x = x * consts.token_weights[tokens][..., None]
    if cfg.token_hidden_sizes:
        x = MLP(cfg.token_hidden_sizes, cfg.activation, cfg.dropout, cfg.init, name="token_mlp")(x, is_training)
    mask = (tokens != PAD).astype(x.dtype) if cfg.mask_padding else jnp.ones(tokens.shape, x.dtype)
    features = pool(x, mask, cfg.pooling, cfg.hier_window)
    return (features - consts.feature_mean) / consts.feature_scale if cfg.standardize else features


def is_parameter_free(cfg: ModelConfig, trainable: bool) -> bool:
    """Whether :func:`featurize` has no parameters, so features can be computed once per run."""
    return not trainable and not cfg.token_hidden_sizes


def feature_dim(cfg: ModelConfig, max_tokens: int, embedding_dim: int) -> int:
    size = cfg.token_hidden_sizes[-1] if cfg.token_hidden_sizes else embedding_dim
    return output_dim(cfg.pooling, max_tokens, size)


class Model(NamedTuple):
    """Pure functions over explicit state.

    ``forward``: ``init(rng, tokens, consts, is_training)`` / ``apply(params, rng, tokens, consts,
    is_training) -> [B, C]``. ``head``: the same with pooled features ``[B, F]`` in place of tokens.
    ``features``: ``apply({}, None, tokens, consts) -> [B, F]`` (only when parameter-free).
    """

    forward: hk.Transformed
    head: hk.Transformed
    features: hk.Transformed


def build_model(cfg: ModelConfig, num_classes: int, trainable: bool = False) -> Model:
    def forward(tokens, consts, is_training):
        features = featurize(tokens, consts, cfg, trainable, is_training)
        return DenseHead(cfg, num_classes)(features, is_training)

    def head(features, consts, is_training):
        del consts  # same signature as forward
        return DenseHead(cfg, num_classes)(features, is_training)

    def features(tokens, consts):
        return featurize(tokens, consts, cfg, trainable, is_training=False)

    return Model(hk.transform(forward), hk.transform(head), hk.transform(features))


def uses_precomputed_features(cfg: ModelConfig, trainable: bool, precompute: bool) -> bool:
    """Flatten keeps the per-batch lookup: its features are ``T * D`` wide per document."""
    return precompute and is_parameter_free(cfg, trainable) and cfg.pooling != Pooling.flatten

"""The frozen embedding table travels in :class:`Constants`, an input of every apply function, so the
optimizer never sees it. ``head`` and ``forward`` share the head's parameter names, so a head trained
on precomputed features serves raw token ids unchanged."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from glove_exp.core.arrays import table_rows, zero_padded
from glove_exp.core.choices import Activation, Init, Norm, Weighting
from glove_exp.core.pooling import Pooling, output_dim, pool
from glove_exp.core.text import PAD

ACTIVATIONS: dict[Activation, Callable[[jax.Array], jax.Array]] = {
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

    table: jax.Array  # [R, D] embedding rows, R = table_rows(V); padding, OOV and the rows past V are zero
    token_weights: jax.Array  # [R] per-word weight before pooling (ones, or SIF)
    feature_mean: jax.Array  # [F] subtracted from pooled features (zeros unless standardised)
    feature_scale: jax.Array  # [F] pooled features are divided by it (ones unless standardised)


def make_constants(table: np.ndarray, token_weights: np.ndarray | None, feature_dim: int) -> Constants:
    """Constants with identity weights/standardisation where none are given; the table and the token
    weights padded with zero rows to :func:`~glove_exp.core.arrays.table_rows` (no token id reaches them),
    unless they have those rows already."""
    rows = table_rows(table.shape[0])
    weights = np.ones(table.shape[0], np.float32) if token_weights is None else token_weights
    return Constants(
        table=jnp.asarray(zero_padded(np.asarray(table), rows)),
        token_weights=jnp.asarray(zero_padded(np.asarray(weights), rows)),
        feature_mean=jnp.zeros(feature_dim, jnp.float32),
        feature_scale=jnp.ones(feature_dim, jnp.float32),
    )


@dataclass(frozen=True)
class ModelSpec:
    """Everything that defines a model: runs log it and a saved model stores it (``model.json``).
    Enum fields also take their string values."""

    num_classes: int
    pooling: Pooling = Pooling.mean
    mask_padding: bool = True  # false: padding positions count as tokens (the seed tutorial)
    hier_window: int = 3  # n-gram window of ``hier`` pooling
    weighting: Weighting = Weighting.none
    sif_a: float = 1e-3  # SIF's a: shapes the token weights (constants), not the parameters
    standardize: bool = False  # z-score pooled features with train statistics
    token_hidden_sizes: tuple[int, ...] = ()  # dense layers on every word vector before pooling
    token_dropout: float = 0.0  # in those layers (``dropout`` is the head's)
    hidden_sizes: tuple[int, ...] = (128,)
    activation: Activation = Activation.none
    norm: Norm = Norm.none
    dropout: float = 0.0
    init: Init = Init.haiku
    trainable: bool = False  # the embedding table as a parameter (initialised from GloVe)

    def __post_init__(self) -> None:
        enums = {"pooling": Pooling, "weighting": Weighting, "activation": Activation, "init": Init, "norm": Norm}
        for name, kind in enums.items():
            object.__setattr__(self, name, kind(getattr(self, name)))
        for name in ("token_hidden_sizes", "hidden_sizes"):
            object.__setattr__(self, name, tuple(int(size) for size in getattr(self, name)))

    def feature_dim(self, max_tokens: int, embedding_dim: int) -> int:
        """Width of the pooled features: per-token layers change the word vectors' width first."""
        size = self.token_hidden_sizes[-1] if self.token_hidden_sizes else embedding_dim
        return output_dim(self.pooling, max_tokens, size)

    def precomputes(self, precompute: bool) -> bool:
        """Whether features can be computed once per run: the featurisation has no parameters, and
        it is not ``flatten``, which keeps the per-batch lookup (``T * D`` wide features)."""
        return precompute and not self.trainable and not self.token_hidden_sizes and self.pooling != Pooling.flatten

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (enums as strings, sizes as lists); ``ModelSpec(**d)`` rebuilds it."""
        plain = {k: v.value if isinstance(v, Enum) else v for k, v in asdict(self).items()}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in plain.items()}


class Model(NamedTuple):
    """Pure functions over explicit state. ``forward``: ``init(rng, tokens, consts, is_training) ->
    (params, state)`` / ``apply(params, state, rng, tokens, consts, is_training[, dropout]) -> ([B, C],
    state)``, ``dropout`` a rate for the head's dropout in place of the spec's (which, if 0, has none);
    ``head``: the same with pooled features ``[B, F]`` for tokens; ``features``: ``apply({}, None, tokens,
    consts) -> [B, F]`` (only when parameter-free)."""

    forward: hk.Transformed
    head: hk.Transformed
    features: hk.Transformed
    spec: ModelSpec


@dataclass(frozen=True)
class HeadSpec:
    """The part of a :class:`ModelSpec` that the head reads: models that differ only in how they make
    features (pooling, weighting, per-token layers) have equal ones."""

    num_classes: int
    hidden_sizes: tuple[int, ...]
    activation: Activation
    norm: Norm
    dropout: float
    init: Init

    @classmethod
    def of(cls, spec: ModelSpec) -> HeadSpec:
        return cls(spec.num_classes, spec.hidden_sizes, spec.activation, spec.norm, spec.dropout, spec.init)


def normalize(norm: Norm, x: jax.Array, is_training: bool) -> jax.Array:
    if norm == Norm.batch:
        return hk.BatchNorm(create_scale=True, create_offset=True, decay_rate=0.9)(x, is_training)
    return hk.LayerNorm(axis=-1, create_scale=True, create_offset=True)(x) if norm == Norm.layer else x


def mlp(sizes: Sequence[int], activate_final: bool, name: str, x: jax.Array, is_training: bool, dropout: float,
        init: Init, activation: Activation, norm: Norm = Norm.none, rate: jax.Array | None = None) -> jax.Array:  # fmt: skip
    """Dense layers on the last axis (hk.nets.MLP's, its parameter names and dropout keys), each
    followed by ``norm``, dropout (training only, if ``dropout`` > 0, at ``rate`` if given, which
    may be traced) and ``activation`` unless it is the last."""
    layers = hk.nets.MLP(sizes, w_init=INITIALISERS[init], name=name).layers
    keys = hk.PRNGSequence(hk.next_rng_key()) if is_training and dropout > 0 else None
    rate = dropout if rate is None else rate
    for i, layer in enumerate(layers):
        x = layer(x)
        if i < len(layers) - 1 or activate_final:
            x = normalize(norm, x, is_training)
            x = ACTIVATIONS[activation](x if keys is None else hk.dropout(next(keys), rate, x))
    return x


def head_logits(head: HeadSpec, features: jax.Array, is_training: bool, dropout: jax.Array | None) -> jax.Array:
    """``[B, F]`` features -> ``[B, C]`` logits: norm -> [dense -> norm -> dropout -> activation]... -> dense."""
    features = normalize(head.norm, features, is_training)
    sizes = [*head.hidden_sizes, head.num_classes]
    return mlp(
        sizes, False, "head", features, is_training, head.dropout, head.init, head.activation, head.norm, dropout
    )


@functools.lru_cache(maxsize=32)
def head_from_spec(head: HeadSpec) -> hk.TransformedWithState:
    """The head on pooled features. Cached: the models of equal heads (a mean and a sum pooling) share
    it, so their training on precomputed features traces and compiles once per process."""

    def apply(features, consts, is_training, dropout=None):
        del consts  # the same signature as the forward pass
        return head_logits(head, features.astype(jnp.float32), is_training, dropout)  # features may be 16-bit floats

    return hk.transform_with_state(apply)


@functools.lru_cache(maxsize=32)
def model_from_spec(spec: ModelSpec) -> Model:
    """Token ids -> (trainable) lookup -> SIF weights -> per-token MLP -> pooling -> standardisation
    -> MLP head (:func:`head_logits`). Cached: equal specs get the same functions, which jitted code
    that takes them as static arguments (as :func:`~glove_exp.core.train.batch_outputs` does) traces
    once per process."""
    head = HeadSpec.of(spec)

    def featurize(tokens: jax.Array, consts: Constants, is_training: bool) -> jax.Array:
        """``[B, T]`` token ids -> ``[B, F]`` pooled (and standardised) features."""
        table = consts.table
        if spec.trainable:
            # a copy: training donates (reuses) the parameter buffers, the constant table must survive
            table = hk.get_parameter("embeddings", consts.table.shape, init=lambda *_: jnp.array(consts.table))
        x = table[tokens]  # [B, T, D]
        if spec.weighting != Weighting.none:  # the constants hold ones otherwise: skip the pass
            x = x * consts.token_weights[tokens][..., None]
        if spec.token_hidden_sizes:
            x = mlp(spec.token_hidden_sizes, True, "token_mlp", x, is_training, spec.token_dropout,
                    spec.init, spec.activation)  # fmt: skip
        mask = (tokens != PAD).astype(x.dtype) if spec.mask_padding else jnp.ones(tokens.shape, x.dtype)
        features = pool(x, mask, spec.pooling, spec.hier_window)
        return (features - consts.feature_mean) / consts.feature_scale if spec.standardize else features

    def forward(tokens, consts, is_training, dropout=None):
        return head_logits(head, featurize(tokens, consts, is_training), is_training, dropout)

    def features(tokens, consts):
        return featurize(tokens, consts, is_training=False)

    return Model(hk.transform_with_state(forward), head_from_spec(head), hk.transform(features), spec)

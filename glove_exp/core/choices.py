"""The settings' closed choices, as plain enums: the schema types its fields with them without importing
JAX (``glove-exp --help`` and ``--cfg job`` stay fast); the modules that act on them import them here."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


class FeatureDtype(str, Enum):
    """How precomputed features are stored, on the host and on the device: 16 bits halve them."""

    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"

    @property
    def numpy(self) -> np.dtype:
        import jax.numpy as jnp  # only when arrays are made: JAX (and NumPy) are slow to import
        import numpy as np

        return np.dtype(jnp.dtype(self.value))  # bfloat16 is ml_dtypes' NumPy type


class Activation(str, Enum):
    none = "none"
    relu = "relu"
    tanh = "tanh"
    gelu = "gelu"


class Norm(str, Enum):
    """Normalisation in the head: of the pooled features and of each hidden dense layer's output."""

    none = "none"
    batch = "batch"  # the batch's statistics while training, their running averages (the state) after
    layer = "layer"  # per example, over the features


class Init(str, Enum):
    """Weight initialisation of the dense layers (biases start at zero)."""

    haiku = "haiku"  # truncated normal, stddev 1/sqrt(fan_in): Haiku's default
    glorot_uniform = "glorot_uniform"  # Keras' default, as in the seed tutorial
    glorot_normal = "glorot_normal"
    he_uniform = "he_uniform"
    he_normal = "he_normal"
    lecun_normal = "lecun_normal"


class Weighting(str, Enum):
    """Per-word weights applied before pooling."""

    none = "none"
    sif = "sif"  # a / (a + p(w)), p(w) the word's frequency in the training split (Arora et al.)


class Pooling(str, Enum):
    flatten = "flatten"
    mean = "mean"
    sum = "sum"
    max = "max"
    min = "min"
    std = "std"
    mean_max = "mean_max"
    hier = "hier"


class OptimizerName(str, Enum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"
    rmsprop = "rmsprop"
    adagrad = "adagrad"


class Schedule(str, Enum):
    constant = "constant"
    cosine = "cosine"
    warmup_cosine = "warmup_cosine"
    exponential = "exponential"

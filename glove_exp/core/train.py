"""Training's parts; :mod:`glove_exp.core.fit` runs them. The jit boundaries are :func:`make_train_epoch`
(a whole epoch of every member of a group: shuffle, then ``lax.scan`` over device-resident batches)
and :func:`batch_outputs` (one fixed-size batch)."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from glove_exp.core.arrays import aligned_empty
from glove_exp.core.choices import OptimizerName, Schedule
from glove_exp.core.errors import TrainingError
from glove_exp.core.models import Constants

log = logging.getLogger(__name__)

# (params, state, rng, inputs [B, ...], consts, is_training[, dropout]) -> ([B, C], state):
# hk.transform_with_state's apply; ``dropout`` (a traced rate) replaces the model's own
ApplyFn = Callable[..., tuple[jax.Array, hk.State]]


class Hyper(NamedTuple):
    """The scalar settings a program's members may differ in, besides their seed: ``[M]`` arrays in a
    program. The optimizer reads ``learning_rate`` and ``weight_decay`` from its state
    (:func:`with_hyperparams`), the model its ``dropout`` rate as an input."""

    learning_rate: float
    weight_decay: float
    dropout: float


@functools.lru_cache(maxsize=32)  # one object per settings: the programs that take it are traced once
def make_optimizer(
    *, name: OptimizerName, lr: float, weight_decay: float, momentum: float, clip_norm: float | None,
    schedule: Schedule, warmup_fraction: float, decay_rate: float, steps_per_epoch: int, epochs: int,
) -> optax.GradientTransformation:  # fmt: skip
    """An optax chain: optional global-norm clipping, then the optimizer. ``weight_decay`` is decoupled
    for adamw and an L2 term added to the gradient otherwise. ``lr`` and ``weight_decay`` are state
    (``optax.inject_hyperparams``), so members of one program may differ in them; the chain's shape
    does not depend on their values."""
    name, schedule, total = OptimizerName(name), Schedule(schedule), max(steps_per_epoch * epochs, 1)
    momentum = momentum or None
    shape = None  # the schedule for a learning rate of 1 (optax's schedules test their values: not traceable)
    if schedule == Schedule.cosine:
        shape = optax.cosine_decay_schedule(1.0, total)
    elif schedule == Schedule.warmup_cosine:
        shape = optax.warmup_cosine_decay_schedule(0.0, 1.0, max(int(warmup_fraction * total), 1), total)
    elif schedule == Schedule.exponential:  # decay_rate per epoch
        shape = optax.exponential_decay(1.0, steps_per_epoch, decay_rate)

    def chain(learning_rate: jax.Array, weight_decay: jax.Array) -> optax.GradientTransformation:
        rate = learning_rate if shape is None else lambda count: learning_rate * shape(count)
        optimizers = {
            OptimizerName.adam: lambda: optax.adam(rate),
            OptimizerName.adamw: lambda: optax.adamw(rate, weight_decay=weight_decay),
            OptimizerName.sgd: lambda: optax.sgd(rate, momentum=momentum),
            OptimizerName.rmsprop: lambda: optax.rmsprop(rate, momentum=momentum),
            OptimizerName.adagrad: lambda: optax.adagrad(rate),
        }
        parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
        if name != OptimizerName.adamw:  # adds 0 * params without weight decay: the same for every member
            parts.append(optax.add_decayed_weights(weight_decay))
        return optax.chain(*parts, optimizers[name]())

    return optax.inject_hyperparams(chain)(learning_rate=lr, weight_decay=weight_decay)


def with_hyperparams(opt_state: optax.InjectHyperparamsState, hyper: Hyper) -> optax.InjectHyperparamsState:
    """``[M]`` optimizer states (of :func:`make_optimizer`) given each member's learning rate and weight
    decay (``[M]`` arrays in ``hyper``)."""
    values = {"learning_rate": hyper.learning_rate, "weight_decay": hyper.weight_decay}
    own = {k: jnp.asarray(v, opt_state.hyperparams[k].dtype) for k, v in values.items()}
    return opt_state._replace(hyperparams={**opt_state.hyperparams, **own})


class EpochResult(NamedTuple):
    params: hk.Params
    state: hk.State  # batch norm's running statistics ({} without)
    opt_state: optax.OptState
    rng: jax.Array
    loss: jax.Array  # mean training cross-entropy over the epoch's examples
    accuracy: jax.Array


@functools.lru_cache(maxsize=32)  # the fits of a process with one model and optimizer share its trace
def make_train_epoch(
    apply: ApplyFn, optimizer: optax.GradientTransformation, num_examples: int, batch_size: int, shuffle: bool,
    data_axis: int | None = None,
) -> Callable[..., EpochResult]:  # fmt: skip
    """A jitted epoch of M members at once, ``jax.vmap``-ped over their parameters, state, optimizer state
    (which holds each one's learning rate), PRNG key and dropout rate: ``epoch(params [M, ...], state,
    opt_state, rng [M, 2], dropout [M], inputs, labels, consts) -> EpochResult`` with ``[M]`` loss and
    accuracy. The data are shared (``data_axis`` None: ``[N, ...]``)
    or each member's own (0: ``[M, N, ...]``). Each member shuffles with its own key; the last batch is
    padded with zero-weight rows, so all steps share one compiled shape."""
    num_batches = math.ceil(num_examples / batch_size)
    padded = num_batches * batch_size

    def loss_fn(params, state, rng, x, y, w, consts, dropout):
        logits, state = apply(params, state, rng, x, consts, True, dropout)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        correct = ((logits.argmax(-1) == y) * w).sum()
        return (losses * w).sum() / jnp.maximum(w.sum(), 1.0), ((losses * w).sum(), correct, state)

    def step(carry, batch, inputs, labels, consts, dropout):
        params, state, opt_state, rng = carry
        idx, w = batch
        rng, key = jax.random.split(rng)
        grad = jax.grad(loss_fn, has_aux=True)
        grads, (loss_sum, correct, state) = grad(params, state, key, inputs[idx], labels[idx], w, consts, dropout)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), state, opt_state, rng), (loss_sum, correct)

    def epoch(params, state, opt_state, rng, dropout, inputs, labels, consts):
        rng, perm_key = jax.random.split(rng)
        order = jax.random.permutation(perm_key, num_examples) if shuffle else jnp.arange(num_examples)
        order = jnp.pad(order, (0, padded - num_examples)).reshape(num_batches, batch_size)
        weights = (jnp.arange(padded) < num_examples).astype(jnp.float32).reshape(num_batches, batch_size)
        carry = (params, state, opt_state, rng)
        carry, (loss_sums, corrects) = jax.lax.scan(
            lambda carry, batch: step(carry, batch, inputs, labels, consts, dropout), carry, (order, weights)
        )
        return EpochResult(*carry, loss_sums.sum() / num_examples, corrects.sum() / num_examples)

    members = jax.vmap(epoch, in_axes=(0, 0, 0, 0, 0, data_axis, data_axis, data_axis))
    # params, state and opt_state are replaced every epoch: their buffers are reused in place (donated)
    return jax.jit(members, donate_argnums=(0, 1, 2))


@functools.partial(jax.jit, static_argnames=("apply", "dtype"))
def batch_outputs(
    params: hk.Params, state: hk.State, x: jax.Array, consts: Constants, *, apply: ApplyFn, dtype: np.dtype | None
) -> jax.Array:
    """``[B, ...]`` outputs of ``apply`` for inference (batch norm: the running averages), cast to ``dtype``.
    ``apply`` is a static argument: the jobs of a process whose models share a spec share its trace
    (:func:`~glove_exp.core.models.model_from_spec` is cached)."""
    out, _ = apply(params, state, None, x, consts, False)
    return out if dtype is None else out.astype(dtype)


def make_batches(
    apply: ApplyFn, batch_size: int, dtype: np.dtype | None = None
) -> Callable[[hk.Params, hk.State, np.ndarray, Constants], Iterator[np.ndarray]]:
    """``batches(params, state, inputs [N, ...], consts)`` yields fixed-size :func:`batch_outputs` as host
    arrays (the last cut to its rows). Small inputs take the next power of two (>= 16) as batch size, so
    serving a few texts compiles once; each batch is dispatched before the previous one is copied back,
    so the copy overlaps the computation."""
    dtype = None if dtype is None else np.dtype(dtype)

    def batches(
        params: hk.Params, state: hk.State, inputs: np.ndarray | jax.Array, consts: Constants
    ) -> Iterator[np.ndarray]:
        n = inputs.shape[0]
        size = min(batch_size, max(16, 1 << max(n - 1, 0).bit_length()))
        pending = None
        for start in range(0, n, size):
            chunk = inputs[start : start + size]
            if len(chunk) < size:  # host inputs padded on the host: no eager device op to compile per shape
                pad = np.pad if isinstance(chunk, np.ndarray) else jnp.pad
                chunk = pad(chunk, [(0, size - len(chunk))] + [(0, 0)] * (chunk.ndim - 1))
            dispatched = batch_outputs(params, state, chunk, consts, apply=apply, dtype=dtype), min(size, n - start)
            if pending is not None:
                yield np.asarray(pending[0])[: pending[1]]
            pending = dispatched
        if pending is not None:
            yield np.asarray(pending[0])[: pending[1]]

    return batches


def make_predict(
    apply: ApplyFn, batch_size: int, dtype: np.dtype | None = None
) -> Callable[[hk.Params, hk.State, np.ndarray, Constants], np.ndarray]:
    """``predict(params, state, inputs [N, ...], consts) -> [N, ...]`` outputs (logits, or features) of
    :func:`make_batches`, written batch by batch into one array of ``dtype`` (default: the output's)."""
    batches = make_batches(apply, batch_size, dtype)

    def predict(params: hk.Params, state: hk.State, inputs: np.ndarray | jax.Array, consts: Constants) -> np.ndarray:
        out, start = None, 0
        for batch in batches(params, state, inputs, consts):
            if out is None:
                out = aligned_empty((inputs.shape[0], *batch.shape[1:]), batch.dtype)
            out[start : start + len(batch)] = batch
            start += len(batch)
        return out if out is not None else np.zeros((0, 0), dtype or np.float32)

    return predict


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy of ``[N, C]`` logits against ``[N]`` labels (NumPy: no dispatch or compile)."""
    logits = np.asarray(logits, dtype=np.float64)
    with np.errstate(all="ignore"):  # diverged parameters give NaN logits: NaN is the answer, not a warning
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def diverged(what: str) -> TrainingError:
    """The error of a NaN or infinite loss or output (``what``: which, and when)."""
    return TrainingError(f"training diverged: {what}; lower optimizer.lr or set optimizer.clip_norm")


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float
    train_accuracy: float
    val_loss: float | None  # None without a validation split
    val_accuracy: float | None
    epoch_time_s: float


@dataclass(frozen=True)
class FitResult:
    params: hk.Params
    state: hk.State  # batch norm's running statistics ({} without), of the same epoch as ``params``
    history: tuple[EpochMetrics, ...]
    best_epoch: int  # epoch of the best validation accuracy (0 without a validation split)
    selected_epoch: int  # epoch whose parameters are returned: best with early stopping, else last
    compile_time_s: float
    train_time_s: float

    @property
    def selected(self) -> EpochMetrics:
        return self.history[self.selected_epoch - 1]

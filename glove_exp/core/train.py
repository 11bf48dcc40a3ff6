"""The jit boundaries are :func:`make_train_epoch` (a whole epoch: shuffle, then ``lax.scan`` over
device-resident batches) and :func:`make_batches` (one fixed-size batch)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from glove_exp.core.choices import OptimizerName, Schedule
from glove_exp.core.errors import TrainingError
from glove_exp.core.models import Constants

log = logging.getLogger(__name__)

# (params, state, rng, inputs [B, ...], consts, is_training) -> ([B, C], state): hk.transform_with_state's apply
ApplyFn = Callable[..., tuple[jax.Array, hk.State]]


def make_optimizer(
    *, name: OptimizerName, lr: float, weight_decay: float, momentum: float, clip_norm: float | None,
    schedule: Schedule, warmup_fraction: float, decay_rate: float, steps_per_epoch: int, epochs: int,
) -> optax.GradientTransformation:  # fmt: skip
    """An optax chain: optional global-norm clipping, then the optimizer. ``weight_decay`` is decoupled
    for adamw and an L2 term added to the gradient otherwise."""
    name, schedule, total = OptimizerName(name), Schedule(schedule), max(steps_per_epoch * epochs, 1)
    rate: optax.Schedule | float = lr
    if schedule == Schedule.cosine:
        rate = optax.cosine_decay_schedule(lr, total)
    elif schedule == Schedule.warmup_cosine:
        rate = optax.warmup_cosine_decay_schedule(0.0, lr, max(int(warmup_fraction * total), 1), total)
    elif schedule == Schedule.exponential:  # decay_rate per epoch
        rate = optax.exponential_decay(lr, steps_per_epoch, decay_rate)
    momentum = momentum or None
    optimizers = {
        OptimizerName.adam: lambda: optax.adam(rate),
        OptimizerName.adamw: lambda: optax.adamw(rate, weight_decay=weight_decay),
        OptimizerName.sgd: lambda: optax.sgd(rate, momentum=momentum),
        OptimizerName.rmsprop: lambda: optax.rmsprop(rate, momentum=momentum),
        OptimizerName.adagrad: lambda: optax.adagrad(rate),
    }
    chain = [optax.clip_by_global_norm(clip_norm)] if clip_norm else []
    if weight_decay and name != OptimizerName.adamw:
        chain.append(optax.add_decayed_weights(weight_decay))
    return optax.chain(*chain, optimizers[name]())


class EpochResult(NamedTuple):
    params: hk.Params
    state: hk.State  # batch norm's running statistics ({} without)
    opt_state: optax.OptState
    rng: jax.Array
    loss: jax.Array  # mean training cross-entropy over the epoch's examples
    accuracy: jax.Array


def make_train_epoch(
    apply: ApplyFn, optimizer: optax.GradientTransformation, num_examples: int, batch_size: int, shuffle: bool
) -> Callable[..., EpochResult]:
    """A jitted ``epoch(params, state, opt_state, rng, inputs [N, ...], labels [N], consts) -> EpochResult``;
    the last batch is padded with zero-weight rows, so all steps share one compiled shape."""
    num_batches = math.ceil(num_examples / batch_size)
    padded = num_batches * batch_size

    def loss_fn(params, state, rng, x, y, w, consts):
        logits, state = apply(params, state, rng, x, consts, True)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        correct = ((logits.argmax(-1) == y) * w).sum()
        return (losses * w).sum() / jnp.maximum(w.sum(), 1.0), ((losses * w).sum(), correct, state)

    def step(carry, batch, inputs, labels, consts):
        params, state, opt_state, rng = carry
        idx, w = batch
        rng, key = jax.random.split(rng)
        grad = jax.grad(loss_fn, has_aux=True)
        grads, (loss_sum, correct, state) = grad(params, state, key, inputs[idx], labels[idx], w, consts)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), state, opt_state, rng), (loss_sum, correct)

    def epoch(params, state, opt_state, rng, inputs, labels, consts):
        rng, perm_key = jax.random.split(rng)
        order = jax.random.permutation(perm_key, num_examples) if shuffle else jnp.arange(num_examples)
        order = jnp.pad(order, (0, padded - num_examples)).reshape(num_batches, batch_size)
        weights = (jnp.arange(padded) < num_examples).astype(jnp.float32).reshape(num_batches, batch_size)
        carry = (params, state, opt_state, rng)
        carry, (loss_sums, corrects) = jax.lax.scan(
            lambda carry, batch: step(carry, batch, inputs, labels, consts), carry, (order, weights)
        )
        return EpochResult(*carry, loss_sums.sum() / num_examples, corrects.sum() / num_examples)

    # params, state and opt_state are replaced every epoch: their buffers are reused in place (donated)
    return jax.jit(epoch, donate_argnums=(0, 1, 2))


def make_batches(
    apply: ApplyFn, batch_size: int, dtype: np.dtype | None = None
) -> Callable[[hk.Params, hk.State, np.ndarray, Constants], Iterator[np.ndarray]]:
    """``batches(params, state, inputs [N, ...], consts)`` yields fixed-size jitted batches' outputs as host
    arrays (the last cut to its rows), cast to ``dtype`` on the device. Small inputs take the next power of
    two (>= 16) as batch size, so serving a few texts compiles once; each batch is dispatched before the
    previous one is copied back, so the copy overlaps the computation."""

    @jax.jit
    def batch_outputs(params, state, x, consts):
        out, _ = apply(params, state, None, x, consts, False)  # batch norm: the running averages
        return out if dtype is None else out.astype(dtype)

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
            dispatched = batch_outputs(params, state, chunk, consts), min(size, n - start)
            if pending is not None:
                yield np.asarray(pending[0])[: pending[1]]
            pending = dispatched
        if pending is not None:
            yield np.asarray(pending[0])[: pending[1]]

    return batches


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``np.empty`` on a 64-byte boundary: on a CPU, ``jax.device_put`` then shares the array
    instead of copying it (NumPy's large arrays start 16 bytes past one)."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    raw = np.empty(size + 64, np.uint8)
    start = -raw.ctypes.data % 64
    return raw[start : start + size].view(dtype).reshape(shape)


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


def fit(
    transformed: hk.Transformed, optimizer: optax.GradientTransformation, train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray] | None, consts: Constants, rng: jax.Array, *, epochs: int, batch_size: int,
    eval_batch_size: int, shuffle: bool, early_stopping_patience: int | None,
    on_epoch: Callable[[EpochMetrics], None] = lambda m: None, progress: bool = True,
) -> FitResult:  # fmt: skip
    """Train on ``train = (inputs [N, ...], labels [N])``, validating on ``val`` (same layout) if any.
    With ``early_stopping_patience``, returns the best epoch's parameters and state, else the last's."""
    stopping = early_stopping_patience is not None
    if val is None and stopping:
        raise ValueError("early stopping needs a validation split")
    # On the device once for all epochs (on a CPU, device_put shares the host array's memory; jnp.asarray copies).
    inputs, labels = jax.device_put(train[0]), jax.device_put(train[1])
    val_inputs = None if val is None else jax.device_put(val[0])
    init_key, rng = jax.random.split(rng)
    params, state = transformed.init(init_key, inputs[:1], consts, True)
    opt_state = optimizer.init(params)
    epoch_fn = make_train_epoch(transformed.apply, optimizer, len(labels), batch_size, shuffle)
    predict = make_predict(transformed.apply, eval_batch_size)

    tic = time.perf_counter()  # compile outside the epoch timings: the epoch and the validation shapes
    epoch_fn = epoch_fn.lower(params, state, opt_state, rng, inputs, labels, consts).compile()
    if val is not None:
        predict(params, state, val_inputs, consts)
    compile_time_s, history = time.perf_counter() - tic, []
    best, best_accuracy, best_epoch, waited = None, -1.0, 0, 0
    bar = tqdm(range(1, epochs + 1), desc="train", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        tic = time.perf_counter()
        params, state, opt_state, rng, loss, accuracy = epoch_fn(params, state, opt_state, rng, inputs, labels, consts)
        loss = float(loss)
        if not math.isfinite(loss):
            raise diverged(f"train loss is {loss} in epoch {epoch}")
        val_loss = val_accuracy = None
        if val is not None:
            val_logits = predict(params, state, val_inputs, consts)
            val_loss, val_accuracy = cross_entropy(val_logits, val[1]), float((val_logits.argmax(-1) == val[1]).mean())
            if not math.isfinite(val_loss):  # the epoch's train loss is of the parameters before its last step
                raise diverged(f"val loss is {val_loss} in epoch {epoch}")
        metrics = EpochMetrics(epoch, loss, float(accuracy), val_loss, val_accuracy, time.perf_counter() - tic)
        history.append(metrics)
        on_epoch(metrics)
        log.debug("epoch %d: train loss %.4f, val accuracy %s", epoch, loss, val_accuracy)
        bar.set_postfix(loss=f"{loss:.4f}", **({} if val_accuracy is None else {"val_acc": f"{val_accuracy:.4f}"}))
        if val_accuracy is None:
            continue
        if val_accuracy > best_accuracy:
            # the next epoch reuses (donates) the buffers of ``params`` and ``state``: keep the best ones as a copy
            best = jax.tree.map(jnp.copy, (params, state)) if stopping else None
            best_accuracy, best_epoch, waited = val_accuracy, epoch, 0
        else:
            waited += 1
        if stopping and waited >= early_stopping_patience:
            log.info("early stopping after epoch %d (best %d)", epoch, best_epoch)
            break
    params, state = best if stopping else (params, state)
    selected = best_epoch if stopping else len(history)
    train_time_s = sum(m.epoch_time_s for m in history)
    return FitResult(params, state, tuple(history), best_epoch, selected, compile_time_s, train_time_s)

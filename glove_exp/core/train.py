"""The jit boundaries are :func:`make_train_epoch` (a whole epoch: shuffle, then ``lax.scan`` over
device-resident batches) and :func:`make_batches` (one fixed-size batch)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

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
    apply: ApplyFn, optimizer: optax.GradientTransformation, num_examples: int, batch_size: int, shuffle: bool,
    data_axis: int | None = None,
) -> Callable[..., EpochResult]:  # fmt: skip
    """A jitted epoch of M members at once, ``jax.vmap``-ped over their parameters, state, optimizer state
    and PRNG key: ``epoch(params [M, ...], state, opt_state, rng [M, 2], inputs, labels, consts) ->
    EpochResult`` with ``[M]`` loss and accuracy. The data are shared (``data_axis`` None: ``[N, ...]``)
    or each member's own (0: ``[M, N, ...]``). Each member shuffles with its own key; the last batch is
    padded with zero-weight rows, so all steps share one compiled shape."""
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

    members = jax.vmap(epoch, in_axes=(0, 0, 0, 0, data_axis, data_axis, data_axis))
    # params, state and opt_state are replaced every epoch: their buffers are reused in place (donated)
    return jax.jit(members, donate_argnums=(0, 1, 2))


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
            if len(chunk) < size:  # host or device inputs alike
                chunk = jnp.pad(chunk, [(0, size - len(chunk))] + [(0, 0)] * (chunk.ndim - 1))
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


@dataclass(frozen=True)
class Failed:
    """A member that diverged: the error that ended it and the epochs before it."""

    error: TrainingError
    history: tuple[EpochMetrics, ...]


@dataclass(frozen=True)
class Member:
    """One model of a group that trains as one program: its data, its key and its epoch callback."""

    train: tuple[np.ndarray, np.ndarray]  # inputs [N, ...], labels [N]
    val: tuple[np.ndarray, np.ndarray] | None  # the same layout; None without a validation split
    consts: Constants
    rng: jax.Array
    on_epoch: Callable[[EpochMetrics], None] = lambda m: None

    def shape(self) -> tuple:
        """What members must share to be stacked into one program (the vocabulary size may differ)."""
        c = self.consts
        return (self.train[0].shape, self.train[0].dtype, c.table.shape[1:], c.feature_mean.shape)


def programs(members: Sequence[Member], max_size: int | None = None) -> list[list[int]]:
    """Indices of ``members`` in groups that can train as one program: the same shapes, at most
    ``max_size`` (None: any number) each, in their order."""
    by_shape: dict[tuple, list[int]] = {}
    for i, member in enumerate(members):
        by_shape.setdefault(member.shape(), []).append(i)
    size = max_size or len(members)
    return [group[k : k + size] for group in by_shape.values() for k in range(0, len(group), size)]


def member_bytes(transformed: hk.Transformed, member: Member, batch_size: int, shared: bool) -> int:
    """Rough bytes one more member adds to a program: its parameters four times (with their gradients
    and two optimizer moments), a batch of inputs and its gradient, and its own data unless ``shared``."""
    init = lambda key: transformed.init(key, member.train[0][:1], member.consts, True)  # noqa: E731
    params = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(jax.eval_shape(init, jax.random.PRNGKey(0))))
    own = sum(np.asarray(x).nbytes for x in (*member.train, *(member.val or ()))) + sum(x.nbytes for x in member.consts)
    return 4 * params + 2 * batch_size * member.train[0][0].nbytes + (0 if shared else own)


def shares_data(members: Sequence[Member]) -> bool:
    """Whether every member trains on the same arrays (a sweep over seeds of a seed-free split)."""
    first = members[0]
    return all(
        m.train[0] is first.train[0] and m.train[1] is first.train[1] and m.consts is first.consts for m in members
    )


def stack_constants(consts: Sequence[Constants]) -> Constants:
    """``[M, ...]`` constants; each member's vocabulary padded with zero rows to the largest (its token
    ids never reach them)."""
    rows = max(c.table.shape[0] for c in consts)

    def pad(x: jax.Array) -> jax.Array:
        return jnp.pad(x, [(0, rows - x.shape[0])] + [(0, 0)] * (x.ndim - 1))

    return Constants(
        table=jnp.stack([pad(c.table) for c in consts]), token_weights=jnp.stack([pad(c.token_weights) for c in consts]),
        feature_mean=jnp.stack([c.feature_mean for c in consts]), feature_scale=jnp.stack([c.feature_scale for c in consts]),
    )  # fmt: skip


def member_tree(tree: Any, m: int) -> Any:
    """Member ``m``'s slice of a stacked pytree (a new buffer: safe to keep while training donates the stack)."""
    return jax.tree.map(lambda x: x[m], tree)


@dataclass
class Progress:
    """One member's early-stopping bookkeeping while its group trains."""

    history: list[EpochMetrics] = field(default_factory=list)
    best: tuple[hk.Params, hk.State] | None = None
    best_accuracy: float = -1.0
    best_epoch: int = 0
    waited: int = 0
    error: TrainingError | None = None


def member_keys(rngs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Each member's key ``[M, 2]`` split in two: ``[M, 2]`` init keys (its parameters) and ``[M, 2]``
    training keys (its shuffles and dropout)."""
    keys = jax.vmap(jax.random.split)(rngs)
    return keys[:, 0], keys[:, 1]


def fit_group(
    transformed: hk.Transformed, optimizer: optax.GradientTransformation, members: Sequence[Member], *,
    epochs: int, batch_size: int, eval_batch_size: int, shuffle: bool, early_stopping_patience: int | None,
    progress: bool = True,
) -> list[FitResult | Failed]:  # fmt: skip
    """Train ``members`` (same shapes: see :func:`programs`) as one ``jax.vmap``-ped program and validate
    each on its own ``val``; returns each member's result, or how it failed (divergence). A
    member that stops early keeps its best parameters while the others go on; each member's epoch time
    is its share of the program's time plus its own validation."""
    stopping = early_stopping_patience is not None
    if stopping and any(m.val is None for m in members):
        raise ValueError("early stopping needs a validation split")
    first, count = members[0], len(members)
    axis = None if shares_data(members) else 0
    if axis is None:  # on the device once for all epochs (on a CPU, device_put shares the host array's memory)
        inputs, labels, consts = jax.device_put(first.train[0]), jax.device_put(first.train[1]), first.consts
    else:
        inputs, labels = jnp.stack([m.train[0] for m in members]), jnp.stack([m.train[1] for m in members])
        consts = stack_constants([m.consts for m in members])
    vals = [None if m.val is None else jax.device_put(m.val[0]) for m in members]
    init_keys, rng = member_keys(jnp.stack([m.rng for m in members]))
    init = jax.vmap(lambda key, x, c: transformed.init(key, x, c, True), in_axes=(0, axis, axis))
    params, state = init(init_keys, inputs[:1] if axis is None else inputs[:, :1], consts)
    opt_state = jax.vmap(optimizer.init)(params)
    epoch_fn = make_train_epoch(transformed.apply, optimizer, first.train[1].shape[0], batch_size, shuffle, axis)
    predict = make_predict(transformed.apply, eval_batch_size)

    tic = time.perf_counter()  # compile outside the epoch timings: the epoch and the validation shapes
    epoch_fn = epoch_fn.lower(params, state, opt_state, rng, inputs, labels, consts).compile()
    if vals[0] is not None:
        predict(member_tree(params, 0), member_tree(state, 0), vals[0], first.consts)
    compile_time_s = time.perf_counter() - tic
    runs, active = [Progress() for _ in members], list(range(count))
    bar = tqdm(range(1, epochs + 1), desc="train", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        tic = time.perf_counter()
        params, state, opt_state, rng, losses, accuracies = epoch_fn(
            params, state, opt_state, rng, inputs, labels, consts
        )
        losses, accuracies = np.asarray(losses), np.asarray(accuracies)
        share = (time.perf_counter() - tic) / count
        for m in list(active):
            tic = time.perf_counter()
            metrics = member_epoch(members[m], runs[m], epoch, float(losses[m]), float(accuracies[m]), params, state, m,
                                   vals[m], predict, stopping)  # fmt: skip
            if metrics is None:
                active.remove(m)
                continue
            metrics = replace(metrics, epoch_time_s=share + time.perf_counter() - tic)
            runs[m].history.append(metrics)
            members[m].on_epoch(metrics)
            if stopping and runs[m].waited >= early_stopping_patience:
                log.info("early stopping after epoch %d (best %d)", epoch, runs[m].best_epoch)
                active.remove(m)
        if active:
            shown = runs[active[0]].history[-1]
            val = {} if shown.val_accuracy is None else {"val_acc": f"{shown.val_accuracy:.4f}"}
            bar.set_postfix(loss=f"{shown.train_loss:.4f}", **val, **({"members": len(active)} if count > 1 else {}))
        else:
            break
    return [
        Failed(run.error, tuple(run.history))
        if run.error
        else fitted(run, member_tree(params, m), member_tree(state, m), stopping, compile_time_s)
        for m, run in enumerate(runs)
    ]


def member_epoch(
    member: Member, run: Progress, epoch: int, loss: float, accuracy: float, params: hk.Params, state: hk.State,
    m: int, val_inputs: jax.Array | None, predict: Callable[..., np.ndarray], stopping: bool,
) -> EpochMetrics | None:  # fmt: skip
    """Member ``m``'s metrics for ``epoch`` (its time still 0), its best kept; None once it diverged."""
    if not math.isfinite(loss):
        run.error = diverged(f"train loss is {loss} in epoch {epoch}")
        return None
    if member.val is None:
        return EpochMetrics(epoch, loss, accuracy, None, None, 0.0)
    own = member_tree(params, m), member_tree(state, m)
    logits = predict(*own, val_inputs, member.consts)
    val_loss, val_accuracy = cross_entropy(logits, member.val[1]), float((logits.argmax(-1) == member.val[1]).mean())
    if not math.isfinite(val_loss):  # the epoch's train loss is of the parameters before its last step
        run.error = diverged(f"val loss is {val_loss} in epoch {epoch}")
        return None
    log.debug("epoch %d: train loss %.4f, val accuracy %s", epoch, loss, val_accuracy)
    if val_accuracy > run.best_accuracy:
        run.best = own if stopping else None
        run.best_accuracy, run.best_epoch, run.waited = val_accuracy, epoch, 0
    else:
        run.waited += 1
    return EpochMetrics(epoch, loss, accuracy, val_loss, val_accuracy, 0.0)


def fitted(run: Progress, params: hk.Params, state: hk.State, stopping: bool, compile_time_s: float) -> FitResult:
    """A member's result: with early stopping its best epoch's parameters and state, else its last's."""
    params, state = run.best if stopping and run.best is not None else (params, state)
    selected = run.best_epoch if stopping else len(run.history)
    train_time_s = sum(m.epoch_time_s for m in run.history)
    return FitResult(params, state, tuple(run.history), run.best_epoch, selected, compile_time_s, train_time_s)


def fit(
    transformed: hk.Transformed, optimizer: optax.GradientTransformation, train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray] | None, consts: Constants, rng: jax.Array, *, epochs: int, batch_size: int,
    eval_batch_size: int, shuffle: bool, early_stopping_patience: int | None,
    on_epoch: Callable[[EpochMetrics], None] = lambda m: None, progress: bool = True,
) -> FitResult:  # fmt: skip
    """Train one model, a group of one: on ``train = (inputs [N, ...], labels [N])``, validating on ``val``
    (same layout) if any. With ``early_stopping_patience``, returns the best epoch's parameters and
    state, else the last's; raises :class:`TrainingError` if training diverged."""
    (result,) = fit_group(
        transformed, optimizer, [Member(train, val, consts, rng, on_epoch)], epochs=epochs, batch_size=batch_size,
        eval_batch_size=eval_batch_size, shuffle=shuffle, early_stopping_patience=early_stopping_patience,
        progress=progress,
    )  # fmt: skip
    if isinstance(result, Failed):
        raise result.error
    return result

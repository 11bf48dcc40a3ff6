"""Training as one ``jax.vmap``-ped program of M members (models of one config that differ in their
seed, their :class:`Hyper` settings, or their own data of the same shapes); a single run is a group
of one. The jit boundaries are :func:`init_members` (the members' parameters and optimizer states) and
:func:`glove_exp.core.train.make_train_epoch` (a whole epoch of every member)."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from glove_exp.core.errors import TrainingError
from glove_exp.core.models import Constants
from glove_exp.core.train import (
    EpochMetrics,
    FitResult,
    Hyper,
    cross_entropy,
    diverged,
    make_predict,
    make_train_epoch,
    with_hyperparams,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failed:
    """A member that diverged: the error that ended it and the epochs before it."""

    error: TrainingError
    history: tuple[EpochMetrics, ...]


@dataclass(frozen=True)
class Member:
    """One model of a group that trains as one program: its data, its key, its scalar settings and its
    epoch callback."""

    train: tuple[np.ndarray, np.ndarray]  # inputs [N, ...], labels [N]
    val: tuple[np.ndarray, np.ndarray] | None  # the same layout; None without a validation split
    consts: Constants
    rng: jax.Array
    hyper: Hyper
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


@jax.jit
def stack_data(
    inputs: Sequence[np.ndarray], labels: Sequence[np.ndarray], consts: Sequence[Constants]
) -> tuple[jax.Array, jax.Array, Constants]:
    """The members' own data as ``[M, N, ...]`` inputs, ``[M, N]`` labels and :func:`stack_constants`,
    made by one program (as separate operations, each would be compiled and dispatched on its own)."""
    return jnp.stack(inputs), jnp.stack(labels), stack_constants(consts)


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


@functools.partial(jax.jit, static_argnames=("transformed", "optimizer", "data_axis"))
def init_members(
    rngs: Sequence[jax.Array], example: np.ndarray, consts: Constants, hyper: Hyper, *, transformed: hk.Transformed,
    optimizer: optax.GradientTransformation, data_axis: int | None,
) -> tuple[hk.Params, hk.State, optax.OptState, jax.Array]:  # fmt: skip
    """The members' stacked parameters, state and optimizer states, and their ``[M, 2]`` training keys,
    from their ``[M]`` keys and an ``example`` (``[1, ...]``, or ``[M, 1, ...]`` with ``data_axis=0``), as
    one program: run eagerly, Haiku's initialisers and optax's are about 30 programs, each compiled or
    looked up in the cache and dispatched on its own. A process traces it once per model and optimizer
    (both cached: :func:`~glove_exp.core.models.model_from_spec`,
    :func:`~glove_exp.core.train.make_optimizer`)."""
    init_keys, rng = member_keys(jnp.stack(rngs))
    member_init = lambda key, x, c: transformed.init(key, x, c, True)  # noqa: E731
    params, state = jax.vmap(member_init, in_axes=(0, data_axis, data_axis))(init_keys, example, consts)
    return params, state, with_hyperparams(jax.vmap(optimizer.init)(params), hyper), rng


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
    member that stops early keeps its best parameters while the others go on; each member's compile and
    epoch times are its share of the program's, plus its own validation."""
    stopping = early_stopping_patience is not None
    if stopping and any(m.val is None for m in members):
        raise ValueError("early stopping needs a validation split")
    first, count = members[0], len(members)
    axis = None if shares_data(members) else 0
    if axis is None:  # on the device once for all epochs (on a CPU, device_put shares the host array's memory)
        inputs, labels, consts = jax.device_put(first.train[0]), jax.device_put(first.train[1]), first.consts
        example = first.train[0][:1]
    else:
        inputs, labels, consts = stack_data([m.train[0] for m in members], [m.train[1] for m in members],
                                            [m.consts for m in members])  # fmt: skip
        example = np.stack([m.train[0][:1] for m in members])
    vals = [None if m.val is None else jax.device_put(m.val[0]) for m in members]
    hyper = Hyper(*(np.array(values, np.float32) for values in zip(*(m.hyper for m in members))))
    params, state, opt_state, rng = init_members(
        [m.rng for m in members], example, consts, hyper, transformed=transformed, optimizer=optimizer, data_axis=axis
    )
    epoch_fn = make_train_epoch(transformed.apply, optimizer, first.train[1].shape[0], batch_size, shuffle, axis)
    predict = make_predict(transformed.apply, eval_batch_size)

    tic = time.perf_counter()  # compile outside the epoch timings: the epoch and the validation shapes
    epoch_fn = epoch_fn.lower(params, state, opt_state, rng, hyper.dropout, inputs, labels, consts).compile()
    if vals[0] is not None:
        predict(member_tree(params, 0), member_tree(state, 0), vals[0], first.consts)
    compile_time_s = time.perf_counter() - tic
    runs, active = [Progress() for _ in members], list(range(count))
    bar = tqdm(range(1, epochs + 1), desc="train", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        tic = time.perf_counter()
        params, state, opt_state, rng, losses, accuracies = epoch_fn(
            params, state, opt_state, rng, hyper.dropout, inputs, labels, consts
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
        else fitted(run, member_tree(params, m), member_tree(state, m), stopping, compile_time_s / count)
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
    val: tuple[np.ndarray, np.ndarray] | None, consts: Constants, rng: jax.Array, hyper: Hyper, *, epochs: int,
    batch_size: int, eval_batch_size: int, shuffle: bool, early_stopping_patience: int | None,
    on_epoch: Callable[[EpochMetrics], None] = lambda m: None, progress: bool = True,
) -> FitResult:  # fmt: skip
    """Train one model, a group of one: on ``train = (inputs [N, ...], labels [N])``, validating on ``val``
    (same layout) if any. With ``early_stopping_patience``, returns the best epoch's parameters and
    state, else the last's; raises :class:`TrainingError` if training diverged."""
    (result,) = fit_group(
        transformed, optimizer, [Member(train, val, consts, rng, hyper, on_epoch)], epochs=epochs, batch_size=batch_size,
        eval_batch_size=eval_batch_size, shuffle=shuffle, early_stopping_patience=early_stopping_patience,
        progress=progress,
    )  # fmt: skip
    if isinstance(result, Failed):
        raise result.error
    return result

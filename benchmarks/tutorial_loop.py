"""The seed tutorial's model and training loop, kept for comparison only (never used by glove-exp):
:func:`tutorial_epoch_seconds` times it (``python -m benchmarks.run``), :func:`tutorial_accuracy`
trains it to a test accuracy (``python -m benchmarks.seeds``); both run :func:`tutorial_step`.

Un-jitted ``value_and_grad`` per batch; the embedding table is a Haiku parameter, so every step
computes a dense gradient and an Adam update for the whole table, and the update is then zeroed
to keep the vectors frozen. The accuracy runs may jit that step: the same maths (on AG News,
seeds 0-4, all three poolings, jitted and eager gave identical test accuracies).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

Step = Callable[[hk.Params, optax.OptState, jax.Array, jax.Array], tuple[hk.Params, optax.OptState]]


def tutorial_encode(
    train_texts: list[str],
    test_texts: list[str],
    lookup: dict[str, int],
    vectors: np.ndarray,
    max_tokens: int,
    whole_table: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The tutorial's own preprocessing: an embedding matrix ``[R, D]`` whose rows are zero where
    GloVe has no vector, and post-padded, post-truncated train and test ids ``[N, max_tokens]``
    (0 is padding).

    The matrix covers a Keras-style vocabulary of every word of train and test or, with
    ``whole_table``, all of ``vectors`` (the same maths, a larger table for the loop to update).
    """
    from glove_exp.core.text import tokenize_all

    train_tokens, test_tokens = tokenize_all(train_texts).lists(), tokenize_all(test_texts).lists()
    if whole_table:
        missing = len(vectors) + 1  # one zero row for every word without a vector
        index = {word: row + 1 for word, row in lookup.items()}
        matrix = np.concatenate(
            [np.zeros((1, vectors.shape[1]), np.float32), vectors, np.zeros((1, vectors.shape[1]), np.float32)]
        )
    else:
        index = {}
        for tokens in train_tokens + test_tokens:
            for word in tokens:
                index.setdefault(word, len(index) + 1)
        missing = 0
        matrix = np.zeros((len(index) + 1, vectors.shape[1]), dtype=np.float32)
        for word, row in index.items():
            if word in lookup:
                matrix[row] = vectors[lookup[word]]

    def ids(docs: list[list[str]]) -> np.ndarray:
        out = np.zeros((len(docs), max_tokens), dtype=np.int32)
        for i, tokens in enumerate(docs):
            row = [index.get(word, missing) for word in tokens[:max_tokens]]
            out[i, : len(row)] = row
        return out

    return matrix, ids(train_tokens), ids(test_tokens)


def tutorial_model(matrix: np.ndarray, pooling: str, num_classes: int) -> hk.Transformed:
    """Embedding (a parameter initialised to ``matrix``) -> flatten / mean / sum over all
    positions, padding included -> Dense(128), no activation -> Dense(num_classes)."""

    def model_fn(x: jax.Array) -> jax.Array:
        emb = hk.Embed(embedding_matrix=matrix, name="embed")(x)  # [B, T, D]
        pooled = (
            emb.reshape(x.shape[0], -1) if pooling == "flatten" else (emb.mean(1) if pooling == "mean" else emb.sum(1))
        )
        return hk.Linear(num_classes)(hk.Linear(128)(pooled))

    return hk.without_apply_rng(hk.transform(model_fn))


def tutorial_step(model: hk.Transformed, optimizer: optax.GradientTransformation, num_classes: int) -> Step:
    """One tutorial update: dense gradients for every parameter, Adam, the embedding update zeroed."""

    def loss(params: hk.Params, x: jax.Array, y: jax.Array) -> jax.Array:
        return optax.softmax_cross_entropy(model.apply(params, x), jax.nn.one_hot(y, num_classes)).mean()

    def step(
        params: hk.Params, opt_state: optax.OptState, x: jax.Array, y: jax.Array
    ) -> tuple[hk.Params, optax.OptState]:
        _, grads = jax.value_and_grad(loss)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state)
        updates["embed"]["embeddings"] = jnp.zeros_like(updates["embed"]["embeddings"])
        return optax.apply_updates(params, updates), opt_state

    return step


def _start(
    matrix: np.ndarray, tokens: np.ndarray, pooling: str, num_classes: int, seed: int, init_key: jax.Array | None = None
) -> tuple[hk.Transformed, Step, hk.Params, optax.OptState]:
    model = tutorial_model(matrix, pooling, num_classes)
    params = model.init(jax.random.PRNGKey(seed) if init_key is None else init_key, jnp.asarray(tokens[:1]))
    optimizer = optax.adam(1e-3)
    return model, tutorial_step(model, optimizer, num_classes), params, optimizer.init(params)


def _epoch(
    step: Step, params: hk.Params, opt_state: optax.OptState, tokens: np.ndarray, labels: np.ndarray, batch_size: int
) -> tuple[hk.Params, optax.OptState]:
    """One pass over the batches in file order (the tutorial never shuffles)."""
    for start in range(0, len(tokens), batch_size):
        x, y = jnp.asarray(tokens[start : start + batch_size]), jnp.asarray(labels[start : start + batch_size])
        params, opt_state = step(params, opt_state, x, y)
    return params, opt_state


def tutorial_epoch_seconds(
    matrix: np.ndarray, tokens: np.ndarray, labels: np.ndarray, pooling: str, num_classes: int, batch_size: int = 1024
) -> float:
    """Seconds for one epoch over ``tokens [N, T]`` with the tutorial's model and (un-jitted) loop."""
    _, step, params, opt_state = _start(matrix, tokens, pooling, num_classes, seed=0)
    tic = time.perf_counter()
    params, _ = _epoch(step, params, opt_state, tokens, labels, batch_size)
    jax.block_until_ready(params)
    return time.perf_counter() - tic


def tutorial_accuracy(
    matrix: np.ndarray, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], pooling: str, num_classes: int,
    seed: int, epochs: int = 8, batch_size: int = 1024, jit: bool = True, init_key: jax.Array | None = None,
) -> float:  # fmt: skip
    """Test accuracy in [0, 1] after training the tutorial's model on ``train`` (ids, labels) for
    ``epochs``; ``seed`` drives Haiku's init (``init_key``, if given, instead of ``PRNGKey(seed)``).
    ``jit`` compiles the same step (exact maths up to float reassociation) instead of running it op by
    op as the tutorial does."""
    model, step, params, opt_state = _start(matrix, train[0], pooling, num_classes, seed, init_key)
    if jit:
        step = jax.jit(step)
    for _ in range(epochs):
        params, opt_state = _epoch(step, params, opt_state, *train, batch_size)
    apply = jax.jit(model.apply) if jit else model.apply
    predicted = np.concatenate(
        [
            np.asarray(apply(params, jnp.asarray(test[0][i : i + batch_size]))).argmax(-1)
            for i in range(0, len(test[0]), batch_size)
        ]
    )
    return float((predicted == test[1]).mean())

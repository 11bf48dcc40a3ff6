"""The seed tutorial's training loop, kept for comparison only (never used by glove-exp).

Un-jitted ``value_and_grad`` per batch; the embedding table is a Haiku parameter, so every step
computes a dense gradient and an Adam update for the whole table, and the update is then zeroed
to keep the vectors frozen.
"""

from __future__ import annotations

import time

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax


def tutorial_inputs(
    train_texts: list[str],
    test_texts: list[str],
    lookup: dict[str, int],
    vectors: np.ndarray,
    max_tokens: int,
    whole_table: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The tutorial's own preprocessing: post-padded train ids ``[N, max_tokens]`` (0 is padding)
    into an embedding matrix ``[R, D]`` whose rows are zero where GloVe has no vector.

    The matrix covers a Keras-style vocabulary of every word of train and test or, with
    ``whole_table``, all of ``vectors`` (the same maths, a larger table for the loop to update).
    """
    from glove_exp.text import tokenize_all

    train_tokens = tokenize_all(train_texts)
    if whole_table:
        missing = len(vectors) + 1  # one zero row for every word without a vector
        index = {word: row + 1 for word, row in lookup.items()}
        matrix = np.concatenate(
            [np.zeros((1, vectors.shape[1]), np.float32), vectors, np.zeros((1, vectors.shape[1]), np.float32)]
        )
    else:
        index = {}
        for tokens in train_tokens + tokenize_all(test_texts):
            for word in tokens:
                index.setdefault(word, len(index) + 1)
        missing = 0
        matrix = np.zeros((len(index) + 1, vectors.shape[1]), dtype=np.float32)
        for word, row in index.items():
            if word in lookup:
                matrix[row] = vectors[lookup[word]]
    ids = np.zeros((len(train_tokens), max_tokens), dtype=np.int32)
    for i, tokens in enumerate(train_tokens):
        row = [index.get(word, missing) for word in tokens[:max_tokens]]
        ids[i, : len(row)] = row
    return matrix, ids


def tutorial_epoch_seconds(
    matrix: np.ndarray, tokens: np.ndarray, labels: np.ndarray, pooling: str, num_classes: int, batch_size: int = 1024
) -> float:
    """Seconds for one epoch over ``tokens [N, T]`` with the tutorial's model and loop."""

    def model_fn(x):
        emb = hk.Embed(embedding_matrix=matrix, name="embed")(x)  # [B, T, D]
        pooled = (
            emb.reshape(x.shape[0], -1) if pooling == "flatten" else (emb.mean(1) if pooling == "mean" else emb.sum(1))
        )
        return hk.Linear(num_classes)(hk.Linear(128)(pooled))

    model = hk.without_apply_rng(hk.transform(model_fn))
    params = model.init(jax.random.PRNGKey(0), jnp.asarray(tokens[:1]))
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(params)

    def loss(params, x, y):
        return optax.softmax_cross_entropy(model.apply(params, x), jax.nn.one_hot(y, num_classes)).mean()

    tic = time.perf_counter()
    for start in range(0, len(tokens), batch_size):
        x, y = jnp.asarray(tokens[start : start + batch_size]), jnp.asarray(labels[start : start + batch_size])
        _, grads = jax.value_and_grad(loss)(params, x, y)
        updates, opt_state = optimizer.update(grads, opt_state)
        updates["embed"]["embeddings"] = jnp.zeros_like(updates["embed"]["embeddings"])
        params = optax.apply_updates(params, updates)
    jax.block_until_ready(params)
    return time.perf_counter() - tic

"""Epoch time and peak memory of glove-exp's training on synthetic corpora (one size per process,
so each peak is its own): ``python -m benchmarks.scaling --docs 1000000``."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

import jax
import numpy as np

from benchmarks.memory import status_mb
from glove_exp.config import OptimizerConfig
from glove_exp.features import compute_features
from glove_exp.models import build_model, make_constants
from glove_exp.train import fit, make_optimizer


def measure(num_docs: int, max_tokens: int = 50, dim: int = 50, vocab: int = 100_000, epochs: int = 2) -> dict:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(vocab, dim)).astype(np.float32)
    tokens = rng.integers(2, vocab, size=(num_docs, max_tokens), dtype=np.int32)
    labels = rng.integers(0, 4, size=num_docs, dtype=np.int32)
    model = build_model(
        4, pooling="mean", mask_padding=True, hier_window=3, weighting="none", standardize=False,
        token_hidden_sizes=[], hidden_sizes=[128], activation="none", dropout=0.0, init="haiku", trainable=False,
    )  # fmt: skip
    consts = make_constants(table, None, dim)
    tic = time.perf_counter()
    features = compute_features(model, tokens, consts, 4096)
    feature_s = time.perf_counter() - tic
    val = min(10_000, num_docs // 10)
    steps = -(-num_docs // 1024)
    result = fit(
        model.head, make_optimizer(**asdict(OptimizerConfig()), steps_per_epoch=steps, epochs=epochs),
        (features[val:], labels[val:]), (features[:val], labels[:val]), consts, jax.random.PRNGKey(0),
        epochs=epochs, batch_size=1024, eval_batch_size=4096, shuffle=True, early_stopping_patience=None, progress=False,
    )  # fmt: skip
    return {
        "docs": num_docs,
        "feature_s": feature_s,
        "compile_s": result.compile_time_s,
        "epoch_s": float(np.mean([m.epoch_time_s for m in result.history])),
        "peak_mb": status_mb("VmHWM"),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, required=True)
    print(json.dumps(measure(parser.parse_args().docs)))

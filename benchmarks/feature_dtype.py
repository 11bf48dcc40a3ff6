"""Does storing the precomputed features as 16-bit floats change accuracy? For each pooling and
seed, glove-exp's default run (AG News, GloVe 6B-50d) trains on float32, float16 and bfloat16
features; prints one JSON row per run, then the largest test-accuracy difference from float32:

    python -m benchmarks.feature_dtype [--data-dir DIR] [--poolings mean,sum,max] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from benchmarks.common import ROOT, compose

DTYPES = ("float32", "float16", "bfloat16")


def measure(data_dir: str, pooling: str, seed: int, dtype: str) -> tuple[dict, np.ndarray]:
    """One run's row and its test predictions."""
    from glove_exp.app.stages import StageTimer, fit_model, predictor, prepare

    config = compose(
        [f"dataset.data_dir={data_dir}", "tracking.uri=unused", f"model.pooling={pooling}", f"trainer.seed={seed}"]
        + [f"trainer.feature_dtype={dtype}"]
    )
    prepared = prepare(config, StageTimer())
    result = fit_model(prepared, config)
    predictions = predictor(prepared, result, config).predict_ids(prepared.encoded.ids["test"]).argmax(-1)
    accuracy = float((predictions == prepared.splits.test.labels).mean())
    return {"pooling": pooling, "seed": seed, "dtype": dtype, "test_accuracy": round(accuracy, 6)}, predictions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", default=os.environ.get("GLOVE_EXP_DATA_DIR", str(ROOT.parent / "shared/data/ag_news"))
    )
    parser.add_argument("--poolings", default="mean,sum,max")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    largest = {dtype: 0.0 for dtype in DTYPES[1:]}
    for pooling in args.poolings.split(","):
        for seed in map(int, args.seeds.split(",")):
            reference = None
            for dtype in DTYPES:
                row, predictions = measure(args.data_dir, pooling, seed, dtype)
                if reference is None:
                    reference = row["test_accuracy"], predictions
                else:
                    row["difference_pp"] = round(100 * (row["test_accuracy"] - reference[0]), 3)
                    row["predictions_changed"] = int((predictions != reference[1]).sum())
                    largest[dtype] = max(largest[dtype], abs(row["difference_pp"]))
                print(json.dumps(row), flush=True)
    print(json.dumps({"largest_abs_difference_pp": largest}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmark runs end to end at toy sizes and its tables hold measured, positive figures."""

import json
import re

import pytest

from benchmarks import glove_loading, run

pytestmark = pytest.mark.slow


def test_benchmark_writes_every_table(ag_dir, tmp_path, capsys):
    out = tmp_path / "bench.md"
    argv = [
        "--data-dir",
        str(ag_dir),
        "--epochs",
        "2",
        "--sizes",
        "2000",
        "--glove-words",
        "3000",
        "--text-docs",
        "1000",
        "--out",
        str(out),
    ]
    assert run.main(argv) == 0
    report = out.read_text()
    assert report in capsys.readouterr().out
    for heading in ("Training epoch", "Text pipeline", "GloVe 6B-50d text loading", "Scaling"):
        assert f"## {heading}" in report
    speedups = [float(x) for x in re.findall(r"\| (\d+(?:\.\d+)?)x \|", report)]
    assert len(speedups) == 4 and all(s > 0 for s in speedups)  # mean and flatten, two tutorial tables
    assert "| 2000 |" in report and "| 1000 |" in report


def test_loaders_agree_and_the_cache_is_used(tmp_path):
    rows = glove_loading.bench_glove_loading(tmp_path, num_words=2000)
    assert [r["loader"] for r in rows] == list(glove_loading.LOADERS)
    assert all(r["words"] == 2000 and r["seconds"] > 0 and r["peak_mb"] >= 0 for r in rows)
    assert len(list((tmp_path / "cache" / "vectors").iterdir())) == 1
    json.dumps(rows)  # what python -m benchmarks.glove_loading prints

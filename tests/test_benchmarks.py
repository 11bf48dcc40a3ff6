"""The benchmark runs end to end at toy sizes and its tables hold measured, positive figures."""

import json
import re

import pytest

from benchmarks import glove_loading, many_classes, run, seeds, serving

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


def test_seeds_tables_hold_every_pooling_and_seed(ag_dir, tmp_path, capsys):
    out = tmp_path / "seeds.md"
    assert seeds.main(["--data-dir", str(ag_dir), "--seeds", "0,1", "--epochs", "1", "--out", str(out)]) == 0
    report = out.read_text()
    assert report in capsys.readouterr().out
    summary, per_seed = report.split("## Per seed")
    rows = {
        line.split("|")[1].strip(): line
        for line in summary.splitlines()
        if line.startswith("| ") and "pooling" not in line
    }
    assert list(rows) == list(seeds.POOLINGS)
    seed_rows = [
        line.split("|")[1:5] for line in per_seed.splitlines() if line.startswith("| ") and "pooling" not in line
    ]
    assert [(p.strip(), int(s)) for p, s, *_ in seed_rows] == [(p, s) for p in seeds.POOLINGS for s in (0, 1)]
    for pooling, line in rows.items():
        # seeds; mean, std, min and max of the tutorial loop, then of glove-exp; the difference of means
        count, *sides, difference = [float(x) for x in re.findall(r"[-+]?\d+(?:\.\d+)?", line)]
        assert count == 2 and len(sides) == 8
        values = [[float(row[2 + side]) for row in seed_rows if row[0].strip() == pooling] for side in (0, 1)]
        for (mean, std, low, high), accuracies in zip((sides[:4], sides[4:]), values):
            assert 0 <= low <= mean <= high <= 100 and std >= 0
            assert (low, high) == (min(accuracies), max(accuracies))
        assert difference == pytest.approx(sides[4] - sides[0], abs=0.011)


def test_serving_rows_compare_the_policies_and_bound_the_840b_size(ag_dir, capsys):
    argv = ["--data-dir", str(ag_dir), "--seeds", "0", "--poolings", "mean", "--serving-words", "20000"]
    assert serving.main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    accuracy = {row["policy"]: row for row in rows if row["kind"] == "accuracy"}
    assert list(accuracy) == ["old", "train+20000"]
    for row in accuracy.values():
        assert row["served_argmax_agreement"] == 1.0 and row["served_accuracy"] == row["in_run_accuracy"]
        assert row["model_bytes"] > row["constants_bytes"] > row["vocab_size"] * 50 * 2
    [bound] = [row for row in rows if row["kind"] == "size_840b_computed"]
    assert bound["rows_at_most"] == serving.TUTORIAL_840B_WORDS + 20000 + 2 and bound["under_60_mb"]


def test_stand_in_has_the_840b_shape_and_loads_first_and_cached(tmp_path, capsys):
    path = tmp_path / "glove.stand-in.300d.txt"
    glove_loading.main(["--stand-in", "840b", "--lines", "3000", "--out", str(path)])
    built = json.loads(capsys.readouterr().out)
    assert built["lines"] == 3000 and built["bytes"] == path.stat().st_size
    rows = [row.rsplit(" ", 300) for row in path.read_text(encoding="utf-8").split("\n")[:-1]]
    assert len(rows) == 3000 and all(len(row) == 301 for row in rows)
    words = [word for word, *_ in rows]
    assert len(set(words)) == 3000 and sum(" " in word for word in words) >= 2
    values = [value for _, *vector in rows for value in vector]
    assert all(float(f"{float(v):.5g}") == float(v) for v in values[:30_000])  # 840B's five significant digits
    assert 8.3 < (sum(map(len, values)) + len(values)) / len(values) < 8.9  # bytes a value, with its space
    again = tmp_path / "again.txt"
    glove_loading.write_stand_in(again, 3000)
    assert again.read_bytes() == path.read_bytes()  # seeded
    loads = glove_loading.bench_vectors(path, 300, tmp_path / "cache")
    assert [row["loader"] for row in loads] == list(glove_loading.LOADERS[1:])
    assert all(r["words"] == 3000 and r["memory_mapped"] and 0 < r["load_s"] <= r["seconds"] for r in loads)
    assert all(r["cpu_s"] > 0 and r["peak_mb"] >= 0 for r in loads)


def test_stand_in_words_are_the_6b_vocabulary_cased_then_compounds():
    words = glove_loading.stand_in_words(1_300_000)
    assert len(words) == len(set(words)) == 1_300_000
    plain = [word for word in words if " " not in word]
    assert plain[:3] == ["the", ",", "."] and "The" in plain and "THE" in plain
    assert len(plain) == 1_300_000 - 1_300_000 * glove_loading.SPACED_PER_MILLION // 1_000_000
    vocabulary = set(plain[:400_000])
    assert all(re.fullmatch(r".+[-_.].+", word) and word not in vocabulary for word in plain[-100:])


def test_many_classes_table_has_a_row_per_class_count_relative_to_the_first(tmp_path, capsys):
    out = tmp_path / "many.md"
    argv = ["--classes", "3,30", "--train", "300", "--test", "90", "--epochs", "1", "--out", str(out)]
    assert many_classes.main(argv) == 0
    report = out.read_text()
    assert report in capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in report.splitlines() if re.match(r"\| +\d", line)]
    assert [int(row[0]) for row in rows] == [3, 30]
    assert all(float(value) > 0 for row in rows for value in row[1:])
    assert [float(row[-2]) for row in rows][0] == 1.0  # the log stage's ratio to the first count's


def test_sweep_speed_reports_the_ratio_and_every_stage_once():
    import pandas as pd

    from benchmarks.sweep_speed import report

    times = pd.DataFrame(
        [{"time/train_s": 2.0, "time/compile_s": 0.5, "time/log_s": 0.5, "time/epoch_s": 0.1, "time/total_s": 3.0}] * 2
    )
    text = report(wall=10.0, floor=2.5, times=times, jobs=2)
    assert "2 jobs: sweep 10.0 s wall, training floor 2.5 s, ratio 4.0x" in text
    table = [line.split("|")[1:3] for line in text.splitlines() if line.startswith("|")][2:]  # past header, rule
    rows = {stage.strip(): float(seconds) for stage, seconds in table}
    assert rows == {
        "train": 4.0,
        "log": 1.0,
        "compile (part of train)": 1.0,
        "outside the jobs' timers (start-up, imports, Hydra, the parent run)": 4.0,
    }

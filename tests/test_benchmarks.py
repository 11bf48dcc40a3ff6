"""The benchmark runs end to end at toy sizes and its tables hold measured, positive figures."""

import json
import re

import numpy as np
import pandas as pd
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
    summary, paired, per_seed = sections(report, "## Paired differences", "## Per seed")
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
    assert [row.split("|")[1].strip() for row in table_rows(paired)] == list(seeds.POOLINGS)  # one pair per pooling
    runs = pd.read_csv(out.with_suffix(".csv"))  # every run: 2 sides x 3 poolings x 2 seeds
    assert len(runs) == 2 * len(seeds.POOLINGS) * 2 and list(runs.side.unique()) == list(seeds.SIDES)


def sections(report: str, *headings: str) -> list[str]:
    """``report`` cut at each of ``headings``, in order."""
    parts = []
    for heading in headings:
        before, report = report.split(heading)
        parts.append(before)
    return [*parts, report]


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ") and "pooling" not in line]


def test_seeds_parse_ranges_and_lists():
    assert seeds.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert seeds.parse_seeds("0,1, 2") == [0, 1, 2]
    assert seeds.parse_seeds("3-4,7,9-10") == [3, 4, 7, 9, 10]


def test_paired_differences_give_the_mean_and_t_interval_of_each_seed_difference():
    a, b = [80.0, 81.0, 82.0, 83.0], [79.0, 81.5, 80.0, 82.5]  # differences 1, -0.5, 2, 0.5
    rows = [{"pooling": "mean", "seed": s, "side": side, "accuracy": acc}
            for side, values in (("tutorial loop", a), ("glove-exp", b)) for s, acc in enumerate(values)]  # fmt: skip
    rows += [{"pooling": "sum", "seed": s, "side": side, "accuracy": 70.0 + s} for side in ("tutorial loop", "glove-exp")
             for s in range(3)]  # fmt: skip
    table = seeds.paired_differences(pd.DataFrame(rows))  # A: the side that comes later
    mean = table[table.pooling == "mean"].iloc[0]
    assert (mean.A, mean.B, mean.n) == ("glove-exp", "tutorial loop", 4)
    differences = np.subtract(b, a)
    half = 3.182446305284263 * differences.std(ddof=1) / 2  # t(0.975, 3) * sd / sqrt(4)
    assert mean["mean"] == pytest.approx(differences.mean())
    assert (mean.ci_low, mean.ci_high) == pytest.approx((differences.mean() - half, differences.mean() + half))
    same = table[table.pooling == "sum"].iloc[0]  # identical sides: a zero-width interval at 0
    assert (same.n, same["mean"], same.ci_low, same.ci_high) == (3, 0.0, 0.0, 0.0)
    text = seeds.paired_table(table)
    assert text["A − B"].tolist() == ["glove-exp − tutorial loop"] * 2
    assert text["95 % t interval"].iloc[1] == "[+0.00, +0.00]"


def test_seeds_tutorial_loop_from_glove_exp_init_key_matches_glove_exp(ag_dir, tmp_path):
    """Started from the same parameters, the tutorial's loop and glove-exp train the same maths: the
    same test accuracy up to one test text (float reassociation), whatever the features' dtype."""
    out = tmp_path / "seeds.md"
    argv = ["--data-dir", str(ag_dir), "--seeds", "0-1", "--epochs", "2", "--poolings", "mean",
            "--paired-init", "--feature-dtypes", "float16,float32", "--out", str(out)]  # fmt: skip
    assert seeds.main(argv) == 0
    runs = pd.read_csv(out.with_suffix(".csv")).pivot_table(index="seed", columns="side", values="accuracy")
    assert list(runs.columns) == sorted([*seeds.SIDES[:1], seeds.PAIRED_INIT, "glove-exp, float16 features",
                                         "glove-exp, float32 features"])  # fmt: skip
    one_text = 100 / 120  # the test split's rows
    for dtype in ("float16", "float32"):
        assert (runs[f"glove-exp, {dtype} features"] - runs[seeds.PAIRED_INIT]).abs().max() <= one_text + 1e-9
    paired = sections(out.read_text(), "## Paired differences", "## Per seed")[1]
    assert len(table_rows(paired)) == 6  # every two of the four sides


def test_serving_rows_compare_the_policies_and_bound_the_840b_size(ag_dir, capsys):
    argv = ["--data-dir", str(ag_dir), "--seeds", "0", "--poolings", "mean", "--serving-words", "20000"]
    assert serving.main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    accuracy = {row["policy"]: row for row in rows if row["kind"] == "accuracy"}
    assert list(accuracy) == ["old", "train+20000"]
    for row in accuracy.values():
        assert row["served_argmax_agreement"] == 1.0 and row["served_accuracy"] == row["in_run_accuracy"]
        assert row["model_bytes"] > row["table_bytes"] > row["vocab_size"] * 50 * 2 > row["constants_bytes"]
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

    from benchmarks.sweep_speed import Measurement, StartUp, Timing, report

    times = pd.DataFrame(
        [{"time/train_s": 2.0, "time/compile_s": 0.5, "time/log_s": 0.5, "time/epoch_s": 0.1, "time/total_s": 3.0}] * 2
    )
    start = StartUp(imports=1.5, composing=0.25)
    sweep, floor = Timing(wall=10.0, cpu=12.5, kernel=1.5), Timing(wall=2.5, cpu=4.5, kernel=0.25)
    text = report([Measurement(sweep, times, floor, start)], jobs=2)
    assert "median" not in text and "Every run" not in text
    assert "2 jobs: sweep 10.0 s wall, training floor 2.5 s, ratio 4.0x; everything but training 3.00 s per job" in text
    assert (
        "CPU: the sweep 12.5 s (1.25 cores busy on average; 1.5 s in the kernel), its floor 4.5 s (1.80 cores; "
        "0.2 s in the kernel)"
    ) in text
    table = [line.split("|")[1:3] for line in text.splitlines() if line.startswith("|")][2:]  # past header, rule
    rows = {stage.strip(): float(seconds) for stage, seconds in table}
    assert rows == {
        "train": 4.0,
        "log": 1.0,
        "compile (part of train)": 1.0,
        "outside the jobs' timers (start-up, imports, Hydra, the parent run)": 4.0,
    }
    assert (
        "Start-up, measured apart in a new interpreter: imports 1.5 s, composing the 2 job configs 0.2 s. "
        "Of a 2x budget (5.0 s), the sweep's training (4.0 s) and these leave -0.8 s (-0.38 s per job) for "
        "everything else."
    ) in text


def test_sweep_speed_leads_with_the_run_of_the_median_ratio_and_lists_every_run():
    import pandas as pd

    from benchmarks.sweep_speed import Measurement, StartUp, Timing, report

    def run(wall: float, floor: float, train: float) -> Measurement:
        times = pd.DataFrame([{"time/train_s": train, "time/log_s": 1.0, "time/total_s": train + 1.0}])
        sweep, floor_timing = Timing(wall, cpu=wall, kernel=wall / 20), Timing(floor, cpu=floor, kernel=0.0)
        return Measurement(sweep, times, floor_timing, StartUp(wall / 10, 1.0))

    text = report([run(30.0, 10.0, 6.0), run(20.0, 10.0, 4.0), run(25.0, 10.0, 5.0), run(40.0, 10.0, 8.0)], jobs=1)
    # ratios 3.0, 2.0, 2.5, 4.0: the lower median is the third run's 2.5
    assert (
        "The median of 4 runs: 1 jobs: sweep 25.0 s wall, training floor 10.0 s, ratio 2.5x; everything but training 20.00 s per job"
        in text
    )
    stages = {
        row.split("|")[1].strip(): row.split("|")[2].strip()
        for row in text.split("Every run")[0].splitlines()
        if row.startswith("| ")
    }
    assert (
        stages["train"] == "5.0"
        and stages["outside the jobs' timers (start-up, imports, Hydra, the parent run)"] == "19.0"
    )
    every = [
        line.split("|")[1:-1]
        for line in text.split("Every run, in order:")[1].splitlines()
        if re.match(r"\| +\d", line)
    ]
    assert [[float(value) for value in row[:4]] + [float(row[-2]), float(row[-1])] for row in every] == [
        [1, 30.0, 10.0, 3.0, 1.5, 4.0], [2, 20.0, 10.0, 2.0, 1.0, 3.0], [3, 25.0, 10.0, 2.5, 1.2, 3.5],
        [4, 40.0, 10.0, 4.0, 2.0, 5.0],
    ]  # fmt: skip
    assert "imports 2.5 s, composing the 1 job configs 1.0 s" in text  # the median run's


def test_a_sweeps_start_up_is_measured_in_a_new_interpreter(tmp_path):
    """Its imports and its jobs' composition, positive; the jobs' configs composed as the sweep's are."""
    from benchmarks.sweep_speed import job_overrides, start_up

    axes = {"model.pooling": ["mean", "sum"], "trainer.seed": ["0"]}
    assert job_overrides(tmp_path, axes) == [
        ["experiment=seed_tutorial", "model.pooling=mean", "trainer.seed=0", f"dataset.data_dir={tmp_path}"],
        ["experiment=seed_tutorial", "model.pooling=sum", "trainer.seed=0", f"dataset.data_dir={tmp_path}"],
    ]
    start = start_up(tmp_path, axes)
    assert start.imports > 0 and start.composing > 0 and start.total == start.imports + start.composing


def test_sweep_speed_without_its_data_is_one_line(tmp_path, capsys):
    from benchmarks.sweep_speed import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--data-dir", str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.endswith(
        f"--data-dir {tmp_path / 'missing'} is not a folder: point it at AG News' train and test files"
    )


@pytest.mark.parametrize("module", ["sweep_speed", "run", "seeds", "many_classes"])
def test_a_report_written_to_a_folder_is_one_line(module, tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"benchmarks.{module}").main
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path)])
    assert exit_info.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.endswith(f"{tmp_path} is a folder; name the report's file, e.g. {tmp_path / 'report.md'}")


def test_sweep_speed_needs_a_run(tmp_path, capsys):
    from benchmarks.sweep_speed import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--data-dir", str(tmp_path), "--repeats", "0"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("--repeats 0: give 1 or more")

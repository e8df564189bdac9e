"""The benchmark's own arithmetic (core/cli/bench.py). The benchmark run end to end on a small
network is in tests/e2e/test_bench.py."""

import pytest

from core.cli.bench import percentiles


def test_percentiles_nearest_rank():
    assert percentiles([0.001 * i for i in range(1, 21)]) == {"p50_ms": 10.5, "p95_ms": 19.0, "max_ms": 20.0, "reps": 20}


def test_fewer_than_twenty_calls_have_no_p95_only_their_slowest():
    # nearest rank over 3 calls is the 3rd of 3: calling it p95 would dress the slowest call up
    assert percentiles([0.002, 0.001, 0.108]) == {"p50_ms": 2.0, "p95_ms": None, "max_ms": 108.0, "reps": 3}
    assert percentiles([0.001] * 19)["p95_ms"] is None and percentiles([0.001] * 20)["p95_ms"] == 1.0


def test_query_table_prints_a_dash_and_says_why_when_p95_is_missing():
    from core.cli.bench import format_report

    def report(reps):
        latency = {"scorecard network month": percentiles([0.001 * i for i in range(1, reps + 1)])}
        queries = {"seconds": 1.0, "cpu_s": 1.0, "peak_rss_mb": 1.0, "result": {"selection": "x", "latency": latency}}
        return format_report({"patients": 10, "months": 1, "database": "sqlite", "machine": {}, "steps": {"queries": queries}}).splitlines()

    few, many = report(3), report(20)
    row = next(line for line in few if line.startswith("scorecard network month"))
    assert row.split()[-3:] == ["2.0", "-", "3.0"] and any("p95 needs at least 20 calls" in line for line in few)
    row = next(line for line in many if line.startswith("scorecard network month"))
    assert row.split()[-3:] == ["10.5", "19.0", "20.0"] and not any("p95 needs" in line for line in many)


def test_click_table_marks_times_over_target_and_reports_widgets_it_could_not_drive():
    from core.cli.bench import format_clicks

    lines = format_clicks({
        "pages/trends.py": {"role": "executive", "first_render_s": 2.5, "first_render_cpu_s": 0.4, "load": 9.0, "error": None,
                            "widgets": [{"widget": "selectbox 'Outcome'", "s": 1.2, "cpu_s": 0.3, "error": None},
                                        {"widget": "selectbox 'Month'", "s": 0.2, "cpu_s": 0.1, "error": None}]},
        "pages/upload.py": {"role": "admin", "first_render_s": 0.1, "first_render_cpu_s": 0.1, "load": 9.0, "error": None,
                            "widgets": [{"widget": "pills 'Format'", "s": None, "cpu_s": None, "error": "TypeError: x"}]},
    })  # fmt: skip
    trends, upload = lines[1], lines[2]
    assert "2.50! (0.40)" in trends and "selectbox 'Outcome' 1.20! (0.30)" in trends and "selectbox 'Month' 0.20 (0.10)" in trends
    assert "0.10  (0.10)" in upload and "pills 'Format' (TypeError: x)" in upload


def test_columnar_load_reads_every_file_with_duckdb_or_else_pyarrow(tmp_path, monkeypatch):
    import sys

    from core.cli.bench import columnar_load

    (tmp_path / "a.csv").write_text("id,day,x\nA,2024-01-05,1.5\nB,2024-02-01,\n")
    (tmp_path / "b.csv").write_text("id\nC\n")
    with_duckdb = columnar_load(tmp_path)
    monkeypatch.setitem(sys.modules, "duckdb", None)  # import duckdb now raises ImportError
    without = columnar_load(tmp_path)

    assert with_duckdb["rows"] == without["rows"] == 3 and with_duckdb["files"] == 2
    assert with_duckdb["engine"].startswith("duckdb")
    assert without["engine"].startswith("pyarrow") and "duckdb is not installed" in without["engine"]


def test_report_gives_the_import_over_columnar_ratio_and_the_derive_apart():
    from core.cli.bench import format_report

    step = {"seconds": 10.0, "cpu_s": 8.0, "peak_rss_mb": 100.0}
    report = {"patients": 10, "months": 2, "database": "sqlite", "machine": {"cpus": 2}, "steps": {
        "import": {**step, "seconds": 30.0, "rows_per_s": 1, "result": {"rows": 30}},
        "columnar": {**step, "ratio": 3.0, "cpu_ratio": 2.5, "result": {"rows": 30, "engine": "duckdb x read_csv"}},
        "assign": {**step, "result": {"rows": 1}}, "activity": {**step, "result": {"rows": 1}}, "cells": {**step, "result": {"rows": 1}},
    }}  # fmt: skip
    text = format_report(report)
    assert "import (validate + load) / columnar" in text and "3.0x" in text and "2.5x" in text
    derive = next(line for line in text.splitlines() if "derive (assign + activity + cells)" in line)
    assert derive.split()[-3:] == ["30.0", "24.0", "100"]


def test_each_step_result_is_said_as_it_ends_so_a_later_failure_keeps_it(monkeypatch, tmp_path):
    """A 1,000,000-patient run takes an hour: when its last step fails, the steps before must not be lost."""
    import json

    from core.cli import bench

    def fake_step(name, args):
        if name == "pages":
            raise RuntimeError("bench step pages failed")
        return {"seconds": 1.0, "cpu_s": 1.0, "peak_rss_mb": 10.0, "result": {"rows": 3, "step": name}}

    said = []
    monkeypatch.setattr(bench, "run_step", fake_step)
    monkeypatch.setattr(bench, "machine_speed", lambda folder: {})
    with pytest.raises(RuntimeError):
        bench.run_bench(10, 2, "sqlite://", tmp_path, steps=("assign", "cells", "pages"), progress=said.append)
    done = {text.split(": ", 1)[0]: json.loads(text.split(": ", 1)[1]) for text in said if ": " in text}
    assert done["assign"]["result"]["step"] == "assign" and done["cells"]["result"]["step"] == "cells"
    assert "pages" in said and "pages" not in done


def test_new_month_table_lists_every_run_and_counts_the_median():
    from core.cli.bench import format_new_month

    def run(seconds):
        return {"rows": 10, "import_s": 1.0, "derive_s": seconds - 1.0, "seconds": seconds, "cpu_s": seconds, "load_average": [1.0],
                "mode": "months", "why": None}  # fmt: skip

    before, runs = run(200.0), [run(31.0), run(29.0), run(28.0)]
    lines = format_new_month({"months": 25, "new_month": "2026-11", "before": before, "after": runs[1], "after_runs": runs,
                              "ratios": [0.155, 0.145, 0.14], "ratio": 0.145, "cpu_ratio": 0.145})  # fmt: skip
    assert [line.split()[:6] for line in lines if line.startswith("the new month")] == [
        ["the", "new", "month,", "run", str(i), "of"] for i in (1, 2, 3)]  # fmt: skip
    assert lines[-1].startswith("ratio: 14.5% wall (median of 3 runs: 15.5%, 14.5%, 14.0%)") and "met in wall time" in lines[-1]
    one = format_new_month({"months": 25, "new_month": "2026-11", "before": before, "after": runs[0], "ratio": 0.155, "cpu_ratio": 0.155})
    assert any(line.startswith("the new month ") for line in one) and "median" not in one[-1] and "NOT met" in one[-1]


def test_machine_speed_times_three_tasks_and_the_report_gives_them_at_start_and_end(monkeypatch, tmp_path):
    """BENCHMARKS.md compares runs of hours when this machine was 2.5x slower: each run says how
    quick the machine was at its start and end, by the same three tasks."""
    from core.cli import bench

    for name, value in (("SPEED_LOOP", 100_000), ("SPEED_KEYS", 1_000), ("SPEED_SEARCHES", 5_000), ("SPEED_WRITE_MIB", 8)):
        monkeypatch.setattr(bench, name, value)
    speed = bench.machine_speed(tmp_path / "out")
    assert set(speed) == {"python_loop_s", "sqlite_searches_s", "write_mb_s"} and all(v > 0 for v in speed.values())
    assert list((tmp_path / "out").iterdir()) == []  # the written file is gone

    calls, measure = [], bench.machine_speed
    monkeypatch.setattr(bench, "machine_speed", lambda folder: calls.append(folder) or {**speed, "python_loop_s": len(calls)})
    report = bench.run_bench(10, 2, "sqlite://", tmp_path / "run", steps=())
    assert calls == [tmp_path / "run"] * 2  # at the start and at the end, on the benchmark's folder
    assert report["machine"]["speed"]["python_loop_s"] == 1 and report["machine"]["speed_end"]["python_loop_s"] == 2
    text = bench.format_report(report).splitlines()
    assert "speed" not in text[1] and text[2] == (
        f"machine speed at the start / end: a Python loop of 0.1 M additions 1.00 / 2.00 s; 5,000 SQLite key searches "
        f"{speed['sqlite_searches_s']:.3f} / {speed['sqlite_searches_s']:.3f} s; 8 MiB written and synced at "
        f"{speed['write_mb_s']:,} / {speed['write_mb_s']:,} MB/s"
    )
    # a disk that refuses the write leaves that figure out, not the run
    (tmp_path / "file").write_text("")
    refused = measure(tmp_path / "file" / "out")  # a folder inside a file: NotADirectoryError
    assert refused["write_mb_s"] is None and refused["python_loop_s"] > 0
    assert bench.speed_text({"machine": {"speed": refused}}).endswith("8 MiB written and synced at - MB/s")
    # a report of before this check (BENCHMARKS.md's earlier runs) reads as before
    assert bench.speed_text({"machine": {"cpus": 2}}) is None
    assert bench.format_report({"patients": 10, "months": 2, "database": "sqlite", "machine": {"cpus": 2}, "steps": {}}).splitlines()[2] == ""

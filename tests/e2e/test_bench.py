"""The benchmark (core/cli/bench.py) runs end to end on a small network and reports every figure.

It checks that the benchmark works and reports, not how fast anything is (BENCHMARKS.md has the
figures at 100,000 patients).
"""

import math

import pytest

from core.cli import bench
from core.cli.bench import format_report, run_bench
from core.views.worklist import load_worklist_rules
from ui.bench_pages import BIGGEST_PAGE, PAGES, REVIEW_PAGE, WORKLIST_PAGE

STEPS = ("generate", "import", "assign", "activity", "cells", "queries", "baseline", "pages", "new_month")


@pytest.fixture(autouse=True)
def quick_speed_check(monkeypatch):
    """The machine's speed check at a run's start and end, on a hundredth of the loop and searches
    and 8 of the 256 MiB (about 0.1 s instead of 5 s a check): these tests check that it is
    reported, not the machine."""
    for name, value in (("SPEED_LOOP", 200_000), ("SPEED_KEYS", 1_000), ("SPEED_SEARCHES", 2_000), ("SPEED_WRITE_MIB", 8)):
        monkeypatch.setattr(bench, name, value)


def test_small_benchmark_reports_every_figure(tmp_path):
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    report = run_bench(600, 13, url, tmp_path, end_month="2026-10", reps=2, baseline_reps=1)

    steps = report["steps"]
    assert set(steps) == {*STEPS, "columnar"}  # the import is compared with a columnar load of the same bundle
    for name in STEPS:
        assert steps[name]["seconds"] > 0 and steps[name]["peak_rss_mb"] >= steps[name]["peak_tree_rss_mb"] > 0, name
    assert steps["import"]["result"]["rows"] > 0 and steps["import"]["rows_per_s"] > 0
    assert steps["cells"]["result"]["rows"] > 0
    columnar = steps["columnar"]
    assert columnar["result"]["rows"] >= steps["import"]["result"]["rows"] and columnar["result"]["files"] >= 10
    assert columnar["ratio"] == round(steps["import"]["seconds"] / columnar["seconds"], 1) > 0

    latency = steps["queries"]["result"]["latency"]
    for kind in ("scorecard network month", "scorecard network 12m", "scorecard practice quarter",
                 "scorecard team+subgroup 12m", "cost PMPM team+subgroup 12m", "trend network by month (member-months, cost)",
                 "worklist member_counts (biggest team)", "worklist team_worklist (~2,500 patients)",
                 "worklist team_worklist (whole team nearest 2,500)",
                 "patient page patient_record"):  # fmt: skip
        assert latency[kind]["max_ms"] >= latency[kind]["p50_ms"] > 0 and latency[kind]["p95_ms"] is None, kind  # 2 calls: no p95

    baseline = steps["baseline"]["result"]
    assert baseline["ratio"] > 0
    naive, product = baseline["naive"]["figures"], baseline["product"]["figures"]
    assert naive["cost_total_pmpm_usd"] == product["cost_total_pmpm_usd"]
    for figure in ("admissions_per_1000", "hba1c_control_pct"):  # same, unless the product suppresses a count of 1-10
        assert naive[figure] == product[figure] or (math.isnan(product[figure]) and not math.isnan(naive[figure])), figure

    pages = steps["pages"]["result"]
    near = [name for name in pages if name.startswith((WORKLIST_PAGE, REVIEW_PAGE, BIGGEST_PAGE))]
    assert sorted(set(pages) - set(near)) == sorted(page for _, page in PAGES) and len(near) == 3
    team, subgroup, members = steps["queries"]["result"]["selection"]["worklist"]
    worklist, review = (pages[f"{page} ({team} {subgroup}, {members:,} patients)"] for page in (WORKLIST_PAGE, REVIEW_PAGE))
    assert worklist["role"] == "clinician" and worklist["rows"] == members > 0  # the list itself
    big_team, big_subgroup, big = steps["queries"]["result"]["selection"]["worklist_biggest"]
    biggest = pages[f"{BIGGEST_PAGE} ({big_team} {big_subgroup}, {big:,} patients)"]
    assert biggest["rows"] == big >= members and big <= load_worklist_rules().max_patients  # the longest list it shows
    assert review["role"] == "team_leader" and review["rows"] > 0
    assert all(r["error"] is None and r["render_s"] > 0 for r in pages.values()), pages

    new_month = steps["new_month"]["result"]  # the bundle's last month imported into a store holding the others
    assert new_month["new_month"] == "2026-10" and new_month["before"]["rows"] > new_month["after"]["rows"] > 0
    assert new_month["after"]["mode"] != "full" and 0 < new_month["cpu_ratio"] < 1, new_month
    # the month three times, each on the store the full pipeline left: the same rows each time, the median counts
    runs = new_month["after_runs"]
    assert len(runs) == 3 and {r["rows"] for r in runs} == {new_month["after"]["rows"]} and all(r["mode"] != "full" for r in runs)
    assert new_month["after"] == sorted(runs, key=lambda r: r["seconds"])[1]
    assert new_month["ratio"] == sorted(new_month["ratios"])[1] and len(new_month["ratios"]) == 3

    text = format_report(report)
    assert "naive baseline" in text and "pages/review.py" in text and "peak MB" in text
    speed = report["machine"]["speed"], report["machine"]["speed_end"]  # the machine's speed at the start and the end
    assert all(s["python_loop_s"] > 0 and s["sqlite_searches_s"] > 0 and s["write_mb_s"] > 0 for s in speed)
    assert "machine speed at the start / end: a Python loop of 0.2 M additions" in text
    assert "import (validate + load) / columnar" in text and "derive (assign + activity + cells)" in text

    again = run_bench(600, 13, url, tmp_path, reuse=True, reps=1, steps=("generate", "import"))
    assert again["steps"] == {"generate": {"reused": True}, "import": {"reused": True}}


def test_engines_run_the_derive_steps_each_and_compare_what_they_stored(tmp_path):
    url = f"sqlite:///{tmp_path / 'engines.db'}"
    report = run_bench(200, 4, url, tmp_path, end_month="2026-10", steps=("generate", "import", "assign", "cells"),
                       engines=("dask", "inprocess"))  # fmt: skip
    assert set(report["engines"]) == {"dask", "inprocess"} and "assign" not in report["steps"]
    for runs in report["engines"].values():
        assert runs["assign"]["result"]["rows"] > 0 and runs["cells"]["result"]["rows"] > 0
        assert runs["cells"]["cpu_s"] > 0 and runs["cells"]["cpu_tree_s"] > 0 and len(runs["cells"]["load"]) == 2
        assert set(runs["checksum"]) == {"subgroup_assignment", "risk_score", "cell"}
    assert report["engines"]["dask"]["checksum"] == report["engines"]["inprocess"]["checksum"]
    assert report["engines_identical"] is True
    assert "engines identical (subgroup_assignment, risk_score, cell): yes" in format_report(report)

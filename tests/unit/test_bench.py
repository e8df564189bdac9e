"""The benchmark's own arithmetic (core/cli/bench.py). The benchmark run end to end on a small
network is in tests/e2e/test_bench.py."""

from core.cli.bench import percentiles


def test_percentiles_nearest_rank():
    assert percentiles([0.001 * i for i in range(1, 21)]) == {"p50_ms": 10.5, "p95_ms": 19.0, "reps": 20}


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

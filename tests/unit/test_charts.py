"""Figures show imported names as text: plotly's label markup never comes from the data."""

import pandas as pd

from core.views.charts import caterpillar_figure, review_value_map_figure, value_map_figure

LINK = '<a href="http://host/beacon">Team</a> & <b>bold</b>'


def _strings(fig) -> list[str]:
    out = []
    for trace in fig.data:
        for attr in ("x", "y", "text", "customdata"):
            values = getattr(trace, attr, None)
            if values is not None:
                out += [str(v) for v in values]
    return out


def test_caterpillar_team_labels_are_escaped():
    teams = pd.DataFrame({"team_id": ["T1"], "value": [1.0], "ci_low": [0.5], "ci_high": [1.5], "flag": ["as expected"]})
    shown = _strings(caterpillar_figure(teams, 1.0, {"T1": LINK}))
    assert not any("<a" in s or "<b>" in s for s in shown)
    assert any("&lt;a href" in s for s in shown)


def test_value_maps_escape_team_names():
    points = pd.DataFrame({"team_id": ["T1"], "subgroup": ["complex"], "cost_pmpm_usd": [100.0], "outcome_index": [50.0],
                           "team": [LINK], "month": [pd.Timestamp("2026-10-01")],
                           "previous_cost_pmpm_usd": [90.0], "previous_outcome_index": [48.0]})
    review_points = points.rename(columns={"outcome_index": "value_index"}).assign(index_low=40.0, index_high=60.0)
    for fig in (value_map_figure(points, {}, {"T1": LINK}), review_value_map_figure(review_points, "T1")):
        assert not any("<a" in s for s in _strings(fig))


def test_funnel_team_labels_are_escaped_and_limits_drawn():
    from core.views.charts import funnel_figure

    teams = pd.DataFrame({"team_id": ["T1"], "value": [1.2], "volume": [40.0], "funnel_position": ["within 95% limits"]})
    funnel = pd.DataFrame({"volume": [1.0, 50.0], "low_95": [0.0, 0.7], "high_95": [5.6, 1.3], "low_998": [0.0, 0.6],
                           "high_998": [9.0, 1.5]})  # fmt: skip
    fig = funnel_figure(teams, funnel, 1.0, {"T1": LINK})
    assert not any("<a" in s for s in _strings(fig))
    assert {t.name for t in fig.data} >= {"95% limits", "99.8% limits", "within 95% limits"}


def test_trend_lines_draw_interval_bands_and_outcomes_with_data_first():
    from core.views.charts import trend_lines_figure
    from core.views.trends import outcomes_with_data

    months = pd.to_datetime(["2026-01-01", "2026-02-01"])
    figures = pd.DataFrame({"month": list(months) * 3, "subgroup": ["all"] * 6, "kind": ["rate_per_1000_member_years"] * 6,
                            "metric": ["mortality"] * 2 + ["ed_visits"] * 2 + ["admissions"] * 2,
                            "value": [0.0, None, 400.0, 380.0, 0.0, 90.0], "ci_low": [0.0, None, 300.0, 290.0, 0.0, 40.0],
                            "ci_high": [30.0, None, 500.0, 470.0, 30.0, 150.0]})  # fmt: skip
    assert outcomes_with_data(figures) == ["ed_visits", "admissions", "mortality"]
    fig = trend_lines_figure(figures.loc[figures["metric"] == "ed_visits"], {})
    bands = [t for t in fig.data if t.name and t.name.endswith("95% interval")]
    assert len(bands) == 2 and bands[1].fill == "tonexty"

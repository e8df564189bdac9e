"""The value index (core.metrics.value.value_index): measures scored against their targets on one
measure set for every team compared, with its parts and an interval; worked by hand."""

import numpy as np
import pandas as pd
import pytest

from core.metrics.value import measure_score, value_index, value_map


def test_measure_score_against_target():
    # higher is better: 100 x value / target; lower is better: 100 x (2 - value / target); clipped to [0, 200]
    scores = measure_score([56.0, 35.0, 300.0, 500.0, 0.0, 1000.0], [70.0, 70.0, 400.0, 400.0, 400.0, 400.0],
                           [True, True, False, False, False, False])  # fmt: skip
    assert scores == pytest.approx([80.0, 50.0, 125.0, 75.0, 200.0, 0.0])


def _two_teams() -> pd.DataFrame:
    # control (higher, target 70 %), ED visits (lower, target 400 per 1,000)
    return pd.DataFrame({
        "team_id": ["A", "A", "B", "B"], "subgroup": ["chronic"] * 4,
        "measure_id": ["control", "ed", "control", "ed"],
        "value": [77.0, 300.0, 63.0, 440.0], "ci_low": [70.0, 260.0, 56.0, 400.0], "ci_high": [84.0, 340.0, 70.0, 480.0],
        "target": [70.0, 400.0, 70.0, 400.0], "higher_is_better": [True, False, True, False],
    })  # fmt: skip


def test_value_index_two_teams_hand_worked():
    out = value_index(_two_teams())
    index = out["index"].set_index("team_id")
    # A: control 100 x 77/70 = 110, ED 100 x (2 - 300/400) = 125 -> mean 117.5
    # B: control 100 x 63/70 = 90,  ED 100 x (2 - 440/400) = 90  -> mean 90
    assert index.loc["A", "value_index"] == pytest.approx(117.5)
    assert index.loc["B", "value_index"] == pytest.approx(90.0)
    # no longer 53.54 against 46.46 whatever the teams do
    assert index["value_index"].sum() != pytest.approx(100.0)
    # A's interval: control scores 100 to 120 (se 20 / 3.92), ED 115 to 135 (se 20 / 3.92);
    # index se = sqrt(se^2 + se^2) / 2 = (20 / 3.92) x sqrt(2) / 2; half-width = 1.96 x se = 10 / sqrt(2) = 7.07
    assert index.loc["A", "index_low"] == pytest.approx(117.5 - 10 / np.sqrt(2))
    assert index.loc["A", "index_high"] == pytest.approx(117.5 + 10 / np.sqrt(2))
    parts = out["parts"].set_index(["team_id", "measure_id"])
    assert parts.loc[("B", "ed"), "score"] == pytest.approx(90.0)
    assert parts.loc[("B", "ed"), "score_low"] == pytest.approx(80.0)  # 480 per 1,000 -> 100 x (2 - 1.2)
    assert parts.loc[("A", "control"), "weight_share"] == pytest.approx(0.5)
    assert out["excluded"].empty


def test_value_index_five_teams_same_measure_set_and_weights():
    rows = []
    # five teams; "pain" is suppressed for team E -> left out for all five
    values = {
        "A": (70.0, 400.0, 3.0),
        "B": (84.0, 200.0, 2.4),
        "C": (56.0, 600.0, 3.6),
        "D": (77.0, 300.0, 3.3),
        "E": (63.0, 500.0, None),
    }
    for team, (control, ed, pain) in values.items():
        for measure, value, target, higher, weight in (("control", control, 70.0, True, 2.0), ("ed", ed, 400.0, False, 1.0),
                                                       ("pain", pain, 3.0, False, 1.0)):  # fmt: skip
            v = np.nan if value is None else value
            rows.append({"team_id": team, "subgroup": "frail", "measure_id": measure, "value": v, "ci_low": v, "ci_high": v,
                         "target": target, "higher_is_better": higher, "weight": weight})  # fmt: skip
    out = value_index(pd.DataFrame(rows))
    index = out["index"].set_index("team_id")["value_index"]
    # scores (control weight 2, ED weight 1): A 100, 100; B 120, 150; C 80, 50; D 110, 125; E 90, 75
    expected = {"A": 100.0, "B": (2 * 120 + 150) / 3, "C": (2 * 80 + 50) / 3, "D": (2 * 110 + 125) / 3, "E": (2 * 90 + 75) / 3}
    assert index.to_dict() == pytest.approx(expected)
    assert (out["index"]["measures"] == 2).all()  # the same two measures for every team
    excluded = out["excluded"]
    assert excluded[["measure_id", "teams_with_value", "teams"]].values.tolist() == [["pain", 4, 5]]
    assert not (out["parts"]["measure_id"] == "pain").any()
    # exact values (zero-width intervals): the index interval is the index itself
    assert out["index"]["index_low"].to_numpy() == pytest.approx(out["index"]["value_index"].to_numpy())


def test_value_index_team_without_any_row_of_a_measure_excludes_it():
    frame = _two_teams().loc[lambda f: ~((f["team_id"] == "B") & (f["measure_id"] == "ed"))]
    out = value_index(frame)
    assert out["excluded"]["measure_id"].tolist() == ["ed"]
    assert out["index"].set_index("team_id")["value_index"].to_dict() == pytest.approx({"A": 110.0, "B": 90.0})


def test_value_map_quadrants_against_targets():
    index = value_index(_two_teams())["index"]
    cost = pd.DataFrame({"team_id": ["A", "B"], "subgroup": ["chronic"] * 2, "cost_total_pmpm_usd": [300.0, 200.0],
                         "member_months": [100.0, 100.0]})  # fmt: skip
    vmap = value_map(index, cost, centre=100.0, index_column="value_index").set_index("team_id")
    assert vmap.loc["A", "quadrant"] == "better outcomes, higher cost"  # 117.5 >= 100, $300 > $250 peer mean
    assert vmap.loc["B", "quadrant"] == "worse outcomes, lower cost"

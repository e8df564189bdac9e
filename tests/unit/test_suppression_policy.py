"""Small counts by audience: which policy applies (core.access.suppression), and the pieces that
keep suppressed counts from coming back (moves against the members headline, e-consult figures,
export precision, window counts)."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from core.access import suppression
from core.access.policy import Scope
from core.metrics import scorecard
from core.views.econsults import _econsult_table
from core.views.format import csv_export, shown_precision
from core.views.review import hide_moves


def scope(role="team_leader", teams=("TM01",), patient_level=True, network=False) -> Scope:
    return Scope("u", "U", role, tuple(teams), (), patient_level, network)


@pytest.mark.parametrize(("who", "figure_teams", "shared", "policy", "audience"), [
    (scope(), ["TM01"], False, "exact", "patient_level_in_scope"),
    (scope(teams=("TM01", "TM02")), ["TM01", "TM02"], False, "exact", "patient_level_in_scope"),
    (scope(), ["TM01", "TM02"], False, "suppressed", "outside_scope"),
    (scope(), None, False, "suppressed", "outside_scope"),
    (scope(), ["TM01"], True, "suppressed", "shared_export"),
    (scope("executive", ("TM01", "TM02"), False, True), None, False, "suppressed", "aggregate_only"),
    (scope("executive", ("TM01",), False, False), ["TM01"], False, "suppressed", "aggregate_only"),
    (scope("admin", ("TM01", "TM02"), True, True), None, False, "exact", "patient_level_in_scope"),
])  # fmt: skip
def test_the_policy_follows_the_audience(who, figure_teams, shared, policy, audience):
    chosen = suppression.suppression_policy(who, figure_teams, shared_export=shared)
    assert (chosen.policy_id, chosen.audience) == (policy, audience)
    assert chosen.suppress == (policy == "suppressed") and chosen.caption


def test_the_policy_file_is_checked(tmp_path):
    bad = tmp_path / "suppression.toml"
    bad.write_text('[small_counts]\nsmallest = 1\nlargest = 10\n[policies.exact]\nsuppress = false\ncaption = "x"\n'
                   '[audiences]\npatient_level_in_scope = "exact"\naggregate_only = "none"\noutside_scope = "exact"\n'
                   'shared_export = "exact"\n')  # fmt: skip
    with pytest.raises(ValueError, match="unknown policies"):
        suppression.load_suppression_rules(bad)
    assert scorecard.SMALL_CELL_MAX == 10 and scorecard.SMALL_CELL_MIN == 1


@pytest.mark.parametrize(("rows", "leaves"), [
    # two small "left" rows next to the members change: hidden with an "entered" row, so only e - l is known
    ([("entered", "new", 40), ("left", "chronic", 1), ("left", "none", 1)], "mixed"),
    # one direction only and small: the direction is not told at all
    ([("left", "chronic", 2)], "collapsed"),
    # nothing small: nothing hidden
    ([("entered", "new", 40), ("left", "none", 30)], "none"),
])  # fmt: skip
def test_moves_are_not_given_back_by_the_members_change(rows, leaves):
    summary = pd.DataFrame(rows, columns=["direction", "other_subgroup", "patients"]).astype({"patients": "float64"})
    out = hide_moves(summary)
    hidden = out["patients"].isna()
    if leaves == "none":
        assert not hidden.any()
        return
    if leaves == "collapsed":
        assert list(out["direction"]) == ["suppressed"]
        return
    assert set(out.loc[hidden, "direction"]) == {"entered", "left"}
    signed = np.where(summary["direction"] == "entered", 1, -1) * summary["patients"]
    assert not scorecard.is_small(abs(signed[hidden.to_numpy()].sum()))


def test_econsults_hide_only_the_figures_that_rest_on_small_counts():
    raw = pd.DataFrame({"team_id": ["A", "B", "C"], "econsults": [50.0, 60.0, 70.0], "responded": [50.0, 60.0, 70.0],
                        "days_sum": [100.0, 120.0, 140.0], "days_sq": [300.0, 300.0, 300.0],
                        "resolved": [47.0, 30.0, 35.0]})  # fmt: skip
    table = _econsult_table(raw, "team_id")
    a = table.set_index("team_id").loc["A"]
    assert a["econsults"] == 50 and not np.isnan(a["mean_response_days"])  # volume and response stay
    assert np.isnan(a["resolved"]) and np.isnan(a["resolved_pct"])  # 3 not resolved: hidden
    assert table["resolved"].isna().sum() >= 2  # with a complement, against the All row
    assert not table["suppressed"].any()
    exact = _econsult_table(raw, "team_id", suppress=False)
    assert exact.set_index("team_id").loc["A", "resolved"] == 47


def test_exports_are_rounded_as_shown():
    frame = pd.DataFrame({"value": [12.345678], "cost_pmpm_usd": [101.23456], "share": [0.123456], "members": [np.nan]})
    assert shown_precision(frame).iloc[0].tolist()[:3] == [12.3, 101.23, 0.123]
    assert csv_export(frame).splitlines()[1] == "12.3,101.23,0.123,suppressed"


def test_window_counts_are_published_for_months_only(monkeypatch):
    assert scorecard.window_counts_published("month")
    assert not scorecard.window_counts_published("12m") and not scorecard.window_counts_published("quarter")
    broken = replace(suppression.load_suppression_rules(), complementary=False)
    monkeypatch.setattr(scorecard, "load_suppression_rules", lambda: broken)
    assert scorecard.window_counts_published("12m")

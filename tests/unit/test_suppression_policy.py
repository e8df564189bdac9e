"""Small counts by audience: which policy applies (core.access.suppression), and the pieces that
keep suppressed counts from coming back (moves against the members headline, e-consult figures,
export precision, window counts)."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from core.access import suppression
from core.access.policy import Scope
from core.derive.measures import load_measures
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


@pytest.mark.parametrize(("kind", "numerator", "denominator", "summed", "base", "shown"), [
    ("rate_per_1000_member_years", 107.0, 785.7, True, 5, 105.0),  # 107 -> 105 (nearest multiple of 5)
    ("rate_per_1000_member_years", 108.0, 785.7, True, 5, 110.0),
    ("rate_per_1000_member_years", 107.5, 785.7, True, 5, 110.0),  # halves go up
    ("rate_per_1000_member_years", 2.0, 30.0, True, 5, 0.0),
    ("rate_per_1000_member_years", 3.0, 30.0, True, 5, 5.0),
    ("rate_per_1000_member_years", 14.0, 30.0, True, 10, 10.0),
    ("proportion", 98.0, 99.0, True, 5, 99.0),  # 100 would exceed the denominator: kept within it
    ("proportion", 42.0, 99.0, True, 5, 40.0),
    ("proportion", 42.0, 99.0, False, 5, 42.0),  # an end-of-window measure: the end month's own figure
    ("mean", 42.0, 99.0, True, 5, 42.0),  # means (sums of scores) are not rounded
    ("rate_per_1000_member_years", 107.0, 785.7, True, 1, 107.0),  # base 1: no rounding
    ("rate_per_1000_member_years", float("nan"), 785.7, True, 5, float("nan")),
])  # fmt: skip
def test_window_numerators_are_rounded_to_the_base(kind, numerator, denominator, summed, base, shown):
    got = scorecard.rounded_numerators(kind, [numerator], [denominator], base, summed)
    np.testing.assert_array_equal(got, [shown])


def test_the_rounding_base_applies_to_suppressed_windows_longer_than_a_month_only(monkeypatch):
    assert suppression.load_suppression_rules().window_rounding_base == 5
    assert scorecard.window_rounding_base(True, 12) == 5 and scorecard.window_rounding_base(True, 3) == 5
    assert scorecard.window_rounding_base(True, 1) == 1  # a month publishes its counts (small ones suppressed)
    assert scorecard.window_rounding_base(False, 12) == 1  # the exact policy is never rounded
    monkeypatch.setattr(scorecard, "load_suppression_rules", lambda: replace(suppression.load_suppression_rules(), window_rounding_base=1))
    assert scorecard.window_rounding_base(True, 12) == 1


def test_the_rounding_base_is_checked(tmp_path):
    text = ('[small_counts]\nsmallest = 1\nlargest = 10\nwindow_rounding_base = {}\n[policies.exact]\nsuppress = false\n'
            'caption = "x"\n[audiences]\npatient_level_in_scope = "exact"\naggregate_only = "exact"\noutside_scope = "exact"\n'
            'shared_export = "exact"\n')  # fmt: skip
    (tmp_path / "bad.toml").write_text(text.format("-5"))
    with pytest.raises(ValueError, match="window_rounding_base"):
        suppression.load_suppression_rules(tmp_path / "bad.toml")
    (tmp_path / "zero.toml").write_text(text.format("0"))
    assert suppression.load_suppression_rules(tmp_path / "zero.toml").window_rounding_base == 1


def test_a_rate_times_its_member_years_no_longer_gives_the_count_back():
    """The issue's example: 107 ED visits over 785.7 member-years is 136.2 per 1,000; 136.2 x 785.7
    / 1000 = 107.0 exactly. From the rounded numerator the value is 133.6, which gives 105 back."""
    exact, _, _ = scorecard.figure("rate_per_1000_member_years", [107.0], [785.7], [0.0])
    assert round(float(exact[0]), 1) == 136.2 and round(136.2 * 785.7 / 1000) == 107
    shown = scorecard.rounded_numerators("rate_per_1000_member_years", [107.0], [785.7], 5)
    value, low, high = scorecard.figure("rate_per_1000_member_years", shown, [785.7], [0.0])
    assert round(float(value[0]), 1) == 133.6 and round(133.6 * 785.7 / 1000) == 105
    low_105, high_105 = scorecard.poisson_exact_interval([105.0], [785.7])
    assert (low[0], high[0]) == pytest.approx((low_105[0] * 1000, high_105[0] * 1000))  # the interval is of 105 events too


def test_window_values_of_the_scorecard_come_from_rounded_numerators_for_aggregate_audiences_only(sample_engine):
    from core.store.queries import months_available

    month = months_available(sample_engine)[-1]
    for window in ("quarter", "12m"):
        selection = scorecard.Selection(practice_id="PR01", period=month, window=window)
        exact = scorecard.build_scorecard(sample_engine, selection, suppress=False)
        shown = scorecard.build_scorecard(sample_engine, selection, suppress=True)
        rates = ((exact["kind"] == "rate_per_1000_member_years") & (exact["denominator"] > 0)).to_numpy()
        events = exact.loc[rates, "value"] * exact.loc[rates, "denominator"] / 1000
        np.testing.assert_allclose(events, exact.loc[rates, "numerator"])  # exact: the count itself
        published = ~shown["suppressed"].to_numpy() & rates
        recovered = shown.loc[published, "value"] * exact.loc[published, "denominator"] / 1000
        np.testing.assert_allclose(recovered, np.round(recovered / 5) * 5, atol=1e-6)  # multiples of 5 only
        assert (np.abs(recovered - exact.loc[published, "numerator"]) <= 2.5).all()
        assert (recovered != exact.loc[published, "numerator"]).any()
    month_card = scorecard.build_scorecard(sample_engine, scorecard.Selection(practice_id="PR01", period=month), suppress=True)
    rates = (month_card["kind"] == "rate_per_1000_member_years") & ~month_card["suppressed"]
    np.testing.assert_allclose(month_card.loc[rates, "value"] * month_card.loc[rates, "denominator"] / 1000,
                               month_card.loc[rates, "numerator"])  # a month is not rounded  # fmt: skip


def test_the_trends_rolling_rates_come_from_rounded_numerators_for_aggregate_audiences_only(sample_engine):
    from core.store.months import add_months
    from core.views.cells_read import cell_sums_by, window_sums
    from core.views.trends import trends

    rates = [m.id for m in load_measures().measures if m.kind == "rate_per_1000_member_years" and m.window == "sum"]
    shown = trends(sample_engine, practice_id="PR01", rolling=12)["figures"]
    exact = trends(sample_engine, practice_id="PR01", rolling=12, suppress=False)["figures"]
    keys = ["month", "subgroup", "metric"]
    both = shown.merge(exact, on=keys, suffixes=("", "_exact"))
    both = both.loc[both["metric"].isin(rates) & both["value"].notna()]
    assert len(both), "the practice's trends publish rolling 12-month rates"
    first = add_months(min(both["month"]), -11)
    sums = cell_sums_by(sample_engine, ["subgroup"], rates, first, max(both["month"]), practice_id="PR01")
    per_month = pd.concat([window_sums(sums, ["subgroup"], m, 12).assign(month=m) for m in sorted(set(both["month"]))])
    total = per_month.groupby(["month", "metric"], as_index=False)[["numerator", "denominator"]].sum().assign(subgroup="all")
    both = both.merge(pd.concat([per_month, total]), on=keys)
    events = both["value"] * both["denominator"] / 1000
    np.testing.assert_allclose(events, np.round(events / 5) * 5, atol=1e-6)  # multiples of 5: the rounded numerators
    np.testing.assert_allclose(both["value_exact"] * both["denominator"] / 1000, both["numerator"])  # exact policy: exact
    assert (np.abs(events - both["numerator"]) <= 2.5).all() and (events != both["numerator"]).any()

"""core.views.review: formatting, significance marks and settings. The data behind the page and
the review pack on the sample network are in tests/e2e/test_review_network.py."""

from datetime import date

import numpy as np
import pandas as pd
import pytest

from core.store.months import months_back
from core.views import review
from core.views.format import format_figure, usd


@pytest.mark.parametrize(
    "value,suppressed,digits,expected",
    [(1234.567, False, 1, "1,234.6"), (0.0, False, 1, "0.0"), (np.nan, False, 1, "–"), (None, False, 1, "–"),
     (5.0, True, 1, "suppressed"), (12.0, False, 0, "12")],
)  # fmt: skip
def test_format_figure(value, suppressed, digits, expected):
    assert format_figure(value, suppressed, digits) == expected


@pytest.mark.parametrize("value,expected", [(-824.4, "-$824"), (1700.0, "$1,700"), (None, "suppressed"), (0.0, "$0")])
def test_format_usd(value, expected):
    assert usd(value) == expected


@pytest.mark.parametrize(
    "month,n,expected",
    [(date(2026, 3, 1), 3, [date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)]),
     (date(2026, 1, 1), 2, [date(2025, 12, 1), date(2026, 1, 1)])],
)  # fmt: skip
def test_months_back(month, n, expected):
    assert months_back(month, n) == expected


def _card(**overrides):
    row = {"measure_id": "admissions", "name": "Admissions", "tier": 3, "unit": "per 1,000", "value": 1400.0,
           "ci_low": 1100.0, "ci_high": 1800.0, "target": 200.0, "previous_value": 400.0, "last_year_value": np.nan,
           "network_value": 800.0, "change_vs_previous": "worse", "change_vs_last_year": "", "gap_vs_network": "",
           "suppressed": False}  # fmt: skip
    return pd.DataFrame([{**row, **overrides}])


@pytest.mark.parametrize(
    "overrides,expected",
    [({}, "↑ worse vs last month"),
     ({"gap_vs_network": "worse"}, "↑ worse vs last month; ↑ worse vs network"),
     ({"change_vs_previous": "", "value": 300.0, "gap_vs_network": "better"}, "↓ better vs network"),
     ({"change_vs_previous": ""}, "")],
)  # fmt: skip
def test_significance_marks_only_flagged_comparisons(overrides, expected):
    assert review.scorecard_table(_card(**overrides))["Significant"].iloc[0] == expected


def test_suppressed_rows_show_suppressed_and_no_mark():
    table = review.scorecard_table(_card(suppressed=True, value=np.nan, ci_low=np.nan, ci_high=np.nan))
    row = table.iloc[0]
    assert (row["Value"], row["95% interval"], row["Significant"]) == ("suppressed", "suppressed", "")
    assert review.significant_rows(_card(suppressed=True)).empty
    assert len(review.significant_rows(_card())) == 1


def test_shipped_settings_name_known_measures():
    settings = review.load_review_settings()
    assert set(settings.key_outcomes) == {"healthy", "at_risk", "chronic", "complex", "frail"}
    assert "admissions" in settings.key_outcomes["complex"]


def test_settings_with_an_unknown_measure_are_refused(tmp_path):
    path = tmp_path / "review.toml"
    path.write_text('[key_outcomes]\ncomplex = ["nope"]\n[what_moved]\nacute_kinds = ["admission"]\ntop_patients = 5\n'
                    "[trend]\nmonths = 12\n")  # fmt: skip
    with pytest.raises(ValueError, match="unknown measures"):
        review.load_review_settings(path)


# --- numerator / denominator and O/E beside every figure -----------------------------------------


def _rate(**overrides):
    return _card(**{"kind": "rate_per_1000_member_years", "numerator": 23.0, "denominator": 16.4, "expected_value": 1000.0,
                    "observed_expected": 1.4, **overrides})  # fmt: skip


def test_numerator_denominator_and_observed_expected_with_its_interval():
    row = review.scorecard_table(_rate(), adjusted_ids=("admissions",)).iloc[0]
    assert (row["Numerator"], row["Denominator"]) == ("23", "16.4")  # a rate's denominator: member-years
    assert (row["Expected"], row["O/E"], row["O/E 95% interval"]) == (
        "1,000.0",
        "1.40",
        "1.10 – 1.80",
    )  # the rate's interval / expected
    share = review.scorecard_table(_card(kind="proportion", name="Control", numerator=40.0, denominator=55.0)).iloc[0]
    assert (share["Numerator"], share["Denominator"], share["O/E"], share["O/E 95% interval"]) == ("40", "55", "–", "–")
    mean = review.scorecard_table(_card(kind="mean", numerator=2200.0, denominator=44.0)).iloc[0]
    assert (mean["Numerator"], mean["Denominator"]) == ("–", "44")  # a mean's numerator is a sum of scores, no count


def test_counts_follow_the_suppression_rule():
    hidden = review.scorecard_table(_rate(suppressed=True, value=np.nan, ci_low=np.nan, ci_high=np.nan, numerator=np.nan,
                                          denominator=np.nan, expected_value=np.nan, observed_expected=np.nan),
                                    suppress=True, adjusted_ids=("admissions",)).iloc[0]  # fmt: skip
    assert {hidden[c] for c in ("Numerator", "Denominator", "Expected", "O/E", "O/E 95% interval")} == {"suppressed"}
    # a count of 1-10 that the row's own rule let through (a rate's member-years) is hidden where suppression applies
    small = review.scorecard_table(_rate(denominator=8.5), suppress=True).iloc[0]
    assert (small["Numerator"], small["Denominator"]) == ("23", "suppressed")
    assert review.scorecard_table(_rate(denominator=8.5), suppress=False).iloc[0]["Denominator"] == "8.5"
    # windows longer than a month publish their value but not their counts where suppression applies
    window = review.scorecard_table(_rate(), counts_shown=False, suppress=True, window="quarter").iloc[0]
    assert (window["Value"], window["Numerator"], window["Denominator"]) == ("1,400.0", "suppressed", "suppressed")
    assert window["Significant"] == "↑ worse vs the previous quarter"


# --- what moved, in words ------------------------------------------------------------------------

NOV = date(2026, 11, 1)


def _counts(label, history, now, members=100.0, now_members=None):
    months = months_back(NOV, len(history) + 1)
    return pd.DataFrame({"label": label, "month": months, "count": [*history, now],
                         "members": [members] * len(history) + [members if now_members is None else now_members]})  # fmt: skip


def test_usual_range_is_of_counts_that_occurred():
    assert review.usual_range([3, 4, 5, 6, 7, 8, 5, 4, 6, 5, 3, 8]) == (3.0, 8.0)
    assert review.usual_range([0, 0, 0, 0, 0, 0, 0, 0, 0, 50]) == (0.0, 0.0)  # one unusual month is not usual
    assert review.usual_range([]) is None


def test_acute_line_sets_the_month_against_the_usual_range():
    admissions = _counts("Admissions", [3, 4, 5, 6, 7, 8, 5, 4, 6, 5, 3, 8], 23)
    ed = _counts("ED visits", [30, 35, 40, 45, 50, 38, 33, 41, 47, 36, 31, 49], 40)
    line = review.acute_line(pd.concat([admissions, ed]), NOV, suppress=False)
    assert (
        line == "In Nov 2026: Admissions 23, above the usual 3-8 a month; ED visits 40, within the usual 31-49 a month."
    )  # the extreme month at each end left out
    low = review.acute_line(_counts("Admissions", [20, 22, 25, 21, 23, 24, 26, 22, 21, 25, 20, 24], 12), NOV, False)
    assert "Admissions 12, below the usual 20-25 a month" in low
    assert (
        review.acute_line(_counts("Admissions", [], 4), NOV, False) == "In Nov 2026: Admissions 4, no earlier month to compare."
    )
    assert review.acute_line(admissions, NOV, False, incomplete=True).endswith(
        "(claims incomplete: these counts will still rise)."
    )


def test_acute_line_names_no_small_count_where_suppression_applies():
    history = [3, 4, 5, 6, 7, 8, 5, 4, 6, 5, 3, 14]
    assert (
        review.acute_line(_counts("Admissions", history, 6), NOV, True) == "In Nov 2026: Admissions suppressed (small numbers)."
    )
    assert review.acute_line(_counts("Admissions", history, 23), NOV, True) == (
        "In Nov 2026: Admissions 23, above the usual 10 or fewer a month.")  # fmt: skip
    wide = [3, 12, 15, 18, 20, 4, 16, 14, 13, 19, 17, 30]
    assert "within the usual up to 20 a month" in review.acute_line(_counts("Admissions", wide, 15), NOV, True)
    assert "suppressed" in review.acute_line(
        _counts("Admissions", wide, 15, now_members=8.0), NOV, True
    )  # a month of 1-10 members
    assert review.acute_line(_counts("Admissions", wide, 0), NOV, True).startswith(
        "In Nov 2026: Admissions 0, below"
    )  # 0 is no small count


def test_moves_line():
    moves = pd.DataFrame({"direction": ["entered", "entered", "left"], "other_subgroup": ["chronic", "new", "frail"],
                          "patients": [3.0, 1.0, 2.0]})  # fmt: skip
    names = {"chronic": "Chronic", "frail": "Frail", "complex": "Complex"}
    assert review.moves_line(moves, "Complex", NOV, names) == (
        "4 patients moved into Complex (3 from Chronic, 1 from new to the team); 2 patients left Complex (2 to Frail) in Nov 2026.")  # fmt: skip
    assert review.moves_line(moves.iloc[0:0], "Complex", NOV) == "No patient moved into or out of Complex in Nov 2026."
    hidden = moves.assign(patients=[np.nan, 14.0, np.nan])  # one hidden row hides every total too
    assert (
        review.moves_line(hidden, "Complex", NOV)
        == "Patients moving into or out of Complex in Nov 2026: small numbers, suppressed."
    )


def test_cost_line_compares_the_window_with_the_one_before():
    assert review.cost_line(1120.0, 1000.0, "Cost PMPM", NOV, "quarter") == (
        "Cost PMPM $1,120 in the quarter to Nov 2026, up 12.0 % on the previous quarter ($1,000).")  # fmt: skip
    assert review.cost_line(900.0, 1000.0, "Cost PMPM", NOV, "month") == (
        "Cost PMPM $900 in Nov 2026, down 10.0 % on the previous month ($1,000).")  # fmt: skip
    assert "no figure for the previous 12 months" in review.cost_line(900.0, np.nan, "Cost PMPM", NOV, "12m")
    assert (
        review.cost_line(900.0, 1000.0, "Cost PMPM", NOV, "month", hidden=True)
        == "Cost PMPM in Nov 2026: suppressed (small numbers)."
    )
    marked = review.cost_line(900.0, 1000.0, "Cost PMPM", NOV, "quarter", incomplete_months=(date(2026, 10, 1), NOV))
    assert marked.endswith("Claims of Oct 2026, Nov 2026 are incomplete: cost will still rise.")
    assert "not costed" in review.cost_line(np.nan, np.nan, "Cost PMPM", NOV, "month", costed=False)


def test_summary_settings_are_checked(tmp_path):
    assert review.load_review_settings().summary.counts == ("admissions", "ed_visits")
    path = tmp_path / "review.toml"
    base = ('[key_outcomes]\ncomplex = ["admissions"]\n[what_moved]\nacute_kinds = ["admission"]\ntop_patients = 5\n'
            "[trend]\nmonths = 12\n")  # fmt: skip
    path.write_text(base + '[summary]\ncounts = ["nope"]\n')
    with pytest.raises(ValueError, match="summary.counts names unknown measures"):
        review.load_review_settings(path)
    path.write_text(base + "[summary]\nusual_low = 0.9\nusual_high = 0.1\n")
    with pytest.raises(ValueError, match="usual_low"):
        review.load_review_settings(path)


# --- the window choice on the sample network -----------------------------------------------------


def test_a_window_sums_its_months_and_hides_its_counts_where_suppression_applies(sample_engine):
    from core.store.queries import months_available

    month = months_available(sample_engine)[-1]
    months = months_back(month, 3)
    monthly = [review.review_data(sample_engine, "TM04", "complex", m, None, False, False).card.set_index("measure_id")
               for m in months]  # fmt: skip
    quarter = review.review_data(sample_engine, "TM04", "complex", month, None, False, False, "quarter")
    card, table = quarter.card.set_index("measure_id"), quarter.scorecard.set_index("measure_id")
    for measure in ("admissions", "ed_visits"):  # summed measures: the quarter is the sum of its months
        assert card.loc[measure, "numerator"] == sum(c.loc[measure, "numerator"] for c in monthly)
        assert card.loc[measure, "denominator"] == pytest.approx(sum(c.loc[measure, "denominator"] for c in monthly))
        assert table.loc[measure, "Numerator"] == format_figure(card.loc[measure, "numerator"], digits=0)
    assert quarter.counts_shown and "in the quarter to" in quarter.summary[2] and "on the previous quarter" in quarter.summary[2]
    assert len(quarter.summary) == 3 and quarter.summary[0].startswith(f"In {month:%b %Y}: ")

    shared = review.review_data(sample_engine, "TM04", "complex", month, None, False, True, "12m")
    assert not shared.counts_shown
    assert set(shared.scorecard["Numerator"]) <= {"suppressed", "–"} and set(shared.scorecard["Denominator"]) == {"suppressed"}
    one_month = review.review_data(sample_engine, "TM04", "complex", month, None, False, True)
    shown = pd.to_numeric(one_month.scorecard["Numerator"].str.replace(",", ""), errors="coerce").dropna()
    assert not shown.between(1, 10).any()  # a month's counts are published, none of 1-10
    # a longer window leaves fewer figures blank for a small subgroup
    assert (shared.scorecard["Value"] == "suppressed").sum() <= (one_month.scorecard["Value"] == "suppressed").sum()


def _review(headline, costed=True):
    return review.ReviewData(team_id="T1", subgroup="complex", month=date(2026, 2, 1), card=pd.DataFrame(), scorecard=pd.DataFrame(),
                             headline=headline, key_outcomes=(), moves={}, acute=pd.DataFrame(), drivers={}, value_map=pd.DataFrame(),
                             across_teams=pd.DataFrame(), bundled_rate_usd=100.0, cost_basis="internal", internal_costed=costed)  # fmt: skip


def test_fully_loaded_margin_adds_the_subgroups_share_of_unused_capacity():
    # 40 members at $100 PMPM = $4,000 payment; activity cost $3,000; unused capacity $1,500
    headline = pd.DataFrame({"month": [date(2026, 1, 1), date(2026, 2, 1)], "members": [40.0, np.nan],
                             "payment_usd": [4000.0, np.nan], "cost_usd": [3000.0, np.nan], "margin_usd": [1000.0, np.nan],
                             "suppressed": [False, True]})  # fmt: skip
    idle = pd.DataFrame({"month": [date(2026, 1, 1), date(2026, 2, 1)], "idle_capacity_usd": [1500.0, 800.0]})
    loaded = review.with_fully_loaded(_review(headline), idle)
    first = loaded.headline.iloc[0]
    assert first["fully_loaded_cost_usd"] == pytest.approx(4500.0)
    assert first["fully_loaded_margin_usd"] == pytest.approx(-500.0)
    assert first["fully_loaded_margin_pmpm_usd"] == pytest.approx(-12.5)
    assert np.isnan(loaded.headline.iloc[1]["idle_capacity_usd"])  # a suppressed month stays blank
    pay = review.payment_summary(review.with_fully_loaded(_review(headline.iloc[:1]), idle))
    assert (pay["fully_loaded_cost_usd"], pay["fully_loaded_margin_usd"], pay["margin_usd"]) == (4500.0, -500.0, 1000.0)
    assert "fully_loaded_margin_usd" not in review.payment_summary(_review(headline.iloc[:1]))  # off by default
    uncosted = review.with_fully_loaded(_review(headline.iloc[:1], costed=False), idle)
    assert np.isnan(uncosted.headline.iloc[0]["fully_loaded_margin_usd"])  # not costed, never $0


def test_idle_capacity_is_spread_over_the_teams_subgroups_by_member_months(sample_engine):
    from core.metrics.cost_reports import cost_pmpm_from_cells
    from core.store.queries import months_available
    from core.views.true_costs import capacity_use

    months = months_available(sample_engine)[-2:]
    team_idle = capacity_use(sample_engine, months, ("TM07",))["unused_cost_usd"].sum()
    subgroups = set(cost_pmpm_from_cells(sample_engine, ("subgroup",), months, team_id="TM07")["subgroup"])
    assert len(subgroups) > 1
    shares = {s: review.idle_capacity_of_subgroup(sample_engine, "TM07", s, months)["idle_capacity_usd"].sum() for s in subgroups}
    assert team_idle != 0 and sum(shares.values()) == pytest.approx(team_idle)

"""The executive views' core (core/views: trends, compare, payment_models, equity, econsults): inline frames for the rules, the small sample
network for the readers, each checked against an independent computation."""

from datetime import date

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select

from core.derive.costs import COST_EXTERNAL, COST_TOTAL
from core.metrics import payments
from core.metrics.cost_reports import cost_pmpm_from_cells
from core.metrics.scorecard import Selection, build_scorecard
from core.store.models import Encounter
from core.store.months import add_months, as_month, window_months
from core.store.queries import months_available, organisation, read_frame
from core.views.cells_read import add_figures, window_sums
from core.views.compare import team_comparison, value_positions
from core.views.econsults import econsults
from core.views.equity import equity_table
from core.views.executive_settings import load_executive_settings
from core.views.format import csv_export, usd
from core.views.payment_models import aco_inputs, aco_projection, payment_comparison, payment_inputs, payment_settings_with
from core.views.scope import scope_units, unit_filters
from core.views.trends import _completed_claims, trends

COUNT_COLUMNS = {"numerator", "denominator", "patients", "members", "member_months", "econsults", "responded", "resolved"}


def small_counts(frame: pd.DataFrame, columns=COUNT_COLUMNS) -> list:
    """Published counts of 1-10 in a frame's count columns (the CMS cell-size rule)."""
    found = []
    for col in set(frame.columns) & set(columns):
        values = pd.to_numeric(frame[col], errors="coerce").dropna()
        found += [(col, v) for v in values if 1 <= v <= 10]
    return found


def frame(**cols) -> pd.DataFrame:
    return pd.DataFrame(cols)


# --- rules on inline frames ------------------------------------------------------------------


@pytest.mark.parametrize(
    "metric, numerator, denominator, patients, value, suppressed",
    [
        ("cost_total_usd", 1200.0, 12.0, 12.0, 100.0, False),  # cost PMPM: USD / member-months
        ("cost_total_usd", 500.0, 5.0, 5.0, np.nan, True),  # 5 patients: suppressed
        ("cost_total_usd", 0.0, 0.0, 0.0, np.nan, False),  # nobody: nothing to publish, nothing to hide
        ("bp_control", 25.0, 40.0, 40.0, 62.5, False),  # proportion in %
        ("bp_control", 35.0, 40.0, 40.0, np.nan, True),  # 5 not controlled: subtraction would reveal it
        ("mortality", 3.0, 50.0, 600.0, np.nan, True),  # 3 deaths
        ("mortality", 0.0, 50.0, 600.0, 0.0, False),  # zero is published
    ],
)
def test_add_figures_values_and_suppression(metric, numerator, denominator, patients, value, suppressed):
    out = add_figures(frame(metric=[metric], numerator=[numerator], denominator=[denominator], sum_sq=[0.0], patients=[patients]))
    assert bool(out["suppressed"].iloc[0]) is suppressed
    assert out["value"].iloc[0] == pytest.approx(value, nan_ok=True)
    if suppressed:
        assert out[["numerator", "denominator", "patients"]].isna().all(axis=None)


def test_window_sums_end_rule_takes_the_last_month_and_sum_rule_adds():
    months = [date(2026, 8, 1), date(2026, 9, 1), date(2026, 10, 1)]
    sums = pd.concat([
        frame(team_id="A", metric="mortality", month=months, numerator=[1.0, 2.0, 3.0], denominator=[10.0] * 3, sum_sq=0.0,
              patients=[100.0, 120.0, 110.0]),
        frame(team_id="A", metric="bp_control", month=months, numerator=[5.0, 6.0, 7.0], denominator=[20.0] * 3, sum_sq=0.0,
              patients=[20.0] * 3),
    ])  # fmt: skip
    out = window_sums(sums, ["team_id"], date(2026, 10, 1), 3).set_index("metric")
    assert out.loc["mortality", "numerator"] == 6.0 and out.loc["mortality", "patients"] == 120.0  # sum; largest month
    assert out.loc["bp_control", "numerator"] == 7.0 and out.loc["bp_control", "denominator"] == 20.0  # end month
    two = window_sums(sums, ["team_id"], date(2026, 9, 1), 2).set_index("metric")
    assert two.loc["mortality", "numerator"] == 3.0


def test_payment_settings_what_if_is_a_copy():
    base = payments.load_payment_settings()
    what_if = payment_settings_with(base, {"complex": 150.0}, {"office_visit": 99.0}, pcmh_care_management_pmpm_usd=9.0)
    assert what_if.bundled_pmpm_usd["complex"] == 150.0 and base.bundled_pmpm_usd["complex"] == 100.0
    assert what_if.fee_usd["office_visit"] == 99.0 and what_if.pcmh_care_management_pmpm_usd == 9.0
    with pytest.raises(ValueError):
        payment_settings_with(base, {"healthy": -1.0})


def test_aco_projection_coding_growth_what_if():
    inputs = payments.AcoInputs(baseline_benchmark_pmpy_usd=10_000, baseline_risk_score=1.0, performance_risk_score=1.0,
                                member_years=1000, actual_spend_pmpy_usd=9_500)  # fmt: skip
    track = payments.load_payment_settings().aco_presets["mssp_enhanced"]
    same, table = aco_projection(inputs, track, 0.0)
    assert same == payments.aco_reconciliation(inputs, track)
    assert same.gross_savings_usd == pytest.approx(500_000)
    assert "Shared savings" in set(table["item"])
    coded, _ = aco_projection(inputs, track, 10.0)  # +10 % coding: capped at +3 %
    assert coded.risk_cap_binds and coded.risk_ratio_applied == pytest.approx(1.03)
    assert coded.gross_savings_from_risk_growth_usd == pytest.approx(0.03 * 10_000 * 1000)


def test_scope_units_and_filters():
    org = frame(practice_id=["P1", "P1", "P2"], practice=["North", "North", "South"], team_id=["T1", "T2", "T3"], team=["a", "b", "c"])
    units = scope_units(org, ("T1", "T2"), network=False)
    assert list(units) == ["all", "practice:P1", "team:T1", "team:T2"]
    assert unit_filters("practice:P1") == ("P1", None) and unit_filters("team:T2") == (None, "T2")
    assert unit_filters("all") == (None, None)


@pytest.mark.parametrize("amount, decimals, text", [(1234.4, 0, "$1,234"), (-1234.4, 0, "-$1,234"), (-0.5, 2, "-$0.50")])
def test_usd(amount, decimals, text):
    assert usd(amount, decimals) == text


def test_csv_export_writes_suppressed_not_zero():
    text = csv_export(frame(team=["A", "B"], patients=[np.nan, 40.0]))
    assert "A,suppressed" in text and "B,40.0" in text


# --- readers on the sample network -----------------------------------------------------------


@pytest.fixture
def period(sample_engine):
    return months_available(sample_engine)[-1]


def test_trends_total_cost_matches_the_cost_cells(sample_engine):
    figures = trends(sample_engine)["figures"]
    mine = figures.loc[(figures["metric"] == COST_TOTAL) & (figures["subgroup"] == "all")].set_index("month")["value"]
    cells = cost_pmpm_from_cells(sample_engine, ["month"]).assign(month=lambda d: d["month"].map(as_month)).set_index("month")
    assert len(mine) == len(cells) > 0
    pd.testing.assert_series_equal(mine.sort_index(), cells["cost_total_pmpm_usd"].sort_index(), check_names=False)


def test_rolling_trends_start_with_the_first_full_window(sample_engine):
    months = sorted(trends(sample_engine)["figures"]["month"].unique())  # the small network: 15 months
    rolled = trends(sample_engine, rolling=12)["figures"]
    assert min(rolled["month"]) == months[11] and max(rolled["month"]) == months[-1]  # 4 full windows, no partial one
    assert len(set(rolled["month"])) == 4
    rolled3 = trends(sample_engine, rolling=3)["figures"]
    assert min(rolled3["month"]) == months[2]


def test_trends_mark_months_whose_claims_have_not_run_out(sample_engine):
    data = trends(sample_engine)
    figures = data["figures"]
    # the sample's claims carry paid dates: completion factors mark the latest months (under 95 % paid)
    incomplete = sorted(figures.loc[~figures["claims_complete"], "month"].unique())
    assert incomplete and incomplete == sorted(figures["month"].unique())[-len(incomplete):]
    assert set(data["completeness"]["basis"]) == {"paid dates"}
    # completed claims: cost raised by 1 / completion where it is below 1, run-out months unchanged
    completed = trends(sample_engine, completed=True)["figures"]
    full = data["completeness"].loc[data["completeness"]["completion"] >= 1, "month"]
    old, recent = figures["month"].isin(set(full)), figures["month"] == incomplete[-1]
    assert old.any()
    pd.testing.assert_series_equal(completed.loc[old, "value"], figures.loc[old, "value"])
    assert (completed.loc[recent, "value"] > figures.loc[recent, "value"]).any()


def test_completed_claims_raise_external_and_total_cost():
    sums = pd.DataFrame({"subgroup": ["chronic"] * 4, "metric": [COST_EXTERNAL, COST_TOTAL, COST_EXTERNAL, COST_TOTAL],
                         "month": [date(2025, 1, 1)] * 2 + [date(2025, 2, 1)] * 2, "numerator": [100.0, 150.0, 80.0, 130.0],
                         "denominator": 10.0, "sum_sq": 0.0, "patients": 10.0})  # fmt: skip
    completeness = pd.DataFrame({"month": [date(2025, 1, 1), date(2025, 2, 1)], "completion": [1.0, 0.8]})
    out = _completed_claims(sums, completeness)
    # February: $80 paid at 80 % completion -> $100 completed; total $130 -> $150
    assert out["numerator"].tolist() == pytest.approx([100.0, 150.0, 100.0, 150.0])


def test_trends_mix_adds_up_and_hides_small_counts(sample_engine):
    data = trends(sample_engine)
    mix = data["mix"]
    assert not small_counts(mix)
    published = mix.loc[~mix["suppressed"]]
    assert published.groupby("month")["share"].sum().between(0, 1 + 1e-9).all()
    assert not small_counts(data["figures"])


def test_team_comparison_flags_only_real_outliers(sample_engine, period):
    result = team_comparison(sample_engine, "ed_visits", period, "12m")
    teams, net = result["teams"], result["network"]
    assert set(teams["team_id"]) == set(organisation(sample_engine)["team_id"])
    assert not small_counts(teams)
    for row in teams.itertuples():
        if row.flag in ("better", "worse"):
            assert not row.ci_low <= net["value"] <= row.ci_high
            assert (row.flag == "better") == (row.value < net["value"])  # fewer ED visits is better
        elif row.flag == "as expected":
            assert row.ci_low <= net["value"] <= row.ci_high
    assert teams["suppressed"].sum() != 1  # complementary suppression: never a single hidden team
    card = build_scorecard(sample_engine, Selection(period=period, window="12m")).set_index("measure_id")
    assert net["value"] == pytest.approx(card.loc["ed_visits", "value"])
    team = teams.loc[~teams["suppressed"]].iloc[0]
    own = build_scorecard(sample_engine, Selection(period=period, window="12m", team_id=team["team_id"])).set_index("measure_id")
    assert (team["value"], team["ci_low"]) == pytest.approx((own.loc["ed_visits", "value"], own.loc["ed_visits", "ci_low"]))


def test_team_comparison_in_scope_only(sample_engine, period):
    teams = team_comparison(sample_engine, "ed_visits", period, "12m", team_ids=("TM01",))["teams"]
    assert list(teams["team_id"]) == ["TM01"]


def test_value_positions_from_core_value(sample_engine, period):
    points = value_positions(sample_engine, period)
    assert not points.duplicated(["team_id", "subgroup"]).any()
    shown = points.loc[~points["suppressed"]]
    assert len(shown) and shown["cost_pmpm_usd"].notna().all()
    # Cost of each published point = total cost cells / member-months over the 12 months
    row = shown.iloc[0]
    cells = cost_pmpm_from_cells(sample_engine, ["team_id", "subgroup"], tuple(window_months(period, "12m")))
    expect = cells.set_index(["team_id", "subgroup"]).loc[(row["team_id"], row["subgroup"]), "cost_total_pmpm_usd"]
    assert row["cost_pmpm_usd"] == pytest.approx(expect)
    assert points.loc[points["suppressed"], ["cost_pmpm_usd", "outcome_index"]].isna().all(axis=None)


def test_payment_comparison_equals_the_payment_report(sample_engine, period):
    months = tuple(window_months(period, "12m"))
    settings = payments.load_payment_settings()
    inputs = payment_inputs(sample_engine, months)
    mine = payment_comparison(inputs, settings, 2, suppress=False)
    report = payments.payment_report(sample_engine, list(months), settings=settings, targets_met=2)
    cols = ["member_months", "revenue_usd", "cost_usd", "margin_usd"]
    exact = mine["by_subgroup"].set_index(["subgroup", "model"])[cols]
    expected = report["by_subgroup"].set_index(["subgroup", "model"]).loc[exact.index, cols]
    pd.testing.assert_frame_equal(exact, expected, check_exact=False, rtol=1e-9)
    pd.testing.assert_frame_equal(mine["total"][cols], report["total"][cols], check_exact=False, rtol=1e-9)
    # suppressed (12 months): PMPMs of the published rows, no window totals, no small counts
    shared = payment_comparison(inputs, settings, 2)
    assert not set(cols) & set(shared["by_subgroup"]) and not set(cols) & set(shared["total"])
    published = shared["by_subgroup"].loc[~shared["by_subgroup"]["suppressed"]].set_index(["subgroup", "model"])["margin_pmpm_usd"]
    pd.testing.assert_series_equal(published, mine["by_subgroup"].set_index(["subgroup", "model"]).loc[published.index, "margin_pmpm_usd"])
    assert not small_counts(shared["by_subgroup"]) and not small_counts(shared["mix_sensitivity"])


def test_aco_inputs_from_cells_equal_the_payments_module(sample_engine, period):
    months = tuple(window_months(period, "12m"))
    # the small network holds 15 months: the baseline of its last 12 has 3 months of members
    refused, why = aco_inputs(sample_engine, months)
    assert refused is None and "member-months" in why and why == payments.aco_inputs_from_store(sample_engine, list(months))[1]
    any_baseline = payments.AcoEvidence(min_baseline_member_months_share=0.0)
    mine, note = aco_inputs(sample_engine, months, quality_score=80.0, evidence=any_baseline)
    theirs, their_note = payments.aco_inputs_from_store(sample_engine, list(months), quality_score=80.0, evidence=any_baseline)
    for field in ("baseline_benchmark_pmpy_usd", "baseline_risk_score", "performance_risk_score", "member_years",
                  "actual_spend_pmpy_usd", "quality_score"):  # fmt: skip
        assert getattr(mine, field) == pytest.approx(getattr(theirs, field)), field
    assert note == their_note
    team, _ = aco_inputs(sample_engine, months, team_id="TM01", evidence=any_baseline)
    scoped, _ = aco_inputs(sample_engine, months, team_ids=("TM01",), evidence=any_baseline)
    assert team == scoped and team.member_years < mine.member_years
    assert aco_inputs(sample_engine, tuple(window_months(months_available(sample_engine)[0], "12m")))[0] is None  # no baseline year


def test_equity_gap_to_best_served_group(sample_engine, period):
    table = equity_table(sample_engine, "promis_physical_mean", "race_ethnicity", period, "12m")
    published = table.loc[~table["suppressed"] & (table["stratum_value"] != "unknown") & table["value"].notna()]
    assert table.loc[table["value"].isna() & ~table["suppressed"], "denominator"].fillna(0).eq(0).all()  # no data, not hidden
    settings = load_executive_settings()
    big = published.loc[published["patients"] >= settings.reference_min_patients]
    best = big.loc[big["value"].idxmax()]  # higher T-score is better, among groups large enough to set the bar
    assert table.loc[table["best"], "stratum_value"].tolist() == [best["stratum_value"]]
    assert (big["gap_to_best"] <= 1e-9).all() and best["gap_to_best"] == 0
    assert table.loc[table["suppressed"], ["value", "numerator"]].isna().all(axis=None)
    assert table["network_value"].nunique() == 1  # the network's value, not each row's own
    assert not small_counts(table)


def test_econsults_match_the_encounters(sample_engine, period):
    months = tuple(window_months(period, "12m"))
    data = econsults(sample_engine, months, suppress=False)  # exact: 12-month counts are withheld where suppressed
    shared = econsults(sample_engine, months)
    enc = read_frame(sample_engine, select(Encounter.start_date, Encounter.responded_date, Encounter.resolved_without_visit)
                     .where(Encounter.kind == "e_consult"))  # fmt: skip
    start = pd.to_datetime(enc["start_date"])
    enc = enc.loc[(start >= pd.Timestamp(months[0])) & (start < pd.Timestamp(add_months(months[-1], 1)))]
    total = data["by_specialty"].iloc[-1]
    assert total["econsults"] == len(enc)
    assert total["resolved"] == enc["resolved_without_visit"].fillna(False).astype(bool).sum()
    days = (pd.to_datetime(enc["responded_date"]) - pd.to_datetime(enc["start_date"])).dt.days.dropna()
    assert total["mean_response_days"] == pytest.approx(days.mean())
    for name in ("by_specialty", "by_team", "spend"):
        assert not {"econsults", "member_months"} & set(shared[name]), name
        assert not small_counts(shared[name]), name
        assert shared[name]["suppressed"].iloc[:-1].sum() != 1 or name == "spend"
    spend = data["spend"].set_index("group")
    assert spend["member_months"].sum() == cost_pmpm_from_cells(sample_engine, (), months)["member_months"].iloc[0]


def test_chart_subgroups_and_colours_come_from_the_rules_file(tmp_path, monkeypatch):
    from core.views import charts

    rules = tmp_path / "rules.toml"
    rules.write_text('[[subgroups]]\nid = "older"\nname = "Older"\ncolour = "#123456"\n[[subgroups]]\nid = "healthy"\nname = "Healthy"\n'
                     '[[rules]]\nid = "older"\nsubgroup = "older"\nmin_age = 60\n[[rules]]\nid = "rest"\nsubgroup = "healthy"\n')  # fmt: skip
    monkeypatch.setattr(charts, "active_rules_path", lambda: rules)
    ids, colours = charts.subgroup_style()
    assert ids == ["healthy", "older", "unassigned"]
    assert colours["older"] == "#123456" and colours["healthy"] == charts.PALETTE[0] and colours["unassigned"] == charts.OTHER_COLOUR
    mix = frame(month=[date(2026, 1, 1)] * 3, subgroup=["older", "frail", "unassigned"], member_months=[50.0, 40.0, 30.0])
    fig = charts.member_mix_figure(mix, {"older": "Older"})  # "frail" is no longer a subgroup: grey, not an error
    colour_of = {trace.name: trace.line.color for trace in fig.data}
    assert colour_of == {"Older": "#123456", "frail": charts.OTHER_COLOUR, "unassigned": charts.OTHER_COLOUR}

"""True costs on hand-worked numbers: capacity cost rate parts, space and equipment by square
metres or share, fully loaded margins, leakage, and the projected ACO settlement with its range."""

import math
from datetime import date
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from core.config.catalog import load_catalog
from core.derive import costs
from core.metrics import payments
from core.store.months import window_months
from core.views import true_costs

SPACE_RAW = {
    "capacity": {"practical_capacity_share": 0.8, "full_time_hours_per_year": 2000, "benefits_share_of_cost": 0.25},
    "space_equipment": {
        "method": "square_metres",
        "usd_per_square_metre_per_year": 500.0,
        "square_metres_per_fte": {"default": 10, "physician": 20},
        "equipment_usd_per_fte_per_year": {"default": 1000, "physician": 5000},
    },
}
# a full-time and a 0.1-FTE physician on the same pay per hour, and a full-time front desk
STAFF = pd.DataFrame(
    [("S1", "T1", "physician", 200_000.0, 2000.0), ("S2", "T2", "physician", 20_000.0, 200.0), ("S3", "T1", "front_desk", 40_000.0, 2000.0)],
    columns=["staff_id", "team_id", "role", "annual_cost_usd", "paid_hours_per_year"],
)


def settings(**space):
    raw = {**SPACE_RAW, "space_equipment": {**SPACE_RAW["space_equipment"], **space}}
    return costs.parse_cost_settings(raw, load_catalog())


def test_capacity_cost_rate_parts_hand_worked():
    rates = costs.capacity_cost_rates(STAFF, settings()).set_index(["team_id", "role"])
    md = rates.loc[("T1", "physician")]
    # salary + benefits = $200,000, benefits 25 %: $150,000 + $50,000
    assert md["salary_usd_per_year"] == pytest.approx(150_000) and md["benefits_usd_per_year"] == pytest.approx(50_000)
    # 1.0 FTE: 20 m2 x $500 + $5,000 equipment = $15,000
    assert md["fte"] == pytest.approx(1.0) and md["square_metres"] == pytest.approx(20)
    assert md["space_equipment_usd_per_year"] == pytest.approx(15_000)
    # practical capacity 2,000 h x 60 x 0.8 = 96,000 min; rate (200,000 + 15,000) / 96,000
    assert md["practical_minutes_per_year"] == pytest.approx(96_000)
    assert md["rate_usd_per_minute"] == pytest.approx(215_000 / 96_000)
    parts = md["salary_usd_per_year"] + md["benefits_usd_per_year"] + md["space_equipment_usd_per_year"]
    assert parts == pytest.approx(md["capacity_cost_usd_per_year"])
    desk = rates.loc[("T1", "front_desk")]
    assert desk["space_equipment_usd_per_year"] == pytest.approx(10 * 500 + 1000)  # the default role


def test_a_part_time_post_carries_its_share_of_space_only():
    rates = costs.capacity_cost_rates(STAFF, settings()).set_index(["team_id", "role"])["rate_usd_per_minute"]
    # 0.1 FTE on the same pay per hour: the same rate per minute (a flat charge per person would
    # have added $15,000 to $20,000 of pay, more than doubling its rate)
    assert rates[("T2", "physician")] == pytest.approx(rates[("T1", "physician")])
    assert rates[("T2", "physician")] == pytest.approx((20_000 + 1_500) / 9_600)


def test_space_shared_as_a_pool_by_paid_hours():
    s = settings(method="share", pool_usd_per_year=42_000.0)
    space = costs.space_equipment_usd(STAFF, s)
    # paid hours 2,000 / 200 / 2,000 of 4,200: $20,000 / $2,000 / $20,000
    assert list(space["space_equipment_usd"]) == pytest.approx([20_000, 2_000, 20_000])
    assert space["square_metres"].isna().all()


@pytest.mark.parametrize(
    "space, message",
    [({"method": "per_person"}, "method"), ({"square_metres_per_fte": {"wizard": 3}}, "unknown role"),
     ({"usd_per_square_metre_per_year": -1}, ">= 0"), ({"rent": 1}, "unknown keys")],
)  # fmt: skip
def test_space_settings_validation(space, message):
    with pytest.raises(ValueError, match=message):
        settings(**space)


# --- fully loaded margin -----------------------------------------------------------------------

MEMBER_MONTHS = pd.DataFrame({"team_id": ["T1", "T1"], "subgroup": ["chronic", "healthy"], "member_months": [120.0, 240.0]})
ACTIVITIES = pd.DataFrame({"team_id": ["T1"] * 3, "subgroup": ["chronic", "chronic", "healthy"],
                           "kind": ["office_visit", "care_management", "office_visit"], "activities": [50, 20, 30]})  # fmt: skip
COSTS = pd.DataFrame({"team_id": ["T1", "T1"], "subgroup": ["chronic", "healthy"], "cost_internal_usd": [8000.0, 3000.0],
                      "cost_external_usd": [20000.0, 2000.0]})  # fmt: skip


def _payment_settings():
    raw = {
        "bundled": {"cost_basis": "internal", "pmpm_usd": {"healthy": 5, "chronic": 25}},
        "fee_for_service": {"cost_basis": "internal", "fee_usd": {"office_visit": 100, "care_management": 50}},
        "pcmh": {"cost_basis": "internal", "fee_schedule_enhancement_pct": 10, "care_management_pmpm_usd": 2,
                 "p4p_bonus_pmpm_usd_per_target_met": 0.5},
        "aco": {"default_preset": "x", "presets": {"x": {}}},
    }  # fmt: skip
    return payments.parse_payment_settings(raw, load_catalog())


def test_fully_loaded_margin_hand_worked():
    idle = pd.DataFrame({"team_id": ["T1"], "idle_capacity_usd": [3600.0]})
    out = payments.compare_payment_models(MEMBER_MONTHS, ACTIVITIES, COSTS, _payment_settings(), idle_capacity=idle)
    ffs = out.loc[out["model"] == "fee_for_service"].set_index("subgroup")
    # idle $3,600 spread by member-months: chronic 120/360 = $1,200, healthy 240/360 = $2,400
    assert ffs.loc["chronic", "idle_capacity_usd"] == pytest.approx(1200)
    # chronic FFS: revenue 50 x $100 + 20 x $50 = $6,000; activity cost $8,000; fully loaded $9,200
    assert ffs.loc["chronic", "margin_usd"] == pytest.approx(-2000)
    assert ffs.loc["chronic", "fully_loaded_margin_usd"] == pytest.approx(6000 - 9200)
    # healthy FFS: 30 x $100 = $3,000 against $3,000: margin 0, fully loaded -$2,400
    assert ffs.loc["healthy", "fully_loaded_margin_usd"] == pytest.approx(-2400)
    total = payments.summarise_models(out, ()).set_index("model").loc["fee_for_service"]
    assert total["fully_loaded_margin_usd"] == pytest.approx(total["margin_usd"] - 3600)
    assert total["fully_loaded_margin_pmpm_usd"] == pytest.approx((-2000 - 3600) / 360)


def test_fully_loaded_margin_not_costed_without_staff():
    idle = pd.DataFrame({"team_id": ["T1"], "idle_capacity_usd": [3600.0]})
    out = payments.compare_payment_models(MEMBER_MONTHS, ACTIVITIES, COSTS, _payment_settings(), internal_costed=False, idle_capacity=idle)
    assert out["fully_loaded_margin_usd"].isna().all()
    assert payments.summarise_models(out, ())["fully_loaded_margin_usd"].isna().all()


# --- leakage ---------------------------------------------------------------------------------


def test_leakage_by_category_with_suppression():
    claims = pd.DataFrame({
        "team_id": ["T1"] * 6, "month": [date(2025, 1, 1)] * 6,
        "cost_category": ["inpatient", "inpatient", "pharmacy", "pharmacy", "ed", "ed"], "specialty": ["not recorded"] * 6,
        "in_network": [True, False, True, False, True, False], "claims": [40, 20, 100, 30, 10, 3],
        "paid_usd": [80_000.0, 20_000.0, 9_000.0, 1_000.0, 5_000.0, 2_000.0],
    })  # fmt: skip
    total = true_costs.leakage_by(claims, [], pd.DataFrame({"member_months": [1000.0]})).iloc[0]
    assert total["out_of_network_usd"] == pytest.approx(23_000)
    assert total["out_of_network_share"] == pytest.approx(23_000 / 117_000)
    assert total["out_of_network_pmpm_usd"] == pytest.approx(23.0)
    by = true_costs.leakage_by(claims, ["cost_category"]).set_index("cost_category")
    # ED has 3 out-of-network claims: suppressed, and so is the next smallest (inpatient, 20)
    assert by.loc["ed", "suppressed"] and np.isnan(by.loc["ed", "out_of_network_usd"])
    assert by.loc["inpatient", "suppressed"] and np.isnan(by.loc["inpatient", "out_of_network_share"])
    assert not by.loc["pharmacy", "suppressed"] and by.loc["pharmacy", "out_of_network_share"] == pytest.approx(0.1)


def test_used_minutes_in_sql_match_the_cost_model(sample_engine):
    months = window_months(date.fromisoformat("2026-11-01"), "quarter")
    months = [m for m in months]
    s = costs.load_cost_settings()
    inputs = costs.load_cost_inputs(sample_engine, months)
    act = costs.activity_costs(inputs.encounters, inputs.staff_minutes, costs.capacity_cost_rates(inputs.staff, s), s.process_maps)
    expected = costs.unused_capacity(inputs.staff, act, list(inputs.months), s)
    got = true_costs.capacity_use(sample_engine, months)
    if expected.empty:
        pytest.skip("no months in the sample window")
    key = ["team_id", "month", "role"]
    merged = expected.merge(got, on=key, suffixes=("", "_sql"))
    assert len(merged) == len(expected) == len(got)
    np.testing.assert_allclose(merged["used_minutes"], merged["used_minutes_sql"])
    np.testing.assert_allclose(merged["unused_cost_usd"], merged["unused_cost_usd_sql"])


# --- ACO projection ----------------------------------------------------------------------------

PROJECTION = payments.AcoProjectionSettings(trend_pct_per_year=5.0, regional_adjustment_pct=2.0, interval=0.90,
                                            unpaid_claims_uncertainty_share=0.5)  # fmt: skip
TRACK = payments.AcoSettings(two_sided=True, minimum_savings_rate=0.02, minimum_loss_rate=0.02, shared_savings_rate=0.5,
                             shared_loss_rate=0.5, savings_cap_pct_of_benchmark=0.2, loss_cap_pct_of_benchmark=0.15,
                             quality_threshold=40.0, risk_growth_cap_up=0.03)  # fmt: skip
# three observed months of 100 members; the third is half paid so far
MONTHLY = pd.DataFrame({"month": [date(2025, 1, 1), date(2025, 2, 1), date(2025, 3, 1)], "member_months": [100.0] * 3,
                        "paid_usd": [10_000.0, 12_000.0, 5_000.0], "completion": [1.0, 1.0, 0.5]})  # fmt: skip


def test_projected_spend_hand_worked():
    spend = payments.project_spend(MONTHLY, 9, PROJECTION)
    # completed 10,000 + 12,000 + 5,000 / 0.5 = 32,000 over 300 member-months: $106.67 PMPM;
    # 9 remaining months x 100 members at that PMPM = 96,000; year = 128,000 over 1,200 member-months
    assert spend.completed_usd == pytest.approx(32_000) and spend.unpaid_estimate_usd == pytest.approx(5_000)
    assert spend.projected_usd == pytest.approx(128_000)
    assert spend.member_years == pytest.approx(100)
    # monthly PMPMs 100, 120, 100: s^2 = 400/3; month-to-month 9 x (s x 100)^2 = 12,000,000;
    # the PMPM's error (900 x s)^2 / 3 = 36,000,000; sd = sqrt(48,000,000) = 6,928
    sd = math.sqrt(48_000_000)
    z = NormalDist().inv_cdf(0.95)  # 1.645
    half = math.sqrt((z * sd) ** 2 + (0.5 * 5_000) ** 2)  # 11,667
    assert half == pytest.approx(11_667, abs=1)
    assert spend.low_usd == pytest.approx(128_000 - half) and spend.high_usd == pytest.approx(128_000 + half)


def test_projected_aco_settlement_with_range_hand_worked():
    spend = payments.project_spend(MONTHLY, 9, PROJECTION)
    result = payments.project_aco_year(spend, 1400.0, 1.0, 1.02, 80.0, TRACK, PROJECTION)
    # benchmark 1,400 x 1.05 (trend) x 1.02 (regional) = 1,499.40 per member-year; risk ratio 1.02
    # (under the 3 % cap): 1,529.39 x 100 member-years = 152,938.80
    assert result.benchmark_pmpy_usd == pytest.approx(1499.4)
    assert result.point.benchmark_usd == pytest.approx(152_938.8)
    # gross savings 152,938.80 - 128,000 = 24,938.80 (16.3 % >= 2 %), quality 80 >= 40: half shared
    assert result.point.outcome == "shared_savings"
    assert result.point.net_payment_usd == pytest.approx(12_469.4)
    # the range: settled at the high and the low end of spend (128,000 -/+ 11,667)
    half = spend.high_usd - spend.projected_usd
    assert result.low.net_payment_usd == pytest.approx(0.5 * (152_938.8 - 128_000 - half))
    assert result.high.net_payment_usd == pytest.approx(0.5 * (152_938.8 - 128_000 + half))
    assert result.low.net_payment_usd < result.point.net_payment_usd < result.high.net_payment_usd
    # risk-score growth alone: 0.5 x (152,938.80 - 149,940) = 1,499.40
    assert result.point.net_payment_from_risk_growth_usd == pytest.approx(1_499.4)


def test_projection_without_remaining_months_or_enough_history():
    spend = payments.project_spend(MONTHLY.assign(completion=1.0), 0, PROJECTION)
    assert spend.low_usd == spend.projected_usd == spend.high_usd == pytest.approx(27_000)
    one = payments.project_spend(MONTHLY.iloc[:1], 11, PROJECTION)
    assert one.projected_usd == pytest.approx(120_000) and math.isnan(one.low_usd)
    result = payments.project_aco_year(one, 1400.0, 1.0, 1.0, 80.0, TRACK, PROJECTION)
    assert result.low is None and result.high is None and result.point is not None
    # a month whose completion is unknown (no paid dates) is estimated at the run rate
    unknown = payments.project_spend(MONTHLY.assign(completion=[1.0, 1.0, np.nan]), 9, PROJECTION)
    assert unknown.projected_usd == pytest.approx(22_000 + 110 * 1000)
    with pytest.raises(ValueError):
        payments.project_spend(MONTHLY.assign(completion=np.nan), 9, PROJECTION)


def test_performance_year_months():
    observed, remaining = payments.performance_year_months(date(2026, 3, 1), 1)
    assert observed == [date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)] and remaining == 9
    observed, remaining = payments.performance_year_months(date(2026, 3, 1), 4)
    assert observed[0] == date(2025, 4, 1) and len(observed) == 12 and remaining == 0


def test_quality_score_from_the_scorecard_through_the_mapping():
    card = pd.DataFrame({
        "measure_id": ["hba1c_control", "readmission_30d", "bp_control"], "name": ["HbA1c", "Readmissions", "BP"],
        "unit": ["%"] * 3, "direction": ["higher", "lower", "higher"], "value": [56.0, 10.0, np.nan], "target": [70.0, 15.0, 70.0],
        "stratum": ["all"] * 3,
    })  # fmt: skip
    score, parts = payments.quality_score(card, {"hba1c_control": 1.0, "readmission_30d": 3.0, "bp_control": 1.0})
    # HbA1c 56 / 70 = 80 points; readmissions 10 below the target of 15: 100 points; BP suppressed: left out
    assert parts.set_index("measure_id").loc["hba1c_control", "points"] == pytest.approx(80)
    assert score == pytest.approx((80 * 1 + 100 * 3) / 4)
    assert payments.quality_score(card.assign(value=np.nan), {"hba1c_control": 1.0})[0] is None


def test_projection_settings_are_data():
    s = payments.load_payment_settings()
    assert s.aco_projection.quality_measures and s.aco_projection.interval == pytest.approx(0.9)
    with pytest.raises(ValueError, match="unknown measures"):
        payments.parse_projection_settings({}, {"measures": {"no_such_measure": 1.0}})
    with pytest.raises(ValueError, match="unknown keys"):
        payments.parse_projection_settings({"trend": 3}, {})


def test_used_minutes_and_leakage_in_sql_on_both_backends(store_engine):
    from tests.unit.test_costs import FEB, JAN, _seed

    _seed(store_engine)
    s = costs.load_cost_settings()
    used = costs.used_minutes_by_team_month(store_engine, [JAN, FEB], s.process_maps).set_index(["month", "role"])["used_minutes"]
    # E1 (January) recorded 20 physician + 15 MA minutes; E2 (February) none: the office-visit map;
    # E3 (February phone call) none: the phone-call map
    assert used[(JAN, "physician")] == pytest.approx(20) and used[(JAN, "medical_assistant")] == pytest.approx(15)
    assert used[(FEB, "physician")] == pytest.approx(s.process_maps["office_visit"]["physician"])
    assert used[(FEB, "registered_nurse")] == pytest.approx(s.process_maps["phone_call"]["registered_nurse"])
    claims = true_costs.claims_by_network(store_engine, [JAN, FEB])
    # C1 January ED $1,000 (P1 attributed); C2 February specialist $250 out of network (P1);
    # C3 February admission $9,000 of P2, not attributed in February
    oon = claims.loc[~claims["in_network"]]
    assert oon["paid_usd"].sum() == pytest.approx(250) and list(oon["team_id"]) == ["T1"]
    outside = claims.loc[claims["team_id"] == true_costs.NOT_ATTRIBUTED]
    assert outside["paid_usd"].sum() == pytest.approx(9000)


def test_leakage_from_the_derives_monthly_claims_equals_the_claims(store_engine):
    """Once the pages' aggregates are built, the leakage reads ``claims_network_month``: the same
    rows as grouping the claims, with a claim of a month the patient was not attributed, blank
    and padded texts, and a team's scope."""
    from sqlalchemy import text

    from core.derive.page_aggregates import build_page_aggregates
    from tests.unit.test_costs import FEB, JAN, _seed

    _seed(store_engine)
    with store_engine.begin() as conn:
        conn.execute(text("UPDATE encounter SET facility = '  Summit Cardiology  ', specialty = '' WHERE encounter_id = 'C2'"))
    scanned = {scope: true_costs.claims_by_network(store_engine, [JAN, FEB], scope) for scope in (None, ("T1",))}
    assert build_page_aggregates(store_engine)["claims_network_month"] == 4  # C1-C4
    for scope, want in scanned.items():
        got = true_costs.claims_by_network(store_engine, [JAN, FEB], scope)
        pd.testing.assert_frame_equal(got, want, check_dtype=False, obj=str(scope))
    whole = scanned[None].set_index("facility")
    assert whole.loc["Summit Cardiology", "specialty"] == true_costs.NO_SPECIALTY
    assert (scanned[None]["team_id"] == true_costs.NOT_ATTRIBUTED).sum() == 1 and len(scanned[("T1",)]) == 2
    assert true_costs.claims_by_network(store_engine, [FEB])["month"].tolist() == [FEB, FEB]
    with store_engine.begin() as conn:  # the page reads the aggregate, not the claims (the derive keeps it current)
        conn.execute(text("UPDATE encounter SET paid_usd = 1 WHERE encounter_id = 'C3'"))
    got = true_costs.claims_by_network(store_engine, [FEB])
    assert got.loc[got["team_id"] == true_costs.NOT_ATTRIBUTED, "paid_usd"].tolist() == [9000.0]


def test_minutes_used_from_the_derives_monthly_minutes_equal_the_encounters(store_engine):
    """Once the pages' aggregates are built, the capacity used reads ``team_month_minutes``:
    recorded minutes by role, and the process map of the moment for encounters without any."""
    from sqlalchemy import text

    from core.derive.page_aggregates import build_page_aggregates
    from tests.unit.test_costs import FEB, JAN, _seed

    _seed(store_engine)
    maps = costs.load_cost_settings().process_maps
    scanned = {scope: costs.used_minutes_by_team_month(store_engine, [JAN, FEB], maps, scope) for scope in (None, ("T1",), ("T9",))}
    assert build_page_aggregates(store_engine)["team_month_minutes"] == 4  # E1's two roles, E2 and E3 without minutes
    for scope, want in scanned.items():
        pd.testing.assert_frame_equal(costs.used_minutes_by_team_month(store_engine, [JAN, FEB], maps, scope), want,
                                      check_dtype=False, obj=str(scope))  # fmt: skip
    doubled = {kind: {role: 2 * m for role, m in roles.items()} for kind, roles in maps.items()}
    used = costs.used_minutes_by_team_month(store_engine, [FEB], doubled).set_index("role")["used_minutes"]
    assert used["physician"] == pytest.approx(2 * maps["office_visit"]["physician"])  # the map is read, not stored
    with store_engine.begin() as conn:  # the page reads the aggregate, not the minutes (the derive keeps it current)
        conn.execute(text("UPDATE staff_minutes SET minutes = 1000 WHERE encounter_id = 'E1'"))
    used = costs.used_minutes_by_team_month(store_engine, [JAN], maps).set_index("role")["used_minutes"]
    assert used["physician"] == pytest.approx(20)


def test_leakage_is_unknown_when_no_claim_is_flagged_out_of_network():
    claims = pd.DataFrame({"team_id": ["T1"] * 2, "month": [date(2025, 1, 1)] * 2, "cost_category": ["inpatient", "pharmacy"],
                           "specialty": ["not recorded"] * 2, "in_network": [True, True], "claims": [40, 30],
                           "paid_usd": [80_000.0, 9_000.0]})  # fmt: skip
    report = {"total": true_costs.leakage_by(claims, [])}
    assert report["total"]["out_of_network_usd"].iloc[0] == 0
    assert true_costs.leakage_note(report) == true_costs.NO_NETWORK_FLAG
    flagged = {"total": true_costs.leakage_by(claims.assign(in_network=[True, False]), [])}
    assert true_costs.leakage_note(flagged) == ""
    assert true_costs.leakage_note({}) == "no claims in these months"


def test_leakage_by_facility_in_sql_with_suppression(store_engine):
    from sqlalchemy import text

    from tests.unit.test_costs import FEB, JAN, _seed

    _seed(store_engine)
    with store_engine.begin() as conn:
        conn.execute(text("UPDATE encounter SET facility = 'Summit Cardiology Associates' WHERE encounter_id = 'C2'"))
        conn.execute(text("UPDATE encounter SET facility = '1234567893' WHERE encounter_id = 'C3'"))  # an NPI
    claims = true_costs.claims_by_network(store_engine, [JAN, FEB])
    oon = claims.loc[~claims["in_network"]]
    assert list(oon["facility"]) == ["Summit Cardiology Associates"]
    assert set(claims["facility"]) == {"Summit Cardiology Associates", "1234567893", true_costs.NO_FACILITY}
    by = true_costs.leakage_by(claims, ["facility"]).set_index("facility")
    # one out-of-network claim at Summit: suppressed, and so is the next smallest row
    assert by.loc["Summit Cardiology Associates", "suppressed"] and np.isnan(by.loc["Summit Cardiology Associates", "out_of_network_usd"])  # fmt: skip
    assert by["suppressed"].sum() >= 2


def test_leakage_report_by_facility_on_the_sample_network(sample_engine):
    from core.store.queries import months_available

    months = months_available(sample_engine)[-12:]
    report = true_costs.leakage_report(sample_engine, months)
    by = report["by_facility"].set_index("facility")
    # the sample's out-of-network facilities carry the leakage; in-network ones none
    assert by.loc["St. Brendan Medical Center", "out_of_network_usd"] > 0
    assert by.loc["Riverside Imaging Center", "out_of_network_usd"] == 0
    shown = by["out_of_network_usd"].dropna().sum()
    assert 0 < shown <= report["total"]["out_of_network_usd"].iloc[0] + 0.01
    assert "Facility (name or NPI)" in true_costs.labelled(report["by_facility"]).columns


def test_an_older_store_gets_the_facility_column(store_engine):
    from sqlalchemy import text

    from core.store.db import upgrade_schema

    with store_engine.begin() as conn:
        conn.execute(text("ALTER TABLE encounter DROP COLUMN facility"))
    assert upgrade_schema(store_engine) == ["added encounter.facility"]
    assert upgrade_schema(store_engine) == []
    assert true_costs.claims_by_network(store_engine, [date(2025, 1, 1)]).empty

"""Payment models, subgroup-mix sensitivity and ACO reconciliation, on hand-worked numbers."""

import dataclasses

import pandas as pd
import pytest

from core.config.catalog import load_catalog
from core.metrics import payments
from core.metrics.payments import AcoInputs, AcoSettings

PAPER_RATES = {"healthy": 5.0, "at_risk": 10.0, "chronic": 25.0, "complex": 100.0}
PAPER_MIX = {"healthy": 0.40, "at_risk": 0.30, "chronic": 0.20, "complex": 0.10}


def test_paper_arithmetic_600k():
    # Porter, Pabo & Lee 2013: 2,500 patients, 40/30/20/10 % at $5/$10/$25/$100 PMPM
    # = 2,500 x $20 average PMPM x 12 = $600,000 a year.
    assert payments.annual_bundled_revenue(2500, PAPER_MIX, PAPER_RATES) == pytest.approx(600_000)
    table = payments.revenue_mix_sensitivity(2500, PAPER_MIX, PAPER_RATES)
    assert table["annual_revenue_usd"].sum() == pytest.approx(600_000)


def test_default_settings_reproduce_paper_rates():
    s = payments.load_payment_settings()
    assert {k: s.bundled_pmpm_usd[k] for k in PAPER_RATES} == PAPER_RATES
    assert s.bundled_pmpm_usd["frail"] == 100.0
    assert s.aco_presets["reach_professional"].risk_growth_cap_down == pytest.approx(0.03)
    assert s.aco_presets["mssp_enhanced"].risk_growth_cap_down is None


def test_mix_sensitivity_one_point_into_complex():
    # others average (0.4 x 5 + 0.3 x 10 + 0.2 x 25) / 0.9 = $11.11; 25 members x 12 x (100 - 11.11)
    table = payments.revenue_mix_sensitivity(2500, PAPER_MIX, PAPER_RATES).set_index("subgroup")
    assert table.loc["complex", "revenue_change_per_point_usd"] == pytest.approx(25 * 12 * (100 - 10 / 0.9))
    assert table.loc["healthy", "revenue_change_per_point_usd"] < 0
    assert table.loc["complex", "members"] == pytest.approx(250)


@pytest.mark.parametrize("mix, message", [({"healthy": 0.5, "chronic": 0.4}, "add up to 1"), ({"healthy": 0.5, "ghost": 0.5}, "no bundled rate")])
def test_mix_validation(mix, message):
    with pytest.raises(ValueError, match=message):
        payments.annual_bundled_revenue(100, mix, PAPER_RATES)


def _settings(**changes):
    raw = {
        "bundled": {"cost_basis": "internal", "pmpm_usd": {"healthy": 5, "chronic": 25}},
        "fee_for_service": {"cost_basis": "internal", "fee_usd": {"office_visit": 100, "care_management": 50}},
        "pcmh": {"cost_basis": "internal", "fee_schedule_enhancement_pct": 10, "care_management_pmpm_usd": 2, "p4p_bonus_pmpm_usd_per_target_met": 0.5},
        "aco": {"default_preset": "x", "presets": {"x": {}}},
    }
    for key, value in changes.items():
        raw[key] = {**raw[key], **value}
    return payments.parse_payment_settings(raw, load_catalog())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"bundled": {"pmpm_usd": {"healthy": -1}}}, "must be >= 0"),
        ({"fee_for_service": {"fee_usd": {"teleport": 1}}}, "unknown activity kind"),
        ({"pcmh": {"cost_basis": "everything"}}, "cost_basis"),
        ({"aco": {"default_preset": "y"}}, "not a preset"),
        ({"aco": {"presets": {"x": {"shared_savings_rate": 1.5}}}}, "between 0 and 1"),
        ({"aco": {"presets": {"x": {"sharing": 0.5}}}}, "unknown keys"),
    ],
)
def test_payment_settings_validation(change, message):
    with pytest.raises(ValueError, match=message):
        _settings(**change)


MEMBER_MONTHS = pd.DataFrame({"team_id": ["T1", "T1"], "subgroup": ["chronic", "healthy"], "member_months": [120.0, 240.0]})
ACTIVITIES = pd.DataFrame(
    {"team_id": ["T1"] * 4, "subgroup": ["chronic", "chronic", "healthy", "healthy"],
     "kind": ["office_visit", "care_management", "office_visit", "ed_visit"], "activities": [50, 20, 30, 4]}
)
COSTS = pd.DataFrame({"team_id": ["T1", "T1"], "subgroup": ["chronic", "healthy"], "cost_internal_usd": [8000.0, 3000.0], "cost_external_usd": [20000.0, 2000.0]})


def test_compare_payment_models_hand_worked():
    out = payments.compare_payment_models(MEMBER_MONTHS, ACTIVITIES, COSTS, _settings(), targets_met=2)
    got = out.set_index(["subgroup", "model"])
    # chronic: bundle 120 x $25; FFS 50 x $100 + 20 x $50; PCMH 6,000 x 1.10 + 120 x $2 + 120 x $0.50 x 2
    assert got.loc[("chronic", "bundled"), "revenue_usd"] == pytest.approx(3000)
    assert got.loc[("chronic", "fee_for_service"), "revenue_usd"] == pytest.approx(6000)
    assert got.loc[("chronic", "pcmh"), "revenue_usd"] == pytest.approx(6960)
    assert got.loc[("chronic", "bundled"), "margin_usd"] == pytest.approx(3000 - 8000)
    assert got.loc[("chronic", "bundled"), "margin_pmpm_usd"] == pytest.approx(-5000 / 120)
    # healthy: ED visits carry no practice fee
    assert got.loc[("healthy", "fee_for_service"), "revenue_usd"] == pytest.approx(3000)
    assert got.loc[("healthy", "pcmh"), "revenue_usd"] == pytest.approx(3300 + 480 + 240)
    assert not out.duplicated(["team_id", "subgroup", "model"]).any()


def test_compare_payment_models_total_cost_basis_and_targets_per_team():
    settings = _settings(bundled={"cost_basis": "total"})
    out = payments.compare_payment_models(MEMBER_MONTHS, ACTIVITIES, COSTS, settings, targets_met={"T1": 0}).set_index(["subgroup", "model"])
    assert out.loc[("chronic", "bundled"), "cost_usd"] == pytest.approx(28000)
    assert out.loc[("chronic", "fee_for_service"), "cost_usd"] == pytest.approx(8000)
    assert out.loc[("chronic", "pcmh"), "revenue_usd"] == pytest.approx(6600 + 240)
    summary = payments.summarise_models(out.reset_index(), by=())
    assert summary.set_index("model").loc["bundled", "revenue_usd"] == pytest.approx(3000 + 1200)


def test_count_activities_only_internal_attributed():
    from datetime import date

    enc = pd.DataFrame({
        "patient_id": ["P1", "P1", "P1", "P2"],
        "kind": ["office_visit", "office_visit", "ed_visit", "phone_call"],
        "start_date": [date(2025, 1, 5), date(2025, 1, 9), date(2025, 1, 9), date(2025, 2, 1)],
        "is_internal": [True, True, False, True],
    })
    att = pd.DataFrame({"patient_id": ["P1"], "month": [date(2025, 1, 1)], "team_id": ["T1"], "subgroup": ["chronic"]})
    out = payments.count_activities(enc, att)
    assert out.to_dict("records") == [{"team_id": "T1", "subgroup": "chronic", "kind": "office_visit", "activities": 2}]


# --- ACO ------------------------------------------------------------------------------------

MSSP = AcoSettings(label="MSSP ENHANCED", two_sided=True, minimum_savings_rate=0.02, minimum_loss_rate=0.02, shared_savings_rate=0.75,
                   shared_loss_rate=0.75, savings_cap_pct_of_benchmark=0.20, loss_cap_pct_of_benchmark=0.15, quality_threshold=40,
                   risk_growth_cap_up=0.03, risk_growth_cap_down=None)
MSSP_ONE_SIDED = dataclasses.replace(MSSP, two_sided=False, shared_savings_rate=0.40, shared_loss_rate=0.0)
REACH = AcoSettings(label="REACH Professional", two_sided=True, minimum_savings_rate=0.0, minimum_loss_rate=0.0, shared_savings_rate=0.5,
                    shared_loss_rate=0.5, savings_cap_pct_of_benchmark=0.25, loss_cap_pct_of_benchmark=0.25, quality_threshold=0,
                    risk_growth_cap_up=0.03, risk_growth_cap_down=0.03)


def _year(actual_pmpy, risk=1.0, quality=80.0):
    # 1,000 member-years; benchmark $10,000 per member-year at baseline risk 1.00 -> $10 M
    return AcoInputs(baseline_benchmark_pmpy_usd=10_000, baseline_risk_score=1.0, performance_risk_score=risk,
                     member_years=1000, actual_spend_pmpy_usd=actual_pmpy, quality_score=quality)


# case, settings, inputs, outcome, shared savings, shared losses, benchmark per member-year, risk cap binds
ACO_CASES = [
    ("saves above MSR: 5 % x 75 %", MSSP, _year(9500), "shared_savings", 375_000, 0, 10_000, False),
    ("inside corridor, savings 1 % < MSR 2 %", MSSP, _year(9900), "inside_corridor", 0, 0, 10_000, False),
    ("inside corridor, loss 1.5 % < MLR 2 %", MSSP, _year(10_150), "inside_corridor", 0, 0, 10_000, False),
    ("two-sided loss 4 % x 75 %", MSSP, _year(10_400), "shared_losses", 0, 300_000, 10_000, False),
    ("loss cap 15 % of benchmark binds", MSSP, _year(13_000), "shared_losses", 0, 1_500_000, 10_000, False),
    ("one-sided track owes nothing", MSSP_ONE_SIDED, _year(10_400), "losses_not_shared", 0, 0, 10_000, False),
    ("fails the quality gate", MSSP, _year(9500, quality=30), "quality_gate_failed", 0, 0, 10_000, False),
    ("savings cap 20 % of benchmark binds", MSSP, _year(7000), "shared_savings", 2_000_000, 0, 10_000, False),
    ("MSSP risk cap binds upward: 1.06 -> 1.03", MSSP, _year(9700, risk=1.06), "shared_savings", 0.75 * 600_000, 0, 10_300, True),
    ("MSSP does not floor a risk decline", MSSP, _year(8500, risk=0.90), "shared_savings", 0.75 * 500_000, 0, 9_000, False),
    ("REACH risk cap binds upward", REACH, _year(9700, risk=1.06), "shared_savings", 0.5 * 600_000, 0, 10_300, True),
    ("REACH symmetric cap binds downward: 0.90 -> 0.97", REACH, _year(9500, risk=0.90), "shared_savings", 0.5 * 200_000, 0, 9_700, True),
]


@pytest.mark.parametrize("case, settings, inputs, outcome, savings, losses, benchmark_pmpy, cap_binds", ACO_CASES, ids=[c[0] for c in ACO_CASES])
def test_aco_reconciliation_cases(case, settings, inputs, outcome, savings, losses, benchmark_pmpy, cap_binds):
    result = payments.aco_reconciliation(inputs, settings)
    assert result.outcome == outcome
    assert result.shared_savings_usd == pytest.approx(savings)
    assert result.shared_losses_usd == pytest.approx(losses)
    assert result.benchmark_pmpy_usd == pytest.approx(benchmark_pmpy)
    assert result.risk_cap_binds is cap_binds
    assert result.net_payment_usd == pytest.approx(savings - losses)


def test_coding_intensity_what_if():
    # risk 1.00 -> 1.06, capped at 1.03: benchmark $10.3 M, spend $9.7 M, gross $600,000, shared $450,000.
    # At zero risk growth: benchmark $10 M, gross $300,000 (3 % > MSR), shared $225,000.
    result = payments.aco_reconciliation(_year(9700, risk=1.06), MSSP)
    assert result.gross_savings_at_zero_risk_growth_usd == pytest.approx(300_000)
    assert result.gross_savings_from_risk_growth_usd == pytest.approx(300_000)
    assert result.net_payment_at_zero_risk_growth_usd == pytest.approx(225_000)
    assert result.net_payment_from_risk_growth_usd == pytest.approx(225_000)
    # without coding growth the same spend would sit inside the corridor
    flat = payments.aco_reconciliation(_year(9900, risk=1.02), MSSP)
    assert flat.outcome == "shared_savings" and flat.net_payment_at_zero_risk_growth_usd == 0


def test_aco_result_table_and_validation():
    table = payments.aco_result_table(payments.aco_reconciliation(_year(9500), MSSP))
    assert "net_payment_from_risk_growth_usd" in set(table["item"])
    with pytest.raises(ValueError, match="between 0 and 1"):
        payments.with_overrides(MSSP, minimum_savings_rate=-0.1)
    with pytest.raises(ValueError, match="member_years"):
        payments.aco_reconciliation(dataclasses.replace(_year(9500), member_years=0), MSSP)


# --- value map (core/metrics/value.py) -----------------------------------------------------------------


def test_value_map_hand_worked():
    from core.metrics.value import value_map

    # value index per team (core.metrics.value.value_index; 100 = targets met on average)
    index = pd.DataFrame({"team_id": ["T1", "T2", "T3", "T4"], "subgroup": ["chronic"] * 3 + ["frail"],
                          "value_index": [90.0, 100.0, 110.0, 100.0], "measures": [2, 2, 2, 1]})  # fmt: skip
    cost = pd.DataFrame({"team_id": ["T1", "T2", "T3", "T4"], "subgroup": ["chronic"] * 3 + ["frail"],
                         "cost_total_pmpm_usd": [100.0, 200.0, 300.0, 500.0], "member_months": [100.0, 100.0, 200.0, 50.0]})  # fmt: skip
    vmap = value_map(index, cost).set_index("team_id")
    # chronic peer cost = (10,000 + 20,000 + 60,000) / 400 = $225 PMPM
    assert vmap.loc["T1", "cost_ratio_to_peers"] == pytest.approx(100 / 225)
    assert vmap.loc["T1", "quadrant"] == "worse outcomes, lower cost"
    assert vmap.loc["T2", "quadrant"] == "better outcomes, lower cost"  # on target counts as better
    assert vmap.loc["T3", "quadrant"] == "better outcomes, higher cost"
    assert vmap.loc["T4", "cost_ratio_to_peers"] == pytest.approx(1.0)


EVIDENCE = payments.AcoEvidence(min_baseline_member_months_share=0.5)


@pytest.mark.parametrize("perf_mm, perf_usd, base_mm, base_usd, given, refused", [
    (120, 50_000.0, 120, 48_000.0, False, None),                      # a full baseline: settled
    (120, 50_000.0, 60, 20_000.0, False, None),                       # 60 / 120 = 50 %: just enough
    (120, 50_000.0, 59, 20_000.0, False, "59 member-months against 120"),  # 49 %: refused
    (120, 3_790_000.0, 12, 5_098.0, False, "(10%, below the 50% required)"),
    (120, 50_000.0, 0, 0.0, False, "no paid claims"),                 # no baseline at all
    (120, 50_000.0, 120, 0.0, False, "baseline year (the 12 months before) has no paid claims"),
    (120, 0.0, 120, 48_000.0, False, "performance year has no paid claims"),
    (120, 0.0, 0, 0.0, True, "performance year has no paid claims"),  # a benchmark cannot invent spend
    (120, 50_000.0, 0, 0.0, True, None),                              # a benchmark entered: no baseline needed
])  # fmt: skip
def test_aco_refuses_to_settle_without_evidence(perf_mm, perf_usd, base_mm, base_usd, given, refused):
    why = payments.aco_refusal(perf_mm, perf_usd, base_mm, base_usd, EVIDENCE, benchmark_given=given)
    assert why is None if refused is None else refused in why


def test_aco_evidence_is_data():
    assert payments.load_payment_settings().aco_evidence.min_baseline_member_months_share == 0.5
    assert _settings(aco={"evidence": {"min_baseline_member_months_share": 0.8}}).aco_evidence.min_baseline_member_months_share == 0.8
    with pytest.raises(ValueError, match="min_baseline_member_months_share"):
        _settings(aco={"evidence": {"min_baseline_member_months_share": 1.5}})


def test_compare_payment_models_without_internal_activity():
    # a claims-only import: no internal activity at all (the frame as read from an empty table)
    none = pd.DataFrame({"team_id": pd.Series([], dtype="str"), "subgroup": pd.Series([], dtype="str"),
                         "kind": pd.Series([], dtype="str"), "activities": pd.Series([], dtype="int64")})  # fmt: skip
    out = payments.compare_payment_models(MEMBER_MONTHS, none, COSTS, _settings()).set_index(["subgroup", "model"])
    assert out.loc[("chronic", "fee_for_service"), "revenue_usd"] == 0
    assert out.loc[("chronic", "bundled"), "revenue_usd"] == pytest.approx(3000)


def test_margins_are_not_costed_without_a_staff_roster():
    out = payments.compare_payment_models(MEMBER_MONTHS, ACTIVITIES, COSTS, _settings(), targets_met=2, internal_costed=False)
    got = out.set_index(["subgroup", "model"])
    assert got.loc[("chronic", "bundled"), "revenue_usd"] == pytest.approx(3000)  # revenue is still known
    assert got[["cost_usd", "margin_usd", "cost_pmpm_usd", "margin_pmpm_usd"]].isna().all(axis=None)
    total = payments.summarise_models(out, by=()).set_index("model")
    assert total["cost_usd"].isna().all() and total["margin_usd"].isna().all()  # never summed to $0
    assert total.loc["bundled", "revenue_usd"] == pytest.approx(3000 + 1200)

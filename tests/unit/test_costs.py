"""TDABC, claims costs, PMPM and reconciliation, on hand-worked numbers."""

from datetime import date

import pandas as pd
import pytest
from sqlmodel import Session, select

from core.config.catalog import load_catalog
from core.derive import costs
from core.metrics import cost_reports
from core.store.models import Attribution, Encounter, Patient, Practice, Staff, StaffMinutes, SubgroupAssignment, Team
from core.store.months import window_months

JAN, FEB, MAR = date(2025, 1, 1), date(2025, 2, 1), date(2025, 3, 1)

# Rates chosen so the arithmetic is easy by hand (practical share 80 %):
#   T1 physician:  (230,400 + 9,600) / (2,500 h x 60 x 0.8 = 120,000 min) = $2.00 / min
#   T1 MA:         ( 45,000 + 3,000) / (2,000 h x 60 x 0.8 =  96,000 min) = $0.50 / min
#   T2 physician:  (278,400 + 9,600) / 120,000 min                       = $2.40 / min
#   network physician: (240,000 + 288,000) / 240,000 min                 = $2.20 / min
SETTINGS_RAW = {
    "capacity": {"practical_capacity_share": 0.8, "rate_scope": "team", "full_time_hours_per_year": 2500},
    # space by square metres: physician 24 m2 x $400 = $9,600 per FTE (1.0 FTE at 2,500 h);
    # MA: equipment $3,750 per FTE x 0.8 FTE (2,000 h) = $3,000
    "space_equipment": {"method": "square_metres", "usd_per_square_metre_per_year": 400.0,
                        "square_metres_per_fte": {"default": 0, "physician": 24},
                        "equipment_usd_per_fte_per_year": {"default": 0, "medical_assistant": 3750}},
    "process_maps": {"office_visit": {"physician": 10, "medical_assistant": 10}, "phone_call": {"registered_nurse": 10}},
}
STAFF = pd.DataFrame(
    [
        ("S1", "T1", "physician", 230_400.0, 2500.0),
        ("S2", "T1", "medical_assistant", 45_000.0, 2000.0),
        ("S3", "T2", "physician", 278_400.0, 2500.0),
    ],
    columns=["staff_id", "team_id", "role", "annual_cost_usd", "paid_hours_per_year"],
)


@pytest.fixture
def settings():
    return costs.parse_cost_settings(SETTINGS_RAW, load_catalog())


def _encounters(rows):
    cols = ["encounter_id", "patient_id", "team_id", "kind", "start_date", "is_internal", "in_network", "cost_category", "paid_usd"]
    return pd.DataFrame(rows, columns=cols)


def _minutes(rows):
    return pd.DataFrame(rows, columns=["encounter_id", "role", "minutes"])


def test_default_settings_load():
    s = costs.load_cost_settings()
    assert s.practical_capacity_share == 0.8
    assert s.rate_scope in costs.RATE_SCOPES
    assert "office_visit" in s.process_maps


@pytest.mark.parametrize(
    "change, message",
    [
        ({"capacity": {"practical_capacity_share": 1.5}}, "practical_capacity_share"),
        ({"capacity": {"practical_capacity_share": 0.8, "rate_scope": "galaxy"}}, "rate_scope"),
        ({"space_equipment": {"square_metres_per_fte": {"wizard": 1}}}, "unknown role"),
        ({"space_equipment": {"method": "per_person"}}, "space_equipment.method"),
        ({"space_equipment_usd_per_year": {"default": 1}}, "flat charge per person"),
        ({"capacity": {"practical_capacity_share": 0.8, "benefits_share_of_cost": 1.2}}, "benefits_share_of_cost"),
        ({"process_maps": {"ed_visit": {"physician": 5}}}, "not an internal activity kind"),
        ({"process_maps": {"office_visit": {"physician": -5}}}, ">= 0 minutes"),
    ],
)
def test_settings_validation(change, message):
    with pytest.raises(ValueError, match=message):
        costs.parse_cost_settings({**SETTINGS_RAW, **change}, load_catalog())


def test_capacity_cost_rates_hand_worked(settings):
    rates = costs.capacity_cost_rates(STAFF, settings).set_index(["team_id", "role"])["rate_usd_per_minute"]
    assert rates[("T1", "physician")] == pytest.approx(2.00)
    assert rates[("T1", "medical_assistant")] == pytest.approx(0.50)
    assert rates[("T2", "physician")] == pytest.approx(2.40)
    assert rates[(costs.NETWORK, "physician")] == pytest.approx(2.20)


def test_activity_cost_recorded_and_process_map_fallback(settings):
    rates = costs.capacity_cost_rates(STAFF, settings)
    enc = _encounters([
        ("E1", "P1", "T1", "office_visit", JAN, True, True, "", 0.0),  # recorded: 20 MD + 15 MA
        ("E2", "P1", "T1", "office_visit", JAN, True, True, "", 0.0),  # no minutes: map 10 MD + 10 MA
        ("E3", "P2", "T2", "office_visit", JAN, True, True, "", 0.0),  # recorded MD only, T2 rate
        ("E4", "P2", "T2", "office_visit", JAN, True, True, "", 0.0),  # recorded MA: T2 has none -> network rate
        ("E5", "P2", "T2", "ed_visit", JAN, False, True, "", 900.0),  # a claim: not TDABC
    ])
    minutes = _minutes([("E1", "physician", 20), ("E1", "medical_assistant", 15), ("E3", "physician", 10), ("E4", "medical_assistant", 4)])
    act = costs.activity_costs(enc, minutes, rates, settings.process_maps, "team")
    by_enc = act.groupby("encounter_id")["cost_usd"].sum()
    assert by_enc["E1"] == pytest.approx(20 * 2.0 + 15 * 0.5)  # 47.50
    assert by_enc["E2"] == pytest.approx(10 * 2.0 + 10 * 0.5)  # 25.00 from the process map
    assert by_enc["E3"] == pytest.approx(10 * 2.4)
    assert by_enc["E4"] == pytest.approx(4 * 0.5)
    assert "E5" not in by_enc
    assert set(act.loc[act["encounter_id"] == "E2", "minutes_source"]) == {"standard"}
    assert set(act.loc[act["encounter_id"] == "E1", "minutes_source"]) == {"recorded"}
    assert act.loc[act["encounter_id"] == "E4", "rate_source"].item() == "network"
    shares = costs.minutes_source_shares(act).set_index("minutes_source")
    assert shares.loc["standard", "cost_usd"] == pytest.approx(25.0)
    assert shares["cost_share"].sum() == pytest.approx(1.0)


def test_network_rate_scope(settings):
    rates = costs.capacity_cost_rates(STAFF, settings)
    enc = _encounters([("E1", "P1", "T1", "office_visit", JAN, True, True, "", 0.0)])
    act = costs.activity_costs(enc, _minutes([("E1", "physician", 10)]), rates, settings.process_maps, "network")
    assert act["cost_usd"].sum() == pytest.approx(10 * 2.2)


def test_uncosted_internal_encounter_is_reported(settings):
    rates = costs.capacity_cost_rates(STAFF, settings)
    enc = _encounters([("E1", "P1", "T1", "home_visit", JAN, True, True, "", 0.0)])  # no minutes, no map in SETTINGS_RAW
    act = costs.activity_costs(enc, _minutes([]), rates, settings.process_maps)
    assert act.empty
    assert list(costs.uncosted_encounters(enc, act)["encounter_id"]) == ["E1"]


def test_unused_capacity_hand_worked(settings):
    rates = costs.capacity_cost_rates(STAFF, settings)
    enc = _encounters([
        ("E1", "P1", "T1", "office_visit", JAN, True, True, "", 0.0),
        ("E2", "P1", "T1", "office_visit", JAN, True, True, "", 0.0),
    ])
    act = costs.activity_costs(enc, _minutes([("E1", "physician", 20), ("E1", "medical_assistant", 15)]), rates, settings.process_maps)
    out = costs.unused_capacity(STAFF, act, [JAN, FEB], settings).set_index(["team_id", "month", "role"])
    md = out.loc[("T1", JAN, "physician")]
    # supplied 120,000 / 12 = 10,000 min ($240,000 / 12 = $20,000); used 20 + 10 = 30 min
    assert md["capacity_minutes"] == pytest.approx(10_000)
    assert md["used_minutes"] == pytest.approx(30)
    assert md["unused_minutes"] == pytest.approx(9_970)
    assert md["unused_cost_usd"] == pytest.approx(20_000 - 30 * 2.0)
    ma_feb = out.loc[("T1", FEB, "medical_assistant")]
    assert ma_feb["used_minutes"] == 0 and ma_feb["unused_cost_usd"] == pytest.approx(4_000)
    assert out.index.is_unique


def test_external_costs_default_category_and_leakage():
    enc = _encounters([
        ("C1", "P1", None, "admission", JAN, False, False, "", 12_000.0),
        ("C2", "P1", None, "imaging_lab", JAN, False, True, "other", 80.0),
    ])
    ext = costs.external_costs(enc).set_index("encounter_id")
    assert ext.loc["C1", "cost_category"] == "inpatient"
    assert ext.loc["C2", "cost_category"] == "other"
    assert not ext.loc["C1", "in_network"]


def test_pmpm_with_partial_year_members():
    # A: 12 member-months at $100; B joins late, 3 member-months at $200.
    # PMPM = (1,200 + 600) / 15 = $120, not the mean of per-patient averages (150).
    rows = [("A", date(2025, m, 1), "T1", "chronic", 100.0) for m in range(1, 13)]
    rows += [("B", date(2025, m, 1), "T1", "chronic", 200.0) for m in range(10, 13)]
    frame = pd.DataFrame(rows, columns=["patient_id", "month", "team_id", "subgroup", "cost_total_usd"]).assign(member_months=1.0)
    out = costs.cost_pmpm(frame, by=["team_id"])
    assert out["member_months"].item() == 15
    assert out["cost_total_pmpm_usd"].item() == pytest.approx(120.0)


# --- database: patient-month provider and reconciliation ----------------------------------


def _seed(engine):
    """Two patients, one team; P2 is attributed in January only but has February activity."""
    with Session(engine) as s:
        s.add(Practice(practice_id="PR1", name="Practice 1"))
        s.flush()  # no ORM relationships: flush parents before children (foreign keys are on)
        s.add(Team(team_id="T1", practice_id="PR1", name="Team 1"))
        s.flush()
        s.add_all([Staff(staff_id=r.staff_id, team_id="T1", name=r.staff_id, role=r.role, annual_cost_usd=r.annual_cost_usd,
                         paid_hours_per_year=r.paid_hours_per_year) for r in STAFF.loc[STAFF["team_id"] == "T1"].itertuples()])
        s.add_all([Patient(patient_id=p, birth_date=date(1950, 1, 1), sex="female") for p in ("P1", "P2")])
        s.flush()
        s.add_all([Attribution(patient_id=p, month=m, practice_id="PR1", team_id="T1") for p, m in [("P1", JAN), ("P1", FEB), ("P2", JAN)]])
        s.add_all([SubgroupAssignment(patient_id="P1", month=m, subgroup="chronic") for m in (JAN, FEB)])
        s.add_all([
            Encounter(encounter_id="E1", patient_id="P1", team_id="T1", kind="office_visit", start_date=date(2025, 1, 10), is_internal=True),
            Encounter(encounter_id="E2", patient_id="P1", team_id="T1", kind="office_visit", start_date=date(2025, 2, 3), is_internal=True),
            Encounter(encounter_id="C1", patient_id="P1", kind="ed_visit", start_date=date(2025, 1, 20), is_internal=False, paid_usd=1000.0),
            Encounter(encounter_id="C2", patient_id="P1", kind="specialist_visit", start_date=date(2025, 2, 5), is_internal=False,
                      in_network=False, paid_usd=250.0),
            Encounter(encounter_id="C3", patient_id="P2", kind="admission", start_date=date(2025, 2, 14), is_internal=False, paid_usd=9000.0),
            Encounter(encounter_id="E3", patient_id="P2", team_id="T1", kind="phone_call", start_date=date(2025, 2, 20), is_internal=True),
            Encounter(encounter_id="C4", patient_id="P1", kind="ed_visit", start_date=date(2025, 3, 2), is_internal=False, paid_usd=777.0),
        ])
        s.flush()
        s.add_all([StaffMinutes(encounter_id="E1", role="physician", minutes=20), StaffMinutes(encounter_id="E1", role="medical_assistant", minutes=15)])
        s.commit()


def test_patient_month_cost_wide_rows(engine):
    _seed(engine)
    wide = costs.patient_month_cost_wide(engine, [JAN, FEB])
    assert not wide.duplicated(["patient_id", "month"]).any()
    # every attributed patient-month appears once (one member-month), with every metric
    assert len(wide) == 3
    assert list(wide.columns) == ["patient_id", "month", *costs.cost_metrics()]
    total = wide.set_index(["patient_id", "month"])[costs.COST_TOTAL]
    settings = costs.load_cost_settings()
    # default settings: space and equipment per FTE (2,080 h): physician 20 m2 x $400 + $10,000 = $18,000,
    # MA 10 m2 x $400 + $6,000 = $10,000; physician 2,500 h = 2500/2080 FTE, MA 2,000 h = 2000/2080 FTE
    md = (230_400 + 18_000 * 2500 / 2080) / 120_000
    ma = (45_000 + 10_000 * 2000 / 2080) / 96_000
    e1 = 20 * md + 15 * ma
    e2 = sum(m * {"physician": md, "medical_assistant": ma}.get(r, 0.0) for r, m in settings.process_maps["office_visit"].items())
    assert total[("P1", JAN)] == pytest.approx(e1 + 1000)
    assert total[("P1", FEB)] == pytest.approx(e2 + 250)
    assert total[("P2", JAN)] == 0  # attributed, nothing happened
    metric = wide.set_index(["patient_id", "month"])
    assert metric.loc[("P1", FEB), costs.COST_OUT_OF_NETWORK] == pytest.approx(250)
    assert metric.loc[("P1", FEB), costs.COST_INTERNAL_STANDARD] == pytest.approx(e2)
    assert metric.loc[("P1", JAN), costs.category_metric("ed")] == pytest.approx(1000)


def test_reconciliation_with_unattributed_remainder(engine):
    _seed(engine)
    settings = costs.load_cost_settings()
    inputs = costs.load_cost_inputs(engine, [JAN, FEB])
    outside = costs.unattributed_costs(inputs, settings)
    # P2 in February (not attributed): the $9,000 admission, and a phone call whose process map
    # uses a registered nurse; nobody in the network has that role, so it has no rate and costs 0
    assert outside[costs.COST_EXTERNAL].sum() == pytest.approx(9000)
    assert outside[costs.COST_INTERNAL].sum() == 0
    rec = cost_reports.reconcile_costs(engine, [JAN, FEB], settings)
    assert rec.claims_paid_usd == pytest.approx(1000 + 250 + 9000)  # March's claim is outside the months
    assert rec.difference_usd == pytest.approx(0.0, abs=1e-9)
    wide = costs.build_patient_month_costs(inputs, settings)
    assert wide[costs.COST_TOTAL].sum() + outside[costs.COST_TOTAL].sum() == pytest.approx(rec.activities_internal_usd + rec.claims_paid_usd)


def test_reconciliation_all_months(engine):
    _seed(engine)
    rec = cost_reports.reconcile_costs(engine, None)
    assert rec.claims_paid_usd == pytest.approx(1000 + 250 + 9000 + 777)
    assert rec.unattributed_external_usd == pytest.approx(9000 + 777)
    assert rec.difference_usd == pytest.approx(0.0, abs=1e-9)


def test_cost_pmpm_by_subgroup_from_database(engine):
    _seed(engine)
    settings = costs.load_cost_settings()
    wide = costs.build_patient_month_costs(costs.load_cost_inputs(engine, [JAN, FEB]), settings)
    by_subgroup = costs.cost_pmpm(wide, ["subgroup"]).set_index("subgroup")
    assert by_subgroup.loc["chronic", "member_months"] == 2
    assert by_subgroup.loc[costs.UNASSIGNED_SUBGROUP, "cost_total_pmpm_usd"] == 0
    network = costs.cost_pmpm(wide)
    assert network["member_months"].item() == 3
    assert network["cost_total_pmpm_usd"].item() == pytest.approx(wide[costs.COST_TOTAL].sum() / 3)


def test_cost_pmpm_from_cells_matches_patient_months(engine):
    """Cells written from the provider rows give the same PMPM as the patient-month frame."""
    from core.store.models import Cell

    _seed(engine)
    wide = costs.patient_month_cost_wide(engine, [JAN, FEB])
    long = wide.melt(id_vars=["patient_id", "month"], var_name="metric", value_name="numerator")
    long = long.assign(denominator=1.0, sum_sq=long["numerator"] ** 2)  # each row one member-month
    cells = long.groupby(["month", "metric"], as_index=False)[["numerator", "denominator", "sum_sq"]].sum()
    with Session(engine) as s:
        s.add_all([Cell(practice_id="PR1", team_id="T1", subgroup="all", month=r.month, stratum="all", stratum_value="all", metric=r.metric,
                        numerator=r.numerator, denominator=r.denominator, sum_sq=r.sum_sq) for r in cells.itertuples()])
        s.commit()
    assert cost_reports.has_cost_cells(engine)
    from_cells = cost_reports.cost_pmpm_from_cells(engine, (), [JAN, FEB])
    direct = costs.cost_pmpm(costs.build_patient_month_costs(costs.load_cost_inputs(engine, [JAN, FEB]), costs.load_cost_settings()))
    for column in ("member_months", "cost_total_pmpm_usd", "cost_internal_pmpm_usd", "cost_out_of_network_pmpm_usd"):
        assert from_cells[column].item() == pytest.approx(direct[column].item())
    assert cost_reports.cost_pmpm_from_cells(engine, ["month"], [JAN, FEB])["member_months"].tolist() == [2, 1]


@pytest.mark.parametrize("period, window, expected", [
    (date(2025, 3, 1), "month", [date(2025, 3, 1)]),
    (date(2025, 2, 1), "quarter", [date(2024, 12, 1), date(2025, 1, 1), date(2025, 2, 1)]),
])
def test_window_months(period, window, expected):
    assert window_months(period, window) == expected


def test_cli_costs_and_payments(tmp_path, capsys):
    from core.cli.main import main
    from core.store.db import create_schema, make_engine

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    eng = make_engine(url)
    create_schema(eng)
    _seed(eng)
    eng.dispose()
    assert main(["costs", "--database-url", url, "--period", "2025-02", "--window", "quarter"]) == 0
    out = capsys.readouterr().out
    assert "PMPM from encounters" in out and "unused_capacity" in out and "composition" in out
    assert "capacity_cost_rates" in out and "leakage_by_category" in out and "leakage_by_month" in out
    assert main(["payments", "--database-url", url, "--period", "2025-02", "--window", "quarter", "--benchmark-pmpy", "12000"]) == 0
    out = capsys.readouterr().out
    assert "by_subgroup" in out and "fee_for_service" in out and "ACO reconciliation" in out and "net_payment_usd" in out
    assert "== fully_loaded_margin ==" in out and "ACO projection of the performance year" in out


def _cells_total(engine, metric: str) -> float:
    from sqlalchemy import func, select

    from core.store.models import Cell

    with engine.connect() as conn:
        stmt = select(func.coalesce(func.sum(Cell.numerator), 0.0)).where(Cell.metric == metric, Cell.stratum == "all")
        return float(conn.execute(stmt).scalar_one())


def test_cells_plus_unattributed_equal_activities_and_claims(engine):
    """Acceptance: internal + external cost in the cells (built by core.derive.cells) plus the documented
    unattributed remainder equals every activity and claim of the same months."""
    facts = pytest.importorskip("core.derive.cells")
    _seed(engine)
    facts.build_cells(engine)
    rec = cost_reports.reconcile_costs(engine, [JAN, FEB])
    in_cells = _cells_total(engine, costs.COST_INTERNAL) + _cells_total(engine, costs.COST_EXTERNAL)
    assert in_cells == pytest.approx(rec.attributed_internal_usd + rec.attributed_external_usd)
    assert in_cells + rec.unattributed_internal_usd + rec.unattributed_external_usd == pytest.approx(rec.activities_internal_usd + rec.claims_paid_usd)
    assert _cells_total(engine, costs.COST_TOTAL) == pytest.approx(in_cells)


@pytest.mark.parametrize("roles, status, missing", [
    ((), costs.NOT_COSTED, ()),                                                   # no staff roster at all
    (("physician", "medical_assistant"), costs.PARTLY_COSTED, ("registered_nurse",)),  # the phone-call map needs a nurse
    (("physician", "medical_assistant", "registered_nurse"), costs.COSTED, ()),
])  # fmt: skip
def test_costing_status(settings, roles, status, missing):
    got = costs.costing_status_of(roles, settings)
    assert (got.status, got.roles_without_staff) == (status, missing)
    assert got.costed == (status != costs.NOT_COSTED)
    assert (got.note() == "") == (status == costs.COSTED)
    if missing:  # the role as the catalogue names it, not its code
        assert "Registered nurse" in got.note() and "registered_nurse" not in got.note()


def test_show_not_costed(settings):
    frame = pd.DataFrame({"model": ["bundled"], "revenue_usd": [500.0], "margin_usd": [float("nan")]})
    shown = costs.show_not_costed(frame, ["margin_usd"], costs.costing_status_of((), settings))
    assert shown["margin_usd"].tolist() == ["not costed"] and shown["revenue_usd"].tolist() == [500.0]
    assert costs.show_not_costed(frame, ["margin_usd"], costs.costing_status_of(["physician", "medical_assistant", "registered_nurse"],
                                                                               settings)) is frame  # fmt: skip


def test_cost_report_without_staff_is_not_costed(engine):
    _seed(engine)
    with Session(engine) as s:
        for member in s.exec(select(Staff)).all():
            s.delete(member)
        s.commit()
    report = cost_reports.cost_report(engine, [JAN, FEB])
    assert report["costing"].startswith("internal cost not costed")
    assert report["pmpm_total"][["cost_total_pmpm_usd", "cost_internal_pmpm_usd"]].isna().all(axis=None)
    assert report["pmpm_total"]["cost_external_pmpm_usd"].iloc[0] > 0  # claims are still known
    unused = report["unused_capacity"]
    # minutes were used but nobody supplies capacity: unknown, never negative
    assert (unused["capacity"] == "no staff").all() and unused["unused_cost_usd"].isna().all() and (unused["used_minutes"] > 0).all()

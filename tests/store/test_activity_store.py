"""The derived patient-month activity on SQLite and PostgreSQL: a hand-built set of encounters
with every costing case, a rebuild, the worklist rules' kinds, and on the sample network every
row equal to core.derive.costs (TDABC per encounter) summed per patient and month in pandas."""

import dataclasses
from datetime import date

import pandas as pd
import pytest
from sqlalchemy import delete, select, update

from core.derive.activity import ACTIVITY_COLUMNS, build_patient_month_activity, ensure_patient_month_activity
from core.derive.costs import encounter_costs, load_cost_inputs, load_cost_settings
from core.store import models
from core.store.queries import read_frame
from core.views.worklist import load_worklist_rules
from tests.builders import add_rows

SEP, OCT = date(2026, 9, 1), date(2026, 10, 1)


def build_encounters(engine) -> None:
    """Team T1 (a physician, a nurse), team T2 (no staff: network rates); patients P1 and P2."""
    rows = [
        models.Practice(practice_id="A", name="A"),
        models.Team(team_id="T1", practice_id="A", name="T1"),
        models.Team(team_id="T2", practice_id="A", name="T2"),
        models.Staff(staff_id="S1", team_id="T1", name="Dr", role="physician", annual_cost_usd=300_000, paid_hours_per_year=2000),
        models.Staff(staff_id="S2", team_id="T1", name="RN", role="registered_nurse", annual_cost_usd=100_000, paid_hours_per_year=2000),
        models.Patient(patient_id="P1", birth_date=date(1950, 1, 1), sex="female"),
        models.Patient(patient_id="P2", birth_date=date(1960, 1, 1), sex="male"),
    ]  # fmt: skip

    def encounter(eid, pid, kind, day, internal, paid=0.0, team="T1"):
        rows.append(models.Encounter(encounter_id=eid, patient_id=pid, team_id=team, kind=kind, start_date=day,
                                     is_internal=internal, paid_usd=paid))  # fmt: skip

    encounter("recorded", "P1", "office_visit", date(2026, 9, 3), True)  # recorded minutes x T1 rates
    rows += [models.StaffMinutes(encounter_id="recorded", role="physician", minutes=20.0),
             models.StaffMinutes(encounter_id="recorded", role="registered_nurse", minutes=10.0)]  # fmt: skip
    encounter("standard", "P1", "office_visit", date(2026, 9, 20), True)  # no minutes: the office-visit process map
    encounter("network", "P1", "phone_call", date(2026, 9, 21), True, team=None)  # no team: network rates
    encounter("econsult", "P1", "e_consult", date(2026, 9, 22), True)  # no minutes: the e-consult process map
    encounter("unrated", "P1", "portal_message", date(2026, 9, 23), True)  # minutes of an unknown role only: no cost
    rows.append(models.StaffMinutes(encounter_id="unrated", role="astronaut", minutes=30.0))
    encounter("ed", "P1", "ed_visit", date(2026, 9, 25), False, 400.0)
    encounter("imaging", "P1", "imaging_lab", date(2026, 9, 28), False, 120.5)
    encounter("admit", "P1", "admission", date(2026, 10, 2), False, 5000.0)
    encounter("admit2", "P1", "admission", date(2026, 10, 30), False, 0.0)
    encounter("p2", "P2", "office_visit", date(2026, 10, 31), True, team="T2")  # T2 has no staff: network rates
    add_rows(engine, rows)


def activity(engine) -> pd.DataFrame:
    t = models.PatientMonthActivity
    return read_frame(engine, select(*[t.__table__.c[c] for c in ACTIVITY_COLUMNS]).order_by(t.patient_id, t.month))


def tdabc(engine) -> pd.DataFrame:
    """Internal and external cost per patient and month by core.derive.costs (the cost cells' model)."""
    cost = encounter_costs(load_cost_inputs(engine), load_cost_settings())
    out = cost.groupby(["patient_id", "month", "is_internal"])["cost_usd"].sum().unstack(fill_value=0.0)
    return out.reindex(columns=[True, False], fill_value=0.0).set_axis(["internal", "external"], axis=1)


@pytest.fixture
def encounters(store_engine):
    build_encounters(store_engine)
    return store_engine


def test_one_row_per_patient_and_month_with_every_costing_case(encounters):
    summary = build_patient_month_activity(encounters)
    rows = activity(encounters)
    assert summary["rows"] == 3
    assert list(zip(rows["patient_id"], rows["month"], strict=True)) == [("P1", SEP), ("P1", OCT), ("P2", OCT)]
    p1_sep, p1_oct, p2_oct = (r._asdict() for r in rows.drop(columns=["patient_id", "month"]).itertuples(index=False))
    assert (p1_sep["cost_external_usd"], p1_sep["ed_visits"], p1_sep["admissions"]) == (pytest.approx(520.5), 1, 0)
    assert (p1_sep["last_acute_date"], p1_sep["last_visit_date"]) == (date(2026, 9, 25), date(2026, 9, 20))
    assert (p1_oct["cost_internal_usd"], p1_oct["cost_external_usd"], p1_oct["admissions"]) == (0.0, 5000.0, 2)
    assert (p1_oct["last_acute_date"], p1_oct["last_visit_date"]) == (date(2026, 10, 30), None)
    assert (p2_oct["last_acute_date"], p2_oct["last_visit_date"], p2_oct["ed_visits"]) == (None, date(2026, 10, 31), 0)
    # internal cost: exactly core.derive.costs' TDABC (team rates, network fallback, process maps, nothing for the rest)
    expected = tdabc(encounters)
    assert rows["cost_internal_usd"].tolist() == pytest.approx(expected["internal"].tolist())
    assert rows["cost_external_usd"].tolist() == pytest.approx(expected["external"].tolist())
    # by hand: rate = (salary + space and equipment) / (80 % of paid minutes); the office-visit map's
    # front desk and medical assistant minutes have no staff anywhere, hence no rate
    # space and equipment by square metres per FTE (costing.toml): physician 20 m2 x $400 + $10,000
    # equipment, nurse 12 m2 x $400 + $6,000, each times the post's FTE (2,000 of 2,080 hours)
    physician, nurse = (300_000 + 18_000 * 2000 / 2080) / 96_000, (100_000 + 10_800 * 2000 / 2080) / 96_000
    recorded, standard, network, econsult = 20 * physician + 10 * nurse, 20 * physician, 10 * nurse, 10 * physician
    assert p1_sep["cost_internal_usd"] == pytest.approx(recorded + standard + network + econsult)
    assert p2_oct["cost_internal_usd"] == pytest.approx(20 * physician)


def test_a_rebuild_replaces_every_row(encounters):
    build_patient_month_activity(encounters)
    with encounters.begin() as conn:
        conn.execute(update(models.Encounter).where(models.Encounter.encounter_id == "admit").values(paid_usd=7000.0))
        conn.execute(delete(models.Encounter).where(models.Encounter.encounter_id == "p2"))
    build_patient_month_activity(encounters)
    rows = activity(encounters)
    assert rows["patient_id"].tolist() == ["P1", "P1"] and rows.loc[1, "cost_external_usd"] == 7000.0


def test_last_dates_follow_the_worklist_rules_kinds(encounters):
    rules = load_worklist_rules()
    edited = dataclasses.replace(rules, visit_kinds=("phone_call",),
                                 flags={**rules.flags, "recent_acute": {**rules.flags["recent_acute"], "kinds": ["imaging_lab"]}})  # fmt: skip
    build_patient_month_activity(encounters, edited)
    sep = activity(encounters).iloc[0]
    assert (sep["last_acute_date"], sep["last_visit_date"]) == (date(2026, 9, 28), date(2026, 9, 21))


def test_empty_store(store_engine):
    assert build_patient_month_activity(store_engine)["rows"] == 0


def test_every_row_matches_core_costs_on_the_sample_network(sample_engine):
    rows = activity(sample_engine).set_index(["patient_id", "month"])
    expected = tdabc(sample_engine)
    assert len(rows) > 1000
    internal = expected["internal"].reindex(rows.index, fill_value=0.0)
    external = expected["external"].reindex(rows.index, fill_value=0.0)
    assert rows["cost_internal_usd"].to_numpy() == pytest.approx(internal.to_numpy())
    assert rows["cost_external_usd"].to_numpy() == pytest.approx(external.to_numpy())
    assert expected.loc[(expected != 0).any(axis=1)].index.isin(rows.index).all()  # every costed patient-month has its row
    enc = read_frame(sample_engine, select(models.Encounter.patient_id, models.Encounter.kind, models.Encounter.start_date))
    enc["month"] = [date(d.year, d.month, 1) for d in enc["start_date"]]
    counts = enc.groupby(["patient_id", "month"])["kind"].agg(ed=lambda k: (k == "ed_visit").sum(), admissions=lambda k: (k == "admission").sum())
    assert len(counts) == len(rows)
    counts = counts.reindex(rows.index)
    assert (rows["ed_visits"] == counts["ed"]).all() and (rows["admissions"] == counts["admissions"]).all()


def test_ensure_builds_only_a_missing_table(encounters):
    assert ensure_patient_month_activity(encounters)["rows"] == 3  # a store derived before the table existed
    assert ensure_patient_month_activity(encounters) is None


def test_team_month_activity_counts_internal_activities_of_attributed_months(encounters):
    """P1 is attributed to T1 in September only (chronic): its five internal September activities
    are counted by kind; October and P2 (not attributed) are not."""
    add_rows(encounters, [models.Attribution(patient_id="P1", month=SEP, practice_id="A", team_id="T1"),
                          models.SubgroupAssignment(patient_id="P1", month=SEP, team_id="T1", subgroup="chronic")])  # fmt: skip
    assert build_patient_month_activity(encounters)["team_rows"] == 4
    t = models.TeamMonthActivity
    rows = read_frame(encounters, select(t.month, t.team_id, t.subgroup, t.kind, t.activities).order_by(t.kind))
    assert rows.values.tolist() == [[SEP, "T1", "chronic", k, n] for k, n in
                                    (("e_consult", 1), ("office_visit", 2), ("phone_call", 1), ("portal_message", 1))]  # fmt: skip
    with encounters.begin() as conn:  # a store derived before the team table existed gets it once
        conn.execute(delete(t))
    assert ensure_patient_month_activity(encounters)["team_rows"] == 4
    assert ensure_patient_month_activity(encounters) is None


def test_team_activity_reads_the_encounters_in_table_order_on_sqlite(engine):
    """SQLite's plan: the whole encounter table in order, the attribution and subgroup by key."""
    from core.derive.activity import team_month_activity_sql

    with engine.connect() as conn:
        sql = team_month_activity_sql(conn)
        plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql.split(")", 1)[1])]
    assert "NOT INDEXED" in sql and "SCAN encounter" in plan, plan
    assert any("attribution" in step and "patient_id=? AND month=?" in step for step in plan), plan

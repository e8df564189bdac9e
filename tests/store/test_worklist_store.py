"""The worklist query on SQLite and PostgreSQL: content, order, flags and scope for a hand-built
network; and, on the sample network, costs (12 months, last and previous 3 months) equal to
core.derive.costs and counts and last visits equal to the encounter rows."""

from datetime import date

import pandas as pd
import pytest
from sqlalchemy import select, text

from core.derive.costs import CostInputs, encounter_costs, isin, load_cost_settings
from core.store.db import upgrade_schema
from core.store.models import Encounter, Measurement, Staff, StaffMinutes, SubgroupAssignment
from core.store.months import add_months, month_end, month_of
from core.store.queries import organisation, read_frame
from core.views.patient import patient_view
from core.views.worklist import FLAG_IDS, load_worklist_rules, team_worklist
from tests.builders import add_rows
from tests.worklist_network import EXPECTED, MONTH, build_worklist_network


@pytest.fixture
def network(store_engine):
    build_worklist_network(store_engine)
    return store_engine


def test_worklist_order_and_flags(network):
    w = team_worklist(network, MONTH, ("A1",))
    assert w["patient_id"].tolist() == [pid for pid, *_ in EXPECTED]
    for pid, _family, _risk, flags in EXPECTED:
        row = w.set_index("patient_id").loc[pid]
        assert {f for f in FLAG_IDS if row[f]} == flags, pid
    assert w["priority"].tolist() == [128, 64, 32, 16, 8, 4, 2, 1, 0, 0, 0]
    assert w.loc[0, "flags"] == "Recent ED visit or admission"


def test_a_reading_after_the_month_is_not_its_last(network):
    """The worklist of October shows October's last readings, also when later ones are stored."""
    add_rows(network, [Measurement(measurement_id=f"late-{code}", patient_id="P_DM", measured_date=date(2026, 11, 20), code=code,
                                   value=6.0) for code in ("4548-4", "44261-6")])  # HbA1c and PHQ-9, after October  # fmt: skip
    w = team_worklist(network, MONTH, ("A1",)).set_index("patient_id")
    assert (w.loc["P_DM", "hba1c_value"], w.loc["P_DM", "hba1c_date"]) == (9.5, date(2026, 9, 1))
    assert (w.loc["P_DM", "phq9_value"], w.loc["P_DM", "phq9_date"]) == (4.0, date(2026, 9, 1))
    assert "uncontrolled_diabetes" in FLAG_IDS and w.loc["P_DM", "uncontrolled_diabetes"]


def test_worklist_values(network):
    w = team_worklist(network, MONTH, ("A1",)).set_index("patient_id")
    # the PHQ-9 change is the latest score minus the one of the last earlier day (None without one)
    assert (w.loc["P_RISING", "phq9_value"], w.loc["P_RISING", "phq9_change"]) == (9.0, 5.0)
    assert (w.loc["P_LOW", "phq9_value"], w.loc["P_LOW", "phq9_change"]) == (12.0, -2.0)
    assert w.loc["P_EDGE", "phq9_change"] == -4.0 and pd.isna(w.loc["P_ACUTE", "phq9_change"])
    assert w.loc["P_LATE", "questionnaires_due"] == "PROMIS Global-10" and w.loc["P_CALM", "questionnaires_due"] == ""
    assert w.loc["P_BP", "bp"] == "150/85" and w.loc["P_BP", "bp_date"] == date(2026, 10, 5)  # lowest systolic of the day
    assert (w.loc["P_DM", "hba1c_value"], w.loc["P_DM", "hba1c_date"]) == (9.5, date(2026, 9, 1))
    assert (w.loc["P_COST", "cost_12m_usd"], w.loc["P_COST", "cost_last_3m_usd"], w.loc["P_COST", "cost_prev_3m_usd"]) == (3300, 3000, 300)
    assert (w.loc["P_OLDED", "ed_visits_12m"], w.loc["P_ACUTE", "ed_visits_12m"], w.loc["P_CALM", "ed_visits_12m"]) == (1, 1, 0)
    assert w.loc["P_MOVED", "subgroup_since"] == date(2026, 10, 1) and w.loc["P_CALM", "subgroup_since"] == date(2026, 1, 1)
    assert w.loc["P_CALM", "last_visit"] == date(2026, 10, 12) and w.loc["P_DM", "last_visit"] is None
    assert w.loc["P_ACUTE", "age"] == 76 and w.loc["P_CALM", "phq9_value"] == 4.0
    # internal cost of P_CALM = core.derive.costs TDABC of its activities (one with recorded minutes, one by process map)
    enc = read_frame(network, select(*Encounter.__table__.columns).where(Encounter.patient_id == "P_CALM"))
    minutes = read_frame(network, select(*StaffMinutes.__table__.columns))
    staff = read_frame(network, select(*Staff.__table__.columns))
    expected = encounter_costs(CostInputs((), staff, enc, minutes, pd.DataFrame()), load_cost_settings())["cost_usd"].sum()
    assert w.loc["P_CALM", "cost_internal_12m_usd"] == pytest.approx(expected) and expected > 0


def test_worklist_stays_in_scope(network):
    assert "P_OTHER" not in set(team_worklist(network, MONTH, ("A1",))["patient_id"])
    assert team_worklist(network, MONTH, ("A2",))["patient_id"].tolist() == ["P_OTHER"]
    assert team_worklist(network, MONTH, ()).empty
    assert team_worklist(network, MONTH, ("A1",), "chronic").empty
    assert team_worklist(network, date(2026, 9, 1), ("A1",), "chronic")["patient_id"].tolist() == ["P_MOVED"]


def test_older_store_gets_the_assignment_team(network):
    """A store made before subgroup_assignment.team_id: create_schema adds the column, fills it from
    the attribution of the same month and indexes it, and the subgroup worklist reads it."""
    before = team_worklist(network, date(2026, 9, 1), ("A1",), "chronic")
    with network.begin() as conn:  # the store as the previous version made it
        conn.execute(text("DROP INDEX ix_subgroup_assignment_month_team_subgroup"))
        conn.execute(text("DROP INDEX ix_subgroup_assignment_month_subgroup_rule"))
        conn.execute(text("ALTER TABLE subgroup_assignment DROP COLUMN team_id"))
        conn.execute(text("CREATE INDEX ix_subgroup_assignment_month_subgroup ON subgroup_assignment (month, subgroup)"))
    assert upgrade_schema(network) == [
        "added subgroup_assignment.team_id", "built index ix_subgroup_assignment_month_subgroup_rule",
        "built index ix_subgroup_assignment_month_team_subgroup", "dropped index ix_subgroup_assignment_month_subgroup"]  # fmt: skip
    assert upgrade_schema(network) == []
    rows = read_frame(network, text("SELECT s.team_id AS copied, a.team_id FROM subgroup_assignment s JOIN attribution a"
                                    " ON a.patient_id = s.patient_id AND a.month = s.month"))  # fmt: skip
    assert len(rows) > 10 and (rows["copied"] == rows["team_id"]).all()
    pd.testing.assert_frame_equal(team_worklist(network, date(2026, 9, 1), ("A1",), "chronic"), before)
    assert before["patient_id"].tolist() == ["P_MOVED"]


def test_patient_view_reads_the_patient_rows(network):
    assert patient_view(network, "P_OTHER", ("A1",)) is None
    view = patient_view(network, "P_CALM", ("A1",))
    assert view.current.subgroup == "complex" and view.current.pcp == "Dr One"
    assert view.econsults[["specialty", "response_days"]].values.tolist() == [["cardiology", 3]]
    assert set(view.care_team["name"]) == {"Dr One", "Nurse Three"} and view.care_team.loc[0, "name"] == "Dr One"
    assert view.conditions["code"].tolist() == ["I10"]
    assert view.costs["cost_usd"].sum() == pytest.approx(team_worklist(network, MONTH, ("A1",)).set_index("patient_id").loc["P_CALM", "cost_12m_usd"])


def test_costs_and_counts_match_the_rows_on_the_sample_network(sample_engine):
    org = organisation(sample_engine)
    team = org["team_id"].iloc[0]
    months = read_frame(sample_engine, select(Encounter.start_date).order_by(Encounter.start_date.desc()).limit(1))
    month = date(months.iloc[0, 0].year, months.iloc[0, 0].month, 1)
    w = team_worklist(sample_engine, month, (team,)).set_index("patient_id")
    assert len(w) > 20
    first = add_months(month, -11)
    enc = read_frame(sample_engine, select(*Encounter.__table__.columns).where(Encounter.patient_id.in_(list(w.index))))
    enc = enc[(month_of(enc["start_date"]) >= first) & (month_of(enc["start_date"]) <= month)]
    minutes = read_frame(sample_engine, select(*StaffMinutes.__table__.columns))
    staff = read_frame(sample_engine, select(*Staff.__table__.columns))
    cost = encounter_costs(CostInputs((), staff, enc, minutes, pd.DataFrame()), load_cost_settings())
    expected = cost.groupby(["patient_id", "is_internal"])["cost_usd"].sum().unstack(fill_value=0.0).reindex(w.index, fill_value=0.0)
    assert w["cost_internal_12m_usd"].to_numpy() == pytest.approx(expected[True].to_numpy())
    assert w["cost_external_12m_usd"].to_numpy() == pytest.approx(expected[False].to_numpy())
    ed = enc[enc["kind"] == "ed_visit"].groupby("patient_id").size().reindex(w.index, fill_value=0)
    assert (w["ed_visits_12m"] == ed).all() and ed.sum() > 0
    admissions = enc[enc["kind"] == "admission"].groupby("patient_id").size().reindex(w.index, fill_value=0)
    assert (w["admissions_12m"] == admissions).all()
    rules = load_worklist_rules()
    last_visit = enc[enc["kind"].isin(rules.visit_kinds)].groupby("patient_id")["start_date"].max().reindex(w.index)
    assert w["last_visit"].tolist() == [None if pd.isna(d) else d for d in last_visit] and last_visit.notna().sum() > 20
    for column, months in (("cost_last_3m_usd", range(-2, 1)), ("cost_prev_3m_usd", range(-5, -2))):
        recent = cost[isin(cost["month"], [add_months(month, n) for n in months])].groupby("patient_id")["cost_usd"].sum()
        assert w[column].to_numpy() == pytest.approx(recent.reindex(w.index, fill_value=0.0).to_numpy()), column


def test_last_and_previous_measures_match_the_rows_on_the_sample_network(sample_store):
    """Each shown measure is the lowest value of the patient's last day of that code up to the
    month's end, and the PHQ-9 change is that minus the lowest value of the day before it, as read
    from the measurement rows (SQLite and PostgreSQL read them by different queries)."""
    team = organisation(sample_store)["team_id"].iloc[0]
    month = read_frame(sample_store, select(SubgroupAssignment.month).order_by(SubgroupAssignment.month.desc()).limit(1)).iloc[0, 0]
    month = add_months(month, -1)  # readings after the month are in the store, and must not count
    w = team_worklist(sample_store, month, (team,)).set_index("patient_id")
    rules = load_worklist_rules()
    rows = read_frame(sample_store, select(Measurement.patient_id, Measurement.code, Measurement.measured_date, Measurement.value)
                      .where(Measurement.patient_id.in_(list(w.index))))  # fmt: skip
    rows["measured_date"] = pd.to_datetime(rows["measured_date"]).dt.date
    assert (rows["measured_date"] > month_end(month)).any()
    rows = rows[rows["measured_date"] <= month_end(month)]
    days = rows.groupby(["patient_id", "code", "measured_date"])["value"].min().reset_index()
    days["day_rank"] = days.groupby(["patient_id", "code"])["measured_date"].rank(method="dense", ascending=False)
    for column in rules.columns:
        last = days[(days["code"] == column.code) & (days["day_rank"] == 1)].set_index("patient_id").reindex(w.index)
        assert w[f"{column.id}_value"].to_numpy(dtype=float) == pytest.approx(last["value"].to_numpy(dtype=float), nan_ok=True), column.id
        if f"{column.id}_date" in w:  # (blood pressure shows one date, bp_date)
            assert w[f"{column.id}_date"].tolist() == [None if pd.isna(d) else d for d in last["measured_date"]], column.id
        assert last["value"].notna().sum() > 10, column.id
    phq9 = days[days["code"] == rules.flags["phq9_rising"]["code"]].pivot(index="patient_id", columns="day_rank", values="value")
    change = (phq9[1.0] - phq9[2.0]).reindex(w.index)
    assert w["phq9_change"].to_numpy(dtype=float) == pytest.approx(change.to_numpy(dtype=float), nan_ok=True)
    assert change.notna().sum() > 10 and (change != 0).sum() > 5


def test_a_subgroup_worklist_is_the_team_worklist_of_that_subgroup(sample_engine):
    team = organisation(sample_engine)["team_id"].iloc[0]
    month = read_frame(sample_engine, select(SubgroupAssignment.month).order_by(SubgroupAssignment.month.desc()).limit(1)).iloc[0, 0]
    whole = team_worklist(sample_engine, month, (team,))
    subgroup = whole["subgroup"].value_counts().index[0]
    mine = team_worklist(sample_engine, month, (team,), subgroup)
    expected = whole[whole["subgroup"] == subgroup].reset_index(drop=True)
    assert len(mine) > 10 and len(mine) < len(whole)
    pd.testing.assert_frame_equal(mine, expected)


def test_subgroup_members_read_one_index_range(engine):
    """The members of a team's subgroup come from the (month, team_id, subgroup) index of the
    assignments, not from a walk over every patient of the team (SQLite's plan)."""
    from core.views.worklist import members_select

    stmt = members_select(MONTH, ("A1",), "complex").compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {stmt}"))
    assert "ix_subgroup_assignment_month_team_subgroup" in plan and "attribution" not in plan, plan

"""Care gaps, transitions of care and the outreach log on SQLite and PostgreSQL, on the worklist's
hand-built network (team A1, October 2026): read through the same membership as the worklist,
scoped to the team, and outreach audited and refused outside the care relationship."""

from datetime import UTC, date, datetime

import pandas as pd
import pytest
from sqlalchemy import select

from core.access.policy import Scope
from core.store import models
from core.store.queries import read_frame
from core.views.care_gaps import team_care_gaps
from core.views.outreach import last_outreach, patient_outreach, record_outreach
from core.views.transitions import team_transitions
from core.views.worklist import member_ids, team_worklist
from core.views.worklist_page import worklist_reads
from tests.builders import add_rows
from tests.worklist_network import MONTH, build_worklist_network

NURSE = Scope("nurse@example.org", "Nurse", "clinician", ("A1",), ("A",), True, False)
OTHER_TEAM = Scope("other@example.org", "Other", "clinician", ("A2",), ("A",), True, False)
AGGREGATE = Scope("exec@example.org", "Exec", "executive", ("A1",), ("A",), False, False)


@pytest.fixture
def network(store_engine):
    build_worklist_network(store_engine)
    add_rows(store_engine, [
        models.Procedure(procedure_id="X1", patient_id="P_CALM", performed_date=date(2026, 10, 3), code="150", code_system="CVX"),
        models.Procedure(procedure_id="X2", patient_id="P_OTHER", performed_date=date(2026, 10, 3), code="G0506", code_system="HCPCS"),
        models.Encounter(encounter_id="E-stay", patient_id="P_DM", kind="admission", start_date=date(2026, 10, 20),
                         end_date=date(2026, 10, 23), is_internal=False, discharge_disposition="home"),
        models.Encounter(encounter_id="E-call", patient_id="P_DM", team_id="A1", kind="phone_call", start_date=date(2026, 10, 26),
                         is_internal=True),
    ])  # fmt: skip
    return store_engine


def test_care_gaps_of_the_team_only(network):
    gaps = team_care_gaps(network, MONTH, ("A1",))
    assert "P_OTHER" not in set(gaps["patient_id"])  # team A2
    calm = gaps[gaps["patient_id"] == "P_CALM"].set_index("gap_id")
    assert calm.loc["flu_vaccination", ["status", "last_done"]].tolist() == ["up to date", date(2026, 10, 3)]
    assert calm.loc["care_plan", "status"] == "overdue"  # complex, no care plan recorded
    assert calm.loc["bp_check", "status"] == "overdue"  # hypertension (I10 since 2020) without a reading
    for subgroup in (None, "complex"):  # no team in scope: no rows, whatever the subgroup
        assert team_care_gaps(network, MONTH, (), subgroup).empty
        assert team_transitions(network, MONTH, (), subgroup, today=date(2026, 12, 1)).empty


def test_transitions_of_a_discharge(network):
    got = team_transitions(network, MONTH, ("A1",), today=date(2026, 12, 1))
    stay = got[got["patient_id"] == "P_DM"].set_index("follow_up")
    # Discharged Friday 23 Oct: contact by Tuesday 27 (the call of Monday 26 counts); visit within 7 days missed by 31 Oct.
    assert stay.loc["Contact within 2 business days", ["status", "done_on", "deadline"]].tolist() == \
        ["done", date(2026, 10, 26), date(2026, 10, 27)]  # fmt: skip
    assert stay.loc["Visit within 7 days", "status"] == "missed"
    ed = got[got["patient_id"] == "P_ACUTE"]
    assert ed["follow_up"].tolist() == ["Follow-up within 7 days"] and ed["status"].tolist() == ["missed"]
    assert "P_OTHER" not in set(got["patient_id"])


def test_outreach_is_recorded_audited_and_closes_the_cycle(network):
    oid = record_outreach(network, NURSE, "P_LATE", "call", "reached", "Booked =HYPERLINK(\"x\")  PROMIS for Friday")
    log = patient_outreach(network, "P_LATE")
    assert log[["channel", "outcome", "user_key"]].values.tolist() == [["Phone call", "Reached", "nurse@example.org"]]
    assert log["note"].iloc[0] == 'Booked =HYPERLINK("x") PROMIS for Friday'  # stored as typed (one line); exports neutralise
    events = read_frame(network, select(models.AuditEvent.action, models.AuditEvent.target, models.AuditEvent.detail))
    assert events[events["action"] == "outreach"].values.tolist() == [["outreach", "P_LATE", f"call reached (entry {oid})"]]
    team = member_ids(network, MONTH, ("A1",), None)  # the worklist page reads it for its list's patients
    last = last_outreach(network, team, now=datetime.now(UTC))
    assert last.loc["P_LATE", "reached_this_cycle"] and last.loc["P_LATE", "last_outreach"].startswith("Phone call: Reached")
    later = last_outreach(network, team, now=datetime(2099, 1, 1, tzinfo=UTC))
    assert not later.loc["P_LATE", "reached_this_cycle"]  # the cycle (30 days) is over


@pytest.mark.parametrize("scope, patient, channel, outcome, error", [
    (OTHER_TEAM, "P_LATE", "call", "reached", PermissionError),  # not their team's patient
    (AGGREGATE, "P_LATE", "call", "reached", PermissionError),  # no patient-level access
    (NURSE, "P_LATE", "fax", "reached", ValueError),
    (NURSE, "P_LATE", "call", "maybe", ValueError),
])
def test_outreach_refused(network, scope, patient, channel, outcome, error):
    with pytest.raises(error):
        record_outreach(network, scope, patient, channel, outcome)
    assert patient_outreach(network, patient).empty


@pytest.mark.parametrize("subgroup", [None, "complex"])
def test_the_members_rows_are_read_by_their_ids_not_by_a_sub_select(network, subgroup):
    """The worklist page's reads of the members' rows name the members (read once), so the
    planner knows how many there are: given a sub-select of the assignments, PostgreSQL took the
    1,389 patients of a team's subgroup at 1,000,000 patients for 13,178 and scanned all 29.5 M
    measurements (2.4 s against 0.06 s)."""
    from sqlalchemy import event

    statements = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(network, "before_cursor_execute", seen)
    try:
        for read in (team_worklist, team_care_gaps, team_transitions):
            read(network, MONTH, ("A1",), subgroup)
        last_outreach(network, member_ids(network, MONTH, ("A1",), subgroup))
    finally:
        event.remove(network, "before_cursor_execute", seen)
    rows = ("measurement", "encounter", "condition", "procedure", "medication", "patient_month_activity", "outreach")
    reads = [s for s in statements if any(f"FROM {t}" in s for t in rows)]
    assert len(reads) >= 10
    assert not [s for s in reads if "subgroup_assignment" in s or "attribution" in s]


def test_the_worklist_pages_reads_side_by_side_equal_them_one_after_another(network):
    """worklist_reads runs the worklist, its care gaps and its transitions in three threads, each on
    its own connection: the same frames as the three calls one after another."""
    today = date(2026, 10, 28)  # a day inside the discharge's windows: their status depends on it
    sizes = []
    for month, subgroup in ((MONTH, None), (date(2026, 9, 1), "chronic")):  # September: the mover alone was chronic
        worklist, gaps, transitions = worklist_reads(network, month, ("A1",), subgroup, today=today)
        pd.testing.assert_frame_equal(worklist, team_worklist(network, month, ("A1",), subgroup))
        pd.testing.assert_frame_equal(gaps, team_care_gaps(network, month, ("A1",), subgroup))
        pd.testing.assert_frame_equal(transitions, team_transitions(network, month, ("A1",), subgroup, today=today))
        sizes.append((len(worklist), gaps["patient_id"].nunique(), len(transitions) > 0))
    assert sizes[0][0] > sizes[1][0] == sizes[1][1] == 1 and sizes[0][2]


def test_care_gaps_read_only_what_their_subgroups_items_need(sample_store):
    """Each subgroup's care gaps, read with only the rows its items look at, equal those worked out
    from every row of its patients; a healthy list reads no measurements and no medications."""
    from core.store.models import Condition, Measurement, Medication, Procedure
    from core.store.queries import organisation
    from core.views.care_gaps import GapInputs, load_gap_inputs, patient_gaps

    teams = tuple(organisation(sample_store)["team_id"])
    sa = models.SubgroupAssignment
    month = read_frame(sample_store, select(sa.month).order_by(sa.month.desc()).limit(1)).iloc[0, 0]
    as_of = date(month.year, month.month, 28)
    for subgroup in ("healthy", "at_risk", "chronic", "complex", "frail"):
        members = member_ids(sample_store, month, teams, subgroup)
        subgroups = pd.DataFrame({"patient_id": members, "subgroup": subgroup})
        read = load_gap_inputs(sample_store, members, subgroups)

        def whole(table, *columns, members=members):
            return read_frame(sample_store, select(*columns).where(table.patient_id.in_(members)))

        every = GapInputs(
            read.patients,
            whole(Condition, Condition.patient_id, Condition.code, Condition.onset_date, Condition.resolved_date),
            whole(Procedure, Procedure.patient_id, Procedure.performed_date, Procedure.code, Procedure.code_system),
            whole(Measurement, Measurement.patient_id, Measurement.measured_date, Measurement.code),
            whole(Medication, Medication.patient_id, Medication.code, Medication.description, Medication.start_date, Medication.end_date),
        )  # fmt: skip
        expected = patient_gaps(every, as_of)
        pd.testing.assert_frame_equal(patient_gaps(read, as_of), expected)
        assert len(expected) > 0, subgroup
        if subgroup == "healthy":
            assert read.measurements.empty and read.medications.empty and len(every.measurements) > 0


def test_transitions_read_the_rest_for_the_patients_with_an_event_only(sample_store):
    """Each subgroup's transitions of care, with names, contacts and outreach read for the patients
    with a discharge or ED visit only, equal those worked out from every row of its patients."""
    from datetime import timedelta

    from core.store.models import Encounter, Outreach, Patient
    from core.store.queries import organisation
    from core.views.transitions import follow_ups, load_transition_rules

    rules = load_transition_rules()
    teams = tuple(organisation(sample_store)["team_id"])
    sa = models.SubgroupAssignment
    month = read_frame(sample_store, select(sa.month).order_by(sa.month.desc()).limit(1)).iloc[0, 0]
    as_of = date(month.year, month.month, 28)
    first = as_of - timedelta(days=rules.look_back_days)
    statuses = set()
    for subgroup in ("healthy", "at_risk", "chronic", "complex", "frail"):
        members = member_ids(sample_store, month, teams, subgroup)
        visits = read_frame(sample_store, select(Encounter.patient_id, Encounter.kind, Encounter.start_date, Encounter.end_date)
                            .where(Encounter.patient_id.in_(members)))  # fmt: skip
        for column in ("start_date", "end_date"):
            visits[column] = pd.to_datetime(visits[column]).dt.date
        events = pd.concat([
            visits.loc[visits["kind"].isin(ev.kinds) & visits[ev.date].notna(), ["patient_id", ev.date]]
            .rename(columns={ev.date: "event_date"}).assign(event_id=ev.id)
            .pipe(lambda f: f[(f["event_date"] > first) & (f["event_date"] <= as_of)])
            for ev in rules.events
        ], ignore_index=True).drop_duplicates()  # fmt: skip
        who = read_frame(sample_store, select(Patient.patient_id, (Patient.family_name + ", " + Patient.given_name).label("name"))
                         .where(Patient.patient_id.in_(members))).assign(subgroup=subgroup)  # fmt: skip
        contacts = visits[(visits["start_date"] > first) & (visits["start_date"] <= as_of)][["patient_id", "kind", "start_date"]]
        outreach = read_frame(sample_store, select(Outreach.patient_id, Outreach.at.label("day"), Outreach.outcome)
                              .where(Outreach.patient_id.in_(members)))  # fmt: skip
        expected = follow_ups(events.merge(who, on="patient_id"), contacts, outreach, as_of, rules)
        got = team_transitions(sample_store, month, teams, subgroup, today=as_of)
        pd.testing.assert_frame_equal(got, expected)
        # the list holds patients with contacts and no event, whose rows the reads leave out
        assert set(contacts["patient_id"]) - set(events["patient_id"]), subgroup
        statuses |= set(got["status"])
    assert statuses == {"done", "due", "missed"}

"""Row-level scope, on SQLite and PostgreSQL: a clinician's queries never return another team's rows."""

from datetime import date

import pytest

from core.store.models import Attribution, Cell, Encounter, Measurement, SubgroupAssignment
from core.store.queries import member_months_by_month, panel_counts, patient_in_scope, patient_record, team_patients
from tests.builders import add_rows, two_team_network

OCT = date(2026, 10, 1)


@pytest.fixture
def network(store_engine):
    return store_engine, two_team_network(store_engine)


@pytest.mark.parametrize("subgroup", [None, "complex", "chronic"])
def test_team_patients_stay_in_scope(network, subgroup):
    engine, patients = network
    rows = team_patients(engine, OCT, ("A1",), subgroup)
    assert set(rows["team_id"]) <= {"A1"}
    assert set(rows["patient_id"]) <= set(patients["A1"])
    if subgroup in (None, "complex"):
        assert set(rows["patient_id"]) == set(patients["A1"])


def test_empty_scope_returns_nothing(network):
    engine, _ = network
    assert team_patients(engine, OCT, (), None).empty
    assert patient_record(engine, "P1", ()) is None


@pytest.mark.parametrize("patient_id,expected", [("P1", True), ("P4", False), ("nope", False), ("P1' OR '1'='1", False)])
def test_patient_record_only_in_scope(network, patient_id, expected):
    engine, _ = network
    record = patient_record(engine, patient_id, ("A1",))
    assert (record is not None) is expected
    if expected:
        assert record["patient"]["patient_id"] == patient_id
        assert set(record["encounters"]["patient_id"]) == {patient_id}


def test_network_scope_sees_everyone(network):
    engine, patients = network
    assert set(team_patients(engine, OCT, None)["patient_id"]) == set(patients["A1"] + patients["A2"])


def test_aggregates_respect_scope(network):
    engine, _ = network
    assert panel_counts(engine, OCT, ("A2",))["team_id"].unique().tolist() == ["A2"]
    assert member_months_by_month(engine, ("A1",))["member_months"].sum() == 6
    assert member_months_by_month(engine, None)["member_months"].sum() == 12


def moved_patient(engine, months: int):
    """P1 moves from team A1 to A2 after October; ``months`` more months of data follow, on A2."""
    rows = []
    for i in range(1, months + 1):
        month = date(2026, 10 + i, 1) if 10 + i <= 12 else date(2027, 10 + i - 12, 1)
        rows += [Attribution(patient_id="P1", month=month, practice_id="A", team_id="A2", pcp_id="S2"),
                 SubgroupAssignment(patient_id="P1", month=month, team_id="A2", subgroup="chronic", rule_id="test", reason="moved"),
                 Encounter(encounter_id=f"E-new-{i}", patient_id="P1", team_id="A2", kind="office_visit", start_date=month,
                           is_internal=True),
                 Measurement(measurement_id=f"M-new-{i}", patient_id="P1", measured_date=month, code="4548-4", value=9.0),
                 Cell(practice_id="A", team_id="A2", subgroup="chronic", month=month, stratum="all", stratum_value="all",
                      metric="member_months", numerator=1, denominator=1)]  # fmt: skip
    add_rows(engine, rows)


@pytest.mark.parametrize("months_after,grace,old_team_sees", [(1, 0, False), (1, 1, True), (2, 2, True), (3, 2, False)])
def test_access_follows_the_care_relationship(network, months_after, grace, old_team_sees):
    engine, _ = network
    moved_patient(engine, months_after)
    assert patient_in_scope(engine, "P1", ("A1",), grace) is old_team_sees
    assert (patient_record(engine, "P1", ("A1",), grace_months=grace) is not None) is old_team_sees
    assert patient_in_scope(engine, "P1", ("A2",), 0)  # the new team


def test_old_team_sees_only_the_months_of_its_care(network):
    engine, _ = network
    moved_patient(engine, 1)
    old = patient_record(engine, "P1", ("A1",), grace_months=1)
    assert set(old["attribution"]["team_id"]) == {"A1"} and set(old["subgroups"]["team_id"]) == {"A1"}
    assert not old["encounters"]["encounter_id"].str.startswith("E-new").any()
    assert not old["measurements"]["measurement_id"].str.startswith("M-new").any()
    new = patient_record(engine, "P1", ("A2",))
    assert set(new["attribution"]["team_id"]) == {"A2"} and new["encounters"]["encounter_id"].tolist() == ["E-new-1"]
    everything = patient_record(engine, "P1", ("A2",), all_months=True)  # a role granted the whole record
    assert set(everything["attribution"]["team_id"]) == {"A1", "A2"} and len(everything["encounters"]) == 2
    assert len(patient_record(engine, "P1", None)["measurements"]) == 2

"""Row-level scope, on SQLite and PostgreSQL: a clinician's queries never return another team's rows."""

from datetime import date

import pytest

from core.store.queries import member_months_by_month, panel_counts, patient_record, team_patients
from tests.builders import two_team_network

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

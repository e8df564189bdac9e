"""Reads written for speed return what the plain query returns (SQLite, PostgreSQL): a long
``IN`` list as one JSON parameter (:func:`core.store.queries.among`), each patient's first
record with the first encounter from its index (:func:`core.derive.subgroups.frames.load_frames`),
and the measures' reads from the driver's tuples (:func:`core.derive.measures.read_columns`)."""

from datetime import date

import pandas as pd
import pytest
from sqlalchemy import Boolean, String, cast, false, select
from sqlmodel import Session

from core.derive.measures import read_columns
from core.derive.risk import DEFAULT_MODEL
from core.derive.subgroups.frames import load_frames, run_of
from core.store.models import Attribution, Condition, Encounter, Measurement, Medication, Patient, Practice, Procedure, Team
from core.store.queries import among


def _patients(engine, ids: list[str]) -> None:
    with Session(engine) as s:
        s.add_all([Patient(patient_id=p, birth_date=date(1960, 1, 1), sex="female") for p in ids])
        s.commit()


def test_among_finds_the_same_rows_as_a_plain_in(store_engine):
    stored = [f"P{i:05d}" for i in range(0, 30_000, 3)]  # 10,000 patients
    _patients(store_engine, stored)
    asked = [f"P{i:05d}" for i in range(0, 30_000, 2)] + ["", "P'1", 'P"2', "P\\3", "Ünïcode"]
    with store_engine.connect() as conn:
        found = set(conn.execute(select(Patient.patient_id).where(among(Patient.patient_id, asked, conn.dialect.name)))
                    .scalars())  # fmt: skip
        plain = set(conn.execute(select(Patient.patient_id).where(Patient.patient_id.in_(asked))).scalars())
        none = conn.execute(select(Patient.patient_id).where(among(Patient.patient_id, [], conn.dialect.name))).all()
    assert found == plain == set(stored) & set(asked)
    assert len(found) == 5_000  # every sixth id
    assert none == []


def test_the_first_records_are_the_earliest_encounter_condition_or_measurement(store_engine):
    ids = ["A", "B", "C", "D", "E"]
    _patients(store_engine, ids)
    with Session(store_engine) as s:
        s.add(Practice(practice_id="P1", name="Practice 1"))
        s.add(Team(team_id="T1", practice_id="P1", name="Team 1"))
        s.flush()
        s.add_all([Attribution(patient_id=p, month=date(2025, 6, 1), practice_id="P1", team_id="T1") for p in ids])
        s.add_all([
            # A: an encounter first, before a later one and a condition
            Encounter(encounter_id="a1", patient_id="A", kind="office_visit", start_date=date(2025, 3, 4), is_internal=True),
            Encounter(encounter_id="a0", patient_id="A", kind="phone_call", start_date=date(2021, 7, 9), is_internal=True),
            Condition(condition_id="ac", patient_id="A", code="I10", onset_date=date(2022, 1, 1)),
            # B: a condition before its encounter
            Encounter(encounter_id="b1", patient_id="B", kind="office_visit", start_date=date(2024, 5, 1), is_internal=True),
            Condition(condition_id="bc", patient_id="B", code="E11.9", onset_date=date(2019, 2, 3)),
            # C: a measurement only
            Measurement(measurement_id="cm", patient_id="C", measured_date=date(2023, 8, 8), code="39156-5", value=31.0),
            # D: a measurement before its encounter; E: nothing recorded (no row)
            Encounter(encounter_id="d1", patient_id="D", kind="ed_visit", start_date=date(2025, 1, 2), is_internal=True),
            Measurement(measurement_id="dm", patient_id="D", measured_date=date(2024, 12, 31), code="39156-5", value=27.0),
        ])  # fmt: skip
        s.commit()
    expected = pd.DataFrame({"patient_id": ["A", "B", "C", "D"],
                             "first_date": pd.to_datetime(["2021-07-09", "2019-02-03", "2023-08-08", "2024-12-31"])})  # fmt: skip
    with store_engine.connect() as conn:
        run = run_of(conn, None, DEFAULT_MODEL)
        whole = load_frames(conn, run, None, tables=("first_records",))
        ranged = load_frames(conn, run, ("B", "D"), tables=("first_records",))["first_records"]
        listed = load_frames(conn, run, ["A", "E", "nobody"], tables=("first_records",))["first_records"]

    def rows(frame: pd.DataFrame) -> list[tuple]:
        return sorted((p, pd.Timestamp(d)) for p, d in zip(frame["patient_id"], frame["first_date"], strict=True))

    assert rows(whole["first_records"]) == rows(expected)
    assert rows(ranged) == rows(expected[expected["patient_id"].isin(["B", "C", "D"])])
    assert rows(listed) == [("A", pd.Timestamp("2021-07-09"))]


@pytest.mark.parametrize("table", [Attribution, Patient, Encounter, Measurement, Condition, Medication, Procedure])
def test_read_columns_gives_the_frame_pandas_read_sql_gives(store_engine, table):
    _patients(store_engine, ["A", "B", "C"])
    with Session(store_engine) as s:
        s.add(Practice(practice_id="P1", name="Practice 1"))
        s.add(Team(team_id="T1", practice_id="P1", name="Team 1"))
        s.flush()
        s.add_all([
            Attribution(patient_id="A", month=date(2025, 6, 1), practice_id="P1", team_id="T1"),
            Attribution(patient_id="B", month=date(2025, 7, 1), practice_id="P1", team_id="T1", pcp_id=None),
            Encounter(encounter_id="e1", patient_id="A", kind="admission", start_date=date(2025, 3, 4), end_date=None,
                      is_internal=False, is_urgent=True, resolved_without_visit=None, paid_usd=1234.5),
            Encounter(encounter_id="e2", patient_id="B", kind="office_visit", start_date=date(2025, 3, 5), is_internal=True),
            Measurement(measurement_id="m1", patient_id="A", measured_date=date(2025, 1, 2), code="39156-5", value=31.25),
            Measurement(measurement_id="m2", patient_id="B", measured_date=date(2025, 1, 3), code="72166-2", value=None,
                        value_text="never smoker"),
            Condition(condition_id="c1", patient_id="A", code="I10", onset_date=date(2020, 1, 1), resolved_date=None),
            Condition(condition_id="c2", patient_id="C", code="J45.909", onset_date=date(2021, 1, 1), resolved_date=date(2022, 2, 2)),
            Medication(medication_id="d1", patient_id="A", code="197361", start_date=date(2024, 1, 1), end_date=None),
            Procedure(procedure_id="x1", patient_id="B", performed_date=date(2025, 2, 2), code="45378", code_system="CPT"),
        ])  # fmt: skip
        s.commit()
    columns = list(table.__table__.columns)
    dates = [c.name for c in columns if c.type.python_type is date]

    def reference(where) -> pd.DataFrame:  # the read as it was: pandas' read_sql through SQLAlchemy
        stmt = select(*[cast(c, String).label(c.name) if c.name in dates else c for c in columns]).where(*where)
        with store_engine.connect() as conn:
            frame = pd.read_sql(stmt.where(table.__table__.c.patient_id.between("A", "B")), conn)
        for name in dates:
            frame[name] = pd.to_datetime(frame[name].str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
        return frame

    read = read_columns(store_engine, columns, dates, ("A", "B"))
    assert len(read) >= 1
    pd.testing.assert_frame_equal(read.sort_values(columns[0].name, ignore_index=True),
                                  reference([]).sort_values(columns[0].name, ignore_index=True))  # fmt: skip
    if not any(isinstance(c.type, Boolean) for c in columns):
        pd.testing.assert_frame_equal(read_columns(store_engine, columns, dates, ("A", "B"), [false()]), reference([false()]))

"""Cells and scorecards on SQLite and PostgreSQL: same rows, same scorecard."""

from datetime import date

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from core.derive.cells import build_cells
from core.metrics.scorecard import Selection, build_scorecard
from core.store import models

MONTHS = [date(2024, m, 1) for m in range(1, 13)]


def _fill(engine):
    """30 patients over 12 months at two teams; ED visits, admissions, HbA1c tests and a death."""
    with Session(engine) as s:
        s.add(models.Practice(practice_id="P1", name="One"))
        s.flush()
        s.add_all([models.Team(team_id="T1", practice_id="P1", name="a"), models.Team(team_id="T2", practice_id="P1", name="b")])
        s.flush()
        for i in range(30):
            pid = f"X{i:02d}"
            s.add(models.Patient(patient_id=pid, birth_date=date(1950 + i, 1 + i % 12, 1), sex=("female", "male")[i % 2],
                                 race="White", language="English", dual_status=i % 3 == 0, deprivation_decile=1 + i % 10,
                                 death_date=date(2024, 6, 15) if i == 0 else None))
        s.flush()
        for i in range(30):
            pid = f"X{i:02d}"
            s.add(models.Condition(condition_id=f"C{i}", patient_id=pid, code="E11.9", onset_date=date(2020, 1, 1)))
            for m in MONTHS if i else MONTHS[:6]:
                s.add(models.Attribution(patient_id=pid, month=m, practice_id="P1", team_id=("T1", "T2")[i % 2]))
                s.add(models.SubgroupAssignment(patient_id=pid, month=m, subgroup="chronic", risk_score=1.0 + i / 30))
            s.add(models.Measurement(measurement_id=f"M{i}", patient_id=pid, measured_date=date(2024, 3, 3), code="4548-4",
                                     value=6.5 + i / 10))
            for j in range(i % 4):
                s.add(models.Encounter(encounter_id=f"E{i}-{j}", patient_id=pid, kind=("ed_visit", "admission")[j % 2],
                                       start_date=date(2024, 2 + j, 10), end_date=date(2024, 2 + j, 12), is_internal=False))
        s.commit()


def test_cells_and_scorecard_on_each_backend(store_engine):
    _fill(store_engine)
    summary = build_cells(store_engine)
    C = models.Cell
    with store_engine.connect() as conn:
        got = dict(conn.execute(select(C.metric, func.sum(C.numerator)).where(C.stratum == "all").group_by(C.metric)).all())
    assert got["member_months"] == 6 + 29 * 12
    assert got["mortality"] == 1
    assert got["ed_visits"] == sum((i % 4 >= 1) + (i % 4 >= 3) for i in range(30))
    assert got["admissions"] == sum(i % 4 >= 2 for i in range(30))
    assert summary["rows"] > 0
    card = build_scorecard(store_engine, Selection(period=date(2024, 12, 1), window="12m")).set_index("measure_id")
    assert card.loc["hba1c_control", "denominator"] == 29  # status in December: 29 patients attributed, all diabetic
    # HbA1c values 6.5 .. 9.4: below 8 for i = 0..14; patient 0 left in June, so 14 of 29.
    assert card.loc["hba1c_control", "numerator"] == 14
    assert card.loc["hba1c_control", "value"] == pytest.approx(14 / 29 * 100)

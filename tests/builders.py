"""Tiny hand-built networks for store and app tests (SQLModel rows, inserted in FK order)."""

from datetime import date

from sqlmodel import Session

from core.store import models


def add_rows(engine, rows) -> None:
    """Insert rows in the order given (parents before children)."""
    with Session(engine) as session:
        for row in rows:
            session.add(row)
            session.flush()
        session.commit()


def two_team_network(engine, months=(date(2026, 9, 1), date(2026, 10, 1))) -> dict:
    """Practice A with teams A1 (complex) and A2 (chronic); three patients each.

    Returns {"A1": [patient ids], "A2": [patient ids]}.
    """
    rows = [
        models.Practice(practice_id="A", name="Practice A"),
        models.Team(team_id="A1", practice_id="A", name="Complex team", subgroup="complex"),
        models.Team(team_id="A2", practice_id="A", name="Chronic team", subgroup="chronic"),
        models.Staff(staff_id="S1", team_id="A1", name="Dr One", role="physician", annual_cost_usd=300_000, paid_hours_per_year=2080),
        models.Staff(staff_id="S2", team_id="A2", name="Dr Two", role="physician", annual_cost_usd=300_000, paid_hours_per_year=2080),
    ]
    patients = {"A1": ["P1", "P2", "P3"], "A2": ["P4", "P5", "P6"]}
    for ids in patients.values():
        for i, pid in enumerate(ids):
            rows.append(models.Patient(patient_id=pid, given_name=f"Given{pid}", family_name=f"Family{pid}",
                                       birth_date=date(1940 + i, 1, 1), sex="female"))  # fmt: skip
    for team, ids in patients.items():
        staff = "S1" if team == "A1" else "S2"
        for pid in ids:
            for month in months:
                rows.append(models.Attribution(patient_id=pid, month=month, practice_id="A", team_id=team, pcp_id=staff))
                rows.append(models.SubgroupAssignment(patient_id=pid, month=month, team_id=team, subgroup="complex" if team == "A1" else "chronic",
                                                      rule_id="test", reason="hand-built"))  # fmt: skip
            rows.append(models.Encounter(encounter_id=f"E{pid}", patient_id=pid, team_id=team, kind="office_visit",
                                         start_date=months[0], is_internal=True))  # fmt: skip
            rows.append(models.Measurement(measurement_id=f"M{pid}", patient_id=pid, measured_date=months[0], code="4548-4", value=7.5))
    add_rows(engine, rows)
    return patients

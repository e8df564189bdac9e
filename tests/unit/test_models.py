"""Each table's declared grain is its primary key, so the store itself rejects duplicates."""

import re
from datetime import date, datetime

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel

from core.store import models


def _tables():
    return [m for m in vars(models).values() if isinstance(m, type) and issubclass(m, SQLModel) and hasattr(m, "__table__")]


@pytest.mark.parametrize("model", _tables(), ids=lambda m: m.__name__)
def test_declared_grain_is_the_primary_key(model):
    match = re.search(r"Grain: ([a-z_, ]+)\.", " ".join(model.__doc__.split()))
    assert match, f"{model.__name__} docstring must declare its grain"
    grain = [c.strip() for c in match.group(1).split(",")]
    assert grain == [c.name for c in model.__table__.primary_key.columns]


def test_duplicate_key_is_rejected(engine):
    with Session(engine) as session:
        session.add(models.Practice(practice_id="A", name="A"))
        session.commit()
    with Session(engine) as session, pytest.raises(IntegrityError):
        session.add(models.Practice(practice_id="A", name="again"))
        session.commit()


def test_naive_datetimes_are_rejected(engine):
    """SQLModel >= 0.0.45 stores timestamps as aware UTC; naive ones must not slip in."""
    with Session(engine) as session, pytest.raises(Exception, match="timezone"):
        session.add(models.ImportRun(source="x", format="csv", started_at=datetime(2026, 1, 1)))
        session.commit()


def test_foreign_keys_are_enforced_on_sqlite(engine):
    with Session(engine) as session, pytest.raises(IntegrityError):
        session.add(models.Team(team_id="T", practice_id="missing", name="T"))
        session.commit()


def test_months_are_first_of_month_dates(engine):
    with Session(engine) as session:
        for row in (models.Practice(practice_id="A", name="A"), models.Team(team_id="T", practice_id="A", name="T"),
                    models.Patient(patient_id="P", birth_date=date(1950, 1, 1), sex="female")):
            session.add(row)
            session.flush()
        session.add(models.Attribution(patient_id="P", month=date(2026, 1, 1), practice_id="A", team_id="T"))
        session.commit()
        assert session.get(models.Attribution, ("P", date(2026, 1, 1))).team_id == "T"

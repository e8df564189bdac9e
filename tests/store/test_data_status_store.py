"""Data status counts on SQLite and PostgreSQL: recorded with each data version, counted live
again as soon as an import lands without a new version, and live for the tables the app writes."""

from datetime import date

from sqlmodel import Session

from core.store.models import Attribution, AuditEvent, ImportRun
from core.store.queries import COUNTED_TABLES, _count_rows, bump_data_version, data_status, table_counts
from tests.worklist_network import build_worklist_network


def live_counts(engine) -> dict[str, int]:
    with Session(engine) as session:
        return _count_rows(session, COUNTED_TABLES)


def test_counts_are_recorded_with_the_data_version(store_engine):
    build_worklist_network(store_engine)
    counts, recorded, months = table_counts(store_engine)
    assert not recorded and counts == live_counts(store_engine)  # no version yet: counted now
    bump_data_version(store_engine)
    assert table_counts(store_engine)[1:] == (True, months) and months == (date(2026, 1, 1), date(2026, 10, 1))
    counts, recorded, _ = table_counts(store_engine)
    assert recorded and counts == live_counts(store_engine) and counts["attribution"] > 10
    with Session(store_engine) as s:  # the app writes audit events between versions: counted now
        s.add(AuditEvent(user_key="u", role="admin", action="view_patient"))
        s.commit()
    counts, recorded, _ = table_counts(store_engine)
    assert recorded and counts["audit_event"] == 1 and counts == live_counts(store_engine)


def test_an_import_without_a_new_version_is_counted_now(store_engine):
    build_worklist_network(store_engine)
    bump_data_version(store_engine)
    with Session(store_engine) as s:  # e.g. `python -m core import --no-derive`
        s.add(ImportRun(source="x", format="csv", status="committed"))
        s.add(Attribution(patient_id="P_CALM", month=date(2020, 1, 1), practice_id="A", team_id="A1"))
        s.commit()
    status = data_status(store_engine)
    assert not status["counts_recorded"] and status["counts"] == live_counts(store_engine)
    assert status["first_month"] == date(2020, 1, 1)  # read now too

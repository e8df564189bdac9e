"""Users and the audit log on SQLite and PostgreSQL."""

import pandas as pd
import pytest

from core.access.audit import record_event, search_events
from core.access.policy import resolve_scope
from core.access.users import deactivate_user, find_user, list_users, save_user

ORG = pd.DataFrame({"practice_id": ["A"], "team_id": ["A1"]})


def test_user_round_trip_by_email_and_subject(store_engine):
    save_user(store_engine, "Doc@Example.org", "clinician", team_ids="A1", patient_level=True)
    save_user(store_engine, "sub:abc-123", "executive")
    assert find_user(store_engine, "doc@example.org", None).role == "clinician"
    assert find_user(store_engine, "DOC@example.org", "other").team_ids == "A1"
    assert find_user(store_engine, None, "abc-123").role == "executive"
    assert find_user(store_engine, "stranger@example.org", "zzz") is None
    assert deactivate_user(store_engine, "doc@example.org")
    assert find_user(store_engine, "doc@example.org", None) is None
    assert len(list_users(store_engine)) == 2


def test_bad_role_is_rejected(store_engine):
    with pytest.raises(ValueError):
        save_user(store_engine, "x@example.org", "root")


def test_audit_events_are_appended_and_searchable(store_engine):
    scope = resolve_scope(user_key="doc@example.org", name="Doc", role="clinician", practice_ids="", team_ids="A1",
                          patient_level=None, organisation=ORG)  # fmt: skip
    record_event(store_engine, scope, "view_worklist", "A1", "2026-10 all")
    record_event(store_engine, scope, "view_patient", "P1")
    record_event(store_engine, scope, "export", "A1", "worklist csv")
    events = search_events(store_engine)
    assert events["action"].tolist() == ["export", "view_patient", "view_worklist"]
    assert set(events["user_key"]) == {"doc@example.org"}
    assert events["scope"].iloc[0] == "role=clinician; teams=A1; patient_level=True"
    assert search_events(store_engine, action="view_patient")["target"].tolist() == ["P1"]
    with pytest.raises(ValueError):
        record_event(store_engine, scope, "delete_everything")

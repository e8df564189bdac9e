"""Users (matched on subject or verified email) and the hash-chained audit log on SQLite and PostgreSQL."""

import subprocess
import sys

import pandas as pd
import pytest
from sqlalchemy import delete, text, update

from core.access.audit import CHECKPOINT_ENV, read_anchors, record_event, search_events, verify_chain
from core.access.policy import resolve_scope
from core.access.users import deactivate_user, find_user, list_users, save_user
from core.store.db import create_schema, make_engine, upgrade_schema
from core.store.models import AuditEvent

ORG = pd.DataFrame({"practice_id": ["A"], "team_id": ["A1"]})


def doc_scope():
    return resolve_scope(user_key="doc@example.org", name="Doc", role="clinician", practice_ids="", team_ids="A1",
                         patient_level=None, organisation=ORG)  # fmt: skip


def test_user_matched_on_subject_or_verified_email(store_engine):
    save_user(store_engine, "Doc@Example.org", "clinician", team_ids="A1", patient_level=True)
    save_user(store_engine, "sub:abc-123", "executive")
    assert find_user(store_engine, subject="abc-123", email="anyone@example.org").role == "executive"
    assert find_user(store_engine, subject="doc-1", email="DOC@example.org", email_verified=True).team_ids == "A1"
    assert find_user(store_engine, subject="stranger", email="stranger@example.org", email_verified=True) is None
    assert deactivate_user(store_engine, "doc@example.org")
    assert find_user(store_engine, subject="doc-1", email="doc@example.org", email_verified=True) is None
    assert len(list_users(store_engine)) == 2


@pytest.mark.parametrize("verified", [None, False, "false", "yes", 1])
def test_unverified_email_opens_nothing(store_engine, verified):
    save_user(store_engine, "doc@example.org", "clinician", team_ids="A1", patient_level=True)
    assert find_user(store_engine, subject="attacker", email="doc@example.org", email_verified=verified) is None


def test_first_verified_sign_in_binds_the_subject_and_another_subject_is_refused(store_engine):
    save_user(store_engine, "doc@example.org", "clinician", team_ids="A1", patient_level=True)
    assert find_user(store_engine, subject="doc-1", email="doc@example.org", email_verified="true").user_key == "doc@example.org"
    # the row now belongs to subject doc-1: the same verified email from another account is refused
    assert find_user(store_engine, subject="attacker", email="doc@example.org", email_verified=True) is None
    assert find_user(store_engine, subject="doc-1", email="changed@example.org").user_key == "doc@example.org"


def test_a_subject_belongs_to_one_user(store_engine):
    save_user(store_engine, "sub:abc", "executive")
    save_user(store_engine, "doc@example.org", "clinician")
    find_user(store_engine, subject="xyz", email="doc@example.org", email_verified=True)
    with pytest.raises(ValueError, match="already belongs"):
        save_user(store_engine, "sub:xyz", "admin")


def test_bad_role_is_rejected(store_engine):
    with pytest.raises(ValueError):
        save_user(store_engine, "x@example.org", "root")


def test_user_changes_are_audited(store_engine):
    admin = resolve_scope(user_key="admin@example.org", name="A", role="admin", practice_ids="", team_ids="",
                          patient_level=None, organisation=ORG)  # fmt: skip
    save_user(store_engine, "x@example.org", "executive", by=admin)
    deactivate_user(store_engine, "x@example.org", by=admin)
    events = search_events(store_engine, action="user_change")
    assert events["target"].tolist() == ["x@example.org"] * 2 and set(events["user_key"]) == {"admin@example.org"}
    assert events["detail"].iloc[0] == "deactivated" and "role=executive" in events["detail"].iloc[1]


def test_audit_events_are_appended_and_searchable(store_engine):
    scope = doc_scope()
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


@pytest.mark.parametrize("tamper", ["change", "delete", "insert"])
def test_audit_chain_names_the_first_tampered_row(store_engine, tamper):
    for i in range(6):
        record_event(store_engine, doc_scope(), "view_patient", f"P{i}")
    assert verify_chain(store_engine).ok and verify_chain(store_engine).rows == 6
    with store_engine.begin() as conn:
        if tamper == "change":
            conn.execute(update(AuditEvent).where(AuditEvent.audit_id == 3).values(target="P-other"))
        elif tamper == "delete":
            conn.execute(delete(AuditEvent).where(AuditEvent.audit_id == 3))
        else:  # a forged row copied with the hash of its neighbour
            row = conn.execute(AuditEvent.__table__.select().where(AuditEvent.audit_id == 3)).mappings().one()
            conn.execute(AuditEvent.__table__.insert().values({**row, "audit_id": 100, "target": "P-forged"}))
    check = verify_chain(store_engine)
    assert not check.ok
    assert check.first_bad == {"change": 3, "delete": 4, "insert": 100}[tamper]
    assert check.rows == {"change": 2, "delete": 2, "insert": 6}[tamper]


def test_cli_verify_exits_non_zero_and_names_the_row(tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    engine = make_engine(url)
    create_schema(engine)
    for i in range(3):
        record_event(engine, doc_scope(), "export", f"T{i}")

    def verify():
        return subprocess.run([sys.executable, "-m", "core", "audit", "--verify", "--database-url", url],
                              capture_output=True, text=True)  # fmt: skip

    ok = verify()
    assert ok.returncode == 0 and "intact: 3 rows" in ok.stdout
    with engine.begin() as conn:
        conn.execute(update(AuditEvent).where(AuditEvent.audit_id == 2).values(user_key="someone-else"))
    bad = verify()
    assert bad.returncode == 1 and "audit_id 2" in bad.stderr
    engine.dispose()


def test_store_made_before_subjects_and_the_chain_is_upgraded(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    create_schema(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO app_user (user_key, name, role, practice_ids, team_ids, patient_level, active, created_at)"
                          " VALUES ('sub:abc', '', 'executive', '', '', 0, 1, '2026-01-01 00:00:00')"))  # fmt: skip
        conn.execute(text("INSERT INTO audit_event (at, user_key, role, action, target, scope, detail)"
                          " VALUES ('2026-01-01 00:00:00.000000', 'old', 'admin', 'export', 'x', '', '')"))  # fmt: skip
        conn.execute(text("DROP INDEX ix_app_user_subject"))
        conn.execute(text("ALTER TABLE app_user DROP COLUMN subject"))
        conn.execute(text("ALTER TABLE audit_event DROP COLUMN chain_hash"))
    assert upgrade_schema(engine) == ["added app_user.subject", "added audit_event.chain_hash", "built index ix_app_user_subject"]
    assert upgrade_schema(engine) == []
    assert find_user(engine, subject="abc", email=None).role == "executive"
    assert verify_chain(engine).first_bad == 1  # the old row has no hash yet
    record_event(engine, doc_scope(), "export", "y")  # the next event chains the old rows too
    assert verify_chain(engine).ok and verify_chain(engine).rows == 2
    engine.dispose()


def test_deleting_the_newest_rows_is_reported_against_the_checkpoint(store_engine, tmp_path, monkeypatch):
    anchors = tmp_path / "audit.checkpoint"
    monkeypatch.setenv(CHECKPOINT_ENV, str(anchors))
    for i in range(6):
        record_event(store_engine, doc_scope(), "view_patient", f"P{i}")
    lines = anchors.read_text().splitlines()
    assert len(lines) == 6  # one anchor per append
    assert verify_chain(store_engine, anchors=read_anchors([str(anchors)])).ok
    last_ids = sorted(read_anchors([str(anchors)]))[-2:]
    with store_engine.begin() as conn:
        conn.execute(delete(AuditEvent).where(AuditEvent.audit_id.in_(last_ids)))
    assert verify_chain(store_engine).ok  # the shorter chain alone is intact: that is the gap the anchors close
    check = verify_chain(store_engine, anchors=read_anchors([str(anchors)]))
    assert not check.ok and check.first_bad == last_ids[0] and "deleted" in check.reason
    assert check.rows == 4


def test_cli_checkpoint_and_verify_expect_catch_a_truncated_log(tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    engine = make_engine(url)
    create_schema(engine)
    for i in range(4):
        record_event(engine, doc_scope(), "export", f"T{i}")
    kept = tmp_path / "kept.checkpoint"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "core", "audit", *args, "--database-url", url], capture_output=True, text=True)

    assert cli("--checkpoint", str(kept)).returncode == 0
    head = kept.read_text().strip()
    assert head.startswith("4:") and cli("--verify", "--expect", head).returncode == 0
    with engine.begin() as conn:
        conn.execute(delete(AuditEvent).where(AuditEvent.audit_id == 4))
    assert cli("--verify").returncode == 0  # without the anchor the truncation is invisible
    bad = cli("--verify", "--expect", str(kept))
    assert bad.returncode == 1 and "audit_id 4" in bad.stderr and "deleted" in bad.stderr
    engine.dispose()

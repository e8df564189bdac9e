"""The audit log: every patient record viewed, worklist viewed and export (the HIPAA Security
Rule's audit controls, 45 CFR 164.312(b): record and examine activity in systems holding PHI).

``record_event`` only appends; nothing in the product updates or deletes audit rows.
Targets are ids (patient id, team id, file name), never names or clinical values.
"""

from datetime import datetime

import pandas as pd
from sqlalchemy import Engine, select
from sqlmodel import Session

from core.access.policy import Scope
from core.store.models import AuditEvent
from core.store.queries import read_frame

ACTIONS = ("view_patient", "view_worklist", "export", "override", "import")


def record_event(engine: Engine, scope: Scope, action: str, target: str = "", detail: str = "") -> None:
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    with Session(engine) as session:
        session.add(AuditEvent(user_key=scope.user_key, role=scope.role, action=action, target=target,
                               scope=scope.describe(), detail=detail))  # fmt: skip
        session.commit()


def search_events(
    engine: Engine, *, user_key: str | None = None, action: str | None = None, target: str | None = None,
    since: datetime | None = None, until: datetime | None = None, limit: int = 10_000,
) -> pd.DataFrame:  # fmt: skip
    """Audit rows, newest first, filtered by whichever arguments are given."""
    stmt = select(*AuditEvent.__table__.columns).order_by(AuditEvent.audit_id.desc()).limit(limit)
    if user_key:
        stmt = stmt.where(AuditEvent.user_key == user_key)
    if action:
        stmt = stmt.where(AuditEvent.action == action)
    if target:
        stmt = stmt.where(AuditEvent.target == target)
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    if until:
        stmt = stmt.where(AuditEvent.at < until)
    return read_frame(engine, stmt)

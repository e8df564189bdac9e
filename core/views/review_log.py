"""The review log of a team and subgroup: notes, decisions and action items per month, stored in
``review_entry``. Open action items carry forward to later months until closed. Every read and
write is checked against the caller's scope."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
from sqlalchemy import Engine, select
from sqlmodel import Session

from core.store.models import ReviewEntry
from core.store.months import as_date
from core.views.review import check_scope

ENTRY_KINDS = ("note", "decision", "action")
LOG_COLUMNS = ["entry_id", "month", "kind", "text", "owner", "due_date", "status", "created_by", "created_at",
               "closed_by", "closed_at", "carried_forward"]  # fmt: skip


def add_entry(engine: Engine, team_ids: tuple[str, ...] | None, *, team_id: str, subgroup: str, month: date, kind: str,
              text: str, created_by: str, owner: str = "", due_date: date | None = None) -> int:
    """Save a note, decision or action item; returns its id. Actions need an owner and start ``open``."""
    check_scope(team_id, team_ids)
    text, owner = (text or "").strip(), (owner or "").strip()
    if kind not in ENTRY_KINDS:
        raise ValueError(f"kind must be one of {ENTRY_KINDS}")
    if not text:
        raise ValueError("the entry has no text")
    if kind == "action" and not owner:
        raise ValueError("an action item needs an owner")
    entry = ReviewEntry(team_id=team_id, subgroup=subgroup, month=month.replace(day=1), kind=kind, text=text[:2000],
                        owner=owner[:200], due_date=due_date if kind == "action" else None,
                        status="open" if kind == "action" else "", created_by=created_by)  # fmt: skip
    with Session(engine) as session:
        session.add(entry)
        session.commit()
        return int(entry.entry_id)


def close_entry(engine: Engine, team_ids: tuple[str, ...] | None, entry_id: int, closed_by: str) -> None:
    """Mark an action item done (only for teams in scope)."""
    with Session(engine) as session:
        entry = session.get(ReviewEntry, entry_id)
        if entry is None:
            raise KeyError(f"no review entry {entry_id}")
        check_scope(entry.team_id, team_ids)
        if entry.kind != "action":
            raise ValueError("only action items are closed")
        if entry.status != "done":
            entry.status, entry.closed_by, entry.closed_at = "done", closed_by, datetime.now(UTC)
            session.add(entry)
            session.commit()


def review_log(engine: Engine, team_ids: tuple[str, ...] | None, team_id: str, subgroup: str, month: date) -> pd.DataFrame:
    """The month's notes, decisions and action items, plus open action items of earlier months
    (``carried_forward`` True), oldest first. Grain: review entry. Columns: :data:`LOG_COLUMNS`."""
    check_scope(team_id, team_ids)
    E = ReviewEntry
    month = month.replace(day=1)
    stmt = (
        select(*[getattr(E, c) for c in LOG_COLUMNS[:-1]])
        .where(E.team_id == team_id, E.subgroup == subgroup,
               (E.month == month) | ((E.month < month) & (E.kind == "action") & (E.status == "open")))
        .order_by(E.month, E.entry_id)
    )  # fmt: skip
    if team_ids is not None:
        stmt = stmt.where(E.team_id.in_(list(team_ids)))
    with engine.connect() as conn:
        frame = pd.DataFrame([tuple(r) for r in conn.execute(stmt).all()], columns=LOG_COLUMNS[:-1])
    frame["month"] = [as_date(m) for m in frame["month"]]
    frame["carried_forward"] = [m < month for m in frame["month"]]
    return frame

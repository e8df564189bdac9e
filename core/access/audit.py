"""The audit log: who saw or changed what, and when, in a tamper-evident chain (the HIPAA Security
Rule's audit controls, 45 CFR 164.312(b): record and examine activity in systems holding PHI).

Recorded: every patient record viewed (``view_patient``), every list of patients viewed
(``view_worklist``, ``view_patients``: the review's lists), every export (``export``, the audit
log's own ``audit_download`` included), every refused patient lookup (``refused_lookup``),
user and role changes (``user_change``), subgroup overrides (``override``), saved subgroup
rules (``rule_save``) and uploads (``import``).

``record_event`` only appends; nothing in the product updates or deletes audit rows. Targets
are ids (patient id, team id, file name, user key), never names or clinical values. Each row
carries ``chain_hash``, the SHA-256 of the previous row's hash and its own fields, so
:func:`verify_chain` finds the first row that was changed, inserted or deleted in between.
Rows are chained under a lock (PostgreSQL: an advisory lock; SQLite: the write lock the insert
takes), so several dashboard servers writing at once keep one chain.

Deleting the newest rows leaves a shorter chain that is intact, so the head is also kept outside
the database: with ``AUDIT_CHECKPOINT_FILE`` set, every append adds ``audit_id:chain_hash`` to
that file, and ``python -m core audit --checkpoint`` appends the current head (for a cron job
writing where the database user cannot); ``audit --verify --expect FILE`` then names a row an
anchor vouches for that is gone.
"""

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import Connection, Engine, func, insert, select, text, update

from core.access.policy import Scope
from core.store.models import AuditEvent, utc_now
from core.store.queries import read_frame

ACTIONS = ("view_patient", "view_worklist", "view_patients", "export", "audit_download", "refused_lookup", "override",
           "user_change", "rule_save", "import", "outreach")  # fmt: skip
HASHED = ("audit_id", "at", "user_key", "role", "action", "target", "scope", "detail")
GENESIS = "0" * 64
# The operator's setting: a file outside the database to which every append adds the new head
# (audit_id and chain hash), so deleting the newest rows is seen by ``audit --verify --expect``.
CHECKPOINT_ENV = "AUDIT_CHECKPOINT_FILE"
_PG_LOCK = 0x5C0AEC  # any fixed number: the advisory lock that serialises audit writers


def record_event(engine: Engine, scope: Scope, action: str, target: str = "", detail: str = "") -> None:
    """Append one event for ``scope``'s user and chain it to the one before."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
        audit_id = conn.execute(insert(AuditEvent).values(
            at=utc_now(), user_key=scope.user_key, role=scope.role, action=action, target=target[:200],
            scope=scope.describe(), detail=detail[:1000])).inserted_primary_key[0]  # fmt: skip
        head = _chain(conn, upto=audit_id)
    path = os.environ.get(CHECKPOINT_ENV)
    if path and head:
        append_checkpoint(Path(path), audit_id, head)


def append_checkpoint(path: Path, audit_id: int, chain_hash: str) -> None:
    """Append one anchor line (``audit_id:chain_hash``) to the checkpoint file (opened for
    appending only, so the file works with the append-only attribute, ``chattr +a``)."""
    line = f"{audit_id}:{chain_hash}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_anchors(sources: Iterable[str]) -> dict[int, str]:
    """Anchors {audit_id: chain hash} from checkpoint files and ``AUDIT_ID:HASH`` literals.

    Raises ValueError on a line that is not an anchor (a checkpoint file is written only by
    :func:`append_checkpoint` and ``python -m core audit --checkpoint``)."""
    anchors: dict[int, str] = {}
    for source in sources:
        path = Path(source)
        lines = path.read_text().splitlines() if path.is_file() else [source]
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            audit_id, sep, chain_hash = line.strip().partition(":")
            if not sep or not audit_id.isdigit() or len(chain_hash) != 64:
                raise ValueError(f"{source}, line {number}: not an anchor (AUDIT_ID:SHA256), {line[:80]!r}")
            anchors[int(audit_id)] = chain_hash.lower()
    return anchors


def _chain(conn: Connection, upto: int) -> str:
    """Hash the rows up to ``upto`` that have no hash yet (the new one; older rows of a store made
    before the chain existed, once), oldest first. Returns the hash of ``upto``."""
    cols = AuditEvent.__table__.c
    before = select(cols.audit_id, cols.chain_hash).order_by(cols.audit_id.desc()).limit(1)
    last = conn.execute(before.where(cols.audit_id < upto)).first()
    first = upto
    if last is not None and last.chain_hash is None:  # a store made before the chain: chain its rows once
        first = conn.execute(select(func.min(cols.audit_id)).where(cols.chain_hash.is_(None))).scalar()
    prev = conn.execute(select(cols.chain_hash).where(cols.audit_id < first).order_by(cols.audit_id.desc()).limit(1)).scalar()
    rows = conn.execute(select(*(cols[c] for c in HASHED)).where(cols.audit_id >= first, cols.audit_id <= upto)
                        .order_by(cols.audit_id)).mappings().all()  # fmt: skip
    prev = prev or GENESIS
    for row in rows:
        prev = event_hash(prev, row)
        conn.execute(update(AuditEvent).where(cols.audit_id == row["audit_id"]).values(chain_hash=prev))
    return prev


def event_hash(previous: str, row) -> str:
    """SHA-256 (hex) of the previous row's hash and the fields of ``row`` (a mapping of :data:`HASHED`)."""
    parts = [previous, *(_canonical(row[c]) for c in HASHED)]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _canonical(value) -> str:
    if isinstance(value, datetime):
        value = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return "" if value is None else str(value)


@dataclass(frozen=True)
class ChainCheck:
    """The result of :func:`verify_chain`: rows checked, the first bad row (None: intact) and why,
    and the last good hash."""

    rows: int
    first_bad: int | None = None
    reason: str = ""
    last_hash: str = GENESIS
    last_id: int = 0
    anchors: int = 0

    @property
    def ok(self) -> bool:
        return self.first_bad is None


def verify_chain(engine: Engine, batch: int = 50_000, anchors: dict[int, str] | None = None) -> ChainCheck:
    """Recompute the chain from the first row; the first row whose hash does not match is named.

    A changed row fails itself; a deleted or inserted row fails the row after it. Deleting the
    newest rows leaves an intact (shorter) chain: ``anchors`` ({audit_id: chain hash}, kept
    outside the database: :func:`read_anchors`) catch that, since a row an anchor names must
    still be there with that hash; the first anchor missing is named (``reason``: removed).
    """
    anchors = anchors or {}
    cols = AuditEvent.__table__.c
    prev, checked, after = GENESIS, 0, 0
    with engine.connect() as conn:
        while True:
            rows = conn.execute(select(*(cols[c] for c in HASHED), cols.chain_hash).where(cols.audit_id > after)
                                .order_by(cols.audit_id).limit(batch)).mappings().all()  # fmt: skip
            for row in rows:
                expected = event_hash(prev, row)
                if row["chain_hash"] != expected:
                    reason = "no hash" if row["chain_hash"] is None else "hash does not match the row and the one before"
                    return ChainCheck(checked, row["audit_id"], reason, prev, after, len(anchors))
                if anchors.get(row["audit_id"], expected) != expected:
                    return ChainCheck(checked, row["audit_id"], "hash differs from the checkpoint", prev, after, len(anchors))
                prev, checked, after = expected, checked + 1, row["audit_id"]
            if len(rows) < batch:
                break
    missing = sorted(a for a in anchors if a > after)
    if missing:
        return ChainCheck(checked, missing[0], f"in the checkpoint but gone: the newest rows after audit_id {after} were "
                          f"deleted (the checkpoint reaches audit_id {missing[-1]})", prev, after, len(anchors))  # fmt: skip
    return ChainCheck(checked, last_hash=prev, last_id=after, anchors=len(anchors))


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

"""Subgroup overrides: a team leader or an admin pins a patient to a subgroup from a month on.

An override is kept until it is lifted (and kept after that, with who and when); every
recomputation applies the active ones over the rules (:func:`apply_overrides`). Setting and
lifting an override are the audited use cases both the patient page and the subgroup-rules page
call: each writes an ``override`` event to the audit log with the user and the patient.
"""

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
from sqlalchemy import Engine, insert, select, update

from core.access.audit import record_event
from core.access.policy import Scope
from core.derive.subgroups.evaluate import REASON_MAX
from core.derive.subgroups.rules import RuleSet, active_rules_path, load_rules
from core.store.models import Attribution, Patient, SubgroupAssignment, SubgroupOverride
from core.store.months import as_month, month_floor

# The reason of a pinned assignment keeps what the rules said: "... (rules: <subgroup>, <reason>)".
RULES_PART = r"^override #\d+ by .*?\(rules: ([^,]*), (.*)\)$"


def apply_overrides(assignments: pd.DataFrame, overrides: pd.DataFrame) -> pd.DataFrame:
    """Replace assignments pinned by active overrides. Returns a new frame with ``overridden``
    (same rows and grain as ``assignments``: patient_id, month).

    ``overrides``: override_id, patient_id, subgroup, start_month, note, created_by, created_at
    (active ones only, i.e. not lifted). An override applies from its start month on; when a
    patient has several, the one with the latest start month (then the latest id) wins.
    """
    out = assignments.reset_index(drop=True).copy()
    out["overridden"] = False
    if not len(overrides) or not len(out):
        return out
    ov = overrides.assign(start_month=month_floor(overrides["start_month"]))
    pos = out[["patient_id", "month"]].assign(_pos=np.arange(len(out)))
    hits = pos.merge(ov, on="patient_id")
    hits = hits[hits["month"] >= hits["start_month"]]
    hits = hits.sort_values(["_pos", "start_month", "override_id"]).drop_duplicates("_pos", keep="last")
    if not len(hits):
        return out
    rows = hits["_pos"].to_numpy()
    before = out.loc[rows, ["subgroup", "reason"]].to_numpy()
    out.loc[rows, "reason"] = [
        (f"override #{oid} by {who} on {pd.Timestamp(when).date()}: {note} (rules: {sg}, {why})")[:REASON_MAX]
        for oid, who, when, note, (sg, why) in zip(
            hits["override_id"], hits["created_by"], hits["created_at"], hits["note"], before, strict=True
        )
    ]
    out.loc[rows, "subgroup"] = hits["subgroup"].to_numpy()
    out.loc[rows, "rule_id"] = "override"
    out.loc[rows, "overridden"] = True
    return out


def active_overrides(conn) -> pd.DataFrame:
    """Overrides not lifted. Columns: override_id, patient_id, subgroup, start_month, note,
    created_by, created_at. Grain: override_id."""
    o = SubgroupOverride
    stmt = select(o.override_id, o.patient_id, o.subgroup, o.start_month, o.note, o.created_by, o.created_at).where(
        o.lifted_at.is_(None)
    )
    return pd.read_sql(stmt, conn)


def set_override(
    engine: Engine, scope: Scope, patient_id: str, subgroup: str, start_month: date, note: str, rules: RuleSet | None = None
) -> int:
    """Pin a patient to ``subgroup`` from ``start_month`` on, with a note, as the user of ``scope``.
    Returns the override id.

    The stored assignments from that month on are updated at once (same transaction);
    recomputation keeps the override until it is lifted. The audit log gets an ``override``
    event (user, role and scope of ``scope``; target the patient).
    """
    rules = rules or load_rules(active_rules_path())
    if not note or not note.strip():
        raise ValueError("an override needs a note saying why")
    if not scope.user_key or not scope.user_key.strip():
        raise ValueError("an override needs the user who sets it")
    if subgroup not in rules.subgroup_ids:
        raise ValueError(f"unknown subgroup {subgroup!r}; known: {list(rules.subgroup_ids)}")
    start = as_month(start_month)
    with engine.begin() as conn:
        if conn.execute(select(Patient.patient_id).where(Patient.patient_id == patient_id)).first() is None:
            raise ValueError(f"unknown patient {patient_id!r}")
        override = dict(patient_id=patient_id, subgroup=subgroup, start_month=start, note=note.strip(),
                        created_by=scope.user_key, created_at=datetime.now(UTC))  # fmt: skip
        override_id = int(conn.execute(insert(SubgroupOverride).values(**override)).inserted_primary_key[0])
        _pin_stored_assignments(conn, {"override_id": override_id, **override})
    record_event(engine, scope, "override", patient_id, f"set #{override_id}: {subgroup} from {start:%Y-%m}")
    return override_id


def _pin_stored_assignments(conn, override: dict) -> None:
    """Apply a new override (the columns of :func:`active_overrides`) to the patient's stored
    assignments from its start month on. Months pinned by an older override first go back to
    what the rules said (kept in their reason)."""
    a = SubgroupAssignment
    current = pd.read_sql(
        select(a.patient_id, a.month, a.subgroup, a.rule_id, a.reason).where(
            a.patient_id == override["patient_id"], a.month >= override["start_month"]
        ),
        conn,
    )
    if not len(current):
        return
    current["month"] = pd.to_datetime(current["month"])
    rules_part = current["reason"].str.extract(RULES_PART)
    pinned = rules_part[0].notna()
    current.loc[pinned, "subgroup"] = rules_part.loc[pinned, 0]
    current.loc[pinned, "reason"] = rules_part.loc[pinned, 1]
    new = apply_overrides(current, pd.DataFrame([override]))
    for row in new.itertuples(index=False):
        conn.execute(
            update(a)
            .where(a.patient_id == row.patient_id, a.month == row.month.date())
            .values(subgroup=row.subgroup, rule_id=row.rule_id, reason=row.reason, overridden=True)
        )


def lift_override(engine: Engine, scope: Scope, override_id: int, rules: RuleSet | None = None) -> dict:
    """Lift an override as the user of ``scope`` (kept, with who and when; audited as
    ``override``) and re-assign the months it covered. Returns the assignment summary."""
    from core.derive.subgroups.assign import assign_subgroups  # assign applies the overrides of this module

    o = SubgroupOverride
    with engine.begin() as conn:
        row = conn.execute(select(o.patient_id, o.start_month, o.lifted_at).where(o.override_id == override_id)).first()
        if row is None:
            raise ValueError(f"unknown override {override_id}")
        if row.lifted_at is not None:
            raise ValueError(f"override {override_id} was already lifted")
        conn.execute(update(o).where(o.override_id == override_id).values(lifted_by=scope.user_key, lifted_at=datetime.now(UTC)))
        months = [m for (m,) in conn.execute(select(Attribution.month).where(Attribution.month >= row.start_month).distinct())]
    record_event(engine, scope, "override", row.patient_id, f"lifted #{override_id}")
    return assign_subgroups(engine, rules, months=sorted(months)) if months else {"rows": 0}


def list_overrides(engine: Engine, include_lifted: bool = False, patient_id: str | None = None) -> pd.DataFrame:
    """Overrides with who and when. Columns: override_id, patient_id, subgroup, start_month, note,
    created_by, created_at, lifted_by, lifted_at. Grain: override_id."""
    o = SubgroupOverride
    stmt = select(
        o.override_id, o.patient_id, o.subgroup, o.start_month, o.note, o.created_by, o.created_at, o.lifted_by, o.lifted_at
    )
    if not include_lifted:
        stmt = stmt.where(o.lifted_at.is_(None))
    if patient_id is not None:
        stmt = stmt.where(o.patient_id == patient_id)
    with engine.connect() as conn:
        return pd.read_sql(stmt.order_by(o.override_id), conn)

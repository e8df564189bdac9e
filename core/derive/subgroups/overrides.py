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
from core.store.models import Patient, SubgroupOverride
from core.store.months import as_month, month_floor


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


def active_overrides(conn, patient_id: str | None = None) -> pd.DataFrame:
    """Overrides not lifted (of ``patient_id`` only, by its index, when given). Columns:
    override_id, patient_id, subgroup, start_month, note, created_by, created_at. Grain: override_id."""
    o = SubgroupOverride
    stmt = select(o.override_id, o.patient_id, o.subgroup, o.start_month, o.note, o.created_by, o.created_at).where(
        o.lifted_at.is_(None), *([] if patient_id is None else [o.patient_id == patient_id])
    )
    return pd.read_sql(stmt, conn)


def set_override(
    engine: Engine, scope: Scope, patient_id: str, subgroup: str, start_month: date, note: str, rules: RuleSet | None = None
) -> int:
    """Pin a patient to ``subgroup`` from ``start_month`` on, with a note, as the user of ``scope``.
    Returns the override id.

    The override, the patient as touched and the ``derive_pending`` mark are written in one
    transaction; then the patient alone is re-derived (subgroups, activity and the cells the
    patient was or is in: :func:`core.derive.incremental.derive_touched`, which also catches up
    with anything else pending). Recomputation keeps the override until it is lifted. The audit
    log gets an ``override`` event (user, role and scope of ``scope``; target the patient).
    """
    from core.derive.incremental import derive_touched, mark_touched

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
        mark_touched(conn, [patient_id], f"override #{override_id}")
    record_event(engine, scope, "override", patient_id, f"set #{override_id}: {subgroup} from {start:%Y-%m}")
    derive_touched(engine, rules=rules, override=(f"override #{override_id}", patient_id))
    return override_id


def lift_override(engine: Engine, scope: Scope, override_id: int, rules: RuleSet | None = None) -> dict:
    """Lift an override as the user of ``scope`` (kept, with who and when; audited as
    ``override``) and re-derive the patient (as :func:`set_override` does). Returns the derive
    summary."""
    from core.derive.incremental import derive_touched, mark_touched

    o = SubgroupOverride
    with engine.begin() as conn:
        row = conn.execute(select(o.patient_id, o.start_month, o.lifted_at).where(o.override_id == override_id)).first()
        if row is None:
            raise ValueError(f"unknown override {override_id}")
        if row.lifted_at is not None:
            raise ValueError(f"override {override_id} was already lifted")
        conn.execute(update(o).where(o.override_id == override_id).values(lifted_by=scope.user_key, lifted_at=datetime.now(UTC)))
        mark_touched(conn, [row.patient_id], f"lift #{override_id}")
    record_event(engine, scope, "override", row.patient_id, f"lifted #{override_id}")
    return derive_touched(engine, rules=rules, override=(f"lift #{override_id}", row.patient_id)) or {"rows": 0}


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

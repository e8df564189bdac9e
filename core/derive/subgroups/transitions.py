"""Subgroup moves and mix for the pages: who changed subgroup between two months, and the
patients per subgroup and rule of a month (from the stored assignments)."""

from datetime import date

import pandas as pd
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import aliased

from core.store.models import Attribution, SubgroupAssignment
from core.store.months import add_months, as_month


def transitions(engine: Engine, month: date, team_id: str | None = None) -> pd.DataFrame:
    """Patients whose subgroup changed between the previous month and ``month``.

    Grain: patient_id. Columns: patient_id, team_id, from_subgroup (None: not assigned last month), to_subgroup
    (None: not assigned this month, e.g. left or died), rule_id, reason, overridden.
    ``team_id`` filters on the team this month (last month's for patients who left).
    """
    month = as_month(month)
    prev = add_months(month, -1)
    a, at = SubgroupAssignment, Attribution
    stmt = (
        select(a.patient_id, a.month, a.subgroup, at.team_id)
        .join(at, (at.patient_id == a.patient_id) & (at.month == a.month), isouter=True)
        .where(a.month.in_([prev, month]))
    )
    if team_id is not None:  # the team's patients of either month only (indexed), not the network's
        stmt = stmt.where(a.patient_id.in_(select(at.patient_id).where(at.team_id == team_id, at.month.in_([prev, month]))))
    with engine.connect() as conn:
        rows = pd.read_sql(stmt, conn)
    rows["month"] = pd.to_datetime(rows["month"]).dt.date
    now, before = rows[rows["month"] == month], rows[rows["month"] == prev]
    merged = now.merge(before, on="patient_id", how="outer", suffixes=("", "_prev"))
    moved = merged[merged["subgroup"].fillna("") != merged["subgroup_prev"].fillna("")].copy()
    moved["team_id"] = moved["team_id"].fillna(moved["team_id_prev"])
    if team_id is not None:
        moved = moved[moved["team_id"] == team_id]
    # rule and reason of this month's assignment, read for the patients who moved only
    ids = moved["patient_id"].tolist()
    with engine.connect() as conn:
        detail = pd.concat([pd.read_sql(select(a.patient_id, a.rule_id, a.reason, a.overridden)
                                        .where(a.month == month, a.patient_id.in_(ids[i : i + 10_000])), conn)
                            for i in range(0, len(ids), 10_000)] or [pd.DataFrame(columns=["patient_id", "rule_id", "reason", "overridden"])])  # fmt: skip
    moved = moved.merge(detail, on="patient_id", how="left")
    moved["reason"] = moved["reason"].fillna("no assignment this month (left the practice or died)")
    moved["rule_id"] = moved["rule_id"].fillna("")
    moved["overridden"] = moved["overridden"].fillna(False).astype(bool)
    out = moved.rename(columns={"subgroup_prev": "from_subgroup", "subgroup": "to_subgroup"})
    out = out[["patient_id", "team_id", "from_subgroup", "to_subgroup", "rule_id", "reason", "overridden"]]
    out = out.astype(object).where(out.notna(), None)
    return out.sort_values(["to_subgroup", "patient_id"], na_position="last").reset_index(drop=True)


def subgroup_transitions(engine: Engine, month: date, team_id: str, subgroup: str) -> pd.DataFrame:
    """Patients who entered or left ``subgroup`` at ``team_id`` in ``month`` (grain and columns of
    :func:`transitions`).

    Entered: in the subgroup at the team this month, not in it last month (another subgroup,
    or not assigned). Left: in the subgroup at the team last month, not in it this month
    (``team_id`` is then the team of last month). Both are read from the (month, team_id,
    subgroup) index and the (patient_id, month) key: the subgroup's patients at the team, not
    the whole team.
    """
    month = as_month(month)
    prev = add_months(month, -1)
    a = SubgroupAssignment
    rows = []
    for here, there in ((month, prev), (prev, month)):
        side, other = aliased(a), aliased(a)
        stmt = (
            select(side.patient_id, side.team_id, side.subgroup, other.subgroup.label("other_subgroup"),
                   (other.rule_id if here == prev else side.rule_id).label("rule_id"),
                   (other.reason if here == prev else side.reason).label("reason"),
                   (other.overridden if here == prev else side.overridden).label("overridden"))
            .outerjoin(other, (other.patient_id == side.patient_id) & (other.month == there))
            .where(side.month == here, side.team_id == team_id, side.subgroup == subgroup,
                   (other.subgroup.is_(None)) | (other.subgroup != subgroup))
        )  # fmt: skip
        with engine.connect() as conn:
            part = pd.read_sql(stmt, conn)
        if here == month:  # entered
            part = part.rename(columns={"subgroup": "to_subgroup", "other_subgroup": "from_subgroup"})
        else:  # left
            part = part.rename(columns={"subgroup": "from_subgroup", "other_subgroup": "to_subgroup"})
            missing = part["to_subgroup"].isna()
            part.loc[missing, "reason"] = "no assignment this month (left the practice or died)"
            part.loc[missing, "rule_id"] = ""
        rows.append(part)
    return moves_frame(rows)



def moves_frame(rows: list[pd.DataFrame]) -> pd.DataFrame:
    """The patients who entered and left, as the review shows them: one row each, ``None`` where
    a value is missing, sorted by the subgroup entered and the patient."""
    out = pd.concat(rows, ignore_index=True)
    out["overridden"] = out["overridden"].fillna(False).astype(bool)
    out = out[["patient_id", "team_id", "from_subgroup", "to_subgroup", "rule_id", "reason", "overridden"]]
    out = out.astype(object).where(out.notna(), None)
    return out.sort_values(["to_subgroup", "patient_id"], na_position="last").reset_index(drop=True)


def assignment_mix(engine: Engine, month: date | None = None) -> pd.DataFrame:
    """Patients per subgroup and rule in ``month`` (default: the latest).

    Grain: subgroup, rule_id. Columns: month, subgroup, rule_id, patients.
    """
    a = SubgroupAssignment
    with engine.connect() as conn:
        if month is None:
            month = conn.execute(select(a.month).order_by(a.month.desc()).limit(1)).scalar()
        if month is None:
            return pd.DataFrame(columns=["month", "subgroup", "rule_id", "patients"])
        stmt = (select(a.subgroup, a.rule_id, func.count().label("patients")).where(a.month == as_month(month))
                .group_by(a.subgroup, a.rule_id).order_by(a.subgroup, a.rule_id))  # fmt: skip
        out = pd.read_sql(stmt, conn)
    out["patients"] = out["patients"].astype("int64")
    out.insert(0, "month", as_month(month))
    return out

"""Incremental derive: re-derive only the patients an override or an import touched.

An import and an override record the patients they changed in ``derive_touched``, in the same
transaction as the change and the ``derive_pending`` mark (:func:`mark_touched`; the importer
marks every patient id of its rows, and the earliest month they can change: :func:`mark_from_month`).
An import of new months touches most patients but only late months: :func:`derive_months`
recomputes every patient's months from that month on, and in the months before it that the
measures looking forward reach back to, those measures' cells only (:func:`reach_metrics`), chosen by :func:`derive_touched` when the months are the smaller share. Otherwise
:func:`derive_touched` recomputes, for those patients only, what the full derive
(:func:`core.derive.pipeline.derive_all`) would:

- their subgroup assignments and risk scores (the rules and every active override);
- their ``patient_month_activity`` rows, and the ``team_month_activity`` rows of every team,
  subgroup and month they were in before or are in now;
- the cells of those team x subgroup x months (every stratum and metric), from all the patients
  in them, block by block as the full derive forms its blocks, so the sums are the same to the bit.

"The same to the bit" rests on every float sum taking its rows in one order whatever the query
plan: the cell aggregation sorts its rows (patient, month), the cost provider reads encounters in
key order, and the activity table's SQL sums are ordered on PostgreSQL (``sum(x ORDER BY key)``).
SQLite 3.40 has no ordered aggregates; there the activity sums follow its plan, which read a
patient's encounters in the same order for both derives in every test
(``tests/store/test_incremental_derive_store.py``).

Two things are network-wide, read from the stored assignments (the state the other patients'
rows were derived in) and compared with what the touched patients make of them:

- the month thresholds of the top-fraction risk rules (the top-decile cut-off), from the counts
  of every month's stored risk scores with the touched patients' old scores replaced by their new
  ones. An override changes no risk score, so they never move. An import that adds or changes
  patients can move them: then every patient of those months may change subgroup (and the reason
  text names the cut-off), so the derive falls back to a full one and says why;
- the first and last assigned month (the period a condition group's code is picked from) and the
  calendar years with risk scores: a change falls back to a full derive too.

A subgroup override (set or lifted) that is all that is pending takes another path,
:func:`derive_override`: the patient's data did not change, only their subgroups, so the
difference of their cells (under the stored and the new assignments, each the full derive's
code on a one-patient block) is applied to the stored cells and ``team_month_activity``; no
other patient is read. Counts stay exact; float sums may differ from a full derive's in the last
bits (relative 1e-9, absolute 1e-6 where a sum cancels to about 0; the tests compare on those
terms). The month cut-offs come from ``app_setting`` (kept by every full derive), so an override
reads no risk-score counts.

Nothing network-wide else is read: staff, teams and practices (the cost rates) are changed by
imports only, and an import that writes them marks ``*`` (everything). Above
:data:`MAX_TOUCHED_SHARE` of the network's patients a full derive is the quicker one.
"""

import json
import time
from collections.abc import Callable, Iterable
from datetime import date, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import ARRAY, Engine, String, bindparam, delete, func, select, true, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from core.store.db import begin_interactive, inserted_rows, refresh_statistics
from core.store.models import (
    AppSetting,
    Attribution,
    Cell,
    Condition,
    DeriveTouched,
    Patient,
    RiskScore,
    SubgroupAssignment,
    Team,
)
from core.store.queries import DERIVE_PENDING_KEY, among, bump_data_version, derive_pending, utc_now

TOUCH_ALL = "*"
MAX_TOUCHED_SHARE = 0.25  # above this share of the attributed patients a full derive is quicker
UNASSIGNED = "unassigned"
BULK_CELLS_SHARE = 0.3  # rewriting more of the cell table than this: its indexes are dropped and built once


def _insert_ignore(conn, table):
    dialect = conn.dialect.name
    ins = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
    return ins.on_conflict_do_nothing()


def mark_touched(conn, patient_ids: Iterable[str], pending: str, from_month: date | None = None) -> None:
    """In the caller's transaction: record ``patient_ids`` (``*``: everything) as touched and set
    the ``derive_pending`` mark to ``pending`` unless something is pending already.

    ``from_month``: the earliest month the change can alter (an import's rows: :mod:`core.ingest.loader`);
    None (an override, a full derive) when every month of the patients may change. The store keeps
    the earliest of the marks not derived yet (:func:`mark_from_month`)."""
    ids = sorted({str(p) for p in patient_ids})
    mark_from_month(conn, from_month)
    if ids:
        # one bound value, not a statement a row: PostgreSQL unnests an array (87,000 patients:
        # 0.9 s less), SQLite reads a JSON array (100,000: 0.18-0.23 s against 0.49-0.85 s)
        if conn.dialect.name == "postgresql":
            rows = select(func.unnest(bindparam("ids", ids, type_=ARRAY(String))))
        else:  # (the WHERE: SQLite reads ON CONFLICT after a bare FROM as a join's constraint)
            rows = select(func.json_each(json.dumps(ids)).table_valued("value").c.value).where(true())
        conn.execute(_insert_ignore(conn, DeriveTouched.__table__).from_select(["patient_id"], rows))
    conn.execute(
        _insert_ignore(conn, AppSetting.__table__), [{"key": DERIVE_PENDING_KEY, "value": pending, "updated_at": utc_now()}]
    )


class StaleCells(RuntimeError):
    """The stored cells or team activity do not hold what the override's difference takes away
    (a store changed outside the derive): nothing is written and the patient is recomputed."""


def touched_patients(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(DeriveTouched.patient_id)).scalars().all())


def derive_touched(engine: Engine, progress=None, rules=None, override: tuple[str, str] | None = None) -> dict | None:
    """Catch the derived tables up with what is pending: the touched patients only when that is
    exact and quicker, else everything. Returns the summary (``mode`` override, incremental or
    full, ``why`` for a full one, ``seconds``), or None when nothing was pending.

    ``override``: (pending mark, patient id) of a subgroup override just set or lifted. When that
    override is all that is pending (the mark is its own and the patient is the only one touched),
    the patient's data did not change, only their subgroups: :func:`derive_override` applies the
    difference."""
    from core.derive.pipeline import derive_all

    t0 = time.perf_counter()
    pending = derive_pending(engine)
    if pending is None:
        return None
    touched = touched_patients(engine)
    if override is not None and pending == override[0] and touched == [override[1]]:
        try:
            summary = derive_override(engine, override[1], pending, rules)
        except StaleCells:  # the stored cells are not what the difference assumes: recompute them (below)
            summary = None
        if summary is not None:
            summary["seconds"] = round(time.perf_counter() - t0, 2)
            return summary
    plan = month_plan(engine, from_month_mark(engine)) if touched else None
    by_month = plan is not None and len(plan[2]) <= MAX_MONTH_SHARE * max(len(plan[1]), 1)
    few = TOUCH_ALL not in touched and (not by_month or _few_patients(engine, touched, len(plan[2]) / max(len(plan[1]), 1)))
    if not touched:
        why = "the store does not know which patients changed"
    elif by_month and not few:
        summary, why = _by_month(engine, touched, plan, pending, rules, progress, t0)
        if why is None:
            return summary
    elif TOUCH_ALL in touched:
        why = "network-wide data changed, or an earlier full derive did not finish"
    else:
        if progress:
            progress(0.6, f"Re-deriving {len(touched):,} patient(s)")
        summary = derive_patients(engine, touched, rules)
        why = summary.get("why")
        if why is None:
            clear_touched(engine, touched)
            summary["data_version"] = bump_data_version(engine, derived=pending)
            summary["seconds"] = round(time.perf_counter() - t0, 2)
            if progress:
                progress(1.0, "Done")
            return summary
        if by_month:  # e.g. a cut-off moved: the months from the change are re-derived with their cut-offs
            summary, why_months = _by_month(engine, touched, plan, pending, rules, progress, t0)
            if why_months is None:
                return summary
    summary = derive_all(engine, progress or (lambda _f, _t: None), rules)  # clears the touched rows it caught up with
    return {"mode": "full", "why": why, **summary, "seconds": round(time.perf_counter() - t0, 2)}


def clear_touched(engine: Engine, touched: list[str]) -> None:
    """Forget the touched patients a derive has caught up with (those touched since stay), and the
    mark of the earliest month to re-derive once no touched patient is left."""
    with engine.begin() as conn:
        _clear_touched(conn, touched)


def _clear_touched(conn, touched: list[str]) -> None:
    """:func:`clear_touched` in the caller's transaction."""
    t, chunk = DeriveTouched.__table__, 100_000  # one bound list a chunk (a month at 100,000 patients: 0.9 -> 0.1 s)
    for start in range(0, len(touched), chunk):
        conn.execute(delete(t).where(among(t.c.patient_id, touched[start : start + chunk], conn.dialect.name)))
    if conn.execute(select(t.c.patient_id).limit(1)).first() is None:
        conn.execute(delete(AppSetting.__table__).where(AppSetting.__table__.c.key == FROM_MONTH_KEY))


def _few_patients(engine: Engine, touched: list[str], month_share: float) -> bool:
    """Whether re-deriving the touched patients is the quicker way: a smaller share of the
    network's patients than the share of its months a derive by month would redo."""
    with engine.connect() as conn:
        attributed = conn.execute(select(func.count()).select_from(Patient)).scalar_one()
    return len(touched) <= min(MAX_TOUCHED_SHARE, month_share) * max(attributed, 1)


def _by_month(
    engine: Engine, touched: list[str], plan: tuple, pending: str, rules, progress, t0: float
) -> tuple[dict, str | None]:
    """:func:`derive_months` from the plan's first month, and the bookkeeping of a finished derive."""
    start, _, redo = plan
    changed = from_month_mark(engine)
    # the months before the first changed row's: only the measures that look forward (derive_months)
    first = max(start, changed.replace(day=1)) if changed is not None else start
    if progress:
        progress(0.6, f"Re-deriving the {len([m for m in redo if m >= first])} month(s) from {first:%b %Y}")
    from core.derive.page_aggregates import build_page_aggregates, build_page_aggregates_from, built

    def pages() -> dict:  # the pages' aggregates of the months from `first` (whole on a store that never had them)
        with engine.connect() as conn:
            by_month = built(conn)
        return build_page_aggregates_from(engine, first) if by_month else build_page_aggregates(engine)

    summary = derive_months(engine, first, rules, changed_from=changed, pages=pages, reach_from=start)
    if summary.get("why") is not None:
        return summary, summary["why"]
    clear_touched(engine, touched)
    summary["data_version"] = bump_data_version(engine, derived=pending)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    if progress:
        progress(1.0, "Done")
    return summary, None


def _stored_counts(conn, only: list[str] | None = None) -> pd.Series:
    """Stored risk-score counts per (month, risk_score) (the first pass's counts): of every
    patient, or of the patients ``only``."""
    s = SubgroupAssignment
    stmt = select(s.month, s.risk_score, func.count()).where(s.risk_score.is_not(None)).group_by(s.month, s.risk_score)
    if only:
        stmt = stmt.where(s.patient_id.in_(only))
    rows = conn.execute(stmt).all()
    index = pd.MultiIndex.from_arrays([pd.to_datetime([r[0] for r in rows]), pd.Index([float(r[1]) for r in rows], dtype="float64")],
                                      names=["month", "risk_score"])  # fmt: skip
    return pd.Series([int(r[2]) for r in rows], index=index, dtype="int64")


def _stored_months(conn, only: list[str]) -> set:
    """The assigned months of the patients ``only``."""
    s = SubgroupAssignment
    return set(pd.to_datetime(conn.execute(select(s.month).distinct().where(s.patient_id.in_(only))).scalars().all()))


def _stored_range(conn, exclude: list[str] | None = None) -> tuple | None:
    """First and last assigned month (of the patients but ``exclude``); None when there is none.
    (Without ``exclude``: min and max in two queries, each one index lookup on SQLite.)"""
    s = SubgroupAssignment
    where = [s.patient_id.not_in(exclude)] if exclude else []
    low = conn.execute(select(func.min(s.month)).where(*where)).scalar()
    high = conn.execute(select(func.max(s.month)).where(*where)).scalar()
    return None if low is None else (pd.Timestamp(low), pd.Timestamp(high))


def _attributed_span(conn) -> list:
    """Every month from the first attributed month to the last (first days), from the
    (team_id, month) index: two lookups per team instead of reading every attribution. The full
    derive takes the months with an attribution (``core.derive.cells._attributed_months``); a
    month inside the span without any attribution would change no patient's rows."""
    from core.store.months import add_months, as_month

    a = Attribution
    ends = []
    for team_id in conn.execute(select(Team.team_id)).scalars().all():
        for agg in (func.min, func.max):
            found = conn.execute(select(agg(a.month)).where(a.team_id == team_id)).scalar()
            if found is not None:
                ends.append(as_month(found))
    if not ends:
        return []
    first, last = min(ends), max(ends)
    out = [first]
    while out[-1] < last:
        out.append(add_months(out[-1], 1))
    return out


def _norm(counts: pd.Series) -> pd.Series:
    """Score counts with one index type (months as datetime64[ns], scores float64), summed per key."""
    counts = _add_counts_of([counts])
    index = pd.MultiIndex.from_arrays([pd.DatetimeIndex(counts.index.get_level_values(0)).as_unit("ns"),
                                       counts.index.get_level_values(1).astype("float64")], names=["month", "risk_score"])  # fmt: skip
    return pd.Series(counts.to_numpy(dtype="int64"), index=index).sort_index()


def _add_counts_of(parts: list[pd.Series]) -> pd.Series:
    from core.derive.subgroups.assign import _add_counts

    return _add_counts(parts)


def _subtract(counts: pd.Series, part: pd.Series) -> pd.Series:
    """Counts (index month, risk_score) less those of ``part`` (a subset); zero counts dropped."""
    if not len(part):
        return counts
    out = counts.sub(part, fill_value=0).astype("int64")
    return out[out > 0]


def _same_thresholds(a: dict, b: dict) -> list:
    """Months whose threshold differs between two :func:`thresholds_from_counts` results."""
    moved = set()
    for f in set(a) | set(b):
        x, y = a.get(f, pd.Series(dtype=float)), b.get(f, pd.Series(dtype=float))
        both = x.index.union(y.index)
        x, y = x.reindex(both), y.reindex(both)
        differ = ~((x == y) | (x.isna() & y.isna()))
        moved |= set(both[differ.to_numpy()])
    return sorted(moved)


def derive_patients(engine: Engine, patients: list[str], rules=None) -> dict:
    """Re-derive ``patients`` (subgroups, activity, the cells they are in), exactly as a full
    derive would. Returns the summary; with ``why`` (and nothing written) when only a full derive
    can be exact or it would be quicker."""
    from core.derive.activity import replace_activity_of
    from core.derive.blocks import BLOCK_PATIENTS, patient_blocks
    from core.derive.cells import _attributed_months
    from core.derive.page_aggregates import replace_page_aggregates_of
    from core.derive.risk import DEFAULT_MODEL
    from core.derive.subgroups.assign import ASSIGNMENT_COLUMNS, _add_counts, _block_assignments, block_scores
    from core.derive.subgroups.evaluate import thresholds_from_counts, top_fractions
    from core.derive.subgroups.frames import insert_frame, run_of
    from core.derive.subgroups.overrides import active_overrides, apply_overrides
    from core.derive.subgroups.rules import active_rules_path, load_rules

    t0 = time.perf_counter()
    rules = rules or load_rules(active_rules_path())
    parts: dict[str, float] = {}
    with engine.connect() as conn:
        attributed = conn.execute(select(func.count()).select_from(Patient)).scalar_one()
        if len(patients) > MAX_TOUCHED_SHARE * max(attributed, 1):
            return {"why": f"{len(patients):,} of {attributed:,} patients changed: a full derive is quicker"}
        run = run_of(conn, None, DEFAULT_MODEL)
        stored_years = set(conn.execute(select(RiskScore.year).distinct()).scalars().all())
        if run is None or (stored_years and set(run.years) != stored_years):
            return {"why": "the years of the attributed months changed"}
        # network-wide: month thresholds and period, with the touched patients' new scores
        fractions = top_fractions(rules)
        new_counts, new_months, _ = block_scores(conn, run, patients, bool(fractions))
        new_months = {pd.Timestamp(m) for m in new_months}
        old_range = _stored_range(conn)
        month_range = old_range
        if new_months != _stored_months(conn, patients):  # else the period cannot have moved
            others = _stored_range(conn, patients)
            months_now = new_months | set(others or ())
            if not months_now:
                return {"why": "no patient-month to assign"}
            month_range = (min(months_now), max(months_now))
            if old_range is not None and month_range != old_range:
                return {"why": "the first or last assigned month changed"}
        stored = _norm(_stored_counts(conn)) if fractions else _add_counts([])
        thresholds = thresholds_from_counts(stored, fractions)
        mine, new_counts = (_norm(_stored_counts(conn, patients)), _norm(new_counts)) if fractions else (None, None)
        if fractions and not (mine.index.equals(new_counts.index) and (mine.to_numpy() == new_counts.to_numpy()).all()):
            # the touched patients' scores changed: the cut-offs with their new scores
            now = thresholds_from_counts(_add_counts([_subtract(stored, mine), new_counts]), fractions)
            moved = _same_thresholds(thresholds, now)
            if moved:
                return {"why": f"the top-fraction risk cut-off moved in {len(moved)} month(s) "
                               f"({moved[0]:%b %Y}-{moved[-1]:%b %Y}): every patient of those months is re-assigned"}  # fmt: skip
        result, risk = _block_assignments(conn, run, patients, month_range, rules, thresholds)
        overrides = active_overrides(conn)
        result = apply_overrides(result, overrides[overrides["patient_id"].isin(patients)])
        t1 = time.perf_counter()
        parts["subgroups"] = t1 - t0
        keys, cell_patients = _affected(conn, patients, result)
        blocks = patient_blocks(conn, BLOCK_PATIENTS)
        months = _attributed_months(conn)
    cells = _cells_of(engine, months, blocks, cell_patients, patients, result, keys)
    t2 = time.perf_counter()
    parts["cells"] = t2 - t1
    a, r = SubgroupAssignment.__table__, RiskScore.__table__
    with engine.begin() as conn:
        conn.execute(delete(a).where(a.c.patient_id.in_(patients)))
        conn.execute(delete(r).where(r.c.patient_id.in_(patients)))
        insert_frame(conn, r, risk[risk["score"].notna()].astype({"year": int}))
        insert_frame(conn, a, result[ASSIGNMENT_COLUMNS])
        activity = replace_activity_of(conn, patients, keys)
        activity["pages"] = replace_page_aggregates_of(conn, patients, keys)  # e-consults, moves, costliest
        cell_rows = _replace_cells(conn, keys, cells)
    parts["write"] = time.perf_counter() - t2
    return {
        "mode": "incremental",
        "patients": len(patients),
        "subgroups": {"rows": len(result), "overridden": int(result["overridden"].sum())},
        "activity": activity,
        "cells": {"rows": cell_rows, "keys": len(keys), "patients": len(cell_patients)},
        "parts": {k: round(v, 2) for k, v in parts.items()},
    }


def _affected(conn, patients: list[str], result: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The team x subgroup x months the patients were in (stored) or are in now (``result``), and
    every patient in one of them now (the touched ones included).

    Keys: team_id, subgroup, month (a date). A stored assignment keeps the team of its month, so
    a team change by an import is seen; an attributed month without an assignment (after death)
    counts as ``unassigned`` of every team, since its team before the import is not kept.
    """
    a, s = Attribution, SubgroupAssignment
    stored = pd.read_sql(select(s.team_id, s.subgroup, s.month).where(s.patient_id.in_(patients)), conn)
    attributed = pd.read_sql(select(a.patient_id, a.team_id, a.month).where(a.patient_id.in_(patients)), conn)
    attributed["month"] = pd.to_datetime(attributed["month"])
    stored["month"] = pd.to_datetime(stored["month"])
    new = result[["patient_id", "month", "subgroup"]].assign(month=pd.to_datetime(result["month"]))
    now = attributed.merge(new, on=["patient_id", "month"], how="left")
    now["subgroup"] = now["subgroup"].fillna(UNASSIGNED)
    teams = conn.execute(select(Team.team_id)).scalars().all()
    unassigned = sorted(set(now.loc[now["subgroup"] == UNASSIGNED, "month"]))
    every_team = pd.DataFrame([(t, UNASSIGNED, m) for t in teams for m in unassigned], columns=["team_id", "subgroup", "month"])
    keys = pd.concat([stored.dropna(subset=["team_id"]), now[["team_id", "subgroup", "month"]], every_team], ignore_index=True)
    keys = keys.drop_duplicates().sort_values(["team_id", "subgroup", "month"]).reset_index(drop=True)
    keys["month"] = pd.to_datetime(keys["month"]).dt.date
    members = set(patients)
    for team_id, part in keys.groupby("team_id"):
        pairs = list(zip(part["subgroup"], part["month"], strict=True))
        stmt = (
            select(a.patient_id)
            .distinct()
            .outerjoin(s, (s.patient_id == a.patient_id) & (s.month == a.month))
            .where(a.team_id == team_id, tuple_(func.coalesce(s.subgroup, UNASSIGNED), a.month).in_(pairs))
        )
        members |= set(conn.execute(stmt).scalars().all())
    return keys, sorted(members)


def _cells_of(engine: Engine, months: list, blocks: list[tuple[str, str]], cell_patients: list[str], patients: list[str],
              result: pd.DataFrame, keys: pd.DataFrame) -> pd.DataFrame:  # fmt: skip
    """The cells of ``keys`` from ``cell_patients`` (the touched ``patients`` with their new
    assignments ``result``), block by block of the full derive's blocks, added up in their order."""
    from core.derive.cells import CELL_COLUMNS, add_cells, block_cells
    from core.derive.measures import read_columns

    S, a = SubgroupAssignment, Attribution
    cells = pd.DataFrame(columns=CELL_COLUMNS)
    new = result[["patient_id", "month", "subgroup", "risk_score"]]
    touched = set(patients)
    parts = [cell_patients]
    if len(blocks) > 1:  # the blocks' ranges follow the database's collation: ask it
        with engine.connect() as conn:
            parts = [sorted(conn.execute(select(a.patient_id).distinct().where(a.patient_id.between(low, high),
                                                                              a.patient_id.in_(cell_patients))).scalars().all())
                     for low, high in blocks]  # fmt: skip
    for part in parts:
        if not part:
            continue
        others = [p for p in part if p not in touched]
        stored = read_columns(engine, [S.patient_id, S.month, S.subgroup, S.risk_score], ["month"], others) if others else None
        mine = new[new["patient_id"].isin(part)]
        assignments = pd.concat([f for f in (stored, mine) if f is not None and len(f)], ignore_index=True) if (
            stored is not None and len(stored)) or len(mine) else new.iloc[0:0]  # fmt: skip
        block, _ = block_cells(engine, months, part, None, assignments)
        cells = add_cells(cells, block)
    if not len(cells):
        return cells
    wanted = pd.MultiIndex.from_frame(keys[["team_id", "subgroup", "month"]])
    have = pd.MultiIndex.from_arrays([cells["team_id"], cells["subgroup"], cells["month"]])
    return cells[have.isin(wanted)].reset_index(drop=True)


def _replace_cells(conn, keys: pd.DataFrame, cells: pd.DataFrame) -> int:
    """Delete the stored cells of ``keys`` and insert ``cells``, in the caller's transaction."""
    from core.derive.cells import CELL_COLUMNS
    from core.derive.subgroups.frames import insert_frame

    table = Cell.__table__
    stored = conn.execute(select(func.count()).select_from(table)).scalar_one()
    rebuild = len(cells) > BULK_CELLS_SHARE * stored  # most of the table: indexes built once, as write_cells does
    if rebuild:
        for index in table.indexes:
            index.drop(conn, checkfirst=True)
    for team_id, part in keys.groupby("team_id"):
        pairs = list(zip(part["subgroup"], part["month"], strict=True))
        conn.execute(delete(table).where(table.c.team_id == team_id, tuple_(table.c.subgroup, table.c.month).in_(pairs)))
    if len(cells):
        out = cells[CELL_COLUMNS].sort_values(CELL_COLUMNS[:7]).assign(month=lambda f: pd.to_datetime(f["month"]))
        insert_frame(conn, table, out.astype({"patients": "int64"}))
    if rebuild:
        for index in table.indexes:
            index.create(conn)
    return len(cells)


# --- by month: an import of new months ----------------------------------------------------------

FROM_MONTH_KEY = "derive_from_month"
EVERY_MONTH = "*"
MAX_MONTH_SHARE = 0.5  # re-deriving more of the attributed months than this: a full derive is as quick
# Measure rules whose value in a month reads data of later months, and how far (the rest read the
# month and the months before it only): core/config/measures.toml, core/derive/measures.py.
LOOKS_FORWARD = {"readmission", "new_condition"}
# The rules whose value in a month can change with rows dated after it: those above, and the
# end of life (a stay ending in death counts whatever its date: :func:`_before_deaths`).
REACH_RULES = LOOKS_FORWARD | {"end_of_life"}


def reach_metrics(catalogue=None) -> tuple[str, ...]:
    """The measures (ids) of :data:`REACH_RULES`: all that can change in the months a change dated
    later reaches back to (:func:`derive_months`' ``reach_from``)."""
    from core.derive.measures import load_measures

    return tuple(m.id for m in (catalogue or load_measures()).measures if m.rule in REACH_RULES)


def mark_from_month(conn, from_month: date | None) -> None:
    """In the caller's transaction: lower the store's mark of the earliest month to re-derive
    (``derive_from_month``) to ``from_month``; ``*`` (every month) when None. Touched patients
    recorded without a mark (before it existed) count as every month."""
    table = AppSetting.__table__
    stored = conn.execute(select(table.c.value).where(table.c.key == FROM_MONTH_KEY)).scalar_one_or_none()
    if stored is None and conn.execute(select(DeriveTouched.patient_id).limit(1)).first() is not None:
        stored = EVERY_MONTH
    value = EVERY_MONTH if from_month is None else from_month.replace(day=1).isoformat()
    if stored is not None:
        value = EVERY_MONTH if EVERY_MONTH in (stored, value) else min(stored, value)
    if value != stored:
        conn.execute(delete(table).where(table.c.key == FROM_MONTH_KEY))
        conn.execute(table.insert().values(key=FROM_MONTH_KEY, value=value, updated_at=utc_now()))


def from_month_mark(engine: Engine) -> date | None:
    """The earliest month the changes not derived yet can alter; None when unknown or every month."""
    table = AppSetting.__table__
    with engine.connect() as conn:
        value = conn.execute(select(table.c.value).where(table.c.key == FROM_MONTH_KEY)).scalar_one_or_none()
    return None if value in (None, EVERY_MONTH) else date.fromisoformat(value)


def first_changed_month(from_month: date, catalogue=None) -> date | None:
    """The first month whose derived rows can change when rows dated ``from_month`` or later are
    added: ``from_month``, or earlier for the measures that look forward from a month (a discharge
    counts a readmission up to ``days`` later; a month before a first diagnosis counts it).
    None when a measure's rule is not known to look back only (then every month may change)."""
    from core.derive.measures import RULES, load_measures
    from core.store.months import add_months

    first = from_month.replace(day=1)
    start = first
    for measure in (catalogue or load_measures()).measures:
        if measure.rule == "readmission":
            start = min(start, (first - timedelta(days=int(measure.params["days"]))).replace(day=1))
        elif measure.rule == "new_condition":
            start = min(start, add_months(first, -1))
        elif measure.rule in LOOKS_FORWARD or measure.rule not in RULES:
            return None
    return start


def month_plan(engine: Engine, from_month: date | None) -> tuple[date, list[date], list[date]] | None:
    """(first month to re-derive, every attributed month, those re-derived) for a change from
    ``from_month``; None when every month may change."""
    from core.derive.cells import _attributed_months

    start = first_changed_month(from_month) if from_month is not None else None
    if start is None:
        return None
    with engine.connect() as conn:
        months = _attributed_months(conn)
        start = _before_deaths(conn, from_month, start)
    return start, months, [m for m in months if m >= start]


def _before_deaths(conn, from_month: date, start: date) -> date:
    """``start``, or the earlier month of death of a patient who died before it and has a stay
    dated ``from_month`` or later ending in death (the end-of-life measure counts such a stay
    whatever its date)."""
    from core.store.models import Encounter

    p, e = Patient, Encounter
    died = conn.execute(
        select(func.min(p.death_date)).join(e, e.patient_id == p.patient_id)
        .where(p.death_date < start, e.start_date >= from_month, e.discharge_disposition == "died")
    ).scalar_one_or_none()  # fmt: skip
    return start if died is None else min(start, pd.Timestamp(died).date().replace(day=1))


def derive_months(engine: Engine, start: date, rules=None, workers: int | None = None, changed_from: date | None = None,
                  pages: Callable[[], dict] | None = None, reach_from: date | None = None) -> dict:  # fmt: skip
    """Re-derive the months from ``start`` on (subgroups, risk scores, activity, cells) of every
    patient, exactly as a full derive would, leaving the earlier months as they are.

    Months before ``start`` cannot change (:func:`first_changed_month`): everything derived looks
    back from its month, or forward by the reach ``start`` allows for. Network-wide parts:

    - the top-fraction risk cut-offs of the months from ``start`` are computed again from every
      patient of those months; those of earlier months stay, and so do their assignments;
    - the period a condition group's code is picked from (for the reason text) grows with the
      last month: the patients with a condition starting from ``start`` or after the earlier last
      month are re-assigned in every month (their reasons may name another code; their subgroups
      and scores before ``start`` are checked to be unchanged), and so are patients attributed
      from ``start`` without a stored risk score (all their years' scores are written);
    - a change of the first month or of the calendar years with risk scores needs a full derive.

    Reads are bounded by the look-back of the months from ``start``, not a patient's whole history:

    - cells: attributions and stored assignments from ``start``; encounters, measurements and
      procedures back by the longest look-back of the measure catalogue
      (:func:`core.derive.measures.read_bounds`, from the rules and their parameters: each
      measurement code from the earliest month the measures naming it read, e.g. 11 months before
      ``start`` for HbA1c and blood pressure, 23 for BMI change, 24 for PHQ-9 remission at 12
      months (the index score and the 12 months before it); encounters of the kinds the rules count that start or end
      from ``start``, hospice stays from 180 days earlier, stays still open and stays ending in
      death whatever their date; procedures from the longest done-within window, 1,200 months);
      patients, conditions and medications whole (a condition or medicine of any age can be
      active; a first diagnosis is the first ever); the costs: the encounters starting in the months;
    - activity: the encounters starting from ``start`` and their staff minutes;
    - subgroups: the 12-month lab and acute-event windows and the enrolment history back from
      ``start``; conditions over the whole run (risk scores, and the reason codes of the period).
      The first pass (the counts of the months' risk scores, for the top-fraction cut-offs)
      reads the stored scores instead of every patient's conditions when no change reaches a
      score of the months' years: every changed row is dated from 1 January of the last of them
      (a score of year Y is made from the conditions of Y - 1; the importer marks a change of
      birth date, sex or dual status as every month). Patients without a stored score are
      scored as before (:func:`core.derive.subgroups.assign.stored_scores`).

    The edges are covered by ``tests/store/test_month_derive_store.py`` (a row on the first day of
    each look-back is read and changes the result; the day before is not read).

    ``reach_from`` (before ``start``, every changed row dated from ``start``): the months from it to
    ``start`` change only where a measure looks forward from a month (:func:`reach_metrics`: a
    readmission, a first diagnosis the month after, a stay ending in death): those measures' cells
    of those months are computed again, with the same blocks and look-back bounds, and replace
    theirs; their subgroups, activity, other cells and pages' rows stand (each made from its month
    and earlier ones). 100,000 patients, one new month: the month before is no longer re-derived
    whole.

    ``changed_from``: the earliest month of the changed rows (default ``start``). ``pages``: writes
    the pages' tables of the months once the subgroups and activity are written (its summary is
    the summary's ``page_aggregates``); it runs while the workers build the cells.
    Returns the summary; with ``why`` when only a full derive can be exact (written: possibly the
    subgroups, then the caller's full derive replaces everything).
    """
    from core.derive.activity import (
        ACTIVITY_COLUMNS,
        TEAM_ACTIVITY_COLUMNS,
        cost_rate_tables,
        select_patient_month_activity,
        select_team_month_activity,
    )
    from core.derive.blocks import BLOCK_PATIENTS, map_blocks, patient_blocks, worker_count, worker_pool
    from core.derive.cells import block_cells
    from core.derive.risk import DEFAULT_MODEL
    from core.derive.subgroups.assign import (
        ASSIGNMENT_COLUMNS,
        _block_assignments,
        block_scores,
        first_pass,
        save_thresholds,
        stored_scores,
        stored_thresholds,
        thresholds_of,
    )
    from core.derive.subgroups.evaluate import thresholds_from_counts, top_fractions
    from core.derive.subgroups.frames import Run, insert_frame, run_of
    from core.derive.subgroups.overrides import active_overrides, apply_overrides
    from core.derive.subgroups.rules import active_rules_path, load_rules
    from core.store.models import PatientMonthActivity, Staff, TeamMonthActivity
    from core.store.months import month_end
    from core.views.worklist import load_worklist_rules

    t0 = time.perf_counter()
    rules = rules or load_rules(active_rules_path())
    workers = worker_count() if workers is None else workers
    fractions = top_fractions(rules)
    parts: dict[str, float] = {}
    with engine.connect() as conn:
        run = run_of(conn, None, DEFAULT_MODEL)
        stored_years = set(conn.execute(select(RiskScore.year).distinct()).scalars().all())
        old_range = _stored_range(conn)
        if run is None or old_range is None:
            return {"why": "nothing derived yet"}
        if stored_years and set(run.years) != stored_years:
            return {"why": "the calendar years with risk scores changed"}
        if start <= old_range[0].date() or run.first.date() != old_range[0].date():
            return {"why": "the first assigned month changed, or every month is re-derived"}
        months = sorted(m for (m,) in conn.execute(select(Attribution.month).distinct().where(Attribution.month >= start)))
        blocks = patient_blocks(conn, BLOCK_PATIENTS, months, workers) if months else []
        reach = [] if reach_from is None or reach_from >= start else sorted(
            m for (m,) in conn.execute(select(Attribution.month).distinct().where(Attribution.month >= reach_from,
                                                                                   Attribution.month < start)))  # fmt: skip
        forward = reach_metrics() if reach else ()
        cell_blocks = patient_blocks(conn, BLOCK_PATIENTS)  # the full derive's blocks: its sums, in its order
    summary = {"mode": "months", "from_month": start.isoformat(), "months": len(months)}
    if reach_from is not None and reach_from < start:
        summary["reach"] = {"from_month": reach_from.isoformat(), "months": len(reach), "metrics": list(forward)}
    # each block reads only the rows the months need (bounded: the measures' look-back)
    each_block = cell_blocks if len(cell_blocks) > 1 else [None]
    if not blocks:
        reach_calls = [(reach, block, None, None, True, forward) for block in each_block] if forward else []
        reach_cells = _cell_sums(map_blocks(engine, None, block_cells, reach_calls), reach)
        with engine.begin() as conn:
            reach_rows = _replace_metric_cells(conn, reach, forward, reach_cells)
        return {**summary, "subgroups": {"rows": 0}, "activity": {}, "cells": {"rows": 0, "reach_rows": reach_rows},
                "parts": {}, **({"page_aggregates": pages()} if pages is not None else {})}  # fmt: skip
    years = tuple(sorted({m.year for m in months}))
    # the run's months from `start`, the condition look-back of the whole run (as the full derive's);
    # the 12-month lab and acute-event windows and the enrolment history read back from `start` only
    scoring = Run(months, years, run.first, run.last, DEFAULT_MODEL, pd.Timestamp(start))
    a, r = SubgroupAssignment.__table__, RiskScore.__table__
    # one pool of workers for the subgroups' blocks and then the cells' (started and stopped once:
    # 0.8 s and 0.2 s each time; about 0.3 s of the month's wall at 100,000 patients, BENCHMARKS.md)
    pool_blocks = max(len(blocks), len(cell_blocks))
    with worker_pool(engine, workers, pool_blocks, while_writing=True) as pool:
        subgroup_pool, cell_pool = (pool if len(blocks) > 1 else None), (pool if len(cell_blocks) > 1 else None)
        with engine.connect() as conn, conn.begin():
            # no change reaches a score of the months' years: both passes take the stored scores
            scores_stored = (changed_from or start) >= date(years[-1], 1, 1)
            if scores_stored:
                scores = stored_scores(conn, scoring, bool(fractions))
            else:
                scores = map_blocks(conn, subgroup_pool, block_scores, [(scoring, b, bool(fractions)) for b in blocks], workers)
            month_range, month_dates, thresholds = first_pass(scores, fractions)
            if month_range is None or month_range[1] < old_range[1]:
                return {"why": "the last assigned month moved back"}
            month_range = (old_range[0], month_range[1])
            # everyone of the months from `start`; some patients in every month (the docstring)
            since = min(pd.Timestamp(changed_from or start), old_range[1] + pd.DateOffset(months=1)).date()
            c = Condition.__table__.c
            again = set(conn.execute(select(c.patient_id).distinct().where(c.onset_date >= since,
                                                                               c.onset_date <= month_end(month_range[1].date())))
                        .scalars().all())  # fmt: skip
            att = Attribution.__table__.c
            again |= set(conn.execute(select(att.patient_id).distinct().where(att.month >= start, att.patient_id.not_in(
                select(RiskScore.patient_id).distinct()))).scalars().all())  # fmt: skip
            again = sorted(again)
            overrides = active_overrides(conn)
            earlier = None
            if again:
                # the cut-offs of the months before `start` as the derives that made them kept them (their
                # scores have not changed since: else those months would be re-derived), or, on a store
                # that has not kept every month's, from the stored scores' counts (a group-by of every
                # assignment: 6.9 s at 100,000 patients against 0.01 s)
                span = [m for m in _attributed_span(conn) if m < start]
                before = thresholds_of(stored_thresholds(conn), fractions, span) if fractions else {}
                if before is None:
                    before = thresholds_from_counts(_norm(_stored_counts(conn)), fractions)
                every = {f: pd.concat([before[f][before[f].index < pd.Timestamp(start)], thresholds[f]]) for f in fractions}
                chunks = [_block_assignments(conn, run, again[i : i + 10_000], month_range, rules, every)
                          for i in range(0, len(again), 10_000)]  # fmt: skip
                result = pd.concat([c[0] for c in chunks], ignore_index=True)
                risk = pd.concat([c[1] for c in chunks], ignore_index=True)
                result = apply_overrides(result, overrides[overrides["patient_id"].isin(again)])
                earlier = result[pd.to_datetime(result["month"]) < pd.Timestamp(start)]
                moved = _changed_before(conn, earlier, again, start)
                if moved:
                    return {"why": f"{moved} patient-month(s) before {start:%b %Y} changed subgroup or score: "
                                   "a full derive re-derives every month"}  # fmt: skip
            t1 = time.perf_counter()
            save_thresholds(conn, thresholds, month_dates)  # the cut-offs an override evaluates with
            conn.execute(delete(a).where(a.c.month >= start))
            rows = 0
            calls = [(scoring, block, month_range, rules, thresholds, scores_stored) for block in blocks]
            for result_block, _risk in map_blocks(conn, subgroup_pool, _block_assignments, calls, workers):
                result_block = apply_overrides(result_block, overrides)
                insert_frame(conn, a, result_block[ASSIGNMENT_COLUMNS])
                rows += len(result_block)
            if earlier is not None:
                for part in range(0, len(again), 10_000):
                    ids = again[part : part + 10_000]
                    conn.execute(delete(a).where(a.c.month < start, a.c.patient_id.in_(ids)))
                    conn.execute(delete(r).where(r.c.patient_id.in_(ids)))
                insert_frame(conn, a, earlier[ASSIGNMENT_COLUMNS])
                insert_frame(conn, r, risk[risk["score"].notna()].astype({"year": int}))
            # PostgreSQL: the month's rows, before the cells read them
            refresh_statistics(conn, [a.name, r.name], changed={a.name: rows + (0 if earlier is None else len(earlier)),
                                                                r.name: 0 if earlier is None else len(risk)})  # fmt: skip
            parts["subgroups"] = time.perf_counter() - t0
            parts["subgroups_write"] = time.perf_counter() - t1
        summary["subgroups"] = {"rows": rows, "patients_every_month": len(again)}
        t2 = time.perf_counter()
        # a block's cells of the months from `start` and of the measures that reach back, from one read
        calls = [(months, block, None, None, True, None, (reach, forward) if forward else None) for block in each_block]
        pma, tma = PatientMonthActivity.__table__, TeamMonthActivity.__table__
        # On a pool the cells' blocks start now, and this process writes the activity and then the
        # pages' tables (``pages``) meanwhile: neither reads the cells, nor do the cells read them (the
        # workers read while this process writes, as in the subgroups' second pass). Without a pool the
        # blocks run here once those are written. 100,000 patients, one new month: 20 s of cells
        # alongside 30 s of activity and pages' tables instead of after them.
        cell_results = map_blocks(engine, cell_pool, block_cells, calls)
        t3 = time.perf_counter()
        with engine.begin() as conn:
            staff = pd.read_sql(
                select(Staff.staff_id, Staff.team_id, Staff.role, Staff.annual_cost_usd, Staff.paid_hours_per_year), conn
            )
            role_rates, kind_costs = cost_rate_tables(staff, [t for (t,) in conn.execute(select(Team.team_id)).all()])
            dialect = conn.dialect.name
            conn.execute(delete(pma).where(pma.c.month >= start))
            stmt = select_patient_month_activity(dialect, role_rates, kind_costs, load_worklist_rules(), since=start)
            activity = inserted_rows(conn, pma.insert().from_select(ACTIVITY_COLUMNS, stmt))
            conn.execute(delete(tma).where(tma.c.month >= start))
            stmt = select_team_month_activity(dialect, since=start)
            team_rows = inserted_rows(conn, tma.insert().from_select(TEAM_ACTIVITY_COLUMNS, stmt))
            # PostgreSQL: before the pages' tables read them
            refresh_statistics(conn, [pma.name, tma.name], changed={pma.name: activity, tma.name: team_rows})
        parts["activity"] = time.perf_counter() - t3
        if pages is not None:
            summary["page_aggregates"] = pages()
        t4 = time.perf_counter()
        both = _cell_sums(cell_results, [*reach, *months])
        months_of = pd.to_datetime(both["month"])
        cells, reach_cells = both[months_of >= pd.Timestamp(start)], both[months_of < pd.Timestamp(start)]
        parts["cells_after_pages"] = time.perf_counter() - t4
    t5 = time.perf_counter()
    parts["cells"] = t5 - t2
    with engine.begin() as conn:
        cell_rows = _replace_cells_from(conn, start, cells)
        reach_rows = _replace_metric_cells(conn, reach, forward, reach_cells)
        # PostgreSQL: the pages read the month's cells
        refresh_statistics(conn, [Cell.__tablename__], changed={Cell.__tablename__: cell_rows + reach_rows})
    parts["write"] = time.perf_counter() - t5
    return {**summary, "activity": {"rows": int(activity), "team_rows": int(team_rows)},
            "cells": {"rows": cell_rows, "reach_rows": reach_rows}, "parts": {k: round(v, 2) for k, v in parts.items()}}  # fmt: skip


def _cell_sums(results: Iterable, months: list) -> pd.DataFrame:
    """The cells of the blocks' results (cells, seconds) added up in order, of ``months`` only."""
    from core.derive.cells import CELL_COLUMNS, add_cells

    cells = pd.DataFrame(columns=CELL_COLUMNS)
    for block, _seconds in results:
        cells = add_cells(cells, block)
    if len(cells):
        cells = cells[pd.to_datetime(cells["month"]).isin(pd.to_datetime(pd.Series(months, dtype=object)))]
    return cells


def _replace_metric_cells(conn, months: list, metrics: tuple[str, ...], cells: pd.DataFrame) -> int:
    """In the caller's transaction: the stored cells of ``metrics`` in ``months`` replaced by ``cells``."""
    if not months or not metrics:
        return 0
    table = Cell.__table__
    conn.execute(delete(table).where(table.c.month.in_(months), table.c.metric.in_(metrics)))
    _insert_cells(conn, cells)
    return len(cells)


def _insert_cells(conn, cells: pd.DataFrame) -> None:
    """Insert ``cells`` (of :func:`_cell_sums`) in key order, in the caller's transaction."""
    from core.derive.cells import CELL_COLUMNS
    from core.derive.subgroups.frames import insert_frame

    if len(cells):
        out = cells[CELL_COLUMNS].sort_values(CELL_COLUMNS[:7]).assign(month=lambda f: pd.to_datetime(f["month"]))
        insert_frame(conn, Cell.__table__, out.astype({"patients": "int64"}))


def _changed_before(conn, result: pd.DataFrame, patients: list[str], start: date) -> int:
    """Patient-months of ``result`` (before ``start``) whose subgroup, team or risk score is not the
    stored one, or that are missing from either."""
    s = SubgroupAssignment
    stored = pd.concat([pd.read_sql(select(s.patient_id, s.month, s.subgroup, s.team_id, s.risk_score)
                                    .where(s.month < start, s.patient_id.in_(patients[i : i + 10_000])), conn)
                        for i in range(0, len(patients), 10_000)], ignore_index=True)  # fmt: skip
    stored["month"] = pd.to_datetime(stored["month"])
    new = result[["patient_id", "month", "subgroup", "team_id", "risk_score"]].assign(month=pd.to_datetime(result["month"]))
    both = stored.merge(new, on=["patient_id", "month"], how="outer", suffixes=("_old", "_new"), indicator=True)
    same = (both["_merge"] == "both") & (both["subgroup_old"] == both["subgroup_new"]) & (
        both["team_id_old"].fillna("") == both["team_id_new"].fillna("")) & (
        (both["risk_score_old"] == both["risk_score_new"]) | (both["risk_score_old"].isna() & both["risk_score_new"].isna()))  # fmt: skip
    return int((~same).sum())


def _replace_cells_from(conn, start: date, cells: pd.DataFrame) -> int:
    """Delete the stored cells of the months from ``start`` and insert ``cells``, in the caller's transaction."""

    table = Cell.__table__
    stored = conn.execute(select(func.count()).select_from(table)).scalar_one()
    rebuild = len(cells) > BULK_CELLS_SHARE * stored
    if rebuild:
        for index in table.indexes:
            index.drop(conn, checkfirst=True)
    conn.execute(delete(table).where(table.c.month >= start))
    _insert_cells(conn, cells)
    if rebuild:
        for index in table.indexes:
            index.create(conn)
    return len(cells)


# --- a subgroup override: the difference of one patient's cells ------------------------------


def derive_override(engine: Engine, patient: str, caught_up: str, rules=None) -> dict:
    """Re-derive one patient after a subgroup override was set or lifted (their data unchanged).

    The patient's assignments are evaluated again (rules with the month thresholds kept by the
    last derive, :func:`core.derive.subgroups.assign.stored_thresholds`, the stored risk scores,
    and the active overrides); their risk scores and ``patient_month_activity`` rows do not
    depend on the subgroup and stay. The cells and ``team_month_activity`` rows are changed by the
    difference: the patient's cells under the stored assignments (read before writing) and under
    the new ones, in the months whose assignment changed (:func:`core.derive.cells.patient_cells`,
    the full derive's code on a one-patient block), and
    every affected cell becomes stored - old + new; a cell whose patients fall to 0 is deleted (the
    full derive writes no cell without a patient), one that did not exist is inserted. Counts
    (``patients``, activities, and numerators and denominators that count patients) stay exact;
    float sums may differ from a full derive's in the last bits (a relative 1e-9 at most, plus an
    absolute 1e-6 where a sum cancels to about 0; README, "Subgroup overrides").

    ``caught_up``: the override's pending mark (:func:`derive_touched`). The bookkeeping of the
    finished derive goes in the same transaction as its rows: the patient no longer touched, the
    mark cleared and the data version bumped with the rows gained (``data_version`` in the
    summary). So on SQLite no later commit copies the log the derive wrote into the database file
    (:func:`core.store.db.begin_interactive` has that done on a thread): separate commits did, at
    0.09 s each at 100,000 patients.
    """
    from core.derive.cells import patient_cells
    from core.derive.measures import read_columns
    from core.derive.page_aggregates import replace_patient_rows_of
    from core.derive.risk import DEFAULT_MODEL
    from core.derive.subgroups.assign import (
        ASSIGNMENT_COLUMNS,
        _block_assignments,
        save_thresholds,
        stored_thresholds,
        thresholds_of,
    )
    from core.derive.subgroups.evaluate import thresholds_from_counts, top_fractions
    from core.derive.subgroups.frames import Run, insert_frame
    from core.derive.subgroups.overrides import active_overrides, apply_overrides
    from core.derive.subgroups.rules import active_rules_path, load_rules
    from core.store.months import month_end

    t0 = time.perf_counter()
    rules = rules or load_rules(active_rules_path())
    parts: dict[str, float] = {}
    S = SubgroupAssignment
    with engine.connect() as conn:
        months = _attributed_span(conn)
        years = tuple(sorted({m.year for m in months}))
        run = Run(None, years, pd.Timestamp(months[0]), pd.Timestamp(month_end(months[-1])), DEFAULT_MODEL)  # as run_of
        month_range = _stored_range(conn)
        fractions = top_fractions(rules)
        thresholds, kept = {}, True
        if fractions:
            mine = _stored_months(conn, [patient])
            thresholds = thresholds_of(stored_thresholds(conn), fractions, mine)
            if thresholds is None:  # a store derived before the thresholds were kept: count every score once
                thresholds, kept = thresholds_from_counts(_norm(_stored_counts(conn)), fractions), False
        # the stored risk scores: an override changes no data, so none can have moved (0.09 s of scoring saved)
        result, _risk = _block_assignments(conn, run, [patient], month_range, rules, thresholds, stored_risk=True)
        result = apply_overrides(result, active_overrides(conn, patient))
    before = read_columns(engine, [S.patient_id, S.month, S.subgroup, S.risk_score], ["month"], [patient])
    t1 = time.perf_counter()
    parts["subgroups"] = t1 - t0
    after = result[["patient_id", "month", "subgroup", "risk_score"]]
    # the cells of the months whose assignment changed (the others' cells are the same rows summed by the same code)
    old, new = patient_cells(engine, months, [patient], [before, after], only_months=_changed_months(before, after))
    was, now = _cell_difference(old, new)
    t2 = time.perf_counter()
    parts["cells"] = t2 - t1
    a = S.__table__
    with begin_interactive(engine) as conn:  # SQLite: the log's pages copied on a thread after the commit
        team_before = _team_activity_of(conn, patient)
        conn.execute(delete(a).where(a.c.patient_id == patient))
        insert_frame(conn, a, result[ASSIGNMENT_COLUMNS])
        team_rows, team_gained = _apply_team_activity(conn, team_before, _team_activity_of(conn, patient))
        replace_patient_rows_of(conn, [patient])  # the review's moves and costliest (core.derive.page_aggregates)
        cell_rows = _apply_cells(conn, was, now)
        if not kept:
            save_thresholds(conn, thresholds)
        # rows gained per counted table (core.store.queries.bump_data_version carries the counts over)
        row_changes = {"subgroup_assignment": len(result) - len(before), "team_month_activity": team_gained,
                       "cell": cell_rows["inserted"] - cell_rows["deleted"]}  # fmt: skip
        _clear_touched(conn, [patient])
        version = bump_data_version(conn, derived=caught_up, row_changes=row_changes)
    parts["write"] = time.perf_counter() - t2
    return {
        "mode": "override",
        "patients": 1,
        "subgroups": {"rows": len(result), "overridden": int(result["overridden"].sum())},
        "activity": {"team_rows": team_rows},
        "cells": cell_rows,
        "parts": {k: round(v, 2) for k, v in parts.items()},
        "data_version": version,
    }


def _changed_months(before: pd.DataFrame, after: pd.DataFrame) -> list[date]:
    """The months of two assignment sets of one patient (month, subgroup, risk_score) that differ:
    in one set only, or with another subgroup or risk score."""
    key = ["month", "subgroup", "risk_score"]
    frames = [pd.DataFrame({"month": pd.to_datetime(f["month"]).dt.date, "subgroup": f["subgroup"].astype(str),
                            "risk_score": pd.to_numeric(f["risk_score"], errors="coerce").astype("float64")})
              for f in (before, after)]  # fmt: skip
    both = frames[0].merge(frames[1], on=key, how="outer", indicator=True)  # NaN scores match each other in a merge
    return sorted(set(both.loc[both["_merge"] != "both", "month"]))


CELL_KEYS = ["practice_id", "team_id", "subgroup", "month", "stratum", "stratum_value", "metric"]
CELL_VALUES = ["numerator", "denominator", "sum_sq", "patients"]
# PostgreSQL array types of the cell columns (core.store.models.Cell)
_CELL_ARRAY_TYPES = dict.fromkeys(CELL_KEYS, "text[]") | {"month": "date[]", "numerator": "float8[]", "denominator": "float8[]",
                                                          "sum_sq": "float8[]", "patients": "int8[]"}  # fmt: skip


def _unnest_cells(types: dict[str, str], ordinality: bool = False) -> tuple[str, str]:
    """PostgreSQL: the rows of cell columns given as one array parameter each (``types``: name ->
    array type, the cell key's columns among them) as ``unnest(...) AS v`` (with ``v.ord``, the
    position from 1, when ``ordinality``), and the condition matching them to ``cell AS c`` by the key."""
    arrays = ", ".join(f"%({n})s::{t}" for n, t in types.items())
    names = ", ".join([*types, *(["ord"] if ordinality else [])])
    rows = f"unnest({arrays}){' WITH ORDINALITY' if ordinality else ''} AS v({names})"
    return rows, " AND ".join(f"c.{k} = v.{k}" for k in CELL_KEYS)


def _cell_difference(old: pd.DataFrame, new: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The patient's cells before and after (index: the cell key; 0 where absent), on the keys
    where they differ only (the months whose subgroup did not change cancel out exactly: the same
    rows summed by the same code)."""
    frames = [f.set_index(CELL_KEYS)[CELL_VALUES].astype({"patients": "int64"}) for f in (old, new)]
    keys = frames[0].index.union(frames[1].index)
    was, now = (f.reindex(keys, fill_value=0) for f in frames)
    differ = (was.to_numpy() != now.to_numpy()).any(axis=1)
    return was[differ], now[differ]


def _stored_cells(conn, keys: pd.MultiIndex) -> pd.DataFrame:
    """The stored cells of the practice x team x subgroup x months of ``keys`` (index: the cell key)."""
    c = Cell.__table__.c
    frames = []
    for (practice_id, team_id), part in keys.to_frame(index=False).groupby(["practice_id", "team_id"]):
        # every column an IN list of the few values the patient's cells have: primary-key lookups
        # of their combinations (a superset of the keys, cut to them by the caller)
        stmt = select(*(c[k] for k in CELL_KEYS + CELL_VALUES)).where(
            c.practice_id == practice_id, c.team_id == team_id,
            *(c[k].in_(sorted(set(part[k]))) for k in ("subgroup", "month", "stratum", "stratum_value")))  # fmt: skip
        frames.append(pd.DataFrame([tuple(r) for r in conn.execute(stmt)], columns=CELL_KEYS + CELL_VALUES))  # tuples: quicker
    stored = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CELL_KEYS + CELL_VALUES)
    stored["month"] = pd.to_datetime(stored["month"]).dt.date
    return stored.set_index(CELL_KEYS)


def _apply_cells(conn, was: pd.DataFrame, now: pd.DataFrame) -> dict:
    """Stored - ``was`` + ``now`` for every cell key of ``was`` and ``now``, in the caller's
    transaction: changed cells rewritten, new ones inserted, those left without a patient deleted.
    Raises :class:`StaleCells` (the caller's transaction then writes nothing) when the stored cells
    do not hold the patient's contribution."""
    from core.derive.subgroups.frames import insert_frame

    if not len(was):
        return {"changed": 0, "inserted": 0, "deleted": 0}
    add = _add_difference_arrays if conn.dialect.name == "postgresql" else _add_difference
    present, patients = add(conn, was, now)
    if (patients[present] < 0).any() or (~present & (was["patients"].to_numpy() > 0)).any():
        raise StaleCells("the stored cells do not hold the patient's contribution")
    emptied = was.index[present & (patients == 0)]
    if len(emptied):  # a cell left without a patient is deleted (the full derive writes none)
        _execute_keyed(conn, emptied, {})
    # a cell that was not stored had nothing of the patient's (else stale above): stored 0 - 0 + now
    rows = now[~present & (now["patients"].to_numpy() > 0)].reset_index()
    if len(rows):
        rows["month"] = pd.to_datetime(rows["month"])
        insert_frame(conn, Cell.__table__, rows[CELL_KEYS + CELL_VALUES].sort_values(CELL_KEYS))
    return {"changed": int((present & (patients > 0)).sum()), "inserted": len(rows), "deleted": len(emptied)}


def _add_difference(conn, was: pd.DataFrame, now: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_apply_cells`' arithmetic in Python: the stored cells of the keys read, and those
    left with a patient rewritten to stored - ``was`` + ``now``. Returns, per key, whether it was
    stored and its patients after (0 where it was not)."""
    stored = _stored_cells(conn, was.index)
    stored = stored[stored.index.isin(was.index)]
    present = was.index.isin(stored.index)
    base = stored.reindex(was.index).fillna(0)
    out = base[CELL_VALUES[:3]].astype("float64") - was[CELL_VALUES[:3]] + now[CELL_VALUES[:3]]
    out["patients"] = base["patients"].astype("int64") - was["patients"] + now["patients"]
    patients = out["patients"].to_numpy()
    changed = present & (patients > 0)
    if changed.any():  # the stored rows rewritten in place, one primary-key lookup each
        part = out[changed]
        _execute_keyed(conn, part.index, {c: part[c].tolist() for c in CELL_VALUES})
    return present, np.where(present, patients, 0)


def _add_difference_arrays(conn, was: pd.DataFrame, now: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_add_difference` on PostgreSQL, in one statement: ``UPDATE ... SET x = x - was + now
    FROM unnest(...) RETURNING`` the key's position and its patients after. The same float8
    arithmetic in the same order as the Python path, without reading the cells first (0.08-0.27 s
    of an override at 100,000 patients). A cell emptied is rewritten to 0 patients here and
    deleted by the caller."""
    types = {k: _CELL_ARRAY_TYPES[k] for k in CELL_KEYS}
    types |= {f"{side}_{c}": _CELL_ARRAY_TYPES[c] for side in ("was", "now") for c in CELL_VALUES}
    rows, match = _unnest_cells(types, ordinality=True)
    sets = ", ".join(f"{c} = c.{c} - v.was_{c} + v.now_{c}" for c in CELL_VALUES)
    sql = f"UPDATE {Cell.__tablename__} AS c SET {sets} FROM {rows} WHERE {match} RETURNING v.ord, c.patients"
    params = {k: list(was.index.get_level_values(i)) for i, k in enumerate(CELL_KEYS)}
    for side, frame in (("was", was), ("now", now)):
        for c in CELL_VALUES:
            params[f"{side}_{c}"] = frame[c].to_numpy(dtype="int64" if c == "patients" else "float64").tolist()
    present = np.zeros(len(was), dtype=bool)
    patients = np.zeros(len(was), dtype="int64")
    for ordinal, after in conn.exec_driver_sql(sql, params):
        present[ordinal - 1] = True
        patients[ordinal - 1] = after
    return present, patients


def _execute_keyed(conn, keys: pd.MultiIndex, values: dict[str, list]) -> None:
    """The cells of ``keys`` (their primary keys) set to ``values`` (value column -> one value per
    key), or deleted when ``values`` is empty. A delete on PostgreSQL: one ``DELETE ... USING
    unnest(...)`` of the keys given as arrays. SQLite: the driver's executemany of one statement
    per cell (compiled once, plain tuples, dates as the ISO text SQLAlchemy stores). (PostgreSQL
    rewrites its cells in :func:`_add_difference_arrays`.)"""
    columns = {k: list(keys.get_level_values(i)) for i, k in enumerate(CELL_KEYS)}
    if conn.dialect.name == "postgresql" and not values:
        rows, match = _unnest_cells({k: _CELL_ARRAY_TYPES[k] for k in CELL_KEYS})
        conn.exec_driver_sql(f"DELETE FROM {Cell.__tablename__} AS c USING {rows} WHERE {match}", columns)
        return
    table = Cell.__table__
    by_key = [table.c[k] == bindparam(f"k_{k}") for k in CELL_KEYS]
    if values:
        stmt = update(table).where(*by_key).values({c: bindparam(f"v_{c}") for c in values})
    else:
        stmt = delete(table).where(*by_key)
    params = {f"k_{k}": v for k, v in columns.items()} | {f"v_{c}": v for c, v in values.items()}
    if conn.dialect.name == "sqlite":
        params["k_month"] = [m.isoformat()[:10] for m in params["k_month"]]
        compiled = stmt.compile(dialect=conn.dialect)
        conn.exec_driver_sql(str(compiled), list(zip(*(params[name] for name in compiled.positiontup), strict=True)))
        return
    conn.execute(stmt, [dict(zip(params, row, strict=True)) for row in zip(*params.values(), strict=True)])


def _team_activity_of(conn, patient: str) -> pd.Series:
    """The patient's share of ``team_month_activity`` under the stored assignments (index month,
    team_id, subgroup, kind; activities)."""
    from core.derive.activity import select_team_month_activity

    stmt = select_team_month_activity(conn.dialect.name).where(Attribution.patient_id == patient)
    rows = conn.execute(stmt).all()
    index = pd.MultiIndex.from_tuples([tuple(r[:4]) for r in rows], names=["month", "team_id", "subgroup", "kind"])
    return pd.Series([int(r[4]) for r in rows], index=index, dtype="int64")


def _apply_team_activity(conn, before: pd.Series, after: pd.Series) -> tuple[int, int]:
    """``team_month_activity`` rows less ``before``, plus ``after`` (rows at 0 deleted); returns the
    rows changed and the rows gained (inserted less deleted)."""
    from core.store.models import TeamMonthActivity

    delta = after.sub(before, fill_value=0).astype("int64")
    delta = delta[delta != 0]
    t = TeamMonthActivity.__table__
    gained = 0
    for (month, team_id, subgroup, kind), change in delta.items():
        where = [t.c.month == month, t.c.team_id == team_id, t.c.subgroup == subgroup, t.c.kind == kind]
        stored = conn.execute(select(t.c.activities).where(*where)).scalar_one_or_none()
        total = (stored or 0) + int(change)
        if total < 0 or (stored is None and change < 0):
            raise StaleCells("team_month_activity does not hold the patient's activities")
        if stored is None:
            conn.execute(t.insert().values(month=month, team_id=team_id, subgroup=subgroup, kind=kind, activities=total))
            gained += 1
        elif total == 0:
            conn.execute(delete(t).where(*where))
            gained -= 1
        else:
            conn.execute(t.update().where(*where).values(activities=total))
    return len(delta), gained

"""Subgroup assignment against the store: read a block of patients' rows, write assignments.

A block is an inclusive range of ``patient_id`` (:func:`core.derive.blocks.patient_blocks`);
every query of a block is a range scan of a patient_id-leading index. Reads and writes skip
SQLAlchemy's per-row processing, which is most of the time for millions of rows.
"""

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy import String, func, insert, select, type_coerce, union_all

from core.derive.risk import risk_scores
from core.derive.subgroups.inputs import ACUTE_KINDS, LAB_CODES, LOOKBACK_MONTHS
from core.store.db import copy_rows
from core.store.models import Attribution, Condition, Encounter, Measurement, Patient, RiskScore
from core.store.months import add_months, month_end

BLOCK_TABLES = ("attribution", "patients", "conditions", "measurements", "encounters", "first_records", "enrolment")


@dataclass(frozen=True)
class Run:
    """What every block of one run shares (plain values: it is sent to the worker processes)."""

    months: list[date] | None  # the months asked for (None: every attributed month)
    years: tuple[int, ...]  # calendar years of the attributed months (a risk score for each)
    first: pd.Timestamp  # first attributed month
    last: pd.Timestamp  # last day of the last attributed month
    model: str
    # the first month whose inputs are computed (the derive of new months): the measurement and
    # encounter windows and the enrolment history are read back from it, not from ``first``
    reads_from: pd.Timestamp | None = None


def _months_clause(column, months: list[date] | None):
    return [] if months is None else [column.in_(months)]


def _patients_clause(column, patients: tuple[str, str] | list[str] | None):
    """Every patient (None), an inclusive id range (a pair) or a list of ids."""
    if isinstance(patients, list):
        return [column.in_(patients)]
    return [] if patients is None else [column >= patients[0], column <= patients[1]]


def _as_text(column):
    """Select a date column without SQLAlchemy's per-row date processing (parsed in bulk below)."""
    return type_coerce(column, String).label(column.key)


def _read(conn, stmt, date_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """A select's rows as a frame, straight from the driver's tuples.

    Selects plain text, numbers and dates (as text) only: SQLAlchemy's per-row result processing
    (a few microseconds a row) is skipped, which is most of the read time for millions of rows.
    """
    result = conn.execute(stmt)
    columns = list(result.keys())
    rows = result.cursor.fetchall()
    result.close()
    frame = pd.DataFrame.from_records(rows, columns=columns, coerce_float=True)
    for column in date_columns:
        frame[column] = pd.to_datetime(frame[column], format="ISO8601")
    return frame


def run_of(conn, months: list[date] | None, model: str) -> Run | None:
    """The run over ``months`` (all when None), or None when no patient is attributed in them."""
    a = Attribution
    found = [m for (m,) in conn.execute(select(a.month).where(*_months_clause(a.month, months)).distinct())]
    if not found:
        return None
    first, last = pd.Timestamp(min(found)), pd.Timestamp(month_end(max(found)))
    return Run(months, tuple(sorted({m.year for m in found})), first, last, model)


def load_frames(
    conn, run: Run, patients: tuple[str, str] | None = None, tables: tuple[str, ...] = BLOCK_TABLES, history_lookback: int = 6
) -> dict[str, pd.DataFrame]:
    """Read what the subgroup inputs of ``run`` need, for the patients whose id is in the inclusive
    range ``patients`` (all when None): the frames of
    :func:`core.derive.subgroups.inputs.compute_inputs` named in ``tables``.

    Dates come back as datetime64 columns. The date windows are the run's, whatever the block
    (from ``run.reads_from`` when set, but the conditions').
    Two more frames can be asked for, for the history of the patient-months: ``first_records``
    (patient_id, first_date: the patient's first encounter, condition onset or measurement) and
    ``enrolment`` (patient_id, month: the attribution of the ``history_lookback`` months ending
    with each month of the run).
    """
    a, p, c, m, e = Attribution, Patient, Condition, Measurement, Encounter
    window_start = add_months(run.first.date(), -(LOOKBACK_MONTHS - 1))
    # conditions: the run's whole window (risk score: prior calendar year; a reason names the
    # smallest code of a condition group over the whole period); the 12-month windows of the labs
    # and acute events, and the enrolment history, from the first month computed
    lookback_start = min(window_start, date(run.first.year - 1, 1, 1))
    reads_from = (run.reads_from or run.first).date()
    window_start = max(window_start, add_months(reads_from, -(LOOKBACK_MONTHS - 1)))
    last = run.last.date()
    queries = {
        "attribution": (
            select(a.patient_id, _as_text(a.month), a.team_id).where(
                *_months_clause(a.month, run.months), *_patients_clause(a.patient_id, patients)
            ),
            ("month",),
        ),
        "conditions": (
            select(c.patient_id, c.code, _as_text(c.onset_date), _as_text(c.resolved_date)).where(
                *_patients_clause(c.patient_id, patients),
                c.onset_date <= last,
                (c.resolved_date.is_(None)) | (c.resolved_date >= lookback_start),
            ),
            ("onset_date", "resolved_date"),
        ),
        "measurements": (
            select(m.patient_id, _as_text(m.measured_date), m.code, m.value).where(
                *_patients_clause(m.patient_id, patients),
                m.code.in_(list(LAB_CODES.values())),
                m.measured_date >= window_start,
                m.measured_date <= last,
            ),
            ("measured_date",),
        ),
        "encounters": (
            select(e.patient_id, e.kind, _as_text(e.start_date)).where(
                *_patients_clause(e.patient_id, patients),
                e.kind.in_(list(ACUTE_KINDS)),
                e.start_date >= window_start,
                e.start_date <= last,
            ),
            ("start_date",),
        ),
    }
    history_start = add_months(max(run.first.date(), reads_from), -(history_lookback - 1))
    # a patient's first encounter: the first entry of the (patient_id, start_date) index, where a
    # group-by reads every encounter of the block (25,000 patients: 0.07 s against 0.28 s). None
    # for a patient without one, dropped after the read: a filter on it in SQL made PostgreSQL
    # look each patient up twice (25,000 patients: 0.19 -> 0.11 s)
    first_visit = select(func.min(e.start_date)).where(e.patient_id == p.patient_id).scalar_subquery()
    firsts = union_all(
        select(p.patient_id, type_coerce(first_visit, String).label("first_date")).where(*_patients_clause(p.patient_id, patients)),
        select(c.patient_id, type_coerce(func.min(c.onset_date), String).label("first_date"))
        .where(*_patients_clause(c.patient_id, patients)).group_by(c.patient_id),
        select(m.patient_id, type_coerce(func.min(m.measured_date), String).label("first_date"))
        .where(*_patients_clause(m.patient_id, patients)).group_by(m.patient_id),
    )  # fmt: skip
    queries["first_records"] = (firsts, ("first_date",))
    queries["enrolment"] = (
        select(a.patient_id, _as_text(a.month)).where(
            *_patients_clause(a.patient_id, patients), a.month >= history_start, a.month <= last
        ),
        ("month",),
    )
    frames = {}
    for name in tables:
        if name == "enrolment" and run.months is None and "attribution" in frames:
            frames[name] = frames["attribution"][["patient_id", "month"]]  # every attributed month is there already
        elif name == "first_records":
            rows = _read(conn, *queries[name])
            rows = rows[rows["first_date"].notna()]
            frames[name] = rows.groupby("patient_id", as_index=False)["first_date"].min()
        elif name == "patients":  # one row a patient: SQLAlchemy's processing keeps dual_status a bool
            stmt = select(p.patient_id, _as_text(p.birth_date), p.sex, p.dual_status, _as_text(p.death_date))
            frames[name] = pd.read_sql(stmt.where(*_patients_clause(p.patient_id, patients)), conn)
            for column in ("birth_date", "death_date"):
                frames[name][column] = pd.to_datetime(frames[name][column], format="ISO8601")
        else:
            frames[name] = _read(conn, *queries[name])
    return frames


def risk_for(frames: dict, years: tuple[int, ...], model: str) -> pd.DataFrame:
    """CMS-HCC scores (:func:`core.derive.risk.risk_scores`) of the attributed patients of
    :func:`load_frames` frames, for each of ``years``. Grain: patient_id, year."""
    ids = pd.Index(pd.unique(frames["attribution"]["patient_id"].to_numpy(dtype=object)))
    attributed = frames["patients"][ids.get_indexer(frames["patients"]["patient_id"].to_numpy(dtype=object)) >= 0]
    parts = [risk_scores(attributed, frames["conditions"], y, model) for y in years]
    return (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["patient_id", "year", "model", "score", "chronic_score", "hccs"])
    )


def stored_risk_for(conn, frames: dict, run: Run, patients: tuple[str, str] | list[str] | None) -> pd.DataFrame:
    """:func:`risk_for` from the stored scores of ``run.model``: the attributed patients of the
    :func:`load_frames` frames with a stored score in each of ``run.years`` get those rows, the
    others (new to the store, or without a score: unknown sex) are scored.

    Only where no change can have moved a score of those years (the derive of new months decides,
    as for :func:`core.derive.subgroups.assign.stored_scores`). 100,000 patients, one new month:
    0.09 s a block of 25,000 patients against 0.29 s for the CMS-HCC model. Membership is tested
    on sets of Python strings: ``isin`` on the str columns took most of the time.
    """
    r = RiskScore
    stmt = select(r.patient_id, r.year, r.model, r.score, r.chronic_score, r.hccs).where(
        *_patients_clause(r.patient_id, patients), r.year.in_(list(run.years)), r.model == run.model)  # fmt: skip
    stored = _read(conn, stmt)
    attributed = set(frames["attribution"]["patient_id"].to_numpy(dtype=object))
    years = stored.groupby("patient_id", sort=False)["year"].nunique()
    complete = attributed.intersection(years.index[years.to_numpy() == len(run.years)].to_numpy(dtype=object))
    stored = _of_patients(stored, complete)
    missing = attributed - complete
    if not missing:
        return stored.reset_index(drop=True)
    own = {name: _of_patients(frames[name], missing) for name in ("attribution", "patients", "conditions")}
    return pd.concat([stored, risk_for(own, run.years, run.model)], ignore_index=True)


def _of_patients(frame: pd.DataFrame, patients: set) -> pd.DataFrame:
    """The rows of ``frame`` whose ``patient_id`` is in ``patients`` (a set of Python strings)."""
    ids = frame["patient_id"].to_numpy(dtype=object)
    return frame[np.fromiter((p in patients for p in ids), bool, len(ids))]


def insert_frame(conn, table, frame: pd.DataFrame, chunk: int = 100_000) -> None:
    """Insert a frame's rows: ``COPY`` on PostgreSQL, else bound parameters in chunks.

    On SQLite the compiled INSERT goes straight to the driver's executemany with plain tuples
    (dates as ISO text, as SQLAlchemy stores them), which is several times faster than the
    per-row parameter processing of Core for millions of rows.
    """
    columns = list(frame.columns)
    sqlite = conn.dialect.name == "sqlite"
    values = [_driver_values(frame[name], sqlite) for name in columns]
    if conn.dialect.name == "postgresql":
        copy_rows(conn, table.name, columns, zip(*values, strict=True))
        return
    if sqlite:
        compiled = insert(table).compile(dialect=conn.dialect, column_keys=columns)
        order = [columns.index(k) for k in compiled.positiontup]
        rows = list(zip(*(values[i] for i in order), strict=True))
        for start in range(0, len(rows), chunk):
            conn.exec_driver_sql(str(compiled), rows[start : start + chunk])
        return
    for start in range(0, len(frame), chunk):
        part = [v[start : start + chunk] for v in values]
        conn.execute(insert(table), [dict(zip(columns, row, strict=True)) for row in zip(*part, strict=True)])


def _driver_values(col: pd.Series, sqlite: bool) -> np.ndarray:
    """A column as the driver's Python values, None when missing.

    Dates (ISO text on SQLite, ``date`` elsewhere) and Arrow-backed text are converted once per
    distinct value: a block repeats each month and patient id many times.
    """
    is_date = pd.api.types.is_datetime64_any_dtype(col)
    if is_date or isinstance(col.dtype, pd.StringDtype):
        codes, uniques = pd.factorize(col)
        if is_date:
            uniques = uniques.strftime("%Y-%m-%d") if sqlite else uniques.date
        return np.append(np.asarray(uniques, dtype=object), None)[codes]  # code -1 (missing) takes None
    arr = col.to_numpy(dtype=object)
    return np.where(pd.isna(arr), None, arr) if col.hasnans else arr

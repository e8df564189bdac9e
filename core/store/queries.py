"""Read queries the pages and the CLI share: data status, organisation, panels, patients.

Every function takes the engine and returns a new DataFrame or dict. Functions that return
patient rows take ``team_ids`` (the caller's scope) and filter in SQL; ``None`` means the
whole network (for callers already allowed to see it).
"""

import json
import re
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy import ARRAY, Boolean, Connection, Date, Engine, any_, bindparam, func, or_, select, text
from sqlmodel import Session

from core.store.models import (
    AppSetting,
    Attribution,
    AuditEvent,
    Cell,
    Condition,
    Encounter,
    ImportRun,
    Measurement,
    Medication,
    Patient,
    PatientMonthActivity,
    Practice,
    RiskScore,
    Staff,
    StaffMinutes,
    SubgroupAssignment,
    SubgroupOverride,
    Team,
    TeamMonthActivity,
    User,
    utc_now,
)
from core.store.months import add_months, month_end, month_start_sql


def among(column, values: list[str], dialect: str):
    """``column IN values`` for a long list, as one bound parameter: SQLAlchemy's expanding ``IN``
    renders a placeholder and a named parameter a value, 22 ms a chunk of 10,000 on SQLite (0.9 s
    of a month's import at 100,000 patients). On SQLite a JSON array that ``json_each`` reads (the
    index of ``column`` is searched once a value, as for a plain ``IN``); on PostgreSQL
    ``column = ANY(array)`` (the 160,000 encounter ids of a month's import in chunks of 10,000:
    0.25 s against 1.1 s); elsewhere a plain ``IN``."""
    if dialect == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    if dialect != "sqlite":
        return column.in_(values)
    return column.in_(select(func.json_each(json.dumps(list(values))).table_valued("value").c.value))


def patient_hashes(patient_ids) -> np.ndarray:
    """A 64-bit hash (uint64) of each patient id (pandas' ``hash_array``, stable across processes
    and versions of the data): how an import's patients are kept (``import_patient``) and found
    again by the derive."""
    return pd.util.hash_array(np.asarray(patient_ids, dtype=object).astype(str).astype(object))


COUNTED_TABLES = (
    Practice, Team, Staff, Patient, Attribution, Condition, Encounter, StaffMinutes,
    Measurement, Medication, SubgroupAssignment, SubgroupOverride, RiskScore, PatientMonthActivity, TeamMonthActivity, Cell,
    ImportRun, User, AuditEvent,
)  # fmt: skip

DATA_VERSION_KEY = "data_version"
TABLE_COUNTS_KEY = "table_counts"
# Set when data change (an import commits, a derive starts) and cleared when the derive that
# follows has finished: while it is set, subgroups and cells may not match the imported rows.
DERIVE_PENDING_KEY = "derive_pending"
# Tables written by the people using the app between data versions: always counted live.
LIVE_TABLES = (SubgroupOverride, ImportRun, User, AuditEvent)


def read_frame(engine: Engine, statement) -> pd.DataFrame:
    """Run a SQLAlchemy select and return its rows as a DataFrame.

    Rows are turned into plain tuples first: building a frame from SQLAlchemy ``Row`` objects
    is several times slower for large results.
    """
    with engine.connect() as conn:
        result = conn.execute(statement)
        columns = list(result.keys())
        rows = [tuple(r) for r in result.fetchall()]
    return pd.DataFrame.from_records(rows, columns=columns)


def on_distinct(values: pd.Series, convert, missing=None, dtype=object) -> np.ndarray:
    """``convert`` applied to the distinct values of ``values`` only, spread back to every row:
    ``convert`` takes an array of the distinct non-missing values and returns one result each (in
    ``dtype``); a missing value gives ``missing``. For columns of few values repeated many times
    (ids and months over millions of rows, a few hundred codes, a driver's date strings)."""
    codes, uniques = pd.factorize(values)
    results = np.empty(len(uniques) + 1, dtype=dtype)
    if len(uniques):
        results[:-1] = convert(np.asarray(uniques))
    results[-1] = missing
    return results[codes]  # code -1 (missing): the last


def read_sql_frame(engine: Engine, statement) -> pd.DataFrame:
    """``pandas.read_sql(statement)``'s frame (the same columns, dtypes and values), built from the
    driver's tuples: SQLAlchemy's processing of a boolean or date column (the only ones that have
    any on these selects, on SQLite; psycopg gives them typed and needs none) runs once per
    distinct value instead of once per row, and pandas gets plain tuples instead of result rows.
    With any other processing the rows are SQLAlchemy's, as ``read_sql`` reads them. A
    25,000-patient block of the 1,000,000-patient network: its 963,053 encounters with their
    costing columns in 2.6 s against 3.9 s on SQLite; on PostgreSQL a quarter of the
    100,000-patient network's (977,904) in 1.7-1.9 s against 2.8-3.8 s."""
    types = [column.type for column in statement.selected_columns]
    with engine.connect() as conn:
        result = conn.execute(statement)
        # a type's processing can depend on the column's type in the result (psycopg: a float's)
        codes = [column[1] for column in result.cursor.description]
        processors = [t.dialect_impl(conn.dialect).result_processor(conn.dialect, code) for t, code in zip(types, codes, strict=True)]
        if any(p is not None and not isinstance(t, Boolean | Date) for p, t in zip(processors, types, strict=True)):
            # read_sql's own frame, from the rows SQLAlchemy processes (the query is not run again)
            return pd.DataFrame.from_records(result.all(), columns=list(result.keys()), coerce_float=True)
        frame = pd.DataFrame.from_records(result.cursor.fetchall(), columns=list(result.keys()), coerce_float=True)
        result.close()
    for name, process, sql_type in zip(frame.columns, processors, types, strict=True):
        if process is None or not len(frame):
            continue
        values = on_distinct(frame[name], lambda distinct, process=process: [process(v) for v in distinct.tolist()])
        frame[name] = values.astype(bool) if isinstance(sql_type, Boolean) and not frame[name].isna().any() else values
    return frame


def encounters_in_table_order(conn, stmt) -> str:
    """``stmt`` (an INSERT or SELECT that reads every encounter) as SQL text for the connection's
    database, on SQLite with the encounters read ``NOT INDEXED``.

    Left to itself SQLite's planner walks every encounter through the (start_date, kind) index
    when the query joins or groups, and fetches each row from the table at random: 3 to 10 times
    slower than reading the table in its own order (``team_month_activity``: 67 s against 7 s at
    100,000 patients; the claims by network 20 s against 6.3 s). A query bounded by date keeps the
    index (do not use this for those)."""
    sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    if conn.dialect.name == "sqlite":
        sql = re.sub(r"\bFROM encounter\b(?! NOT INDEXED)", "FROM encounter NOT INDEXED", sql)
    return sql


def open_sqlite_transaction(conn) -> None:
    """Open the SQLite transaction of ``conn`` now if it is not open yet. Python's sqlite3 begins
    one at the first INSERT, UPDATE or DELETE only: DDL before it (a dropped index) would be
    committed on its own, and stay dropped when the transaction then fails. PostgreSQL: nothing
    to do (its transaction holds DDL from the first statement)."""
    if conn.dialect.name == "sqlite" and not conn.connection.dbapi_connection.in_transaction:
        conn.exec_driver_sql("BEGIN")


def drop_secondary_indexes(conn, table, primary_key: bool = False) -> list:
    """In the caller's transaction: drop ``table``'s secondary indexes for a write of every row,
    and return them for :func:`create_indexes` after the write. Kept up row by row, an index the
    rows reach in another order than its own costs a random B-tree insert each: at 1,000,000
    patients, writing ``patient_month_cost``'s 13 M rows took 274 s with its index and 94 s with
    the index dropped, the rows written, and the index built once (22 s of it). Both are DDL
    inside the transaction on SQLite and PostgreSQL, so a failed write rolls back with its indexes
    (on SQLite once the transaction is open: :func:`open_sqlite_transaction`).

    ``primary_key`` (PostgreSQL; no foreign key may refer to the table): its primary key too, put
    back first by :func:`create_indexes`, which then finds any duplicate the write let in and
    fails the transaction. Kept up during a ``COPY``, the key was about 70 % of the write of a
    block's assignments (BENCHMARKS.md). SQLite cannot drop a table's primary key."""
    open_sqlite_transaction(conn)
    indexes = list(table.indexes)
    for index in indexes:
        index.drop(conn, checkfirst=True)
    if primary_key and conn.dialect.name == "postgresql":
        name = conn.execute(text("SELECT conname FROM pg_constraint WHERE conrelid = CAST(:table AS regclass) "
                                 "AND contype = 'p'"), {"table": table.name}).scalar()  # fmt: skip
        if name is not None:
            quote = conn.dialect.identifier_preparer.quote
            conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} DROP CONSTRAINT {quote(name)}")
            indexes.insert(0, _PrimaryKey(table.name, name, tuple(c.name for c in table.primary_key.columns)))
    return indexes


@dataclass(frozen=True)
class _PrimaryKey:
    """A primary key :func:`drop_secondary_indexes` dropped (PostgreSQL)."""

    table: str
    name: str
    columns: tuple[str, ...]

    def create(self, conn) -> None:
        quote = conn.dialect.identifier_preparer.quote
        conn.exec_driver_sql(f"ALTER TABLE {quote(self.table)} ADD CONSTRAINT {quote(self.name)} "
                             f"PRIMARY KEY ({', '.join(quote(c) for c in self.columns)})")  # fmt: skip


def create_indexes(conn, indexes: list) -> None:
    """Build what :func:`drop_secondary_indexes` dropped (the primary key first), each in one
    pass over the rows."""
    for index in indexes:
        index.create(conn)


def where_selection(stmt, *, practice_id: str | None = None, team_id: str | None = None, subgroup: str | None = None,
                    team_ids: tuple[str, ...] | None = None):
    """Restrict a select over cells to a practice, team, subgroup and the caller's teams (None: no limit)."""
    for column, value in ((Cell.practice_id, practice_id), (Cell.team_id, team_id), (Cell.subgroup, subgroup)):
        if value is not None:
            stmt = stmt.where(column == value)
    if team_ids is not None:
        stmt = stmt.where(Cell.team_id.in_(list(team_ids)))
    return stmt


# --- data version and status ------------------------------------------------------------


def data_version(engine: Engine) -> str:
    """An opaque string that changes whenever imported or derived data change (cache key)."""
    with Session(engine) as session:
        row = session.get(AppSetting, DATA_VERSION_KEY)
        return row.value if row else "0"


def derive_pending(engine: Engine) -> str | None:
    """What the derive has not caught up with: the id of an import whose derive has not finished
    (``"derive"``: a derive that started without an import and did not finish); None when the
    derived tables match the data."""
    with Session(engine) as session:
        row = session.get(AppSetting, DERIVE_PENDING_KEY)
        return row.value if row else None


def mark_derive_pending(engine: Engine, value: str = "derive") -> str:
    """Record that the derived tables are about to change (unless something is pending already);
    returns what is pending."""
    with Session(engine) as session:
        row = session.get(AppSetting, DERIVE_PENDING_KEY)
        if row is not None:
            return row.value
        session.add(AppSetting(key=DERIVE_PENDING_KEY, value=value, updated_at=utc_now()))
        session.commit()
    return value


def bump_data_version(engine: Engine | Connection, derived: str | None = None, row_changes: dict[str, int] | None = None) -> str:
    """Mark the data as changed; returns the new version. ``derived``: the pending mark (see
    :func:`derive_pending`) a derive has just caught up with; it is cleared unless an import
    committed meanwhile (that import's derive is still to come).

    Also counts the rows of the imported and derived tables once, for :func:`data_status` (a
    count of every row of a million-patient store takes seconds; a page should not).
    ``row_changes``: the caller knows what it changed (a subgroup override: rows gained or lost
    per table name, every other table and the attributed months unchanged): the recorded counts
    are carried over with those changes instead of counting every table again (about 1 s at
    100,000 patients), when they are the current version's (else everything is counted).
    ``engine`` may be a connection in a transaction: the version is then written in it, and
    committed with it.
    """
    with Session(engine) as session:
        pending = session.get(AppSetting, DERIVE_PENDING_KEY)
        if pending is not None and derived is not None and pending.value == derived:
            session.delete(pending)
        row = session.get(AppSetting, DATA_VERSION_KEY)
        version = str(int(row.value) + 1 if row else 1)
        last_import = _last_import(session)
        carried = _carried_counts(session, row, last_import, row_changes) if row_changes is not None else None
        counts = {"version": version, "last_import": last_import, **(carried or {
            "counts": _count_rows(session, _data_tables()), "months": [m and m.isoformat() for m in _month_range(session)]})}  # fmt: skip
        session.merge(AppSetting(key=DATA_VERSION_KEY, value=version, updated_at=utc_now()))
        session.merge(AppSetting(key=TABLE_COUNTS_KEY, value=json.dumps(counts), updated_at=utc_now()))
        session.commit()
    return version


def _carried_counts(
    session: Session, version: AppSetting | None, last_import: int | None, row_changes: dict[str, int]
) -> dict | None:
    """The recorded counts and months with ``row_changes`` applied, when they were recorded at the
    current ``version`` and import (the tables then hold what was counted); else None."""
    saved = session.get(AppSetting, TABLE_COUNTS_KEY)
    recorded = json.loads(saved.value) if saved else {}
    names = [m.__tablename__ for m in _data_tables()]
    if (version is None or recorded.get("version") != version.value or recorded.get("last_import") != last_import
            or "months" not in recorded or not all(n in recorded.get("counts", {}) for n in names)):  # fmt: skip
        return None
    counts = {n: int(recorded["counts"][n]) + int(row_changes.get(n, 0)) for n in names}
    return {"counts": counts, "months": recorded["months"]}


def _data_tables() -> tuple:
    return tuple(m for m in COUNTED_TABLES if m not in LIVE_TABLES)


def _count_rows(session: Session, tables) -> dict[str, int]:
    return {m.__tablename__: session.exec(select(func.count()).select_from(m)).one()[0] for m in tables}


def _month_range(session: Session) -> tuple[date | None, date | None]:
    first, last = session.exec(select(func.min(Attribution.month), func.max(Attribution.month))).one()
    return first, last


def _last_import(session: Session) -> int | None:
    return session.exec(select(func.max(ImportRun.import_id))).one()[0]


def table_counts(engine: Engine) -> tuple[dict[str, int], bool, tuple[date | None, date | None]]:
    """Rows per table of :data:`COUNTED_TABLES`, whether the data tables' counts are the ones
    recorded with the current data version (True) or were counted now (False), and the first and
    last attributed month (recorded or read now, likewise).

    The recorded counts are used only while nothing was imported since (an import with
    ``--no-derive`` does not change the version); the tables people write to from the app
    (overrides, imports, users, audit) are always counted now.
    """
    with Session(engine) as session:
        version = session.get(AppSetting, DATA_VERSION_KEY)
        saved = session.get(AppSetting, TABLE_COUNTS_KEY)
        recorded = json.loads(saved.value) if saved else {}
        fresh = (bool(version) and recorded.get("version") == version.value and recorded.get("last_import") == _last_import(session)
                 and all(m.__tablename__ in recorded["counts"] for m in _data_tables()) and "months" in recorded)  # fmt: skip
        data = recorded["counts"] if fresh else _count_rows(session, _data_tables())
        months = tuple(m and date.fromisoformat(m) for m in recorded["months"]) if fresh else _month_range(session)
        live = _count_rows(session, LIVE_TABLES)
    counts = {m.__tablename__: live[m.__tablename__] if m in LIVE_TABLES else data[m.__tablename__] for m in COUNTED_TABLES}
    return counts, fresh, months


def import_origins(engine: Engine) -> list[str]:
    """Origins of the committed imports, sorted: ``sample`` for the first run's own load of the
    sample network, ``real`` for every import of files (``core.access.demo``)."""
    stmt = select(ImportRun.origin).where(ImportRun.status == "committed").distinct()
    with engine.connect() as conn:
        return sorted(o for (o,) in conn.execute(stmt))


def data_status(engine: Engine) -> dict:
    """Rows per table (``counts``; ``counts_recorded``: see :func:`table_counts`), months covered,
    data version and the import origins."""
    counts, recorded, (first, last) = table_counts(engine)
    return {
        "counts": counts,
        "counts_recorded": recorded,
        "first_month": first,
        "last_month": last,
        "data_version": data_version(engine),
        "origins": import_origins(engine),
        "derive_pending": derive_pending(engine),
    }


def import_history(engine: Engine, limit: int = 50) -> pd.DataFrame:
    """The latest imports, newest first."""
    stmt = (
        select(ImportRun.import_id, ImportRun.started_at, ImportRun.finished_at, ImportRun.format,
               ImportRun.origin, ImportRun.status, ImportRun.source)
        .order_by(ImportRun.import_id.desc())
        .limit(limit)
    )  # fmt: skip
    return read_frame(engine, stmt)


def has_patients(engine: Engine) -> bool:
    with Session(engine) as session:
        return session.exec(select(Patient.patient_id).limit(1)).first() is not None


# --- organisation and panels -------------------------------------------------------------


def months_available(engine: Engine) -> list[date]:
    """Months with attributed members, oldest first.

    Read from the member-month cells (an index lookup) once they are built, else from the
    attribution table (a scan of every member-month).
    """
    from_cells = (
        select(Cell.month).where(Cell.metric == "member_months", Cell.stratum == "all").distinct().order_by(Cell.month)
    )
    with engine.connect() as conn:
        months = [m for (m,) in conn.execute(from_cells)]
        return months or [m for (m,) in conn.execute(select(Attribution.month).distinct().order_by(Attribution.month))]


def organisation(engine: Engine) -> pd.DataFrame:
    """Practices and their teams: practice_id, practice, team_id, team, team_subgroup."""
    stmt = (
        select(Practice.practice_id, Practice.name.label("practice"), Team.team_id, Team.name.label("team"),
               Team.subgroup.label("team_subgroup"))
        .join(Team, Team.practice_id == Practice.practice_id)
        .order_by(Practice.practice_id, Team.team_id)
    )  # fmt: skip
    return read_frame(engine, stmt)


def panel_counts(engine: Engine, month: date, team_ids: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Members per practice, team and subgroup in one month.

    Columns: practice_id, team_id, subgroup, members. Grain: practice_id, team_id, subgroup.
    Patients without an assignment yet are counted under subgroup ``unassigned``.
    """
    subgroup = func.coalesce(SubgroupAssignment.subgroup, "unassigned")
    stmt = (
        select(Attribution.practice_id, Attribution.team_id, subgroup.label("subgroup"), func.count().label("members"))
        .outerjoin(
            SubgroupAssignment,
            (SubgroupAssignment.patient_id == Attribution.patient_id) & (SubgroupAssignment.month == Attribution.month),
        )
        .where(Attribution.month == month)
        .group_by(Attribution.practice_id, Attribution.team_id, subgroup)
        .order_by(Attribution.practice_id, Attribution.team_id, subgroup)
    )
    if team_ids is not None:
        stmt = stmt.where(Attribution.team_id.in_(team_ids))
    return read_frame(engine, stmt)


def member_months_by_month(engine: Engine, team_ids: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Member-months per month and subgroup. Columns: month, subgroup, member_months."""
    subgroup = func.coalesce(SubgroupAssignment.subgroup, "unassigned")
    stmt = (
        select(Attribution.month, subgroup.label("subgroup"), func.count().label("member_months"))
        .outerjoin(
            SubgroupAssignment,
            (SubgroupAssignment.patient_id == Attribution.patient_id) & (SubgroupAssignment.month == Attribution.month),
        )
        .group_by(Attribution.month, subgroup)
        .order_by(Attribution.month, subgroup)
    )
    if team_ids is not None:
        stmt = stmt.where(Attribution.team_id.in_(team_ids))
    return read_frame(engine, stmt)


# --- patients (scoped) --------------------------------------------------------------------


def _scoped(stmt, team_ids: tuple[str, ...] | None):
    return stmt if team_ids is None else stmt.where(Attribution.team_id.in_(team_ids))


def team_patients(
    engine: Engine, month: date, team_ids: tuple[str, ...] | None, subgroup: str | None = None
) -> pd.DataFrame:
    """Patients attributed in ``month`` to the teams in scope, with their subgroup and reason.

    Columns: patient_id, name, birth_date, sex, practice_id, team_id, subgroup, reason,
    risk_score, overridden. Grain: patient_id.
    """
    stmt = (
        select(
            Patient.patient_id,
            (Patient.family_name + ", " + Patient.given_name).label("name"),
            Patient.birth_date,
            Patient.sex,
            Attribution.practice_id,
            Attribution.team_id,
            SubgroupAssignment.subgroup,
            SubgroupAssignment.reason,
            SubgroupAssignment.risk_score,
            SubgroupAssignment.overridden,
        )
        .join(Attribution, Attribution.patient_id == Patient.patient_id)
        .outerjoin(
            SubgroupAssignment,
            (SubgroupAssignment.patient_id == Attribution.patient_id) & (SubgroupAssignment.month == Attribution.month),
        )
        .where(Attribution.month == month)
        .order_by(Patient.family_name, Patient.given_name, Patient.patient_id)
    )
    if subgroup is not None:
        stmt = stmt.where(SubgroupAssignment.subgroup == subgroup)
    return read_frame(engine, _scoped(stmt, team_ids))


def latest_month(engine: Engine) -> date | None:
    """The latest month of data (the last month with attributed members), or None."""
    months = months_available(engine)
    return months[-1] if months else None


def patient_in_scope(engine: Engine, patient_id: str, team_ids: tuple[str, ...] | None, grace_months: int = 0) -> bool:
    """Whether the patient is in the care of a team in scope: attributed to one of them in the latest
    month of data, or in one of the ``grace_months`` months before it (``None``: everyone)."""
    stmt = select(Attribution.patient_id).where(Attribution.patient_id == patient_id).limit(1)
    if team_ids is not None:
        latest = latest_month(engine)
        if latest is None:
            return False
        stmt = _scoped(stmt, team_ids).where(Attribution.month >= add_months(latest, -grace_months))
    with engine.connect() as conn:
        return conn.execute(stmt).first() is not None


def patient_record(
    engine: Engine, patient_id: str, team_ids: tuple[str, ...] | None, *, grace_months: int = 0, all_months: bool = False
) -> dict | None:
    """Everything the patient page shows, or None when the patient is out of scope or unknown.

    Scope follows the care relationship (:func:`patient_in_scope`). Unless ``all_months`` (or
    ``team_ids`` is None), the record holds only the months the patient was attributed to a team
    in scope: attribution, subgroups, encounters and measurements of those months; conditions,
    medications and overrides that began by the end of the last of them (the history the team
    took on, nothing from after the patient left it).
    Keys: patient (dict), attribution, subgroups, overrides, conditions, encounters,
    measurements, medications (DataFrames, oldest first).
    """
    if not patient_in_scope(engine, patient_id, team_ids, grace_months):
        return None
    with Session(engine) as session:
        patient = session.get(Patient, patient_id)
        if patient is None:
            return None
        patient_dict = patient.model_dump()
    months = None
    if team_ids is not None and not all_months:
        stmt = _scoped(select(Attribution.month).where(Attribution.patient_id == patient_id), team_ids)
        with engine.connect() as conn:
            months = sorted(m for (m,) in conn.execute(stmt))
    last_day = month_end(months[-1]) if months else None

    def rows(model, order_col, *, in_months=None, began=None):
        stmt = select(*model.__table__.columns).where(model.patient_id == patient_id).order_by(order_col)
        if months is not None and in_months is not None:
            stmt = stmt.where(month_start_sql(engine.dialect.name, in_months).in_(months))
        if months is not None and began is not None:
            stmt = stmt.where(or_(began.is_(None), began <= last_day))
        return read_frame(engine, stmt)

    attribution = select(Attribution.month, Attribution.practice_id, Attribution.team_id, Team.name.label("team"),
                         Attribution.pcp_id, Staff.name.label("pcp"))  # fmt: skip
    attribution = (attribution.join(Team, Team.team_id == Attribution.team_id).outerjoin(Staff, Staff.staff_id == Attribution.pcp_id)
                   .where(Attribution.patient_id == patient_id).order_by(Attribution.month))  # fmt: skip
    subgroups = select(*SubgroupAssignment.__table__.columns).where(SubgroupAssignment.patient_id == patient_id)
    if months is not None:
        attribution = attribution.where(Attribution.month.in_(months))
        subgroups = subgroups.where(SubgroupAssignment.month.in_(months))
    return {
        "patient": patient_dict,
        "attribution": read_frame(engine, attribution),
        "subgroups": read_frame(engine, subgroups.order_by(SubgroupAssignment.month)),
        "overrides": rows(SubgroupOverride, SubgroupOverride.created_at, began=SubgroupOverride.start_month),
        "conditions": rows(Condition, Condition.onset_date, began=Condition.onset_date),
        "encounters": rows(Encounter, Encounter.start_date, in_months=Encounter.start_date),
        "measurements": rows(Measurement, Measurement.measured_date, in_months=Measurement.measured_date),
        "medications": rows(Medication, Medication.start_date, began=Medication.start_date),
    }

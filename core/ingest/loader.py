"""The all-or-nothing loader every importer ends with: typed frames -> upserts in one transaction.

Frames are keyed by table name (``patient``, ``encounter``, ...) and carry model field names as
columns. :func:`load_tables` writes whole frames; :func:`open_load` lets a streaming reader (the
CSV bundle) write one batch at a time into the same single transaction. Rows are upserted
(insert, or update on a key conflict) with SQLAlchemy Core ``executemany`` in batches (on
PostgreSQL, big batches by ``COPY`` into a temporary table and one ``INSERT ... SELECT ... ON
CONFLICT``), tables in foreign-key order, and an ``import_run`` row is written in the same
transaction, with the mark that the derived tables are behind (``derive_pending``, cleared
when the derive after the import finishes) and the import's patients (``import_patient``, as
hashes of their ids: the derive counts how many patients outside the import changed subgroup). Any database error rolls everything back and
becomes an :class:`~core.ingest.report.ImportIssue`, so the store is exactly as it was.
"""

import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
from pydantic_core import PydanticUndefined
from sqlalchemy import Boolean, Column, Date, DateTime, Engine, Float, Integer, MetaData, Table, func, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from core.access.demo import end_demo
from core.derive.incremental import TOUCH_ALL, mark_touched
from core.ingest.report import ImportReport
from core.store import models
from core.store.db import copy_rows
from core.store.queries import DERIVE_PENDING_KEY, patient_hashes

NETWORK_TABLES = ("practice", "team", "staff")  # a change re-derives everything (cost rates, teams)
# The dates of a row of each patient table: the earliest month a row can change is that of its
# earliest date (and of the row it replaces). Other tables with patient rows: every month.
DATED_COLUMNS = {
    "attribution": ("month",),
    "condition": ("onset_date", "resolved_date"),
    "encounter": ("start_date", "end_date"),  # requested and responded dates count in the start month
    "measurement": ("measured_date",),
    "medication": ("start_date", "end_date"),
    "procedure": ("performed_date",),
}
UNDATED_PATIENT_COLUMNS = ("given_name", "family_name")  # a change alters nothing derived
NO_MONTH = date(9999, 1, 1)  # nothing dated changed: no month to re-derive
MAX_TOUCHED_IDS = 100_000  # more touched patients than this: recorded as everything
BATCH_ROWS = 50_000
REBUILD_INDEX_ROWS = 100_000  # SQLite: rebuild secondary indexes after loading at least this many rows
COPY_ROWS = 1_000  # PostgreSQL: batches of at least this many rows go in by COPY + one upsert


def _models_by_table() -> dict[str, type[SQLModel]]:
    found = {}
    for obj in vars(models).values():
        if isinstance(obj, type) and issubclass(obj, SQLModel) and hasattr(obj, "__table__"):
            found[obj.__table__.name] = obj
    return found


def _defaults(model: type[SQLModel]) -> dict[str, object]:
    """Model field defaults (only fields that have one)."""
    out = {}
    for name, info in model.model_fields.items():
        if info.default is not PydanticUndefined:
            out[name] = info.default
        elif info.default_factory is not None:
            out[name] = info.default_factory()
    return out


def _dates(series: pd.Series) -> pd.Series:
    """A date column as datetime64 (accepts datetime64, ``date`` objects or ISO strings)."""
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return series
    return pd.to_datetime(series, errors="raise")


def _python_values(series: pd.Series, column, raw_sqlite: bool) -> list:
    """The column as a list of plain Python values the DB-API accepts (None for missing).

    ``raw_sqlite``: values go straight to the sqlite3 driver, so dates are ISO strings and booleans
    0/1, exactly how SQLAlchemy's SQLite ``Date``/``Boolean`` types store them.
    """
    sa_type = column.type
    if isinstance(sa_type, Date) and not isinstance(sa_type, DateTime):
        series = _dates(series)
        missing = series.isna().to_numpy()
        if raw_sqlite:
            values = np.datetime_as_string(series.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]"), unit="D")
            values = values.astype(object)
        else:
            values = series.dt.date.to_numpy(dtype=object).copy()
        values[missing] = None
        return values.tolist()
    if isinstance(sa_type, DateTime):
        return [None if (v is None or v is pd.NaT) else v for v in series.tolist()]
    if isinstance(sa_type, Boolean):
        cast = int if raw_sqlite else bool
        return [None if v is None else cast(bool(v)) for v in series.to_numpy(dtype=object, na_value=None)]
    if isinstance(sa_type, Float):
        values = pd.to_numeric(series, errors="raise").astype("float64").to_numpy(dtype=object)
        return [None if (v is None or math.isnan(v)) else v for v in values]
    if isinstance(sa_type, Integer):
        return pd.to_numeric(series, errors="raise").astype("Int64").to_numpy(dtype=object, na_value=None).tolist()
    return series.to_numpy(dtype=object, na_value=None).tolist()


def _upsert(table: Table, dialect: str, update_columns: list[str], source: Table | None = None):
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` that only rewrites rows whose values changed.

    ``source``: insert the rows of that table (``INSERT ... SELECT``, same column names) instead
    of bound values.
    """
    ins = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table) if dialect == "sqlite" else None
    if ins is None:
        raise ValueError(f"unsupported database dialect {dialect!r} (SQLite and PostgreSQL are)")
    if source is not None:
        ins = ins.from_select([c.name for c in source.columns], select(*source.columns))
    keys = [c.name for c in table.primary_key.columns]
    if not update_columns:
        return ins.on_conflict_do_nothing(index_elements=keys)
    changed = or_(*[table.c[c].is_distinct_from(ins.excluded[c]) for c in update_columns])
    return ins.on_conflict_do_update(index_elements=keys, set_={c: ins.excluded[c] for c in update_columns}, where=changed)


def _column_names(frame: pd.DataFrame, table: Table, defaults: dict[str, object], report: ImportReport) -> list[str]:
    """The table columns to insert: all but an autoincrement key the frame does not give."""
    unknown = [c for c in frame.columns if c not in table.columns]
    if unknown:
        report.add_warning(table.name, None, None, f"columns not in the {table.name} table were ignored: {', '.join(unknown)}")
    return [
        c.name for c in table.columns
        if c.name in frame.columns or c.name in defaults or not (c.primary_key and c.autoincrement is True)
    ]


def _batch_values(part: pd.DataFrame, table: Table, names: list[str], defaults: dict[str, object], raw_sqlite: bool) -> list[list]:
    """Per-column value lists of one batch, with model defaults for missing columns and blanks."""
    columns = []
    for name in names:
        column = table.c[name]
        if name in part.columns:
            values = _python_values(part[name], column, raw_sqlite)
            if not column.nullable and name in defaults:
                fill = _python_values(pd.Series([defaults[name]]), column, raw_sqlite)[0]
                values = [fill if v is None else v for v in values]
        elif name in defaults:
            values = _python_values(pd.Series([defaults[name]]), column, raw_sqlite) * len(part)
        else:
            values = [None] * len(part)
        columns.append(values)
    return columns


def _count(conn, table: Table) -> int:
    return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _execute_batches(conn, statement, frame: pd.DataFrame, table: Table, names: list[str], defaults: dict[str, object],
                     raw_sqlite: bool) -> None:
    """Convert and run the upsert with ``executemany`` in batches of :data:`BATCH_ROWS` (bounded memory).

    On SQLite the statement is compiled once by SQLAlchemy and its bound parameters are passed
    as tuples straight to the driver (a third of the per-row cost of Core dicts).
    """
    if raw_sqlite:
        compiled = statement.compile(dialect=conn.dialect, column_keys=names)
        order = [names.index(key) for key in compiled.positiontup]
        sql = str(compiled)
    for start in range(0, len(frame), BATCH_ROWS):
        columns = _batch_values(frame.iloc[start : start + BATCH_ROWS], table, names, defaults, raw_sqlite)
        if raw_sqlite:
            conn.exec_driver_sql(sql, list(zip(*(columns[i] for i in order), strict=True)))
        else:
            conn.execute(statement, [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)])


def _copy_upsert(conn, table: Table, frame: pd.DataFrame, names: list[str], update: list[str],
                 defaults: dict[str, object]) -> None:
    """PostgreSQL bulk path: ``COPY`` the rows into a temporary table (psycopg's copy protocol,
    several times faster than ``executemany``), then upsert them all with one
    ``INSERT ... SELECT ... ON CONFLICT``, which keeps the semantics of :func:`_upsert`."""
    temp = Table(f"_load_{table.name}", MetaData(), *[Column(n, table.c[n].type) for n in names],
                 prefixes=["TEMPORARY"], postgresql_on_commit="DROP")
    temp.create(conn)
    quote = conn.dialect.identifier_preparer.quote
    copy_sql = f"COPY {quote(temp.name)} ({', '.join(quote(n) for n in names)}) FROM STDIN"
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(copy_sql) as copy:
        for start in range(0, len(frame), BATCH_ROWS):
            columns = _batch_values(frame.iloc[start : start + BATCH_ROWS], table, names, defaults, raw_sqlite=False)
            for row in zip(*columns, strict=True):
                copy.write_row(row)
    conn.execute(_upsert(table, "postgresql", update, source=temp))
    temp.drop(conn)


def _check_sqlite_foreign_keys(conn, tables: list[Table]) -> None:
    """SQLite loads run with ``foreign_keys=OFF`` (3x faster); check the loaded tables before commit."""
    for table in tables:
        bad = conn.exec_driver_sql(f'PRAGMA foreign_key_check("{table.name}")').fetchall()
        if bad:
            parents = sorted({row[2] for row in bad})
            raise _ForeignKeyViolation(
                f"{len(bad)} {table.name} row(s) refer to rows that do not exist in {', '.join(parents)}"
            )


class _ForeignKeyViolation(Exception):
    pass


class LoadFailed(Exception):
    """The database refused the load; it was rolled back and the error is in the report."""


class Load:
    """One open all-or-nothing load: tables in foreign-key order, each written in batches of rows,
    all in one transaction that :meth:`commit` ends. Leaving :func:`open_load` without a commit
    rolls everything back.

    ``conn`` is the load's connection: readers look rows up through it, inside the transaction
    (on SQLite a second connection could not read while this one writes).
    """

    def __init__(self, conn: Connection, report: ImportReport, started: float, started_at: datetime):
        self.conn = conn
        self.report = report
        self._started, self._started_at = started, started_at
        self._dialect = conn.dialect.name
        self._raw_sqlite = self._dialect == "sqlite"
        self._by_table = _models_by_table()
        self._transaction = conn.begin()
        self._table: Table | None = None
        self._tables: list[Table] = []
        self.loaded: dict[str, int] = {}
        self.new_rows: dict[str, int] = {}
        # What the import touched, for the incremental derive (core.derive.incremental):
        self.touched: set[str] = set()  # patient ids of every row written
        self.network_changed = False  # practices, teams or staff changed
        self._snapshot: list | None = None
        self._encounters: set[str] = set()
        self._minute_encounters: set[str] = set()
        self._patients: list[np.ndarray] = []  # sorted distinct hashes of the patient ids written
        self.from_month: date | None = NO_MONTH  # the earliest month the rows can change (None: every month)

    @contextmanager
    def _database_errors(self, where: str):
        """Turn a database (or value conversion) error into a report error and :class:`LoadFailed`."""
        try:
            yield
        except (SQLAlchemyError, _ForeignKeyViolation, ValueError, TypeError) as exc:
            self.report.loaded, self.report.new_rows, self.report.import_id = {}, {}, None
            detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            self.report.add_error(where, None, None, f"the load failed and was rolled back, nothing was written: {detail}")
            raise LoadFailed(detail) from exc

    def start_table(self, name: str) -> None:
        """Finish the current table and start writing ``name`` (tables must come in foreign-key order)."""
        self._end_table()
        if name not in self._by_table:
            self.report.add_error(name, None, None, f"no table named {name!r}")
            raise LoadFailed(name)
        table = SQLModel.metadata.tables[name]
        with self._database_errors(name):
            self._before = _count(self.conn, table)
            self._snapshot = _rows_of(self.conn, table) if name in NETWORK_TABLES else None
        self._table, self._rows, self._names, self._rebuild = table, 0, None, []
        self._defaults = _defaults(self._by_table[name])
        self._tables.append(table)

    def write(self, frame: pd.DataFrame) -> None:
        """Upsert one batch of rows (model field names as columns) into the current table."""
        table = self._table
        if self._names is None:
            self._names = _column_names(frame, table, self._defaults, self.report)
            keys = {c.name for c in table.primary_key.columns}
            self._update = [n for n in self._names if n not in keys and n in frame.columns]
        if not len(frame):
            return
        if "patient_id" in frame.columns:
            self.touched.update(str(p) for p in pd.unique(frame["patient_id"].dropna()))
        if table.name == "encounter":
            self._encounters.update(str(e) for e in frame["encounter_id"].dropna())
        elif table.name == "staff_minutes":
            self._minute_encounters.update(str(e) for e in frame["encounter_id"].dropna())
        with self._database_errors(table.name):
            patients_before = self._note_months(table, frame)
            # A bulk load into a (nearly) empty SQLite table is faster with its secondary indexes
            # built once afterwards; DDL is transactional in SQLite, so a rollback restores them too.
            if (self._raw_sqlite and not self._rebuild and table.indexes
                    and self._rows + len(frame) >= max(REBUILD_INDEX_ROWS, self._before)):
                self._rebuild = list(table.indexes)
                for index in self._rebuild:
                    index.drop(self.conn)
            if len(frame) >= COPY_ROWS and self._dialect == "postgresql":
                _copy_upsert(self.conn, table, frame, self._names, self._update, self._defaults)
            else:
                statement = _upsert(table, self._dialect, self._update)
                _execute_batches(self.conn, statement, frame, table, self._names, self._defaults, self._raw_sqlite)
            if patients_before:
                self._note_patient_changes(table, patients_before)
        self._rows += len(frame)
        if "patient_id" in frame.columns:
            self._patients.append(np.unique(patient_hashes(frame["patient_id"].dropna())))
            if sum(len(h) for h in self._patients) > 4_000_000:  # 8 bytes a patient, kept compact
                self._patients = [np.unique(np.concatenate(self._patients))]

    def _note_month(self, value) -> None:
        """Lower :attr:`from_month` to the month of ``value`` (a date, or None: every month)."""
        if self.from_month is None:
            return
        if value is None:
            self.from_month = None
        elif not pd.isna(value):
            self.from_month = min(self.from_month, pd.Timestamp(str(value)[:10]).date().replace(day=1))

    def _note_months(self, table: Table, frame: pd.DataFrame) -> dict | None:
        """Before a batch is written: note the earliest month its rows (and the stored rows they
        replace) can change. Returns the stored patient rows the batch may change, to compare after."""
        name = table.name
        if self.from_month is None or name in NETWORK_TABLES or name == "staff_minutes":
            return None  # network tables: everything (network_changed); staff minutes: their encounters' dates
        if name == "patient":
            return self._stored_rows(table, frame["patient_id"]) if self._before else None
        columns = [c for c in DATED_COLUMNS.get(name, ()) if c in frame.columns]
        if not columns:
            self._note_month(None)
            return None
        for column in columns:
            self._note_month(pd.to_datetime(frame[column], errors="coerce").min())
        key = list(table.primary_key.columns)
        if self._before and len(key) == 1:  # a row sent again: the dates it had count too
            ids = pd.unique(frame[key[0].name].dropna().astype(str)).tolist()
            for start in range(0, len(ids), 10_000):
                found = self.conn.execute(select(*[func.min(table.c[c]) for c in DATED_COLUMNS[name]])
                                          .where(key[0].in_(ids[start : start + 10_000]))).one()  # fmt: skip
                for value in found:
                    if value is not None:
                        self._note_month(value)
        return None

    def _stored_rows(self, table: Table, ids: pd.Series) -> dict:
        ids = pd.unique(ids.dropna().astype(str)).tolist()
        rows = {}
        for start in range(0, len(ids), 10_000):
            for row in self.conn.execute(select(table).where(table.c.patient_id.in_(ids[start : start + 10_000]))):
                rows[row.patient_id] = dict(row._mapping)
        return rows

    def _note_patient_changes(self, table: Table, before: dict) -> None:
        """After a batch of patients: a changed death date changes the months from the earlier of
        the two; any other change (age, sex, dual status, strata) every month."""
        after = self._stored_rows(table, pd.Series(list(before)))
        for patient_id, old in before.items():
            new = after.get(patient_id, old)
            changed = {c for c in old if old[c] != new[c]} - set(UNDATED_PATIENT_COLUMNS)
            if changed == {"death_date"}:
                self._note_month(min(d for d in (old["death_date"], new["death_date"]) if d is not None))
            elif changed:
                self._note_month(None)
                return

    def _end_table(self) -> None:
        table = self._table
        self._table = None
        if table is None or not self.report.ok:
            return  # a rejected load is rolled back, dropped indexes included
        with self._database_errors(table.name):
            for index in self._rebuild:
                index.create(self.conn)
            self.loaded[table.name] = self._rows
            self.new_rows[table.name] = _count(self.conn, table) - self._before
            if self._snapshot is not None and _rows_of(self.conn, table) != self._snapshot:
                self.network_changed = True

    def commit(self, order: list[str] | None = None) -> None:
        """Check foreign keys (SQLite), write the ``import_run`` row and commit; fills the report's
        ``loaded``, ``new_rows`` (tables in ``order``, default: as written) and ``import_id``.
        Does nothing when the report has errors (the load is then rolled back)."""
        self._end_table()
        if not self.report.ok:
            return
        report = self.report
        if self._raw_sqlite:
            with self._database_errors("foreign keys"):
                _check_sqlite_foreign_keys(self.conn, self._tables)
        with self._database_errors("import_run"):
            wiped = end_demo(self.conn)  # real data arrive: no demo mode, and nothing made in it stays
            if wiped is not None:
                report.add_warning("store", None, None, "the store held the first run's sample: demo mode ends, and what was "
                                   "made in it is deleted (" + ", ".join(f"{n} {t}" for t, n in wiped.items()) + ")")  # fmt: skip
            names = order if order is not None else list(self.loaded)
            report.loaded = {name: self.loaded[name] for name in names}
            report.new_rows = {name: self.new_rows[name] for name in names}
            report.seconds = round(report.seconds + time.perf_counter() - self._started, 2)
            result = self.conn.execute(
                insert(models.ImportRun.__table__).values(
                    started_at=self._started_at,
                    finished_at=datetime.now(UTC),
                    source=report.source[:500],
                    format=report.format,
                    origin=report.origin,
                    status="committed",
                    report=json.dumps(report.to_dict(), default=str),
                )
            )
            import_id = result.inserted_primary_key[0]
            # In the same transaction: the derived tables are behind until a derive finishes, for
            # the patients it touched (everything when network-wide data changed).
            overrides_wiped = bool(wiped and wiped.get(models.SubgroupOverride.__tablename__))
            touched = self._touched_patients(overrides_wiped)
            self._note_minute_months()
            from_month = None if touched == [TOUCH_ALL] and not self._many() else self.from_month
            mark_touched(self.conn, touched, str(import_id), from_month)
            self._write_patients(import_id)
            settings = models.AppSetting.__table__
            self.conn.execute(_upsert(settings, self._dialect, ["value", "updated_at"]),
                              [{"key": DERIVE_PENDING_KEY, "value": str(import_id), "updated_at": datetime.now(UTC)}])
            self._transaction.commit()
            report.import_id = import_id

    def _touched_patients(self, wiped: bool) -> list[str]:
        """The patients this load touched, or ``[*]`` when the derive must redo everything:
        practices, teams or staff changed (cost rates), overrides made in demo mode were wiped,
        or too many patients to list."""
        if self.network_changed or wiped or len(self.touched) > MAX_TOUCHED_IDS:
            return [TOUCH_ALL]
        touched = set(self.touched)
        others = sorted(self._minute_encounters - self._encounters)  # staff minutes of encounters loaded before
        for start in range(0, len(others), 10_000):
            e = models.Encounter
            part = others[start : start + 10_000]
            touched.update(self.conn.execute(select(e.patient_id).where(e.encounter_id.in_(part))).scalars().all())
        return sorted(touched)

    def _note_minute_months(self) -> None:
        """The staff minutes of encounters loaded before change the months of those encounters."""
        others = sorted(self._minute_encounters - self._encounters)
        e = models.Encounter
        for start in range(0, len(others), 10_000):
            first = self.conn.execute(select(func.min(e.start_date)).where(e.encounter_id.in_(others[start : start + 10_000])))
            value = first.scalar_one()
            if value is not None:
                self._note_month(value)

    def _many(self) -> bool:
        """Whether the touched patients were recorded as everything only for being too many to
        list (the months the load can change still bound the derive)."""
        return not self.network_changed and len(self.touched) > MAX_TOUCHED_IDS

    def _write_patients(self, import_id: int) -> None:
        """The ``import_patient`` rows of the import: each distinct patient id's hash, once."""
        if not self._patients:
            return
        hashes = np.unique(np.concatenate(self._patients))
        rows = zip([import_id] * len(hashes), hashes.view(np.int64).tolist(), strict=True)
        if self._dialect == "postgresql":
            copy_rows(self.conn, models.ImportPatient.__tablename__, ["import_id", "patient_hash"], rows)
        else:
            self.conn.exec_driver_sql("INSERT INTO import_patient (import_id, patient_hash) VALUES (?, ?)", list(rows))


def _rows_of(conn, table: Table) -> list[tuple]:
    """Every row of a small table in key order (practices, teams, staff)."""
    return [tuple(r) for r in conn.execute(select(table).order_by(*table.primary_key.columns))]


@contextmanager
def open_load(engine: Engine, report: ImportReport) -> Iterator[Load]:
    """Open one all-or-nothing load on ``engine``; see :class:`Load`. Rolled back unless committed."""
    started = time.perf_counter()
    started_at = datetime.now(UTC) - timedelta(seconds=report.seconds)
    raw_sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if raw_sqlite:
            # Outside a transaction: foreign_keys is a no-op inside one (sqlite.org/pragma.html#pragma_foreign_keys).
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.exec_driver_sql("PRAGMA cache_size=-262144")  # 256 MB page cache for this load
            conn.commit()
        try:
            load = Load(conn, report, started, started_at)
            try:
                yield load
            finally:
                if load._transaction.is_active:
                    load._transaction.rollback()
        finally:
            if raw_sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.commit()


def load_tables(engine: Engine, frames: dict[str, pd.DataFrame], report: ImportReport) -> ImportReport:
    """Upsert every frame (keyed by table name) in one transaction and record the import run.

    Fills ``report.loaded`` / ``report.new_rows`` / ``report.import_id``. On any database error
    the transaction is rolled back and the error is added to ``report.errors``; the store is
    then exactly as before. Re-loading identical rows changes nothing (rows are only rewritten
    when a value differs) except for the new ``import_run`` row.
    """
    if not report.ok:
        return report
    by_table = _models_by_table()
    unknown = [name for name in frames if name not in by_table]
    for name in unknown:
        report.add_error(name, None, None, f"no table named {name!r}")
    if unknown:
        return report
    ordered = [t.name for t in SQLModel.metadata.sorted_tables if t.name in frames]
    try:
        with open_load(engine, report) as load:
            for name in ordered:
                load.start_table(name)
                load.write(frames[name])
            load.commit(order=list(frames))
    except LoadFailed:
        pass
    return report

"""The all-or-nothing loader every importer ends with: typed frames -> upserts in one transaction.

Frames are keyed by table name (``patient``, ``encounter``, ...) and carry model field names as
columns. :func:`load_tables` writes whole frames; :func:`open_load` lets a streaming reader (the
CSV bundle) write one batch at a time into the same single transaction. Rows are upserted
(insert, or update on a key conflict): on SQLite with ``executemany`` in batches, the patient
tables' rows by ADBC into a stage file and one ``INSERT ... SELECT ... ON CONFLICT`` (:class:`_Stage`);
on PostgreSQL by ``COPY`` into a temporary table and one such statement a batch (``COPY`` straight
into a table that was empty), tables in foreign-key order, and an ``import_run`` row is written in the same
transaction, with the mark that the derived tables are behind (``derive_pending``, cleared
when the derive after the import finishes) and the import's patients (``import_patient``, as
hashes of their ids: the derive counts how many patients outside the import changed subgroup). Any database error rolls everything back and
becomes an :class:`~core.ingest.report.ImportIssue`, so the store is exactly as it was.
"""

import json
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from pydantic_core import PydanticUndefined
from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Engine,
    Float,
    Integer,
    MetaData,
    Table,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    true,
)
from sqlalchemy import inspect as inspect_database
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import SQLModel

from core.access.demo import end_demo
from core.derive.incremental import TOUCH_ALL, mark_touched
from core.ingest.report import ImportReport
from core.ingest.text_hash import hash_text
from core.store import models
from core.store.db import checkpoint_after_write, copy_rows, refresh_statistics_side_by_side
from core.store.queries import DERIVE_PENDING_KEY, among, patient_hashes

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
COPY_BATCH_ROWS = 200_000  # PostgreSQL: rows turned into CSV at a time
# SQLite: the patient tables whose rows go through a stage file (:class:`_Stage`); SQLite attaches
# at most 10 databases to a connection, one file a table
STAGED_TABLES = ("attribution", "condition", "encounter", "measurement", "medication", "procedure", "staff_minutes")


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


def _arrow_type(column) -> pa.DataType:
    sa_type = column.type
    if isinstance(sa_type, DateTime):
        return pa.timestamp("us", tz="UTC") if sa_type.timezone else pa.timestamp("us")
    if isinstance(sa_type, Date):
        return pa.date32()
    if isinstance(sa_type, Boolean):
        return pa.bool_()
    if isinstance(sa_type, Float):
        return pa.float64()
    if isinstance(sa_type, Integer):
        return pa.int64()
    return pa.large_string()


def _arrow_values(series: pd.Series, column) -> pa.Array:
    """One frame column as an Arrow array of the table column's type (null for missing); no
    Python object per value except where the frame already holds objects."""
    kind = _arrow_type(column)
    if pa.types.is_date32(kind):
        values = _dates(series).to_numpy(dtype="datetime64[ns]")
        return pa.array(values.astype("datetime64[D]"), type=pa.date32(), mask=np.isnat(values))
    if pa.types.is_timestamp(kind):
        return pa.array(pd.to_datetime(series, errors="raise", utc=kind.tz is not None), from_pandas=True).cast(kind)
    if pa.types.is_boolean(kind):
        try:
            return pa.array(series, type=kind, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return pa.array([None if v is None or v is pd.NA else bool(v) for v in series.to_numpy(dtype=object)], type=kind)
    if pa.types.is_float64(kind):
        return pa.array(pd.to_numeric(series, errors="raise").astype("float64"), from_pandas=True)
    if pa.types.is_int64(kind):
        return pa.array(pd.to_numeric(series, errors="raise").astype("Int64"), type=kind, from_pandas=True)
    try:
        return pa.array(series, type=kind, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers or other objects in a text column: their text
        return pa.array([None if v is None or pd.isna(v) else str(v) for v in series.to_numpy(dtype=object)], type=kind)


def _arrow_batch(part: pd.DataFrame, table: Table, names: list[str], defaults: dict[str, object]) -> pa.Table:
    """The batch as an Arrow table of the columns ``names`` in the table's types, with model
    defaults for missing columns and for blanks in columns that may not be blank."""
    arrays = []
    for name in names:
        column = table.c[name]
        kind = _arrow_type(column)
        fill = _arrow_values(pd.Series([defaults[name]]), column)[0] if defaults.get(name) is not None else None
        if name in part.columns:
            values = _arrow_values(part[name], column)
            if fill is not None and not column.nullable and values.null_count:
                values = pc.fill_null(values, fill)
        elif fill is not None:
            values = pa.repeat(fill, len(part))
        else:
            values = pa.nulls(len(part), type=kind)
        arrays.append(values)
    return pa.Table.from_arrays(arrays, names=names)


def _python_columns(batch: pa.Table) -> list[list]:
    """Per-column lists of Python values for the sqlite3 driver (None for missing): dates are ISO
    strings (exactly how SQLAlchemy's SQLite ``Date`` type stores them; booleans are ints to sqlite3 already)."""
    columns = []
    for values in batch.columns:
        if pa.types.is_date32(values.type):
            values = values.cast(pa.large_string())
        columns.append(values.to_pylist())
    return columns


def _upsert(table: Table, dialect: str, update_columns: list[str], source: Table | None = None):
    """``INSERT ... ON CONFLICT (key) DO UPDATE`` that only rewrites rows whose values changed.

    ``source``: insert the rows of that table (``INSERT ... SELECT``, same column names) instead
    of bound values.
    """
    ins = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table) if dialect == "sqlite" else None
    if ins is None:
        raise ValueError(f"unsupported database dialect {dialect!r} (SQLite and PostgreSQL are)")
    if source is not None:
        # (SQLite: an upsert's SELECT needs a WHERE clause, else ON CONFLICT reads as a join's ON)
        ins = ins.from_select([c.name for c in source.columns], select(*source.columns).where(true()))
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


def _text_hashes(values) -> np.ndarray:
    """:func:`hash_text` of each value as text (the encounters a load wrote, only compared within it)."""
    series = pd.Series(values)
    return hash_text(pa.array(series if isinstance(series.dtype, pd.StringDtype) else series.astype(str)))


def _unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (by a sort: numpy's hash-based ``np.unique`` is far slower on 64-bit hashes)."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def _count(conn, table: Table) -> int:
    return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _has_rows(conn, table: Table) -> bool:
    return conn.execute(select(true()).select_from(table).limit(1)).first() is not None


def _execute_batches(conn, statement, frame: pd.DataFrame, table: Table, names: list[str], defaults: dict[str, object]) -> None:
    """SQLite: run the upsert with ``executemany`` in batches of :data:`BATCH_ROWS` (bounded memory).

    The statement is compiled once by SQLAlchemy and its bound parameters are passed as tuples,
    made column by column from Arrow, straight to the driver (a third of the per-row cost of Core dicts).
    """
    compiled = statement.compile(dialect=conn.dialect, column_keys=names)
    order = [names.index(key) for key in compiled.positiontup]
    sql = str(compiled)
    cursor = conn.connection.driver_connection.cursor()
    for start in range(0, len(frame), BATCH_ROWS):
        columns = _python_columns(_arrow_batch(frame.iloc[start : start + BATCH_ROWS], table, names, defaults))
        cursor.executemany(sql, zip(*(columns[i] for i in order), strict=True))


def _copy_csv(conn, table_name: str, names: list[str], frame: pd.DataFrame, table: Table, defaults: dict[str, object]) -> None:
    """PostgreSQL: ``COPY`` the frame into ``table_name`` as CSV written by Arrow from the typed
    columns (no Python object per value; a quoted empty string is text, an unquoted empty field NULL)."""
    quote = conn.dialect.identifier_preparer.quote
    copy_sql = f"COPY {quote(table_name)} ({', '.join(quote(n) for n in names)}) FROM STDIN WITH (FORMAT csv)"
    cursor = conn.connection.driver_connection.cursor()
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
    with cursor.copy(copy_sql) as copy:
        for start in range(0, len(frame), COPY_BATCH_ROWS):
            sink = pa.BufferOutputStream()
            pacsv.write_csv(_arrow_batch(frame.iloc[start : start + COPY_BATCH_ROWS], table, names, defaults), sink, options)
            copy.write(memoryview(sink.getvalue()))


def _copy_upsert(conn, table: Table, frame: pd.DataFrame, names: list[str], update: list[str],
                 defaults: dict[str, object], keys_as_a_set: bool = False, written_parents: set[str] | None = None,
                 before: Callable[[Connection, Table], None] | None = None) -> int:
    """PostgreSQL: ``COPY`` the rows into a temporary table (:func:`_copy_csv`), then upsert them
    all with one ``INSERT ... SELECT ... ON CONFLICT``, which keeps the semantics of :func:`_upsert`.

    Returns how many rows were new. The upsert says it itself: a row it inserted has no ``xmax``
    (no transaction replaced it), a row it updated has its own; the count of the table before and
    after was a full scan of each table at any size (1.5 s of a month's import at 100,000 patients).

    ``keys_as_a_set`` (:func:`_may_check_keys_as_a_set`): the upsert runs without PostgreSQL's
    foreign-key trigger per row, and :func:`_check_keys_as_a_set` checks and locks the parents of
    the batch's rows in one statement per key instead, with the same guarantee.

    ``written_parents`` (with ``keys_as_a_set``): the tables whose keys this load upserted so far, kept in
    temporary tables (:func:`_keep_written_keys`); the batch's keys are added when other tables
    refer to this one, and the check skips the parents in them.

    ``before(conn, batch)``: run once the rows are in the temporary table, before the upsert
    changes the stored rows (the loader's reads of the rows a batch replaces: :meth:`Load._upsert_lookup`).
    """
    temp = Table(f"_load_{table.name}", MetaData(), *[Column(n, table.c[n].type) for n in names],
                 prefixes=["TEMPORARY"], postgresql_on_commit="DROP")
    temp.create(conn)
    _copy_csv(conn, temp.name, names, frame, table, defaults)
    if before is not None:
        before(conn, temp)
    written = _upsert(table, "postgresql", update, source=temp).returning(
        literal_column("xmax = 0", Boolean).label("inserted")).cte("written")
    count = select(func.count()).select_from(written).where(written.c.inserted)
    if keys_as_a_set and table.foreign_key_constraints:
        with _without_row_triggers(conn):
            inserted = conn.execute(count).scalar_one()
        _check_keys_as_a_set(conn, table, temp, written_parents or set())
    else:
        inserted = conn.execute(count).scalar_one()
    if keys_as_a_set and written_parents is not None and update:
        _keep_written_keys(conn, table, temp, written_parents)
    temp.drop(conn)
    return inserted


def _parent_tables() -> set[str]:
    """The tables that other tables' foreign keys refer to."""
    return {fk.column.table.name for table in SQLModel.metadata.tables.values() for fk in table.foreign_keys}


def written_keys_table(name: str) -> str:
    return f"_written_{name}"


def _keep_written_keys(conn, table: Table, batch: Table, written_parents: set[str]) -> None:
    """PostgreSQL: add the keys of ``batch`` (just upserted into ``table``, a parent of other
    tables with a one-column key) to the load's temporary table of them, and ``table`` to
    ``written_parents``. Every such row exists until the load ends and no other transaction can delete it
    or change its key: a row the load inserted is seen by no one else, and ``ON CONFLICT DO
    UPDATE`` locks every row it meets, also those its ``WHERE`` leaves as they were."""
    keys = list(table.primary_key.columns)
    if table.name not in _parent_tables() or len(keys) != 1:
        return
    quote = conn.dialect.identifier_preparer.quote
    keys_table, key = quote(written_keys_table(table.name)), quote(keys[0].name)
    if table.name not in written_parents:
        conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {keys_table} (value {keys[0].type.compile(conn.dialect)}) ON COMMIT DROP")
        written_parents.add(table.name)
    conn.exec_driver_sql(f"INSERT INTO {keys_table} (value) SELECT {key} FROM {quote(batch.name)} WHERE {key} IS NOT NULL")


@contextmanager
def _without_row_triggers(conn):
    """PostgreSQL: the statements of the block run with ``session_replication_role`` 'replica': no
    user trigger and no foreign-key trigger per row (the caller checks the keys, or knows them
    good). Set for the transaction (``SET LOCAL``) and put back after the block; a block that fails
    leaves it to the transaction's rollback."""
    role = conn.exec_driver_sql("SHOW session_replication_role").scalar_one()
    conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
    yield
    conn.execute(select(func.set_config("session_replication_role", role, True)))


def _may_check_keys_as_a_set(conn) -> bool:
    """PostgreSQL: whether the load's role may set ``session_replication_role`` (a superuser, or
    from PostgreSQL 15 a role granted it: ``GRANT SET ON PARAMETER session_replication_role TO
    ...``), which :func:`_copy_upsert` needs to check foreign keys as a set. Else each row's
    trigger checks them, as before (slower, the same result)."""
    superuser, version = conn.exec_driver_sql(
        "SELECT current_setting('is_superuser') = 'on', current_setting('server_version_num')::int").one()
    if superuser or version < 150000:
        return bool(superuser)
    return bool(conn.exec_driver_sql("SELECT has_parameter_privilege('session_replication_role', 'SET')").scalar_one())


def _check_keys_as_a_set(conn, table: Table, batch: Table, written_parents: set[str] = frozenset()) -> None:
    """What PostgreSQL's foreign-key trigger does for each row of ``batch`` (the rows just upserted
    into ``table``), one statement per key: lock the parent rows they refer to (``FOR KEY SHARE``,
    so that no other transaction deletes one or changes its key before this load commits) and
    compare their number with the distinct values referred to; when some are missing, count the
    rows that refer to them. At 100,000 patients a month's 86,765 attributions (four keys) took
    4.8 s with a trigger per row and about 2 s this way (BENCHMARKS.md). Rows the upsert left as they
    were are checked too: they refer to parents that exist.

    ``written_parents``: parents whose keys this load upserted (:func:`_keep_written_keys`): those exist and
    are locked already, so only the other values are looked up and locked (a month's import: its
    attributions refer to the patients, practices, teams and staff it sent too, its staff minutes
    to its encounters)."""
    quote = conn.dialect.identifier_preparer.quote
    rows = quote(batch.name)
    for fk in table.foreign_key_constraints:
        (element,) = fk.elements  # every key of the store has one column
        column, parent, key = quote(element.parent.name), quote(element.column.table.name), quote(element.column.name)
        known = (f" AND NOT EXISTS (SELECT 1 FROM {quote(written_keys_table(element.column.table.name))} AS w "
                 f"WHERE w.value = b.{column})" if element.column.table.name in written_parents and element.column.primary_key
                 else "")  # fmt: skip
        # (each CTE is read to its end by its count, so every parent row is locked)
        unlocked = conn.exec_driver_sql(
            f"WITH wanted AS (SELECT DISTINCT b.{column} AS value FROM {rows} AS b WHERE b.{column} IS NOT NULL{known}), "
            f"locked AS (SELECT 1 FROM {parent} AS p WHERE p.{key} IN (SELECT value FROM wanted) FOR KEY SHARE OF p) "
            f"SELECT (SELECT count(*) FROM wanted) - (SELECT count(*) FROM locked)").scalar_one()  # fmt: skip
        if unlocked:
            missing, example = conn.exec_driver_sql(
                f"SELECT count(*), min(b.{column}) FROM {rows} AS b WHERE b.{column} IS NOT NULL "
                f"AND NOT EXISTS (SELECT 1 FROM {parent} AS p WHERE p.{key} = b.{column})").one()  # fmt: skip
            raise _ForeignKeyViolation(f"{missing} {table.name} row(s) refer to rows that do not exist in "
                                       f"{element.column.table.name} (for example {element.parent.name} {example!r})")  # fmt: skip


FK_CHECK_VALUES = 1_000_000  # distinct values of a key kept to check a load's own rows (more: the whole table)


def _check_sqlite_foreign_keys(conn, tables: list[Table], written: dict[str, dict | None] | None = None) -> None:
    """SQLite loads run with ``foreign_keys=OFF`` (3x faster); check the loaded tables before commit.

    ``written``: per table, the distinct values the load wrote in each of its foreign-key columns
    (``{(column, parent table, parent column): set}``), or None for the whole table. A table that
    already held rows is checked on those values only: every row the load inserted or updated
    holds one of them, and the rows it did not touch were checked when they were loaded. So an
    import of one month into a large store does not read every stored row (PRAGMA
    foreign_key_check: 4-5 s at 100,000 patients)."""
    written = written or {}
    for table in tables:
        keys = written.get(table.name)
        if keys is None:
            bad = conn.exec_driver_sql(f'PRAGMA foreign_key_check("{table.name}")').fetchall()
            count, parents = len(bad), sorted({row[2] for row in bad})
        else:
            count, parents = _bad_references(conn, table, keys)
        if count:
            raise _ForeignKeyViolation(f"{count} {table.name} row(s) refer to rows that do not exist in {', '.join(parents)}")


def _bad_references(conn, table: Table, keys: dict) -> tuple[int, list[str]]:
    """Rows of ``table`` holding a value of ``keys`` that its parent does not have, and those parents."""
    quote = conn.dialect.identifier_preparer.quote
    count, parents = 0, set()
    for (column, parent, parent_column), values in keys.items():
        if not values:
            continue
        conn.exec_driver_sql("CREATE TEMP TABLE _written_key (value TEXT)")
        try:
            conn.connection.driver_connection.executemany("INSERT INTO _written_key VALUES (?)", ((v,) for v in values))
            missing = conn.exec_driver_sql(f"SELECT value FROM _written_key WHERE value NOT IN "
                                           f"(SELECT {quote(parent_column)} FROM {quote(parent)})").scalars().all()  # fmt: skip
        finally:
            conn.exec_driver_sql("DROP TABLE _written_key")
        if missing:  # (the rows holding them: a column without an index is read whole, only then)
            n = sum(conn.execute(select(func.count()).select_from(table)
                                 .where(among(table.c[column], missing[i : i + 10_000], conn.dialect.name)))
                    .scalar_one() for i in range(0, len(missing), 10_000))  # fmt: skip
            count, parents = count + n, parents | {parent}
    return count, sorted(parents)


def _driver_errors() -> tuple[type[Exception], ...]:
    """psycopg's own errors (``COPY`` runs on the driver's cursor, outside SQLAlchemy), and ADBC's
    (the SQLite stage files' bulk ingest, :class:`_Stage`)."""
    errors: list[type[Exception]] = []
    try:
        import psycopg

        errors.append(psycopg.Error)
    except ImportError:
        pass
    try:
        import adbc_driver_manager

        errors.append(adbc_driver_manager.Error)
    except ImportError:
        pass
    return tuple(errors)


_DRIVER_ERRORS = _driver_errors()


def _adbc_sqlite_connect():
    """ADBC's SQLite ``connect`` (package ``adbc-driver-sqlite``), or None when it is not installed."""
    try:
        from adbc_driver_sqlite.dbapi import connect
    except ImportError:
        return None
    return connect


class _Stage:
    """SQLite: the rows of a patient table go first into a scratch database file of their own, by
    ADBC's bulk ingest (the Arrow columns bound to SQLite in C: about 4x quicker than sqlite3's
    ``executemany`` of Python values, which was most of the import's time), and at the table's end
    one ``INSERT ... SELECT ... ON CONFLICT`` (:func:`_upsert`, the same statement as row by row,
    rows in the order written) moves them into the store, inside the load's transaction. All or
    nothing is unchanged: the store is written by the load's connection only.

    Each table of :data:`STAGED_TABLES` has its own file, made and attached to the load's
    connection before its transaction begins: SQLite cannot attach inside a transaction, and once
    the transaction has read a file it keeps that read's view of it to the end. The files lie in
    the system's temporary folder (``$TMPDIR``; as big as the rows loaded, without indexes) and
    are deleted with the load. Without the ``adbc-driver-sqlite`` package the rows go row by row.
    Measured: the 100,000-patient bundle (12.4 M rows) in 47.5-49.5 s against 66.1 s, and with the
    tables' ends beside the reading (:class:`Load`) in 37.3-38.5 s (BENCHMARKS.md).

    ADBC opens the stage files only, never the store: the driver carries its own copy of SQLite,
    and two copies in one process do not see each other's locks. When ADBC's connection to a WAL
    store closes, it takes itself for the last one and deletes the store's ``-wal`` and ``-shm``
    files under the connections still open (tried: the next commit fails with "disk I/O error",
    what the WAL held is lost). So the derive's reads stay on ``sqlite3`` too, although ADBC reads
    a block's 963,053 encounters into Arrow in 0.6 s against 4.6 s."""

    def __init__(self, conn: Connection, adbc_connect):
        self._connect = adbc_connect
        self._adbc: dict = {}  # table name -> its ADBC connection, while the table is being staged
        self._dir = tempfile.mkdtemp(prefix="import-stage-")
        self.schemas: dict[str, str] = {}
        self._attached: list[str] = []
        self._moved: set[str] = set()
        try:
            for i, name in enumerate(STAGED_TABLES):
                table = SQLModel.metadata.tables[name]
                path = f"{self._dir}/{name}.db"
                columns = ", ".join(f'"{c.name}" {c.type.compile(dialect=conn.dialect)}' for c in table.columns)
                with sqlite3.connect(path) as scratch:  # no keys or constraints: the store's are checked at the move
                    scratch.execute(f'CREATE TABLE "{name}" ({columns})')
                scratch.close()
                conn.exec_driver_sql(f"ATTACH DATABASE ? AS stage_{i}", (path,))
                self._attached.append(f"stage_{i}")
                self.schemas[name] = f"stage_{i}"
        except BaseException:
            self.close(conn)
            raise

    def takes(self, name: str) -> bool:
        """Whether the rows of table ``name`` go through its stage file: a staged table not moved yet
        in this load (once the load's transaction has read a file, nothing else may write to it:
        a table started again is written row by row)."""
        return name in self.schemas and name not in self._moved

    def ingest(self, name: str, batch: pa.Table) -> None:
        """Append a batch (the table's columns, typed) to the table's stage file, in one transaction."""
        if name not in self._adbc:
            self._adbc[name] = self._connect(f"{self._dir}/{name}.db", autocommit=True)
            with self._adbc[name].cursor() as cursor:
                for pragma in ("PRAGMA journal_mode=OFF", "PRAGMA synchronous=OFF"):  # a scratch file
                    cursor.execute(pragma)
                    cursor.fetchall()
        # (ADBC writes dates as ISO text, as SQLAlchemy does; it binds chunk by chunk: one chunk a column)
        with self._adbc[name].cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.adbc_ingest(name, batch.combine_chunks(), mode="append")
            cursor.execute("COMMIT")

    def seal(self, name: str) -> bool:
        """End the staging of table ``name`` (its file takes no more rows: a table started again
        goes row by row). Returns whether any row was staged."""
        adbc = self._adbc.pop(name, None)
        self._moved.add(name)
        if adbc is None:
            return False
        adbc.close()
        return True

    def move(self, conn: Connection, table: Table, names: list[str], update: list[str]) -> None:
        """Upsert the staged rows of ``table`` (sealed) into the store, in the order they were staged."""
        source = Table(table.name, MetaData(), *[Column(n) for n in names], schema=self.schemas[table.name])
        conn.execute(_upsert(table, conn.dialect.name, update, source=source))

    def close(self, conn: Connection) -> None:
        """Detach the stage files (outside the load's transaction) and delete them. A connection that
        cannot detach one (broken) is invalidated: the pool does not give it out again."""
        for adbc in self._adbc.values():
            adbc.close()
        self._adbc = {}
        try:
            for schema in self._attached:
                conn.exec_driver_sql(f"DETACH DATABASE {schema}")
        except SQLAlchemyError:
            conn.invalidate()
        self._attached = []
        shutil.rmtree(self._dir, ignore_errors=True)


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

    Two threads work beside the caller, who reads and checks the next batch meanwhile: one does
    everything on the connection (batches written row by row or by ``COPY``, the end of a table),
    in order; the other appends a staged table's batches to its stage file (SQLite, :class:`_Stage`;
    ADBC's own connection to that file). So the end of a staged table (its move into the store,
    its indexes built, its rows counted) runs while the next table is read, checked and staged:
    a staged table started for the first time needs nothing of the connection at once (whether it
    held rows is known since the load opened; its count, and the stored dates of the rows a batch
    sends again, are read on the connection's thread, before the table's own end). A wait for the
    connection (a lookup, a table started again, the commit) comes after what is queued. The
    100,000-patient bundle: the ends took 16.7 of 45.6 s, one after the other with the reading;
    one month into its store 7.1 -> 6.5 s (BENCHMARKS.md). A database error of a table's end is
    reported under that table when it is waited for (the commit at the latest), as before.
    """

    def __init__(self, conn: Connection, report: ImportReport, started: float, started_at: datetime,
                 stage: _Stage | None = None):
        self._conn = conn
        self._stage = stage
        # The connection's work, in order, while the caller reads and checks (see the class)
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="load")
        self._pending: list[tuple[Future, str]] = []
        # SQLite: a staged table's batch appended to its stage file (ADBC), one at a time
        self._stager = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage") if stage is not None else None
        self._staging: tuple[Future, str] | None = None
        self.report = report
        self._started, self._started_at = started, started_at
        self._dialect = conn.dialect.name
        self._sqlite = self._dialect == "sqlite"
        self._by_table = _models_by_table()
        self._transaction = conn.begin()
        # PostgreSQL: a table's upserts check their foreign keys as a set where the role may (_copy_upsert)
        self._keys_as_a_set = self._dialect == "postgresql" and _may_check_keys_as_a_set(conn)
        self._written_parents: set[str] = set()  # PostgreSQL: parents whose upserted keys are kept (_keep_written_keys)
        # the staged tables without a row when the load opened: their ends need not be waited for
        self._empty_at_open = {name for name in (STAGED_TABLES if stage is not None else ())
                               if conn.execute(select(literal(1)).select_from(SQLModel.metadata.tables[name]).limit(1)).first() is None}  # fmt: skip
        self._started_tables: set[str] = set()
        self._date_lookups: list[Future] = []  # stored dates of the rows a staged batch sends again (_note_months)
        self._found_months: list = []  # PostgreSQL: what the upserts' lookups found (_upsert_lookup; None: every month)
        self._table: Table | None = None
        self._tables: list[Table] = []
        self._written_keys: dict[str, dict | None] = {}  # SQLite: the foreign-key values written (_check_sqlite_foreign_keys)
        self.loaded: dict[str, int] = {}
        self.new_rows: dict[str, int] = {}
        # What the import touched, for the incremental derive (core.derive.incremental):
        self.touched: set[str] = set()  # patient ids of every row written
        self.network_changed = False  # practices, teams or staff changed
        self._snapshot: list | None = None
        self._encounters: list[np.ndarray] = []  # sorted distinct hashes of the encounter ids written
        self._minute_encounters: set[str] = set()  # staff minutes' encounters that this load did not write
        self._patients: list[np.ndarray] = []  # sorted distinct hashes of the patient ids written
        self.from_month: date | None = NO_MONTH  # the earliest month the rows can change (None: every month)

    @property
    def conn(self) -> Connection:
        """The load's connection, once the batch being written is done."""
        self._wait()
        return self._conn

    def _wait(self) -> None:
        """Wait for the connection's work; the first database error becomes a report error and :class:`LoadFailed`."""
        while self._pending:
            future, where = self._pending.pop(0)
            with self._database_errors(where):
                future.result()

    def _wait_staging(self) -> None:
        """Wait for the batch being staged; its error becomes a report error and :class:`LoadFailed`."""
        staging, self._staging = self._staging, None
        if staging is not None:
            with self._database_errors(staging[1]):
                staging[0].result()

    def _close(self) -> None:
        """Wait for the threads' work (its errors do not matter: the load is rolled back) and end the threads."""
        futures = [f for f, _ in self._pending] + ([self._staging[0]] if self._staging is not None else [])
        self._pending, self._staging = [], None
        for future in futures:
            try:
                future.result()
            except Exception:  # noqa: BLE001, S110 - rolled back anyway
                pass
        self._writer.shutdown(wait=True)
        if self._stager is not None:
            self._stager.shutdown(wait=True)

    @contextmanager
    def _database_errors(self, where: str):
        """Turn a database (or value conversion) error into a report error and :class:`LoadFailed`."""
        try:
            yield
        except (SQLAlchemyError, *_DRIVER_ERRORS, _ForeignKeyViolation, ValueError, TypeError, pa.ArrowException) as exc:
            self.report.loaded, self.report.new_rows, self.report.import_id = {}, {}, None
            detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            located = getattr(getattr(getattr(exc, "orig", None) or exc, "diag", None), "message_detail", None)
            if located:  # PostgreSQL says which row: "Key (patient_id)=(P404) is not present in table ..."
                detail = f"{detail} ({located})"
            self.report.add_error(where, None, None, f"the load failed and was rolled back, nothing was written: {detail}")
            raise LoadFailed(detail) from exc

    def start_table(self, name: str) -> None:
        """Finish the current table and start writing ``name`` (tables must come in foreign-key order)."""
        self._end_table()
        if name not in self._by_table:
            self.report.add_error(name, None, None, f"no table named {name!r}")
            raise LoadFailed(name)
        table = SQLModel.metadata.tables[name]
        if self._stage is not None and self._stage.takes(name) and name not in self._started_tables:
            # A staged table started for the first time: whether it holds rows is known since the
            # load opened, and its count can wait on the connection's thread, after the last table's end.
            self._had_rows, self._snapshot = name not in self._empty_at_open, None
            self._before = self._writer.submit(_count, self._conn, table) if self._had_rows else 0
        else:
            self._wait()
            with self._database_errors(name):
                if self._dialect == "postgresql":  # its writes count their new rows (RETURNING)
                    self._had_rows, self._before, self._inserted = _has_rows(self._conn, table), None, 0
                else:
                    self._before = _count(self._conn, table)
                    self._had_rows = self._before > 0
                self._snapshot = _rows_of(self._conn, table) if name in NETWORK_TABLES else None
        self._started_tables.add(name)
        self._table, self._rows, self._names, self._update, self._rebuild = table, 0, None, [], []
        self._direct, self._foreign_keys = None, []  # PostgreSQL: COPY straight in (None: not decided)
        self._staged = self._stage is not None and self._stage.takes(name)  # SQLite: through the table's stage file
        self._defaults = _defaults(self._by_table[name])
        if name not in self._written_keys:  # (a table started again in one load keeps what it had)
            keys = list(table.foreign_key_constraints)
            # a table with rows before the load: its foreign keys are checked on the values the load writes
            self._written_keys[name] = (
                {(fk.elements[0].parent.name, fk.elements[0].column.table.name, fk.elements[0].column.name): set() for fk in keys}
                if self._sqlite and self._had_rows and all(len(fk.elements) == 1 for fk in keys) else None
            )  # fmt: skip
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
        patients = np.asarray(frame["patient_id"].dropna().unique(), dtype=object) if "patient_id" in frame.columns else None
        self._note_touched(table.name, frame, patients)
        self._note_written_keys(table.name, frame)
        with self._database_errors(table.name):
            patients_before = self._note_months(table, frame)
        # A bulk load into a (nearly) empty SQLite table is faster with its secondary indexes
        # built once afterwards; DDL is transactional in SQLite, so a rollback restores them too.
        # (A staged table's rows reach the store at its end, which decides then.)
        drop_indexes = (self._sqlite and not self._staged and not self._rebuild and bool(table.indexes)
                        and self._rows + len(frame) >= max(REBUILD_INDEX_ROWS, self._before))  # fmt: skip
        if drop_indexes:
            self._rebuild = list(table.indexes)
        self._rows += len(frame)
        if self._staged:
            self._wait_staging()
            batch = (self._stage.ingest, table.name, frame, table, self._names, self._defaults)
            self._staging = (self._stager.submit(_stage_batch, *batch), table.name)
        else:
            self._wait()
            lookup = self._upsert_lookup(table)
            self._pending.append((self._writer.submit(self._write_rows, table, frame, drop_indexes, lookup), table.name))
        if patients_before is not None and len(patients_before):
            self._wait()  # the changes are read back from the written rows
            with self._database_errors(table.name):
                self._note_patient_changes(table, patients_before)
        if patients is not None:
            self._patients.append(_unique(patient_hashes(patients)))
            if sum(len(h) for h in self._patients) > 4_000_000:  # 8 bytes a patient, kept compact
                self._patients = [_unique(np.concatenate(self._patients))]

    def _note_written_keys(self, table_name: str, frame: pd.DataFrame) -> None:
        """Keep the distinct foreign-key values of a batch (SQLite, a table that held rows); a key
        column not in the batch (its default written) or too many values: the whole table is checked."""
        keys = self._written_keys.get(table_name)
        if keys is None:
            return
        for key, values in keys.items():  # key: (column, parent table, parent column)
            if key[0] not in frame.columns:
                self._written_keys[table_name] = None
                return
            values.update(str(v) for v in pd.unique(frame[key[0]].dropna()))
        if sum(len(v) for v in keys.values()) > FK_CHECK_VALUES:
            self._written_keys[table_name] = None

    def _note_touched(self, table_name: str, frame: pd.DataFrame, patients: np.ndarray | None) -> None:
        """Keep the patients a batch touched, until it is known that the derive redoes everything
        anyway (network-wide data changed, or too many patients to list), and the encounters of
        staff minutes that this load did not write: their patients and months are touched too.
        Encounters are kept as 64-bit hashes (8 bytes each, also at a million patients); staff
        minutes come after encounters in every load's table order."""
        if patients is not None and not self.network_changed and len(self.touched) <= MAX_TOUCHED_IDS:
            self.touched.update(str(p) for p in patients)
        if table_name == "encounter":
            self._encounters.append(_unique(_text_hashes(frame["encounter_id"].dropna())))
            if len(self._encounters) > 64:
                self._encounters = [_unique(np.concatenate(self._encounters))]
        elif table_name == "staff_minutes":
            ids = pd.unique(frame["encounter_id"].dropna().astype(str))
            if len(self._encounters) > 1:
                self._encounters = [_unique(np.concatenate(self._encounters))]
            written = self._encounters[0] if self._encounters else np.empty(0, dtype=np.uint64)
            hashes = _text_hashes(ids)
            at = np.minimum(np.searchsorted(written, hashes), max(len(written) - 1, 0))
            known = written[at] == hashes if len(written) else np.zeros(len(ids), dtype=bool)
            self._minute_encounters.update(np.asarray(ids, dtype=object)[~known].tolist())

    def _write_rows(self, table: Table, frame: pd.DataFrame, drop_indexes: bool, lookup: Callable | None = None) -> None:
        """The database part of :meth:`write` (in the writer thread); ``lookup``: :meth:`_upsert_lookup`."""
        if drop_indexes:
            for index in self._rebuild:
                index.drop(self._conn)
        if self._direct is None and self._dialect == "postgresql" and not self._had_rows:
            self._start_direct(table)
        if self._direct:
            self._inserted += self._copy_direct(table, frame)
        elif self._dialect == "postgresql":
            self._inserted += _copy_upsert(self._conn, table, frame, self._names, self._update, self._defaults,
                                           keys_as_a_set=self._keys_as_a_set, written_parents=self._written_parents, before=lookup)
        else:
            statement = _upsert(table, self._dialect, self._update)
            _execute_batches(self._conn, statement, frame, table, self._names, self._defaults)

    def _start_direct(self, table: Table) -> None:
        """PostgreSQL, first load of an empty table: its secondary indexes and its foreign keys are
        dropped, the rows go straight in by ``COPY``, and :meth:`_end_table` builds the indexes and
        checks the keys once (DDL is transactional: a rollback restores them)."""
        inspector = inspect_database(self._conn)
        existing = {index["name"] for index in inspector.get_indexes(table.name)}
        self._rebuild = [index for index in table.indexes if index.name in existing]
        for index in self._rebuild:
            index.drop(self._conn)
        quote = self._conn.dialect.identifier_preparer.quote
        for fk in inspector.get_foreign_keys(table.name):
            options = " ".join(f"ON {what.upper()} {fk['options'][what].upper()}" for what in ("ondelete", "onupdate")
                               if fk["options"].get(what))  # fmt: skip
            self._foreign_keys.append(
                (fk["name"], f"ALTER TABLE {quote(table.name)} ADD CONSTRAINT {quote(fk['name'])} FOREIGN KEY "
                             f"({', '.join(map(quote, fk['constrained_columns']))}) REFERENCES {quote(fk['referred_table'])} "
                             f"({', '.join(map(quote, fk['referred_columns']))}) {options}")  # fmt: skip
            )
            self._conn.exec_driver_sql(f"ALTER TABLE {quote(table.name)} DROP CONSTRAINT {quote(fk['name'])}")
        self._direct = True

    def _copy_direct(self, table: Table, frame: pd.DataFrame) -> int:
        """``COPY`` the batch into the (first loaded) table; returns the rows that were new. A key
        met again (a duplicate across batches, which the importer reports with its rows when the
        file ends) makes the batch, and the rest of the table, go the upsert way instead, as on a
        table that has rows."""
        savepoint = self._conn.begin_nested()
        try:
            _copy_csv(self._conn, table.name, self._names, frame, table, self._defaults)
        except (IntegrityError, *_DRIVER_ERRORS) as exc:
            savepoint.rollback()
            if getattr(getattr(exc, "orig", None) or exc, "sqlstate", None) != "23505":  # unique_violation
                raise
            self._direct = False
            return _copy_upsert(self._conn, table, frame, self._names, self._update, self._defaults)
        savepoint.commit()
        return len(frame)

    def _note_month(self, value) -> None:
        """Lower :attr:`from_month` to the month of ``value`` (a date, or None: every month)."""
        if self.from_month is None:
            return
        if value is None:
            self.from_month = None
        elif not pd.isna(value):
            self.from_month = min(self.from_month, pd.Timestamp(str(value)[:10]).date().replace(day=1))

    def _note_months(self, table: Table, frame: pd.DataFrame) -> pd.DataFrame | None:
        """Before a batch is written: note the earliest month its rows (and the stored rows they
        replace) can change. Returns the stored patient rows the batch may change, to compare after."""
        name = table.name
        if self.from_month is None or name in NETWORK_TABLES or name == "staff_minutes":
            return None  # network tables: everything (network_changed); staff minutes: their encounters' dates
        in_upsert = self._dialect == "postgresql"  # the stored rows are read by the upsert (_upsert_lookup)
        if name == "patient":
            return self._stored_rows(table, frame["patient_id"]) if self._had_rows and not in_upsert else None
        columns = [c for c in DATED_COLUMNS.get(name, ()) if c in frame.columns]
        if not columns:
            self._note_month(None)
            return None
        for column in columns:
            self._note_month(pd.to_datetime(frame[column], errors="coerce").min())
        key = list(table.primary_key.columns)
        if self._had_rows and len(key) == 1 and not in_upsert:  # a row sent again: the dates it had count too
            ids = pd.unique(frame[key[0].name].dropna().astype(str)).tolist()
            if self._staged:  # (read on the connection's thread, before the table's end moves the rows in)
                lookup = self._writer.submit(self._stored_dates, table, key[0], ids)
                self._pending.append((lookup, name))
                self._date_lookups.append(lookup)
            else:
                for value in self._stored_dates(table, key[0], ids, self.conn):
                    self._note_month(value)
        return None

    def _upsert_lookup(self, table: Table) -> Callable[[Connection, Table], None] | None:
        """PostgreSQL: what :meth:`_note_months` needs of the stored rows a batch replaces, read in
        SQL by the batch's upsert (:func:`_copy_upsert`) from its temporary table before it writes,
        on the connection's thread; what it finds is noted at the commit (:attr:`_found_months`).

        - a patient: whether a column other than the names and the death date changes (every
          month), and the earlier of the stored and the new death date where that changes;
        - a dated table with a one-column key: the earliest stored date of each dated column
          among the rows sent again.

        The reads in Python before (two of every patient row of the batch, around its write, and
        the dates by lists of ids) made the caller wait for the write and took 1.3 s of a month's
        import at 100,000 patients (cProfile)."""
        name = table.name
        if self._dialect != "postgresql" or not self._had_rows or self.from_month is None or name in NETWORK_TABLES:
            return None
        found = self._found_months
        if name == "patient":
            compared = [c for c in self._update if c not in UNDATED_PATIENT_COLUMNS]
            others = [c for c in compared if c != "death_date"]

            def patient_changes(conn: Connection, batch: Table) -> None:
                t, b = table.c, batch.c
                changed = (func.coalesce(func.bool_or(or_(*[t[c].is_distinct_from(b[c]) for c in others])), False)
                           if others else literal(False))  # fmt: skip
                died = (func.min(func.least(t.death_date, b.death_date)).filter(t.death_date.is_distinct_from(b.death_date))
                        if "death_date" in compared else literal(None))  # fmt: skip
                every, death = conn.execute(select(changed, died).select_from(table.join(batch, t.patient_id == b.patient_id))).one()
                found.extend([None] if every else [death] if death is not None else [])

            return patient_changes
        key = list(table.primary_key.columns)
        if name not in DATED_COLUMNS or len(key) != 1:
            return None

        def stored_dates(conn: Connection, batch: Table) -> None:
            on = table.c[key[0].name] == batch.c[key[0].name]
            row = conn.execute(select(*[func.min(table.c[c]) for c in DATED_COLUMNS[name]]).select_from(table.join(batch, on))).one()
            found.extend(value for value in row if value is not None)

        return stored_dates

    def _stored_dates(self, table: Table, key: Column, ids: list[str], conn: Connection | None = None) -> list:
        """The earliest stored date of each dated column among the rows of ``ids`` (None left out)."""
        conn = self._conn if conn is None else conn
        out = []
        for start in range(0, len(ids), 10_000):
            found = conn.execute(select(*[func.min(table.c[c]) for c in DATED_COLUMNS[table.name]])
                                 .where(among(key, ids[start : start + 10_000], self._dialect))).one()  # fmt: skip
            out.extend(value for value in found if value is not None)
        return out

    def _stored_rows(self, table: Table, ids: pd.Series) -> pd.DataFrame:
        """The stored rows of the patients ``ids`` as the driver returns them (no per-row
        processing: the two reads of one batch are compared with each other only), by patient_id."""
        ids = pd.unique(ids.dropna().astype(str)).tolist()
        parts = []
        for start in range(0, len(ids), 10_000):
            result = self.conn.execute(select(table).where(among(table.c.patient_id, ids[start : start + 10_000], self._dialect)))
            parts.append(pd.DataFrame.from_records(result.cursor.fetchall(), columns=list(result.keys())))
            result.close()
        rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[c.name for c in table.columns])
        return rows.set_index("patient_id")

    def _note_patient_changes(self, table: Table, before: pd.DataFrame) -> None:
        """After a batch of patients: a changed death date changes the months from the earlier of
        the two; any other change (age, sex, dual status, strata) every month. Column by column
        over the batch: with a dict per row, the reads and the comparison of the 100,000 patients
        of a month's import took 4.8 s, then 1.8 s, now 0.6 s (cProfile; the two reads are most of it)."""
        after = self._stored_rows(table, before.index.to_series())
        # (a row is never deleted by a load: as it was; not ``isin``: pandas 3 converts a str
        # column's values one by one, 0.8 s for the 86,765 patients of a month's import)
        gone = after.index.get_indexer(before.index) < 0
        after = pd.concat([after, before[gone]]).loc[before.index]
        columns = [c for c in before.columns if c not in UNDATED_PATIENT_COLUMNS]
        differs = {c: ~((before[c] == after[c]) | (before[c].isna() & after[c].isna())).to_numpy(dtype=bool) for c in columns}
        if any(differs[c].any() for c in columns if c != "death_date"):
            self._note_month(None)
            return
        died = differs.get("death_date")
        if died is not None and died.any():
            dates = pd.concat([before.loc[died, "death_date"], after.loc[died, "death_date"]]).dropna()
            self._note_month(min(pd.Timestamp(str(d)[:10]) for d in dates).date())

    def _end_table(self) -> None:
        """Finish the current table: on the connection's thread when it is staged (see the class),
        else here."""
        table = self._table
        self._table = None
        if table is None:
            return
        if self._staged:
            self._wait_staging()
            staged = self._stage.seal(table.name) and self._names is not None
        if not self.report.ok:
            return  # a rejected load is rolled back, dropped indexes and keys included
        self.loaded[table.name] = self._rows
        if self._staged:
            end = (table, staged, self._names, self._update, self._rows, self._before)
            self._pending.append((self._writer.submit(self._end_staged, *end), table.name))
            return
        self._wait()
        with self._database_errors(table.name):
            for index in self._rebuild:
                index.create(self._conn)
            for _name, statement in self._foreign_keys:  # one check of every row against its parent
                self._conn.exec_driver_sql(statement)
            self.new_rows[table.name] = self._inserted if self._before is None else _count(self._conn, table) - self._before
            if self._snapshot is not None and _rows_of(self._conn, table) != self._snapshot:
                self.network_changed = True

    def _end_staged(self, table: Table, staged: bool, names: list[str] | None, update: list[str], rows: int,
                    before: int | Future) -> None:  # fmt: skip
        """The end of a staged table, on the connection's thread: its rows moved into the store
        (``before``: its count when started, or the count's future, done before this on the thread)."""
        before = before.result() if isinstance(before, Future) else before
        # (a table taking many rows for its size: its secondary indexes are built once, after the move)
        rebuild = list(table.indexes) if self._sqlite and staged and rows >= max(REBUILD_INDEX_ROWS, before) else []
        for index in rebuild:
            index.drop(self._conn)
        if staged:
            self._stage.move(self._conn, table, names, update)
        for index in rebuild:
            index.create(self._conn)
        self.new_rows[table.name] = _count(self._conn, table) - before

    def commit(self, order: list[str] | None = None) -> None:
        """Check foreign keys (SQLite), write the ``import_run`` row and commit; fills the report's
        ``loaded``, ``new_rows`` (tables in ``order``, default: as written) and ``import_id``.
        Does nothing when the report has errors (the load is then rolled back)."""
        self._end_table()
        self._wait()  # the tables' ends (their database errors are reported even when the checks found errors)
        if not self.report.ok:
            return
        for lookup in self._date_lookups:
            for value in lookup.result():
                self._note_month(value)
        for value in self._found_months:
            self._note_month(value)
        report = self.report
        if self._sqlite:
            with self._database_errors("foreign keys"):
                _check_sqlite_foreign_keys(self._conn, self._tables, self._written_keys)
        with self._database_errors("import_run"):
            wiped = end_demo(self._conn)  # real data arrive: no demo mode, and nothing made in it stays
            if wiped is not None:
                report.add_warning("store", None, None, "the store held the first run's sample: demo mode ends, and what was "
                                   "made in it is deleted (" + ", ".join(f"{n} {t}" for t, n in wiped.items()) + ")")  # fmt: skip
            names = order if order is not None else list(self.loaded)
            report.loaded = {name: self.loaded[name] for name in names}
            report.new_rows = {name: self.new_rows[name] for name in names}
            report.seconds = round(report.seconds + time.perf_counter() - self._started, 2)
            result = self._conn.execute(
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
            mark_touched(self._conn, touched, str(import_id), from_month)
            self._write_patients(import_id)
            settings = models.AppSetting.__table__
            self._conn.execute(_upsert(settings, self._dialect, ["value", "updated_at"]),
                              [{"key": DERIVE_PENDING_KEY, "value": str(import_id), "updated_at": datetime.now(UTC)}])
            self._transaction.commit()
            report.import_id = import_id
        if self._sqlite and report.import_id is not None:
            checkpoint_after_write(self._conn)  # the log's pages into the database file, on a thread when many
        elif self._dialect == "postgresql" and report.import_id is not None:
            self._analyze_loaded()

    def _analyze_loaded(self) -> None:
        """PostgreSQL, after the commit: fresh planner statistics of the tables that received rows
        (:func:`core.store.db.refresh_statistics_side_by_side`: two tables at a time, on two
        connections), for the derive that reads them next; of their date columns only where the
        load's rows are under a tenth of the table (a month's import). The import is committed: a
        failure here is a warning (autovacuum analyses later), never an error."""
        loaded = {name: rows for name, rows in self.loaded.items() if rows}
        try:
            refresh_statistics_side_by_side(self._conn.engine, list(loaded), changed=loaded)
        except SQLAlchemyError as exc:
            self.report.add_warning("store", None, None, "the import is saved, but the database's planner statistics were "
                                    f"not refreshed ({str(getattr(exc, 'orig', None) or exc).strip().splitlines()[0]}); "
                                    "the next derive may be slow until PostgreSQL's autovacuum analyses the tables")  # fmt: skip

    def _touched_patients(self, wiped: bool) -> list[str]:
        """The patients this load touched, or ``[*]`` when the derive must redo everything:
        practices, teams or staff changed (cost rates), overrides made in demo mode were wiped,
        or too many patients to list."""
        if self.network_changed or wiped or len(self.touched) > MAX_TOUCHED_IDS:
            return [TOUCH_ALL]
        touched = set(self.touched)
        others = sorted(self._minute_encounters)  # staff minutes of encounters loaded before
        for start in range(0, len(others), 10_000):
            e = models.Encounter
            part = others[start : start + 10_000]
            touched.update(self._conn.execute(select(e.patient_id).where(among(e.encounter_id, part, self._dialect))).scalars().all())
        return sorted(touched)

    def _note_minute_months(self) -> None:
        """The staff minutes of encounters loaded before change the months of those encounters."""
        others = sorted(self._minute_encounters)
        e = models.Encounter
        for start in range(0, len(others), 10_000):
            part = others[start : start + 10_000]
            first = self._conn.execute(select(func.min(e.start_date)).where(among(e.encounter_id, part, self._dialect)))
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
        hashes = _unique(np.concatenate(self._patients))
        rows = zip([import_id] * len(hashes), hashes.view(np.int64).tolist(), strict=True)
        if self._dialect == "postgresql":
            # Every row's import_id is the import_run row this transaction has just written: no
            # foreign-key trigger needed per row (86,765 patients of a month: 0.53 s -> 0.10 s).
            with _without_row_triggers(self._conn) if self._keys_as_a_set else nullcontext():
                copy_rows(self._conn, models.ImportPatient.__tablename__, ["import_id", "patient_hash"], rows)
        else:
            self._conn.exec_driver_sql("INSERT INTO import_patient (import_id, patient_hash) VALUES (?, ?)", list(rows))


def _stage_batch(ingest, name: str, frame: pd.DataFrame, table: Table, names: list[str], defaults: dict[str, object]) -> None:
    """A staged table's batch, typed as the store's columns, appended to its stage file (stage thread)."""
    ingest(name, _arrow_batch(frame, table, names, defaults))


def _rows_of(conn, table: Table) -> list[tuple]:
    """Every row of a small table in key order (practices, teams, staff)."""
    return [tuple(r) for r in conn.execute(select(table).order_by(*table.primary_key.columns))]


@contextmanager
def open_load(engine: Engine, report: ImportReport) -> Iterator[Load]:
    """Open one all-or-nothing load on ``engine``; see :class:`Load`. Rolled back unless committed."""
    started = time.perf_counter()
    started_at = datetime.now(UTC) - timedelta(seconds=report.seconds)
    on_sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if on_sqlite:
            # Outside a transaction: foreign_keys is a no-op inside one (sqlite.org/pragma.html#pragma_foreign_keys).
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            conn.exec_driver_sql("PRAGMA cache_size=-262144")  # 256 MB page cache for this load
            conn.exec_driver_sql("PRAGMA threads=2")  # index builds may sort on a second core
            conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")  # the load's commit: checkpoint_after_write
            connect = _adbc_sqlite_connect()
            stage = _Stage(conn, connect) if connect is not None else None
            conn.commit()
        else:
            stage = None
        try:
            load = Load(conn, report, started, started_at, stage)
            try:
                yield load
            finally:
                load._close()
                if load._transaction.is_active:
                    load._transaction.rollback()
        finally:
            if stage is not None:
                stage.close(conn)
            if on_sqlite:
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                conn.exec_driver_sql("PRAGMA wal_autocheckpoint=1000")  # SQLite's default, for the pool's next user
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

"""SQLite: many rows into the store through a stage file.

sqlite3's ``executemany`` binds every value of every row from Python: about 12 µs a row of the
subgroup assignments (535,000 rows, one block of 25,000 patients x 25 months: 6.4-7.0 s). ADBC
(``adbc-driver-sqlite``, Apache Arrow's driver) binds Arrow columns to SQLite in C, into a scratch
file of the table's own without keys or indexes; one ``INSERT ... SELECT`` then moves the rows into
the store in the caller's transaction (the same block: 1.5 s + 1.6 s). The store's keys and
constraints are checked at the move as for any insert.

Rules the stage keeps (see the import's ``_Stage`` in :mod:`core.ingest.loader`, which writes the
patient tables the same way):

- ADBC opens the stage files only, never the store: the driver carries its own copy of SQLite,
  and two copies in one process do not see each other's locks (when ADBC's connection to a WAL
  store closes it deletes the store's ``-wal`` and ``-shm`` under the connections still open).
- SQLite cannot attach a file inside a transaction, and once a transaction has read a file it
  keeps that read's view of it to the end: a stage is attached before the caller's transaction
  begins, takes all its rows, then is moved once.
- Without the ``adbc-driver-sqlite`` package, or on PostgreSQL, there is no stage (callers write
  row by row, or by ``COPY``).

The files lie in the system's temporary folder (``$TMPDIR``), as big as the rows staged, and are
deleted when the stage closes.
"""

import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import Boolean, Date, DateTime, Float, Integer, Table
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError


def adbc_sqlite_connect():
    """ADBC's SQLite ``connect`` (package ``adbc-driver-sqlite``), or None when it is not installed."""
    try:
        from adbc_driver_sqlite.dbapi import connect
    except ImportError:
        return None
    return connect


def arrow_type(column) -> pa.DataType:
    """The Arrow type of a table column's values."""
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


def arrow_values(series: pd.Series, column) -> pa.Array:
    """One frame column as an Arrow array of the table column's type (null for missing, NaN
    included); no Python object per value except where the frame already holds objects. Dates
    may be datetime64, ``date`` objects or ISO strings."""
    kind = arrow_type(column)
    if pa.types.is_date32(kind):
        dates = series if pd.api.types.is_datetime64_any_dtype(series.dtype) else pd.to_datetime(series, errors="raise")
        values = dates.to_numpy(dtype="datetime64[ns]")
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


def make_stage_file(path: str, table: Table, dialect) -> None:
    """A scratch SQLite file at ``path`` with an empty table of ``table``'s name and columns, without
    keys or constraints (the store's are checked when the rows move in)."""
    columns = ", ".join(f'"{c.name}" {c.type.compile(dialect=dialect)}' for c in table.columns)
    with sqlite3.connect(path) as scratch:
        scratch.execute(f'CREATE TABLE "{table.name}" ({columns})')
    scratch.close()


def open_stage_writer(connect, path: str):
    """An ADBC connection to the stage file ``path``, without journal or syncs (a scratch file)."""
    adbc = connect(path, autocommit=True)
    with adbc.cursor() as cursor:
        for pragma in ("PRAGMA journal_mode=OFF", "PRAGMA synchronous=OFF"):
            cursor.execute(pragma)
            cursor.fetchall()
    return adbc


def ingest(adbc, name: str, batch: pa.Table) -> None:
    """Append an Arrow table to table ``name`` of a stage file, in one transaction. (ADBC writes
    dates as ISO text and booleans as 0 and 1, as SQLAlchemy stores them; it binds chunk by chunk:
    one chunk a column.)"""
    with adbc.cursor() as cursor:
        cursor.execute("BEGIN")
        cursor.adbc_ingest(name, batch.combine_chunks(), mode="append")
        cursor.execute("COMMIT")


class TableStage:
    """The stage file of one store table, attached to a store connection (:func:`table_stage`)."""

    def __init__(self, conn: Connection, table: Table, connect, alias: str):
        self.table = table
        self.rows = 0
        self._connect = connect
        self._adbc = None
        self._names: list[str] = []
        self._alias = alias
        self._dir = tempfile.mkdtemp(prefix=f"stage-{table.name}-")
        self.path = f"{self._dir}/{table.name}.db"
        make_stage_file(self.path, table, conn.dialect)
        conn.exec_driver_sql(f"ATTACH DATABASE ? AS {alias}", (self.path,))

    def append(self, frame: pd.DataFrame) -> None:
        """Append a frame's rows (the columns it has, each in the table column's type; the others
        take NULL, so give every column without a default)."""
        if frame.empty:
            return
        if self._adbc is None:
            self._adbc = open_stage_writer(self._connect, self.path)
        names = list(frame.columns)
        batch = pa.Table.from_arrays([arrow_values(frame[n], self.table.c[n]) for n in names], names=names)
        ingest(self._adbc, self.table.name, batch)
        self._names = names
        self.rows += len(frame)

    def insert_into(self, conn: Connection) -> int:
        """Insert the staged rows into the store's table, in the order they were staged, in the
        connection's transaction. Nothing may be staged after. Returns the rows moved."""
        if self._adbc is not None:
            self._adbc.close()
            self._adbc = None
        if not self.rows:
            return 0
        quote = conn.dialect.identifier_preparer.quote
        names = ", ".join(quote(n) for n in self._names)
        conn.exec_driver_sql(f"INSERT INTO main.{quote(self.table.name)} ({names}) SELECT {names} FROM {self._alias}.{quote(self.table.name)}")
        moved, self.rows = self.rows, 0
        return moved

    def close(self, conn: Connection) -> None:
        """Detach the stage file (outside a transaction) and delete it. A connection that cannot
        detach it (broken) is invalidated: the pool does not give it out again."""
        if self._adbc is not None:
            self._adbc.close()
            self._adbc = None
        try:
            conn.exec_driver_sql(f"DETACH DATABASE {self._alias}")
            conn.commit()
        except SQLAlchemyError:
            conn.invalidate()
        shutil.rmtree(self._dir, ignore_errors=True)


@contextmanager
def table_stages(conn: Connection, tables: list[Table]) -> Iterator[dict[str, TableStage]]:
    """Stage files for ``tables`` attached to ``conn`` (SQLite with ADBC; else none: an empty
    dict), by table name. Enter it before the connection's transaction begins, and end that
    transaction before it exits. The files are detached and deleted at its end."""
    connect = adbc_sqlite_connect() if conn.dialect.name == "sqlite" else None
    stages: dict[str, TableStage] = {}
    try:
        if connect is not None:
            for i, table in enumerate(tables):
                stages[table.name] = TableStage(conn, table, connect, f"stage_w{i}")
            conn.commit()  # the attach statements' own (SQLAlchemy begins on any statement)
        yield stages
    finally:
        if conn.in_transaction():
            conn.rollback()
        for stage in stages.values():
            stage.close(conn)

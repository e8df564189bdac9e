"""Engine and schema: SQLite file by default, PostgreSQL via ``DATABASE_URL``.

The engine is created by the caller and passed in; nothing here is a module global but the
threads of the checkpoints started after loads (:func:`checkpoint_after_write`).
"""

import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Date, DateTime, Engine, event, inspect, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool
from sqlmodel import SQLModel, create_engine

from core.config import PROJECT_ROOT
from core.store import models  # noqa: F401  (registers every table on SQLModel.metadata)

DEFAULT_SQLITE_PATH = PROJECT_ROOT / "data" / "scorecards.db"

log = logging.getLogger(__name__)


def database_url(url: str | None = None) -> str:
    """The URL to use: the argument, else ``DATABASE_URL``, else the embedded SQLite file."""
    return url or os.environ.get("DATABASE_URL") or f"sqlite:///{DEFAULT_SQLITE_PATH}"


def make_engine(url: str | None = None) -> Engine:
    """Create an engine for ``url`` (see :func:`database_url`) with the settings each backend needs."""
    url = database_url(url)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite"):
        if url in ("sqlite://", "sqlite:///:memory:"):
            engine = create_engine(url, connect_args={"check_same_thread": False}, poolclass=StaticPool)
        else:
            path = Path(url.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "before_cursor_execute", _begin_before_cte_write)
        return engine
    engine = create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    event.listen(engine, "connect", _postgresql_settings)
    return engine


def _postgresql_settings(dbapi_conn, _record) -> None:
    # JIT compilation costs PostgreSQL ~100 ms a query; the dashboard's queries are short reads
    # of indexes, which it never speeds up (0.41 s -> 0.30 s for a worklist's last measures).
    # A SET, not a startup option, so connection poolers that refuse options still work.
    with dbapi_conn.cursor() as cursor:
        cursor.execute("SET jit = off")
    dbapi_conn.commit()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


_WRITE = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


def _begin_before_cte_write(_conn, cursor, statement, _parameters, _context, _executemany) -> None:
    """Open the transaction a write starting with ``WITH`` belongs in.

    Python's sqlite3 (its legacy transaction control, Python < 3.12's only one) opens a
    transaction before a statement whose first word is INSERT, UPDATE, DELETE or REPLACE, and
    runs any other outside one. SQLAlchemy compiles an insert from a select with a common table
    expression as ``WITH ... INSERT``: as a transaction's first write it would commit at once,
    whatever the transaction did after. A write of that shape outside an open transaction gets a
    ``BEGIN`` first, which the driver's commit or rollback then ends (not on a connection in
    autocommit, ``isolation_level`` None). A read that mentions one of the words opens a
    transaction too, which only reads."""
    dbapi = cursor.connection
    if dbapi.isolation_level is None or dbapi.in_transaction:
        return
    if statement.lstrip()[:4].upper() == "WITH" and _WRITE.search(statement):
        cursor.execute("BEGIN")


# Indexes of earlier versions that a newer one replaces (dropped by upgrade_schema).
SUPERSEDED_INDEXES = {"subgroup_assignment": ("ix_subgroup_assignment_month_subgroup",)}


def create_schema(engine: Engine) -> None:
    """Create every table and index that does not exist yet, and bring stores made by earlier
    versions up to date (:func:`upgrade_schema`)."""
    SQLModel.metadata.create_all(engine)
    upgrade_schema(engine)


def upgrade_schema(engine: Engine) -> list[str]:
    """Bring a store made by an earlier version up to date; returns what was done (empty: nothing).

    - ``subgroup_assignment.team_id`` (:func:`add_assignment_team`);
    - ``encounter.paid_date`` (:func:`add_encounter_paid_date`, empty: the claims' run-out
      then comes from the run-out setting); ``encounter.discharge_disposition`` and ``encounter.facility`` (blank: unknown);
    - ``subgroup_assignment.thin_history`` and ``history_note`` (false and '' until the next derive);
    - ``app_user.subject``, filled for users keyed ``sub:<subject>``; ``audit_event.chain_hash``
      (rows without one are chained by the next audited event, ``core.access.audit``);
    - the indexes of ``subgroup_assignment`` and ``app_user`` that are missing are built, the
      ones they supersede dropped (``create_all`` only indexes new tables).
    Idempotent, and cheap on an up-to-date store (it reads the catalogue only).
    """
    done = ["added subgroup_assignment.team_id"] if add_assignment_team(engine) else []
    if add_encounter_paid_date(engine):
        done.append("added encounter.paid_date")
    if _add_column(engine, "encounter", "discharge_disposition", "VARCHAR(32) DEFAULT '' NOT NULL"):
        done.append("added encounter.discharge_disposition")
    if _add_column(engine, "encounter", "facility", "VARCHAR(200) DEFAULT '' NOT NULL"):
        done.append("added encounter.facility")
    if _add_column(engine, "app_user", "subject", "VARCHAR(255)"):
        with engine.begin() as conn:
            conn.execute(text("UPDATE app_user SET subject = SUBSTR(user_key, 5) WHERE user_key LIKE 'sub:%'"))
        done.append("added app_user.subject")
    if _add_column(engine, "audit_event", "chain_hash", "VARCHAR(64)"):
        done.append("added audit_event.chain_hash")
    # the rows assigned before thin history was marked read as enough history until the next derive
    if _add_column(engine, "subgroup_assignment", "thin_history", "BOOLEAN NOT NULL DEFAULT false"):
        done.append("added subgroup_assignment.thin_history")
    if _add_column(engine, "subgroup_assignment", "history_note", "VARCHAR(200) NOT NULL DEFAULT ''"):
        done.append("added subgroup_assignment.history_note")
    for table in (models.SubgroupAssignment.__table__, models.User.__table__):
        present = {i["name"] for i in inspect(engine).get_indexes(table.name)}
        with engine.begin() as conn:
            for index in sorted(table.indexes, key=lambda i: i.name):
                if index.name not in present:
                    index.create(conn)
                    done.append(f"built index {index.name}")
            for name in SUPERSEDED_INDEXES.get(table.name, ()):
                if name in present:
                    conn.execute(text(f"DROP INDEX {name}"))
                    done.append(f"dropped index {name}")
    return done


def _add_column(engine: Engine, table: str, column: str, ddl_type: str) -> bool:
    """Add a column (nullable, or with the default ``ddl_type`` gives) to a store made before it
    existed; whether it was added."""
    if column in {c["name"] for c in inspect(engine).get_columns(table)}:
        return False
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl_type}"))
    return True


def add_assignment_team(engine: Engine) -> bool:
    """Add ``subgroup_assignment.team_id`` to a store made before it existed, filled from the
    attribution of the same patient and month. Returns whether it was added (False: it was there).
    """
    columns = {c["name"] for c in inspect(engine).get_columns("subgroup_assignment")}
    if "team_id" in columns:
        return False
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE subgroup_assignment ADD COLUMN team_id VARCHAR(64)"))
        conn.execute(text(
            "UPDATE subgroup_assignment SET team_id = (SELECT a.team_id FROM attribution a"
            " WHERE a.patient_id = subgroup_assignment.patient_id AND a.month = subgroup_assignment.month)"
        ))  # fmt: skip
    return True


def add_encounter_paid_date(engine: Engine) -> bool:
    """Add the nullable ``encounter.paid_date`` to a store made before it existed (left empty).
    Returns whether it was added (False: it was there)."""
    columns = {c["name"] for c in inspect(engine).get_columns("encounter")}
    if "paid_date" in columns:
        return False
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE encounter ADD COLUMN paid_date DATE"))
    return True


# A write-ahead log at least this large after a load is copied into the database file on a thread
# of its own (:func:`checkpoint_after_write`); a smaller one at once.
BACKGROUND_CHECKPOINT_BYTES = 64 * 2**20
_checkpoints: list[threading.Thread] = []
_checkpoints_lock = threading.Lock()


def inserted_rows(conn, statement) -> int:
    """Run an ``INSERT ... SELECT`` and return how many rows it inserted. SQLAlchemy keeps an
    INSERT's row count only when asked (``preserve_rowcount``), and Python's sqlite3 gives none
    for a statement that starts with ``WITH`` (-1): SQLite's count of changed rows is read instead."""
    if conn.dialect.name == "sqlite":
        driver = conn.connection.driver_connection
        before = driver.total_changes
        conn.execute(statement)
        return driver.total_changes - before
    return conn.execute(statement, execution_options={"preserve_rowcount": True}).rowcount


# A table whose changed rows are under this share of its rows (as of its last analysis) gets fresh
# statistics of its date columns only (:func:`refresh_statistics`); autovacuum analyses every
# column once a tenth of the table has changed.
DATED_ONLY_SHARE = 0.1


def dated_columns(name: str) -> list[str]:
    """The date and timestamp columns of the table ``name``, and a risk score's year: the columns
    whose values move on with each new month."""
    table = SQLModel.metadata.tables[name]
    return [c.name for c in table.columns if isinstance(c.type, Date | DateTime) or (name == "risk_score" and c.name == "year")]


def _analyze_targets(conn, names: list[str], changed: Mapping[str, int] | None) -> list[str]:
    """``ANALYZE`` targets of the tables ``names``: ``name (its dated columns)`` for a table whose
    ``changed`` rows are under :data:`DATED_ONLY_SHARE` of its rows at its last analysis, else the
    whole table."""
    quote = conn.dialect.identifier_preparer.quote
    small = {}
    if changed:
        rows = dict(conn.execute(text("SELECT n, coalesce((SELECT reltuples FROM pg_class WHERE oid = to_regclass(quote_ident(n))), -1) "
                                      "FROM unnest(CAST(:names AS text[])) AS n"), {"names": names}).all())  # fmt: skip
        small = {n for n in names if n in changed and rows.get(n, -1) > 0 and 0 <= changed[n] < DATED_ONLY_SHARE * rows[n]}
    targets = []
    for name in names:
        dated = dated_columns(name) if name in small and name in SQLModel.metadata.tables else []
        targets.append(quote(name) + (f" ({', '.join(map(quote, dated))})" if dated else ""))
    return targets


def refresh_statistics(conn, tables, changed: Mapping[str, int] | None = None) -> None:
    """PostgreSQL: fresh planner statistics of ``tables`` (names), in the caller's transaction.

    Autovacuum analyses a table once a tenth of it has changed, so after one month's import or
    derive the month's rows are outside the stored histograms: the planner takes the month for a
    handful of rows and picks plans made for a handful (100,000 patients, one new month: a cell
    block's read of its attributions and subgroups 105 s against 0.1 s; the month's derive 304 s
    against 149 s for the whole network's). ``ANALYZE`` samples 30,000 rows a table, about a
    second for the largest tables of 100,000 or 1,000,000 patients.

    ``changed`` (rows written per table name): a table that changed by less than a tenth
    (:data:`DATED_ONLY_SHARE`) gets the statistics of its date columns only (and its row count),
    the ones a month moves: its ids, codes and teams keep theirs until autovacuum's next analysis.
    100,000 patients, one new month: attribution 191 -> 104 ms, encounter 320 -> 148 ms. SQLite:
    nothing (its statistics are averages per index, which a month does not move; the full derive
    analyses).
    """
    names = sorted(set(tables))
    if conn.dialect.name == "postgresql" and names:
        conn.exec_driver_sql("ANALYZE " + ", ".join(_analyze_targets(conn, names, changed)))


def refresh_statistics_side_by_side(
    engine: Engine, tables, connections: int = 2, changed: Mapping[str, int] | None = None
) -> None:
    """PostgreSQL: :func:`refresh_statistics` of committed ``tables`` on ``connections`` connections
    of ``engine`` at once, each in its own transaction, the tables dealt out by size (largest first,
    to the connection with the fewest bytes so far). Each ``ANALYZE`` keeps one server core busy:
    after one month's import into the 100,000-patient store, the eleven tables took 1.32 s on one
    connection and 0.68 s on two (the server's log). Only for rows already committed: another
    connection does not see the caller's uncommitted ones. ``changed``: as :func:`refresh_statistics`.
    SQLite: nothing."""
    names = sorted(set(tables))
    if engine.dialect.name != "postgresql" or not names:
        return
    with engine.connect() as conn:
        sizes = dict(conn.execute(text("SELECT n, coalesce(pg_relation_size(to_regclass(quote_ident(n))), 0) "
                                       "FROM unnest(CAST(:names AS text[])) AS n"), {"names": names}).all())  # fmt: skip
    shares: list[list[str]] = [[] for _ in range(max(1, connections))]
    totals = [0] * len(shares)
    for name in sorted(names, key=lambda n: (-sizes.get(n, 0), n)):
        least = totals.index(min(totals))
        shares[least].append(name)
        totals[least] += sizes.get(name, 0)

    shares = [share for share in shares if share]
    errors: list[BaseException] = []

    def analyze(share: list[str]) -> None:
        try:
            with engine.begin() as conn:
                refresh_statistics(conn, share, changed)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread below
            errors.append(exc)

    # a thread of its own for every share but the first, which the caller's thread analyses: each
    # share on its own connection at once, however the threads are scheduled (a pool of threads
    # may hand a second share to the thread that finished the first)
    others = [threading.Thread(target=analyze, args=(share,), daemon=True) for share in shares[1:]]
    for thread in others:
        thread.start()
    analyze(shares[0])
    for thread in others:
        thread.join()
    if errors:
        raise errors[0]


def checkpoint_after_write(conn, background_bytes: int | None = None) -> threading.Thread | None:
    """Copy the pages an SQLite load committed to its write-ahead log into the database file (a
    ``PASSIVE`` checkpoint: it waits for no reader or writer), the job SQLite's automatic
    checkpoint does at the commit that passes 1,000 pages of log.

    The load turns that automatic checkpoint off (``PRAGMA wal_autocheckpoint=0``), because after a
    month's import into a large store its log holds 560 MB of pages (100,000 patients: the rows go
    into every patient's index pages) and the copy took 1.4 s of its commit, while the derive that
    follows starts with a few seconds in which one core is idle (its first pass and the workers'
    start). So a log of :data:`BACKGROUND_CHECKPOINT_BYTES` or more is copied on a thread of its
    own, on its own connection of the same SQLite library (another copy of SQLite, such as
    ADBC's, would not see this one's locks: ``core.ingest.loader._Stage``); a smaller one here, at
    once (``background_bytes``: another size than that; 0, always on a thread). Nothing waits for
    it: the committed rows are in the log, which every reader sees, and an unfinished or failed
    copy is redone by the next checkpoint (a warning is logged).
    :func:`wait_for_checkpoints` waits for the threads (the benchmark's clock, the tests); Python
    waits for them before it exits. Returns the thread, or None.
    """
    path = conn.engine.url.database
    if conn.dialect.name != "sqlite" or path in (None, "", ":memory:"):
        return None
    wal = Path(path + "-wal")
    if background_bytes is None:
        background_bytes = BACKGROUND_CHECKPOINT_BYTES
    if not wal.exists() or wal.stat().st_size < background_bytes:
        try:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        except SQLAlchemyError as e:  # the load is committed; its pages stay in the log, readable
            log.warning("checkpoint of %s after a load failed (%s); the next checkpoint copies its pages", path, e)
        return None
    thread = threading.Thread(target=_checkpoint, args=(str(Path(path).resolve()),), name="sqlite-checkpoint")
    with _checkpoints_lock:
        _checkpoints[:] = [t for t in _checkpoints if t.is_alive()]
        _checkpoints.append(thread)
    thread.start()
    return thread


@contextmanager
def begin_interactive(engine: Engine) -> Iterator[Connection]:
    """``engine.begin()`` for a write someone waits for (a subgroup override's derive). On an
    SQLite file its commit does not copy the log's pages into the database file, as SQLite's
    automatic checkpoint does at the commit that passes 1,000 pages of log: a thread does it after
    the commit (:func:`checkpoint_after_write`). 100,000 patients: an override rewrites about
    3,300 cells, whose three indexes dirty about 28 MB of pages, and that copy took 0.21-0.27 s of
    its commit (0.02-0.03 s without it), of an override of about 2.2 s."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        with engine.begin() as conn:
            yield conn
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_autocheckpoint=0")
        conn.commit()
        try:
            with conn.begin():
                yield conn
        finally:
            conn.exec_driver_sql("PRAGMA wal_autocheckpoint=1000")  # SQLite's default, for the pool's next user
            conn.commit()
        checkpoint_after_write(conn, background_bytes=0)


def _checkpoint(path: str) -> None:
    try:
        connection = sqlite3.connect(path, timeout=30)
        try:
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            connection.close()
    except sqlite3.Error as e:  # the pages stay in the log, readable; the next checkpoint copies them
        log.warning("checkpoint of %s after a load failed (%s); the next checkpoint copies its pages", path, e)


def wait_for_checkpoints() -> None:
    """Wait for the checkpoints :func:`checkpoint_after_write` started on threads."""
    with _checkpoints_lock:
        threads = list(_checkpoints)
    for thread in threads:
        thread.join()


def copy_rows(conn, table: str, columns: list[str], rows) -> None:
    """PostgreSQL: write ``rows`` (tuples in the order of ``columns``) into ``table`` with ``COPY``
    (psycopg's copy protocol, several times faster than ``executemany``), in the connection's
    transaction."""
    quote = conn.dialect.identifier_preparer.quote
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {quote(table)} ({', '.join(quote(c) for c in columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)

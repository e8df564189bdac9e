"""Whole copies of a store, for the benchmark's saved stores and the tests' per-test stores.

- SQLite: :func:`copy_sqlite` copies the file through SQLite's backup API, page for page, so the
  pages still in a write-ahead log are in the copy, and no lock of this process's is dropped (a
  file copy made in the process, then closed, drops the process's POSIX locks on that file:
  "locking protocol" on its next write).
- PostgreSQL: :func:`copy_database` makes ``CREATE DATABASE ... TEMPLATE``; a template may have no
  other session, and one just closed can still be ending on the server ("being accessed by other
  users"), so the copy asks again until it has ended (and, with ``end_sessions``, ends them:
  autovacuum may still be working in a store after a big write).
"""

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL, make_url

BUSY = "being accessed by other users"
ATTEMPTS, WAIT_S = 50, 0.1  # (the server itself waits up to 5 s for them at each attempt)


def remove_sqlite(path: str | Path) -> None:
    """Delete an SQLite file and its write-ahead log and shared-memory index, where they exist."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def copy_sqlite(source: str | Path, target: str | Path) -> None:
    """``target`` (replaced, with its log) becomes a page-for-page copy of the SQLite file ``source``."""
    remove_sqlite(target)
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


@contextmanager
def server(url: str | URL, database: str | None = "postgres") -> Iterator[Connection]:
    """A connection outside any transaction (as CREATE and DROP DATABASE need) to the PostgreSQL
    server of ``url``: to its ``database`` (the maintenance database by default, since a database
    cannot be dropped or copied from a session of its own; ``None``: the URL's own)."""
    u = make_url(url)
    admin = create_engine(u if database is None else u.set(database=database), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            yield conn
    finally:
        admin.dispose()


def create_database(conn: Connection, name: str, template: str | None = None, end_sessions: bool = False) -> None:
    """On ``conn`` (:func:`server`): database ``name``, empty or a copy of ``template``. Waits for a
    template's last sessions to end, ending them first with ``end_sessions``."""
    create = f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")
    for attempt in range(ATTEMPTS):
        if template and end_sessions:
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name "
                              "AND pid <> pg_backend_pid()"), {"name": template})  # fmt: skip
        try:
            conn.execute(text(create))
            return
        except Exception as exc:
            if BUSY not in str(exc) or attempt == ATTEMPTS - 1:
                raise
            time.sleep(WAIT_S)


def drop_database(conn: Connection, name: str) -> None:
    """On ``conn`` (:func:`server`): drop database ``name`` if it exists, ending its sessions."""
    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def copy_database(url: str | URL, source: str, target: str) -> None:
    """On the PostgreSQL server of ``url``: ``target`` (dropped first) becomes a copy of ``source``;
    sessions still on ``source`` are ended (the caller's own databases only)."""
    with server(url) as conn:
        drop_database(conn, target)
        create_database(conn, target, template=source, end_sessions=True)

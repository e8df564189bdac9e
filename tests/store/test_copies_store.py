"""Whole copies of a store (core/store/copies.py), which the benchmark and the tests' own stores
use: an SQLite copy holds the rows still in the write-ahead log and replaces the target's file and
log; a PostgreSQL copy is made while a session is still open on its source."""

from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from core.store.copies import copy_database, copy_sqlite, drop_database, remove_sqlite, server
from core.store.db import create_schema, make_engine
from core.store.models import AppSetting


def _settings(engine) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(select(AppSetting.key, AppSetting.value)).all())


def test_an_sqlite_copy_holds_the_rows_still_in_the_log_and_replaces_the_target(tmp_path):
    source, target = tmp_path / "source.db", tmp_path / "target.db"
    store = make_engine(f"sqlite:///{source}")
    create_schema(store)
    with store.connect() as conn:  # held open, so nothing checkpoints the log into the file
        conn.execute(text("PRAGMA wal_autocheckpoint = 0"))
        conn.commit()
        with conn.begin():
            conn.execute(AppSetting.__table__.insert(), [{"key": "in", "value": "the log"}])
        assert Path(f"{source}-wal").stat().st_size > 0
        old = make_engine(f"sqlite:///{target}")
        create_schema(old)
        with old.begin() as c:
            c.execute(AppSetting.__table__.insert(), [{"key": "old", "value": "target"}])
        old.dispose()

        copy_sqlite(source, target)

        copy = make_engine(f"sqlite:///{target}")
        assert _settings(copy) == {"in": "the log"}
        with copy.connect() as c:  # the source's process still writes after the copy
            assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        copy.dispose()
        with conn.begin():
            conn.execute(AppSetting.__table__.insert(), [{"key": "after", "value": "copy"}])
    assert _settings(store) == {"in": "the log", "after": "copy"}
    store.dispose()
    remove_sqlite(target)
    assert not any(Path(f"{target}{s}").exists() for s in ("", "-wal", "-shm"))


@pytest.mark.parametrize("store_engine", ["postgresql"], indirect=True)
def test_a_postgresql_copy_ends_the_sessions_left_on_its_source(store_engine):
    url, source = store_engine.url, store_engine.url.database
    with store_engine.begin() as conn:
        conn.execute(AppSetting.__table__.insert(), [{"key": "kept", "value": "yes"}])
    target = f"{source}_copy"
    open_session = store_engine.connect()  # a session left on the source (say, autovacuum's)
    open_session.execute(text("SELECT 1"))
    copy_database(url, source, target)
    with pytest.raises(OperationalError, match="terminating connection"):  # the copy ended it
        open_session.execute(text("SELECT 1"))
    open_session.invalidate()
    open_session.close()
    copy = make_engine(url.set(database=target).render_as_string(hide_password=False))
    try:
        assert _settings(copy) == {"kept": "yes"}
    finally:
        copy.dispose()
        with server(url) as conn:
            drop_database(conn, target)

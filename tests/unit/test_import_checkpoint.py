"""An SQLite import leaves its rows in the write-ahead log at its commit and copies them into the
database file itself (``core.store.db.checkpoint_after_write``): on a thread of its own when the
log is large, at once when it is small. Either way the database file alone holds the import once
the copy is done, and the connection goes back to the pool with SQLite's automatic checkpoint on."""

import shutil
import sqlite3

import pytest
from sqlalchemy import text

import core.store.db as db
from core.ingest import import_path, loader


@pytest.mark.parametrize("background", [True, False], ids=["large log: on a thread", "small log: at once"])
def test_an_import_copies_its_log_into_the_database_file(sample_bundle, tmp_path, monkeypatch, background):
    monkeypatch.setattr(db, "BACKGROUND_CHECKPOINT_BYTES", 0 if background else 2**40)
    threads = []

    def recorded(conn):
        threads.append(db.checkpoint_after_write(conn))
        return threads[-1]

    monkeypatch.setattr(loader, "checkpoint_after_write", recorded)
    engine = db.make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    db.create_schema(engine)
    report = import_path(engine, sample_bundle, fmt="csv")
    assert report.ok, report.to_text()
    assert len(threads) == 1 and (threads[0] is not None) == background
    db.wait_for_checkpoints()
    with engine.connect() as conn:  # the pool hands out the load's connection again
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
        assert conn.execute(text("SELECT count(*) FROM patient")).scalar_one() == report.loaded["patient"]
    # the database file without its log: what the checkpoint copied
    shutil.copyfile(tmp_path / "store.db", tmp_path / "alone.db")
    alone = sqlite3.connect(tmp_path / "alone.db")
    try:
        assert alone.execute("SELECT count(*) FROM patient").fetchone()[0] == report.loaded["patient"]
        assert alone.execute("SELECT count(*) FROM import_run").fetchone()[0] == 1
    finally:
        alone.close()
    engine.dispose()


def test_a_failed_checkpoint_on_its_thread_is_logged_and_loses_nothing(tmp_path, caplog):
    """A checkpoint that cannot open the file (here: no file at all) logs a warning; the committed
    rows were never in its hands."""
    db._checkpoint(str(tmp_path / "missing" / "store.db"))
    assert "the next checkpoint copies its pages" in caplog.text

"""An SQLite import leaves its rows in the write-ahead log at its commit and copies them into the
database file itself (``core.store.db.checkpoint_after_write``): on a thread of its own when the
log is large, at once when it is small. Either way the database file alone holds the import once
the copy is done, and the connection goes back to the pool with SQLite's automatic checkpoint on.

A write someone waits for (``core.store.db.begin_interactive``: a subgroup override's) commits
without the copy too, and has it done on a thread."""

import shutil
import sqlite3

import pytest
from sqlalchemy import select, text

import core.store.db as db
from core.ingest import import_path, loader

ROWS = 20_000  # about 2,000 pages of log: past the 1,000 at which SQLite's own checkpoint runs at the commit


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
    assert _rows_in_the_file_alone(tmp_path, "patient") == report.loaded["patient"]
    assert _rows_in_the_file_alone(tmp_path, "import_run") == 1
    engine.dispose()


def test_a_failed_checkpoint_on_its_thread_is_logged_and_loses_nothing(tmp_path, caplog):
    """A checkpoint that cannot open the file (here: no file at all) logs a warning; the committed
    rows were never in its hands."""
    db._checkpoint(str(tmp_path / "missing" / "store.db"))
    assert "the next checkpoint copies its pages" in caplog.text


def _rows_in_the_file_alone(folder, table: str = "t") -> int:
    """Rows of ``table`` in ``folder``'s store.db without its log (a copy of the file alone; 0
    when the table is not in it)."""
    shutil.copyfile(folder / "store.db", folder / "alone.db")
    alone = sqlite3.connect(folder / "alone.db")
    try:
        found = alone.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
        return alone.execute(f"SELECT count(*) FROM {table}").fetchone()[0] if found else 0
    finally:
        alone.close()
        (folder / "alone.db").unlink()


def _write(conn) -> None:
    # (an INSERT first: Python's sqlite3 opens the transaction before a statement that starts with one)
    conn.exec_driver_sql("INSERT INTO t WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                         "SELECT i, printf('%0200d', i) FROM n", (ROWS,))


@pytest.fixture
def file_engine(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, pad TEXT)")
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    yield engine
    engine.dispose()


def test_an_interactive_write_commits_without_copying_the_log_and_a_thread_copies_it(file_engine, tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(db, "_checkpoint", asked.append)  # the thread only records what it was asked
    with db.begin_interactive(file_engine) as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        _write(conn)
    db.wait_for_checkpoints()
    assert asked == [str((tmp_path / "store.db").resolve())]
    assert _rows_in_the_file_alone(tmp_path) == 0  # committed to the log only
    with file_engine.connect() as conn:  # the pool's next user: SQLite's default again; the rows are there
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == ROWS
    monkeypatch.undo()
    db._checkpoint(asked[0])  # what the thread does
    assert _rows_in_the_file_alone(tmp_path) == ROWS


def test_a_plain_write_of_as_many_pages_is_copied_at_its_commit(file_engine, tmp_path):
    """The control: ``engine.begin()`` has SQLite copy the log at the commit, so the test above
    would see the rows in the file alone if the interactive write did the same."""
    with file_engine.begin() as conn:
        _write(conn)
    assert _rows_in_the_file_alone(tmp_path) == ROWS


def test_a_failed_interactive_write_leaves_nothing_and_asks_no_copy(file_engine, tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(db, "_checkpoint", asked.append)
    with pytest.raises(RuntimeError, match="stop"):
        with db.begin_interactive(file_engine) as conn:
            _write(conn)
            raise RuntimeError("stop")
    db.wait_for_checkpoints()
    assert asked == []
    with file_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 0
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000


def test_a_subgroup_override_has_its_log_copied_on_a_thread(sample_db_url, tmp_path, monkeypatch):
    from core.access.policy import Scope
    from core.derive.subgroups.overrides import lift_override, set_override
    from core.store.models import SubgroupAssignment as S

    path = tmp_path / "store.db"
    shutil.copyfile(sample_db_url.removeprefix("sqlite:///"), path)
    engine = db.make_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        patient, month, subgroup = conn.execute(select(S.patient_id, S.month, S.subgroup).order_by(S.patient_id, S.month).limit(1)).one()
    threads = []
    monkeypatch.setattr(db, "_checkpoint", threads.append)
    scope = Scope("lead", "Lead", "admin", (), (), True, True)
    target = "frail" if subgroup != "frail" else "healthy"
    override_id = set_override(engine, scope, patient, target, month, "checkpoint test")
    lift_override(engine, scope, override_id)
    db.wait_for_checkpoints()
    assert threads == [str(path.resolve())] * 2  # one copy a derive, after its commit
    engine.dispose()

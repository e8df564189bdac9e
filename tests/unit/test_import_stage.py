"""SQLite imports stage the patient tables' rows in scratch files by ADBC and move them into the
store at each table's end (core/ingest/loader.py, ``_Stage``): the store then holds exactly what
the row-by-row path writes (values and SQLite storage classes), a failed load leaves the store,
the connection and the temporary folder as they were, and a table started again in one load still
lands whole."""

import tempfile
import threading
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text
from sqlmodel import SQLModel

from core.ingest import import_path, loader
from core.ingest.loader import STAGED_TABLES, load_tables, open_load
from core.ingest.report import ImportReport
from core.store.db import create_schema, make_engine
from sample_data.split import split_bundle

KEPT = ("import_run", "app_setting")  # the import's own times differ between any two imports


def _store(tmp_path, name: str):
    engine = make_engine(f"sqlite:///{tmp_path / name}")
    create_schema(engine)
    return engine


def _stored(engine) -> dict[str, list[tuple]]:
    """Every row of every table with each value's SQLite storage class, in key order."""
    out = {}
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            if table.name in KEPT:
                continue
            columns = ", ".join(f'"{c.name}", typeof("{c.name}")' for c in table.columns)
            keys = ", ".join(f'"{c.name}"' for c in table.primary_key.columns)
            out[table.name] = conn.execute(text(f'SELECT {columns} FROM "{table.name}" ORDER BY {keys}')).all()
    return out


def _patient() -> pd.DataFrame:
    return pd.DataFrame({"patient_id": ["P1"], "birth_date": [pd.Timestamp("1950-05-01")], "sex": ["female"]})


def _encounters(ids: list[str], kinds: list | None = None) -> pd.DataFrame:
    n = len(ids)
    return pd.DataFrame({"encounter_id": ids, "patient_id": ["P1"] * n, "kind": kinds or ["phone_call"] * n,
                         "start_date": [pd.Timestamp("2024-01-02")] * n, "is_internal": [True] * n})  # fmt: skip


def _staff_minutes(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"encounter_id": ids, "role": ["physician"] * len(ids), "minutes": [10.0] * len(ids)})


@pytest.fixture
def stage_folder(tmp_path, monkeypatch):
    """The temporary folder the stage files are made in, for this test alone."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_staged_import_stores_what_row_by_row_stores(sample_bundle, tmp_path, monkeypatch, stage_folder):
    """The sample network's months before its last, then the last month with the patients' rows
    sent again (updates through ON CONFLICT), each into a store by the stage and into one row by row."""
    months = sorted(pd.read_csv(sample_bundle / "attribution.csv", usecols=["month"], dtype=str)["month"].str[:7].unique())
    split_bundle(sample_bundle, months[-1], tmp_path / "before", tmp_path / "after")
    staged, rows = _store(tmp_path, "staged.db"), _store(tmp_path, "rows.db")
    moved, opened = [], []
    move = loader._Stage.move
    monkeypatch.setattr(loader._Stage, "move", lambda self, conn, table, *a: (moved.append(table.name), move(self, conn, table, *a)))
    connect = loader._adbc_sqlite_connect()
    monkeypatch.setattr(loader, "_adbc_sqlite_connect", lambda: lambda path, **kw: (opened.append(path), connect(path, **kw))[1])

    for part in ("before", "after"):
        moved.clear()
        report = import_path(staged, tmp_path / part, fmt="csv")
        assert report.ok, report.to_text()
        assert sorted(moved) == sorted(STAGED_TABLES)  # every staged table's rows came through its stage file
        with monkeypatch.context() as m:
            m.setattr(loader, "_adbc_sqlite_connect", lambda: None)
            rows_report = import_path(rows, tmp_path / part, fmt="csv")
            assert rows_report.ok
        assert _stored(staged) == _stored(rows), part
        assert report.new_rows == rows_report.new_rows, part  # counted after each table's end, on its thread
        assert all(report.loaded.get(name) for name in STAGED_TABLES), report.loaded  # every staged table took rows
        assert list(stage_folder.iterdir()) == []  # the stage files went with the load
    # ADBC (its own copy of SQLite) opened the stage files only, never the store: closing a file the
    # process's other SQLite also has open deletes a WAL store's -wal and -shm under it (_Stage)
    assert opened and all(Path(path).is_relative_to(stage_folder) for path in opened), opened


def test_a_failed_move_leaves_store_connection_and_folder_as_they_were(engine, stage_folder):
    """A value the store refuses (NOT NULL) is met only when the staged rows move in: the load is
    rolled back with the table named, the stage files are detached and deleted."""
    assert load_tables(engine, {"patient": _patient()}, ImportReport("frames", "test")).ok
    before = _stored(engine)

    report = load_tables(engine, {"encounter": _encounters(["E1", "E2"], ["phone_call", None])}, ImportReport("frames", "test"))

    assert not report.ok and report.errors[0].file == "encounter", report.to_text()
    assert "NOT NULL constraint failed: encounter.kind" in report.errors[0].message
    assert _stored(engine) == before
    with engine.connect() as conn:  # the in-memory store's one connection: no stage file left attached
        attached = [row[1] for row in conn.exec_driver_sql("PRAGMA database_list")]
    assert "main" in attached and not [name for name in attached if name.startswith("stage")], attached
    assert list(stage_folder.iterdir()) == []


def test_a_table_started_again_in_one_load_lands_whole(engine):
    """Once a table's stage file was read by the load's transaction, nothing else may write it: the
    table started again goes row by row, and both parts land."""
    report = ImportReport("frames", "test")
    with open_load(engine, report) as load:
        load.start_table("patient")
        load.write(_patient())
        load.start_table("encounter")
        load.write(_encounters(["E1", "E2"]))
        load.start_table("encounter")
        load.write(_encounters(["E3"]))
        load.commit()

    assert report.ok, report.to_text()
    assert [row[0] for row in _stored(engine)["encounter"]] == ["E1", "E2", "E3"]


def test_a_connection_that_cannot_detach_its_stage_files_is_not_given_out_again(tmp_path, stage_folder):
    """DETACH fails inside an open transaction: the stage files are still deleted and the
    connection is invalidated, so the pool cannot hand a connection with stage names to the next load."""
    engine = _store(tmp_path, "store.db")
    with engine.connect() as conn:
        stage = loader._Stage(conn, loader._adbc_sqlite_connect())
        conn.exec_driver_sql("BEGIN")
        conn.exec_driver_sql("SELECT count(*) FROM stage_0.attribution").all()

        stage.close(conn)

        assert conn.invalidated
    assert list(stage_folder.iterdir()) == []
    with engine.connect() as conn:
        attached = [row[1] for row in conn.exec_driver_sql("PRAGMA database_list")]
    assert attached == ["main"]


def test_a_tables_end_runs_while_the_next_table_is_staged(engine, monkeypatch):
    """The end of a staged table that was empty when the load opened (its move) runs on the
    connection's thread while the next table's batch goes to its stage file: the move here waits
    for that batch, which a load that finished each table before the next could never give it."""
    staged_next = threading.Event()
    overlapped = []
    move, ingest = loader._Stage.move, loader._Stage.ingest

    def slow_move(self, conn, table, *args):
        if table.name == "encounter":
            overlapped.append(staged_next.wait(timeout=10))
        move(self, conn, table, *args)

    def noted_ingest(self, name, batch):
        ingest(self, name, batch)
        if name == "staff_minutes":
            staged_next.set()

    monkeypatch.setattr(loader._Stage, "move", slow_move)
    monkeypatch.setattr(loader._Stage, "ingest", noted_ingest)
    report = load_tables(engine, {"patient": _patient(), "encounter": _encounters(["E1", "E2"]),
                                  "staff_minutes": _staff_minutes(["E1"])}, ImportReport("frames", "test"))  # fmt: skip

    assert report.ok, report.to_text()
    assert overlapped == [True]
    assert report.new_rows == {"patient": 1, "encounter": 2, "staff_minutes": 1}


def test_a_move_refused_after_the_next_table_was_read_is_reported_under_its_table(engine, stage_folder):
    """A staged table's end fails while the next table is read and checked: the load is rolled
    back with the failed table named, beside what the checks of the next one found."""
    assert load_tables(engine, {"patient": _patient()}, ImportReport("frames", "test")).ok
    before = _stored(engine)
    report = ImportReport("frames", "test")

    with pytest.raises(loader.LoadFailed), open_load(engine, report) as load:
        load.start_table("encounter")
        load.write(_encounters(["E1", "E2"], ["phone_call", None]))  # NOT NULL: refused at the move only
        load.start_table("staff_minutes")
        load.write(_staff_minutes(["E1"]))
        report.add_error("staff_minutes.csv", 2, "minutes", "a check of the next file")
        load.commit()

    assert [e.file for e in report.errors] == ["staff_minutes.csv", "encounter"], report.to_text()
    assert "NOT NULL constraint failed: encounter.kind" in report.errors[1].message
    assert _stored(engine) == before
    assert list(stage_folder.iterdir()) == []

"""The derive's big writes on SQLite go through stage files (``core.store.stage``): ADBC writes the
rows into a scratch file, one ``INSERT ... SELECT`` moves them into the store. The store then holds
exactly what the row-by-row path (no ADBC) stores, value for value and with the same SQLite storage
classes; ADBC never opens the store; a failure rolls everything back and leaves no stage file."""

import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import inspect

import core.store.stage as stage
from core.derive.cells import build_cells
from core.derive.subgroups.assign import assign_subgroups
from core.store.db import make_engine
from tests.checksum import table_checksums

from .test_subgroups_store import RULES

WRITTEN = ("subgroup_assignment", "risk_score", "cell")


def _storage_classes(path: Path) -> dict[str, list]:
    """Per table, every column's distinct SQLite storage classes (``typeof``)."""
    out = {}
    with sqlite3.connect(path) as conn:
        for table in WRITTEN:
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            out[table] = [sorted(v for (v,) in conn.execute(f'SELECT DISTINCT typeof("{c}") FROM {table}')) for c in columns]
    conn.close()
    return out


def _indexes(engine) -> dict[str, list[str]]:
    inspector = inspect(engine)
    return {t: sorted(i["name"] for i in inspector.get_indexes(t)) for t in WRITTEN}


def _derive(path: Path) -> None:
    engine = make_engine(f"sqlite:///{path}")
    assign_subgroups(engine, RULES, block_patients=150, workers=1)
    build_cells(engine, workers=1)
    engine.dispose()


@pytest.fixture
def two_copies(sample_db_url, tmp_path) -> tuple[Path, Path]:
    source = Path(sample_db_url.removeprefix("sqlite:///"))
    copies = tmp_path / "staged.db", tmp_path / "row_by_row.db"
    for copy in copies:
        shutil.copyfile(source, copy)
    return copies


def test_staged_writes_store_what_row_by_row_stores(two_copies, monkeypatch, tmp_path):
    staged, row_by_row = two_copies
    opened, moved = [], []
    connect = stage.adbc_sqlite_connect()
    assert connect is not None, "adbc-driver-sqlite is in requirements.txt"
    monkeypatch.setattr(stage, "adbc_sqlite_connect", lambda: lambda path, **kw: (opened.append(path), connect(path, **kw))[1])
    insert_into = stage.TableStage.insert_into
    monkeypatch.setattr(stage.TableStage, "insert_into", lambda self, conn: moved.append((self.table.name, insert_into(self, conn))) or moved[-1][1])
    _derive(staged)
    assert {name for name, rows in moved if rows} == set(WRITTEN)  # every big write went through its stage
    assert opened and all(Path(p).parent.name.startswith("stage-") and Path(p).parent != tmp_path for p in opened)  # never the store

    monkeypatch.setattr(stage, "adbc_sqlite_connect", lambda: None)
    moved.clear()
    _derive(row_by_row)
    assert moved == []

    engines = [make_engine(f"sqlite:///{p}") for p in (staged, row_by_row)]
    sums = [{t: s for t, s in table_checksums(e).items() if t in WRITTEN} for e in engines]
    for e in engines:
        e.dispose()
    assert sums[0] == sums[1] and all(int(s.split(":")[0]) > 1000 for s in sums[0].values())
    assert _storage_classes(staged) == _storage_classes(row_by_row)


def test_a_failed_move_rolls_back_and_leaves_no_stage_file(two_copies, monkeypatch):
    path = two_copies[0]
    engine = make_engine(f"sqlite:///{path}")
    want = table_checksums(engine), _indexes(engine)
    folders = []
    made = stage.TableStage.__init__

    def noted(self, *args, **kwargs):
        made(self, *args, **kwargs)
        folders.append(Path(self.path).parent)

    def fail(self, conn):
        raise RuntimeError("disk full")

    monkeypatch.setattr(stage.TableStage, "__init__", noted)
    monkeypatch.setattr(stage.TableStage, "insert_into", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        assign_subgroups(engine, RULES, block_patients=150, workers=1)
    with pytest.raises(RuntimeError, match="disk full"):
        build_cells(engine, workers=1)
    assert len(folders) == 3 and not any(f.exists() for f in folders)
    assert (table_checksums(engine), _indexes(engine)) == want  # every table as it was, the indexes' drops undone too
    with engine.connect() as conn:  # and no stage is left attached to the pool's connections
        assert [r[1] for r in conn.exec_driver_sql("PRAGMA database_list")] == ["main"]
    engine.dispose()

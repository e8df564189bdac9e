"""A failed step never strands the store: an import whose derive fails or never runs leaves a
pending mark, pages can tell, and the next run derives everything, so the store ends exactly as
if nothing had failed (derived tables compared by checksum with a clean derive). SQLite and PostgreSQL."""

import pytest

from core.cli.main import main
from core.derive.pipeline import derive_all, finish_pending_derive
from core.ingest import import_path
from core.store.queries import data_status, data_version, derive_pending
from tests.checksum import BOOKKEEPING, table_checksums
from tests.unit.test_csv_import import valid_tables, write_bundle


def _url(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _second_bundle(folder):
    """The valid bundle with one more encounter and a changed patient: new rows the derive must see."""
    tables = valid_tables()
    tables["encounters.csv"].append({"encounter_id": "E4", "patient_id": "P1", "kind": "ed_visit", "start_date": "2024-03-05",
                                     "paid_usd": "900"})
    tables["patients.csv"][0]["dual_status"] = "true"
    return write_bundle(folder, tables)


def _rejected_bundle(folder):
    tables = valid_tables()
    tables["patients.csv"][0]["dual_status"] = "maybe"
    return write_bundle(folder, tables)


def _fail(*_args, **_kwargs):
    raise RuntimeError("the derive was stopped half-way")


@pytest.fixture
def derived_store(store_engine, tmp_path):
    assert import_path(store_engine, write_bundle(tmp_path / "first")).ok
    derive_all(store_engine)
    assert derive_pending(store_engine) is None
    return store_engine


def test_a_derive_that_fails_after_the_import_is_pending_until_the_next_run_finishes_it(derived_store, tmp_path, monkeypatch,
                                                                                       capsys):
    engine, url = derived_store, _url(derived_store)
    version = data_version(engine)
    second = _second_bundle(tmp_path / "second")

    monkeypatch.setattr("core.derive.cells.build_cells", _fail)  # subgroups and activity are rebuilt, cells are not
    with pytest.raises(RuntimeError, match="half-way"):
        main(["import", str(second), "--database-url", url])
    monkeypatch.undo()

    pending = derive_pending(engine)
    assert pending is not None and pending.isdigit()  # the id of the import whose derive did not finish
    assert data_status(engine)["derive_pending"] == pending
    assert data_version(engine) == version  # pages still show the old version, with the banner
    capsys.readouterr()
    main(["info", "--database-url", url])
    assert "derive pending" in capsys.readouterr().out

    # The next run, even an import that is rejected, derives everything first.
    assert main(["import", str(_rejected_bundle(tmp_path / "bad")), "--database-url", url]) == 1
    assert derive_pending(engine) is None
    assert data_version(engine) != version

    finished = table_checksums(engine, skip=BOOKKEEPING)
    derive_all(engine)  # a clean derive of the same data changes nothing: the store is consistent
    assert table_checksums(engine, skip=BOOKKEEPING) == finished


def test_an_import_killed_after_its_commit_is_finished_by_the_next_run(derived_store, tmp_path):
    engine = derived_store
    report = import_path(engine, _second_bundle(tmp_path / "second"))  # committed; the process dies before the derive
    assert report.ok
    assert derive_pending(engine) == str(report.import_id)

    assert finish_pending_derive(engine) is not None
    assert derive_pending(engine) is None
    finished = table_checksums(engine, skip=BOOKKEEPING)
    derive_all(engine)
    assert table_checksums(engine, skip=BOOKKEEPING) == finished
    assert finish_pending_derive(engine) is None  # nothing left to do


def test_a_derive_without_an_import_that_fails_is_pending_too(derived_store, monkeypatch):
    engine = derived_store
    monkeypatch.setattr("core.derive.cells.build_cells", _fail)
    with pytest.raises(RuntimeError):
        derive_all(engine)  # e.g. a rules change: new subgroups, old cells
    monkeypatch.undo()
    assert derive_pending(engine) == "derive"
    finish_pending_derive(engine)
    assert derive_pending(engine) is None


def test_a_rejected_import_leaves_no_pending_mark(derived_store, tmp_path):
    report = import_path(derived_store, _rejected_bundle(tmp_path / "bad"))
    assert not report.ok
    assert derive_pending(derived_store) is None

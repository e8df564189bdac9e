"""The streaming CSV import on SQLite and PostgreSQL: batches of a few rows (each by COPY on
PostgreSQL) load the bundle, a re-import changes nothing, and a problem found in a late batch, after
earlier batches were written into the open transaction, leaves every table as it was."""

import pytest

from core.ingest import loader
from core.ingest.csv_bundle import import_bundle
from tests.unit.test_csv_bundle_streaming import TINY, many_encounters
from tests.unit.test_csv_import import table_contents, table_counts, write_bundle


@pytest.fixture(autouse=True)
def copy_every_batch(monkeypatch):
    monkeypatch.setattr(loader, "COPY_ROWS", 1)  # PostgreSQL: exercise COPY + upsert per batch


def test_tiny_batches_load_and_reimport_changes_nothing(store_engine, tmp_path):
    folder = write_bundle(tmp_path / "b", many_encounters())

    first = import_bundle(store_engine, folder, batch_bytes=TINY)
    contents = table_contents(store_engine)
    second = import_bundle(store_engine, folder, batch_bytes=TINY)

    assert first.ok and second.ok, first.to_text() + second.to_text()
    assert first.loaded["encounter"] == first.new_rows["encounter"] == 123
    assert second.loaded == first.loaded and set(second.new_rows.values()) == {0}
    assert table_contents(store_engine) == contents


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda t: t["medications.csv"][0].update(start_date="someday"), ("medications.csv", 2, "start_date")),
        (lambda t: t["encounters.csv"].append(dict(t["encounters.csv"][-1])), ("encounters.csv", 125, "encounter_id")),
        (lambda t: t["encounters.csv"].append(dict(t["encounters.csv"][3])), ("encounters.csv", 125, "encounter_id")),
    ],
    ids=["bad value in the last file", "duplicate within a batch", "duplicate across batches"],
)
def test_problem_after_written_batches_rolls_everything_back(store_engine, tmp_path, change, where):
    assert import_bundle(store_engine, write_bundle(tmp_path / "first")).ok
    before = table_contents(store_engine), table_counts(store_engine)
    tables = many_encounters()
    for row in tables["patients.csv"]:
        row["family_name"] = "Changed"  # written in an early batch, then rolled back
    change(tables)

    report = import_bundle(store_engine, write_bundle(tmp_path / "bad", tables), batch_bytes=TINY)

    assert [(e.file, e.row, e.column) for e in report.errors] == [where], report.to_text()
    assert (table_contents(store_engine), table_counts(store_engine)) == before

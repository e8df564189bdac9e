"""The streaming CSV import on SQLite and PostgreSQL: batches of a few rows (each by COPY on
PostgreSQL) load the bundle, a re-import changes nothing, and a problem found in a late batch, after
earlier batches were written into the open transaction, leaves every table as it was."""

import pandas as pd
import pytest
from sqlalchemy import inspect

from core.ingest.csv_bundle import import_bundle
from core.ingest.loader import load_tables
from core.ingest.report import ImportReport
from tests.unit.test_csv_bundle_streaming import TINY, many_encounters
from tests.unit.test_csv_import import table_contents, table_counts, write_bundle


def test_tiny_batches_load_and_reimport_changes_nothing(store_engine, tmp_path):
    folder = write_bundle(tmp_path / "b", many_encounters())

    first = import_bundle(store_engine, folder, batch_bytes=TINY)
    contents = table_contents(store_engine)
    second = import_bundle(store_engine, folder, batch_bytes=TINY)

    assert first.ok and second.ok, first.to_text() + second.to_text()
    assert first.loaded["encounter"] == first.new_rows["encounter"] == 123
    assert second.loaded == first.loaded and set(second.new_rows.values()) == {0}
    assert table_contents(store_engine) == contents


PROBLEMS = pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda t: t["medications.csv"][0].update(start_date="someday"), ("medications.csv", 2, "start_date")),
        (lambda t: t["encounters.csv"].append(dict(t["encounters.csv"][-1])), ("encounters.csv", 125, "encounter_id")),
        (lambda t: t["encounters.csv"].append(dict(t["encounters.csv"][3])), ("encounters.csv", 125, "encounter_id")),
    ],
    ids=["bad value in the last file", "duplicate within a batch", "duplicate across batches"],
)


@PROBLEMS
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


def _schema(engine) -> dict:
    found = inspect(engine)
    return {t: (sorted(i["name"] for i in found.get_indexes(t)), sorted(str(f) for f in found.get_foreign_keys(t)))
            for t in found.get_table_names()}  # fmt: skip


@PROBLEMS
def test_problem_in_the_first_load_of_a_store_leaves_it_empty(store_engine, tmp_path, change, where):
    """The first load of an empty store goes straight into the tables (PostgreSQL: COPY with the
    secondary indexes and foreign keys dropped until the table is done): a problem found after
    batches were written still leaves every table empty and the schema as it was."""
    before = table_counts(store_engine), _schema(store_engine)
    tables = many_encounters()
    change(tables)

    report = import_bundle(store_engine, write_bundle(tmp_path / "bad", tables), batch_bytes=TINY)

    assert [(e.file, e.row, e.column) for e in report.errors] == [where], report.to_text()
    assert (table_counts(store_engine), _schema(store_engine)) == before


def test_first_load_checks_foreign_keys_once_and_says_which_row(store_engine):
    """Frames that pass no validation into an empty store: the database's foreign key check, run
    once when the table is done, stops the load, names the table (and on PostgreSQL the key),
    and nothing is written."""
    before = table_counts(store_engine), _schema(store_engine)
    frames = {
        "patient": pd.DataFrame({"patient_id": ["P1"], "birth_date": [pd.Timestamp("1950-05-01")], "sex": ["female"]}),
        "encounter": pd.DataFrame({"encounter_id": ["E1", "E2"], "patient_id": ["P1", "P404"], "kind": ["phone_call"] * 2,
                                   "start_date": [pd.Timestamp("2024-01-02")] * 2, "is_internal": [True] * 2}),
    }  # fmt: skip

    report = load_tables(store_engine, frames, ImportReport("frames", "test"))

    assert not report.ok and report.import_id is None
    assert report.errors[0].file in ("encounter", "foreign keys") and "nothing was written" in report.errors[0].message
    assert "encounter" in report.errors[0].message
    if store_engine.dialect.name == "postgresql":
        assert "(patient_id)=(P404)" in report.errors[0].message
    assert (table_counts(store_engine), _schema(store_engine)) == before

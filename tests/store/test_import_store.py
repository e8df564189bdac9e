"""CSV bundle import against the store on SQLite and PostgreSQL: loads, re-imports idempotently,
and a load that fails inside the database leaves every table exactly as it was."""

from datetime import date

import pandas as pd
import pytest
from sqlalchemy import inspect

from core.ingest import import_path, loader
from core.ingest.bundle_schema import BUNDLE
from core.ingest.loader import load_tables
from core.ingest.report import ImportReport
from tests.unit.test_csv_import import VALID, table_contents, table_counts, valid_tables, write_bundle


def test_valid_bundle_loads_and_reimport_is_idempotent(store_engine, tmp_path):
    folder = write_bundle(tmp_path / "b")

    first = import_path(store_engine, folder)
    contents = table_contents(store_engine)
    second = import_path(store_engine, folder)

    assert first.ok and second.ok, first.to_text() + second.to_text()
    assert first.new_rows == {spec.table: len(VALID[spec.file]) for spec in BUNDLE}
    assert set(second.new_rows.values()) == {0} and second.loaded == first.loaded
    assert table_contents(store_engine) == contents
    assert table_counts(store_engine)["import_run"] == 2
    patient = contents["patient"][1]._mapping
    assert (patient["death_date"], patient["dual_status"]) == (date(2024, 3, 15), True)


def test_update_and_references_to_stored_rows(store_engine, tmp_path):
    assert import_path(store_engine, write_bundle(tmp_path / "b")).ok
    tables = {spec.file: [] for spec in BUNDLE if spec.required_file}
    tables["patients.csv"] = [dict(valid_tables()["patients.csv"][1], language="Spanish")]
    tables["encounters.csv"] = [{"encounter_id": "E20", "patient_id": "P1", "team_id": "T1", "kind": "home_visit", "start_date": "2024-03-02"}]

    report = import_path(store_engine, write_bundle(tmp_path / "delta", tables))

    assert report.ok, report.to_text()
    assert (report.new_rows["patient"], report.new_rows["encounter"]) == (0, 1)
    patients = {r._mapping["patient_id"]: r._mapping for r in table_contents(store_engine)["patient"]}
    assert patients["P2"]["language"] == "Spanish" and patients["P1"]["language"] == "unknown"


def test_rejected_bundle_leaves_the_store_unchanged(store_engine, tmp_path):
    assert import_path(store_engine, write_bundle(tmp_path / "b")).ok
    before = table_contents(store_engine), table_counts(store_engine)
    tables = valid_tables()
    tables["patients.csv"][0]["family_name"] = "Changed"
    tables["encounters.csv"][0]["patient_id"] = "P404"

    report = import_path(store_engine, write_bundle(tmp_path / "bad", tables))

    assert [(e.file, e.row, e.column) for e in report.errors] == [("encounters.csv", 2, "patient_id")]
    assert (table_contents(store_engine), table_counts(store_engine)) == before


def test_database_failure_mid_load_rolls_everything_back(store_engine, tmp_path, monkeypatch):
    """Frames that pass no validation: the database's foreign key stops the load at the last table."""
    assert import_path(store_engine, write_bundle(tmp_path / "b")).ok
    before = table_contents(store_engine), table_counts(store_engine)
    indexes_before = {t: inspect(store_engine).get_indexes(t) for t in ("encounter", "attribution")}
    monkeypatch.setattr(loader, "REBUILD_INDEX_ROWS", 0)  # exercise the SQLite drop/rebuild-index path too
    frames = {
        "patient": pd.DataFrame({"patient_id": ["P1", "P3"], "birth_date": [date(1950, 5, 1), date(1990, 1, 1)],
                                 "sex": ["female", "other"], "family_name": ["Renamed", "New"]}),
        "encounter": pd.DataFrame({"encounter_id": ["E7"], "patient_id": ["P3"], "kind": ["phone_call"],
                                   "start_date": [pd.Timestamp("2024-01-02")], "is_internal": [True]}),
        "staff_minutes": pd.DataFrame({"encounter_id": ["E404"], "role": ["physician"], "minutes": [5.0]}),
    }

    report = load_tables(store_engine, frames, ImportReport("frames", "test"))

    assert not report.ok and report.import_id is None and report.loaded == {}
    assert report.errors[0].file in ("staff_minutes", "foreign keys") and "nothing was written" in report.errors[0].message
    assert (table_contents(store_engine), table_counts(store_engine)) == before
    assert {t: inspect(store_engine).get_indexes(t) for t in ("encounter", "attribution")} == indexes_before


ENCOUNTER = {"kind": ["phone_call"], "start_date": [pd.Timestamp("2024-01-02")], "is_internal": [True], "team_id": ["T1"]}


@pytest.mark.parametrize("frames", [
    {"encounter": pd.DataFrame({"encounter_id": ["E7"], "patient_id": ["P404"], **ENCOUNTER})},  # a new row
    {"encounter": pd.DataFrame({"encounter_id": ["E1"], "patient_id": ["P404"], **ENCOUNTER})},  # a stored row changed
    {"encounter": pd.DataFrame({"encounter_id": ["E7", "E8"], "patient_id": ["P1", "P1"], **{k: v * 2 for k, v in ENCOUNTER.items()},
                                "team_id": ["T1", "T404"]})},  # the second key of the table  # fmt: skip
    {"patient": pd.DataFrame({"patient_id": ["P9"], "birth_date": [date(1990, 1, 1)], "sex": ["other"]}),  # parent and child
     "condition": pd.DataFrame({"condition_id": ["C8", "C9"], "patient_id": ["P9", "P405"], "code": ["E11.9", "I10"],
                               "onset_date": [date(2024, 1, 1)] * 2})},
], ids=["new row", "changed row", "second key", "parent loaded too"])
def test_a_load_into_stored_rows_is_checked_on_the_keys_it_writes(store_engine, tmp_path, frames):
    """Frames that pass no validation, into tables that hold rows (on SQLite their foreign keys are
    checked on the values the load wrote, not on every stored row): a row inserted or updated that
    refers to a row that does not exist stops the load, and nothing is written."""
    assert import_path(store_engine, write_bundle(tmp_path / "b")).ok
    before = table_contents(store_engine), table_counts(store_engine)

    report = load_tables(store_engine, frames, ImportReport("frames", "test"))

    assert not report.ok and report.import_id is None and "nothing was written" in report.errors[0].message
    if store_engine.dialect.name == "sqlite":  # (PostgreSQL's own constraint names the key)
        child = list(frames)[-1]
        parent = "team" if "T404" in str(frames[child].get("team_id", "")) else "patient"
        assert report.errors[0].message.endswith(f"1 {child} row(s) refer to rows that do not exist in {parent}")
    assert (table_contents(store_engine), table_counts(store_engine)) == before


def test_a_key_column_left_to_its_default_is_checked_on_the_whole_table(store_engine, tmp_path):
    """A batch without one of the table's key columns (its default is written): the whole table is checked."""
    assert import_path(store_engine, write_bundle(tmp_path / "b")).ok
    frame = pd.DataFrame({"encounter_id": ["E7"], "patient_id": ["P404"], **{k: v for k, v in ENCOUNTER.items() if k != "team_id"}})
    report = load_tables(store_engine, {"encounter": frame}, ImportReport("frames", "test"))
    assert not report.ok and report.import_id is None


def test_a_table_started_again_in_one_load_is_checked_whole(store_engine):
    """Its first rows went into an empty table (checked whole): the rows after them do not narrow that."""
    from core.ingest.loader import LoadFailed, open_load

    report = ImportReport("frames", "test")
    patient = pd.DataFrame({"patient_id": ["P1"], "birth_date": [date(1950, 5, 1)], "sex": ["female"]})
    with pytest.raises(LoadFailed), open_load(store_engine, report) as load:
        load.start_table("patient")
        load.write(patient)
        for encounter, patient_id in (("E1", "P404"), ("E2", "P1")):
            load.start_table("encounter")
            load.write(pd.DataFrame({"encounter_id": [encounter], "patient_id": [patient_id], **ENCOUNTER, "team_id": [None]}))
        load.commit()
    assert not report.ok and table_counts(store_engine)["encounter"] == 0


def test_a_first_load_is_checked_whole(store_engine):
    """Into empty tables (SQLite: PRAGMA foreign_key_check of the table) a missing parent stops the load too."""
    frames = {"patient": pd.DataFrame({"patient_id": ["P1"], "birth_date": [date(1950, 5, 1)], "sex": ["female"]}),
              "condition": pd.DataFrame({"condition_id": ["C1", "C2"], "patient_id": ["P1", "P404"], "code": ["I10"] * 2,
                                        "onset_date": [date(2024, 1, 1)] * 2})}  # fmt: skip
    report = load_tables(store_engine, frames, ImportReport("frames", "test"))
    assert not report.ok and report.import_id is None
    if store_engine.dialect.name == "sqlite":
        assert report.errors[0].message.endswith("1 condition row(s) refer to rows that do not exist in patient")
    assert table_counts(store_engine)["patient"] == 0


def test_generated_sample_bundle_imports_cleanly(store_engine, sample_bundle):
    report = import_path(store_engine, sample_bundle)

    assert report.ok, report.to_text()
    assert report.origin == "real"  # what a data file declares never makes it the sample (core.access.demo)
    assert report.loaded["patient"] > 0 and report.loaded["encounter"] > 0
    assert not [w for w in report.warnings if "column" in w.message and "ignored" in w.message]
    again = import_path(store_engine, sample_bundle)
    assert again.ok and set(again.new_rows.values()) == {0}


@pytest.mark.parametrize("rows", [0, 3])
def test_loader_counts_new_rows(store_engine, rows):
    frames = {"practice": pd.DataFrame({"practice_id": [f"PR{i}" for i in range(rows)], "name": ["x"] * rows})}
    report = load_tables(store_engine, frames, ImportReport("frames", "test"))
    assert report.ok and report.loaded == {"practice": rows} and report.new_rows == {"practice": rows}


def test_new_rows_are_the_inserted_ones_not_the_changed_or_sent_again(store_engine):
    """On PostgreSQL the upsert counts its own inserts (``RETURNING``), on SQLite the table is counted."""
    stored = pd.DataFrame({"practice_id": ["PR0", "PR1", "PR2"], "name": ["a", "b", "c"]})
    assert load_tables(store_engine, {"practice": stored}, ImportReport("frames", "test")).ok
    batch = pd.DataFrame({"practice_id": ["PR0", "PR1", "PR3", "PR4"], "name": ["a", "renamed", "d", "e"]})

    report = load_tables(store_engine, {"practice": batch}, ImportReport("frames", "test"))

    assert report.ok and report.loaded == {"practice": 4} and report.new_rows == {"practice": 2}
    with store_engine.connect() as conn:
        assert dict(conn.exec_driver_sql("SELECT practice_id, name FROM practice").all()) == {
            "PR0": "a", "PR1": "renamed", "PR2": "c", "PR3": "d", "PR4": "e"}


@pytest.mark.parametrize(("change", "expected"), [
    ({}, loader.NO_MONTH),  # sent again as stored: nothing dated changed
    ({"given_name": "Renamed"}, loader.NO_MONTH),  # a name derives nothing
    ({"death_date": date(2024, 5, 20)}, date(2024, 5, 1)),  # from the month of the death
    ({"dual_status": True}, None),  # every month
], ids=["same", "name", "death", "dual status"])
def test_a_patient_sent_again_moves_the_first_changed_month_by_what_changed(store_engine, tmp_path, change, expected):
    """The months a load of stored patients can change, from the stored rows it replaces (on
    PostgreSQL read by the upsert itself, before it writes): none for the same rows or a new name,
    from a new death date's month, every month for another change (age, sex, dual status, strata).
    A death date moved later counts from the earlier of the two."""
    from sqlmodel import select as sql_select

    from core.ingest.loader import open_load
    from core.store.models import Patient

    assert import_path(store_engine, write_bundle(tmp_path / "b")).ok
    with store_engine.connect() as conn:
        stored = pd.read_sql(sql_select(Patient), conn)
    alive = stored["death_date"].isna()  # (the patients without a death date: the one stored is later than none)
    assert alive.any() and (~alive).any()
    patients = stored.copy()
    for name, value in change.items():
        patients[name] = patients[name].astype(object)
        patients.loc[alive, name] = value
    report = ImportReport("frames", "test")
    with open_load(store_engine, report) as load:
        load.start_table("patient")
        load.write(patients)
        load.commit()
    assert report.ok, report.to_text()
    assert load.from_month == expected
    if "death_date" in change:  # and back to a later date: from the earlier, stored one
        report = ImportReport("frames", "test")
        with open_load(store_engine, report) as load:
            load.start_table("patient")
            load.write(patients.assign(death_date=patients["death_date"].where(~alive, date(2025, 2, 3))))
            load.commit()
        assert report.ok and load.from_month == date(2024, 5, 1)

"""CSV bundle import: every kind of bad input is reported at its file, row and column, and a rejected
import leaves the store exactly as it was (even after an earlier import). Tiny hand-written bundles."""

import copy
import csv
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlmodel import SQLModel

from core.ingest import import_path
from core.ingest.bundle_schema import BUNDLE, BY_FILE, MANIFEST_FILE, SAMPLE_GENERATOR_NAME
from core.ingest.report import MAX_ERRORS, ImportIssue, ImportReport

FUTURE = (date.today() + timedelta(days=30)).isoformat()

# A minimal valid bundle: file -> rows (columns not given are blank).
VALID: dict[str, list[dict[str, str]]] = {
    "practices.csv": [{"practice_id": "PR1", "name": "Riverside Family Practice", "network": "North ACO"}],
    "teams.csv": [{"team_id": "T1", "practice_id": "PR1", "name": "Chronic care team", "subgroup": "chronic"}],
    "staff.csv": [
        {"staff_id": "S1", "team_id": "T1", "name": "Dr Ada", "role": "physician", "annual_cost_usd": "310000", "paid_hours_per_year": "1800"},
        {"staff_id": "S2", "team_id": "T1", "name": "Ben RN", "role": "registered_nurse", "annual_cost_usd": "120000", "paid_hours_per_year": "1900"},
    ],
    "patients.csv": [
        {"patient_id": "P1", "given_name": "Ann", "family_name": "Smith", "birth_date": "1950-05-01", "sex": "female",
         "dual_status": "false", "deprivation_decile": "4"},
        {"patient_id": "P2", "given_name": "Bob", "family_name": "Jones", "birth_date": "1940-01-31", "sex": "male",
         "dual_status": "yes", "death_date": "2024-03-15"},
    ],
    "attribution.csv": [
        {"patient_id": p, "month": m, "practice_id": "PR1", "team_id": "T1", "pcp_id": "S1"}
        for p in ("P1", "P2") for m in ("2024-01", "2024-02", "2024-03")
    ],
    "conditions.csv": [
        {"condition_id": "C1", "patient_id": "P1", "code": "E11.9", "description": "Type 2 diabetes", "onset_date": "2020-02-01"},
        {"condition_id": "C2", "patient_id": "P2", "code": "I10", "onset_date": "2015-06-01", "resolved_date": "2016-01-01"},
    ],
    "encounters.csv": [
        {"encounter_id": "E1", "patient_id": "P1", "team_id": "T1", "kind": "office_visit", "start_date": "2024-01-10",
         "requested_date": "2024-01-08", "primary_dx": "E11.9"},
        {"encounter_id": "E2", "patient_id": "P2", "kind": "ed_visit", "start_date": "2024-02-01", "end_date": "2024-02-01",
         "in_network": "0", "paid_usd": "1250.50"},
        {"encounter_id": "E3", "patient_id": "P2", "kind": "admission", "start_date": "2024-02-02", "end_date": "2024-02-06",
         "cost_category": "other", "paid_usd": "14000"},
    ],
    "staff_minutes.csv": [
        {"encounter_id": "E1", "role": "physician", "minutes": "20"},
        {"encounter_id": "E1", "role": "registered_nurse", "minutes": "10.5"},
    ],
    "measurements.csv": [
        {"measurement_id": "M1", "patient_id": "P1", "measured_date": "2024-01-10", "code": "4548-4", "value": "7.5", "unit": "%"},
        {"measurement_id": "M2", "patient_id": "P1", "measured_date": "2024-01-10", "code": "8480-6", "value": "128"},
    ],
    "medications.csv": [
        {"medication_id": "RX1", "patient_id": "P1", "code": "860975", "description": "metformin", "start_date": "2023-01-01",
         "end_date": FUTURE},
    ],
    "procedures.csv": [
        {"procedure_id": "X1", "patient_id": "P1", "performed_date": "2023-10-02", "code": "150", "code_system": "CVX",
         "description": "Influenza vaccine"},
    ],
}
TABLES = [spec.table for spec in BUNDLE] + ["import_run"]


def write_bundle(folder: Path, tables: dict[str, list[dict[str, str]]] | None = None, manifest: dict | None = None) -> Path:
    """Write ``tables`` (default: the valid bundle) as a CSV bundle folder; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for file, rows in (VALID if tables is None else tables).items():
        columns = BY_FILE[file].column_names
        with (folder / file).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows({c: row.get(c, "") for c in columns} for row in rows)
    if manifest is not None:
        import json

        (folder / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def valid_tables() -> dict[str, list[dict[str, str]]]:
    return copy.deepcopy(VALID)


def table_counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(select(func.count()).select_from(SQLModel.metadata.tables[t])).scalar_one() for t in TABLES}


def table_contents(engine) -> dict[str, list[tuple]]:
    out = {}
    with engine.connect() as conn:
        for name in TABLES[:-1]:
            table = SQLModel.metadata.tables[name]
            out[name] = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
    return out


# --- corruptions: each returns nothing and changes one thing in the tables or the written files ---


def set_value(file: str, index: int, column: str, value: str):
    def corrupt(tables, folder):
        tables[file][index][column] = value
    return corrupt


def add_row(file: str, row: dict[str, str]):
    def corrupt(tables, folder):
        tables[file].append(row)
    return corrupt


def drop_file(file: str):
    def corrupt(tables, folder):
        del tables[file]
    return corrupt


def drop_column(file: str, column: str):
    def after_write(folder):
        frame = pd.read_csv(folder / file, dtype=str, keep_default_na=False).drop(columns=[column])
        frame.to_csv(folder / file, index=False)
    return after_write


def write_text(file: str, text: str | bytes):
    def after_write(folder):
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        (folder / file).write_bytes(data)
    return after_write


def replace_bytes(file: str, old: bytes, new: bytes):
    def after_write(folder):
        path = folder / file
        path.write_bytes(path.read_bytes().replace(old, new))
    return after_write


def cut_file(file: str, drop_chars: int):
    """Truncate the file: the last line loses its last ``drop_chars`` characters and its newline."""
    def after_write(folder):
        path = folder / file
        path.write_bytes(path.read_bytes().rstrip(b"\n")[:-drop_chars])
    return after_write


def append_text(file: str, text: str):
    def after_write(folder):
        with (folder / file).open("a", encoding="utf-8") as handle:
            handle.write(text)
    return after_write


# (id, change to the tables before writing, change to the files after writing, file, row, column, message part)
ERROR_CASES = [
    ("missing file", drop_file("patients.csv"), None, "patients.csv", None, None, "required file is missing"),
    ("missing column", None, drop_column("patients.csv", "sex"), "patients.csv", 1, "sex", "required column is missing"),
    ("duplicate column", None, replace_bytes("teams.csv", b"team_id,practice_id,name,subgroup", b"team_id,practice_id,name,name"),
     "teams.csv", 1, "name", "appears twice"),
    ("blank required value", set_value("patients.csv", 1, "birth_date", ""), None, "patients.csv", 3, "birth_date", "required value is missing"),
    ("bad date", set_value("encounters.csv", 1, "start_date", "2024-13-01"), None, "encounters.csv", 3, "start_date", "not a date"),
    ("impossible date", set_value("encounters.csv", 0, "start_date", "2023-02-30"), None, "encounters.csv", 2, "start_date", "not a date"),
    ("us-style date", set_value("conditions.csv", 0, "onset_date", "02/01/2020"), None, "conditions.csv", 2, "onset_date", "not a date"),
    ("bad month", set_value("attribution.csv", 4, "month", "2024-1"), None, "attribution.csv", 6, "month", "not a month"),
    ("bad int", set_value("patients.csv", 0, "deprivation_decile", "five"), None, "patients.csv", 2, "deprivation_decile", "not a whole number"),
    ("fractional int", set_value("patients.csv", 0, "deprivation_decile", "2.5"), None, "patients.csv", 2, "deprivation_decile", "not a whole number"),
    ("int out of range", set_value("patients.csv", 1, "deprivation_decile", "11"), None, "patients.csv", 3, "deprivation_decile", "at most 10"),
    ("bad float", set_value("staff.csv", 1, "annual_cost_usd", "lots"), None, "staff.csv", 3, "annual_cost_usd", "not a number"),
    ("float with comma", set_value("encounters.csv", 2, "paid_usd", "1,400"), None, "encounters.csv", 4, "paid_usd", "not a number"),
    ("bad bool", set_value("patients.csv", 0, "dual_status", "maybe"), None, "patients.csv", 2, "dual_status", "not true/false"),
    ("unknown kind", set_value("encounters.csv", 0, "kind", "teleport"), None, "encounters.csv", 2, "kind", "not a known activity_kinds"),
    ("unknown role", set_value("staff_minutes.csv", 1, "role", "wizard"), None, "staff_minutes.csv", 3, "role", "not a known roles"),
    ("unknown staff role", set_value("staff.csv", 0, "role", "Physician"), None, "staff.csv", 2, "role", "not a known roles"),
    ("unknown sex", set_value("patients.csv", 1, "sex", "M"), None, "patients.csv", 3, "sex", "not a known sexes"),
    ("unknown measurement code", set_value("measurements.csv", 1, "code", "1234-5"), None, "measurements.csv", 3, "code", "not a known codes"),
    ("unknown cost category", set_value("encounters.csv", 1, "cost_category", "snacks"), None, "encounters.csv", 3, "cost_category", "cost_categories"),
    ("not ICD-10", set_value("conditions.csv", 1, "code", "250.00"), None, "conditions.csv", 3, "code", "not an ICD-10-CM code"),
    ("not ICD-10 dx", set_value("encounters.csv", 0, "primary_dx", "U07"), None, "encounters.csv", 2, "primary_dx", "not an ICD-10-CM code"),
    ("negative minutes", set_value("staff_minutes.csv", 0, "minutes", "-5"), None, "staff_minutes.csv", 2, "minutes", "at least 0"),
    ("paid amount below the credit floor", set_value("encounters.csv", 1, "paid_usd", "-20000000"), None, "encounters.csv", 3,
     "paid_usd", "at least -10,000,000"),
    ("too long", set_value("practices.csv", 0, "name", "x" * 201), None, "practices.csv", 2, "name", "longer than 200"),
    ("duplicate key", add_row("patients.csv", dict(VALID["patients.csv"][0])), None, "patients.csv", 4, "patient_id",
     "duplicate key patient_id='P1' (first on row 2)"),
    ("duplicate compound key", add_row("attribution.csv", dict(VALID["attribution.csv"][1])), None, "attribution.csv", 8,
     "patient_id,month", "duplicate key"),
    ("date 1850", set_value("patients.csv", 0, "birth_date", "1850-01-01"), None, "patients.csv", 2, "birth_date", "date outside 1900-01-01"),
    ("date 2150", set_value("encounters.csv", 0, "start_date", "2150-01-01"), None, "encounters.csv", 2, "start_date", "date outside"),
    ("future clinical date", set_value("measurements.csv", 0, "measured_date", FUTURE), None, "measurements.csv", 2, "measured_date",
     "in the future"),
    ("future death", set_value("patients.csv", 1, "death_date", FUTURE), None, "patients.csv", 3, "death_date", "in the future"),
    ("death before birth", set_value("patients.csv", 1, "death_date", "1939-12-31"), None, "patients.csv", 3, "death_date",
     "death_date is before birth_date"),
    ("resolved before onset", set_value("conditions.csv", 1, "resolved_date", "2014-01-01"), None, "conditions.csv", 3, "resolved_date",
     "before onset_date"),
    ("end before start", set_value("encounters.csv", 2, "end_date", "2024-02-01"), None, "encounters.csv", 4, "end_date", "before start_date"),
    ("dangling patient", set_value("encounters.csv", 2, "patient_id", "P999"), None, "encounters.csv", 4, "patient_id", "no patients.csv row"),
    ("dangling encounter", set_value("staff_minutes.csv", 1, "encounter_id", "E9"), None, "staff_minutes.csv", 3, "encounter_id",
     "no encounters.csv row"),
    ("dangling pcp", set_value("attribution.csv", 3, "pcp_id", "S7"), None, "attribution.csv", 5, "pcp_id", "no staff.csv row"),
    ("non-UTF-8 byte", None, replace_bytes("patients.csv", b"Jones", "Jönes".encode("latin-1")), "patients.csv", 3, "family_name",
     "not valid UTF-8"),
    ("empty file", None, write_text("teams.csv", ""), "teams.csv", 1, None, "file is empty"),
    ("truncated last row", None, cut_file("encounters.csv", 30), "encounters.csv", 4, None, "expected 18"),
    ("extra field", None, append_text("measurements.csv", "M3,P1,2024-01-11,8480-6,130,,mm,extra\n"), "measurements.csv", 4, None,
     "8 field(s), expected 7"),
    ("unterminated quote", None, append_text("conditions.csv", 'C3,P1,I10,ICD-10-CM,"high blood pressure'), "conditions.csv", 4, None,
     "unterminated quote"),
]


@pytest.fixture
def loaded_engine(engine, tmp_path):
    """The store after a first successful import of the valid bundle."""
    report = import_path(engine, write_bundle(tmp_path / "first"))
    assert report.ok, report.to_text()
    return engine


@pytest.mark.parametrize(("change", "after_write", "file", "row", "column", "message"),
                         [case[1:] for case in ERROR_CASES], ids=[case[0] for case in ERROR_CASES])
def test_bad_input_is_reported_where_it_is_and_nothing_is_written(loaded_engine, tmp_path, change, after_write, file, row, column, message):
    engine = loaded_engine
    before_counts, before = table_counts(engine), table_contents(engine)
    tables = valid_tables()
    if change:
        change(tables, tmp_path)
    folder = write_bundle(tmp_path / "bad", tables)
    if after_write:
        after_write(folder)

    report = import_path(engine, folder)

    assert not report.ok
    where = [(e.file, e.row, e.column) for e in report.errors if message in e.message]
    assert (file, row, column) in where, report.to_text()
    assert table_counts(engine) == before_counts
    assert table_contents(engine) == before
    assert "nothing was written" in report.to_text()


def test_valid_bundle_imports_with_types_and_derived_columns(engine, tmp_path):
    report = import_path(engine, write_bundle(tmp_path / "b"))

    assert report.ok, report.to_text()
    assert report.loaded == {spec.table: len(VALID[spec.file]) for spec in BUNDLE}
    assert report.new_rows == report.loaded
    assert report.origin == "real" and report.import_id == 1 and not report.warnings
    contents = table_contents(engine)
    p1 = contents["patient"][0]._mapping
    assert (p1["birth_date"], p1["dual_status"], p1["deprivation_decile"], p1["race"]) == (date(1950, 5, 1), False, 4, "unknown")
    assert contents["patient"][1]._mapping["dual_status"] is True
    assert contents["attribution"][0]._mapping["month"] == date(2024, 1, 1)
    enc = {r._mapping["encounter_id"]: r._mapping for r in contents["encounter"]}
    assert (enc["E1"]["is_internal"], enc["E1"]["cost_category"], enc["E1"]["team_id"], enc["E1"]["in_network"]) == (True, "primary_care", "T1", True)
    assert (enc["E2"]["is_internal"], enc["E2"]["cost_category"], enc["E2"]["in_network"], enc["E2"]["paid_usd"]) == (False, "ed", False, 1250.5)
    assert enc["E2"]["team_id"] is None and enc["E3"]["cost_category"] == "other"
    assert contents["staff_minutes"][1]._mapping["minutes"] == 10.5
    assert contents["medication"][0]._mapping["end_date"] == date.fromisoformat(FUTURE)


def test_claim_credit_loads_and_is_counted(engine, tmp_path):
    """A claim that nets below zero (a reversal) is a credit: loaded as it is and counted in the report."""
    tables = valid_tables()
    tables["encounters.csv"][2]["paid_usd"] = "-497.75"
    report = import_path(engine, write_bundle(tmp_path / "b", tables))
    assert report.ok, report.to_text()
    claims = report.to_dict()["claims"]
    assert (claims["claims"], claims["credits"], claims["credits_usd"], claims["examples"]) == (2, 1, -497.75, {"credits": ["E3"]})
    enc = {r._mapping["encounter_id"]: r._mapping for r in table_contents(engine)["encounter"]}
    assert enc["E3"]["paid_usd"] == -497.75


def test_reimport_changes_nothing_but_adds_an_import_run(engine, tmp_path):
    folder = write_bundle(tmp_path / "b")
    assert import_path(engine, folder).ok
    before = table_contents(engine)

    again = import_path(engine, folder)

    assert again.ok and again.import_id == 2
    assert table_contents(engine) == before
    assert set(again.new_rows.values()) == {0}
    assert table_counts(engine)["import_run"] == 2


def test_second_bundle_updates_a_patient_in_place(loaded_engine, tmp_path):
    tables = valid_tables()
    tables["patients.csv"][0].update(family_name="Smith-Jones", zip="02139")
    tables = {"patients.csv": tables["patients.csv"][:1]}  # a bundle of one file may only carry changes
    for spec in BUNDLE:
        if spec.required_file and spec.file not in tables:
            tables[spec.file] = []
    report = import_path(loaded_engine, write_bundle(tmp_path / "update", tables))

    assert report.ok, report.to_text()
    assert report.loaded["patient"] == 1 and report.new_rows["patient"] == 0
    patients = {r._mapping["patient_id"]: r._mapping for r in table_contents(loaded_engine)["patient"]}
    assert len(patients) == 2
    assert (patients["P1"]["family_name"], patients["P1"]["zip"]) == ("Smith-Jones", "02139")
    assert patients["P2"]["family_name"] == "Jones"


def test_references_resolve_against_rows_already_in_the_store(loaded_engine, tmp_path):
    tables = {spec.file: [] for spec in BUNDLE if spec.required_file}
    tables["encounters.csv"] = [{"encounter_id": "E10", "patient_id": "P1", "team_id": "T1", "kind": "phone_call", "start_date": "2024-03-01"}]
    tables["staff_minutes.csv"] = [{"encounter_id": "E1", "role": "care_manager", "minutes": "15"}]

    report = import_path(loaded_engine, write_bundle(tmp_path / "more", tables))

    assert report.ok, report.to_text()
    assert report.new_rows["encounter"] == 1 and report.new_rows["staff_minutes"] == 1


def test_header_only_file_is_valid_and_loads_nothing(engine, tmp_path):
    tables = valid_tables()
    tables["medications.csv"] = []
    report = import_path(engine, write_bundle(tmp_path / "b", tables))

    assert report.ok, report.to_text()
    assert report.loaded["medication"] == 0 and table_counts(engine)["medication"] == 0


def test_optional_file_may_be_absent(engine, tmp_path):
    tables = valid_tables()
    del tables["staff_minutes.csv"], tables["medications.csv"]
    report = import_path(engine, write_bundle(tmp_path / "b", tables))

    assert report.ok, report.to_text()
    assert "staff_minutes" not in report.loaded and table_counts(engine)["staff_minutes"] == 0


def test_several_errors_are_reported_at_once(engine, tmp_path):
    tables = valid_tables()
    tables["patients.csv"][0]["sex"] = "robot"
    tables["encounters.csv"][1]["paid_usd"] = "a lot"
    tables["measurements.csv"][0]["measured_date"] = "yesterday"
    tables["teams.csv"][0]["practice_id"] = "PR404"

    report = import_path(engine, write_bundle(tmp_path / "b", tables))

    assert set(table_counts(engine).values()) == {0}
    where = {(e.file, e.row, e.column) for e in report.errors}
    assert {("patients.csv", 2, "sex"), ("encounters.csv", 3, "paid_usd"), ("measurements.csv", 2, "measured_date"),
            ("teams.csv", 2, "practice_id")} <= where


def test_errors_are_capped_and_the_rest_counted(engine, tmp_path):
    tables = valid_tables()
    tables["measurements.csv"] = [
        {"measurement_id": f"M{i}", "patient_id": "P1", "measured_date": "2024-01-10", "code": "4548-4", "value": "high"}
        for i in range(MAX_ERRORS + 50)
    ]
    report = import_path(engine, write_bundle(tmp_path / "b", tables))

    assert len(report.errors) == MAX_ERRORS and report.errors_not_shown == 50 and report.error_count == MAX_ERRORS + 50
    assert report.to_text().endswith("... and 50 more")
    assert table_counts(engine)["measurement"] == 0


def test_whitespace_and_bom_and_bool_spellings_are_tolerated(engine, tmp_path):
    tables = valid_tables()
    tables["patients.csv"][0].update(patient_id=" P1 ", dual_status="TRUE")
    tables["patients.csv"][1]["dual_status"] = "0"
    folder = write_bundle(tmp_path / "b", tables)
    path = folder / "practices.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))

    report = import_path(engine, folder)

    assert report.ok, report.to_text()
    patients = {r._mapping["patient_id"]: r._mapping["dual_status"] for r in table_contents(engine)["patient"]}
    assert patients == {"P1": True, "P2": False}


@pytest.mark.parametrize(
    ("file", "index", "column", "value", "skipped_table", "reason_part"),
    [
        ("measurements.csv", 0, "value", "45", "measurement", "plausible range"),
        ("attribution.csv", 5, "month", "2024-04", "attribution", "after the month of the patient's death"),
        ("attribution.csv", 0, "month", "1949-12", "attribution", "before the month of the patient's birth"),
    ],
)
def test_implausible_rows_are_skipped_with_a_reason(engine, tmp_path, file, index, column, value, skipped_table, reason_part):
    tables = valid_tables()
    tables[file][index][column] = value
    report = import_path(engine, write_bundle(tmp_path / "b", tables))

    assert report.ok, report.to_text()
    assert [n for reason, n in report.skipped[skipped_table].items() if reason_part in reason] == [1]
    assert report.loaded[skipped_table] == len(VALID[file]) - 1
    assert any(w.file == file and w.row == index + 2 and w.column == column for w in report.warnings)
    assert "skipped" in report.to_text()


def test_events_after_death_and_unknown_columns_are_warnings(engine, tmp_path):
    tables = valid_tables()
    tables["encounters.csv"][2]["start_date"] = "2024-03-20"  # P2 died 2024-03-15
    tables["encounters.csv"][2]["end_date"] = "2024-03-21"
    folder = write_bundle(tmp_path / "b", tables)
    replace_bytes("teams.csv", b"subgroup\n", b"subgroup,colour\n")(folder)
    replace_bytes("teams.csv", b"chronic\n", b"chronic,blue\n")(folder)

    report = import_path(engine, folder)

    assert report.ok, report.to_text()
    warnings = {(w.file, w.row, w.column) for w in report.warnings}
    assert {("encounters.csv", 4, "start_date"), ("teams.csv", 1, "colour")} <= warnings
    assert report.loaded["encounter"] == 3


def test_a_manifest_naming_the_sample_generator_does_not_make_it_sample_data(engine, tmp_path):
    report = import_path(engine, write_bundle(tmp_path / "b", manifest={"generator": SAMPLE_GENERATOR_NAME}))
    assert report.ok and report.origin == "real"  # only the first run's own load is the sample (core.access.demo)
    with engine.connect() as conn:
        run = conn.execute(select(SQLModel.metadata.tables["import_run"])).one()._mapping
    assert (run["origin"], run["status"], run["format"]) == ("real", "committed", "csv")
    assert '"loaded"' in run["report"]


def test_not_a_folder_and_unknown_format(engine, tmp_path):
    assert not import_path(engine, tmp_path / "nowhere").ok
    report = import_path(engine, tmp_path, fmt="xml")
    assert not report.ok and "unknown format" in report.errors[0].message


@pytest.mark.parametrize(
    ("issue", "text"),
    [
        (ImportIssue("patients.csv", 3, "sex", "bad"), "patients.csv:3:sex: bad"),
        (ImportIssue("patients.csv", None, None, "missing"), "patients.csv: missing"),
        (ImportIssue("patients.csv", 1, None, "empty"), "patients.csv:1: empty"),
        (ImportIssue("x.ndjson", None, "", "odd"), "x.ndjson: odd"),
    ],
)
def test_issue_text(issue, text):
    assert str(issue) == text


def test_report_dict_and_text():
    report = ImportReport("b", "csv")
    report.loaded, report.new_rows = {"patient": 3}, {"patient": 1}
    report.add_skipped("measurement", "implausible", 2)
    assert report.ok and report.to_dict()["ok"] and report.to_dict()["skipped"] == {"measurement": {"implausible": 2}}
    assert "patient" in report.to_text() and "skipped 2 measurement row(s): implausible" in report.to_text()


def test_templates_have_every_column(tmp_path):
    from core.ingest.templates import write_templates

    paths = write_templates(tmp_path)

    for spec in BUNDLE:
        assert (tmp_path / spec.file).read_text(encoding="utf-8").strip() == ",".join(spec.column_names)
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert all(f"`{c.name}`" in readme for spec in BUNDLE for c in spec.columns)
    assert len(paths) == len(BUNDLE) + 1

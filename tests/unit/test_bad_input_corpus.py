"""The bad-input corpus: values and files that cannot be read, in each import format and on the
command line. Each case must give a clear error (file, row, column, what) or a documented warning,
never a traceback, and leave the store exactly as it was (a checksum of every table).

The store under test already holds a small network with its derived tables, so "as it was"
covers patients, cells and the data version. Inputs are generated small in ``tmp_path``; the big
ones (a 50 MB header line) are written in a fraction of a second and rejected after reading 1 MB.
"""

import copy
import csv
import json
import shutil
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.cli.main import main
from core.derive.pipeline import derive_all
from core.ingest import import_path
from core.ingest.bundle_schema import BY_FILE
from core.ingest.fhir import read_fhir
from core.store.db import create_schema, make_engine
from core.store.models import Attribution
from core.store.queries import derive_pending
from tests.checksum import BOOKKEEPING, table_checksums
from tests.conftest import PROJECT_ROOT
from tests.unit.test_csv_import import VALID, valid_tables, write_bundle

FAR_FUTURE = "2099-01-01"
BIG_HEADER_BYTES = 50 << 20


@dataclass(frozen=True)
class Expect:
    """Where the problem must be reported and a part of its message."""

    file: str
    row: int | None
    column: str | None
    message: str
    level: str = "error"


@dataclass(frozen=True)
class Case:
    id: str
    fmt: str
    make: Callable[[Path], Path]  # writes the input under the folder given, returns the path to import
    expect: Expect


# --- the store every case starts from ------------------------------------------------------


@pytest.fixture(scope="module")
def seeded_file(tmp_path_factory) -> Path:
    """An SQLite store holding the valid CSV bundle, derived."""
    folder = tmp_path_factory.mktemp("seed")
    engine = make_engine(f"sqlite:///{folder / 'store.db'}")
    create_schema(engine)
    assert import_path(engine, write_bundle(folder / "bundle")).ok
    derive_all(engine)
    assert derive_pending(engine) is None
    engine.dispose()
    return folder / "store.db"


@pytest.fixture
def store(seeded_file, tmp_path):
    """A private copy of the seeded store: (engine, url)."""
    path = tmp_path / "store.db"
    shutil.copy(seeded_file, path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    yield engine, url
    engine.dispose()


# --- CSV bundle ----------------------------------------------------------------------------


def csv_value(file: str, index: int, column: str, value: str):
    def make(folder: Path) -> Path:
        tables = valid_tables()
        tables[file][index][column] = value
        return write_bundle(folder / "bundle", tables)
    return make


def csv_file(file: str, change: Callable[[Path], None]):
    def make(folder: Path) -> Path:
        bundle = write_bundle(folder / "bundle")
        change(bundle / file)
        return bundle
    return make


def truncate(path: Path, drop_bytes: int = 30) -> None:
    path.write_bytes(path.read_bytes().rstrip(b"\n")[:-drop_bytes])


def open_quote(path: Path) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write('"unfinished')


def folder_instead(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "inside.txt").write_text("not a table")


def huge_header(path: Path) -> None:
    """Turn the header into one 50 MB line (what a binary or a one-line export looks like)."""
    with path.open("wb") as handle:
        chunk = b"x" * (1 << 20)
        for _ in range(BIG_HEADER_BYTES >> 20):
            handle.write(chunk)
        handle.write(b"\n1,2,3\n")


def latin1(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"Jones", "Jönes".encode("latin-1")))


CSV_CASES = [
    Case("csv procedure dated 2099", "csv", csv_value("procedures.csv", 0, "performed_date", FAR_FUTURE),
         Expect("procedures.csv", 2, "performed_date", "in the future")),
    Case("csv unknown discharge disposition", "csv", csv_value("encounters.csv", 0, "discharge_disposition", "moon"),
         Expect("encounters.csv", 2, "discharge_disposition", "not a known dispositions value")),
    Case("csv paid inf", "csv", csv_value("encounters.csv", 1, "paid_usd", "inf"), Expect("encounters.csv", 3, "paid_usd", "not a number")),
    Case("csv paid nan", "csv", csv_value("encounters.csv", 1, "paid_usd", "NaN"), Expect("encounters.csv", 3, "paid_usd", "not a number")),
    Case("csv paid 1e308", "csv", csv_value("encounters.csv", 2, "paid_usd", "1e308"), Expect("encounters.csv", 4, "paid_usd", "at most")),
    Case("csv deprivation 1e23", "csv", csv_value("patients.csv", 0, "deprivation_decile", "1e23"),
         Expect("patients.csv", 2, "deprivation_decile", "must be at most 10")),
    Case("csv end before start", "csv", csv_value("encounters.csv", 2, "end_date", "2024-02-01"),
         Expect("encounters.csv", 4, "end_date", "before start_date")),
    Case("csv dated 2099", "csv", csv_value("encounters.csv", 0, "start_date", FAR_FUTURE), Expect("encounters.csv", 2, "start_date", "in the future")),
    # values of a date's width that are not dates (the importer reads such columns as digits)
    Case("csv 30 February", "csv", csv_value("encounters.csv", 1, "start_date", "2024-02-30"),
         Expect("encounters.csv", 3, "start_date", "not a date")),
    Case("csv 29 February of 2023", "csv", csv_value("patients.csv", 0, "birth_date", "2023-02-29"),
         Expect("patients.csv", 2, "birth_date", "not a date")),
    Case("csv date with slashes", "csv", csv_value("conditions.csv", 0, "onset_date", "2020/01/05"),
         Expect("conditions.csv", 2, "onset_date", "not a date")),
    Case("csv month 13", "csv", csv_value("attribution.csv", 1, "month", "2024-13"), Expect("attribution.csv", 3, "month", "not a month")),
    Case("csv truncated", "csv", csv_file("encounters.csv", truncate), Expect("encounters.csv", 4, None, f"expected {len(BY_FILE['encounters.csv'].columns)}")),
    Case("csv unterminated quote", "csv", csv_file("conditions.csv", open_quote), Expect("conditions.csv", 4, None, "unterminated quote")),
    Case("csv folder named patients.csv", "csv", csv_file("patients.csv", folder_instead), Expect("patients.csv", None, None, "is a folder")),
    Case("csv 50 MB header line", "csv", csv_file("patients.csv", huge_header), Expect("patients.csv", 1, None, "header line is longer")),
    Case("csv not UTF-8", "csv", csv_file("patients.csv", latin1), Expect("patients.csv", 3, "family_name", "not valid UTF-8")),
    Case("csv text in a number", "csv", csv_value("staff.csv", 0, "annual_cost_usd", "lots"), Expect("staff.csv", 2, "annual_cost_usd", "not a number")),
]

# Documented warnings: the same data again with something the importer ignores and says so.
CSV_WARNINGS = [
    Case("csv unknown column", "csv", csv_file("practices.csv", lambda p: p.write_text(p.read_text().replace("network", "network,colour", 1)
                                                                                       .replace("North ACO", "North ACO,blue"))),
         Expect("practices.csv", 1, "colour", "not part of the bundle; ignored", "warning")),
    Case("csv unknown file", "csv", csv_file("extra.csv", lambda p: p.write_text("a,b\n1,2\n")),
         Expect("extra.csv", None, None, "not part of the bundle; ignored", "warning")),
]


# --- FHIR ----------------------------------------------------------------------------------

SUBJECT = {"reference": "Patient/p1"}
FHIR_BASE = [
    {"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01", "gender": "female",
     "name": [{"family": "Doe", "given": ["Jane"]}], "address": [{"postalCode": "02139"}]},
    {"resourceType": "Encounter", "id": "e1", "subject": SUBJECT, "class": {"code": "AMB"},
     "period": {"start": "2024-01-10T09:00:00Z", "end": "2024-01-10T10:00:00Z"}},
    {"resourceType": "Condition", "id": "c1", "subject": SUBJECT, "onsetDateTime": "2020-01-01",
     "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]}},
    {"resourceType": "Observation", "id": "o1", "status": "final", "subject": SUBJECT, "effectiveDateTime": "2024-01-10",
     "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]}, "valueQuantity": {"value": 7.5, "unit": "%"}},
    {"resourceType": "ExplanationOfBenefit", "id": "x1", "patient": SUBJECT, "type": {"coding": [{"code": "professional"}]},
     "billablePeriod": {"start": "2024-02-01", "end": "2024-02-01"}, "payment": {"amount": {"value": 120.0}}},
    {"resourceType": "Immunization", "id": "i1", "status": "completed", "patient": SUBJECT, "occurrenceDateTime": "2023-10-02",
     "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "150"}]}},
]
PATIENT, ENCOUNTER, CONDITION, OBSERVATION, EOB, IMMUNIZATION = range(6)
BUNDLE_FILE, NDJSON_FILE = "bundle.json", "data.ndjson"


def fhir(index: int, path: str, value, ndjson: bool = False):
    """The base resources with one field (dotted path) set to ``value``, as a bundle or NDJSON."""
    def make(folder: Path) -> Path:
        resources = copy.deepcopy(FHIR_BASE)
        target = resources[index]
        *parents, last = path.split(".")
        for part in parents:
            target = target[part]
        target[last] = value
        return write_fhir(folder, resources, ndjson)
    return make


def write_fhir(folder: Path, resources: list, ndjson: bool = False, extra_lines: tuple[str, ...] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if ndjson:
        lines = [json.dumps(r) for r in resources] + list(extra_lines)
        (folder / NDJSON_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
        (folder / BUNDLE_FILE).write_text(json.dumps(bundle), encoding="utf-8")
    return folder


def fhir_raw(name: str, text: str):
    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
        return folder
    return make


def deep_json(depth: int = 10_000) -> str:
    return '{"resourceType": "Patient", "id": "deep", "extension": ' + "[" * depth + "]" * depth + "}"


FHIR_CASES = [
    Case("fhir immunization in 2090", "fhir", fhir(IMMUNIZATION, "occurrenceDateTime", "2090-01-01"),
         Expect(BUNDLE_FILE, 6, "Immunization.occurrenceDateTime", "after the extract date")),
    Case("fhir immunization vaccineCode as text", "fhir", fhir(IMMUNIZATION, "vaccineCode", "flu", ndjson=True),
         Expect(NDJSON_FILE, 6, "Immunization.vaccineCode", "must be")),
    Case("fhir EOB paid Infinity", "fhir", fhir(EOB, "payment.amount.value", float("inf")),
         Expect(BUNDLE_FILE, 5, "ExplanationOfBenefit.payment", "not a finite amount")),
    Case("fhir EOB paid 1e308", "fhir", fhir(EOB, "payment.amount.value", 1e308),
         Expect(BUNDLE_FILE, 5, "ExplanationOfBenefit.payment", "beyond any claim")),
    Case("fhir EOB paid NaN", "fhir", fhir(EOB, "payment.amount.value", float("nan"), ndjson=True),
         Expect(NDJSON_FILE, 5, "ExplanationOfBenefit.payment", "not a finite amount")),
    Case("fhir EOB paid as text", "fhir", fhir(EOB, "payment.amount.value", "120.00"),
         Expect(BUNDLE_FILE, 5, "ExplanationOfBenefit.payment.amount.value", "must be a number, not a string")),
    Case("fhir encounter in 2090", "fhir", fhir(ENCOUNTER, "period.start", "2090-01-10"),
         Expect(BUNDLE_FILE, 2, "Encounter.period.start", "after the extract date")),
    Case("fhir condition in 2090", "fhir", fhir(CONDITION, "onsetDateTime", "2090-05-01", ndjson=True),
         Expect(NDJSON_FILE, 3, "Condition.onsetDateTime", "after the extract date")),
    Case("fhir observation in 2090", "fhir", fhir(OBSERVATION, "effectiveDateTime", "2090-05-01"),
         Expect(BUNDLE_FILE, 4, "Observation.effectiveDateTime", "after the extract date")),
    Case("fhir born in 2090", "fhir", fhir(PATIENT, "birthDate", "2090-05-01"),
         Expect(BUNDLE_FILE, 1, "Patient.birthDate", "after the extract date")),
    Case("fhir EOB in 2090", "fhir", fhir(EOB, "billablePeriod.start", "2090-02-01"),
         Expect(BUNDLE_FILE, 5, "ExplanationOfBenefit.billablePeriod.start", "after the extract date")),
    Case("fhir encounter ends before it starts", "fhir", fhir(ENCOUNTER, "period.end", "2024-01-09"),
         Expect(BUNDLE_FILE, 2, "Encounter.period.end", "before the start")),
    Case("fhir condition resolved before onset", "fhir", fhir(CONDITION, "abatementDateTime", "2019-01-01"),
         Expect(BUNDLE_FILE, 3, "Condition.abatementDateTime", "before the start")),
    Case("fhir valueQuantity as a string", "fhir", fhir(OBSERVATION, "valueQuantity", "7.5"),
         Expect(BUNDLE_FILE, 4, "Observation.valueQuantity", "must be an object, not a string")),
    Case("fhir valueQuantity.value as a string", "fhir", fhir(OBSERVATION, "valueQuantity.value", "7.5", ndjson=True),
         Expect(NDJSON_FILE, 4, "Observation.valueQuantity.value", "must be a number, not a string ('7.5')")),
    Case("fhir patient name as a string", "fhir", fhir(PATIENT, "name", "Jane Doe"),
         Expect(BUNDLE_FILE, 1, "Patient.name", "must be an array, not a string")),
    Case("fhir patient given name as a string", "fhir", fhir(PATIENT, "name", [{"given": "Jane"}]),
         Expect(BUNDLE_FILE, 1, "Patient.name.given", "must be an array, not a string")),
    Case("fhir patient extension as a string", "fhir", fhir(PATIENT, "extension", "white"),
         Expect(BUNDLE_FILE, 1, "Patient.extension", "must be an array, not a string")),
    Case("fhir patient address as a string", "fhir", fhir(PATIENT, "address", "1 Main St"),
         Expect(BUNDLE_FILE, 1, "Patient.address", "must be an array, not a string")),
    Case("fhir patient address items as strings", "fhir", fhir(PATIENT, "address", ["1 Main St"]),
         Expect(BUNDLE_FILE, 1, "Patient.address", "must be an object, not a string")),
    Case("fhir patient gender as a list", "fhir", fhir(PATIENT, "gender", ["female"]),
         Expect(BUNDLE_FILE, 1, "Patient.gender", "must be a string, not an array")),
    Case("fhir encounter period as a string", "fhir", fhir(ENCOUNTER, "period", "2024-01-10", ndjson=True),
         Expect(NDJSON_FILE, 2, "Encounter.period", "must be an object, not a string")),
    Case("fhir class code as a list", "fhir", fhir(ENCOUNTER, "class", {"code": ["AMB"]}),
         Expect(BUNDLE_FILE, 2, "Encounter.class.code", "must be a string, not an array")),
    Case("fhir coding code as an object", "fhir", fhir(CONDITION, "code", {"coding": [{"system": "http://snomed.info/sct", "code": {"v": 1}}]}),
         Expect(BUNDLE_FILE, 3, "Condition.code.coding.code", "must be a string, not an object")),
    Case("fhir JSON nested 10,000 deep (NDJSON)", "fhir", lambda folder: write_fhir(folder, FHIR_BASE, ndjson=True, extra_lines=(deep_json(),)),
         Expect(NDJSON_FILE, len(FHIR_BASE) + 1, "", "nested too deep")),
    Case("fhir JSON nested 10,000 deep (bundle)", "fhir",
         fhir_raw(BUNDLE_FILE, '{"resourceType": "Bundle", "entry": [], "x": ' + "[" * 10_000 + "]" * 10_000 + "}"),
         Expect(BUNDLE_FILE, None, "", "nested too deep")),
    Case("fhir line not JSON", "fhir", lambda folder: write_fhir(folder, FHIR_BASE, ndjson=True, extra_lines=('{"resourceType": "Patient", "id": ',)),
         Expect(NDJSON_FILE, len(FHIR_BASE) + 1, "", "not valid JSON")),
    Case("fhir bundle entry not a list", "fhir", fhir_raw(BUNDLE_FILE, json.dumps({"resourceType": "Bundle", "entry": {"resource": {}}})),
         Expect(BUNDLE_FILE, None, "Bundle.entry", "must be a JSON array")),
    Case("fhir dangling patient", "fhir", fhir(ENCOUNTER, "subject", {"reference": "Patient/nobody"}),
         Expect(BUNDLE_FILE, 2, "Encounter.subject", "dangling reference to Patient 'nobody'")),
    Case("fhir missing id", "fhir", fhir(OBSERVATION, "id", ""), Expect(BUNDLE_FILE, 4, "Observation.id", "missing resource id")),
    Case("fhir bad date", "fhir", fhir(CONDITION, "onsetDateTime", "01/02/2020"), Expect(BUNDLE_FILE, 3, "Condition.onsetDateTime", "bad date")),
]


# --- Tuva ----------------------------------------------------------------------------------

TUVA_BASE: dict[str, list[dict[str, str]]] = {
    "eligibility": [
        {"person_id": "A1", "gender": "female", "birth_date": "1950-02-03", "enrollment_start_date": "2023-01-01",
         "enrollment_end_date": "2023-12-31", "first_name": "Ana", "last_name": "Lee"},
    ],
    "medical_claim": [
        {"claim_id": "CL1", "claim_line_number": "1", "claim_type": "professional", "person_id": "A1",
         "claim_start_date": "2023-03-01", "claim_end_date": "2023-03-01", "place_of_service_code": "11",
         "paid_amount": "80.00", "diagnosis_code_1": "E119"},
        {"claim_id": "CL2", "claim_line_number": "1", "claim_type": "professional", "person_id": "A1",
         "claim_start_date": "2023-04-01", "claim_end_date": "2023-04-02", "place_of_service_code": "11",
         "paid_amount": "95.00", "diagnosis_code_1": "I10"},
    ],
    "pharmacy_claim": [
        {"claim_id": "RX1", "claim_line_number": "1", "person_id": "A1", "dispensing_date": "2023-03-02",
         "ndc_code": "00093721401", "paid_amount": "12.50", "days_supply": "30"},
    ],
    "lab_result": [
        {"lab_result_id": "L1", "person_id": "A1", "result": "7.1", "result_datetime": "2023-03-01",
         "normalized_component_code": "4548-4"},
    ],
    "procedure": [
        {"procedure_id": "PX1", "person_id": "A1", "procedure_date": "2023-03-01", "normalized_code_type": "hcpcs",
         "normalized_code": "77067"},
    ],
    "immunization": [
        {"immunization_id": "IM1", "person_id": "A1", "occurrence_date": "2023-10-02", "source_code_type": "cvx",
         "source_code": "150"},
    ],
}


def tuva(file: str, index: int, column: str, value: str):
    def make(folder: Path) -> Path:
        tables = copy.deepcopy(TUVA_BASE)
        tables[file][index][column] = value
        return write_tuva(folder / "tuva", tables)
    return make


def tuva_file(file: str, change: Callable[[Path], None]):
    def make(folder: Path) -> Path:
        tuva_folder = write_tuva(folder / "tuva", TUVA_BASE)
        change(tuva_folder / f"{file}.csv")
        return tuva_folder
    return make


def write_tuva(folder: Path, tables: dict[str, list[dict[str, str]]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        columns = list(dict.fromkeys(c for row in rows for c in row))
        with (folder / f"{name}.csv").open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    return folder


MED = "medical_claim.csv"
TUVA_CASES = [
    Case("tuva procedure dated 2099", "tuva", tuva("procedure", 0, "procedure_date", FAR_FUTURE),
         Expect("procedure.csv", 2, "procedure_date", "after the extract date")),
    Case("tuva immunization bad date", "tuva", tuva("immunization", 0, "occurrence_date", "02/10/2023"),
         Expect("immunization.csv", 2, "occurrence_date", "bad date")),
    Case("tuva paid inf", "tuva", tuva("medical_claim", 0, "paid_amount", "inf"), Expect(MED, 2, "paid_amount", "not a finite amount")),
    Case("tuva paid -Infinity", "tuva", tuva("medical_claim", 1, "paid_amount", "-Infinity"), Expect(MED, 3, "paid_amount", "not a finite amount")),
    Case("tuva paid 1e308", "tuva", tuva("medical_claim", 1, "paid_amount", "1e308"), Expect(MED, 3, "paid_amount", "beyond any claim")),
    Case("tuva paid text", "tuva", tuva("medical_claim", 0, "paid_amount", "eighty"), Expect(MED, 2, "paid_amount", "not a number")),
    Case("tuva pharmacy paid inf", "tuva", tuva("pharmacy_claim", 0, "paid_amount", "inf"),
         Expect("pharmacy_claim.csv", 2, "paid_amount", "not a finite amount")),
    Case("tuva days_supply inf", "tuva", tuva("pharmacy_claim", 0, "days_supply", "inf"),
         Expect("pharmacy_claim.csv", 2, "days_supply", "beyond 3,650 days")),
    Case("tuva claim dated 2099", "tuva", tuva("medical_claim", 1, "claim_start_date", FAR_FUTURE),
         Expect(MED, 3, "claim_start_date", "after the extract date")),
    Case("tuva claim ends in 2099", "tuva", tuva("medical_claim", 1, "claim_end_date", FAR_FUTURE),
         Expect(MED, 3, "claim_end_date", "after the extract date")),
    Case("tuva claim ends before it starts", "tuva", tuva("medical_claim", 1, "claim_end_date", "2023-03-31"),
         Expect(MED, 3, "claim_end_date", "before the start date")),
    Case("tuva fill dated 2099", "tuva", tuva("pharmacy_claim", 0, "dispensing_date", FAR_FUTURE),
         Expect("pharmacy_claim.csv", 2, "dispensing_date", "after the extract date")),
    Case("tuva born in 2099", "tuva", tuva("eligibility", 0, "birth_date", FAR_FUTURE),
         Expect("eligibility.csv", 2, "birth_date", "after the extract date")),
    Case("tuva lab in 2099", "tuva", tuva("lab_result", 0, "result_datetime", FAR_FUTURE),
         Expect("lab_result.csv", 2, "result_datetime", "after the extract date")),
    Case("tuva bad date", "tuva", tuva("medical_claim", 0, "claim_start_date", "03/01/2023"),
         Expect(MED, 2, "claim_start_date", "bad date")),
    Case("tuva truncated medical_claim.csv", "tuva", tuva_file("medical_claim", truncate), Expect(MED, 3, None, "expected 9")),
    Case("tuva unterminated quote", "tuva", tuva_file("medical_claim", open_quote), Expect(MED, 4, None, "unterminated quote")),
    Case("tuva folder named medical_claim.csv", "tuva", tuva_file("medical_claim", folder_instead), Expect(MED, None, None, "is a folder")),
    Case("tuva 50 MB header line", "tuva", tuva_file("eligibility", huge_header), Expect("eligibility.csv", 1, None, "header line is longer")),
]

CASES = CSV_CASES + FHIR_CASES + TUVA_CASES


def matching(issues, expect: Expect) -> bool:
    return any((i.file, i.row, i.column) == (expect.file, expect.row, expect.column) and expect.message in i.message for i in issues)


def test_the_corpus_covers_every_format():
    assert len(CASES) >= 40
    assert {c.fmt for c in CASES} == {"csv", "fhir", "tuva"}
    assert len({c.id for c in CASES + CSV_WARNINGS}) == len(CASES + CSV_WARNINGS)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_an_error_where_it_is_and_the_store_is_unchanged(store, tmp_path, case):
    engine, _ = store
    before = table_checksums(engine)
    report = import_path(engine, case.make(tmp_path / "input"), fmt=case.fmt)
    assert not report.ok
    assert matching(report.errors, case.expect), report.to_text()
    assert table_checksums(engine) == before


@pytest.mark.parametrize("case", CSV_WARNINGS, ids=[c.id for c in CSV_WARNINGS])
def test_ignored_input_is_a_warning_and_the_data_are_unchanged(store, tmp_path, case):
    """The same data again plus something the importer ignores: a warning, and no data table
    changes (only the import's own bookkeeping: its import_run row and the pending-derive mark)."""
    engine, _ = store
    before = table_checksums(engine, skip=BOOKKEEPING)
    report = import_path(engine, case.make(tmp_path / "input"), fmt=case.fmt)
    assert report.ok, report.to_text()
    assert matching(report.warnings, case.expect), report.to_text()
    assert table_checksums(engine, skip=BOOKKEEPING) == before


def test_the_valid_inputs_of_the_corpus_import(store, tmp_path):
    """The bases every case corrupts are themselves valid: each case fails for its one change."""
    engine, _ = store
    assert import_path(engine, write_fhir(tmp_path / "fhir", FHIR_BASE), fmt="fhir").ok
    assert import_path(engine, write_fhir(tmp_path / "ndjson", FHIR_BASE, ndjson=True), fmt="fhir").ok
    report = import_path(engine, write_tuva(tmp_path / "tuva", TUVA_BASE), fmt="tuva")
    assert report.ok, report.to_text()
    assert VALID  # the CSV base is test_csv_import's valid bundle, which the seeded store holds


# --- the command line ------------------------------------------------------------------------

CLI_CASES = [
    ("audit --since yesterday", ["audit", "--since", "yesterday"], "'yesterday' is not a date; use YYYY-MM-DD"),
    ("scorecard --period 2026-13", ["scorecard", "--period", "2026-13"], "'2026-13' is not a month; use YYYY-MM"),
    ("costs --period 2026-1", ["costs", "--period", "2026-1"], "'2026-1' is not a month"),
    ("payments --period 13-2026", ["payments", "--period", "13-2026"], "'13-2026' is not a month"),
]


@pytest.mark.parametrize(("argv", "message"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_bad_arguments_are_usage_errors(store, capsys, argv, message):
    engine, url = store
    before = table_checksums(engine)
    with pytest.raises(SystemExit) as stopped:
        main([*argv, "--database-url", url])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err
    assert table_checksums(engine) == before


def test_output_into_a_closed_pipe_stops_quietly(store):
    """``python -m core info | head -0``: the reader is gone before the first line is written."""
    engine, url = store
    before = table_checksums(engine)
    process = subprocess.Popen([sys.executable, "-m", "core", "info", "--database-url", url], cwd=PROJECT_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) in (0, 141)
    assert "Traceback" not in stderr, stderr
    assert table_checksums(engine) == before


# --- big NDJSON ----------------------------------------------------------------------------


def test_a_big_ndjson_file_that_mixes_types_is_streamed(tmp_path):
    """A 20 MB mixed NDJSON file (the 200 MB one is in tests/e2e/test_big_input.py)."""
    assert_mixed_ndjson_is_streamed(tmp_path, 2_000)


def assert_mixed_ndjson_is_streamed(tmp_path: Path, observations: int) -> None:
    """A mixed NDJSON file is read twice line by line, never held: the memory an import needs
    does not grow with the observations it skips (10 KB each, unmapped)."""
    note = "x" * 10_000
    with (tmp_path / NDJSON_FILE).open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in FHIR_BASE)
        handle.writelines(json.dumps({"resourceType": "Observation", "id": f"n{i}", "status": "final", "subject": SUBJECT,
                                      "effectiveDateTime": "2024-01-10", "valueString": note,
                                      "code": {"coding": [{"system": "http://loinc.org", "code": "0000-0"}]}}) + "\n"
                          for i in range(observations))
    size = (tmp_path / NDJSON_FILE).stat().st_size
    tracemalloc.start()
    try:
        frames, report = read_fhir(tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok, report.to_text()
    assert report.unmapped_codes["Observation.code:0000-0"] == observations
    assert len(frames["measurement"]) == 1
    assert peak < size / 8, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"


@pytest.mark.parametrize("end", [FAR_FUTURE, "9999-12-31"])
def test_an_enrolment_past_the_extract_is_a_warning_and_counted_to_its_month(engine, tmp_path, end):
    """Open or planned enrolment ends are normal in eligibility files: member-months stop at the
    extract's month (never hundreds of future months), with a warning."""
    tables = copy.deepcopy(TUVA_BASE)
    tables["eligibility"][0]["enrollment_end_date"] = end
    report = import_path(engine, write_tuva(tmp_path / "tuva", tables), fmt="tuva")
    assert report.ok, report.to_text()
    assert matching(report.warnings, Expect("eligibility.csv", 2, "enrollment_end_date", "end after the extract date", "warning"))
    with engine.connect() as conn:
        last = conn.execute(select(func.max(Attribution.month))).scalar_one()
    assert last == date.today().replace(day=1)

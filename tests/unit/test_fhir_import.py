"""FHIR R4 importer: the Synthea fixture bundles, the same data as Bulk NDJSON, malformed input.

Expected counts are computed here from the source JSON, independently of core/ingest/fhir/.
"""

import json
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import SQLModel

from core.ingest import import_path
from core.ingest.fhir import read_fhir
from core.ingest.fhir.maps import load_fhir_maps
from core.ingest.fhir.resources import parse_fhir_date, ref_id
from core.ingest.idmap import make_id, normalize_icd10
from core.store import models
from core.store.months import add_months, as_month
from tests.conftest import FIXTURES

FHIR_DIR = FIXTURES / "fhir_r4_synthea"
DATA_TABLES = [t for t in SQLModel.metadata.sorted_tables if t.name not in ("import_run", "import_patient", "import_effect", "derive_touched")]


def import_fhir(engine, path: Path):
    return import_path(engine, path, fmt="fhir")


def table_counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in DATA_TABLES}


def rows(engine, model) -> list:
    with engine.connect() as conn:
        return conn.execute(select(model.__table__)).mappings().all()


def source_resources() -> list[dict]:
    out = []
    for f in sorted(FHIR_DIR.glob("*.json")):
        out += [e["resource"] for e in json.loads(f.read_text())["entry"]]
    return out


# --- small parsers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("2011-11-22T09:40:54+00:00", date(2011, 11, 22)),
        ("2011-11-22", date(2011, 11, 22)),
        ("2011-11", date(2011, 11, 1)),
        ("2011", date(2011, 1, 1)),
        ("2011-13-01", None),
        ("22/11/2011", None),
        ("1850-01-01", None),
        (None, None),
        (20111122, None),
    ],
)
def test_parse_fhir_date(value, expected):
    assert parse_fhir_date(value) == expected


@pytest.mark.parametrize(
    "ref, expected",
    [
        ({"reference": "urn:uuid:abc-1"}, "abc-1"),
        ({"reference": "Patient/abc"}, "abc"),
        ({"reference": "https://x.org/fhir/Patient/abc/_history/2"}, "abc"),
        ({"reference": "#contained"}, None),
        ({"display": "no reference"}, None),
        (None, None),
    ],
)
def test_ref_id(ref, expected):
    assert ref_id(ref) == expected


@pytest.mark.parametrize(
    "snomed, icd10",
    [
        ("44054006", "E11.9"),
        ("38341003", "I10"),
        ("59621000", "I10"),
        ("13645005", "J44.9"),
        ("195967001", "J45.909"),
        ("88805009", "I50.9"),
        ("84114007", "I50.9"),
        ("433144002", "N18.30"),
        ("370143000", "F33.9"),
        ("36923009", "F32.A"),
        ("49436004", "I48.91"),
        ("53741008", "I25.10"),
        ("15777000", "R73.03"),
        ("714628002", "R73.03"),
        ("162864005", "E66.9"),
        ("55822004", "E78.5"),
        ("26929004", "G30.9"),
    ],
)
def test_snomed_map_covers_subgroup_conditions(snomed, icd10):
    assert load_fhir_maps()["snomed_to_icd10"][snomed] == icd10


@pytest.mark.parametrize(
    "code, expected", [("E119", "E11.9"), ("e11.9", "E11.9"), ("I10", "I10"), ("N1830", "N18.30"), ("250.00", None), ("", None)]
)
def test_normalize_icd10(code, expected):
    assert normalize_icd10(code) == expected


def test_make_id_is_deterministic_and_short():
    long_id = make_id("tuva:lab", "x" * 80)
    assert long_id == make_id("tuva:lab", "x" * 80) and len(long_id) <= 64 and long_id.startswith("tuva:lab:h:")
    assert make_id("fhir", "abc") == "fhir:abc"


# --- the Synthea fixture -----------------------------------------------------------------------


def test_fixture_counts_match_source(engine):
    report = import_fhir(engine, FHIR_DIR)
    assert report.ok, report.to_text()
    src = source_resources()
    by_type = defaultdict(list)
    for r in src:
        by_type[r["resourceType"]].append(r)

    patients = {p["patient_id"]: p for p in rows(engine, models.Patient)}
    assert len(patients) == len(by_type["Patient"]) == 12
    assert (
        sum(p["death_date"] is not None for p in patients.values())
        == sum("deceasedDateTime" in p for p in by_type["Patient"])
        == 3
    )

    # Encounters by class (the fixture's classes map straight onto kinds, no type overrides).
    enc_class = {f"fhir:{e['id']}": e["class"]["code"] for e in by_type["Encounter"]}
    encounters = {e["encounter_id"]: e for e in rows(engine, models.Encounter)}
    assert set(encounters) == set(enc_class)
    assert Counter(e["kind"] for e in encounters.values() if enc_class[e["encounter_id"]] == "EMER") == {"ed_visit": 22}
    assert Counter(enc_class[k] for k, e in encounters.items() if e["kind"] == "admission") == {"IMP": 3}
    assert Counter(enc_class.values()) == {"AMB": 238, "EMER": 22, "IMP": 3}

    # HbA1c and blood pressure readings (BP from the 55284-4 panel components).
    meas = Counter(m["code"] for m in rows(engine, models.Measurement))
    obs_codes = Counter(o["code"]["coding"][0]["code"] for o in by_type["Observation"])
    assert meas["4548-4"] == obs_codes["4548-4"] == 44
    panel_components = Counter(
        c["code"]["coding"][0]["code"]
        for o in by_type["Observation"]
        if o["code"]["coding"][0]["code"] in ("55284-4", "85354-9")
        for c in o["component"]
    )
    assert meas["8480-6"] == panel_components["8480-6"] + obs_codes["8480-6"] == 97
    assert meas["8462-4"] == panel_components["8462-4"] + obs_codes["8462-4"] == 97
    assert meas["72166-2"] == obs_codes["72166-2"]

    # Paid amounts: EOB payment of external (ED, inpatient) encounters; none on internal ones.
    paid_by_enc = defaultdict(float)
    for eob in by_type["ExplanationOfBenefit"]:
        enc = ref_id(eob["item"][0]["encounter"][0])
        paid_by_enc[f"fhir:{enc}"] += eob["payment"]["amount"]["value"]
    emer_imp = sum(v for k, v in paid_by_enc.items() if enc_class[k] in ("EMER", "IMP"))
    db_emer_imp = sum(e["paid_usd"] for k, e in encounters.items() if enc_class[k] in ("EMER", "IMP"))
    assert db_emer_imp == pytest.approx(emer_imp)
    assert all(e["paid_usd"] == 0 for e in encounters.values() if e["is_internal"])
    external = sum(v for k, v in paid_by_enc.items() if not encounters[k]["is_internal"])
    assert sum(e["paid_usd"] for e in encounters.values()) == pytest.approx(external)

    # Member-months: 24-month encounter lookback within the 36 months ending at the last encounter month.
    starts = [parse_fhir_date(e["period"]["start"]) for e in by_type["Encounter"]]
    last = as_month(max(starts))
    first_window = add_months(last, -35)
    deaths = {f"fhir:{p['id']}": parse_fhir_date(p.get("deceasedDateTime")) for p in by_type["Patient"]}
    expected = set()
    for e, start in zip(by_type["Encounter"], starts, strict=True):
        pid = "fhir:" + ref_id(e["subject"])
        for k in range(24):
            m = add_months(start, k)
            death = deaths[pid]
            if first_window <= m <= last and (death is None or m <= as_month(death)):
                expected.add((pid, m))
    got = {(a["patient_id"], a["month"]) for a in rows(engine, models.Attribution)}
    assert got == expected and len(got) > 0

    # Conditions: mapped SNOMED codes only; unmapped ones are counted, not dropped silently.
    conditions = rows(engine, models.Condition)
    mapped = load_fhir_maps()["snomed_to_icd10"]
    assert len(conditions) == sum(c["code"]["coding"][0]["code"] in mapped for c in by_type["Condition"])
    assert sum(n for k, n in report.unmapped_codes.items() if k.startswith("Condition.code:")) == len(by_type["Condition"]) - len(
        conditions
    )
    assert len(rows(engine, models.Medication)) == len(by_type["MedicationRequest"])


def to_ndjson(resources: list[dict], folder: Path) -> Path:
    """Bulk Data form: one file per type, references as ``Type/id`` instead of ``urn:uuid:id``."""
    folder.mkdir(parents=True, exist_ok=True)
    type_of = {r["id"]: r["resourceType"] for r in resources}

    def fix(node):
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and ref.startswith("urn:uuid:") and ref[9:] in type_of:
                node = {**node, "reference": f"{type_of[ref[9:]]}/{ref[9:]}"}
            return {k: fix(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    files = defaultdict(list)
    for r in resources:
        files[r["resourceType"]].append(json.dumps(fix(r)))
    for rtype, lines in files.items():
        (folder / f"{rtype}.ndjson").write_text("\n".join(lines) + "\n")
    return folder


def test_ndjson_gives_the_same_frames(tmp_path):
    bundle_frames, bundle_report = read_fhir(FHIR_DIR)
    ndjson_frames, ndjson_report = read_fhir(to_ndjson(source_resources(), tmp_path / "bulk"))
    assert bundle_report.ok and ndjson_report.ok, ndjson_report.to_text()
    assert set(bundle_frames) == set(ndjson_frames)
    for table, frame in bundle_frames.items():
        key = frame.columns[0] if table != "attribution" else ["patient_id", "month"]
        a = frame.sort_values(key).reset_index(drop=True)
        b = ndjson_frames[table].sort_values(key).reset_index(drop=True)
        assert a.equals(b), table
    assert bundle_report.unmapped_codes == ndjson_report.unmapped_codes


def test_reimport_changes_nothing(engine):
    first = import_fhir(engine, FHIR_DIR)
    before = table_counts(engine)
    with engine.connect() as conn:
        paid = conn.execute(select(func.sum(models.Encounter.paid_usd))).scalar_one()
    second = import_fhir(engine, FHIR_DIR)
    assert first.ok and second.ok
    assert table_counts(engine) == before
    assert set(second.new_rows.values()) == {0}
    with engine.connect() as conn:
        assert conn.execute(select(func.sum(models.Encounter.paid_usd))).scalar_one() == pytest.approx(paid)


# --- malformed input ---------------------------------------------------------------------------

PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "1950-03-04", "gender": "female"}
ENCOUNTER = {
    "resourceType": "Encounter",
    "id": "e1",
    "class": {"code": "AMB"},
    "subject": {"reference": "Patient/p1"},
    "period": {"start": "2024-05-01T10:00:00+00:00"},
}


def write_ndjson(folder: Path, name: str, lines: list) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")


BAD_CASES = [
    ("not_json", "Patient.ndjson", [PATIENT, '{"resourceType": "Patient", "id": '], ("Patient.ndjson", 2, "not valid JSON")),
    ("wrong_type_in_file", "Patient.ndjson", [PATIENT, ENCOUNTER], ("Patient.ndjson", 2, "wrong resourceType")),
    ("no_resource_type", "Patient.ndjson", [PATIENT, {"id": "p2"}], ("Patient.ndjson", 2, "resourceType")),
    ("missing_id", "Patient.ndjson", [PATIENT, {**PATIENT, "id": ""}], ("Patient.ndjson", 2, "missing resource id")),
    (
        "dangling_reference",
        "Encounter.ndjson",
        [ENCOUNTER, {**ENCOUNTER, "id": "e2", "subject": {"reference": "Patient/nobody"}}],
        ("Encounter.ndjson", 2, "dangling reference to Patient 'nobody'"),
    ),
    (
        "bad_date",
        "Encounter.ndjson",
        [ENCOUNTER, {**ENCOUNTER, "id": "e2", "period": {"start": "2024-02-30"}}],
        ("Encounter.ndjson", 2, "bad date '2024-02-30'"),
    ),
    (
        "dangling_encounter",
        "ExplanationOfBenefit.ndjson",
        [
            {
                "resourceType": "ExplanationOfBenefit",
                "id": "x1",
                "patient": {"reference": "Patient/p1"},
                "payment": {"amount": {"value": 5}},
                "item": [{"encounter": [{"reference": "Encounter/nope"}]}],
            }
        ],
        ("ExplanationOfBenefit.ndjson", 1, "dangling reference to Encounter 'nope'"),
    ),
    (
        "bad_birth_date",
        "Patient.ndjson",
        [PATIENT, {**PATIENT, "id": "p2", "birthDate": "03/04/1950"}],
        ("Patient.ndjson", 2, "birthDate"),
    ),
]


def seed_store(engine, folder: Path) -> dict[str, int]:
    write_ndjson(folder, "Patient.ndjson", [PATIENT])
    write_ndjson(folder, "Encounter.ndjson", [ENCOUNTER])
    assert import_fhir(engine, folder).ok
    return table_counts(engine)


@pytest.mark.parametrize("name, file, lines, expected", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_malformed_fhir_is_rejected_and_writes_nothing(engine, tmp_path, name, file, lines, expected):
    before = seed_store(engine, tmp_path / "good")
    bad = tmp_path / "bad"
    write_ndjson(bad, "Patient.ndjson", [PATIENT])
    write_ndjson(bad, "Encounter.ndjson", [ENCOUNTER])
    write_ndjson(bad, file, lines)
    report = import_fhir(engine, bad)
    assert not report.ok
    exp_file, exp_row, exp_text = expected
    assert any(e.file == exp_file and e.row == exp_row and exp_text in f"{e.column} {e.message}" for e in report.errors), (
        report.to_text()
    )
    assert table_counts(engine) == before


def test_fifty_megabyte_line_is_rejected_unparsed(engine, tmp_path):
    before = seed_store(engine, tmp_path / "good")
    bad = tmp_path / "bad"
    huge = json.dumps({**PATIENT, "id": "p2", "text": {"div": "x" * 50_000_000}})
    write_ndjson(bad, "Patient.ndjson", [PATIENT, huge, {**PATIENT, "id": "p3"}])
    report = import_fhir(engine, bad)
    assert not report.ok
    assert [(e.file, e.row) for e in report.errors] == [("Patient.ndjson", 2)]
    assert "longer than" in report.errors[0].message
    assert table_counts(engine) == before


def test_bundle_that_is_not_json_is_rejected(engine, tmp_path):
    (tmp_path / "broken.json").write_text('{"resourceType": "Bundle", "entry": [')
    report = import_fhir(engine, tmp_path)
    assert not report.ok and report.errors[0].file == "broken.json" and "not valid JSON" in report.errors[0].message
    assert set(table_counts(engine).values()) == {0}


@pytest.mark.parametrize("tobacco, expected", [("449868002", 1.0), ("8517006", 0.0), ("266919005", 0.0)])
def test_tobacco_status_and_bp_panel(tmp_path, tobacco, expected):
    obs = [
        {
            "resourceType": "Observation",
            "id": "t1",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "72166-2"}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2024-05-01",
            "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": tobacco}]},
        },
        {
            "resourceType": "Observation",
            "id": "bp",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2024-05-01",
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": c}]}, "valueQuantity": {"value": v, "unit": "mm[Hg]"}}
                for c, v in (("8480-6", 150), ("8462-4", 95))
            ],
        },
    ]
    write_ndjson(tmp_path, "Patient.ndjson", [PATIENT])
    write_ndjson(tmp_path, "Observation.ndjson", obs)
    frames, report = read_fhir(tmp_path)
    assert report.ok
    got = dict(zip(frames["measurement"]["measurement_id"], frames["measurement"]["value"], strict=True))
    assert got == {"fhir:t1": expected, "fhir:bp:8480-6": 150.0, "fhir:bp:8462-4": 95.0}


def test_coverage_periods_are_the_member_months(tmp_path):
    coverage = {
        "resourceType": "Coverage",
        "id": "c1",
        "beneficiary": {"reference": "Patient/p1"},
        "period": {"start": "2024-01-15", "end": "2024-03-10"},
    }
    write_ndjson(tmp_path, "Patient.ndjson", [PATIENT])
    write_ndjson(tmp_path, "Encounter.ndjson", [ENCOUNTER])
    write_ndjson(tmp_path, "Coverage.ndjson", [coverage])
    frames, report = read_fhir(tmp_path)
    assert report.ok
    assert list(frames["attribution"]["month"]) == [date(2024, 1, 1), date(2024, 2, 1), date(2024, 3, 1)]
    assert set(frames["attribution"]["practice_id"]) == {"imported"}  # no Organization in the import


def test_eob_without_encounter_becomes_an_external_claim(tmp_path):
    eob = {
        "resourceType": "ExplanationOfBenefit",
        "id": "x1",
        "type": {"coding": [{"code": "pharmacy"}]},
        "patient": {"reference": "Patient/p1"},
        "billablePeriod": {"start": "2024-06-02"},
        "payment": {"amount": {"value": 42.5}},
    }
    write_ndjson(tmp_path, "Patient.ndjson", [PATIENT])
    write_ndjson(tmp_path, "ExplanationOfBenefit.ndjson", [eob])
    frames, report = read_fhir(tmp_path)
    assert report.ok
    row = frames["encounter"].iloc[0]
    assert (row["encounter_id"], row["kind"], row["paid_usd"], row["is_internal"]) == (
        "fhir:eob:x1",
        "pharmacy_fill",
        42.5,
        False,
    )


def test_eob_network_status_is_read(tmp_path):
    def eob(eid, **extra):
        return {"resourceType": "ExplanationOfBenefit", "id": eid, "type": {"coding": [{"code": "pharmacy"}]},
                "patient": {"reference": "Patient/p1"}, "billablePeriod": {"start": "2024-06-02"},
                "payment": {"amount": {"value": 10.0}}, **extra}  # fmt: skip

    carin = {"supportingInfo": [{"category": {"coding": [{"code": "benefitpaymentstatus"}]},
                                 "code": {"coding": [{"code": "outofnetwork"}]}}]}  # fmt: skip
    r4 = {"benefitBalance": [{"category": {"coding": [{"code": "30"}]}, "network": {"coding": [{"code": "out"}]}}]}
    inside = {"benefitBalance": [{"network": {"coding": [{"code": "in"}]}}]}
    write_ndjson(tmp_path, "Patient.ndjson", [PATIENT])
    write_ndjson(tmp_path, "ExplanationOfBenefit.ndjson", [eob("x1", **carin), eob("x2", **r4), eob("x3", **inside), eob("x4")])
    frames, report = read_fhir(tmp_path)
    assert report.ok
    flags = dict(zip(frames["encounter"]["encounter_id"], frames["encounter"]["in_network"], strict=True))
    assert flags == {"fhir:eob:x1": False, "fhir:eob:x2": False, "fhir:eob:x3": True, "fhir:eob:x4": True}


def test_eob_facility_and_specialty_are_read(tmp_path):
    def eob(eid, **extra):
        return {"resourceType": "ExplanationOfBenefit", "id": eid, "type": {"coding": [{"code": "pharmacy"}]},
                "patient": {"reference": "Patient/p1"}, "billablePeriod": {"start": "2024-06-02"},
                "payment": {"amount": {"value": 10.0}}, **extra}  # fmt: skip

    cardiology = {"coding": [{"system": "http://nucc.org/provider-taxonomy", "code": "207RC0000X",
                              "display": "Cardiovascular Disease Physician"}]}  # fmt: skip
    write_ndjson(tmp_path, "Patient.ndjson", [PATIENT])
    write_ndjson(tmp_path, "ExplanationOfBenefit.ndjson", [
        eob("x1", facility={"display": "St. Brendan Medical Center"}, provider={"display": "A billing group"}),
        eob("x2", provider={"identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}},
            careTeam=[{"sequence": 1, "provider": {"reference": "Practitioner/d1"}, "qualification": cardiology}]),
        eob("x3", provider={"reference": "Organization/o9"}, careTeam=[{"sequence": 1, "qualification": {"text": "Oncology"}}]),
        eob("x4", provider={"reference": "Practitioner/d1"}),  # a bare id names nothing
    ])  # fmt: skip
    write_ndjson(tmp_path, "Organization.ndjson", [{"resourceType": "Organization", "id": "o9", "name": "Lakeshore Regional Hospital"}])  # fmt: skip
    frames, report = read_fhir(tmp_path)
    assert report.ok
    enc = frames["encounter"].set_index("encounter_id")
    assert enc["facility"].to_dict() == {"fhir:eob:x1": "St. Brendan Medical Center", "fhir:eob:x2": "1234567893",
                                         "fhir:eob:x3": "Lakeshore Regional Hospital", "fhir:eob:x4": ""}  # fmt: skip
    assert enc["specialty"].to_dict() == {"fhir:eob:x1": "", "fhir:eob:x2": "Cardiovascular Disease Physician",
                                          "fhir:eob:x3": "Oncology", "fhir:eob:x4": ""}  # fmt: skip


def test_icd10_coding_wins_and_unmapped_snomed_is_counted(tmp_path):
    def condition(cid, codings):
        return {
            "resourceType": "Condition",
            "id": cid,
            "subject": {"reference": "Patient/p1"},
            "onsetDateTime": "2020-01-01",
            "code": {"coding": codings},
        }

    conditions = [
        condition(
            "c1",
            [
                {"system": "http://snomed.info/sct", "code": "44054006"},
                {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E1165"},
            ],
        ),
        condition("c2", [{"system": "http://snomed.info/sct", "code": "44054006"}]),
        condition("c3", [{"system": "http://snomed.info/sct", "code": "10509002"}]),
    ]
    write_ndjson(tmp_path, "Patient.ndjson", [{**PATIENT, "deceasedBoolean": True}])
    write_ndjson(tmp_path, "Encounter.ndjson", [ENCOUNTER])
    write_ndjson(tmp_path, "Condition.ndjson", conditions)
    frames, report = read_fhir(tmp_path)
    assert report.ok
    assert dict(zip(frames["condition"]["condition_id"], frames["condition"]["code"], strict=True)) == {
        "fhir:c1": "E11.65",
        "fhir:c2": "E11.9",
    }
    assert report.unmapped_codes == {"Condition.code:http://snomed.info/sct|10509002": 1}
    assert frames["patient"]["death_date"].iloc[0] == date(2024, 5, 1)  # deceasedBoolean: last encounter date
    assert any("deceased without a date" in w.message for w in report.warnings)

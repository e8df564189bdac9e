"""The services the outcome sets need (screenings, vaccines, care plans, hospice) and where stays
ended, from hand-made FHIR and Tuva files: what each format carries lands in procedures and
encounter discharge dispositions, and what it cannot be read is counted, never guessed."""

import json
from pathlib import Path

import pandas as pd

from core.derive.measures import load_measures, procedure_keys
from core.ingest.fhir import read_fhir
from core.ingest.tuva import read_tuva

PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "1950-04-02", "gender": "female"}


def fhir_bundle(folder: Path, *resources: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    entries = [{"resource": r} for r in (PATIENT, *resources)]
    (folder / "bundle.json").write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    return folder


def keys(frame: pd.DataFrame) -> list[str]:
    return sorted(procedure_keys(frame["code"], frame["code_system"], load_measures().code_systems))


def test_fhir_immunizations_procedures_care_plans_and_screening_results(tmp_path):
    subject = {"reference": "Patient/p1"}
    folder = fhir_bundle(
        tmp_path / "f",
        {"resourceType": "Immunization", "id": "i1", "status": "completed", "patient": subject,
         "occurrenceDateTime": "2024-10-02", "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "150"}]}},
        {"resourceType": "Immunization", "id": "i2", "status": "not-done", "patient": subject,
         "occurrenceDateTime": "2024-10-03", "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "150"}]}},
        {"resourceType": "Procedure", "id": "x1", "status": "completed", "subject": subject,
         "performedPeriod": {"start": "2023-05-01T09:00:00Z"},
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "73761001"},
                             {"system": "http://www.ama-assn.org/go/cpt", "code": "45378"}]}},
        {"resourceType": "Procedure", "id": "x2", "status": "entered-in-error", "subject": subject,
         "performedDateTime": "2023-05-01", "code": {"coding": [{"system": "http://snomed.info/sct", "code": "71651007"}]}},
        {"resourceType": "CarePlan", "id": "c1", "status": "active", "subject": subject, "period": {"start": "2024-01-15"},
         "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "736285004"}], "text": "Hyperlipidemia plan"}]},
        {"resourceType": "CarePlan", "id": "c2", "status": "draft", "subject": subject, "created": "2024-02-15"},
        {"resourceType": "Observation", "id": "o1", "status": "final", "subject": subject, "effectiveDateTime": "2024-03-01",
         "code": {"coding": [{"system": "http://loinc.org", "code": "57905-2"}]}, "valueCodeableConcept": {"text": "Negative"}},
    )
    frames, report = read_fhir(folder)
    assert report.ok, report.to_text()
    proc = frames["procedure"]
    # CPT is preferred over SNOMED; the not-done, entered-in-error and draft ones are skipped.
    assert keys(proc) == ["CVX:150", "HCPCS:45378", "LOCAL:CARE-PLAN", "LOINC:57905-2"]
    assert set(proc["code_system"]) == {"CVX", "HCPCS", "LOCAL", "LOINC"}  # system URLs stored by their short names
    assert proc.set_index("code").loc["care-plan", "performed_date"].isoformat() == "2024-01-15"
    skipped = json.dumps(report.to_dict())
    assert "not-done" in skipped and "entered-in-error" in skipped and "draft" in skipped


def test_fhir_discharge_disposition_mapped_and_unknown_codes_counted(tmp_path):
    subject = {"reference": "Patient/p1"}

    def stay(eid, code):
        return {"resourceType": "Encounter", "id": eid, "subject": subject, "class": {"code": "IMP"},
                "period": {"start": "2024-01-02", "end": "2024-01-06"},
                "hospitalization": {"dischargeDisposition": {"coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/discharge-disposition", "code": code}]}}}

    frames, report = read_fhir(fhir_bundle(tmp_path / "f", stay("e1", "exp"), stay("e2", "snf"), stay("e3", "zzz")))
    assert report.ok, report.to_text()
    got = dict(zip(frames["encounter"]["encounter_id"], frames["encounter"]["discharge_disposition"], strict=True))
    assert got == {"fhir:e1": "died", "fhir:e2": "snf", "fhir:e3": "other"}
    assert "Encounter.dischargeDisposition:zzz" in json.dumps(report.to_dict())


ELIG = "person_id,gender,birth_date,enrollment_start_date,enrollment_end_date\nA,female,1950-01-01,2023-01-01,2024-12-31\n"
CLAIM_COLS = "claim_id,claim_line_number,claim_type,person_id,claim_start_date,claim_end_date,claim_line_start_date," \
             "paid_amount,hcpcs_code,bill_type_code,revenue_center_code,place_of_service_code,discharge_disposition_code"


def tuva_folder(tmp_path: Path, claims: list[str], **files: str) -> Path:
    folder = tmp_path / "tuva"
    folder.mkdir()
    (folder / "eligibility.csv").write_text(ELIG)
    if claims:
        (folder / "medical_claim.csv").write_text(CLAIM_COLS + "\n" + "\n".join(claims) + "\n")
    for name, text in files.items():
        (folder / f"{name}.csv").write_text(text)
    return folder


def test_tuva_claim_lines_become_procedures_except_on_reversed_claims(tmp_path):
    folder = tuva_folder(tmp_path, [
        "C1,1,professional,A,2024-03-04,2024-03-04,2024-03-04,210.00,45378,,,22,",
        "C1,2,professional,A,2024-03-04,2024-03-04,2024-03-04,0,45378,,,22,",  # same code, same day: once
        "C2,1,professional,A,2024-10-01,2024-10-01,2024-10-01,25.00,90686,,,11,",
        "C3,1,professional,A,2024-05-01,2024-05-01,2024-05-01,120.00,77067,,,22,",
        "C3,2,professional,A,2024-05-01,2024-05-01,2024-05-01,-120.00,77067,,,22,",  # reversed claim: not done
    ])
    frames, report = read_tuva(folder)
    assert report.ok, report.to_text()
    assert keys(frames["procedure"]) == ["HCPCS:45378", "HCPCS:90686"]


def test_tuva_discharge_status_on_stays(tmp_path):
    folder = tuva_folder(tmp_path, [
        "S1,1,institutional,A,2024-02-01,2024-02-05,,9000.00,,111,0100,,20",  # died
        "S2,1,institutional,A,2024-06-01,2024-06-04,,8000.00,,111,0100,,3",  # UB-04 03: skilled nursing (zero-padded)
        "S3,1,institutional,A,2024-08-01,2024-08-04,,8000.00,,111,0100,,99",  # unknown code
    ])
    frames, report = read_tuva(folder)
    assert report.ok, report.to_text()
    enc = frames["encounter"]
    stays = enc[enc["kind"] == "admission"].sort_values("start_date")
    assert stays["discharge_disposition"].tolist() == ["died", "snf", "other"]
    assert "discharge_disposition_code:99" in json.dumps(report.to_dict())


def test_tuva_procedure_and_immunization_files(tmp_path):
    folder = tuva_folder(
        tmp_path, [],
        procedure="procedure_id,person_id,procedure_date,source_code_type,source_code,normalized_code_type,normalized_code\n"
                  "P1,A,2024-02-02,snomed-ct,713603004,hcpcs,99497\nP2,A,2024-02-03,,,,\n",
        immunization="immunization_id,person_id,occurrence_date,source_code_type,source_code\nI1,A,2024-10-05,cvx,150\n",
    )
    frames, report = read_tuva(folder)
    assert report.ok, report.to_text()
    assert keys(frames["procedure"]) == ["CVX:150", "HCPCS:99497"]
    assert "procedure:no code" in json.dumps(report.to_dict())


def test_tuva_immunization_without_a_date_column_is_an_error(tmp_path):
    folder = tuva_folder(tmp_path, [], immunization="immunization_id,person_id,source_code_type,source_code\nI1,A,cvx,150\n")
    _frames, report = read_tuva(folder)
    assert not report.ok
    assert any(e.file == "immunization.csv" and "date column" in e.message for e in report.errors)

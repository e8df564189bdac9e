"""SNOMED CT conditions (as Synthea writes them) reach the chronic-condition, frailty and
risk-factor groups the subgroup rules use; what stays unmapped is reported by code system and code."""

import json

import pandas as pd
import pytest

from core.derive.risk import load_code_lists, match_code_groups
from core.ingest.fhir import read_fhir
from core.ingest.fhir.maps import load_fhir_maps
from core.ingest.report import ImportReport

SNOMED = "http://snomed.info/sct"


@pytest.mark.parametrize(
    ("snomed", "display", "group"),
    [
        ("368581000119106", "Neuropathy due to type 2 diabetes mellitus", "diabetes"),
        ("127013003", "Disorder of kidney due to diabetes mellitus", "diabetes"),
        ("1551000119108", "Nonproliferative diabetic retinopathy due to type 2 diabetes mellitus", "diabetes"),
        ("46177005", "End-stage renal disease", "ckd"),
        ("414545008", "Ischemic heart disease", "ischemic_heart_disease"),
        ("424132000", "Non-small cell carcinoma of lung, TNM stage 1", "cancer"),
        ("449868002", "Smokes tobacco daily", "tobacco"),
        ("65568007", "Cigarette smoker", "tobacco"),
        ("302870006", "Hypertriglyceridemia", "hyperlipidaemia"),
        ("26929004", "Alzheimer's disease", "dementia"),
        ("161898004", "Falls", "falls"),
    ],
)
def test_a_synthea_condition_lands_in_its_group(tmp_path, snomed, display, group):
    resources = [
        {"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01", "gender": "male"},
        {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}, "onsetDateTime": "2020-01-01",
         "code": {"coding": [{"system": SNOMED, "code": snomed, "display": display}], "text": display}},
    ]
    (tmp_path / "data.ndjson").write_text("\n".join(json.dumps(r) for r in resources) + "\n")
    frames, report = read_fhir(tmp_path)
    assert report.ok, report.to_text()
    codes = frames["condition"]["code"]
    assert list(codes) == [load_fhir_maps()["snomed_to_icd10"][snomed]]
    assert group in set(match_code_groups(codes, load_code_lists())["group_id"])


def test_an_ex_smoker_is_not_a_tobacco_user():
    target = load_fhir_maps()["snomed_to_icd10"]["8517006"]
    assert "tobacco" not in set(match_code_groups(pd.Series([target]), load_code_lists())["group_id"])


def test_unmapped_codes_are_listed_by_code_system_and_code():
    report = ImportReport(source="x", format="fhir")
    report.unmapped_codes = {f"Condition.code:{SNOMED}|444814009": 11, f"Condition.code:{SNOMED}|72892002": 7,
                             "Encounter.class:XYZ": 2, "medical_claim.diagnosis:icd-9-cm|250.00": 3}
    assert report.unmapped_by_system() == {
        "Condition.code SNOMED CT": {"444814009": 11, "72892002": 7},
        "medical_claim.diagnosis ICD-9-CM": {"250.00": 3},
        "Encounter.class": {"XYZ": 2},
    }
    text = report.to_text()
    assert "unmapped Condition.code SNOMED CT: 18 row(s) of 2 code(s): 444814009 (11), 72892002 (7)" in text

"""The data quality checks: per import from the stored report, and of the store now."""

import json
from datetime import UTC, date, datetime

import pytest
from sqlmodel import Session

from core.derive.subgroups.assign import assign_subgroups
from core.store.models import Attribution, Condition, Encounter, ImportRun, Measurement, Patient, Practice, Staff, Team
from core.views import data_quality as dq

CLAIMS = {"claims": 40, "lines": 95, "netted": 3, "credits": 1, "credits_usd": -497.75, "unpaid": 2, "repeated_header": 4,
          "repeated_header_usd": 200668.58, "ed_claims": 9, "ed_visits": 4, "ed_attached": 1, "stay_claims": 5, "stays": 2,
          "stay_attached": 3, "examples": {"credits": ["CL91"], "repeated_header": ["CL1", "CL2"], "ed_visits": ["CL7"]}}  # fmt: skip


def by_check(rows):
    return {r["check"].split(" (")[0]: r for r in rows}


def test_claims_corrections_of_an_import_report():
    rows = by_check(dq.import_checks({"claims": CLAIMS, "unmapped_codes": {}}, import_id=7))
    assert rows["credits"]["count"] == 1 and rows["credits"]["usd_at_stake"] == pytest.approx(497.75)
    assert rows["credits"]["examples"] == "CL91" and rows["credits"]["import_id"] == 7
    assert rows["repeated header amounts"]["usd_at_stake"] == pytest.approx(200668.58)
    assert rows["ED claims merged into ED visits"]["count"] == 9
    assert "9 claims into 4 visits" in next(r["check"] for r in rows.values() if r["check"].startswith("ED"))
    assert rows["claims netted"]["status"] == dq.REPORTED
    assert by_check(dq.import_checks({"claims": {**CLAIMS, "unpaid": 0}}))["claims paid $0"]["status"] == dq.CLEAN


def test_an_import_without_a_claims_section_reads_not_reported():
    rows = dq.import_checks({"unmapped_codes": {}})
    assert len(rows) == len(dq.CLAIMS_CHECKS) and all(r["status"] == dq.NOT_REPORTED for r in rows)


def test_unmapped_codes_by_system():
    report = {"unmapped_codes": {"Condition.code:http://snomed.info/sct|44465007": 2, "Condition.code:http://snomed.info/sct|70704007": 5,
                                 "lab_result:2571-8": 63, "medical_claim.bill_type_code:99": 1}}  # fmt: skip
    rows = by_check(dq.import_checks(report))
    snomed = rows["unmapped codes: Condition.code SNOMED CT"]
    assert snomed["count"] == 7 and snomed["examples"] == "70704007 (5), 44465007 (2)"
    assert rows["unmapped codes: lab_result"]["count"] == 63
    assert rows["unmapped codes: medical_claim.bill_type_code"]["examples"] == "99 (1)"


def _seed(engine, staff: bool):
    with Session(engine) as s:
        s.add(Practice(practice_id="PR", name="P"))
        s.flush()
        s.add(Team(team_id="T", practice_id="PR", name="T"))
        s.flush()
        if staff:
            s.add(Staff(staff_id="S", team_id="T", name="S", role="physician", annual_cost_usd=1.0, paid_hours_per_year=1.0))
        s.add_all([Patient(patient_id=p, birth_date=date(1960, 1, 1), sex="female") for p in ("A", "B", "C")])
        s.flush()
        # history months (of 6; 3 needed) in Jan, Feb, Mar: A first recorded in March 0, 0, 1; B (a
        # condition since 2020) 1, 2, 3; C nothing ever 0, 0, 0: 3 + 2 + 3 thin patient-months
        s.add_all([Attribution(patient_id=p, month=date(2025, m, 1), practice_id="PR", team_id="T") for p in "ABC" for m in (1, 2, 3)])
        s.add_all([
            Encounter(encounter_id="E1", patient_id="A", team_id="T", kind="office_visit", start_date=date(2025, 3, 9), is_internal=True),
            Measurement(measurement_id="M1", patient_id="A", measured_date=date(2025, 3, 20), code="4548-4", value=7.1),
            Condition(condition_id="C1", patient_id="B", code="I10", onset_date=date(2020, 5, 1)),
        ])  # fmt: skip
        s.add(ImportRun(source="x.zip", format="tuva", status="committed", finished_at=datetime(2025, 4, 1, tzinfo=UTC),
                        report=json.dumps({"claims": CLAIMS, "unmapped_codes": {"lab_result:1-1": 2}})))  # fmt: skip
        s.add(ImportRun(source="y", format="csv", status="rejected", report="{}"))
        s.commit()


def test_store_checks_by_hand(store_engine):
    _seed(store_engine, staff=False)
    assert dq.thin_history(store_engine)["count"] == 0  # nothing assigned yet
    assign_subgroups(store_engine)
    store = {r["check"].split(" (")[0].split(":")[0]: r for r in dq.store_quality(store_engine).to_dict("records")}
    thin = store["patient-months with thin history"]
    assert thin["count"] == 8 and thin["examples"] == "A, C"  # the latest month with thin history: March
    assert "fewer than 3 of 6 months of data" in thin["check"] and "; 2 in 2025-03" in thin["check"]
    staff = store["missing staff"]
    assert staff["count"] == 1 and staff["examples"] == "E1" and "no staff roster" in staff["check"]
    imports = dq.import_quality(store_engine)
    assert set(imports["import_id"]) == {1}  # the rejected import wrote nothing to check
    text = dq.quality_text(dq.data_quality(store_engine))
    assert "import #1 (tuva" in text and "credits (claims netting to $0 or below, kept in their month): 1  $497.75  e.g. CL91" in text


def test_partly_staffed_store_names_the_missing_roles(store_engine):
    _seed(store_engine, staff=True)
    staff = dq.missing_staff(store_engine)
    assert "roles without staff" in staff["check"] and "medical_assistant" in staff["examples"]

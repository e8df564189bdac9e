"""Claims as analysts count them: hand-made claim vignettes, each with its hand count.

Each vignette is a few medical claim lines of one person, written as Tuva input-layer CSVs in
the current layout (``person_id``) and in the earlier-release layout (``patient_id``), imported,
and checked against what an analyst counts by hand: ED visits, acute stays, paid dollars, and
what the import report says it corrected.
"""

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from core.ingest import import_path
from core.ingest.claims import Claim, ClaimsReport, group_claims, load_claim_rules, net_claim
from core.ingest.tuva import read_tuva
from core.store.models import ImportRun
from tests.conftest import PROJECT_ROOT

# Every vignette as one person (ids 1, 2, ... in VIGNETTES order) of one import, in both layouts.
# Written by this module; refresh with UPDATE_VIGNETTES=1 after changing VIGNETTES.
VIGNETTE_DIR = PROJECT_ROOT / "tests" / "fixtures" / "tuva_vignettes"

# Column order of the current Tuva input layer (medical_claim) and of an earlier release
# (patient_id, without claim line dates or the file lineage columns).
CURRENT_COLUMNS = [
    "claim_id", "claim_line_number", "claim_type", "person_id", "member_id", "payer", "plan", "claim_start_date",
    "claim_end_date", "claim_line_start_date", "claim_line_end_date", "admission_date", "discharge_date",
    "discharge_disposition_code", "place_of_service_code", "bill_type_code", "revenue_center_code", "hcpcs_code",
    "rendering_npi", "facility_npi", "paid_date", "paid_amount", "allowed_amount", "diagnosis_code_type",
    "diagnosis_code_1", "in_network_flag", "data_source", "file_name", "ingest_datetime",
]  # fmt: skip
EARLIER_COLUMNS = [
    "claim_id", "claim_line_number", "claim_type", "patient_id", "member_id", "payer", "plan", "claim_start_date",
    "claim_end_date", "admission_date", "discharge_date", "discharge_disposition_code", "place_of_service_code",
    "bill_type_code", "revenue_center_code", "hcpcs_code", "rendering_npi", "facility_npi", "paid_date", "paid_amount",
    "allowed_amount", "diagnosis_code_type", "diagnosis_code_1", "data_source",
]  # fmt: skip
LAYOUTS = {"person_id": CURRENT_COLUMNS, "patient_id": EARLIER_COLUMNS}


def fac(claim, start, paid, rev="0450", bill="131", end=None, line=1, npi="1111111111", disposition="01"):
    """One institutional (facility) claim line."""
    return dict(claim_id=claim, claim_line_number=line, claim_type="institutional", claim_start_date=start,
                claim_end_date=end or start, bill_type_code=bill, revenue_center_code=rev, paid_amount=paid,
                facility_npi=npi, discharge_disposition_code=disposition)  # fmt: skip


def prof(claim, start, paid, pos="23", end=None, line=1, hcpcs="99284"):
    """One professional claim line."""
    return dict(claim_id=claim, claim_line_number=line, claim_type="professional", claim_start_date=start,
                claim_end_date=end or start, place_of_service_code=pos, paid_amount=paid, hcpcs_code=hcpcs)  # fmt: skip


def inpatient(claim, start, end, paid, npi="1111111111", disposition="01"):
    return fac(claim, start, paid, rev="0120", bill="111", end=end, npi=npi, disposition=disposition)


# name -> (claim lines of one person, hand counts). Hand counts: ed visits, acute stays, total paid
# of that person's medical encounters, and report figures that must equal the given values.
VIGNETTES = {
    "reversal": (
        [prof("R1", "2018-03-05", "120.00", pos="11", hcpcs="99214"),
         prof("R1", "2018-03-05", "-120.00", pos="11", line=2, hcpcs="99214")],
        dict(ed=0, stays=0, paid=0.0, specialist_visits=0, netted=1, credits=1, credits_usd=0.0),
    ),
    "adjustment": (
        [prof("A1", "2018-03-06", "200.00", pos="11"), prof("A1", "2018-03-06", "-200.00", pos="11", line=2),
         prof("A1", "2018-03-06", "150.00", pos="11", line=3)],
        dict(ed=0, stays=0, paid=150.0, specialist_visits=1, netted=1, credits=0),
    ),
    "denial": (
        [prof("D1", "2018-03-07", "0.00", pos="11"), prof("D1", "2018-03-07", "", pos="11", line=2)],
        dict(ed=0, stays=0, paid=0.0, specialist_visits=1, unpaid=1, credits=0),
    ),
    "net_zero_ed_claim": (
        [fac("Z1", "2018-04-01", "500.00"), fac("Z1", "2018-04-01", "-500.00", line=2)],
        dict(ed=0, stays=0, paid=0.0, netted=1, credits=1, credits_usd=0.0),
    ),
    "net_negative_credit": (
        [prof("N1", "2018-04-15", "-497.75", pos="11")],
        dict(ed=0, stays=0, paid=-497.75, specialist_visits=0, netted=1, credits=1, credits_usd=-497.75),
    ),
    "repeated_header_amount": (
        [fac("H1", "2018-05-02", "66898.86", rev=rev, bill="131", line=i + 1)
         for i, rev in enumerate(["0360", "0250", "0270", "0300", "0320", "0001"])]
        + [prof("P2", "2018-05-20", "50.00", pos="11"), prof("P2", "2018-05-20", "50.00", pos="11", line=2)],
        dict(ed=0, stays=0, paid=66898.86 + 100.0, repeated_header=1, repeated_header_usd=5 * 66898.86),
    ),
    "ed_facility_and_three_professional_same_day": (
        [fac("E1", "2018-05-10", "800.00"), prof("E2", "2018-05-10", "150.00"),
         prof("E3", "2018-05-10", "40.00", hcpcs="71046"), prof("E4", "2018-05-10", "15.00", hcpcs="93010")],
        dict(ed=1, stays=0, paid=1005.0, ed_claims=4, ed_visits=1),
    ),
    "eight_professional_reads_one_day": (
        [prof(f"Q{i}", "2018-05-11", "25.00", hcpcs="71046") for i in range(8)],
        dict(ed=1, stays=0, paid=200.0, ed_claims=8, ed_visits=1),
    ),
    "ed_over_midnight_and_a_return_visit": (
        [fac("M1", "2018-06-01", "900.00", end="2018-06-02"), prof("M2", "2018-06-01", "120.00"),
         prof("M3", "2018-06-02", "60.00"), fac("M4", "2018-06-09", "700.00")],
        dict(ed=2, stays=0, paid=1780.0, ed_claims=4, ed_visits=2),
    ),
    "ed_visits_on_consecutive_days": (
        [fac("C1", "2018-06-20", "600.00"), fac("C2", "2018-06-21", "650.00")],
        dict(ed=2, stays=0, paid=1250.0, ed_visits=2),
    ),
    "transfer_between_two_hospitals": (
        [inpatient("T1", "2018-07-01", "2018-07-04", "10000.00", npi="1111111111", disposition="02"),
         inpatient("T2", "2018-07-04", "2018-07-10", "15000.00", npi="2222222222")],
        dict(ed=0, stays=1, paid=25000.0, stay_claims=2, stays_report=1),
    ),
    "professional_claims_during_stay": (
        [fac("S0", "2018-08-01", "700.00"), prof("S0P", "2018-08-01", "180.00"),
         inpatient("S1", "2018-08-01", "2018-08-05", "9000.00"),
         prof("S2", "2018-08-02", "300.00", pos="21", hcpcs="99223"), prof("S3", "2018-08-03", "200.00", pos="21"),
         prof("S4", "2018-08-04", "100.00", pos="22", hcpcs="93306")],
        dict(ed=0, stays=1, paid=10480.0, other_claims=0, stay_attached=5),
    ),
    "readmission_after_discharge": (
        [inpatient("X1", "2018-09-01", "2018-09-05", "8000.00"), inpatient("X2", "2018-09-20", "2018-09-24", "7000.00")],
        dict(ed=0, stays=2, paid=15000.0, stay_claims=2, stays_report=2),
    ),
}


def write_tuva(folder: Path, people: dict[str, list[dict]], key: str) -> Path:
    """Tuva input-layer CSVs (eligibility + medical_claim) of ``people`` in the ``key`` layout."""
    folder.mkdir(parents=True, exist_ok=True)
    elig = pd.DataFrame(
        [{key: p, "gender": "female", "birth_date": "1950-02-01", "enrollment_start_date": "2018-01-01",
          "enrollment_end_date": "2018-12-31", "payer": "medicare", "plan": "medicare"} for p in people]
    )  # fmt: skip
    elig.to_csv(folder / "eligibility.csv", index=False)
    rows = []
    for person, lines in people.items():
        for ln in lines:
            row = {c: "" for c in LAYOUTS[key]}
            row.update({k: str(v) for k, v in ln.items()}, **{key: person, "member_id": person, "payer": "medicare"})
            row["diagnosis_code_type"], row["diagnosis_code_1"] = "icd-10-cm", "I10"
            if "in_network_flag" in row:
                row["in_network_flag"] = "1"
            rows.append(row)
    pd.DataFrame(rows, columns=LAYOUTS[key]).to_csv(folder / "medical_claim.csv", index=False)
    return folder


REPORT_KEYS = ("netted", "credits", "credits_usd", "unpaid", "repeated_header", "repeated_header_usd", "ed_claims",
               "ed_visits", "stay_claims", "stay_attached")  # fmt: skip


@pytest.mark.parametrize("key", LAYOUTS)
@pytest.mark.parametrize("name", VIGNETTES)
def test_vignette_counts_equal_the_hand_counts(tmp_path, name, key):
    lines, expected = VIGNETTES[name]
    frames, report = read_tuva(write_tuva(tmp_path / name, {"1": lines}, key))
    assert report.ok, report.to_text()
    enc = frames["encounter"]
    assert (enc["kind"] == "ed_visit").sum() == expected["ed"]
    assert (enc["kind"] == "admission").sum() == expected["stays"]
    assert enc["paid_usd"].sum() == pytest.approx(expected["paid"], abs=0.005)
    if "specialist_visits" in expected:
        assert (enc["kind"] == "specialist_visit").sum() == expected["specialist_visits"]
    if "other_claims" in expected:
        assert (enc["kind"] == "other_claim").sum() == expected["other_claims"]
    figures = report.to_dict()["claims"]
    assert figures["claims"] == len({ln["claim_id"] for ln in lines})
    for k in REPORT_KEYS:
        if k in expected:
            assert figures[k] == pytest.approx(expected[k], abs=0.005), k
    if "stays_report" in expected:
        assert figures["stays"] == expected["stays_report"]


def all_people() -> dict[str, list[dict]]:
    return {str(i + 1): lines for i, (lines, _) in enumerate(VIGNETTES.values())}


@pytest.mark.parametrize("key", LAYOUTS)
def test_committed_vignette_files_are_the_vignettes(tmp_path, key):
    """tests/fixtures/tuva_vignettes/<layout>/ hold exactly VIGNETTES (regenerate with UPDATE_VIGNETTES=1)."""
    if os.environ.get("UPDATE_VIGNETTES") == "1":
        write_tuva(VIGNETTE_DIR / key, all_people(), key)
    fresh = write_tuva(tmp_path, all_people(), key)
    for name in ("eligibility.csv", "medical_claim.csv"):
        assert (VIGNETTE_DIR / key / name).read_bytes() == (fresh / name).read_bytes(), name


@pytest.mark.parametrize("key", LAYOUTS)
def test_every_vignette_in_one_import_keeps_the_hand_counts(engine, key):
    """All vignettes as people of one import: the counts add up and the report is stored."""
    report = import_path(engine, VIGNETTE_DIR / key, fmt="tuva")
    assert report.ok, report.to_text()
    hand = [expected for _, expected in VIGNETTES.values()]
    with engine.connect() as conn:
        stored = json.loads(conn.execute(select(ImportRun.report)).scalar_one())["claims"]
    assert stored["ed_visits"] == sum(e["ed"] for e in hand)
    assert stored["stays"] == sum(e["stays"] for e in hand)
    assert stored["credits"] == sum(e.get("credits", 0) for e in hand)
    assert stored["credits_usd"] == pytest.approx(-497.75)
    assert stored["repeated_header"] == 1
    assert set(stored["examples"]) >= {"netted", "credits", "unpaid", "repeated_header", "ed_visits", "stays"}
    text = report.to_text()
    assert "net to zero or below: kept as credits in their month (net -$497.75)" in text
    assert "grouped into 6 ED visit(s)" in text and "grouped into 4 stay(s)" in text


def test_transfer_stay_spans_both_hospitals_and_is_named_by_its_first_claim(tmp_path):
    lines, _ = VIGNETTES["transfer_between_two_hospitals"]
    frames, _ = read_tuva(write_tuva(tmp_path, {"1": lines}, "person_id"))
    stay = frames["encounter"].iloc[0]
    assert stay["encounter_id"] == "tuva:claim:T1"
    assert (str(stay["start_date"])[:10], str(stay["end_date"])[:10]) == ("2018-07-01", "2018-07-10")


def test_credit_stays_in_its_own_month(tmp_path):
    lines, _ = VIGNETTES["net_negative_credit"]
    frames, _ = read_tuva(write_tuva(tmp_path, {"1": lines}, "person_id"))
    credit = frames["encounter"].iloc[0]
    assert str(credit["start_date"])[:7] == "2018-04" and credit["paid_usd"] == pytest.approx(-497.75)
    assert credit["kind"] == "other_claim" and credit["cost_category"] == "specialist"


# --- the rules on their own ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "claim_type, amounts, paid, repeated",
    [
        ("institutional", [66898.86] * 13, 66898.86, 1),  # header amount on every line: once
        ("institutional", [1773.16, 0.0, 0.0, 0.0], 1773.16, 0),  # header amount on the first line only
        ("institutional", [100.0, 250.0], 350.0, 0),  # line amounts
        ("institutional", [500.0, -500.0], 0.0, 0),  # reversed
        ("institutional", [500.0], 500.0, 0),  # one line
        ("institutional", [900.0] * 3 + [-900.0] * 3 + [850.0] * 3, 850.0, 1),  # adjusted, header on every line
        ("institutional", [-900.0] * 4, -900.0, 1),  # a reversal claim repeating its header
        ("institutional", [300.0, 300.0, 0.0], 300.0, 1),  # repeated on the revenue lines, total line blank
        ("institutional", [300.0, 300.0, 120.0], 720.0, 0),  # line amounts that happen to repeat
        ("professional", [50.0, 50.0], 100.0, 0),  # professional lines are line-level
        ("pharmacy", [12.5, 12.5], 25.0, 0),
    ],
)
def test_net_claim(claim_type, amounts, paid, repeated):
    report = ClaimsReport()
    assert net_claim("c", claim_type, amounts, load_claim_rules(), report).paid_usd == pytest.approx(paid)
    assert report.repeated_header == repeated


def claim(cid, kind, start, end=None, claim_type="professional", paid=100.0, **kw):
    from datetime import date

    d = date.fromisoformat
    category = {"admission": "inpatient", "ed_visit": "ed"}.get(kind, "other")
    return Claim(cid, "p", claim_type, kind, category, d(start), d(end) if end else None, paid, **kw)


@pytest.mark.parametrize(
    "claims, expected",
    [
        # An ED credit on its own is no visit.
        ([claim("a", "ed_visit", "2018-01-01", paid=-10.0, reversed=True)], ["other_claim"]),
        # A credit of an ED claim joins the visit it falls in.
        ([claim("a", "ed_visit", "2018-01-01", claim_type="institutional"),
          claim("b", "ed_visit", "2018-01-01", claim_type="institutional", paid=-100.0, reversed=True)], ["ed_visit"]),
        # A lab on the day of an ED visit belongs to it; a lab a week later does not.
        ([claim("a", "ed_visit", "2018-01-01"), claim("b", "imaging_lab", "2018-01-01"),
          claim("c", "imaging_lab", "2018-01-08")], ["ed_visit", "imaging_lab"]),
        # An office visit on the day of an ED visit stays an office visit.
        ([claim("a", "ed_visit", "2018-01-01"), claim("b", "specialist_visit", "2018-01-01")],
         ["ed_visit", "specialist_visit"]),
        # ED the day before an admission led to it.
        ([claim("a", "ed_visit", "2018-01-01", claim_type="institutional"),
          claim("b", "admission", "2018-01-02", "2018-01-06", claim_type="institutional")], ["admission"]),
        # Stays two days apart are two stays (readmission); one day apart, one (transfer).
        ([claim("a", "admission", "2018-01-01", "2018-01-03", claim_type="institutional"),
          claim("b", "admission", "2018-01-05", "2018-01-06", claim_type="institutional")], ["admission", "admission"]),
        ([claim("a", "admission", "2018-01-01", "2018-01-03", claim_type="institutional"),
          claim("b", "admission", "2018-01-04", "2018-01-06", claim_type="institutional")], ["admission"]),
    ],
)  # fmt: skip
def test_group_claims(claims, expected):
    episodes = group_claims(claims, load_claim_rules(), ClaimsReport())
    assert sorted(e.kind for e in episodes) == sorted(expected)
    assert sum(e.paid_usd for e in episodes) == pytest.approx(sum(c.paid_usd for c in claims))


# --- the same rules on FHIR ExplanationOfBenefit ---------------------------------------------------

FHIR_PATIENT = {"resourceType": "Patient", "id": "p1", "birthDate": "1950-03-04", "gender": "female"}


def eob(eid, kind, start, paid, end=None, claim=None, bill=None, revenue=None, pos=None, status="active"):
    """An ExplanationOfBenefit that references no Encounter (a payer's claims feed, CARIN BB style)."""
    body = {"resourceType": "ExplanationOfBenefit", "id": eid, "status": status,
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": kind}]},
            "patient": {"reference": "Patient/p1"}, "billablePeriod": {"start": start, "end": end or start},
            "payment": {"amount": {"value": paid, "currency": "USD"}}, "item": []}  # fmt: skip
    if claim:
        body["claim"] = {"reference": f"Claim/{claim}"}
    if bill:
        body["supportingInfo"] = [{"sequence": 1, "category": {"coding": [{"code": "typeofbill"}]},
                                   "code": {"coding": [{"code": bill}]}}]  # fmt: skip
    if revenue:
        body["item"].append({"sequence": 1, "revenue": {"coding": [{"code": revenue}]}})
    if pos:
        body["item"].append({"sequence": 1, "locationCodeableConcept": {"coding": [{"code": pos}]}})
    return body


FHIR_VIGNETTES = {
    "negative_payment_is_a_credit": (
        [eob("n1", "professional", "2024-03-02", -497.75, pos="11")],
        dict(ed=0, stays=0, paid=-497.75, credits=1, credits_usd=-497.75),
    ),
    "reversal_eob_of_the_same_claim": (
        [eob("o1", "professional", "2024-03-05", 120.0, claim="c1", pos="11"),
         eob("o2", "professional", "2024-03-05", -120.0, claim="c1", pos="11")],
        dict(ed=0, stays=0, paid=0.0, netted=1, credits=1),
    ),
    "cancelled_eob_pays_nothing": (
        [eob("x1", "professional", "2024-03-06", 80.0, pos="11", status="cancelled")],
        dict(ed=0, stays=0, paid=0.0),
    ),
    "ed_facility_and_three_professional_same_day": (
        [eob("f1", "institutional", "2024-04-01", 800.0, bill="0131", revenue="0450"),
         *(eob(f"p{i}", "professional", "2024-04-01", 50.0, pos="23") for i in range(3))],
        dict(ed=1, stays=0, paid=950.0, ed_claims=4),
    ),
    "transfer_between_two_hospitals": (
        [eob("h1", "institutional", "2024-05-01", 10000.0, end="2024-05-04", bill="0111", revenue="0120"),
         eob("h2", "institutional", "2024-05-04", 15000.0, end="2024-05-10", bill="0111", revenue="0120"),
         eob("h3", "professional", "2024-05-06", 300.0, pos="21")],
        dict(ed=0, stays=1, paid=25300.0, stay_claims=2, stay_attached=1),
    ),
    "readmission_after_discharge": (
        [eob("r1", "institutional", "2024-06-01", 8000.0, end="2024-06-05", bill="0111"),
         eob("r2", "institutional", "2024-06-20", 7000.0, end="2024-06-24", bill="0111")],
        dict(ed=0, stays=2, paid=15000.0),
    ),
}


@pytest.mark.parametrize("name", FHIR_VIGNETTES)
def test_fhir_vignette_counts_equal_the_hand_counts(tmp_path, name):
    from core.ingest.fhir import read_fhir

    eobs, expected = FHIR_VIGNETTES[name]
    (tmp_path / "Patient.ndjson").write_text(json.dumps(FHIR_PATIENT) + "\n")
    (tmp_path / "ExplanationOfBenefit.ndjson").write_text("\n".join(json.dumps(e) for e in eobs) + "\n")
    frames, report = read_fhir(tmp_path)
    assert report.ok, report.to_text()
    enc = frames.get("encounter", pd.DataFrame(columns=["kind", "paid_usd"]))
    assert (enc["kind"] == "ed_visit").sum() == expected["ed"]
    assert (enc["kind"] == "admission").sum() == expected["stays"]
    assert enc["paid_usd"].sum() == pytest.approx(expected["paid"], abs=0.005)
    figures = report.to_dict()["claims"]
    for k in REPORT_KEYS:
        if k in expected:
            assert figures[k] == pytest.approx(expected[k], abs=0.005), k


def test_credits_and_stays_flow_into_costs_and_readmissions(engine):
    """After the derive: a credit lowers its month's external cost, every claim dollar is accounted
    for once, and a transfer is no readmission."""
    from core.derive.pipeline import derive_all
    from core.metrics.cost_reports import reconcile_costs
    from core.store.models import PatientMonthActivity

    assert import_path(engine, VIGNETTE_DIR / "person_id", fmt="tuva").ok
    derive_all(engine)
    credit_person = str(list(VIGNETTES).index("net_negative_credit") + 1)
    with engine.connect() as conn:
        activity = pd.DataFrame(conn.execute(select(PatientMonthActivity.__table__)).mappings().all())
    april = activity[(activity["patient_id"] == f"person:{credit_person}") & (activity["month"].astype(str) == "2018-04-01")]
    assert april["cost_external_usd"].sum() == pytest.approx(-497.75)
    hand_paid = sum(expected["paid"] for _, expected in VIGNETTES.values())
    assert activity["cost_external_usd"].sum() == pytest.approx(hand_paid, abs=0.01)
    assert reconcile_costs(engine).difference_usd == pytest.approx(0.0, abs=0.01)

    # Readmissions count stays: of the 4 stays (transfer, stay with its ED visit, two of the
    # readmission vignette) one is followed by another admission within 30 days.
    from core.store.models import Cell

    with engine.connect() as conn:
        num, den = conn.execute(
            select(func.sum(Cell.numerator), func.sum(Cell.denominator)).where(
                Cell.metric == "readmission_30d", Cell.stratum == "all"
            )
        ).one()
    assert (num, den) == (1, 4)


def test_stay_dates_and_name_come_from_its_facility_claims():
    """An ED visit the day before and a reversed facility claim join the stay without naming or moving it."""
    claims = [
        claim("ed", "ed_visit", "2018-01-31", claim_type="institutional"),
        claim("rev", "admission", "2018-02-01", "2018-02-03", claim_type="institutional", paid=-50.0, reversed=True),
        claim("adm", "admission", "2018-02-01", "2018-02-05", claim_type="institutional"),
        claim("doc", "other_claim", "2018-02-02"),
    ]
    report = ClaimsReport()
    (stay,) = group_claims(claims, load_claim_rules(), report)
    assert (stay.kind, stay.anchor.claim_id, str(stay.start), str(stay.end)) == ("admission", "adm", "2018-02-01", "2018-02-05")
    assert stay.paid_usd == pytest.approx(250.0)
    assert (report.stays, report.stay_claims, report.stay_attached) == (1, 2, 2)


def test_a_stay_is_paid_when_its_last_claim_is_paid(tmp_path):
    """The run-out reads an encounter's paid date: for a stay, the latest of its claims'."""
    lines = [{**ln, "paid_date": paid} for ln, paid in zip(VIGNETTES["transfer_between_two_hospitals"][0],
                                                           ["2018-07-20", "2018-08-15"], strict=True)]  # fmt: skip
    frames, report = read_tuva(write_tuva(tmp_path, {"1": lines}, "person_id"))
    assert report.ok, report.to_text()
    assert [str(d)[:10] for d in frames["encounter"]["paid_date"]] == ["2018-08-15"]

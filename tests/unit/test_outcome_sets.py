"""The outcome sets per subgroup (prevention, chronic, complex and frail): a vignette per measure,
expected numerators and denominators worked out by hand. Months January-March 2024."""

from dataclasses import replace
from datetime import date

import pandas as pd
import pytest

from core.derive.measures import load_measures, patient_month_flags, procedure_keys
from tests.unit.test_measures import FEB, JAN, MAR, MONTHS, D, Y, flags, make_frames


def frames(attributed, patients=(), sexes=None, procedures=(), **kwargs):
    """make_frames plus the patients' sex ({id: sex}, default female) and procedures
    (patient, date, code, system)."""
    f = make_frames(attributed, patients=patients, **kwargs)
    pts = f.patients.assign(sex=[(sexes or {}).get(p, "female") for p in f.patients["patient_id"]])
    proc = pd.DataFrame(list(procedures), columns=["patient_id", "performed_date", "code", "code_system"])
    return replace(f, patients=pts, procedures=proc)


def test_every_subgroup_has_its_own_outcome_set():
    catalogue = load_measures()
    own = {sg: {m.id for m in catalogue.measures if sg in m.subgroups} for sg in ("healthy", "at_risk", "chronic", "complex", "frail")}
    assert {"colorectal_screening", "breast_screening", "cervical_screening", "bmi_change"} <= own["healthy"]
    assert {"progression_to_chronic", "tobacco_cessation"} <= own["at_risk"]
    assert {"statin_use", "phq9_mean", "phq9_10_plus"} <= own["chronic"]
    assert {"days_at_home", "care_plan"} <= own["complex"]
    assert {"falls_with_injury", "days_at_home", "advance_care_planning", "hospice_at_end_of_life", "deaths_at_home"} <= own["frail"]


def test_code_systems_read_through_aliases():
    keys = procedure_keys(pd.Series(["45378", "150", "713603004", "82274", "g0506"]),
                          pd.Series(["CPT", "http://hl7.org/fhir/sid/cvx", "http://snomed.info/sct", "cpt", "HCPCS"]),
                          load_measures().code_systems)
    assert keys.tolist() == ["HCPCS:45378", "CVX:150", "SNOMED:713603004", "HCPCS:82274", "HCPCS:G0506"]


def test_colorectal_screening_look_backs_by_test_and_age():
    people = [("A", "1960-01-01", None), ("B", "1960-01-01", None), ("C", "1960-01-01", None), ("Y", "1990-01-01", None)]
    f = frames({"A": [MAR], "B": [MAR], "C": [MAR], "Y": [MAR]}, patients=people, procedures=[
        ("A", "2015-06-01", "45378", "CPT"),  # colonoscopy within 10 years: met
        ("B", "2022-12-01", "82274", "CPT"),  # FIT 15 months ago: not met (12-month look-back)
        ("C", "2023-04-01", "82274", "CPT"),  # FIT in the last 12 months: met
        ("Y", "2024-01-01", "45378", "CPT"),  # 34 years old: not in the denominator
    ])
    assert flags(f, "colorectal_screening", [MAR]) == {("A", "2024-03"): (1, 1), ("B", "2024-03"): (0, 1), ("C", "2024-03"): (1, 1)}


def test_breast_screening_women_50_to_74_within_27_months():
    people = [("W", "1965-01-01", None), ("M", "1965-01-01", None), ("O", "1965-01-01", None)]
    f = frames({"W": [MAR], "M": [MAR], "O": [MAR]}, patients=people, sexes={"M": "male"}, procedures=[
        ("W", "2022-01-15", "77067", "CPT"),  # 26 months before March 2024: met
        ("O", "2021-11-15", "77067", "CPT"),  # 28 months: not met
        ("M", "2023-01-15", "77067", "CPT"),  # men are not in the denominator
    ])
    assert flags(f, "breast_screening", [MAR]) == {("W", "2024-03"): (1, 1), ("O", "2024-03"): (0, 1)}


def test_cervical_screening_cytology_3_years_or_hpv_5_years():
    people = [(p, "1985-01-01", None) for p in "ABC"]
    f = frames({p: [JAN] for p in "ABC"}, patients=people, procedures=[
        ("A", "2020-06-01", "87624", "CPT"),  # HPV test 43 months ago: met
        ("B", "2020-06-01", "88175", "CPT"),  # cytology 43 months ago: not met
        ("C", "2021-06-01", "88175", "CPT"),  # cytology 31 months ago: met
    ])
    assert flags(f, "cervical_screening", [JAN]) == {("A", "2024-01"): (1, 1), ("B", "2024-01"): (0, 1), ("C", "2024-01"): (1, 1)}


def test_flu_vaccination_rolling_12_months_any_code_system():
    f = frames({"A": MONTHS, "B": [JAN]}, procedures=[("A", "2023-02-10", "150", "CVX"), ("B", "2023-10-01", "86198006", "SNOMED")])
    # A's vaccination of February 2023 counts through January 2024 only.
    assert flags(f, "flu_vaccination") == {("A", "2024-01"): (1, 1), ("A", "2024-02"): (0, 1), ("A", "2024-03"): (0, 1),
                                           ("B", "2024-01"): (1, 1)}


def test_pneumococcal_vaccination_ever_from_65():
    people = [("O", "1950-01-01", None), ("N", "1950-01-01", None), ("Y", "1980-01-01", None)]
    f = frames({"O": [JAN], "N": [JAN], "Y": [JAN]}, patients=people, procedures=[("O", "2016-03-01", "33", "CVX")])
    assert flags(f, "pneumococcal_vaccination", [JAN]) == {("O", "2024-01"): (1, 1), ("N", "2024-01"): (0, 1)}


def test_tobacco_cessation_counselling_or_medicine():
    tob = [(p, "Z72.0", "2020-01-01", None) for p in "ABC"]
    f = frames({p: [JAN] for p in "ABCD"}, conditions=tob, procedures=[("A", "2023-05-01", "99406", "CPT")],
               medications=[("B", "varenicline 1 MG", "2023-12-01", None)])
    assert flags(f, "tobacco_cessation", [JAN]) == {("A", "2024-01"): (1, 1), ("B", "2024-01"): (1, 1), ("C", "2024-01"): (0, 1)}


def test_bmi_change_among_the_overweight():
    bmi = "39156-5"
    f = frames({"A": [JAN], "B": [JAN], "C": [JAN]}, measurements=[
        ("A", "2022-12-01", bmi, 31.0), ("A", "2023-11-01", bmi, 29.5),  # lost 1.5
        ("B", "2022-12-01", bmi, 23.0), ("B", "2023-11-01", bmi, 24.0),  # baseline under 25: not counted
        ("C", "2022-12-01", bmi, 27.0),  # no recent reading: not counted
    ])
    assert flags(f, "bmi_change", [JAN]) == {("A", "2024-01"): (-1.5, 1)}


def test_progression_to_chronic_counted_the_month_before_diagnosis():
    f = frames({"A": MONTHS, "B": MONTHS, "C": MONTHS}, conditions=[
        ("A", "E11.9", "2024-02-10", None),  # first chronic diagnosis in February
        ("B", "I10", "2019-01-01", None),  # chronic before: never in the denominator
    ])
    assert flags(f, "progression_to_chronic") == {("A", "2024-01"): (1, Y), ("C", "2024-01"): (0, Y),
                                                  ("C", "2024-02"): (0, Y), ("C", "2024-03"): (0, Y)}


def test_statin_use_among_diabetics_40_to_75():
    people = [("A", "1960-01-01", None), ("B", "1960-01-01", None), ("Y", "1995-01-01", None)]
    dm = [(p, "E11.9", "2015-01-01", None) for p in "ABY"]
    f = frames({"A": [JAN, FEB], "B": [JAN], "Y": [JAN]}, patients=people, conditions=dm,
               medications=[("A", "atorvastatin 20 MG Oral Tablet", "2023-01-01", "2024-02-10"), ("Y", "simvastatin", "2023-01-01", None)])
    assert flags(f, "statin_use", [JAN, FEB]) == {("A", "2024-01"): (1, 1), ("A", "2024-02"): (0, 1), ("B", "2024-01"): (0, 1)}


def test_phq9_mean_and_share_of_10_or_more():
    phq = "44261-6"
    f = frames({"A": [JAN], "B": [JAN], "C": [JAN]}, measurements=[
        ("A", "2023-06-01", phq, 14.0), ("A", "2023-12-01", phq, 9.0), ("B", "2023-08-01", phq, 12.0),
        ("C", "2022-06-01", phq, 20.0),  # older than 12 months
    ])
    assert flags(f, "phq9_10_plus", [JAN]) == {("A", "2024-01"): (0, 1), ("B", "2024-01"): (1, 1)}
    assert flags(f, "phq9_mean", [JAN]) == {("A", "2024-01"): (9.0, 1), ("B", "2024-01"): (12.0, 1)}


def test_days_at_home_subtracts_stays_and_days_after_death():
    f = frames({"A": [JAN, FEB], "B": [FEB], "C": [JAN]}, patients=[("B", "1940-01-01", "2024-02-19")], encounters=[
        dict(patient_id="A", kind="admission", start_date=D("2024-01-30"), end_date=D("2024-02-03")),  # 2 days Jan, 3 Feb
        dict(patient_id="A", kind="snf_stay", start_date=D("2024-02-03"), end_date=D("2024-02-09")),  # overlaps on the 3rd
        dict(patient_id="A", kind="office_visit", start_date=D("2024-02-20")),  # not a stay
    ])
    got = flags(f, "days_at_home", [JAN, FEB])
    assert got[("A", "2024-01")] == (pytest.approx(29 * 365 / 31), 1)
    # February 2024 has 29 days; the stays cover Feb 1-9, 9 distinct days (the 3rd, in both, counts once).
    assert got[("A", "2024-02")] == (pytest.approx(20 * 365 / 29), 1)
    assert got[("B", "2024-02")] == (pytest.approx(19 * 365 / 29), 1)  # alive Feb 1-19, dead the 10 days after
    assert got[("C", "2024-01")] == (pytest.approx(365.0), 1)


def test_falls_with_injury_need_an_injury_the_same_day():
    f = frames({"A": MONTHS, "B": MONTHS}, conditions=[
        ("A", "W19.XXXA", "2024-01-05", None), ("A", "S72.001A", "2024-01-05", None),  # fall with hip fracture
        ("A", "W01.0XXA", "2024-03-02", None), ("A", "S01.01XA", "2024-03-02", None),
        ("B", "W19.XXXA", "2024-02-01", None),  # a fall without an injury recorded that day
        ("B", "S80.01XA", "2024-02-05", None),
    ])
    got = flags(f, "falls_with_injury")
    assert got[("A", "2024-01")] == (1, Y) and got[("A", "2024-03")] == (1, Y) and got[("A", "2024-02")] == (0, Y)
    assert all(v == (0, Y) for (p, _m), v in got.items() if p == "B")


def test_end_of_life_hospice_and_place_of_death():
    people = [("H", "1930-01-01", "2024-02-20"), ("I", "1930-01-01", "2024-02-10"), ("S", "1930-01-01", "2024-03-05"),
              ("L", "1930-01-01", "2024-01-25")]
    f = frames({"H": [JAN, FEB], "I": [FEB], "S": [MAR], "L": [JAN], "A": MONTHS}, patients=people,
               procedures=[("H", "2024-01-10", "Q5001", "HCPCS"), ("L", "2023-01-10", "Q5001", "HCPCS")],
               encounters=[dict(patient_id="I", kind="admission", start_date=D("2024-02-06"), end_date=D("2024-02-10")),
                           dict(patient_id="S", kind="snf_stay", start_date=D("2024-02-20"), end_date=None)])
    hospice = flags(f, "hospice_at_end_of_life")
    at_home = flags(f, "deaths_at_home")
    # Only decedents, in the month they died; L's hospice was more than 180 days before death.
    assert hospice == {("H", "2024-02"): (1, 1), ("I", "2024-02"): (0, 1), ("S", "2024-03"): (0, 1), ("L", "2024-01"): (0, 1)}
    assert at_home == {("H", "2024-02"): (1, 1), ("I", "2024-02"): (0, 1), ("S", "2024-03"): (0, 1), ("L", "2024-01"): (1, 1)}


def test_discharge_to_hospice_counts_as_hospice_care():
    f = frames({"P": [FEB]}, patients=[("P", "1930-01-01", "2024-02-25")], encounters=[
        dict(patient_id="P", kind="admission", start_date=D("2024-02-01"), end_date=D("2024-02-08"))])
    f = replace(f, encounters=f.encounters.assign(discharge_disposition=["hospice"]))
    assert flags(f, "hospice_at_end_of_life", [FEB]) == {("P", "2024-02"): (1, 1)}


def test_care_plan_and_advance_care_planning_look_backs():
    f = frames({"A": [JAN], "B": [JAN]}, procedures=[
        ("A", "2023-02-01", "G0506", "HCPCS"), ("A", "2022-03-01", "99497", "CPT"),  # both in their windows
        ("B", "2022-12-20", "G0506", "HCPCS"), ("B", "2021-12-01", "713603004", "http://snomed.info/sct"),  # both too old
    ])
    assert flags(f, "care_plan", [JAN]) == {("A", "2024-01"): (1, 1), ("B", "2024-01"): (0, 1)}
    assert flags(f, "advance_care_planning", [JAN]) == {("A", "2024-01"): (1, 1), ("B", "2024-01"): (0, 1)}


def test_no_procedure_data_means_not_done_not_an_error():
    f = make_frames({"A": [JAN]}, patients=[("A", "1960-01-01", None)])
    out = patient_month_flags(f, [date(2024, 1, 1)])
    assert out.loc[out["metric"] == "colorectal_screening", "numerator"].tolist() == [0.0]

"""Every measure on a small hand-built store; expected numerators and denominators worked out by hand.

Months in scope are January-March 2024 unless a test says otherwise.
"""

from datetime import date

import pandas as pd
import pytest

from core.derive.measures import StoreFrames, load_measures, patient_month_flags

JAN, FEB, MAR = date(2024, 1, 1), date(2024, 2, 1), date(2024, 3, 1)
MONTHS = [JAN, FEB, MAR]
D = date.fromisoformat


def make_frames(attributed: dict[str, list[date]], patients=(), encounters=(), measurements=(), conditions=(),
                medications=()) -> StoreFrames:
    """attributed: patient -> months. patients: (id, birth, death). encounters: dicts. measurements:
    (patient, date, code, value). conditions: (patient, code, onset, resolved). medications:
    (patient, code, start, end)."""
    att = pd.DataFrame([(p, m, "PR1", "T1") for p, ms in attributed.items() for m in ms],
                       columns=["patient_id", "month", "practice_id", "team_id"])
    known = {p[0]: p for p in patients}
    pts = pd.DataFrame([known.get(p, (p, "1970-06-15", None)) for p in sorted(set(attributed) | set(known))],
                       columns=["patient_id", "birth_date", "death_date"])
    enc_cols = ["patient_id", "kind", "start_date", "end_date", "requested_date", "responded_date", "is_urgent",
                "resolved_without_visit", "primary_dx"]
    enc = pd.DataFrame([{c: e.get(c, False if c == "is_urgent" else None) for c in enc_cols} for e in encounters],
                       columns=enc_cols)
    mea = pd.DataFrame(list(measurements), columns=["patient_id", "measured_date", "code", "value"])
    con = pd.DataFrame(list(conditions), columns=["patient_id", "code", "onset_date", "resolved_date"])
    med = pd.DataFrame([(p, c, "", s, e) for p, c, s, e in medications],
                       columns=["patient_id", "code", "description", "start_date", "end_date"])
    return StoreFrames(att, pts, enc, mea, con, med)


def flags(frames: StoreFrames, metric: str, months=MONTHS) -> dict:
    """{(patient_id, 'YYYY-MM'): (numerator, denominator)} of one metric."""
    out = patient_month_flags(frames, months)
    out = out[out["metric"] == metric]
    return {(r.patient_id, r.month.isoformat()[:7]): (r.numerator, round(r.denominator, 6)) for r in out.itertuples()}


def totals(frames: StoreFrames, metric: str, months=MONTHS) -> tuple[float, float]:
    out = patient_month_flags(frames, months)
    out = out[out["metric"] == metric]
    return out["numerator"].sum(), out["denominator"].sum()


Y = round(1 / 12, 6)


def test_catalogue_loads_with_every_outcome_measure():
    ids = {m.id for m in load_measures().measures}
    assert {"mortality", "promis_physical_mean", "promis_mental_mean", "promis_physical_improved", "promis_mental_improved",
            "hba1c_control", "bp_control", "depression_remission_6m", "depression_remission_12m", "urgent_access_days",
            "econsult_response_days", "econsult_resolved", "work_days_missed_mean", "pain_mean", "gad7_mean",
            "ed_visits", "admissions", "avoidable_admissions", "readmission_30d", "function_maintained",
            "polypharmacy"} <= ids
    for m in load_measures().measures:
        assert m.definition and m.numerator and m.denominator and m.unit and m.tier in (1, 2, 3)


def test_mortality_counts_death_in_its_month_and_member_years():
    f = make_frames({"A": MONTHS, "B": [JAN, FEB]}, patients=[("A", "1940-01-01", "2024-02-15")])
    assert flags(f, "mortality") == {("A", "2024-01"): (0, Y), ("A", "2024-02"): (1, Y), ("A", "2024-03"): (0, Y),
                                     ("B", "2024-01"): (0, Y), ("B", "2024-02"): (0, Y)}
    num, den = totals(f, "mortality")
    assert num / den * 1000 == pytest.approx(2400.0)  # 1 death / (5/12 member-years)


def test_zero_member_months_give_no_rows():
    f = make_frames({"A": [date(2023, 6, 1)]}, patients=[("A", "1940-01-01", "2024-02-15")],
                    encounters=[dict(patient_id="A", kind="ed_visit", start_date=D("2024-01-03"))])
    out = patient_month_flags(f, MONTHS)
    assert out.empty and list(out.columns) == ["patient_id", "month", "metric", "numerator", "denominator", "sum_sq"]


def test_ed_admission_and_avoidable_admission_rates():
    enc = [
        dict(patient_id="A", kind="ed_visit", start_date=D("2024-02-01")),
        dict(patient_id="A", kind="ed_visit", start_date=D("2024-02-20")),
        dict(patient_id="A", kind="ed_visit", start_date=D("2024-04-02")),  # not attributed in April
        dict(patient_id="B", kind="office_visit", start_date=D("2024-01-09")),
        dict(patient_id="A", kind="admission", start_date=D("2024-01-05"), end_date=D("2024-01-08"), primary_dx="E11.65"),
        dict(patient_id="A", kind="admission", start_date=D("2024-03-05"), end_date=D("2024-03-08"), primary_dx="S72.001A"),
        dict(patient_id="B", kind="admission", start_date=D("2024-01-15"), end_date=D("2024-01-18"), primary_dx="J18.9"),
        dict(patient_id="B", kind="admission", start_date=D("2024-02-15"), end_date=D("2024-02-18"), primary_dx="E11.9"),
        dict(patient_id="B", kind="admission", start_date=D("2024-03-15"), end_date=D("2024-03-18"), primary_dx="I1310"),
    ]
    f = make_frames({"A": MONTHS, "B": MONTHS}, encounters=enc)
    ed = flags(f, "ed_visits")
    assert ed[("A", "2024-02")] == (2, Y) and ed[("A", "2024-01")] == (0, Y) and len(ed) == 6
    assert totals(f, "ed_visits") == (2, pytest.approx(0.5))  # 2 visits / 0.5 member-years = 4,000 per 1,000
    assert totals(f, "admissions")[0] == 5
    avoid = flags(f, "avoidable_admissions")
    # E11.65 (diabetes complication), J18.9 (pneumonia) and I13.10 (hypertension) count; S72 and E11.9 do not.
    assert {k for k, v in avoid.items() if v[0]} == {("A", "2024-01"), ("B", "2024-01"), ("B", "2024-03")}


def test_hba1c_control_last_value_in_12_months_missing_counts_as_not_controlled():
    f = make_frames(
        {"A": MONTHS, "B": MONTHS, "C": MONTHS, "D": MONTHS, "E": MONTHS, "F": [JAN]},
        patients=[("C", "1940-01-01", None)],  # 84: above the 18-75 age range
        conditions=[(p, "E11.9", "2020-01-01", None) for p in "ABCF"] + [("E", "E10.9", "2020-01-01", "2023-12-31")],
        measurements=[("A", "2023-06-10", "4548-4", 7.5), ("A", "2024-01-20", "4548-4", 8.2),
                      ("A", "2024-03-02", "4548-4", 7.0), ("C", "2024-01-02", "4548-4", 6.0),
                      ("F", "2023-01-15", "4548-4", 6.0)],  # F: 12 months before January, outside the window
    )
    assert flags(f, "hba1c_control") == {
        ("A", "2024-01"): (0, 1), ("A", "2024-02"): (0, 1), ("A", "2024-03"): (1, 1),
        ("B", "2024-01"): (0, 1), ("B", "2024-02"): (0, 1), ("B", "2024-03"): (0, 1),
        ("F", "2024-01"): (0, 1),
    }  # C too old, D no diabetes, E diabetes resolved before January


def test_hba1c_all_excluded_denominator_is_empty():
    f = make_frames({"A": MONTHS}, measurements=[("A", "2024-01-20", "4548-4", 6.0)])
    assert flags(f, "hba1c_control") == {}


def test_bp_control_uses_lowest_readings_of_the_latest_day():
    f = make_frames(
        {"A": [JAN], "B": [JAN], "C": [JAN]},
        conditions=[(p, "I10", "2020-01-01", None) for p in "ABC"],
        measurements=[("A", "2023-12-01", "8480-6", 120), ("A", "2023-12-01", "8462-4", 70),
                      ("A", "2024-01-05", "8480-6", 150), ("A", "2024-01-05", "8462-4", 85),
                      ("A", "2024-01-05", "8480-6", 135), ("A", "2024-01-05", "8462-4", 88),
                      ("B", "2024-01-05", "8480-6", 130), ("B", "2024-01-05", "8462-4", 95),
                      ("C", "2024-01-05", "8480-6", 120)],
    )
    assert flags(f, "bp_control", [JAN]) == {("A", "2024-01"): (1, 1), ("B", "2024-01"): (0, 1), ("C", "2024-01"): (0, 1)}


def test_promis_mean_uses_latest_score_in_12_months():
    f = make_frames({"A": [JAN], "B": [JAN]},
                    measurements=[("A", "2023-03-01", "71971-6", 40), ("A", "2024-01-10", "71971-6", 45),
                                  ("B", "2022-12-20", "71971-6", 60)])
    out = patient_month_flags(f, [JAN])
    row = out[out["metric"] == "promis_physical_mean"]
    assert row[["patient_id", "numerator", "denominator", "sum_sq"]].values.tolist() == [["A", 45.0, 1.0, 2025.0]]
    assert out[out["metric"] == "promis_mental_mean"].empty


@pytest.mark.parametrize("metric,expected", [
    ("promis_physical_improved", {"A": 1, "B": 0, "D": 0}),  # changes +6, +2, -6
    ("function_maintained", {"A": 1, "B": 1, "D": 0}),
])
def test_promis_change_over_12_months(metric, expected):
    code = "71971-6"
    f = make_frames({p: [JAN] for p in "ABCD"}, measurements=[
        ("A", "2023-01-05", code, 40), ("A", "2024-01-05", code, 46),
        ("B", "2022-09-05", code, 50), ("B", "2023-11-05", code, 52),
        ("C", "2023-12-05", code, 50),  # no baseline
        ("D", "2023-01-05", code, 50), ("D", "2024-01-05", code, 44),
    ])
    assert flags(f, metric, [JAN]) == {(p, "2024-01"): (v, 1) for p, v in expected.items()}


def test_depression_remission_at_6_months():
    phq = "44261-6"
    f = make_frames({p: [JAN] for p in "ABCD"},
                    conditions=[(p, "F32.1", "2023-01-01", None) for p in "ACD"],
                    measurements=[("A", "2023-07-10", phq, 15), ("A", "2023-12-20", phq, 4),
                                  ("B", "2023-07-05", phq, 12),  # no depression diagnosis: no index
                                  ("C", "2023-07-05", phq, 14),  # index, no follow-up: not in remission
                                  ("D", "2023-05-05", phq, 12), ("D", "2023-07-05", phq, 13)])  # index is May
    assert flags(f, "depression_remission_6m", [JAN]) == {("A", "2024-01"): (1, 1), ("C", "2024-01"): (0, 1)}
    assert flags(f, "depression_remission_12m", [JAN]) == {}


def test_urgent_access_days():
    f = make_frames({"A": [JAN]}, encounters=[
        dict(patient_id="A", kind="office_visit", start_date=D("2024-01-05"), requested_date=D("2024-01-02"), is_urgent=True),
        dict(patient_id="A", kind="virtual_visit", start_date=D("2024-01-10"), requested_date=D("2024-01-10"), is_urgent=True),
        dict(patient_id="A", kind="office_visit", start_date=D("2024-01-25"), requested_date=D("2024-01-03")),  # not urgent
        dict(patient_id="A", kind="office_visit", start_date=D("2024-01-26"), is_urgent=True),  # no request date
    ])
    out = patient_month_flags(f, [JAN])
    row = out[out["metric"] == "urgent_access_days"]
    assert row[["numerator", "denominator", "sum_sq"]].values.tolist() == [[3.0, 2.0, 9.0]]  # mean 1.5 days


def test_econsult_response_and_resolution():
    f = make_frames({"A": [JAN], "B": [JAN]}, encounters=[
        dict(patient_id="A", kind="e_consult", start_date=D("2024-01-03"), requested_date=D("2024-01-03"),
             responded_date=D("2024-01-08"), resolved_without_visit=True),
        dict(patient_id="A", kind="e_consult", start_date=D("2024-01-20"), responded_date=D("2024-01-21"),
             resolved_without_visit=False),
        dict(patient_id="B", kind="e_consult", start_date=D("2024-01-22")),  # unanswered, no outcome
    ])
    out = patient_month_flags(f, [JAN]).set_index("metric")
    assert out.loc["econsult_response_days", ["numerator", "denominator", "sum_sq"]].tolist() == [6.0, 2.0, 26.0]
    assert out.loc["econsult_resolved", ["numerator", "denominator"]].tolist() == [1.0, 2.0]


def test_readmission_within_30_days_of_live_discharge():
    f = make_frames({"A": MONTHS, "B": MONTHS, "C": MONTHS}, patients=[("B", "1950-01-01", "2024-01-12")], encounters=[
        dict(patient_id="A", kind="admission", start_date=D("2024-01-02"), end_date=D("2024-01-05")),
        dict(patient_id="A", kind="admission", start_date=D("2024-01-20"), end_date=D("2024-01-25")),
        dict(patient_id="B", kind="admission", start_date=D("2024-01-10"), end_date=D("2024-01-12")),  # died
        dict(patient_id="C", kind="admission", start_date=D("2024-01-20"), end_date=D("2024-01-31")),
        dict(patient_id="C", kind="admission", start_date=D("2024-03-05"), end_date=D("2024-03-06")),  # 34 days later
    ])
    assert flags(f, "readmission_30d") == {("A", "2024-01"): (1, 2), ("C", "2024-01"): (0, 1), ("C", "2024-03"): (0, 1)}


def test_polypharmacy_counts_distinct_drugs_active_on_last_day():
    meds = [("A", f"RX{i}", "2023-01-01", None) for i in range(9)] + [("A", "RX9", "2023-06-01", "2024-01-31")]
    meds += [("B", f"RX{i}", "2023-01-01", None) for i in range(9)] + [("B", "RX0", "2023-02-01", "2024-06-30")]
    f = make_frames({"A": [JAN, FEB], "B": [JAN]}, medications=meds)
    assert flags(f, "polypharmacy", [JAN, FEB]) == {("A", "2024-01"): (1, 1), ("A", "2024-02"): (0, 1), ("B", "2024-01"): (0, 1)}


def test_polypharmacy_needs_medication_data():
    assert flags(make_frames({"A": [JAN]}), "polypharmacy", [JAN]) == {}


@pytest.mark.parametrize("metric,code,values,expected", [
    ("pain_mean", "72514-3", [("2023-02-01", 9), ("2023-05-01", 4)], (4.0, 1.0)),
    ("gad7_mean", "70274-6", [("2024-01-30", 12)], (12.0, 1.0)),
    ("work_days_missed_mean", "local:work-days-missed", [("2023-10-20", 5)], None),  # 3-month look-back
    ("work_days_missed_mean", "local:work-days-missed", [("2023-11-20", 5)], (5.0, 1.0)),
])
def test_latest_value_means(metric, code, values, expected):
    f = make_frames({"A": [JAN]}, measurements=[("A", d, code, v) for d, v in values])
    got = flags(f, metric, [JAN])
    assert got == ({} if expected is None else {("A", "2024-01"): expected})


def test_empty_subgroup_population_gives_empty_frame():
    f = make_frames({})
    assert patient_month_flags(f, MONTHS).empty


def test_one_row_per_patient_month_metric():
    f = make_frames({"A": MONTHS, "B": MONTHS}, encounters=[dict(patient_id="A", kind="ed_visit", start_date=D("2024-01-03"))])
    out = patient_month_flags(f, MONTHS)
    assert not out.duplicated(["patient_id", "month", "metric"]).any()


def test_catalogue_frame_has_one_row_per_measure():
    from core.derive.measures import catalogue_frame

    frame = catalogue_frame()
    assert frame["id"].is_unique and len(frame) == len(load_measures().measures)
    assert frame.loc[frame["id"] == "hba1c_control", "subgroups"].item() == "chronic, complex, frail"


@pytest.mark.parametrize("field,bad,message", [("tier", 4, "tier"), ("kind", "median", "kind"), ("rule", "nope", "rule"),
                                               ("window", "avg", "window"), ("direction", "up", "direction")])
def test_catalogue_validation(tmp_path, field, bad, message):
    from core.config import parse_toml
    from core.derive.measures import MEASURES_PATH

    raw = MEASURES_PATH.read_text(encoding="utf-8")
    first = parse_toml(raw)["measure"][0]
    old = f'{field} = {first[field]!r}'.replace("'", '"') if isinstance(first[field], str) else f"{field} = {first[field]}"
    assert old in raw
    path = tmp_path / "m.toml"
    path.write_text(raw.replace(old, f'{field} = "{bad}"' if isinstance(bad, str) else f"{field} = {bad}", 1), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_measures(path)


def test_flag_sets_from_one_preparation_equal_their_own_calls():
    """The derive of a new month takes the forward-looking measures of the month before from the
    same preparation of the rows (``patient_month_flag_sets``): each set equals its own call."""
    import dataclasses

    from core.derive.measures import patient_month_flag_sets

    f = make_frames({"A": MONTHS, "B": [JAN, FEB]}, patients=[("A", "1940-01-01", "2024-03-20")],
                    encounters=[dict(patient_id="A", kind="admission", start_date=D("2024-01-03"), end_date=D("2024-01-08")),
                                dict(patient_id="A", kind="admission", start_date=D("2024-02-01"), end_date=D("2024-02-04")),
                                dict(patient_id="B", kind="ed_visit", start_date=D("2024-02-10"))],
                    measurements=[("B", "2024-01-15", "4548-4", 6.9), ("B", "2024-02-20", "4548-4", 8.1)],
                    conditions=[("B", "E11.9", "2023-01-01", None)])  # fmt: skip
    catalogue = load_measures()
    forward = dataclasses.replace(catalogue, measures=tuple(m for m in catalogue.measures if m.id in ("readmission_30d", "mortality")))
    sets = [([FEB, MAR], catalogue), ([JAN], forward)]
    together = patient_month_flag_sets(f, sets, month_as_index=True)
    assert len(together) == 2 and all(len(t) for t in together)
    for (months, cat), got in zip(sets, together, strict=True):
        pd.testing.assert_frame_equal(got, patient_month_flags(f, months, cat, month_as_index=True), check_exact=True)


def _one_patient(frames: StoreFrames, patient: str) -> StoreFrames:
    return StoreFrames(*(f[f["patient_id"] == patient].reset_index(drop=True) for f in
                         (frames.attribution, frames.patients, frames.encounters, frames.measurements, frames.conditions,
                          frames.medications)))  # fmt: skip


def test_a_patients_flags_do_not_depend_on_the_other_patients_ids_or_their_dtype():
    """The rules work on patient codes (positions in the sorted ids): ids that sort around each
    other (accents, case, shared prefixes), a patient with rows but no attributed month, and ids
    held as Python objects instead of text give every patient the rows it has alone, with the
    ids as given."""
    ids = ["Émile", "émile", "Zoë", "zoe", "P1", "P10", "P1 ", "b"]
    attributed = {p: MONTHS for p in ids}
    frames = make_frames(
        attributed,
        patients=[(p, f"19{40 + i}-0{1 + i % 9}-15", "2024-02-20" if p == "zoe" else None) for i, p in enumerate(ids)],
        encounters=[dict(patient_id=p, kind=k, start_date=D(f"2024-0{1 + i % 3}-0{2 + i % 5}"), end_date=D(f"2024-0{1 + i % 3}-1{i % 5}"))
                    for i, p in enumerate(ids) for k in ("ed_visit", "admission") if i % 3 != 1],
        measurements=[(p, f"2023-1{i % 3}-1{i % 9}", code, v + i) for i, p in enumerate(ids)
                      for code, v in (("4548-4", 6.0), ("44261-6", 8.0), ("8480-6", 120), ("8462-4", 75))]
        + [("unattributed", "2024-01-10", "4548-4", 9.9)],
        conditions=[(p, code, "2020-01-01", None) for i, p in enumerate(ids) for code in ("E11.9", "F32.1", "I10")[: 1 + i % 3]],
        medications=[(p, f"RX{j}", "2023-01-01", None) for i, p in enumerate(ids) for j in range(3 + 3 * (i % 3))],
    )
    together = patient_month_flags(frames, MONTHS)
    assert together["patient_id"].dtype == "str" and set(together["patient_id"]) == set(ids)
    for patient in ids:
        alone = patient_month_flags(_one_patient(frames, patient), MONTHS, medication_data=True)
        mine = together[together["patient_id"] == patient].reset_index(drop=True)
        pd.testing.assert_frame_equal(mine.sort_values(["month", "metric"], ignore_index=True),
                                      alone.sort_values(["month", "metric"], ignore_index=True), check_exact=True, obj=patient)
    as_objects = StoreFrames(*(f.astype({"patient_id": object}) for f in (frames.attribution, frames.patients, frames.encounters,
                                                                          frames.measurements, frames.conditions, frames.medications)))
    pd.testing.assert_frame_equal(patient_month_flags(as_objects, MONTHS), together, check_exact=True)


def test_coded_flags_are_the_text_flags_and_add_up_to_the_same_cells():
    """The cells take the flags with patient_id and metric as categoricals (``coded``): the same
    rows and values as the text flags, and the same cells, to the bit."""
    from core.derive.cells import aggregate_cells, patient_month_dimensions
    from core.derive.measures import patient_month_flag_sets

    ids = ["Émile", "émile", "Zoë", "zoe", "P1", "P10", "b"]
    frames = make_frames(
        {p: MONTHS[i % 2:] for i, p in enumerate(ids)},
        patients=[(p, f"19{40 + i}-0{1 + i % 9}-15", "2024-02-20" if p == "zoe" else None) for i, p in enumerate(ids)],
        encounters=[dict(patient_id=p, kind=k, start_date=D(f"2024-0{1 + i % 3}-0{2 + i % 5}"), end_date=D(f"2024-0{1 + i % 3}-1{i % 5}"))
                    for i, p in enumerate(ids) for k in ("ed_visit", "admission") if i % 3 != 1],
        measurements=[(p, f"2023-1{i % 3}-1{i % 9}", code, v + i) for i, p in enumerate(ids) for code, v in (("4548-4", 6.0), ("8480-6", 120))],
        conditions=[(p, code, "2020-01-01", None) for i, p in enumerate(ids) for code in ("E11.9", "I10")[: 1 + i % 2]],
    )  # fmt: skip
    text = patient_month_flags(frames, MONTHS, month_as_index=True)
    coded = patient_month_flags(frames, MONTHS, month_as_index=True, coded=True)
    assert isinstance(coded["patient_id"].dtype, pd.CategoricalDtype) and isinstance(coded["metric"].dtype, pd.CategoricalDtype)
    assert text["metric"].nunique() >= 5
    pd.testing.assert_frame_equal(coded.astype({"patient_id": "str", "metric": "str"}), text, check_exact=True)
    catalogue = load_measures()
    for got, want in zip(patient_month_flag_sets(frames, [(MONTHS, catalogue)], month_as_index=True, coded=True), [coded], strict=True):
        pd.testing.assert_frame_equal(got, want, check_exact=True)

    dims = patient_month_dimensions(frames.attribution, pd.DataFrame(columns=["patient_id", "month", "subgroup", "risk_score"]),
                                    frames.patients.assign(race=None, ethnicity=None, language=None, dual_status=False,
                                                           deprivation_decile=None, sex="female"), MONTHS[1:])  # fmt: skip
    # January's rows are dropped (not in the cells' months), with them every row of a metric first
    # seen there: the metrics are numbered by the rows kept
    january = text[text["month"] == text["month"].min()].head(3).assign(metric="january_only")
    text = pd.concat([january, text], ignore_index=True)
    coded = text.astype({"patient_id": pd.CategoricalDtype(pd.Index(sorted(ids), dtype="str")),
                         "metric": pd.CategoricalDtype(pd.Index(text["metric"].unique(), dtype="str"))})  # fmt: skip
    cells = aggregate_cells(dims, [coded])
    assert set(cells["metric"]) == set(text.loc[text["month"] > text["month"].min(), "metric"])
    pd.testing.assert_frame_equal(cells, aggregate_cells(dims, [text]), check_exact=True)

"""Additive cells: aggregation by unit and equity stratum, and reconciliation with patient-level totals."""

from datetime import date

import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from core.derive.cells import age_band, aggregate_cells, build_cells, deprivation_band, patient_month_dimensions, race_ethnicity
from core.store import models
from core.store.months import index_of

JAN, FEB = date(2024, 1, 1), date(2024, 2, 1)
M_JAN, M_FEB = index_of(JAN), index_of(FEB)


@pytest.mark.parametrize("age,band", [(17, "0-17"), (18, "18-44"), (44, "18-44"), (45, "45-64"), (64, "45-64"),
                                      (65, "65-74"), (74, "65-74"), (75, "75+"), (101, "75+")])
def test_age_band(age, band):
    assert age_band(pd.Series([age]))[0] == band


@pytest.mark.parametrize("decile,band", [(1, "1-2"), (2, "1-2"), (3, "3-4"), (10, "9-10"), (None, "unknown"), (11, "unknown")])
def test_deprivation_band(decile, band):
    assert deprivation_band(pd.Series([decile], dtype="object"))[0] == band


def test_race_ethnicity():
    got = race_ethnicity(pd.Series(["white", "black", "", "asian"]),
                         pd.Series(["hispanic_or_latino", "not hispanic or latino", "unknown", None]))
    assert got.tolist() == ["hispanic_or_latino", "black", "unknown", "asian"]


def _dims():
    attribution = pd.DataFrame({
        "patient_id": ["A", "A", "B", "C"], "month": [JAN, FEB, JAN, JAN],
        "practice_id": ["P1", "P1", "P1", "P2"], "team_id": ["T1", "T1", "T1", "T2"]})
    assignments = pd.DataFrame({"patient_id": ["A", "A", "B"], "month": [JAN, FEB, JAN],
                                "subgroup": ["chronic", "complex", "chronic"], "risk_score": [1.0, 2.0, None]})
    patients = pd.DataFrame({"patient_id": ["A", "B", "C"], "birth_date": [date(1950, 1, 31), date(1990, 5, 1), date(2010, 1, 1)],
                             "sex": ["female", "male", "female"], "race": ["white", "black", "asian"],
                             "ethnicity": ["", "", ""], "language": ["en", "es", ""], "dual_status": [True, False, False],
                             "deprivation_decile": [3, None, 10]})
    return patient_month_dimensions(attribution, assignments, patients)


def test_dimensions_per_patient_month():
    dims = _dims().set_index(["patient_id", "m"])
    assert dims.loc[("A", M_FEB), "subgroup"] == "complex"
    assert dims.loc[("C", M_JAN), "subgroup"] == "unassigned"
    assert dims.loc[("C", M_JAN), "language"] == "unknown"
    assert dims.loc[("A", M_JAN), "dual_status"] == "dual"


def test_age_at_month_end():
    dims = _dims().set_index(["patient_id", "m"])
    # Born 1950-01-31: 74 on 2024-01-31 -> 65-74; born 2010: 14 -> 0-17.
    assert dims.loc[("A", M_JAN), "age_band"] == "65-74" and dims.loc[("C", M_JAN), "age_band"] == "0-17"


def test_aggregate_cells_sums_by_unit_month_and_stratum():
    metrics = pd.DataFrame({
        "patient_id": ["A", "B", "A", "C", "A", "Z"], "month": [M_JAN, M_JAN, M_FEB, M_JAN, M_JAN, M_JAN],
        "metric": ["ed_visits", "ed_visits", "ed_visits", "ed_visits", "ed_visits", "ed_visits"],
        "numerator": [2.0, 1.0, 0.0, 3.0, 1.0, 9.0], "denominator": [1 / 12] * 6, "sum_sq": [0.0] * 6})
    cells = aggregate_cells(_dims(), metrics)
    assert not cells.duplicated(["practice_id", "team_id", "subgroup", "month", "stratum", "stratum_value", "metric"]).any()
    allc = cells[cells["stratum"] == "all"].set_index(["team_id", "subgroup", "month"])
    # A's two January rows add up (2 + 1); Z is not attributed and is dropped.
    assert allc.loc[("T1", "chronic", JAN), ["numerator", "patients"]].tolist() == [4.0, 2]
    assert allc.loc[("T1", "complex", FEB), "numerator"] == 0.0
    assert allc.loc[("T2", "unassigned", JAN), "numerator"] == 3.0
    sex = cells[(cells["stratum"] == "sex") & (cells["month"] == JAN)].groupby("stratum_value")["numerator"].sum()
    assert sex.to_dict() == {"female": 6.0, "male": 1.0}
    for stratum, part in cells.groupby("stratum"):  # every stratum adds up to the same total
        assert part["numerator"].sum() == 7.0 and part["patients"].sum() == 4, stratum


def test_aggregate_cells_empty():
    assert aggregate_cells(_dims(), pd.DataFrame(columns=["patient_id", "month", "metric", "numerator", "denominator", "sum_sq"])).empty


def _store(engine):
    """A two-practice store: 4 patients, January-February 2024, ED visits, an admission and a death."""
    with Session(engine) as s:
        s.add_all([models.Practice(practice_id="P1", name="One"), models.Practice(practice_id="P2", name="Two")])
        s.add_all([models.Team(team_id="T1", practice_id="P1", name="t1"), models.Team(team_id="T2", practice_id="P2", name="t2")])
        s.flush()
        for pid, death in (("A", None), ("B", date(2024, 2, 10)), ("C", None), ("D", None)):
            s.add(models.Patient(patient_id=pid, birth_date=date(1950, 3, 3), sex="female", death_date=death))
        s.flush()
        for pid, team, months in (("A", "T1", [JAN, FEB]), ("B", "T1", [JAN, FEB]), ("C", "T2", [JAN, FEB]), ("D", "T2", [FEB])):
            for m in months:
                s.add(models.Attribution(patient_id=pid, month=m, practice_id="P1" if team == "T1" else "P2", team_id=team))
                s.add(models.SubgroupAssignment(patient_id=pid, month=m, subgroup="chronic", risk_score=1.5))
        for i, (pid, kind, day) in enumerate((("A", "ed_visit", date(2024, 1, 5)), ("A", "ed_visit", date(2024, 2, 5)),
                                              ("C", "ed_visit", date(2024, 2, 7)), ("B", "admission", date(2024, 2, 1)),
                                              ("D", "ed_visit", date(2023, 12, 1)))):
            s.add(models.Encounter(encounter_id=f"E{i}", patient_id=pid, kind=kind, start_date=day, end_date=day,
                                   is_internal=False))
        s.commit()


def test_build_cells_reconciles_with_patient_level_totals(engine):
    _store(engine)
    summary = build_cells(engine)
    assert summary["rows"] > 0 and summary["months"] == 2
    C = models.Cell
    with engine.connect() as conn:
        got = dict(conn.execute(select(C.metric, func.sum(C.numerator)).where(C.stratum == "all").group_by(C.metric)).all())
        keys = conn.execute(select(func.count()).select_from(C)).scalar_one()
        distinct = conn.execute(select(func.count()).select_from(
            select(C.practice_id, C.team_id, C.subgroup, C.month, C.stratum, C.stratum_value, C.metric).distinct().subquery())).scalar_one()
    assert got["member_months"] == 7 and got["mortality"] == 1 and got["ed_visits"] == 3 and got["admissions"] == 1
    assert got["risk_score_sum"] == pytest.approx(7 * 1.5)
    assert keys == distinct


def test_build_cells_replaces_previous_cells(engine):
    _store(engine)
    first = build_cells(engine)["rows"]
    assert build_cells(engine)["rows"] == first
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(models.Cell)).scalar_one() == first


def test_bands_come_from_the_strata_file(tmp_path, monkeypatch):
    from core.derive import cells

    text = cells.STRATA_PATH.read_text().replace("age_upper = [17, 44, 64, 74]", "age_upper = [64]")
    path = tmp_path / "strata.toml"
    path.write_text(text.replace("deprivation_deciles_per_band = 2", "deprivation_deciles_per_band = 5"))
    load = cells.load_strata.__wrapped__  # the loader without its cache
    strata = load(path)
    assert strata.default == "race_ethnicity" and list(strata.labels)[0] == "age_band"
    monkeypatch.setattr(cells, "load_strata", lambda: strata)
    assert age_band(pd.Series([64, 65])).tolist() == ["0-64", "65+"]
    assert deprivation_band(pd.Series([5, 6], dtype="object")).tolist() == ["1-5", "6-10"]
    path.write_text(text.replace("age_upper = [64]", "age_upper = [64, 30]"))
    with pytest.raises(ValueError, match="age_upper"):
        load(path)

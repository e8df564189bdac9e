"""Claims run-out: completion factors from the data's own lag, completeness marks, completed cost."""

from datetime import date

import pandas as pd
import pytest
from sqlmodel import Session

from core.metrics import runout
from core.store.models import Encounter, Patient

JAN, FEB, MAR, APR = (date(2025, m, 1) for m in (1, 2, 3, 4))
SETTINGS = runout.RunoutSettings(months_without_paid_dates=2, complete_at=0.9, max_lag_months=2, min_claims_with_paid_date=1)

# By hand: the extract is March (the latest paid month). January has run out (2 months >= the
# 2-month maximum lag): $50 paid in January, $30 in February, $20 in March, so
# F(0) = 50 %, F(1) = 80 %, F(2) = 100 %. February (age 1) is 80 % paid, March (age 0) 50 %.
LAGS = pd.DataFrame([
    (JAN, JAN, 5, 50.0), (JAN, FEB, 3, 30.0), (JAN, MAR, 2, 20.0),
    (FEB, FEB, 6, 60.0), (FEB, MAR, 4, 40.0),
    (MAR, MAR, 1, 10.0),
], columns=["service_month", "paid_month", "claims", "paid_usd"])  # fmt: skip


def test_completion_factors_from_run_out_months_only():
    factors = runout.completion_factors(LAGS, SETTINGS)
    assert factors["lag_months"].tolist() == [0, 1, 2]
    assert factors["completion"].tolist() == pytest.approx([0.5, 0.8, 1.0])


def test_month_completeness_from_paid_dates():
    got = runout.month_completeness(LAGS, [JAN, FEB, MAR, APR], SETTINGS).set_index("month")
    assert got["age_months"].tolist() == [2, 1, 0, -1]
    assert got["completion"].tolist() == pytest.approx([1.0, 0.8, 0.5, 0.0])
    assert got["complete"].tolist() == [True, False, False, False]
    assert set(got["basis"]) == {runout.PAID_DATES}
    note = runout.incomplete_note(got.reset_index(), SETTINGS)
    assert "2025-02 (80%)" in note and "2025-03 (50%)" in note and "2025-01" not in note


def test_completed_cost_divides_by_the_completion_factor():
    completeness = runout.month_completeness(LAGS, [JAN, FEB, MAR], SETTINGS)
    paid = pd.Series([100.0, 100.0, 10.0])
    completed = runout.completed_usd(paid, pd.Series([JAN, FEB, MAR]), completeness)
    assert completed.tolist() == pytest.approx([100.0, 125.0, 20.0])


def test_without_paid_dates_the_run_out_setting_marks_the_last_months():
    no_dates = LAGS.assign(paid_month=None)
    got = runout.month_completeness(no_dates, [JAN, FEB, MAR], SETTINGS)
    assert got["complete"].tolist() == [True, False, False]  # latest service month March, 2-month run-out
    assert got["completion"].isna().all() and set(got["basis"]) == {runout.RUNOUT_SETTING}
    assert "run-out of 2 months): 2025-02, 2025-03" in runout.incomplete_note(got, SETTINGS)
    # too few claims with a paid date for factors: the setting is used too
    few = runout.RunoutSettings(months_without_paid_dates=2, complete_at=0.9, max_lag_months=2, min_claims_with_paid_date=1000)
    assert set(runout.month_completeness(LAGS, [JAN], few)["basis"]) == {runout.RUNOUT_SETTING}
    # completed cost needs factors: unchanged on this basis
    assert runout.completed_usd(pd.Series([7.0]), pd.Series([MAR]), got).tolist() == [7.0]


def test_no_claims_is_not_incomplete():
    got = runout.month_completeness(LAGS.iloc[0:0], [JAN, FEB], SETTINGS)
    assert got["complete"].all() and set(got["basis"]) == {runout.NO_CLAIMS}
    assert runout.incomplete_note(got, SETTINGS) == ""


def test_claims_lags_from_the_store(store_engine):
    with Session(store_engine) as s:
        s.add(Patient(patient_id="P1", birth_date=date(1950, 1, 1), sex="female"))
        s.flush()
        s.add_all([
            Encounter(encounter_id="C1", patient_id="P1", kind="ed_visit", start_date=date(2025, 1, 20), is_internal=False,
                      paid_usd=50.0, paid_date=date(2025, 1, 30)),
            Encounter(encounter_id="C2", patient_id="P1", kind="ed_visit", start_date=date(2025, 1, 3), is_internal=False,
                      paid_usd=30.0, paid_date=date(2025, 2, 14)),
            Encounter(encounter_id="C3", patient_id="P1", kind="ed_visit", start_date=date(2025, 2, 3), is_internal=False, paid_usd=9.0),
            Encounter(encounter_id="E1", patient_id="P1", kind="office_visit", start_date=date(2025, 2, 3), is_internal=True),
        ])  # fmt: skip
        s.commit()
    lags = runout.claims_lags(store_engine).sort_values(["service_month", "paid_usd"]).reset_index(drop=True)
    assert lags[["service_month", "paid_month", "claims", "paid_usd"]].values.tolist() == [
        [JAN, FEB, 1, 30.0], [JAN, JAN, 1, 50.0], [FEB, None, 1, 9.0]]  # fmt: skip


def test_shipped_settings_load():
    s = runout.load_runout_settings()
    assert s.months_without_paid_dates == 3 and 0 < s.complete_at <= 1


def test_older_store_gets_the_paid_date_column(store_engine):
    """A store made before encounter.paid_date: upgrade_schema adds it (empty) and the run-out reads it."""
    from sqlalchemy import text

    from core.store.db import upgrade_schema

    with store_engine.begin() as conn:
        conn.execute(text("ALTER TABLE encounter DROP COLUMN paid_date"))
    assert upgrade_schema(store_engine) == ["added encounter.paid_date"]
    assert upgrade_schema(store_engine) == []
    assert runout.claims_lags(store_engine).empty

"""The generated sample network end to end: generated, imported and derived (the session fixture
``sample_engine``), then checked against independent computations over the whole store."""

import pytest
from sqlalchemy import func, select

from core.derive import costs
from core.metrics import cost_reports
from core.metrics.scorecard import Selection, build_scorecard
from core.store import models
from tests.unit.test_costs import _cells_total


def test_sample_network_reconciles(sample_engine):
    """Every activity and claim cost of the network is either in the cost cells or in the
    documented unattributed remainder, to the cent."""
    rec = cost_reports.reconcile_costs(sample_engine, None)
    assert rec.difference_usd == pytest.approx(0.0, abs=1e-6)
    assert rec.uncosted_internal_encounters == 0
    assert cost_reports.has_cost_cells(sample_engine)
    in_cells = _cells_total(sample_engine, costs.COST_INTERNAL) + _cells_total(sample_engine, costs.COST_EXTERNAL)
    assert in_cells == pytest.approx(rec.attributed_internal_usd + rec.attributed_external_usd, rel=1e-9)


def test_cells_sum_to_the_patient_level_totals(sample_engine):
    """Summing cells gives exactly the patient-level totals of the sample network."""
    from core.derive.measures import load_store_frames

    frames = load_store_frames(sample_engine)
    att = frames.attribution.assign(m=frames.attribution["month"].dt.to_period("M"))
    key = set(zip(att["patient_id"], att["m"]))
    enc = frames.encounters.assign(m=frames.encounters["start_date"].dt.to_period("M"))
    attributed = [k in key for k in zip(enc["patient_id"], enc["m"])]
    enc = enc[attributed]
    pts = frames.patients.dropna(subset=["death_date"])
    deaths = sum((p, d) in key for p, d in zip(pts["patient_id"], pts["death_date"].dt.to_period("M")))
    C = models.Cell
    with sample_engine.connect() as conn:
        got = dict(conn.execute(select(C.metric, func.sum(C.numerator)).where(C.stratum == "all").group_by(C.metric)).all())
        by_sex = dict(conn.execute(select(C.metric, func.sum(C.numerator)).where(C.stratum == "sex").group_by(C.metric)).all())
    assert got["member_months"] == len(att)
    assert got["mortality"] == deaths
    assert got["ed_visits"] == (enc["kind"] == "ed_visit").sum()
    assert got["admissions"] == (enc["kind"] == "admission").sum()
    assert by_sex["member_months"] == len(att) and by_sex["ed_visits"] == got["ed_visits"]


def test_network_value_of_a_hidden_network_row_is_hidden_too(sample_engine):
    """For a network-wide selection the network value is the row's own value: it must not leak."""
    from core.store.queries import months_available

    month = months_available(sample_engine)[-1]
    card = build_scorecard(sample_engine, Selection(period=month, window="month", stratum="race_ethnicity"))
    hidden = card[card["suppressed"]]
    assert len(hidden) > 0
    assert hidden["network_value"].isna().all()

"""Scorecards from hand-written cells: windows, comparisons, observed/expected, scope and suppression."""

import io
import math
from datetime import date

import numpy as np
import pandas as pd
import pytest

from core.cli.main import main
from core.derive.cells import write_cells
from core.metrics.scorecard import Selection, _cell_statement, _window_reads, build_scorecard, suppress_table
from core.store.months import add_months, index_of

JAN24 = date(2024, 1, 1)


def month(i: int) -> date:
    """Month i counted from January 2023 (i = 12 is January 2024)."""
    return add_months(date(2023, 1, 1), i)


def cell(metric, m, numerator, denominator, patients, team="T1", practice="P1", subgroup="chronic", sum_sq=0.0,
         stratum="all", value="all"):
    return dict(practice_id=practice, team_id=team, subgroup=subgroup, month=month(m), stratum=stratum,
                stratum_value=value, metric=metric, numerator=float(numerator), denominator=float(denominator),
                sum_sq=float(sum_sq), patients=patients)


def store(engine, rows):
    write_cells(engine, pd.DataFrame(rows))


def row(card, measure_id):
    got = card[card["measure_id"] == measure_id]
    assert len(got) == 1
    return got.iloc[0]


def test_proportion_value_interval_and_comparisons(engine):
    store(engine, [
        cell("hba1c_control", 12, 80, 100, 100), cell("hba1c_control", 11, 50, 100, 100),
        cell("hba1c_control", 0, 78, 100, 100),
        cell("hba1c_control", 12, 300, 1000, 1000, team="T2", practice="P2"),
    ])
    card = build_scorecard(engine, Selection(practice_id="P1", period=JAN24))
    r = row(card, "hba1c_control")
    assert (r.numerator, r.denominator, r.value) == (80, 100, pytest.approx(80.0))
    assert (r.ci_low, r.ci_high) == pytest.approx((71.1, 86.7), abs=0.1)  # Wilson 80/100
    assert r.previous_value == pytest.approx(50.0) and r.change_vs_previous == "better"
    assert r.last_year_value == pytest.approx(78.0) and r.change_vs_last_year == ""  # intervals overlap
    assert r.network_value == pytest.approx(380 / 1100 * 100) and r.gap_vs_network == "better"
    assert r.met_target is True and not r.suppressed


def test_window_sums_events_and_takes_status_at_end(engine):
    rows = []
    for m in (10, 11, 12):  # November 2023 - January 2024
        rows.append(cell("ed_visits", m, 20, 100 / 12, 100))
        rows.append(cell("hba1c_control", m, 40 + m, 100, 100))
    store(engine, rows)
    card = build_scorecard(engine, Selection(period=JAN24, window="quarter"))
    ed = row(card, "ed_visits")
    assert ed.numerator == 60 and ed.denominator == pytest.approx(25.0) and ed.value == pytest.approx(2400.0)
    assert math.isnan(ed.previous_value)  # no events before November: 0 events over 0 member-years
    assert row(card, "hba1c_control").numerator == 52  # status in January only


def test_rate_interval_and_observed_expected(engine):
    store(engine, [
        cell("ed_visits", 12, 30, 100 / 12, 100), cell("risk_score_sum", 12, 200, 100, 100),
        cell("ed_visits", 12, 30, 300 / 12, 300, team="T2"), cell("risk_score_sum", 12, 300, 300, 300, team="T2"),
    ])
    r = row(build_scorecard(engine, Selection(team_id="T1", period=JAN24)), "ed_visits")
    assert r.value == pytest.approx(3600.0)
    network = 60 / (400 / 12) * 1000  # 1,800 per 1,000
    assert r.network_value == pytest.approx(network)
    expected = network * (200 / 100) / (500 / 400)  # team mean risk 2.0, network 1.25
    assert r.expected_value == pytest.approx(expected) and r.observed_expected == pytest.approx(3600 / expected)


def test_mean_uses_t_interval(engine):
    values = np.array([40.0, 50.0, 60.0] * 5)
    store(engine, [cell("promis_physical_mean", 12, values.sum(), len(values), len(values), sum_sq=(values ** 2).sum())])
    r = row(build_scorecard(engine, Selection(period=JAN24)), "promis_physical_mean")
    assert r.value == pytest.approx(50.0) and (r.ci_low, r.ci_high) == pytest.approx((45.32, 54.68), abs=0.01)


@pytest.mark.parametrize("numerator,denominator,patients,suppressed", [
    (5, 100, 100, True),     # numerator 1-10
    (95, 100, 100, True),    # 5 not controlled can be worked out by subtraction
    (0, 100, 100, False),    # zero is publishable
    (50, 100, 100, False),
    (8, 8, 8, True),         # denominator 1-10
])
def test_small_counts_are_suppressed(engine, numerator, denominator, patients, suppressed):
    store(engine, [cell("hba1c_control", 12, numerator, denominator, patients)])
    r = row(build_scorecard(engine, Selection(period=JAN24)), "hba1c_control")
    assert bool(r.suppressed) is suppressed
    if suppressed:
        assert math.isnan(r.numerator) and math.isnan(r.value) and math.isnan(r.ci_low) and r.met_target is None


def test_scope_restricts_teams(engine):
    store(engine, [cell("hba1c_control", 12, 60, 100, 100), cell("hba1c_control", 12, 30, 100, 100, team="T2")])
    assert row(build_scorecard(engine, Selection(period=JAN24), team_ids=("T2",)), "hba1c_control").numerator == 30
    assert math.isnan(row(build_scorecard(engine, Selection(period=JAN24), team_ids=()), "hba1c_control").value)


def test_measures_follow_the_subgroup(engine):
    card = build_scorecard(engine, Selection(subgroup="healthy", period=JAN24))
    assert "hba1c_control" not in set(card["measure_id"]) and "ed_visits" in set(card["measure_id"])
    assert "hba1c_control" in set(build_scorecard(engine, Selection(period=JAN24))["measure_id"])


def test_empty_selection_has_no_values(engine):
    card = build_scorecard(engine, Selection(practice_id="nowhere", period=JAN24))
    assert len(card) > 0 and card["value"].isna().all() and (card["change_vs_previous"] == "").all()


def test_suppressed_cell_cannot_be_recovered_from_totals():
    teams = pd.DataFrame({"team": ["A", "B", "C", "D"], "admissions": [4.0, 25.0, 40.0, 0.0]})
    total = teams["admissions"].sum()
    published = suppress_table(teams, ["admissions"], total=True)
    hidden = published["admissions"].isna()
    assert hidden.sum() >= 2 and bool(hidden[0])
    recoverable = total - published["admissions"].sum()  # what subtraction reveals: the sum of hidden cells
    assert recoverable > 10
    # Every hidden cell could be anything from 0 to that sum: team A's 4 is not determined.
    assert published.loc[hidden, "suppressed"].all() and not published.loc[~hidden, "suppressed"].any()


def test_suppress_table_two_small_cells_with_small_sum_get_a_third():
    t = pd.DataFrame({"g": ["x"] * 4, "n": [3.0, 4.0, 30.0, 50.0], "v": [1.0, 2.0, 3.0, 4.0]})
    out = suppress_table(t, ["n"], total=True, group_cols=["g"], value_cols=["v"])
    assert out["n"].isna().tolist() == [True, True, True, False]  # 3 + 4 <= 10, so 30 goes too
    assert out["v"].isna().tolist() == [True, True, True, False]


def test_suppress_table_without_total_only_primary():
    t = pd.DataFrame({"n": [3.0, 40.0, 50.0]})
    assert suppress_table(t, ["n"], total=False)["n"].isna().tolist() == [True, False, False]


def test_equity_strata_are_suppressed_as_parts_of_the_total(engine):
    store(engine, [cell("hba1c_control", 12, 40, 100, 100, stratum="sex", value="female"),
                   cell("hba1c_control", 12, 45, 90, 90, stratum="sex", value="male"),
                   cell("hba1c_control", 12, 2, 4, 4, stratum="sex", value="other")])
    card = build_scorecard(engine, Selection(period=JAN24, stratum="sex"))
    hb = card[card["measure_id"] == "hba1c_control"].set_index("stratum_value")
    assert hb["suppressed"].to_dict() == {"female": False, "male": True, "other": True}


def test_cli_scorecard_prints_csv(engine, tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    from core.store.db import create_schema, make_engine

    eng = make_engine(url)
    create_schema(eng)
    store(eng, [cell("hba1c_control", 12, 80, 100, 100)])
    assert main(["scorecard", "--practice", "P1", "--period", "2024-01", "--format", "csv", "--database-url", url]) == 0
    out = capsys.readouterr().out
    assert out.startswith("measure_id,") and "hba1c_control" in out
    read = pd.read_csv(io.StringIO(out)).set_index("measure_id")
    ci_low = read.loc["hba1c_control", "ci_low"]  # rounded as shown: one decimal
    assert ci_low == round(ci_low, 1) and ci_low != int(ci_low)


# --- what is read ----------------------------------------------------------------------------

E = index_of(JAN24)  # integer month index of January 2024


@pytest.mark.parametrize("n,ends,expected", [
    # month: January, December, last January; summed and end-of-window metrics read the same months
    (1, [E, E - 1, E - 12], [(["ed_visits", "risk_score_sum", "hba1c_control"], [month(0), month(11), month(12)])]),
    # quarter: 9 months for summed metrics, the 3 window ends for end-of-window ones
    (3, [E, E - 3, E - 12], [(["ed_visits", "risk_score_sum"], [month(i) for i in (-2, -1, 0, 7, 8, 9, 10, 11, 12)]),
                             (["hba1c_control"], [month(0), month(9), month(12)])]),
    # 12 months: a range of 24 months (the previous window is last year's), 2 window ends
    (12, [E, E - 12, E - 12], [(["ed_visits", "risk_score_sum"], (month(-11), month(12))),
                               (["hba1c_control"], [month(0), month(12)])]),
    # the network: the current window only
    (12, [E], [(["ed_visits", "risk_score_sum"], (month(1), month(12))), (["hba1c_control"], [month(12)])]),
])
def test_reads_only_the_months_compared(n, ends, expected):
    assert _window_reads(["ed_visits", "risk_score_sum"], ["hba1c_control"], ends, n) == expected


def test_cells_outside_the_compared_months_change_nothing(engine):
    """A month scorecard compares January with December and the January before: July's cells are
    not read, and a stratum value seen only in July is not listed."""
    store(engine, [cell("ed_visits", 12, 30, 300 / 12, 300, stratum="sex", value="female"),
                   cell("ed_visits", 6, 40, 300 / 12, 300, stratum="sex", value="female"),
                   cell("ed_visits", 6, 20, 240 / 12, 240, stratum="sex", value="male")])
    ed = build_scorecard(engine, Selection(period=JAN24, stratum="sex")).query("measure_id == 'ed_visits'")
    assert ed["stratum_value"].tolist() == ["female"]
    assert ed["numerator"].tolist() == [30] and ed["previous_value"].isna().all()


@pytest.mark.parametrize("scope", [{}, {"team_id": "T1"}, {"team_id": "T1", "subgroup": "chronic"}, {"practice_id": "P1"}])
def test_cells_are_read_from_a_covering_index_in_group_order(engine, scope):
    """The Cell indexes hold every column a scorecard reads, in its filter and GROUP BY order (SQLite)."""
    store(engine, [cell(metric, m, 5, 10, 10, team=team, practice=practice, subgroup=subgroup, stratum="sex", value=value)
                   for metric in ("ed_visits", "hba1c_control", "risk_score_sum", "member_months") for m in range(24)
                   for practice, team in (("P1", "T1"), ("P1", "T2"), ("P2", "T3"))
                   for subgroup in ("chronic", "healthy") for value in ("female", "male")])
    filters = {"practice_id": None, "team_id": None, "subgroup": None, "team_ids": None} | scope
    for metrics, months in _window_reads(["ed_visits", "risk_score_sum"], ["hba1c_control"], [E, E - 12, E - 12], 12):
        compiled = _cell_statement(stratum="sex", metrics=metrics, months=months, **filters).compile(
            engine, compile_kwargs={"render_postcompile": True})
        with engine.connect() as conn:
            plan = [r[3] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}",
                                                       tuple(compiled.params[k] for k in compiled.positiontup))]
        assert len(plan) == 1 and "USING COVERING INDEX" in plan[0], plan  # and no TEMP B-TREE for the GROUP BY

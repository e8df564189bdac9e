"""Worklist rules and pure frames: one case per flag rule, the window sums, search and filters."""

from datetime import date

import pandas as pd
import pytest

from core.store.months import add_months, month_end
from core.views.patient import measurement_series, monthly_costs_by_category, subgroup_periods
from core.views.worklist import (
    FLAG_IDS,
    WORKLIST_PATH,
    compute_flags,
    count_text,
    filter_worklist,
    load_worklist_rules,
)

MONTH = date(2026, 10, 1)
RULES = load_worklist_rules()
QUIET = dict(subgroup="complex", hba1c_value=None, hba1c_date=None, systolic_value=None, systolic_date=None,
             diastolic_value=None, diastolic_date=None, last_acute=None, cost_last_3m_usd=0.0, cost_prev_3m_usd=0.0,
             previous_subgroup="complex", **{"q_71971-6": date(2026, 9, 1), "q_44261-6": date(2026, 9, 1)})  # fmt: skip


PHQ = {"s_44261-6_date": date(2026, 9, 1), "s_44261-6_previous_value": None}


def flags_of(**changes) -> set[str]:
    frame = pd.DataFrame([{**QUIET, **changes}])
    row = compute_flags(frame, MONTH, RULES).iloc[0]
    return {f for f in FLAG_IDS if row[f]}


@pytest.mark.parametrize(
    "changes,expected",
    [
        ({}, set()),
        ({"last_acute": date(2026, 10, 1)}, {"recent_acute"}),  # 30 days before 31 Oct
        ({"last_acute": date(2026, 9, 30)}, set()),  # 31 days
        ({"hba1c_value": 9.1, "hba1c_date": date(2026, 5, 1)}, {"uncontrolled_diabetes"}),
        ({"hba1c_value": 9.0, "hba1c_date": date(2026, 5, 1)}, set()),  # HEDIS poor control is > 9.0
        ({"hba1c_value": 12.0, "hba1c_date": date(2025, 10, 31)}, set()),  # older than the 12-month look-back
        ({"hba1c_value": 12.0, "hba1c_date": date(2025, 11, 1)}, {"uncontrolled_diabetes"}),
        ({"systolic_value": 140.0, "diastolic_value": 80.0, "systolic_date": date(2026, 9, 1), "diastolic_date": date(2026, 9, 1)}, {"uncontrolled_bp"}),
        ({"systolic_value": 130.0, "diastolic_value": 90.0, "systolic_date": date(2026, 9, 1), "diastolic_date": date(2026, 9, 1)}, {"uncontrolled_bp"}),
        ({"systolic_value": 139.0, "diastolic_value": 89.0, "systolic_date": date(2026, 9, 1), "diastolic_date": date(2026, 9, 1)}, set()),
        ({"systolic_value": 170.0, "systolic_date": date(2024, 1, 1)}, set()),
        ({"cost_last_3m_usd": 2000.0, "cost_prev_3m_usd": 1000.0}, {"rising_cost"}),  # x2 and +$1,000
        ({"cost_last_3m_usd": 1900.0, "cost_prev_3m_usd": 1000.0}, set()),  # x1.9 only
        ({"cost_last_3m_usd": 999.0, "cost_prev_3m_usd": 0.0}, set()),  # +$999 only
        ({"q_71971-6": date(2026, 5, 1)}, set()),  # complex: due every 6 months, May-Oct
        ({"q_71971-6": date(2026, 4, 30)}, {"overdue_questionnaire"}),
        ({"q_71971-6": date(2026, 5, 1), "subgroup": "chronic", "previous_subgroup": "chronic"}, set()),  # chronic: 12 months
        ({"q_44261-6": None}, {"overdue_questionnaire"}),  # never answered
        ({"q_44261-6": date(2025, 1, 1), "subgroup": "healthy", "previous_subgroup": "healthy"}, set()),  # healthy: 24 months
        # questionnaires per subgroup: the PHQ-9 is not asked of the healthy, the PROMIS is (every 24 months)
        ({"q_44261-6": None, "subgroup": "healthy", "previous_subgroup": "healthy"}, set()),
        ({"q_71971-6": date(2024, 10, 31), "subgroup": "healthy", "previous_subgroup": "healthy"}, {"overdue_questionnaire"}),
        ({"q_44261-6": date(2025, 10, 31), "subgroup": "at_risk", "previous_subgroup": "at_risk"}, {"overdue_questionnaire"}),
        ({"q_44261-6": None, "q_71971-6": None, "subgroup": None, "previous_subgroup": None}, set()),  # no subgroup: none due
        # PHQ-9 10 or more in the last 12 months; rising by 5 or more since the previous score
        ({**PHQ, "s_44261-6_value": 10.0}, {"phq9_high"}),
        ({**PHQ, "s_44261-6_value": 9.0}, set()),
        ({**PHQ, "s_44261-6_value": 15.0, "s_44261-6_date": date(2025, 10, 31)}, set()),  # older than 12 months
        ({**PHQ, "s_44261-6_value": 9.0, "s_44261-6_previous_value": 4.0}, {"phq9_rising"}),  # +5
        ({**PHQ, "s_44261-6_value": 8.0, "s_44261-6_previous_value": 4.0}, set()),  # +4
        ({**PHQ, "s_44261-6_value": 15.0, "s_44261-6_previous_value": 5.0}, {"phq9_high", "phq9_rising"}),
        ({**PHQ, "s_44261-6_value": 15.0, "s_44261-6_previous_value": 20.0}, {"phq9_high"}),  # high, falling
        ({**PHQ, "s_44261-6_value": 9.0, "s_44261-6_previous_value": None}, set()),  # no previous score: no rise
        ({"previous_subgroup": "chronic"}, {"moved_subgroup"}),
        ({"previous_subgroup": None}, set()),  # new to the practice: not a move
    ],
)
def test_each_flag_rule(changes, expected):
    assert flags_of(**changes) == expected


def test_overdue_boundary_is_whole_months():
    # complex is due every 6 months: an answer in May 2026 still counts in October (May..Oct), April does not
    assert flags_of(**{"q_71971-6": date(2026, 5, 31)}) == set()
    assert flags_of(**{"q_71971-6": date(2026, 4, 1)}) == {"overdue_questionnaire"}


def test_priority_is_lexicographic_in_the_documented_order():
    weights = RULES.weights
    assert list(RULES.order) == ["recent_acute", "phq9_rising", "phq9_high", "uncontrolled_diabetes", "uncontrolled_bp",
                                 "rising_cost", "overdue_questionnaire", "moved_subgroup"]  # fmt: skip
    for i, flag in enumerate(RULES.order):
        assert weights[flag] > sum(weights[f] for f in RULES.order[i + 1 :])


def test_rules_file_errors_name_the_file(tmp_path):
    text = WORKLIST_PATH.read_text(encoding="utf-8")
    bad = tmp_path / "worklist.toml"
    bad.write_text(text.replace(', "moved_subgroup"]', "]"), encoding="utf-8")  # a flag left out of the priority order
    assert bad.read_text(encoding="utf-8") != text
    with pytest.raises(ValueError, match="worklist.toml.*priority.order"):
        load_worklist_rules(bad)


def test_overdue_questionnaires_are_named():
    from core.views.worklist import overdue_questionnaires

    frame = pd.DataFrame([{**QUIET, "q_71971-6": None, "q_44261-6": None}, {**QUIET, "subgroup": "healthy", "q_71971-6": None,
                                                                           "q_44261-6": None}, QUIET])  # fmt: skip
    due = overdue_questionnaires(frame, MONTH, RULES)
    assert due["PROMIS Global-10"].tolist() == [True, True, False]
    assert due["PHQ-9"].tolist() == [True, False, False]  # the healthy are not asked the PHQ-9


def test_questionnaire_rules_are_data_per_subgroup(tmp_path):
    due = {q.name: q.every_months for q in RULES.questionnaires}
    assert due["PHQ-9"]["complex"] == 6 and "healthy" not in due["PHQ-9"] and due["PROMIS Global-10"]["healthy"] == 24
    # the thresholds are data: a PHQ-9 cut-off of 15 in the file no longer flags a 12
    text = WORKLIST_PATH.read_text(encoding="utf-8").replace("at_least = 10.0", "at_least = 15.0")
    path = tmp_path / "worklist.toml"
    path.write_text(text, encoding="utf-8")
    stricter = load_worklist_rules(path)
    frame = pd.DataFrame([{**QUIET, **PHQ, "s_44261-6_value": 12.0}])
    assert compute_flags(frame, MONTH, RULES).iloc[0]["phq9_high"]
    assert not compute_flags(frame, MONTH, stricter).iloc[0]["phq9_high"]
    bad = tmp_path / "bad" / "worklist.toml"  # another path: the rules are cached per path
    bad.parent.mkdir()
    bad.write_text(text.replace("complex = 6, frail = 6 }", "complex = 0, frail = 6 }"), encoding="utf-8")
    with pytest.raises(ValueError, match="worklist.toml.*every 1 or more months"):
        load_worklist_rules(bad)


@pytest.mark.parametrize(
    "search,flags,expected",
    [("", (), "3 patients, 2 with at least one flag"),
     ("smith", (), "1 patient shown of 3 in the list, 1 with at least one flag"),
     ("nobody", (), "0 patients shown of 3 in the list, 0 with at least one flag"),
     ("", ("rising_cost",), "1 patient shown of 3 in the list, 1 with at least one flag")],
)  # fmt: skip
def test_the_count_is_of_the_rows_shown(search, flags, expected):
    frame = pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "name": ["Smith, Ann", "Jones, Bo", "Lee, Cy"],
                          "recent_acute": [True, False, False], "rising_cost": [False, True, False], "priority": [2, 1, 0]})  # fmt: skip
    assert count_text(filter_worklist(frame, search, flags), len(frame), search, flags) == expected


def test_month_arithmetic():
    assert add_months(date(2026, 1, 1), -1) == date(2025, 12, 1)
    assert add_months(date(2026, 10, 1), -11) == date(2025, 11, 1)
    assert month_end(date(2024, 2, 1)) == date(2024, 2, 29)


@pytest.mark.parametrize(
    "search,flags,expected",
    [("", (), ["P1", "P2", "P3"]), ("smith", (), ["P1"]), ("p3", (), ["P3"]), ("", ("rising_cost",), ["P2"]),
     ("", ("rising_cost", "recent_acute"), ["P1", "P2"]), ("jones", ("recent_acute",), [])],
)  # fmt: skip
def test_search_and_flag_filters(search, flags, expected):
    frame = pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "name": ["Smith, Ann", "Jones, Bo", "Lee, Cy"],
                          "recent_acute": [True, False, False], "rising_cost": [False, True, False]})  # fmt: skip
    assert filter_worklist(frame, search, flags)["patient_id"].tolist() == expected


def test_subgroup_periods_join_consecutive_months():
    a = pd.DataFrame({"month": [date(2026, m, 1) for m in (1, 2, 3, 4)], "subgroup": ["chronic", "chronic", "complex", "complex"],
                      "rule_id": ["c", "c", "x", "override"], "reason": ["r1", "r1", "r2", "pinned"],
                      "overridden": [False, False, False, True]})  # fmt: skip
    out = subgroup_periods(a)
    assert out[["from_month", "to_month", "months", "subgroup", "overridden"]].values.tolist() == [
        [date(2026, 1, 1), date(2026, 2, 1), 2, "chronic", False],
        [date(2026, 3, 1), date(2026, 3, 1), 1, "complex", False],
        [date(2026, 4, 1), date(2026, 4, 1), 1, "complex", True],
    ]


def test_subgroup_periods_change_with_the_subgroup_or_rule_not_a_moving_cut_off():
    """Issue #19: a complex patient whose reason repeats the month's network-wide cut-off is one
    period (latest reason, range of scores), not a row per month; a new rule, a thin-history
    stretch or an override starts a new one."""
    reasons = [f"HCC risk {s:.2f} in the network's top decile (cut-off {c:.2f} this month, set across all teams)"
               for s, c in ((1.80, 1.10), (1.80, 1.12), (1.95, 1.09), (1.95, 1.15))]  # fmt: skip
    a = pd.DataFrame({
        "month": [date(2026, m, 1) for m in range(1, 8)],
        "subgroup": ["complex"] * 6 + ["chronic"],
        "rule_id": ["complex"] * 4 + ["complex", "complex", "chronic"],
        "reason": reasons + ["3 chronic conditions: E11.9, I10, N18.30", "3 chronic conditions: E11.9, I10, N18.30", "1 chronic condition"],
        "risk_score": [1.80, 1.80, 1.95, 1.95, 1.95, 1.95, 1.95],
        "overridden": [False] * 7,
        "thin_history": [True, False, False, False, False, False, False],
        "history_note": ["Not enough history: 2 of 6 months of data"] + [""] * 6,
    })  # fmt: skip
    out = subgroup_periods(a)
    assert out[["from_month", "months", "subgroup", "thin_history"]].values.tolist() == [
        [date(2026, 1, 1), 1, "complex", True],
        [date(2026, 2, 1), 5, "complex", False],  # the cut-off moved 3 times and the rule's clause once: one period
        [date(2026, 7, 1), 1, "chronic", False],
    ]
    assert out.loc[1, "reason"] == "3 chronic conditions: E11.9, I10, N18.30"  # the latest month's
    assert out.loc[1, "risk_scores"] == "1.80 to 1.95" and out.loc[2, "risk_scores"] == "1.95"
    assert out.loc[0, "history_note"] == "Not enough history: 2 of 6 months of data"


def test_monthly_costs_by_category():
    enc = pd.DataFrame({"month": [date(2026, 9, 1)] * 3, "cost_category": ["primary_care", "ed", "ed"],
                        "is_internal": [True, False, False], "cost_usd": [50.0, 100.0, 25.0]})  # fmt: skip
    out = monthly_costs_by_category(enc)
    assert out[["source", "cost_category", "cost_usd"]].values.tolist() == [["external", "ed", 125.0], ["internal", "primary_care", 50.0]]
    assert out["category"].tolist() == ["Emergency department", "Primary care"]


def test_measurement_series_carry_their_targets_in_chart_order():
    m = pd.DataFrame({"code": ["44261-6", "4548-4", "4548-4", "9999-9"], "value": [6.0, 8.4, None, 1.0],
                      "measured_date": [date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1), date(2026, 1, 1)]})  # fmt: skip
    out = measurement_series(m, RULES)
    assert out[["code", "value", "target", "direction"]].values.tolist() == [["4548-4", 8.4, 8.0, "lower"], ["44261-6", 6.0, 5.0, "lower"]]


def test_default_subgroup_fits_the_size_limit():
    from core.views.worklist import default_subgroup

    order = ["frail", "complex", "chronic", "at_risk", "healthy"]
    counts = {None: 300, "frail": 0, "complex": 40, "chronic": 90, "at_risk": 70, "healthy": 100}
    assert default_subgroup(counts, order, "chronic", 90) == "chronic"  # the team's own subgroup when it fits
    assert default_subgroup(counts, order, "chronic", 50) == "complex"  # too big: the first, in rule order, that fits
    assert default_subgroup(counts, order, None, 300) is None  # everyone fits
    assert default_subgroup(counts, order, None, 50) == "complex"  # the first, in rule order, with patients that fits
    assert default_subgroup(counts, order, None, 10) is None  # nothing fits: the page asks for a choice

"""The equity view's reference group (core.views.equity.reference_group) and its labels."""

import pandas as pd

from core.views.equity import reference_group, stratum_value_label


def _card() -> pd.DataFrame:
    return pd.DataFrame({
        "stratum_value": ["A", "B", "C", "unknown", "D"],
        "patients": [18.0, 300.0, 120.0, 400.0, None],
        "value": [52.0, 49.0, 50.0, 60.0, None],
        "suppressed": [False, False, False, False, True],
    })  # fmt: skip


def test_best_among_groups_above_the_minimum_size():
    # A (18 people) has the best value but is too small to set the bar; unknown is not a group; D is suppressed
    assert reference_group(_card(), "higher", "best_above_minimum", 50, ["unknown"]) == "C"
    assert reference_group(_card(), "lower", "best_above_minimum", 50, ["unknown"]) == "B"


def test_largest_group_and_fallback():
    assert reference_group(_card(), "higher", "largest", 50, ["unknown"]) == "B"
    # no group reaches the minimum: the largest group
    assert reference_group(_card(), "higher", "best_above_minimum", 1000, ["unknown"]) == "B"
    assert reference_group(_card().assign(suppressed=True), "higher", "largest", 50) is None


def test_stratum_values_are_labelled():
    assert stratum_value_label("race_ethnicity", "hispanic_or_latino") == "Hispanic or Latino (any race)"
    assert stratum_value_label("dual_status", "not_dual") == "Medicare only (not dual eligible)"
    assert stratum_value_label("race_ethnicity", "White") == "White"  # stored as its label already

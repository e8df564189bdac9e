"""core.views.review: formatting, significance marks and settings. The data behind the page and
the review pack on the sample network are in tests/e2e/test_review_network.py."""

from datetime import date

import numpy as np
import pandas as pd
import pytest

from core.store.months import months_back
from core.views import review
from core.views.format import format_figure, usd


@pytest.mark.parametrize(
    "value,suppressed,digits,expected",
    [(1234.567, False, 1, "1,234.6"), (0.0, False, 1, "0.0"), (np.nan, False, 1, "–"), (None, False, 1, "–"),
     (5.0, True, 1, "suppressed"), (12.0, False, 0, "12")],
)  # fmt: skip
def test_format_figure(value, suppressed, digits, expected):
    assert format_figure(value, suppressed, digits) == expected


@pytest.mark.parametrize("value,expected", [(-824.4, "-$824"), (1700.0, "$1,700"), (None, "suppressed"), (0.0, "$0")])
def test_format_usd(value, expected):
    assert usd(value) == expected


@pytest.mark.parametrize(
    "month,n,expected",
    [(date(2026, 3, 1), 3, [date(2026, 1, 1), date(2026, 2, 1), date(2026, 3, 1)]),
     (date(2026, 1, 1), 2, [date(2025, 12, 1), date(2026, 1, 1)])],
)  # fmt: skip
def test_months_back(month, n, expected):
    assert months_back(month, n) == expected


def _card(**overrides):
    row = {"measure_id": "admissions", "name": "Admissions", "tier": 3, "unit": "per 1,000", "value": 1400.0,
           "ci_low": 1100.0, "ci_high": 1800.0, "target": 200.0, "previous_value": 400.0, "last_year_value": np.nan,
           "network_value": 800.0, "change_vs_previous": "worse", "change_vs_last_year": "", "gap_vs_network": "",
           "suppressed": False}  # fmt: skip
    return pd.DataFrame([{**row, **overrides}])


@pytest.mark.parametrize(
    "overrides,expected",
    [({}, "↑ worse vs last month"),
     ({"gap_vs_network": "worse"}, "↑ worse vs last month; ↑ worse vs network"),
     ({"change_vs_previous": "", "value": 300.0, "gap_vs_network": "better"}, "↓ better vs network"),
     ({"change_vs_previous": ""}, "")],
)  # fmt: skip
def test_significance_marks_only_flagged_comparisons(overrides, expected):
    assert review.scorecard_table(_card(**overrides))["Significant"].iloc[0] == expected


def test_suppressed_rows_show_suppressed_and_no_mark():
    table = review.scorecard_table(_card(suppressed=True, value=np.nan, ci_low=np.nan, ci_high=np.nan))
    row = table.iloc[0]
    assert (row["Value"], row["95% interval"], row["Significant"]) == ("suppressed", "suppressed", "")
    assert review.significant_rows(_card(suppressed=True)).empty
    assert len(review.significant_rows(_card())) == 1


def test_shipped_settings_name_known_measures():
    settings = review.load_review_settings()
    assert set(settings.key_outcomes) == {"healthy", "at_risk", "chronic", "complex", "frail"}
    assert "admissions" in settings.key_outcomes["complex"]


def test_settings_with_an_unknown_measure_are_refused(tmp_path):
    path = tmp_path / "review.toml"
    path.write_text('[key_outcomes]\ncomplex = ["nope"]\n[what_moved]\nacute_kinds = ["admission"]\ntop_patients = 5\n'
                    "[trend]\nmonths = 12\n")  # fmt: skip
    with pytest.raises(ValueError, match="unknown measures"):
        review.load_review_settings(path)

"""Column widths of the app's tables (ui.tables._width): a text longer than the grid's automatic
cap widens its column, worked out from the distinct values (a worklist's dates, a few hundred
among 10,000 rows) and from every value when they cannot be hashed."""

from datetime import date

import pandas as pd
import pytest

from ui.tables import PX_MAX, PX_PADDING, PX_PER_CHAR, _width

LONG = "Overdue: colorectal cancer screening, flu"  # 41 characters


def px(chars: int) -> int:
    return min(PX_MAX, int(chars * PX_PER_CHAR + PX_PADDING))


@pytest.mark.parametrize("dtype", [object, "str"])
def test_the_longest_text_sets_the_width_however_often_each_value_repeats(dtype):
    values = pd.Series(["Flu", LONG, None, "Flu", LONG + "!"] * 2_000, dtype=dtype)
    assert _width(values, "Care gaps", "–") == px(len(LONG) + 1)
    assert _width(pd.Series(["Flu", "BP check", None] * 3, dtype=dtype), "Care gaps", "–") is None  # short: automatic


def test_dates_keep_the_automatic_width_and_unhashable_values_are_measured_as_text():
    assert _width(pd.Series([date(2026, 11, d % 28 + 1) for d in range(5_000)], dtype=object), "Last visit", "–") is None
    ids = pd.Series([("care_plan", "flu_vaccination"), None, ["a" * 36]], dtype=object)  # a list cannot be hashed
    assert _width(ids, "Gap ids", "–") == px(len(str(["a" * 36]))) < PX_MAX


def test_a_wide_placeholder_widens_a_column_with_empty_cells():
    assert _width(pd.Series([1.0, None, 12345.5]), "Cost", "suppressed") == px(len("$12,345.50"))

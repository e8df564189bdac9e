"""Months: the product's one calendar helper.

A month is represented by its first day (``datetime.date``). Vectorised code uses the integer
month index ``year * 12 + month - 1``, which turns month arithmetic into integer arithmetic.
Every module that shifts, counts or windows months uses these functions.
"""

from collections.abc import Iterable
from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
from sqlalchemy import Date, cast, func

# The windows a scorecard can cover, in months, ending with the chosen month.
WINDOWS = {"month": 1, "quarter": 3, "12m": 12}
# How the pages name each window, in the order a selection list offers them.
WINDOW_LABELS = {"12m": "12 months", "quarter": "Quarter", "month": "Month"}


def as_month(value) -> date:
    """The first day of the month of ``value`` (a ``date``, ``datetime`` or ISO text)."""
    if isinstance(value, str):
        value = date.fromisoformat(value[:10])
    return date(value.year, value.month, 1)


def as_date(value) -> date:
    """``value`` (a ``date``, ``datetime``, ``Timestamp`` or ISO text) as a plain ``date``."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    return date.fromisoformat(str(value)[:10])


def index_of(month: date) -> int:
    """The integer month index of ``month``."""
    return month.year * 12 + month.month - 1


def from_index(index: int) -> date:
    """The first day of the month with integer index ``index``."""
    return date(int(index) // 12, int(index) % 12 + 1, 1)


def add_months(month: date, n: int) -> date:
    """The first day of the month ``n`` months after the month of ``month`` (negative: before)."""
    return from_index(index_of(month) + n)


def month_end(month: date) -> date:
    """The last day of the month of ``month``."""
    return add_months(month, 1) - timedelta(days=1)


def months_between(first: date, last: date) -> list[date]:
    """Every month from the month of ``first`` to the month of ``last``, both included."""
    return [from_index(i) for i in range(index_of(first), index_of(last) + 1)]


def months_back(month: date, n: int) -> list[date]:
    """The ``n`` months ending with the month of ``month``, oldest first."""
    end = index_of(month)
    return [from_index(i) for i in range(end - n + 1, end + 1)]


def window_months(period: date, window: str = "month") -> list[date]:
    """The months of a window (a key of :data:`WINDOWS`) ending with ``period``, oldest first."""
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {sorted(WINDOWS)}, not {window!r}")
    return months_back(period, WINDOWS[window])


def month_span(months: Iterable[date]) -> tuple[date, date]:
    """The first month and the day after the last month: a half-open range for SQL filters."""
    ordered = sorted(months)
    return ordered[0], add_months(ordered[-1], 1)


def month_index(values) -> pd.Series:
    """Integer month index of each date (vectorised); missing or unreadable dates give NaN."""
    d = pd.to_datetime(pd.Series(values), errors="coerce")
    return (d.dt.year * 12 + d.dt.month - 1).astype("float64")


def year_and_month(index) -> tuple[np.ndarray, np.ndarray]:
    """Calendar year and month (1-12) of integer month indexes (vectorised)."""
    index = np.asarray(index)
    return index // 12, index % 12 + 1


def month_floor(values: pd.Series) -> pd.Series:
    """The first day of the month of each date, as datetime64 (same index; missing stays missing)."""
    return pd.to_datetime(values).dt.to_period("M").dt.to_timestamp()


def month_of(values: pd.Series) -> pd.Series:
    """The first day of the month of each date, as ``datetime.date`` objects (same index)."""
    months = pd.to_datetime(pd.Series(values)).to_numpy().astype("datetime64[M]")
    unique, inverse = np.unique(months, return_inverse=True)
    firsts = np.empty(len(unique), dtype=object)
    firsts[:] = [date.fromisoformat(f"{u}-01") for u in unique.astype(str)]
    return pd.Series(firsts[inverse], index=values.index, dtype=object)


def month_start_sql(dialect: str, column):
    """The first day of the month of a date column, in SQL (SQLite and PostgreSQL)."""
    if dialect == "postgresql":
        return cast(func.date_trunc("month", column), Date)
    return func.date(column, "start of month")

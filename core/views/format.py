"""Formatting of published figures for pages, review packs and downloads (no Streamlit).

A suppressed figure (a count of 1-10, or a figure built on one) reads ``suppressed``; a figure
with no data reads ``–``; neither ever reads 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.access.exports import export_csv

SUPPRESSED = "suppressed"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def format_figure(value, suppressed: bool = False, digits: int = 1) -> str:
    """A figure for display: ``suppressed``, ``–`` (no data) or the number with thousands separators."""
    if suppressed:
        return SUPPRESSED
    if _missing(value):
        return "–"
    return f"{float(value):,.{digits}f}"


def usd(value, digits: int = 0) -> str:
    """Dollars for display, the sign before the symbol so a delta reads as negative (``-$1,234``);
    ``suppressed`` for None or NaN (a suppressed amount)."""
    if _missing(value):
        return SUPPRESSED
    return f"{'-' if value < 0 else ''}${abs(float(value)):,.{digits}f}"


def last_days(n: int) -> str:
    """"the last 30 days", or "the last day" for 1: how a page names a look-back setting."""
    return "the last day" if n == 1 else f"the last {n:,} days"


def shown_precision(frame: pd.DataFrame, digits: dict[str, int] | None = None) -> pd.DataFrame:
    """Numbers rounded as the pages show them: amounts in USD to cents, shares to 0.1 %, counts to
    whole numbers and every other figure to one decimal; ``digits`` (column -> decimals) where a
    page shows a column otherwise (a risk score to 0.01). An export at full float precision would
    let an interval or a rate give back the counts it was computed from."""
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_float_dtype(out[col]):
            name = str(col).lower()
            default = 2 if "usd" in name else 3 if name in ("share",) else 1
            out[col] = out[col].round((digits or {}).get(col, default))
    return out


def csv_export(frame: pd.DataFrame, na_rep: str = SUPPRESSED, digits: dict[str, int] | None = None,
               headers: dict[str, str] | None = None) -> str:  # fmt: skip
    """A published table as CSV, rounded as shown (:func:`shown_precision`), with formula-like
    text neutralised: suppressed (and undefined) figures read ``na_rep`` (``suppressed``), never 0.
    A table whose empty cells mean "no data" (a worklist, the audit log) passes ``na_rep=""``;
    ``digits`` as for :func:`shown_precision`. ``headers`` (column -> label): those columns only,
    in that order, under those labels (rounded by their names first)."""
    shown = shown_precision(frame, digits)
    if headers is not None:
        shown = shown[list(headers)].rename(columns=headers)
    return export_csv(shown, na_rep=na_rep)

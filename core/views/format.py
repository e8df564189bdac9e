"""Formatting of published figures for pages, review packs and downloads (no Streamlit).

A suppressed figure (a count of 1-10, or a figure built on one) reads ``suppressed``; a figure
with no data reads ``–``; neither ever reads 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

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


def csv_export(frame: pd.DataFrame) -> str:
    """A published table as CSV: suppressed (and undefined) figures read ``suppressed``, never 0."""
    return frame.to_csv(index=False, na_rep=SUPPRESSED)

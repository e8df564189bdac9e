"""Formatting of published figures for pages, packs and downloads (no Streamlit)."""

from __future__ import annotations

import pandas as pd


def usd(amount: float, decimals: int = 0) -> str:
    """Dollars for a metric: ``-$1,234`` (the sign first, so a delta reads as negative)."""
    text = f"${abs(amount):,.{decimals}f}"
    return f"-{text}" if amount < 0 else text


def csv_export(frame: pd.DataFrame) -> str:
    """A published table as CSV: suppressed (and undefined) figures read ``suppressed``, never 0."""
    return frame.to_csv(index=False, na_rep="suppressed")

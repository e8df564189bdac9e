"""Every table of every page, shown one way: labels with units, number and date formats and code
labels from the column catalogue (core/config/columns.toml, read by core/views/columns.py)."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import streamlit as st

from core.views.columns import column_spec, kind_from, load_columns, readable
from ui.labels import subgroup_labels

MISSING = "–"  # a cell with no data; a table of suppressed figures passes placeholder="suppressed"
PX_PER_CHAR, PX_PADDING, PX_MAX = 7.5, 30, 420  # a column wide enough for its text at the grid's font


# kind -> (Streamlit number format, step: the shown decimals)
NUMBER_FORMATS = {"money": ("dollar", 1), "money_cents": ("dollar", 0.01), "rate": ("localized", 0.1),
                  "percent": ("%.1f%%", None), "share": ("percent", 0.001), "count": ("localized", 1),
                  "score": ("%.2f", None), "change": ("%+.0f", None)}  # fmt: skip


def _config(kind: str, label: str, help: str | None, width: str | None = None):
    cc = st.column_config
    if kind in NUMBER_FORMATS:
        fmt, step = NUMBER_FORMATS[kind]
        return cc.NumberColumn(label, help=help, format=fmt, step=step)
    if kind == "date":
        return cc.DateColumn(label, help=help, format="D MMM YYYY")
    if kind == "month":
        return cc.DateColumn(label, help=help, format="MMM YYYY")
    if kind == "datetime":
        return cc.DatetimeColumn(label, help=help, format="D MMM YYYY, HH:mm")
    if kind == "flag":
        return cc.CheckboxColumn(label, help=help)
    return cc.TextColumn(label, help=help, width=width or ("large" if kind == "long_text" else None))


def table_config(frame: pd.DataFrame, overrides: Mapping | None = None) -> dict:
    """Streamlit column configuration of every column of ``frame`` from the catalogue; ``overrides``
    (column -> a column config, a label or None to hide) win. A column whose values do not fit its
    kind shows by its type: dates already formatted as text stay text, numbers are never text."""
    catalogue = load_columns()
    config = {}
    for col in frame.columns:
        series = frame[col]
        spec = column_spec(col, series.dtype, catalogue)
        numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
        kind = spec.kind
        if kind in ("date", "month", "datetime") and not _is_dates(series):
            kind = "text"
        if (kind == "flag" and not pd.api.types.is_bool_dtype(series)) or (kind in NUMBER_FORMATS and not numeric):
            kind = "text"
        if kind in ("text", "long_text") and numeric:
            kind = kind_from(col, series.dtype)  # a number never shows unformatted
        config[col] = _config(kind, spec.label, spec.help, spec.width)
    return config | dict(overrides or {})


def _width(series: pd.Series, label: str, placeholder: str) -> int | None:
    """Pixels for a column whose automatic width would cut it short: a text longer than the
    grid's automatic cap, or the placeholder of its empty cells; None keeps the automatic width."""
    chars = 0
    if len(placeholder) > 3 and series.isna().any():  # "suppressed" is wider than many figures and labels
        numbers = pd.to_numeric(series, errors="coerce").dropna() if pd.api.types.is_numeric_dtype(series) else pd.Series([])
        widest = max((len(f"${v:,.2f}") for v in numbers), default=0)
        chars = max(len(placeholder), len(label), widest)
    if series.dtype == object or pd.api.types.is_string_dtype(series):
        longest = int(_distinct(series.dropna()).astype(str).str.len().max() or 0) if series.notna().any() else 0
        if longest > 28:
            chars = max(chars, longest)
    return min(PX_MAX, int(chars * PX_PER_CHAR + PX_PADDING)) if chars else None


def _distinct(values: pd.Series) -> pd.Series:
    """The distinct values (a 9,864-patient worklist's dates: a few hundred, each written as text
    once instead of per row); the values themselves when they cannot be hashed."""
    try:
        return pd.Series(values.unique(), dtype=values.dtype)
    except TypeError:
        return values


def _is_dates(series: pd.Series) -> bool:
    if pd.api.types.is_datetime64_any_dtype(series):
        return True
    sample = series.dropna()
    return len(sample) > 0 and all(hasattr(v, "year") and hasattr(v, "month") for v in sample.iloc[:20])


def show_table(frame: pd.DataFrame, *, column_config: Mapping | None = None, placeholder: str = MISSING,
               labels: Mapping[str, str] | None = None, vocabularies: Mapping[str, Mapping[str, str]] | None = None,
               **kwargs):  # fmt: skip
    """``st.dataframe`` of ``frame`` as people read it: codes shown by their labels (subgroups from
    the rules file), every column labelled and formatted from the catalogue, empty cells shown as
    ``placeholder`` ("–"; "suppressed" on tables whose empty figures are suppressed ones).
    ``labels`` (column -> label) name a column for this table, its format kept (a value's unit);
    ``column_config`` entries override the catalogue's; other arguments go to ``st.dataframe``."""
    frame = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
    subgroups = {"new": "New to the team", "none": "No longer attributed", "suppressed": "suppressed", **subgroup_labels()}
    shown = readable(frame, {"subgroups": subgroups, **(vocabularies or {})})
    kwargs.setdefault("hide_index", True)
    config = table_config(shown, column_config)
    for col, label in (labels or {}).items():
        if col in config and isinstance(config[col], dict):
            config[col] = {**config[col], "label": label}
    for col, spec in config.items():
        if isinstance(spec, dict) and spec.get("width") is None and col in shown:
            spec["width"] = _width(shown[col], spec.get("label") or str(col), placeholder)
    return st.dataframe(shown, column_config=config, placeholder=placeholder, **kwargs)

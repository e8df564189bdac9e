"""Printable packs (core.views.printable, review_pack, executive_pack): the PDF read back (text,
page count, size, page size, images), the XLSX read back (numeric cells, number formats, frozen
header rows, widths), CSVs rounded as shown, the HTML slim. Charts are drawn (Chromium) in one
test per pack only."""

import io
import re
from collections import OrderedDict

import openpyxl
import pandas as pd
import pytest
from pypdf import PdfReader

from core.access.exports import export_xlsx
from core.derive.costs import COST_TOTAL
from core.store.queries import months_available
from core.views import executive_pack, printable, review, review_log, review_pack
from core.views.format import csv_export
from core.views.printable import PackTable, pack_pdf, print_figure, shown_text, table_csv, tables_xlsx

LABELS = {"complex": "Complex", "chronic": "Chronic"}


@pytest.fixture
def review_data(sample_engine):
    month = months_available(sample_engine)[-1]
    return review.review_data(sample_engine, "TM04", "complex", month, ("TM04",), True)


@pytest.fixture
def log():
    return pd.DataFrame(columns=review_log.LOG_COLUMNS)


def _pdf(data: bytes) -> tuple[PdfReader, str]:
    reader = PdfReader(io.BytesIO(data))
    return reader, "\n".join(page.extract_text() for page in reader.pages)


def test_review_pack_pdf_reads_back_with_charts(review_data, log):
    data = review_pack.review_pack_pdf(review_data, log, LABELS, "Riverside · Complex Care", note="exact counts")
    assert data[:5] == b"%PDF-" and len(data) < 1_000_000
    reader, text = _pdf(data)
    assert 2 <= len(reader.pages) <= 8
    assert "Monthly value review: Riverside · Complex Care" in text and "exact counts" in text
    for heading in ("Scorecard by tier", "Cost by category", "Value map: teams of this subgroup", "Cost per member per month"):
        assert heading in text
    for name in review_data.card["name"]:  # every measure, whole (wrapped lines joined)
        assert name.split()[0] in text
    assert sum(len(page.images) for page in reader.pages) == 3  # the three charts as images
    assert round(float(reader.pages[0].mediabox.width)) == 792  # Letter landscape: 11 in (the scorecard is wide)
    assert review_data.summary and review_data.summary[1][:20] in text.replace("\n", " ")  # what moved, in words
    assert "Page 1" in reader.pages[0].extract_text()


def test_a4_and_suppressed_figures_read_suppressed(sample_engine, log):
    month = months_available(sample_engine)[-1]
    small = review.review_data(sample_engine, "TM04", "complex", month, ("TM04",), True, suppress=True)
    data = review_pack.review_pack_pdf(small, log, LABELS, "Riverside", page_size="a4", charts=False)
    reader, text = _pdf(data)
    assert (round(float(reader.pages[0].mediabox.width)), round(float(reader.pages[0].mediabox.height))) == (842, 595)
    assert small.card["suppressed"].any() and "suppressed" in text
    with pytest.raises(ValueError, match="page size"):
        review_pack.review_pack_pdf(small, log, LABELS, "Riverside", page_size="legal", charts=False)


def test_review_pack_xlsx_has_numeric_cells_formats_and_frozen_headers(review_data, log):
    pack = review_pack.review_pack(review_data, log, LABELS, "Riverside", charts=False)
    book = openpyxl.load_workbook(io.BytesIO(pack["xlsx"]))
    for sheet in book:
        assert sheet.freeze_panes == "A2", sheet.title
        assert all(c.font.bold for c in sheet[1] if c.value is not None)
        assert "_" not in "".join(str(c.value) for c in sheet[1])  # readable headers, no snake_case
    assert book.sheetnames == ["Headline", "Scorecard", "Patients in and out", "Cost by category (PMPM)", "Value map",
                               "Review log"]  # fmt: skip
    card = book["Scorecard"]
    head = [c.value for c in card[1]]
    values = [row[head.index("Value")] for row in card.iter_rows(min_row=2)]
    numbers = [c for c in values if isinstance(c.value, int | float)]
    assert numbers and all(c.number_format == "#,##0.0" for c in numbers)
    assert {c.value for c in values if isinstance(c.value, str)} <= {"suppressed"}
    assert card.column_dimensions["B"].width > 30  # the measure names are readable
    headline = {row[0].value: row[1] for row in book["Headline"].iter_rows(min_row=2)}
    cost = headline["Total cost PMPM"]
    assert isinstance(cost.value, float) and cost.number_format.startswith("$#,##0.00")
    assert cost.value == round(float(review_data.headline["cost_total_pmpm_usd"].iloc[-1]), 2)
    assert headline["Members"].number_format == "#,##0" and isinstance(headline["Members"].value, int)
    cats = book["Cost by category (PMPM)"]
    assert all(isinstance(r[1].value, float | int) and r[1].number_format.startswith("$") for r in cats.iter_rows(min_row=2)
               if r[1].value is not None)  # fmt: skip


def test_sheet_names_follow_excel_rules_and_read_as_words():
    from core.views.printable import PackTable, excel_sheet_name, tables_xlsx

    taken: set[str] = set()
    assert excel_sheet_name("Cost: by [team]/month?", taken) == "Cost by team month"
    assert excel_sheet_name("cost BY team month", taken) == "cost BY team month (2)"  # unique ignoring case
    long = excel_sheet_name("A very long table title that Excel would refuse", taken)
    assert len(long) <= 31 and long == "A very long table title that Ex"
    assert excel_sheet_name("history") == "History (table)" and excel_sheet_name("'quoted'") == "quoted"
    assert excel_sheet_name(" * ") == "Sheet"
    frame = pd.DataFrame({"Members": [1]})
    data = tables_xlsx([PackTable("subgroup_moves", "t", frame), PackTable("value_map", "t", frame),
                        PackTable("map", "t", frame, sheet="value MAP")])  # fmt: skip
    assert openpyxl.load_workbook(io.BytesIO(data)).sheetnames == ["Subgroup moves", "Value map", "value MAP (2)"]


def test_review_pack_csv_is_rounded_as_shown_and_html_is_slim(review_data, log):
    pack = review_pack.review_pack(review_data, log, LABELS, "Riverside", charts=False)
    for name, text in pack["csv"].items():
        for number in re.findall(r"(?<![\w.])-?\d+\.(\d+)(?![\w.])", text):
            assert len(number) <= 2, (name, number)
    card = pd.read_csv(io.StringIO(pack["csv"]["scorecard"]), keep_default_na=False)
    assert all(len(str(v).split(".")[-1]) <= 1 for v in card["Value"] if str(v) not in ("", "suppressed"))
    assert "<script" not in pack["html"] and len(pack["html"]) < 100_000


def test_pack_tables_render_by_kind():
    table = PackTable("t", "T", pd.DataFrame({"Metric": ["Cost", "Members", "Share"], "Value": [1234.567, 1276.33, 0.1234],
                                              "Change": [-12.345, "suppressed", None]}),
                      {"Value": "row", "Change": "row"}, ("usd2", "int", "pct"))  # fmt: skip
    assert table.shown()["Value"].tolist() == ["$1,234.57", "1,276", "12.3 %"]
    assert table.shown()["Change"].tolist() == ["-$12.35", "suppressed", "–"]
    assert table_csv(table).splitlines()[1:] == ["Cost,1234.57,-12.35", "Members,1276,suppressed", "Share,0.123,"]
    sheet = openpyxl.load_workbook(io.BytesIO(tables_xlsx([table])))["T"]
    assert [(c.value, c.number_format) for c in sheet["B"][1:]] == [(1234.57, "$#,##0.00;-$#,##0.00"), (1276, "#,##0"),
                                                                    (0.123, "0.0%")]  # fmt: skip
    assert shown_text(-0.0512, "change_pct") == "-5.1 %" and shown_text(float("nan"), "usd") == "–"


def test_every_xlsx_is_formatted_and_every_csv_rounded():
    frame = pd.DataFrame({"cost_usd": [10.123456], "rate": [3.14159], "count": [7], "name": ["=cmd"]})
    sheet = openpyxl.load_workbook(io.BytesIO(export_xlsx({"t": frame})))["t"]
    assert sheet.freeze_panes == "A2" and [c.number_format for c in sheet[2][:3]] == ["$#,##0.00;-$#,##0.00", "#,##0.0", "#,##0"]
    assert sheet["D2"].value == "'=cmd"
    assert csv_export(frame).splitlines()[1] == "10.12,3.1,7,'=cmd"
    assert csv_export(pd.DataFrame({"a": [None]}), na_rep="").splitlines()[1] == '""'
    assert (
        csv_export(pd.DataFrame({"risk_score": [1.23456], "x": [1.26]}), digits={"risk_score": 2}).splitlines()[1] == "1.23,1.3"
    )


def test_pdf_text_is_not_markup():
    table = PackTable("t", "T <b>", pd.DataFrame({"Team": ["<font size=40>A & B</font>"]}))
    _, text = _pdf(pack_pdf("Pack <i>x</i>", "sub", [], [table], {}))
    assert "<font size=40>A & B</font>" in text and "Pack <i>x</i>" in text


def test_print_figure_gives_each_line_its_own_style(review_data):
    fig = print_figure(review_pack.pack_figures(review_data)["Cost per member per month"])
    styles = {(t.line.color, t.line.dash) for t in fig.data}
    assert len(styles) == len(fig.data) == 3 and fig.layout.showlegend
    assert all(t.cliponaxis is False for t in fig.data)


def test_executive_pack_pdf_and_xlsx(sample_engine):
    figs = executive_pack.executive_figures(sample_engine, suppress=True)
    qtd, ytd = figs["periods"]
    assert ytd.months == ytd.end.month and 1 <= qtd.months <= 3
    data = executive_pack.executive_pack_pdf(figs, "Whole network", LABELS, "counts of 1-10 are suppressed")
    assert len(data) < 1_000_000
    reader, text = _pdf(data)
    assert 1 <= len(reader.pages) <= 4 and sum(len(p.images) for p in reader.pages) == 1
    for words in ("Executive pack: Whole network", "Total cost PMPM", "prior year", "year to date", "Members"):
        assert words in text
    book = openpyxl.load_workbook(io.BytesIO(executive_pack.executive_pack_xlsx(figs, LABELS)))
    assert book.sheetnames == ["Summary", "By subgroup"]
    summary = book["Summary"]
    assert summary.freeze_panes == "A2"
    head = [c.value for c in summary[1]]
    rows = {r[0].value: r for r in summary.iter_rows(min_row=2)}
    cost = rows["Total cost PMPM"]
    assert isinstance(cost[head.index("YTD")].value, float) and cost[head.index("YTD")].number_format.startswith("$#,##0.00")
    assert cost[head.index("YTD change %")].number_format == "+0.0%;-0.0%;0.0%"
    window = figs["windows"][("ytd", "current")]
    exact = window.loc[(window["subgroup"] == "all") & (window["metric"] == COST_TOTAL), "value"].iloc[0]
    assert cost[head.index("YTD")].value == round(exact, 2)
    # shared or aggregate-only: no published count of 1-10 (members per subgroup)
    subs = book["By subgroup"]
    members = [r[1].value for r in subs.iter_rows(min_row=2)]
    assert not [m for m in members if isinstance(m, int | float) and 1 <= m <= 10]


def test_executive_pack_of_a_practice_differs_from_the_network(sample_engine):
    network = executive_pack.executive_figures(sample_engine, suppress=False)
    practice = executive_pack.executive_figures(sample_engine, practice_id="PR01", suppress=False)
    pick = lambda f: f["windows"][("ytd", "current")].query("subgroup == 'all' and metric == 'member_months'")["value"].iloc[0]  # noqa: E731
    assert 0 < pick(practice) < pick(network)
    text = _pdf(executive_pack.executive_pack_pdf(practice, "Practice one", LABELS, page_size="a4", charts=False))[1]
    assert "Executive pack: Practice one" in text


def test_pack_scorecard_keeps_the_pages_counts_and_their_suppression(sample_engine, log):
    month = months_available(sample_engine)[-1]
    exact = review.review_data(sample_engine, "TM04", "complex", month, ("TM04",), True, False)
    quarter = review.review_data(sample_engine, "TM04", "complex", month, ("TM04",), True, True, "quarter")

    def sheet(data):
        return pd.read_excel(io.BytesIO(review_pack.review_pack(data, log, LABELS, "R", charts=False)["xlsx"]), "Scorecard")

    counts = sheet(exact)["Denominator"]
    assert pd.to_numeric(counts, errors="coerce").notna().any()  # exact counts: numbers
    assert not quarter.counts_shown
    assert set(sheet(quarter)["Denominator"].dropna()) <= {"suppressed"}  # window counts not published
    html = review_pack.review_pack(quarter, log, LABELS, "R", charts=False)["html"]
    assert "quarter to November" in html


def test_a_pack_without_a_browser_goes_out_without_charts_and_says_so(review_data, log, monkeypatch):
    import kaleido

    def no_browser(**_):
        raise RuntimeError("no Chromium")

    monkeypatch.setattr(kaleido, "start_sync_server", no_browser)
    monkeypatch.setattr(printable, "_RENDERED", OrderedDict())  # none kept from an earlier pack in this process
    reader, text = _pdf(review_pack.review_pack_pdf(review_data, log, LABELS, "Riverside"))
    assert sum(len(p.images) for p in reader.pages) == 0 and "charts could not be drawn" in text


def test_a_chart_drawn_once_is_kept_for_the_next_pack(monkeypatch):
    """Kaleido starts Chromium for each pack (about 5 s for a review pack's four charts): a figure
    already drawn in that format is not drawn again; another figure, another format or a failed
    drawing is. At most RENDERED_MAX images are kept, the least recently used dropped first."""
    import kaleido
    import plotly.graph_objects as go
    import plotly.io as pio

    drawn, sessions = [], []
    monkeypatch.setattr(kaleido, "start_sync_server", lambda **_: sessions.append(1))
    monkeypatch.setattr(kaleido, "stop_sync_server", lambda **_: None)
    monkeypatch.setattr(pio, "to_image", lambda fig, format, **_: drawn.append(fig.data[0].y[-1]) or f"{format}:{fig.data[0].y[-1]}".encode())
    monkeypatch.setattr(printable, "_RENDERED", OrderedDict())
    monkeypatch.setattr(printable, "RENDERED_MAX", 3)

    def figure(last: int):
        return go.Figure(go.Scatter(x=[1, 2], y=[0, last], mode="lines"))

    first = printable.render_figures({"a": figure(1), "b": figure(2)}, "png")
    assert first == {"a": b"png:1", "b": b"png:2"} and drawn == [1, 2] and len(sessions) == 1
    assert printable.render_figures({"a": figure(1), "b": figure(2)}, "png") == first and drawn == [1, 2]  # kept: no browser
    assert len(sessions) == 1
    assert printable.render_figures({"b": figure(2), "c": figure(3)}, "png") == {"b": b"png:2", "c": b"png:3"}
    assert drawn == [1, 2, 3]  # only the new one drawn
    assert printable.render_figures({"a": figure(1)}, "svg") == {"a": b"svg:1"} and drawn == [1, 2, 3, 1]  # another format
    assert len(printable._RENDERED) == 3  # a png dropped: the least recently used, a's
    assert printable.render_figures({"a": figure(1)}, "png") == {"a": b"png:1"} and drawn[-1] == 1  # b's png dropped now

    def broken(**_):
        raise RuntimeError("no Chromium")

    monkeypatch.setattr(kaleido, "start_sync_server", broken)
    assert printable.render_figures({"d": figure(4)}, "png") == {}  # the pack goes out without charts
    assert printable.render_figures({"c": figure(3)}, "png") == {"c": b"png:3"}  # a kept one still comes
    assert printable.render_figures({"b": figure(2)}, "png") == {}  # a dropped one is drawn again: it cannot be

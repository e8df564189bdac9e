"""Printable packs (the review pack, the executive pack): typed tables written as XLSX with numeric
cells, CSV rounded as shown, HTML tables and a PDF (reportlab), and plotly figures drawn as static
images (kaleido, which drives Chromium) for print. No Streamlit here.

A :class:`PackTable` holds numbers as numbers, ``suppressed`` (or ``not costed``) as text and NaN
where there is no data; each column has a kind (:data:`KINDS`) that gives its shown precision, its
spreadsheet number format and its text on paper. Every file goes through core/access/exports.py
(formula-safe).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import logging
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from core.access.exports import export_xlsx
from core.views.format import SUPPRESSED, csv_export, format_figure, usd

log = logging.getLogger(__name__)

# kind: (XLSX number format, decimals kept in files)
KINDS = {
    "usd": ("$#,##0;-$#,##0", 0),
    "usd2": ("$#,##0.00;-$#,##0.00", 2),
    "int": ("#,##0", 0),
    "num1": ("#,##0.0", 1),
    "num2": ("#,##0.00", 2),
    "pct": ("0.0%", 3),  # a share held as a fraction: 0.123 reads 12.3 %
    "change_pct": ("+0.0%;-0.0%;0.0%", 3),
    "text": (None, None),
}
PAGE_SIZES = {"letter": "Letter", "a4": "A4"}
# Print styles: colour-blind-safe colours (Okabe-Ito) with a dash and marker each, so lines stay
# apart in black and white too.
PRINT_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]
PRINT_DASHES = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot", "solid"]
PRINT_MARKERS = ["circle", "square", "diamond", "triangle-up", "x", "star", "cross"]
CHART_WIDTH, CHART_HEIGHT = 900, 440  # px at scale 1; PNGs are drawn at scale 2 (about 250 dpi on paper)


@dataclass(frozen=True)
class PackTable:
    """One table of a pack. ``name``: sheet and CSV name; ``title``: heading on paper; ``frame``:
    the values (numbers, text, NaN = no data); ``kinds``: column -> kind (:data:`KINDS`, default
    ``text``), or a tuple of kinds, one per row; a kind of ``row`` takes the kind from
    ``row_kinds`` (tables whose rows have different units); ``mark``: a column whose non-empty
    cells are marked on paper; ``paper``: the table as shown on paper (text, fewer columns:
    intervals as "low – high"), when it differs from ``frame`` shown cell by cell."""

    name: str
    title: str
    frame: pd.DataFrame
    kinds: dict[str, str] = field(default_factory=dict)
    row_kinds: tuple[str, ...] = ()
    mark: str | None = None
    paper: pd.DataFrame | None = None
    paper_numeric: tuple[str, ...] = ()  # columns of ``paper`` that hold figures
    sheet: str = ""  # the workbook's sheet name (default: ``name`` in words, "Cost categories")

    @property
    def sheet_title(self) -> str:
        """The sheet name a reader sees: ``sheet``, else ``name`` with spaces, capitalised."""
        return self.sheet or self.name.replace("_", " ").strip().capitalize()

    def kind(self, column: str, row: int) -> str:
        kind = self.kinds.get(column, "text")
        if isinstance(kind, tuple):
            return kind[row]
        return self.row_kinds[row] if kind == "row" else kind

    def rounded(self) -> pd.DataFrame:
        """The values rounded to their shown precision (what files hold)."""
        out = self.frame.copy().astype(object)
        for c, col in enumerate(out.columns):
            out[col] = pd.Series(
                [_round(v, self.kind(col, r)) for r, v in enumerate(out.iloc[:, c])], index=out.index, dtype=object
            )  # object: each cell keeps its own precision
        return out

    def shown(self) -> pd.DataFrame:
        """Every cell as the text shown on paper."""
        if self.paper is not None:
            return self.paper.astype(str)
        out = self.frame.copy().astype(object)
        for c, col in enumerate(out.columns):
            out[col] = pd.Series(
                [shown_text(v, self.kind(col, r)) for r, v in enumerate(out.iloc[:, c])], index=out.index, dtype=object
            )
        return out


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and not np.isnan(value)


def _round(value, kind: str):
    digits = KINDS.get(kind, (None, None))[1]
    if digits is None or not _is_number(value):
        return None if _missing(value) else value
    rounded = round(float(value), digits)
    return int(rounded) if digits == 0 else rounded


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT


def shown_text(value, kind: str) -> str:
    """A cell as text: numbers by their kind, text as it is, ``–`` where there is no data."""
    if isinstance(value, str):
        return value
    if _missing(value):
        return "–"
    if not _is_number(value):
        return str(value)
    v = float(value)
    if kind == "usd":
        return usd(v)
    if kind == "usd2":
        return usd(v, 2)
    if kind == "int":
        return format_figure(v, digits=0)
    if kind == "num2":
        return format_figure(v, digits=2)
    if kind == "pct":
        return f"{v * 100:.1f} %"
    if kind == "change_pct":
        return f"{v * 100:+.1f} %"
    return format_figure(v)


# --- files --------------------------------------------------------------------------------


SHEET_NAME_MAX = 31  # Excel's limit
SHEET_NAME_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")


def excel_sheet_name(title: str, taken: set[str] | None = None) -> str:
    """``title`` as an Excel sheet name: no square bracket, colon, asterisk, question mark or
    slash of either kind, no apostrophe at either end,
    at most 31 characters, not blank nor the reserved "History", and (with ``taken``, the names
    given so far, which it joins) unique ignoring case ("Scorecard (2)")."""
    name = SHEET_NAME_FORBIDDEN.sub(" ", title)
    name = re.sub(r"\s+", " ", name).strip().strip("'").strip()[:SHEET_NAME_MAX].strip() or "Sheet"
    if name.lower() == "history":
        name = "History (table)"
    if taken is not None:
        base, n = name, 2
        while name.lower() in {t.lower() for t in taken}:
            suffix = f" ({n})"
            name, n = base[: SHEET_NAME_MAX - len(suffix)].rstrip() + suffix, n + 1
        taken.add(name)
    return name


def tables_xlsx(tables: list[PackTable]) -> bytes:
    """The tables as one workbook (core.access.exports.export_xlsx): one sheet per table under its
    human name (:func:`excel_sheet_name` of ``sheet_title``), numbers as numeric cells at their
    shown precision with number formats, readable headers, widths and a frozen header row."""
    taken: set[str] = set()
    names = [excel_sheet_name(t.sheet_title, taken) for t in tables]
    sheets = {n: t.rounded() for n, t in zip(names, tables, strict=True)}
    formats = {}
    for sheet_name, t in zip(names, tables, strict=True):
        cols = {}
        for col in t.frame.columns:
            kinds = {t.kind(col, r) for r in range(len(t.frame))} or {"text"}
            if len(kinds) == 1 and KINDS.get(next(iter(kinds)), (None,))[0]:
                cols[col] = KINDS[next(iter(kinds))][0]
            elif len(kinds) > 1:  # per-row kinds: one format per row
                cols[col] = [KINDS.get(t.kind(col, r), (None,))[0] for r in range(len(t.frame))]
        formats[sheet_name] = cols
    return export_xlsx(sheets, number_formats=formats)


def table_csv(table: PackTable) -> str:
    """One table as CSV: rounded as shown (core.views.format.csv_export), no-data cells empty."""
    return csv_export(table.rounded(), na_rep="")


def _numeric(table: PackTable, column: str) -> bool:
    """Whether a column on paper holds figures (right-aligned, never wrapped)."""
    if column not in table.kinds:
        return column in table.paper_numeric
    return table.kinds[column] != "text"


def html_table(table: PackTable) -> str:
    frame = table.shown()
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    numeric = {c for c in frame.columns if _numeric(table, c)}
    body = []
    for row in frame.itertuples(index=False):
        cells = []
        for col, text in zip(frame.columns, row, strict=True):
            text = "" if text == "–" and col == table.mark else text
            cls = ["sig"] if col == table.mark and text else []
            cls += ["n"] if col in numeric else []
            attr = f' class="{" ".join(cls)}"' if cls else ""
            cells.append(f"<td{attr}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="{html.escape(table.name)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


PACK_CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin:0}h2{font-size:16px;margin:18px 0 6px;border-bottom:1px solid #ddd}
.sub{color:#666;margin:4px 0 12px}.kpis{display:flex;flex-wrap:wrap;gap:10px}
.kpi{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:130px}
.kpi .l{font-size:12px;color:#666}.kpi .v{font-size:20px;font-weight:600}.kpi .d{font-size:12px;color:#444}
table{border-collapse:collapse;font-size:12px;width:100%}th,td{border:1px solid #ddd;padding:3px 6px;text-align:left}
td.n{text-align:right;white-space:nowrap}th{background:#f3f3f3}td.sig{color:#b03a2e;font-weight:600}
img.chart{width:100%;max-width:900px;height:auto}@media print{.chart{page-break-inside:avoid}}"""


def pack_html(title: str, subtitle: str, tiles: list[tuple[str, str, str]], tables: list[PackTable],
              images: dict[str, bytes], note: str = "", lines: tuple[str, ...] = ()) -> str:  # fmt: skip
    """A self-contained HTML page: inline CSS, headline tiles (label, value, change), the tables and
    the charts as SVG images (``images``: title -> SVG bytes), no scripts."""
    tile_html = "".join(f'<div class="kpi"><div class="l">{html.escape(label)}</div><div class="v">{html.escape(value)}</div>'
                        f'<div class="d">{html.escape(delta)}</div></div>' for label, value, delta in tiles)  # fmt: skip
    body = "".join(f"<h2>{html.escape(t.title)}</h2>{html_table(t)}" for t in tables)
    charts = "".join(f'<div class="chart"><h2>{html.escape(name)}</h2><img class="chart" alt="{html.escape(name)}" '
                     f'src="data:image/svg+xml;base64,{base64.b64encode(svg).decode()}"></div>'
                     for name, svg in images.items())  # fmt: skip
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{PACK_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<p class="sub">{html.escape(subtitle)}{" · " + html.escape(note) if note else ""}</p>'
            f'<div class="kpis" id="headline">{tile_html}</div>{_lines_html(lines)}{body}{charts}</body></html>')  # fmt: skip


def _lines_html(lines: tuple[str, ...]) -> str:
    return f'<ul id="summary">{"".join(f"<li>{html.escape(line)}</li>" for line in lines)}</ul>' if lines else ""


def pack_pdf(title: str, subtitle: str, tiles: list[tuple[str, str, str]], tables: list[PackTable],
             images: dict[str, bytes], note: str = "", page_size: str = "letter", landscape: bool = False,
             lines: tuple[str, ...] = ()) -> bytes:  # fmt: skip
    """The pack as a PDF (reportlab): title, headline tiles, the tables (header rows repeat on
    each page, long text wraps) and the charts (``images``: title -> PNG bytes), page numbers
    in the footer. ``page_size``: ``letter`` or ``a4``; ``landscape`` for wide tables; ``lines``:
    sentences under the headline (the review's "what moved")."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, LETTER
    from reportlab.lib.pagesizes import landscape as turned
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import inch
    from reportlab.platypus import Image, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    if page_size not in PAGE_SIZES:
        raise ValueError(f"page size must be one of {', '.join(PAGE_SIZES)}")
    size = LETTER if page_size == "letter" else A4
    size = turned(size) if landscape else size
    margin = 0.6 * inch
    width = size[0] - 2 * margin
    styles = getSampleStyleSheet()
    h1 = ParagraphStyle("h1", parent=styles["Title"], fontSize=16, leading=20, alignment=0, spaceAfter=2)
    h2 = ParagraphStyle("h2", parent=styles["Heading2"], fontSize=11.5, leading=14, spaceBefore=10, spaceAfter=4)
    sub = ParagraphStyle("sub", parent=styles["Normal"], fontSize=8.5, leading=11, textColor=colors.HexColor("#555555"))
    cell = ParagraphStyle("cell", parent=styles["Normal"], fontSize=7.5, leading=9)
    head = ParagraphStyle("head", parent=cell, fontName="Helvetica-Bold")
    right = ParagraphStyle("right", parent=cell, alignment=2)
    sig = ParagraphStyle("sig", parent=cell, textColor=colors.HexColor("#B03A2E"), fontName="Helvetica-Bold")

    def p(text, style=cell):
        return Paragraph(html.escape(str(text)), style)

    story = [Paragraph(html.escape(title), h1), p(subtitle + (" · " + note if note else ""), sub), Spacer(1, 8)]
    if tiles:
        per_row = 4
        rows = []
        for i in range(0, len(tiles), per_row):
            chunk = tiles[i : i + per_row]
            rows.append([[p(label, sub), Paragraph(f"<b>{html.escape(value)}</b>", ParagraphStyle("v", parent=cell, fontSize=11,
                          leading=14)), p(delta, sub)] for label, value, delta in chunk] + [""] * (per_row - len(chunk)))  # fmt: skip
        grid = Table(rows, colWidths=[width / per_row] * per_row)
        grid.setStyle(TableStyle([("BOX", (0, 0), (-1, -1), 0.5, colors.HexColor("#DDDDDD")),
                                  ("INNERGRID", (0, 0), (-1, -1), 0.5, colors.HexColor("#DDDDDD")),
                                  ("VALIGN", (0, 0), (-1, -1), "TOP")]))  # fmt: skip
        story.append(grid)
    for line in lines:
        story.append(
            Paragraph("• " + html.escape(line), ParagraphStyle("line", parent=cell, fontSize=9, leading=12, spaceBefore=3))
        )
    for t in tables:
        frame = t.shown()
        numeric = [_numeric(t, c) for c in frame.columns]
        data = [[p(c, head) for c in frame.columns]]
        for row in frame.itertuples(index=False):
            data.append([p("" if (c == t.mark and v == "–") else v, sig if c == t.mark else right if num else cell)
                         for c, v, num in zip(frame.columns, row, numeric, strict=True)])  # fmt: skip
        if len(frame) == 0:
            data.append([p("No rows.")] + [""] * (len(frame.columns) - 1))
        widths = _column_widths(frame, width, numeric)
        grid = Table(data, colWidths=widths, repeatRows=1)
        grid.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#CCCCCC")),
                                  ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#F0F0F0")),
                                  ("VALIGN", (0, 0), (-1, -1), "TOP"), ("TOPPADDING", (0, 0), (-1, -1), 2),
                                  ("LEFTPADDING", (0, 0), (-1, -1), 3), ("RIGHTPADDING", (0, 0), (-1, -1), 3),
                                  ("BOTTOMPADDING", (0, 0), (-1, -1), 2)]))  # fmt: skip
        story += [Paragraph(html.escape(t.title), h2), grid]
    for name, png in images.items():
        chart_width = min(width, (size[1] - 2 * margin - 40) * CHART_WIDTH / CHART_HEIGHT)  # one chart fits a page
        img = Image(io.BytesIO(png), width=chart_width, height=chart_width * CHART_HEIGHT / CHART_WIDTH)
        story.append(KeepTogether([Paragraph(html.escape(name), h2), img]))

    def footer(canvas, doc):
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.setFillColor(colors.HexColor("#666666"))
        canvas.drawString(margin, margin / 2, title[:110])
        canvas.drawRightString(size[0] - margin, margin / 2, f"Page {doc.page}")
        canvas.restoreState()

    buffer = io.BytesIO()
    doc = SimpleDocTemplate(buffer, pagesize=size, leftMargin=margin, rightMargin=margin, topMargin=margin,
                            bottomMargin=margin, title=title, author="Care-team value scorecards")  # fmt: skip
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return buffer.getvalue()


def _column_widths(frame: pd.DataFrame, width: float, numeric: list[bool]) -> list[float]:
    """Column widths in points that share ``width``: a number never wraps (its column is as wide
    as its longest figure, or its header's longest word), text columns share the rest by their
    length and wrap at words."""
    if len(frame.columns) == 0:
        return []
    from reportlab.pdfbase.pdfmetrics import stringWidth

    pad = 7.0  # 3 pt padding a side, and a little air

    def text_width(text: str, bold: bool = False) -> float:
        return stringWidth(text, "Helvetica-Bold" if bold else "Helvetica", 7.5)

    floor, wish = [], []
    for col, num in zip(frame.columns, numeric, strict=True):
        values = [str(v) for v in frame[col]]
        head_word = max((text_width(w, True) for w in str(col).split()), default=0.0)
        if num:
            need = max([head_word, *(text_width(v) for v in values)]) + pad
            floor.append(need)
            wish.append(need)
        else:
            words = max((text_width(w) for v in values for w in v.split()), default=0.0)
            floor.append(max(head_word, words, 12.0) + pad)
            wish.append(min(max([text_width(str(col), True), *(text_width(v) for v in values)]), 300.0) + pad)
    if sum(floor) >= width:
        return [f * width / sum(floor) for f in floor]
    if sum(wish) <= width:
        return [w * width / sum(wish) for w in wish]
    spare = width - sum(floor)
    extra = [w - f for w, f in zip(wish, floor, strict=True)]
    return [f + e * spare / sum(extra) for f, e in zip(floor, extra, strict=True)]


# --- charts -------------------------------------------------------------------------------

_KALEIDO = threading.Lock()  # one Chromium session at a time (kaleido's sync server is process-wide)
RENDERED_MAX = 64  # images kept (a review pack's PNG about 70 KB)
_RENDERED: OrderedDict[tuple[str, str], bytes] = OrderedDict()  # (sha256 of the figure's JSON, format) -> image; under _KALEIDO


def print_figure(fig, title: str = ""):
    """A copy of a plotly figure styled for paper: white template, larger type, room for every
    label (no clipped text), the legend under the plot, and each line its own colour, dash and
    marker."""
    import plotly.graph_objects as go

    out = go.Figure(fig)
    out.update_layout(template="plotly_white", paper_bgcolor="white", plot_bgcolor="white", font=dict(size=14, color="#222222"), title=dict(text=title or None),
                      margin=dict(l=80, r=40, t=50 if title else 30, b=90), showlegend=len(out.data) > 1
                      and any(t.name for t in out.data), legend=dict(orientation="h", yanchor="top", y=-0.18, x=0),
                      width=CHART_WIDTH, height=CHART_HEIGHT)  # fmt: skip
    out.update_xaxes(automargin=True, showline=True, linecolor="#888888", ticks="outside")
    out.update_yaxes(automargin=True, showline=True, linecolor="#888888", ticks="outside")
    lines = 0
    for trace in out.data:
        if trace.type != "scatter":
            continue
        trace.cliponaxis = False
        if trace.mode and "text" in trace.mode:
            trace.textfont = dict(size=12)
        if trace.mode and "lines" in trace.mode:
            i = lines % len(PRINT_COLOURS)
            colour = (
                trace.line.color
                if len([t for t in out.data if t.mode and "lines" in t.mode]) == 1 and trace.line.color
                else PRINT_COLOURS[i]
            )
            trace.line = dict(color=colour, dash=PRINT_DASHES[i], width=2.5)
            trace.marker = dict(color=colour, symbol=PRINT_MARKERS[i], size=8)
            lines += 1
    _pad_ranges(out)
    return out


def _pad_ranges(fig) -> None:
    """Widen the axes of scatter plots with text labels by 8 % so labels at the edge stay inside."""
    xs, ys = [], []
    for t in fig.data:
        if t.type == "scatter" and t.mode and "text" in t.mode and t.x is not None and t.y is not None:
            xs += [float(v) for v in t.x if _is_number(v)]
            ys += [float(v) for v in t.y if _is_number(v)]
    for values, axis in ((xs, fig.update_xaxes), (ys, fig.update_yaxes)):
        if values:
            lo, hi = min(values), max(values)
            pad = (hi - lo) * 0.08 or abs(hi) * 0.08 or 1.0
            axis(range=[lo - pad, hi + pad * 1.5])


def render_figures(figures: dict, fmt: str = "png") -> dict[str, bytes]:
    """Each figure (title -> plotly figure, already :func:`print_figure`-styled or not) as a static
    image: ``png`` (scale 2, for PDF) or ``svg`` (for HTML). Kaleido drives Chromium (one session
    for the figures not drawn yet, about 5 s for a review pack's four on this machine); when it
    cannot start the result is empty and the pack is made without charts (the reason is logged).

    Images are kept by the figure's content and format (:data:`RENDERED_MAX` of them, the least
    recently used dropped first): the same pack clicked again, in another paper size or by another
    user of the team, draws nothing. Only a figure with the same data and styling gives the same
    key, so a kept image goes to no one who did not make that figure."""
    if not figures:
        return {}
    import kaleido
    import plotly.io as pio

    styled = {name: print_figure(fig) for name, fig in figures.items()}
    keys = {name: (hashlib.sha256(fig.to_json().encode()).hexdigest(), fmt) for name, fig in styled.items()}
    with _KALEIDO, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        missing = {name: fig for name, fig in styled.items() if keys[name] not in _RENDERED}
        if missing:
            try:
                kaleido.start_sync_server(silence_warnings=True)
                try:
                    drawn = {name: pio.to_image(fig, format=fmt, width=CHART_WIDTH, height=CHART_HEIGHT, scale=2 if fmt == "png" else 1)
                             for name, fig in missing.items()}  # fmt: skip
                finally:
                    kaleido.stop_sync_server(silence_warnings=True)
            except Exception as exc:  # no Chromium, a crashed browser: the pack goes out without charts
                log.warning("charts not drawn for a pack: %s", exc)
                return {}
            for name, image in drawn.items():
                _RENDERED[keys[name]] = image
        images = {}
        for name in styled:
            _RENDERED.move_to_end(keys[name])
            images[name] = _RENDERED[keys[name]]
        while len(_RENDERED) > RENDERED_MAX:
            _RENDERED.popitem(last=False)
        return images


NO_CHARTS = "charts could not be drawn (no browser for static images)"


def with_charts_note(note: str, wanted: bool, images: dict) -> str:
    """``note`` with :data:`NO_CHARTS` added when charts were wanted and none could be drawn."""
    return "; ".join(n for n in (note, NO_CHARTS if wanted and not images else "") if n)


def none_if_missing(value):
    """NaN and None as None (a table cell with no data)."""
    return None if _missing(value) else value


SUPPRESSED_TEXT = SUPPRESSED

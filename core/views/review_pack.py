"""The review pack of the monthly value review: its tables, a self-contained HTML one-pager,
an XLSX workbook and CSV files. Aggregates only (no patient rows), so it can be handed out;
the figures follow the suppression policy of the :class:`~core.views.review.ReviewData` given.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from core.access.exports import export_csv, export_xlsx
from core.views.format import format_figure, usd
from core.views.review import ReviewData, headline_metrics, payment_summary

PACK_CSS = """body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0}h2{font-size:16px;margin:18px 0 6px;border-bottom:1px solid #ddd}
.sub{color:#666;margin:4px 0 12px}.kpis{display:flex;flex-wrap:wrap;gap:10px}
.kpi{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:130px}
.kpi .l{font-size:12px;color:#666}.kpi .v{font-size:20px;font-weight:600}.kpi .d{font-size:12px;color:#444}
table{border-collapse:collapse;font-size:12px;width:100%}th,td{border:1px solid #ddd;padding:3px 6px;text-align:left}
th{background:#f3f3f3}td.sig{color:#b03a2e;font-weight:600}@media print{.chart{page-break-inside:avoid}}"""


def _html_table(frame: pd.DataFrame, table_id: str, mark_column: str | None = None) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = []
        for col, value in zip(frame.columns, row, strict=True):
            text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
            cls = ' class="sig"' if col == mark_column and text else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


PACK_TABLES = ("headline", "scorecard", "subgroup_moves", "cost_categories", "value_map", "review_log")


def pack_tables(data: ReviewData, log: pd.DataFrame, labels: dict[str, str]) -> dict[str, pd.DataFrame]:
    """The pack's tables (aggregates only): headline (grain: metric), scorecard (measure), moves
    (direction, other subgroup), cost_categories (category), value_map (team), review_log (entry):
    the names of :data:`PACK_TABLES`, in that order."""
    metrics = pd.DataFrame([{"Metric": m["label"], "Value": m["value"], "Change vs last month": m["delta"] or ""}
                            for m in headline_metrics(data)])  # fmt: skip
    pay = payment_summary(data)
    for label, key in (("Bundled payment (USD)", "payment_usd"), (f"Cost, {pay['cost_basis']} (USD)", "cost_usd"),
                       ("Margin (USD)", "margin_usd")):  # fmt: skip
        metrics.loc[len(metrics)] = [label, usd(pay[key]), ""]
    moves = data.moves["summary"].assign(other_subgroup=lambda f: f["other_subgroup"].map(lambda s: labels.get(s, s)))
    moves["patients"] = [format_figure(v, pd.isna(v), 0) for v in moves["patients"]]
    cats = data.drivers["by_category"].copy()
    for c in ("pmpm_usd", "previous_pmpm_usd", "change_pmpm_usd"):
        cats[c] = [format_figure(v, digits=2) for v in cats[c]]
    vm = data.value_map.loc[data.value_map["month"] == data.month, ["team", "outcome_index", "cost_pmpm_usd", "quadrant"]].copy()
    for c in ("outcome_index", "cost_pmpm_usd"):
        vm[c] = [format_figure(v) for v in vm[c]]
    log_out = log[["month", "kind", "text", "owner", "due_date", "status"]].astype(str).replace({"None": "", "NaT": ""})
    return {"headline": metrics, "scorecard": data.scorecard.drop(columns="measure_id"), "subgroup_moves": moves,
            "cost_categories": cats, "value_map": vm, "review_log": log_out}  # fmt: skip


def pack_html(data: ReviewData, tables: dict[str, pd.DataFrame], title: str, subtitle: str, figures: dict,
              note: str = "counts of 1-10 are suppressed") -> str:
    """A self-contained HTML one-pager: inline CSS, headline tiles, scorecard and tables, and the
    plotly figures inline (plotly.js embedded once, in the first chart)."""
    tiles = "".join(
        f'<div class="kpi"><div class="l">{html.escape(r.Metric)}</div><div class="v">{html.escape(r.Value)}</div>'
        f'<div class="d">{html.escape(r._2)}</div></div>' for r in tables["headline"].itertuples(index=False))
    charts = []
    for i, (name, fig) in enumerate(figures.items()):
        charts.append(f'<div class="chart"><h2>{html.escape(name)}</h2>'
                      + fig.to_html(full_html=False, include_plotlyjs=(i == 0), default_width="100%", default_height="360px")
                      + "</div>")  # fmt: skip
    sections = [("Scorecard by tier", "scorecard", "Significant"), ("Patients entering and leaving the subgroup", "subgroup_moves", None),
                ("Cost by category, per member per month (USD)", "cost_categories", None),
                ("Value map: teams of this subgroup", "value_map", None), ("Review log", "review_log", None)]  # fmt: skip
    body = "".join(f"<h2>{html.escape(h)}</h2>{_html_table(tables[t], t, mark)}" for h, t, mark in sections)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{PACK_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f'<p class="sub">{html.escape(subtitle)} · generated {stamp} · {html.escape(note)}</p>'
            f'<div class="kpis" id="headline">{tiles}</div>{body}{"".join(charts)}</body></html>')  # fmt: skip


def pack_xlsx(tables: dict[str, pd.DataFrame]) -> bytes:
    """The pack's tables as one workbook, one sheet per table (openpyxl)."""
    return export_xlsx(tables)


def pack_figures(data: ReviewData) -> dict:
    """The charts of the pack (plotly figures from core.views.charts)."""
    from core.views import charts

    now = data.value_map.loc[data.value_map["month"] == data.month]
    return {"Cost per member per month": charts.review_cost_trend_figure(data.headline),
            "Value map: this team against peer teams": charts.review_value_map_figure(now, data.team_id),
            "Value map trend of this team": charts.review_value_trend_figure(data.value_map, data.team_id)}  # fmt: skip


def review_pack(data: ReviewData, log: pd.DataFrame, labels: dict[str, str], team_label: str, charts: bool = True,
                note: str = "counts of 1-10 are suppressed") -> dict:
    """The review pack of a selection: ``html`` (str, self-contained one-pager), ``xlsx`` (bytes)
    and ``csv`` (table name -> CSV text). Aggregates only. ``charts=False`` leaves the plotly
    figures (and plotly.js, about 4.7 MB) out of the HTML. ``note``: the suppression policy the
    figures of ``data`` follow (core.access.suppression), printed under the title."""
    tables = pack_tables(data, log, labels)
    title = f"Monthly value review: {team_label}"
    subtitle = f"{labels.get(data.subgroup, data.subgroup)} · {data.month.strftime('%B %Y')}"
    figures = pack_figures(data) if charts else {}
    return {"html": pack_html(data, tables, title, subtitle, figures, note), "xlsx": pack_xlsx(tables),
            "csv": {name: export_csv(frame) for name, frame in tables.items()}}  # fmt: skip

"""The executive pack: a network, practice or team, quarter to date and year to date against the
same months of the prior year, as PDF and XLSX (rendering: core.views.printable). No Streamlit.

Figures are the trends page's (core.views.cells_read: cells summed in SQL, the CMS cell-size rule
of core/metrics/scorecard.py): total, internal and external cost PMPM, average members a month
and the executive key outcomes (core/config/executive.toml), for all subgroups together and, for
members and total cost, per subgroup (with complementary suppression against the All row).
Aggregates only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from core.derive.costs import COST_TOTAL
from core.derive.measures import load_measures
from core.metrics import runout
from core.metrics.scorecard import figure_counts, hide_complements
from core.store.months import add_months, months_between
from core.views.cells_read import ALL, COST_LABELS, SUMS, add_figures, cell_sums_by, last_cell_month, window_sums
from core.views.executive_settings import load_executive_settings
from core.views.format import SUPPRESSED
from core.views.printable import PackTable, pack_pdf, render_figures, shown_text, tables_xlsx, with_charts_note

MEMBERS = "member_months"
BLANK = ["numerator", "denominator", "sum_sq", "patients", "value", "ci_low", "ci_high"]


@dataclass(frozen=True)
class Period:
    """A window of months ending ``end`` and the same months a year earlier."""

    key: str  # qtd | ytd
    label: str  # "Quarter to date (Oct-Nov 2026)"
    end: date
    months: int

    @property
    def prior_end(self) -> date:
        return add_months(self.end, -12)


def periods(last: date) -> tuple[Period, Period]:
    """Quarter to date and year to date of ``last`` (the last month with cells)."""
    q_first = date(last.year, 3 * ((last.month - 1) // 3) + 1, 1)
    q_months = last.month - q_first.month + 1

    def span(first: date) -> str:
        return f"{first:%b}–{last:%b %Y}" if first != last else f"{last:%b %Y}"

    return (Period("qtd", f"Quarter to date ({span(q_first)})", last, q_months),
            Period("ytd", f"Year to date ({span(date(last.year, 1, 1))})", last, last.month))  # fmt: skip


def _window_figures(both: pd.DataFrame, end: date, months: int, catalogue, suppress: bool) -> pd.DataFrame:
    """Figures of one window per subgroup (and All) and metric, with complementary suppression of
    the subgroups against the All row of each metric."""
    sums = window_sums(both, ["subgroup"], end, months, catalogue)
    figures = add_figures(sums, catalogue, suppress, months)
    if suppress and len(figures):
        counts = figure_counts(figures["kind"], sums["numerator"], sums["denominator"], sums["patients"])
        figures = hide_complements(figures, counts, (figures["subgroup"] != ALL).to_numpy(), ["metric"], BLANK)
    members = figures["metric"] == MEMBERS  # member-months: the sum, shown as the average a month
    figures.loc[members, "value"] = figures.loc[members, "numerator"] / months
    return figures


def executive_figures(engine: Engine, team_ids: tuple[str, ...] | None = None, practice_id: str | None = None,
                      team_id: str | None = None, suppress: bool = True, last: date | None = None) -> dict:  # fmt: skip
    """The pack's figures: ``periods`` (qtd, ytd), ``windows`` ((period key, "current"|"prior") ->
    figures per subgroup and metric: value, suppressed), ``monthly`` (All subgroups, total cost
    PMPM per month of this year and the prior year: month, year, value, suppressed), ``names``
    (metric -> label) and ``claims_note`` ('' when the claims of these months are complete).
    Empty ``periods`` when there are no cells."""
    last = last or last_cell_month(engine)
    if last is None:
        return {"periods": (), "windows": {}, "monthly": pd.DataFrame(), "names": {}, "claims_note": ""}
    catalogue = load_measures()
    settings = load_executive_settings()
    metrics = [*COST_LABELS, MEMBERS, *settings.key_outcomes]
    first = date(last.year - 1, 1, 1)
    sums = cell_sums_by(engine, ["subgroup"], metrics, first, last, team_ids, practice_id, team_id)
    total = sums.groupby(["metric", "month"], as_index=False)[SUMS].sum().assign(subgroup=ALL)
    both = pd.concat([sums, total], ignore_index=True)
    pers = periods(last)
    windows = {}
    for p in pers:
        windows[(p.key, "current")] = _window_figures(both, p.end, p.months, catalogue, suppress)
        windows[(p.key, "prior")] = _window_figures(both, p.prior_end, p.months, catalogue, suppress)
    monthly = add_figures(total.loc[total["metric"] == COST_TOTAL], catalogue, suppress)
    monthly = monthly.loc[[m.year in (last.year, last.year - 1) and m.month <= last.month for m in monthly["month"]]]
    monthly = monthly.assign(year=[m.year for m in monthly["month"]])[["month", "year", "value", "suppressed"]]
    names = {m.id: m.name for m in catalogue.measures} | COST_LABELS | {MEMBERS: "Members (average a month)"}
    units = {m.id: m.unit for m in catalogue.measures} | dict.fromkeys(COST_LABELS, "USD per member per month")
    units[MEMBERS] = "members"
    months = [*months_between(date(last.year - 1, 1, 1), add_months(date(last.year - 1, 1, 1), last.month - 1)),
              *months_between(date(last.year, 1, 1), last)]  # fmt: skip
    note = runout.incomplete_note(runout.claims_completeness(engine, months))
    return {"periods": pers, "windows": windows, "monthly": monthly.reset_index(drop=True), "names": names, "units": units,
            "metrics": metrics, "claims_note": note}  # fmt: skip


def _cell(figures: pd.DataFrame, subgroup: str, metric: str):
    """A figure's value, ``suppressed``, or None (no data)."""
    row = figures.loc[(figures["subgroup"] == subgroup) & (figures["metric"] == metric)]
    if row.empty:
        return None
    if bool(row["suppressed"].iloc[0]):
        return SUPPRESSED
    value = row["value"].iloc[0]
    return None if pd.isna(value) else float(value)


def _change(now, before) -> tuple:
    if not isinstance(now, float) or not isinstance(before, float):
        return None, None
    return now - before, ((now - before) / abs(before) if before else None)


def executive_tables(figs: dict, labels: dict[str, str]) -> list[PackTable]:
    """``summary`` (grain: metric, All subgroups) and ``by_subgroup`` (grain: subgroup): this
    period, the same months a year earlier and the change, quarter to date and year to date."""
    if not figs["periods"]:
        return []
    w = figs["windows"]
    rows, kinds = [], []
    for metric in figs["metrics"]:
        row = {"Metric": figs["names"].get(metric, metric), "Unit": figs["units"].get(metric, "")}
        for p in figs["periods"]:
            now, before = _cell(w[(p.key, "current")], ALL, metric), _cell(w[(p.key, "prior")], ALL, metric)
            diff, rel = _change(now, before)
            short = p.key.upper()
            row |= {f"{short}": now, f"{short} prior year": before, f"{short} change": diff, f"{short} change %": rel}
        rows.append(row)
        kinds.append("usd2" if metric in COST_LABELS else "int" if metric == MEMBERS else "num1")
    summary = pd.DataFrame(rows)
    summary_kinds = {c: ("change_pct" if c.endswith("%") else "row") for c in summary.columns[2:]}
    present = {s for f in w.values() for s in f["subgroup"]} - {ALL}
    subgroups = [s for s in labels if s in present] + sorted(present - set(labels))  # the rules file's order
    sub_rows = []
    for s in subgroups:
        row = {"Subgroup": labels.get(s, s)}
        for p in figs["periods"]:
            short = p.key.upper()
            now, before = _cell(w[(p.key, "current")], s, COST_TOTAL), _cell(w[(p.key, "prior")], s, COST_TOTAL)
            row |= {f"{short} members (average a month)": _cell(w[(p.key, "current")], s, MEMBERS),
                    f"{short} total cost PMPM": now, f"{short} total cost PMPM prior year": before,
                    f"{short} change %": _change(now, before)[1]}  # fmt: skip
        sub_rows.append(row)
    by_subgroup = pd.DataFrame(sub_rows)
    sub_kinds = {c: "int" if "members" in c else "usd2" if "PMPM" in c else "change_pct" for c in by_subgroup.columns[1:]}
    legend = "; ".join(p.label.replace("Quarter to date", "QTD").replace("Year to date", "YTD") for p in figs["periods"])
    return [PackTable("summary", f"All subgroups: {legend}, against the same months a year earlier", summary, summary_kinds,
                      tuple(kinds)),
            PackTable("by_subgroup", "Members and total cost per member per month by subgroup", by_subgroup, sub_kinds)]  # fmt: skip


def executive_chart(figs: dict):
    """Total cost PMPM per month, this year against the prior year (one line each)."""
    import plotly.graph_objects as go

    monthly = figs["monthly"]
    fig = go.Figure()
    for year in sorted(set(monthly["year"])):
        part = monthly.loc[monthly["year"] == year].sort_values("month")
        fig.add_trace(go.Scatter(x=[m.strftime("%b") for m in part["month"]], y=part["value"].where(~part["suppressed"], np.nan),
                                 mode="lines+markers", name=str(year)))  # fmt: skip
    fig.update_layout(yaxis_title="Total cost, USD per member per month", xaxis_title="", legend_title_text="")
    return fig


def _tiles(figs: dict) -> list[tuple[str, str, str]]:
    out = []
    for p in figs["periods"]:
        for metric, kind in ((COST_TOTAL, "usd2"), (MEMBERS, "int")):
            now = _cell(figs["windows"][(p.key, "current")], ALL, metric)
            before = _cell(figs["windows"][(p.key, "prior")], ALL, metric)
            rel = _change(now, before)[1]
            name = "Total cost PMPM" if metric == COST_TOTAL else "Members a month"
            out.append((f"{name}, {p.key.upper()}", shown_text(now, kind),
                        "" if rel is None else f"{shown_text(rel, 'change_pct')} vs prior year"))  # fmt: skip
    return out


def _title(unit_label: str, figs: dict) -> tuple[str, str]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    spans = " and ".join(p.label[0].lower() + p.label[1:] for p in figs["periods"]) or "no data"
    return f"Executive pack: {unit_label}", f"All subgroups, {spans}, against the same months a year earlier · generated {stamp}"


def executive_pack_pdf(figs: dict, unit_label: str, labels: dict[str, str], note: str = "", page_size: str = "letter",
                       charts: bool = True) -> bytes:  # fmt: skip
    """The executive pack as a PDF (Letter or A4) from :func:`executive_figures`."""
    title, subtitle = _title(unit_label, figs)
    notes = "; ".join(n for n in (note, figs["claims_note"]) if n)
    images = render_figures({"Total cost per member per month, this year against the prior year": executive_chart(figs)},
                            "png") if charts and figs["periods"] else {}  # fmt: skip
    notes = with_charts_note(notes, charts and bool(figs["periods"]), images)
    return pack_pdf(title, subtitle, _tiles(figs), executive_tables(figs, labels), images, notes, page_size)


def executive_pack_xlsx(figs: dict, labels: dict[str, str]) -> bytes:
    """The executive pack's tables as a workbook (numeric cells, number formats, frozen headers)."""
    tables = executive_tables(figs, labels)
    if not tables:
        return tables_xlsx([PackTable("summary", "No data", pd.DataFrame({"Note": ["No cells yet: import data first."]}))])
    return tables_xlsx(tables)

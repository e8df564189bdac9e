"""The review pack of the monthly value review: its tables, a PDF (Letter or A4), a slim
self-contained HTML one-pager (charts as SVG images, no scripts), an XLSX workbook with numeric
cells and CSV files rounded as shown (rendering: core.views.printable). Aggregates only (no
patient rows), so it can be handed out; the figures follow the suppression policy of the :class:`~core.views.review.ReviewData` given.
"""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from core.derive import costs
from core.store.months import WINDOW_LABELS
from core.views.format import SUPPRESSED
from core.views.printable import (
    PackTable,
    none_if_missing,
    pack_html,
    pack_pdf,
    render_figures,
    table_csv,
    tables_xlsx,
    with_charts_note,
)
from core.views.review import (
    HeadlineMetric,
    ReviewData,
    headline_metrics,
    load_review_settings,
    payment_summary,
)


def _kind(spec: HeadlineMetric) -> str:
    if spec.usd:
        return "usd2" if spec.digits else "usd"
    return "int" if spec.digits == 0 else "num1"


def _headline(data: ReviewData) -> PackTable:
    """Headline figures (grain: metric) as numbers: this month and the change vs last month;
    ``suppressed`` / ``not costed`` as text."""
    h = data.headline
    cur, prev = h.iloc[-1], h.iloc[-2]
    specs = [*load_review_settings().headline,
             *(HeadlineMetric(m, name, False, 1, direction == "lower") for m, name, _, direction in data.key_outcomes)]  # fmt: skip
    rows, kinds = [], []
    for spec in specs:
        col = spec.column
        sup = bool(cur[f"{col}_suppressed"] if f"{col}_suppressed" in h else cur["suppressed"])
        uncosted = not data.internal_costed and col in ("cost_internal_pmpm_usd", "cost_total_pmpm_usd")
        value = SUPPRESSED if sup else costs.NOT_COSTED if uncosted else none_if_missing(cur[col])
        change = None if sup or uncosted or pd.isna(cur[col]) or pd.isna(prev[col]) else float(cur[col] - prev[col])
        rows.append({"Metric": spec.label, "This month": value, "Change vs last month": change})
        kinds.append(_kind(spec))
    pay = payment_summary(data)
    lines = [("Bundled payment", "payment_usd"), (f"Cost, {pay['cost_basis']}", "cost_usd"), ("Margin", "margin_usd")]
    if pay["fully_loaded"]:
        lines += [("Unused capacity", "idle_capacity_usd"), ("Fully loaded cost", "fully_loaded_cost_usd"),
                  ("Fully loaded margin", "fully_loaded_margin_usd")]  # fmt: skip
    for label, key in lines:
        value = pay[key]
        if key != "payment_usd" and not pay["costed"]:
            value = costs.NOT_COSTED
        rows.append({"Metric": label, "This month": SUPPRESSED if value is None else value, "Change vs last month": None})
        kinds.append("usd")
    return PackTable("headline", "Headline", pd.DataFrame(rows, columns=["Metric", "This month", "Change vs last month"]),
                     {"This month": "row", "Change vs last month": "row"}, tuple(kinds))  # fmt: skip


def _number(text: str):
    """A figure of the page's scorecard back as a number: ``1,234.5`` -> 1234.5, ``–`` -> None;
    other text (``suppressed``) stays."""
    if text in ("", "–"):
        return None
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return text


def _interval(text: str) -> tuple:
    if " – " in text:
        low, high = text.split(" – ", 1)
        return _number(low), _number(high)
    return _number(text), _number(text)


PAPER_SCORECARD = ["Tier", "Measure", "Unit", "Value", "95% interval", "Numerator", "Denominator", "O/E", "Target", "Previous",
                   "Last year", "Network", "Significant"]  # fmt: skip


def _scorecard(data: ReviewData) -> PackTable:
    """The scorecard (grain: measure) of the page (core.views.review.scorecard_table: the same
    figures, suppression and published counts) with its figures as numbers and its intervals
    as low and high columns; on paper as the page shows it."""
    card = data.scorecard
    rows, kinds = [], {"Numerator": [], "Denominator": []}
    for r in card.to_dict("records"):
        low, high = _interval(str(r.get("95% interval", "")))
        oe_low, oe_high = _interval(str(r.get("O/E 95% interval", "–")))
        row = {"Tier": r["Tier"], "Measure": r["Measure"], "Unit": r["Unit"], "Value": _number(str(r["Value"])),
               "95% CI low": low, "95% CI high": high}  # fmt: skip
        for col in ("Numerator", "Denominator"):
            text = str(r.get(col, "–"))
            row[col] = _number(text)
            kinds[col].append("num1" if "." in text else "int")
        row |= {"Expected": _number(str(r.get("Expected", "–"))), "O/E": _number(str(r.get("O/E", "–"))),
                "O/E CI low": oe_low, "O/E CI high": oe_high, "Target": _number(str(r["Target"])),
                "Previous": _number(str(r["Previous"])), "Last year": _number(str(r["Last year"])),
                "Network": _number(str(r["Network"])), "Significant": r["Significant"]}  # fmt: skip
        rows.append(row)
    cols = ["Tier", "Measure", "Unit", "Value", "95% CI low", "95% CI high", "Numerator", "Denominator", "Expected", "O/E",
            "O/E CI low", "O/E CI high", "Target", "Previous", "Last year", "Network", "Significant"]  # fmt: skip
    frame = pd.DataFrame(rows, columns=cols)
    col_kinds = {c: "num1" for c in cols[3:16]} | {c: tuple(k) for c, k in kinds.items()}
    col_kinds |= {"O/E": "num2", "O/E CI low": "num2", "O/E CI high": "num2"}
    paper = card[[c for c in PAPER_SCORECARD if c in card.columns]]
    numeric = tuple(c for c in paper.columns if c not in ("Tier", "Measure", "Unit", "Significant"))
    return PackTable("scorecard", "Scorecard by tier", frame, col_kinds, mark="Significant", paper=paper, paper_numeric=numeric)


def pack_tables(data: ReviewData, log: pd.DataFrame, labels: dict[str, str]) -> list[PackTable]:
    """The pack's tables (aggregates only): headline (grain: metric), scorecard (measure),
    subgroup_moves (direction, other subgroup), cost_categories (category), value_map (team),
    review_log (entry). Numbers stay numbers (core.views.printable)."""
    summary = data.moves["summary"]
    moves = pd.DataFrame({"Direction": summary["direction"].astype(str).str.capitalize(),
                          "Other subgroup": [labels.get(s, s) for s in summary["other_subgroup"]],
                          "Patients": [SUPPRESSED if pd.isna(v) else int(v) for v in summary["patients"]]})  # fmt: skip
    by_cat = data.drivers["by_category"]
    cats = pd.DataFrame({"Category": by_cat["category"], "This month (USD PMPM)": by_cat["pmpm_usd"].map(none_if_missing),
                         "Last month (USD PMPM)": by_cat["previous_pmpm_usd"].map(none_if_missing),
                         "Change (USD PMPM)": by_cat["change_pmpm_usd"].map(none_if_missing)})  # fmt: skip
    vm = data.value_map.loc[data.value_map["month"] == data.month]
    hidden = vm["suppressed"].astype(bool) if "suppressed" in vm else pd.Series(False, index=vm.index)
    value_map = pd.DataFrame({"Team": vm["team"].astype(str),
                              "Value index (100 = targets met on average)": [SUPPRESSED if h else none_if_missing(v)
                                                                             for v, h in zip(vm["value_index"], hidden, strict=True)],
                              "Index 95% CI low": [SUPPRESSED if h else none_if_missing(v)
                                                   for v, h in zip(vm["index_low"], hidden, strict=True)],
                              "Index 95% CI high": [SUPPRESSED if h else none_if_missing(v)
                                                    for v, h in zip(vm["index_high"], hidden, strict=True)],
                              "Cost PMPM (USD)": [SUPPRESSED if h else none_if_missing(v)
                                                  for v, h in zip(vm["cost_pmpm_usd"], hidden, strict=True)],
                              "Quadrant": vm["quadrant"].fillna("").astype(str)})  # fmt: skip
    log_out = pd.DataFrame({"Month": [_month_text(m) for m in log["month"]], "Kind": log["kind"].astype(str).str.capitalize(),
                            "Text": log["text"].astype(str), "Owner": log["owner"].fillna("").astype(str),
                            "Due date": [_day_text(d) for d in log["due_date"]], "Status": log["status"].fillna("").astype(str)})  # fmt: skip
    log_out = log_out.replace({"None": "", "NaT": "", "nan": ""})
    return [_headline(data), _scorecard(data),
            PackTable("subgroup_moves", "Patients entering and leaving the subgroup", moves, {"Patients": "int"},
                      sheet="Patients in and out"),
            PackTable("cost_categories", "Cost by category, per member per month (USD)", cats,
                      {"This month (USD PMPM)": "usd2", "Last month (USD PMPM)": "usd2", "Change (USD PMPM)": "usd2"},
                      sheet="Cost by category (PMPM)"),
            PackTable("value_map", "Value map: teams of this subgroup", value_map,
                      {"Value index (100 = targets met on average)": "num1", "Index 95% CI low": "num1",
                       "Index 95% CI high": "num1", "Cost PMPM (USD)": "usd"}),
            PackTable("review_log", "Review log", log_out)]  # fmt: skip


def _month_text(value) -> str:
    return "" if _blank(value) else pd.Timestamp(value).strftime("%b %Y")


def _day_text(value) -> str:
    return "" if _blank(value) else pd.Timestamp(value).strftime("%d %b %Y")


def _blank(value) -> bool:
    return value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)) or str(value) in ("", "None", "NaT")


def pack_figures(data: ReviewData) -> dict:
    """The charts of the pack (plotly figures from core.views.charts)."""
    from core.views import charts

    now = data.value_map.loc[data.value_map["month"] == data.month]
    return {"Cost per member per month": charts.review_cost_trend_figure(data.headline),
            "Value map: this team against peer teams": charts.review_value_map_figure(now, data.team_id),
            "Value map trend of this team": charts.review_value_trend_figure(data.value_map, data.team_id)}  # fmt: skip


def _titles(data: ReviewData, labels: dict[str, str], team_label: str) -> tuple[str, str]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    window = getattr(data, "window", "month")
    span = f"{data.month:%B %Y}" if window == "month" else f"{WINDOW_LABELS[window].lower()} to {data.month:%B %Y}"
    return (f"Monthly value review: {team_label}",
            f"{labels.get(data.subgroup, data.subgroup)} · {span} · generated {stamp}")  # fmt: skip


def _tiles(data: ReviewData) -> list[tuple[str, str, str]]:
    return [(m["label"], m["value"], m["delta"] or "") for m in headline_metrics(data)]


def review_pack(
    data: ReviewData,
    log: pd.DataFrame,
    labels: dict[str, str],
    team_label: str,
    charts: bool = True,
    note: str = "counts of 1-10 are suppressed",
) -> dict:
    """The review pack of a selection: ``html`` (str, a self-contained one-pager with the charts
    as SVG images), ``xlsx`` (bytes) and ``csv`` (table name -> CSV text). Aggregates only.
    ``charts=False`` leaves the charts out (they need Chromium, about 1 s each). ``note``: the
    suppression policy the figures of ``data`` follow (core.access.suppression), printed under
    the title. The PDF is :func:`review_pack_pdf`."""
    tables = pack_tables(data, log, labels)
    title, subtitle = _titles(data, labels, team_label)
    images = render_figures(pack_figures(data), "svg") if charts else {}
    note = with_charts_note(note, charts, images)
    return {"html": pack_html(title, subtitle, _tiles(data), tables, images, note, data.summary), "xlsx": tables_xlsx(tables),
            "csv": {t.name: table_csv(t) for t in tables}}  # fmt: skip


PACK_TABLES = ("headline", "scorecard", "subgroup_moves", "cost_categories", "value_map", "review_log")


def pack_file(data: ReviewData, log: pd.DataFrame, labels: dict[str, str], name: str) -> bytes | str:
    """One file of the pack, built when its download is clicked: ``xlsx`` (every table) or the CSV
    of one of :data:`PACK_TABLES`."""
    tables = pack_tables(data, log, labels)
    if name == "xlsx":
        return tables_xlsx(tables)
    return next(table_csv(t) for t in tables if t.name == name)


def review_pack_html(data: ReviewData, log: pd.DataFrame, labels: dict[str, str], team_label: str,
                     note: str = "counts of 1-10 are suppressed", charts: bool = True) -> bytes:  # fmt: skip
    """The HTML one-pager alone (bytes, UTF-8), for a download made on click."""
    tables = pack_tables(data, log, labels)
    title, subtitle = _titles(data, labels, team_label)
    images = render_figures(pack_figures(data), "svg") if charts else {}
    note = with_charts_note(note, charts, images)
    return pack_html(title, subtitle, _tiles(data), tables, images, note, data.summary).encode()


def review_pack_pdf(data: ReviewData, log: pd.DataFrame, labels: dict[str, str], team_label: str,
                    note: str = "counts of 1-10 are suppressed", page_size: str = "letter", charts: bool = True) -> bytes:  # fmt: skip
    """The review pack as a PDF (``page_size`` ``letter`` or ``a4``, landscape: the scorecard is
    wide): headline, what moved, tables and the charts as PNG images
    (core.views.printable.pack_pdf). Aggregates only."""
    tables = pack_tables(data, log, labels)
    title, subtitle = _titles(data, labels, team_label)
    images = render_figures(pack_figures(data), "png") if charts else {}
    note = with_charts_note(note, charts, images)
    return pack_pdf(title, subtitle, _tiles(data), tables, images, note, page_size, landscape=True, lines=data.summary)

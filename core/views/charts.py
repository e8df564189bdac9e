"""Plotly figures built from frames the core returns (no Streamlit here)."""

import html
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from core.derive.cells import UNASSIGNED
from core.derive.subgroups.rules import active_rules_path, load_rules
from core.metrics.value import VALUE_INDEX_TARGET

OTHER_COLOUR = "#999999"  # patient-months without a subgroup, and any id the rules no longer name
PALETTE = px.colors.qualitative.Safe  # for subgroups whose rules give no colour


def as_text(value) -> str:
    """Imported text (a team or practice name) as plain text in a figure: plotly renders a few
    HTML tags in labels and hover text (``<a href>``, ``<b>``), so ``<``, ``>`` and ``&`` are escaped."""
    return html.escape(str(value), quote=False)


def subgroup_style() -> tuple[list[str], dict[str, str]]:
    """Subgroup ids in chart order and their colours, from the active subgroup rules file.

    Charts list subgroups from the last [[subgroups]] entry to the first (the catch-all first,
    the subgroups matched first last), then ``unassigned``. A subgroup's colour is its
    ``colour`` in the rules file, else a palette colour by position; ids the rules do not name
    are grey, so a renamed or removed subgroup never breaks a chart.
    """
    path = active_rules_path()
    return _subgroup_style(str(path), path.stat().st_mtime)


@lru_cache(maxsize=4)
def _subgroup_style(path: str, mtime: float) -> tuple[list[str], dict[str, str]]:
    del mtime  # part of the cache key only: a saved rules file changes the style
    rules = load_rules(Path(path))
    ids = list(reversed(rules.subgroup_ids))
    colours = {s: rules.subgroup_colours.get(s) or PALETTE[i % len(PALETTE)] for i, s in enumerate(ids)}
    return [*ids, UNASSIGNED], colours | {UNASSIGNED: OTHER_COLOUR}


def _colour(subgroup: str, colours: dict[str, str]) -> str:
    return colours.get(subgroup, OTHER_COLOUR)


def member_mix_figure(member_months: pd.DataFrame, labels: dict[str, str] | None = None,
                      title: str = "Member-months by subgroup") -> go.Figure:  # fmt: skip
    """Stacked area of member-months per month by subgroup (columns: month, subgroup, member_months)."""
    labels = labels or {}
    frame = member_months.assign(subgroup_label=member_months["subgroup"].map(lambda s: labels.get(s, s)))
    ids, colours = subgroup_style()
    present = set(frame["subgroup"])
    order = [labels.get(s, s) for s in [*ids, *sorted(present - set(ids))] if s in present]
    fig = px.area(
        frame,
        x="month",
        y="member_months",
        color="subgroup_label",
        category_orders={"subgroup_label": order},
        color_discrete_map={labels.get(s, s): _colour(s, colours) for s in present},
        labels={"member_months": "Member-months", "month": "Month", "subgroup_label": "Subgroup"},
        title=title,
    )
    fig.update_layout(hovermode="x unified", legend_title_text="", margin=dict(l=10, r=10, t=40, b=10), yaxis_hoverformat=",.0f")
    return fig


# --- executive views -----------------------------------------------------------------------

FLAG_COLORS = {"better": "#2E7D32", "worse": "#C62828", "as expected": "#607D8B", "suppressed": "#BDBDBD"}
FLAG_LABELS = {"better": "Better than the network", "worse": "Worse than the network", "as expected": "As expected",
               "suppressed": "Suppressed (1-10)"}  # fmt: skip
MODEL_LABELS = {"bundled": "Bundled per subgroup", "fee_for_service": "Fee-for-service", "pcmh": "PCMH blocks"}


def _layout(fig: go.Figure) -> go.Figure:
    """The common layout: room for the title, long tick labels (team names) never clipped."""
    fig.update_layout(legend_title_text="", margin=dict(l=10, r=10, t=50, b=10))
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def _rgba(colour: str, alpha: float) -> str:
    """A #RRGGBB colour with transparency (for interval bands); other colour strings unchanged."""
    if isinstance(colour, str) and colour.startswith("#") and len(colour) == 7:
        r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
        return f"rgba({r}, {g}, {b}, {alpha})"
    return colour


def trend_lines_figure(figures: pd.DataFrame, labels: dict[str, str] | None = None, title: str = "", y_title: str = "",
                       incomplete_from=None) -> go.Figure:  # fmt: skip
    """Lines per subgroup over months for one metric (columns: month, subgroup, value; NaN = suppressed
    gap), each with its 95 % interval as a shaded band when ci_low / ci_high are given.
    ``incomplete_from``: first month whose claims are incomplete; it and later months are shaded."""
    labels = {**(labels or {}), "all": "All subgroups"}
    frame = figures.assign(subgroup_label=figures["subgroup"].map(lambda s: labels.get(s, s)))
    ids, colours = subgroup_style()
    present = set(frame["subgroup"])
    order = [labels.get(s, s) for s in ["all", *ids, *sorted(present - {"all", *ids})] if s in present]
    colors = {labels.get(s, s): _colour(s, colours) for s in present} | {"All subgroups": "#212121"}
    fig = px.line(frame, x="month", y="value", color="subgroup_label", markers=True, category_orders={"subgroup_label": order},
                  color_discrete_map=colors, labels={"value": y_title, "month": "Month", "subgroup_label": "Subgroup"}, title=title or y_title)  # fmt: skip
    if {"ci_low", "ci_high"} <= set(frame.columns):  # the 95 % interval of every line as a shaded band
        for name in order:
            part = frame.loc[frame["subgroup_label"] == name].sort_values("month")
            if part[["ci_low", "ci_high"]].notna().any(axis=None):
                fill = _rgba(colors.get(name, OTHER_COLOUR), 0.15)
                fig.add_trace(go.Scatter(x=part["month"], y=part["ci_low"], mode="lines", line=dict(width=0), showlegend=False,
                                         name=f"{name}: 95% interval", legendgroup=name, hoverinfo="skip"))  # fmt: skip
                fig.add_trace(go.Scatter(x=part["month"], y=part["ci_high"], mode="lines", line=dict(width=0), fill="tonexty",
                                         fillcolor=fill, showlegend=False, name=f"{name}: 95% interval", legendgroup=name,
                                         hoverinfo="skip"))  # fmt: skip
    fig.update_layout(hovermode="x unified")
    fig.update_yaxes(hoverformat=",.2f" if "USD" in y_title else ",.1f")  # as the tables show them
    if incomplete_from is not None and len(frame):
        fig.add_vrect(x0=pd.Timestamp(incomplete_from) - pd.Timedelta(days=15), x1=pd.Timestamp(frame["month"].max()) + pd.Timedelta(days=15),
                      fillcolor="#9E9E9E", opacity=0.15, line_width=0, annotation_text="claims incomplete",
                      annotation_position="top left")  # fmt: skip
    return _layout(fig)


def caterpillar_figure(teams: pd.DataFrame, network_value: float, team_labels: dict[str, str] | None = None,
                       unit: str = "", title: str = "Teams against the network") -> go.Figure:  # fmt: skip
    """Each team's value with its 95 % interval, sorted, against a vertical network line.

    Columns: team_id, value, ci_low, ci_high, flag (better / worse / as expected / suppressed).
    """
    team_labels = team_labels or {}
    shown = teams.dropna(subset=["value"]).sort_values("value")
    fig = go.Figure()
    for flag, part in shown.groupby("flag", sort=False):
        fig.add_trace(go.Scatter(
            x=part["value"], y=[as_text(team_labels.get(t, t)) for t in part["team_id"]], mode="markers", name=FLAG_LABELS.get(flag, flag),
            marker=dict(size=11, color=FLAG_COLORS.get(flag, "#607D8B")),
            error_x=dict(type="data", symmetric=False, array=part["ci_high"] - part["value"], arrayminus=part["value"] - part["ci_low"]),
        ))  # fmt: skip
    if pd.notna(network_value):
        fig.add_vline(x=network_value, line_dash="dash", line_color="#212121", annotation_text="Network",
                      annotation_position="top")  # fmt: skip
    fig.update_layout(title=title, xaxis_title=unit, yaxis_title="Team", xaxis_hoverformat=",.1f",
                      height=max(300, 45 * len(shown) + 120))  # fmt: skip
    return _layout(fig)


def funnel_figure(teams: pd.DataFrame, funnel: pd.DataFrame, centre: float, team_labels: dict[str, str] | None = None,
                  y_title: str = "", x_title: str = "", title: str = "Funnel: each team against its volume") -> go.Figure:  # fmt: skip
    """Funnel plot: each team's value (y) against its volume (x), with the 95 % and 99.8 % control
    limits around the network value (core.views.compare: ``funnel`` columns volume, low_95,
    high_95, low_998, high_998; ``teams`` columns team_id, value, volume, funnel_position)."""
    team_labels = team_labels or {}
    fig = go.Figure()
    for tag, name, dash in (("998", "99.8% limits", "dot"), ("95", "95% limits", "dash")):
        for side in ("low", "high"):
            fig.add_trace(go.Scatter(x=funnel["volume"], y=funnel[f"{side}_{tag}"], mode="lines", name=name, legendgroup=tag,
                                     showlegend=side == "low", line=dict(color="#616161", dash=dash, width=1), hoverinfo="skip"))  # fmt: skip
    shown = teams.dropna(subset=["value", "volume"])
    colours = {"within 95% limits": "#607D8B", "outside 95% limits": "#EF6C00", "outside 99.8% limits": "#C62828"}
    for position, part in shown.groupby("funnel_position", sort=False):
        fig.add_trace(go.Scatter(
            x=part["volume"], y=part["value"], mode="markers+text", name=position, textposition="top center",
            text=[as_text(team_labels.get(t, t)) for t in part["team_id"]], marker=dict(size=11, color=colours.get(position, "#607D8B")),
        ))  # fmt: skip
    if pd.notna(centre):
        fig.add_hline(y=centre, line_color="#212121", annotation_text="Network", annotation_position="top left")
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=460, yaxis_hoverformat=",.1f")
    return _layout(fig)


def value_map_figure(points: pd.DataFrame, labels: dict[str, str] | None = None, team_labels: dict[str, str] | None = None,
                     title: str = "Value map: cost against the value index, arrows from a year earlier") -> go.Figure:  # fmt: skip
    """Cost PMPM (x) against the value index (y, column ``outcome_index``, 100 = targets met on
    average; vertical bars = its 95 % interval when ``index_low``/``index_high`` are given) per team
    and subgroup, with an arrow from the position 12 months earlier (core.views.compare.value_positions)."""
    labels, team_labels = labels or {}, team_labels or {}
    shown = points.dropna(subset=["cost_pmpm_usd", "outcome_index"])
    colours = subgroup_style()[1]
    fig = go.Figure()
    for subgroup, part in shown.groupby("subgroup", sort=False):
        bars = None
        if {"index_low", "index_high"} <= set(part.columns):
            bars = dict(type="data", symmetric=False, array=part["index_high"] - part["outcome_index"],
                        arrayminus=part["outcome_index"] - part["index_low"], thickness=1)  # fmt: skip
        fig.add_trace(go.Scatter(
            x=part["cost_pmpm_usd"], y=part["outcome_index"], mode="markers+text", name=labels.get(subgroup, subgroup),
            text=[as_text(team_labels.get(t, t)) for t in part["team_id"]], textposition="top center",
            marker=dict(size=13, color=_colour(subgroup, colours)), error_y=bars,
        ))  # fmt: skip
    moved = shown.dropna(subset=["previous_cost_pmpm_usd", "previous_outcome_index"])
    for row in moved.itertuples():  # on a log axis, annotation x positions are log10 of the value (plotly.js)
        fig.add_annotation(x=np.log10(row.cost_pmpm_usd), y=row.outcome_index, ax=np.log10(row.previous_cost_pmpm_usd),
                           ay=row.previous_outcome_index,
                           xref="x", yref="y", axref="x", ayref="y", showarrow=True, arrowhead=2, arrowwidth=1.2,
                           arrowcolor=_colour(row.subgroup, colours), opacity=0.6)  # fmt: skip
    fig.add_hline(y=100, line_dash="dot", line_color="#9E9E9E", annotation_text="targets met on average")
    fig.update_layout(title=title, xaxis_title="Total cost per member per month (USD, log scale)", xaxis_type="log",
                      xaxis_hoverformat="$,.2f", yaxis_hoverformat=",.1f",
                      yaxis_title="Value index (100 = targets met on average)", height=520)  # fmt: skip
    return _layout(fig)


def payment_bars_figure(by_subgroup: pd.DataFrame, labels: dict[str, str] | None = None,
                        title: str = "Revenue, cost and margin per member per month by payment model") -> go.Figure:  # fmt: skip
    """Revenue, cost and margin PMPM per subgroup, one bar per payment model (core.views.payment_models.payment_comparison)."""
    labels = labels or {}
    long = by_subgroup.melt(id_vars=["subgroup", "model"], value_vars=["revenue_pmpm_usd", "cost_pmpm_usd", "margin_pmpm_usd"],
                            var_name="figure", value_name="usd_pmpm")  # fmt: skip
    long = long.assign(figure=long["figure"].map({"revenue_pmpm_usd": "Revenue PMPM", "cost_pmpm_usd": "Cost PMPM",
                                                  "margin_pmpm_usd": "Margin PMPM"}),
                       model=long["model"].map(lambda m: MODEL_LABELS.get(m, m)),
                       subgroup=long["subgroup"].map(lambda s: labels.get(s, s)))  # fmt: skip
    fig = px.bar(long, x="subgroup", y="usd_pmpm", color="model", barmode="group", facet_col="figure",
                 labels={"usd_pmpm": "USD per member per month", "subgroup": "Subgroup", "model": "Model", "figure": "Figure"},
                 title=title)  # fmt: skip
    fig.update_traces(hovertemplate="%{x} · %{fullData.name}<br>$%{y:,.2f} per member per month<extra></extra>")
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return _layout(fig)


def equity_gap_figure(table: pd.DataFrame, unit: str = "", network_value: float | None = None, group_title: str = "Group",
                      group_labels: dict[str, str] | None = None, title: str = "Each group with its 95% interval") -> go.Figure:  # fmt: skip
    """Each stratum value with its 95 % interval; the reference group marked, and the network's value
    of all patients when given (core.views.equity.equity_table). ``group_labels``: stratum value -> the
    label shown, for values stored as codes."""
    group_labels = group_labels or {}
    shown = table.dropna(subset=["value"]).sort_values("value")
    colors = np.where(shown["best"], "#2E7D32", np.where(shown["gap_is_real"], "#C62828", "#607D8B"))
    fig = go.Figure(go.Scatter(
        x=shown["value"], y=[as_text(group_labels.get(v, v)) for v in shown["stratum_value"]], mode="markers", marker=dict(size=11, color=list(colors)),
        error_x=dict(type="data", symmetric=False, array=shown["ci_high"] - shown["value"], arrayminus=shown["value"] - shown["ci_low"]),
        showlegend=False,
    ))  # fmt: skip
    best = table.loc[table["best"].astype(bool), "value"]
    if len(best):
        fig.add_vline(x=float(best.iloc[0]), line_dash="dash", line_color="#2E7D32", annotation_text="reference group")
    if network_value is not None and pd.notna(network_value):
        fig.add_vline(x=network_value, line_dash="dot", line_color="#212121", annotation_text="all patients of the network",
                      annotation_position="bottom right")  # fmt: skip
    fig.update_layout(title=title, xaxis_title=unit, yaxis_title=group_title, height=max(300, 40 * len(shown) + 120),
                      xaxis_hoverformat=",.1f")  # fmt: skip
    return _layout(fig)


# --- monthly review ------------------------------------------------------------------


def review_value_map_figure(points: pd.DataFrame, team_id: str, title: str = "") -> go.Figure:
    """Value map of one month: cost PMPM (x) against the value index (y, 100 = targets met on
    average, bars = its 95 % interval) per team, the reviewed team highlighted. ``points``:
    team_id, team, cost_pmpm_usd, value_index, index_low, index_high (core.views.review.value_map_data)."""
    shown = points.dropna(subset=["cost_pmpm_usd", "value_index"])
    fig = go.Figure()
    for own, colour, size in ((False, "#9E9E9E", 12), (True, "#C0392B", 18)):
        part = shown.loc[(shown["team_id"] == team_id) == own]
        bars = dict(type="data", symmetric=False, array=part["index_high"] - part["value_index"],
                    arrayminus=part["value_index"] - part["index_low"], thickness=1)  # fmt: skip
        fig.add_trace(go.Scatter(x=part["cost_pmpm_usd"], y=part["value_index"], mode="markers+text", text=[as_text(t) for t in part["team_id"]],
                                 textposition="top center", marker=dict(size=size, color=colour), error_y=bars,
                                 customdata=[as_text(t) for t in part["team"]], name="This team" if own else "Peer teams",
                                 hovertemplate="%{customdata}<br>cost $%{x:,.0f} PMPM<br>value index %{y:.1f}<extra></extra>"))  # fmt: skip
    fig.add_hline(y=VALUE_INDEX_TARGET, line_dash="dot", line_color="#616161", annotation_text="targets met on average")
    fig.update_layout(title=title, xaxis_title="Total cost per member per month (USD)",
                      yaxis_title="Value index (100 = targets met on average)")  # fmt: skip
    return _layout(fig)


def review_value_trend_figure(points: pd.DataFrame, team_id: str, title: str = "") -> go.Figure:
    """The reviewed team's path on the value map over the months (``points`` as for
    :func:`review_value_map_figure`, with a ``month`` column), with the index's 95 % interval;
    arrowheads point to the later month."""
    own = points.loc[points["team_id"] == team_id].dropna(subset=["cost_pmpm_usd", "value_index"]).sort_values("month")
    labels = [pd.Timestamp(m).strftime("%b %Y") for m in own["month"]]
    bars = dict(type="data", symmetric=False, array=own["index_high"] - own["value_index"],
                arrayminus=own["value_index"] - own["index_low"], thickness=1)  # fmt: skip
    fig = go.Figure(go.Scatter(x=own["cost_pmpm_usd"], y=own["value_index"], mode="lines+markers+text", text=labels,
                               textposition="top center", marker=dict(size=10, color="#C0392B"), line=dict(color="#C0392B"),
                               error_y=bars, hovertemplate="%{text}<br>cost $%{x:,.0f} PMPM<br>value index %{y:.1f}<extra></extra>"))  # fmt: skip
    xs, ys = own["cost_pmpm_usd"].to_numpy(), own["value_index"].to_numpy()
    for i in range(1, len(own)):  # time runs along the path: an arrowhead on each step
        fig.add_annotation(x=xs[i], y=ys[i], ax=xs[i - 1], ay=ys[i - 1], xref="x", yref="y", axref="x", ayref="y", text="",
                           showarrow=True, arrowhead=2, arrowsize=1.2, arrowwidth=1.5, arrowcolor="#C0392B", standoff=6)  # fmt: skip
    fig.add_hline(y=VALUE_INDEX_TARGET, line_dash="dot", line_color="#616161")
    fig.update_layout(title=title, xaxis_title="Total cost per member per month (USD)", yaxis_title="Value index (100 = targets met on average)",
                      showlegend=False)  # fmt: skip
    return _layout(fig)


def review_cost_trend_figure(headline: pd.DataFrame, title: str = "") -> go.Figure:
    """Internal, external and total cost PMPM per month (core.views.review.headline_series)."""
    names = {"cost_internal_pmpm_usd": "Internal (TDABC)", "cost_external_pmpm_usd": "External (claims)",
             "cost_total_pmpm_usd": "Total"}  # fmt: skip
    fig = go.Figure([go.Scatter(x=headline["month"], y=headline[c], mode="lines+markers", name=n) for c, n in names.items()])
    fig.update_layout(title=title, yaxis_title="USD per member per month", xaxis_title="Month", hovermode="x unified",
                      yaxis_hoverformat="$,.2f")  # fmt: skip
    return _layout(fig)


# --- patient page --------------------------------------------------------------------

SOURCE_LABELS = {"internal": "Internal (practice staff)", "external": "External (claims)"}


def encounter_timeline_figure(timeline: pd.DataFrame, title: str = "Encounters and claims") -> go.Figure:
    """Encounters over time, one row per activity kind (columns: start_date, activity, source, cost_usd)."""
    frame = timeline.assign(source=timeline["source"].map(lambda s: SOURCE_LABELS.get(s, s)))
    fig = px.scatter(
        frame, x="start_date", y="activity", color="source", hover_data={"cost_usd": ":$,.0f"},
        color_discrete_map={SOURCE_LABELS["internal"]: "#4C78A8", SOURCE_LABELS["external"]: "#E45756"},
        labels={"start_date": "Date", "activity": "Activity", "source": "", "cost_usd": "Cost"}, title=title,
    )  # fmt: skip
    fig.update_traces(marker=dict(size=9, opacity=0.8))
    fig.update_layout(height=160 + 28 * max(1, timeline["activity"].nunique()), margin=dict(l=10, r=10, t=50, b=10))
    return fig


def measurement_figure(series: pd.DataFrame, label: str, target: float, direction: str, x_range=None) -> go.Figure:
    """One measure over time with its target line (columns: measured_date, value).

    ``x_range`` (first, last date) lines up several charts of one patient on the same dates.
    """
    fig = px.line(series, x="measured_date", y="value", markers=True, labels={"measured_date": "Date measured", "value": label})
    good = "below" if direction == "lower" else "above"
    fig.add_hline(y=target, line_dash="dash", line_color="#4C9F70", annotation_text=f"target: {good} {target:g}")
    fig.update_xaxes(type="date", tickformat="%b %Y")
    if x_range is not None:
        first, last = pd.Timestamp(x_range[0]), pd.Timestamp(x_range[1])
        fig.update_xaxes(range=[first - pd.Timedelta(days=20), last + pd.Timedelta(days=20)])
    fig.update_layout(title=label, height=260, margin=dict(l=10, r=10, t=40, b=10), yaxis_hoverformat=",.1f")
    return fig


def patient_costs_figure(costs: pd.DataFrame, title: str = "Cost per month by source and category") -> go.Figure:
    """Stacked bars of cost per month by source and category (columns: month, source, category (label), cost_usd)."""
    frame = costs.assign(part=costs["source"].str.capitalize() + ": " + costs["category"])
    fig = px.bar(frame, x="month", y="cost_usd", color="part", labels={"month": "Month", "cost_usd": "Cost (USD)", "part": ""}, title=title)
    fig.update_layout(barmode="stack", height=340, margin=dict(l=10, r=10, t=50, b=10), yaxis_tickprefix="$", yaxis_hoverformat=",.0f")
    return fig

"""Plotly figures built from frames the core returns (no Streamlit here)."""

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

SUBGROUP_ORDER = ["healthy", "at_risk", "chronic", "complex", "frail", "unassigned"]
SUBGROUP_COLORS = {
    "healthy": "#4C9F70",
    "at_risk": "#E0B040",
    "chronic": "#E07B39",
    "complex": "#C0392B",
    "frail": "#7D3C98",
    "unassigned": "#999999",
}


def member_mix_figure(member_months: pd.DataFrame, labels: dict[str, str] | None = None) -> go.Figure:
    """Stacked area of member-months per month by subgroup (columns: month, subgroup, member_months)."""
    labels = labels or {}
    frame = member_months.assign(subgroup_label=member_months["subgroup"].map(lambda s: labels.get(s, s)))
    order = [labels.get(s, s) for s in SUBGROUP_ORDER if s in set(frame["subgroup"])]
    fig = px.area(
        frame,
        x="month",
        y="member_months",
        color="subgroup_label",
        category_orders={"subgroup_label": order},
        color_discrete_map={labels.get(s, s): c for s, c in SUBGROUP_COLORS.items()},
        labels={"member_months": "Member-months", "month": "", "subgroup_label": "Subgroup"},
    )
    fig.update_layout(hovermode="x unified", legend_title_text="", margin=dict(l=10, r=10, t=30, b=10))
    return fig

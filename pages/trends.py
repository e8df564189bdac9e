"""Executive: the network's panel over time, by subgroup, practice and team."""

import streamlit as st

from core.charts import member_mix_figure
from core.store import member_months_by_month, organisation, panel_counts
from ui.auth import require
from ui.data import query
from ui.labels import subgroup_labels
from ui.widgets import month_label, select_month

scope = require("trends")
st.title("Trends")
labels = subgroup_labels()
with st.sidebar:
    month = select_month()

teams = None if scope.network else scope.team_ids
mix = query(member_months_by_month, teams)
st.subheader("Members by subgroup, month by month")
st.plotly_chart(member_mix_figure(mix, labels), key="mix")

st.subheader(f"Panel in {month_label(month)}")
panel = query(panel_counts, month, teams)
org = query(organisation)
table = panel.merge(org[["team_id", "practice", "team"]], on="team_id").assign(subgroup=lambda d: d["subgroup"].map(lambda s: labels.get(s, s)))
pivot = table.pivot_table(index=["practice", "team"], columns="subgroup", values="members", aggfunc="sum", fill_value=0)
pivot["Total"] = pivot.sum(axis=1)
st.dataframe(pivot, column_config={c: st.column_config.NumberColumn(format="localized") for c in pivot.columns})

"""Team leader: the monthly value review of one team and subgroup."""

import streamlit as st

from core.store import panel_counts
from ui.auth import require
from ui.data import query
from ui.labels import subgroup_labels
from ui.widgets import month_label, select_month, select_team

scope = require("review")
st.title("Monthly review")
labels = subgroup_labels()
with st.sidebar:
    team = select_team(allowed=scope.team_ids)
    month = select_month()

panel = query(panel_counts, month, (team["team_id"],))
st.caption(f"{team['practice']} · {team['team']} · {month_label(month)}")
cols = st.columns(max(len(panel), 1))
for col, row in zip(cols, panel.itertuples(), strict=False):
    col.metric(labels.get(row.subgroup, row.subgroup), f"{row.members:,}")

"""Clinician: the patients of a team and subgroup; pick one to open the patient page."""

import streamlit as st

from core.store import team_patients
from ui.auth import audit_export, audit_view, require
from ui.data import query
from ui.labels import subgroup_labels
from ui.widgets import month_label, select_month, select_team

scope = require("worklist")
st.title("My subgroup")
labels = subgroup_labels()
with st.sidebar:
    team = select_team(allowed=scope.team_ids)
    month = select_month()
    subgroup = st.selectbox("Subgroup", [None, *labels], key="subgroup", format_func=lambda s: "All" if s is None else labels[s])

# The scope, not the widget, bounds the query: a team id outside it returns no rows.
team_ids = tuple(t for t in (team["team_id"],) if t in scope.team_ids)
patients = query(team_patients, month, team_ids, subgroup)
audit_view(scope, "view_worklist", team["team_id"], f"{month:%Y-%m} {subgroup or 'all'}")
st.caption(f"{team['practice']} · {team['team']} · {month_label(month)} · {len(patients):,} patients")
search = st.text_input("Search by name or id", key="search")
if search:
    hit = patients["name"].str.contains(search, case=False, regex=False) | patients["patient_id"].str.contains(search, case=False, regex=False)
    patients = patients[hit]
shown = patients.assign(subgroup=patients["subgroup"].map(lambda s: labels.get(s, s)))
event = st.dataframe(
    shown,
    key="worklist",
    hide_index=True,
    on_select="rerun",
    selection_mode="single-row",
    column_order=["patient_id", "name", "birth_date", "sex", "subgroup", "risk_score", "reason"],
    column_config={"risk_score": st.column_config.NumberColumn("Risk score", format="%.2f")},
)
if event.selection.rows:
    st.switch_page("pages/patient.py", query_params={"patient": shown.iloc[event.selection.rows[0]]["patient_id"]})
st.download_button("Download CSV", shown.to_csv(index=False), file_name=f"worklist_{team['team_id']}_{month:%Y-%m}.csv",
                   mime="text/csv", on_click=audit_export, args=(scope, team["team_id"], "worklist csv"))  # fmt: skip

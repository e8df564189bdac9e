"""Clinician: the patients of a team and subgroup, flagged and ranked by who needs attention first."""

import streamlit as st

from core.access.exports import export_csv
from core.views.worklist import (
    count_text,
    default_subgroup,
    filter_worklist,
    load_worklist_rules,
    member_counts,
    team_worklist,
)
from ui.auth import audit_view, audited_file, require
from ui.data import query
from ui.labels import plain, subgroup_labels
from ui.tables import show_table
from ui.widgets import month_label, select_month, select_team

scope = require("worklist")
st.title("My subgroup")
labels = subgroup_labels()
rules = load_worklist_rules()
with st.sidebar:
    team = select_team(allowed=scope.team_ids)
    month = select_month()
    # The scope, not the widget, bounds the query: a team id outside it returns no rows.
    team_ids = tuple(t for t in (team["team_id"],) if t in scope.team_ids)
    counts = query(member_counts, month, team_ids)
    options = [None, *labels]
    default = options.index(default_subgroup(counts, list(labels), team["team_subgroup"], rules.max_patients))
    back_to = st.query_params.get("subgroup")  # the patient page's way back to this list
    if back_to == "all" or back_to in labels:
        default = options.index(None if back_to == "all" else back_to)
    subgroup = st.selectbox("Subgroup", options, index=default, key=f"subgroup_{team['team_id']}",
                            format_func=lambda s: f"{'All' if s is None else labels[s]} ({counts.get(s, 0):,})")  # fmt: skip

if counts.get(subgroup, 0) > rules.max_patients:
    st.info(f"{plain(team['team'])} has {counts[subgroup]:,} patients in {labels.get(subgroup, 'all subgroups').lower()} in "
            f"{month_label(month)}, more than the {rules.max_patients:,} a worklist lists (`max_patients` in `core/config/worklist.toml`). "
            + ("Pick a subgroup in the sidebar." if subgroup is None else "Pick a smaller subgroup in the sidebar."))  # fmt: skip
    st.stop()
worklist = query(team_worklist, month, team_ids, subgroup)
audit_view(scope, "view_worklist", team["team_id"], f"{month:%Y-%m} {subgroup or 'all'}")

st.caption(f"{plain(team['practice'])} · {plain(team['team'])} · {labels.get(subgroup, 'All subgroups')} · {month_label(month)} · "
           "Sorted by priority: " + " > ".join(rules.labels.values()) + "; then risk score. The flags are explained in the README "
           "(Worklist flags).")  # fmt: skip
left, right = st.columns([1, 2])
search = left.text_input("Search by name or id", key="search")
chosen = right.multiselect("Show patients with any of these flags", list(rules.labels), format_func=rules.labels.get, key="flags")
shown = filter_worklist(worklist, search, tuple(chosen))
shown = shown.assign(subgroup=shown["subgroup"].map(lambda s: labels.get(s, s)))
st.markdown(f"**{count_text(shown, len(worklist), search, tuple(chosen))}**")  # the rows of the grid below, always
if shown.empty:
    st.info("No patient matches the search and flag filters." if search.strip() or chosen else "No patients in this list.")

event = show_table(
    shown,
    key="worklist",
    on_select="rerun",
    selection_mode="single-row",
    column_order=["name", "age", "sex", "subgroup", "risk_score", "flags", "questionnaires_due", "hba1c_value", "hba1c_date", "bp", "bp_date",
                  "phq9_value", "phq9_date", "phq9_change", "promis_physical_value", "promis_physical_date", "last_visit",
                  "ed_visits_12m", "admissions_12m", "cost_12m_usd", "subgroup_since", "patient_id"],  # fmt: skip
    column_config={"name": st.column_config.TextColumn("Name", pinned=True)},
)
if event.selection.rows:
    # the patient page's way back reopens this list: same team, month and subgroup
    st.session_state["worklist_back"] = {"team": team["team_id"], "month": f"{month:%Y-%m}", "subgroup": subgroup or "all"}
    st.switch_page("pages/patient.py", query_params={"patient": shown.iloc[event.selection.rows[0]]["patient_id"]})
st.caption("Select a row to open the patient.")
st.download_button("Download CSV", audited_file(scope, team["team_id"], f"worklist csv {month:%Y-%m}", lambda: export_csv(shown)),
                   file_name=f"worklist_{team['team_id']}_{month:%Y-%m}.csv", mime="text/csv", on_click="ignore")  # fmt: skip

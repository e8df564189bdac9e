"""Clinician: the patients of a team and subgroup, flagged and ranked by who needs attention first."""

import streamlit as st

from core.views.care_gaps import filter_by_care, gap_summary, load_gap_rules
from core.views.format import last_days
from core.views.outreach import last_outreach, load_outreach_rules
from core.views.transitions import load_transition_rules
from core.views.worklist import (
    count_text,
    default_subgroup,
    filter_worklist,
    load_worklist_rules,
    member_counts,
)
from core.views.worklist_page import GRID_COLUMNS, worklist_csv, worklist_reads
from ui.auth import audit_view, audited_file, require
from ui.data import engine, query
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
# the worklist, its care gaps and its transitions of care, read side by side (cached with the data)
worklist, gaps, transitions = query(worklist_reads, month, team_ids, subgroup)
gap_rules = load_gap_rules()
# Care gaps come from imported data (cached with it); outreach is typed in here, so it is read fresh,
# for the worklist's patients (the members of the team and subgroup: their ids are not read again).
care = gap_summary(gaps).join(last_outreach(engine(), worklist["patient_id"].tolist()), how="outer")
worklist = worklist.join(care, on="patient_id")
audit_view(scope, "view_worklist", team["team_id"], f"{month:%Y-%m} {subgroup or 'all'}")

st.caption(f"{plain(team['practice'])} · {plain(team['team'])} · {labels.get(subgroup, 'All subgroups')} · {month_label(month)} · "
           "Sorted by priority: " + " > ".join(rules.labels.values()) + "; then risk score. The flags are explained in the README "
           "(Worklist flags).")  # fmt: skip
left, right = st.columns([1, 2])
search = left.text_input("Search by name or id", key="search")
chosen = right.multiselect("Show patients with any of these flags", list(rules.labels), format_func=rules.labels.get, key="flags")
left, right = st.columns([2, 1])
gap_filter = left.multiselect("Show patients with any of these care gaps open", list(gap_rules.labels),
                              format_func=gap_rules.labels.get, key="gaps",
                              help="Overdue or due within the next weeks; the rules are in core/config/care_gaps.toml")  # fmt: skip
cycle = load_outreach_rules().cycle_days
hide_reached = right.checkbox(f"Hide patients reached in {last_days(cycle)}", key="hide_reached",
                              help="Reached, visit booked or declined in the outreach log")  # fmt: skip
shown = filter_by_care(filter_worklist(worklist, search, tuple(chosen)), tuple(gap_filter), hide_reached)
shown = shown.assign(subgroup=[labels.get(s, s) + (" · thin history" if thin else "")
                                for s, thin in zip(shown["subgroup"], shown["thin_history"], strict=True)])  # fmt: skip
filtered = bool(chosen or gap_filter or hide_reached)
st.markdown(f"**{count_text(shown, len(worklist), search, tuple(chosen), filtered)}**")  # the rows of the grid below, always
if shown.empty:
    st.info("No patient matches the search and filters." if search.strip() or filtered else "No patients in this list.")

date_col = st.column_config.DateColumn
# the grid gets the columns it shows only: the others (flags one by one, the costs' parts, the
# assignment's reason) would be labelled, converted and sent to the browser for nothing
label = GRID_COLUMNS
event = show_table(
    shown[list(GRID_COLUMNS)],
    key="worklist",
    on_select="rerun",
    selection_mode="single-row",
    column_order=list(GRID_COLUMNS),
    column_config={
        "name": st.column_config.TextColumn(label["name"], pinned=True),
        **{c: label[c] for c in ("age", "sex", "subgroup", "bp", "patient_id")},
        "risk_score": st.column_config.NumberColumn(label["risk_score"], format="%.2f", help="CMS-HCC risk score"),
        "flags": st.column_config.TextColumn(label["flags"], width="large"),
        "questionnaires_due": st.column_config.TextColumn(label["questionnaires_due"], help="Overdue for the patient's subgroup (worklist.toml)"),
        "care_gaps": st.column_config.TextColumn(label["care_gaps"], width="medium"),
        "gaps_due_soon": st.column_config.TextColumn(label["gaps_due_soon"], width="medium"),
        "last_outreach": st.column_config.TextColumn(label["last_outreach"]),
        "hba1c_value": st.column_config.NumberColumn(label["hba1c_value"], format="%.1f"),
        "phq9_value": st.column_config.NumberColumn(label["phq9_value"], format="%.0f"),
        "phq9_change": st.column_config.NumberColumn(label["phq9_change"], format="%+.0f", help="Latest PHQ-9 minus the one before"),
        "promis_physical_value": st.column_config.NumberColumn(label["promis_physical_value"], format="%.1f"),
        **{c: date_col(label[c]) for c in ("hba1c_date", "bp_date", "phq9_date", "promis_physical_date", "last_visit")},
        "ed_visits_12m": st.column_config.NumberColumn(label["ed_visits_12m"]),
        "admissions_12m": st.column_config.NumberColumn(label["admissions_12m"]),
        "cost_12m_usd": st.column_config.NumberColumn(label["cost_12m_usd"], format="dollar", help="Internal (TDABC) + external paid"),
        "subgroup_since": date_col(label["subgroup_since"], format="MMM YYYY"),
        "history_note": st.column_config.TextColumn(label["history_note"], help="Set when the subgroup rests on little data: months "
                                                    "of data among the months the subgroup rules look back"),
    },  # fmt: skip
)
if event.selection.rows:
    # the patient page's way back reopens this list: same team, month and subgroup
    st.session_state["worklist_back"] = {"team": team["team_id"], "month": f"{month:%Y-%m}", "subgroup": subgroup or "all"}
    st.switch_page("pages/patient.py", query_params={"patient": shown.iloc[event.selection.rows[0]]["patient_id"]})
st.caption("Select a row to open the patient.")
# the audit event says which list and how many patients left in the file (a search or filter narrows it)
exported = f"worklist csv {month:%Y-%m} {subgroup or 'all'}: {len(shown):,} of {len(worklist):,} patients"
st.download_button("Download CSV", audited_file(scope, team["team_id"], exported, lambda: worklist_csv(shown)),
                   file_name=f"worklist_{team['team_id']}_{month:%Y-%m}.csv", mime="text/csv", on_click="ignore",
                   help="The rows and columns of the list above, under its headings")  # fmt: skip

st.subheader("Discharges and ED visits: follow-up")
due, missed = int((transitions["status"] == "due").sum()), int((transitions["status"] == "missed").sum())
look_back = load_transition_rules().look_back_days
st.caption(f"Hospital discharges and ED visits of {last_days(look_back)} up to {month_label(month)}'s end, each with its follow-up "
           f"windows (CMS Transitional Care Management; HEDIS FMC; `core/config/transitions.toml`): {due:,} due, {missed:,} "
           "missed. A window is done when a contact or visit of the listed kinds, or a reached outreach entry, falls in it.")  # fmt: skip
if transitions.empty:
    st.info(f"No discharges or ED visits in {last_days(look_back)}.")
else:
    show_table(
        transitions.drop(columns=["patient_id"]).assign(subgroup=transitions["subgroup"].map(lambda s: labels.get(s, s))),
        hide_index=True,
        column_config={
            "name": st.column_config.TextColumn("Name", pinned=True), "subgroup": "Subgroup", "event": "Event",
            "event_date": date_col("Event date"), "follow_up": "Follow-up", "deadline": date_col("Deadline"),
            "status": "Status", "done_on": date_col("Done on"),
        },  # fmt: skip
    )

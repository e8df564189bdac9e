"""Clinician: one patient (deep link ``?patient=ID``), within the user's scope only."""

import time

import streamlit as st

from core.access.policy import can_act, load_access_rules
from core.store.months import month_end
from core.views.care_gaps import one_patient_gaps
from core.views.charts import encounter_timeline_figure, measurement_figure, patient_costs_figure
from core.views.outreach import load_outreach_rules, patient_outreach, record_outreach
from core.views.patient import lift_patient_override, override_subgroup, patient_view
from ui.auth import audit_view, require
from ui.data import engine, query
from ui.labels import plain, subgroup_labels
from ui.tables import show_table

scope = require("patient")
patient_id = st.query_params.get("patient")
# The worklist that opened this patient left its team, month and subgroup: the way back reopens it.
st.page_link("pages/worklist.py", label="Back to the worklist", icon=":material/arrow_back:",
             query_params=st.session_state.get("worklist_back", {}))  # fmt: skip
view = query(patient_view, patient_id, scope.team_ids, *load_access_rules().record_access(scope.role)) if patient_id else None
if view is None:
    if patient_id:
        audit_view(scope, "refused_lookup", patient_id[:200])
    st.title("Patient")
    st.info("Open a patient from the worklist. A patient outside your teams is not shown.")
    st.stop()
audit_view(scope, "view_patient", patient_id)

labels = subgroup_labels()
p, current = view.patient, view.current
st.title(plain(f"{p['given_name']} {p['family_name']}"))
st.caption(plain(f"{p['patient_id']} · {p['age']} years (born {p['birth_date']}) · {p['sex']} · {p['language']} · "
                 f"race {p['race']}, ethnicity {p['ethnicity']}" + (" · dual Medicare-Medicaid" if p["dual_status"] else "")
                 + (f" · died {p['death_date']}" if p["death_date"] else "")))  # fmt: skip
if current:
    cols = st.columns([1, 1, 3])
    cols[0].metric("Subgroup", labels.get(current.subgroup, current.subgroup) + (" (override)" if current.overridden else ""))
    cols[1].metric("As of", f"{current.month:%b %Y}")
    cols[2].markdown(f"**Team:** {plain(current.team or '-')}  \n**PCP:** {plain(current.pcp or '-')}  \n"
                     f"**Why:** {plain(current.reason)}")  # fmt: skip
    if current.thin_history:
        st.warning(plain(f"{current.history_note}: this subgroup rests on little data (see the Subgroup rules page, [history])."))

tabs = st.tabs(["Subgroup history", "Measurements", "Encounters", "Costs", "Conditions", "E-consults", "Care team", "Medications",
                "Care gaps and outreach"])  # fmt: skip
with tabs[0]:
    if done := st.session_state.pop("override_done", None):
        st.success(done)
    periods = view.periods.assign(subgroup=view.periods["subgroup"].map(lambda s: labels.get(s, s)))
    st.caption("A period changes when the subgroup, the rule that placed the patient or the history status changes; "
               "figures in the reason (such as the month's network-wide cut-off) are the latest month's.")  # fmt: skip
    show_table(periods, hide_index=True, key="periods", column_config={
        "from_month": st.column_config.DateColumn("From", format="MMM YYYY"),
        "to_month": st.column_config.DateColumn("To", format="MMM YYYY"),
        "months": st.column_config.NumberColumn("Months", format="%d"), "subgroup": "Subgroup", "rule_id": "Rule",
        "reason": "Why (latest month)", "risk_scores": "HCC risk score (range)", "overridden": "Override",
        "thin_history": "Thin history", "history_note": "History"})  # fmt: skip
    st.subheader("Overrides")
    show_table(view.overrides.drop(columns=["patient_id"]), key="overrides")
    if can_act(scope, "override_subgroup") and current:
        with st.form("override", clear_on_submit=True):
            subgroup = st.selectbox("Pin to subgroup", list(labels), format_func=labels.get)
            start = st.date_input("From month", value=current.month)
            note = st.text_area("Why (required)")
            if st.form_submit_button("Override subgroup"):
                try:
                    started = time.perf_counter()
                    with st.spinner("Saving the override and recomputing this patient's subgroups and scorecards..."):
                        oid = override_subgroup(engine(), scope, patient_id, subgroup, start, note)
                    st.session_state["override_done"] = (f"Override #{oid} saved: {labels[subgroup]} from {start:%b %Y} "
                                                         f"(saved and re-derived in {time.perf_counter() - started:.1f} s).")  # fmt: skip
                    st.rerun()
                except (ValueError, PermissionError) as exc:
                    st.error(str(exc))
        active = view.overrides.loc[view.overrides["lifted_at"].isna(), "override_id"].tolist()
        if active:
            lift = st.selectbox("Active override", active, format_func=lambda i: f"#{i}", key="lift_id")
            if st.button("Lift override"):
                started = time.perf_counter()
                with st.spinner("Lifting the override and recomputing..."):
                    lift_patient_override(engine(), scope, patient_id, int(lift))
                st.session_state["override_done"] = f"Override #{lift} lifted (re-derived in {time.perf_counter() - started:.1f} s)."
                st.rerun()
with tabs[1]:
    series = view.series
    if series.empty:
        st.info("No measurements recorded.")
    for (label, target, direction), rows in series.groupby(["label", "target", "direction"], sort=False):
        x_range = (series["measured_date"].min(), series["measured_date"].max())
        st.plotly_chart(measurement_figure(rows, label, target, direction, x_range), key=f"m_{label}")
with tabs[2]:
    timeline = view.timeline
    if len(timeline):
        st.plotly_chart(encounter_timeline_figure(timeline), key="timeline")
    show_table(timeline[["start_date", "end_date", "activity", "source", "specialty", "primary_dx", "cost_usd"]].iloc[::-1])
with tabs[3]:
    costs = view.costs
    if len(costs):
        st.plotly_chart(patient_costs_figure(costs), key="costs")
    show_table(costs.drop(columns=["cost_category"]), hide_index=True, key="cost_table",
                 column_config={"cost_usd": st.column_config.NumberColumn("Cost", format="dollar")})  # fmt: skip
with tabs[4]:
    show_table(view.conditions)
with tabs[5]:
    show_table(view.econsults)
with tabs[6]:
    show_table(view.care_team.drop(columns=["role"]))
with tabs[7]:
    show_table(view.medications)
with tabs[8]:
    if current:
        gaps = query(one_patient_gaps, patient_id, current.subgroup, month_end(current.month))
        st.caption(f"The items of the {labels.get(current.subgroup, current.subgroup).lower()} subgroup's measures as of "
                   f"{month_end(current.month):%-d %b %Y}: overdue first. The rules are in `core/config/care_gaps.toml`.")  # fmt: skip
        show_table(gaps.drop(columns=["patient_id", "gap_id"]), hide_index=True, key="gaps", column_config={
            "label": "Item", "status": "Status", "last_done": st.column_config.DateColumn("Last done"),
            "due_date": st.column_config.DateColumn("Due"), "rule": st.column_config.TextColumn("Rule", width="large"),
        })  # fmt: skip
    st.subheader("Outreach")
    if saved := st.session_state.pop("outreach_done", None):
        st.success(saved)
    log = patient_outreach(engine(), patient_id)
    if log.empty:
        st.caption("No outreach recorded yet.")
    else:
        show_table(log, hide_index=True, key="outreach_log", column_config={
            "at": st.column_config.DatetimeColumn("When", format="D MMM YYYY, HH:mm"), "user_key": "By",
            "channel": "Channel", "outcome": "Outcome", "note": st.column_config.TextColumn("Note", width="large"),
        })  # fmt: skip
    if scope.patient_level:
        rules = load_outreach_rules()
        with st.form("outreach", clear_on_submit=True):
            left, right = st.columns(2)
            channel = left.selectbox("Channel", list(rules.channels), format_func=rules.channels.get)
            outcome = right.selectbox("Outcome", list(rules.outcomes), format_func=rules.outcomes.get)
            note = st.text_input("Note (optional)", max_chars=1000)
            if st.form_submit_button("Record outreach"):
                try:
                    record_outreach(engine(), scope, patient_id, channel, outcome, note)
                    st.session_state["outreach_done"] = f"Recorded: {rules.channels[channel]}, {rules.outcomes[outcome].lower()}."
                    st.rerun()
                except (ValueError, PermissionError) as exc:
                    st.error(str(exc))

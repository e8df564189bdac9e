"""Clinician: one patient (deep link ``?patient=ID``), within the user's scope only."""

import streamlit as st

from core.access.policy import load_access_rules
from core.views.charts import encounter_timeline_figure, measurement_figure, patient_costs_figure
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

tabs = st.tabs(["Subgroup history", "Measurements", "Encounters", "Costs", "Conditions", "E-consults", "Care team", "Medications"])
with tabs[0]:
    if done := st.session_state.pop("override_done", None):
        st.success(done)
    periods = view.periods.assign(subgroup=view.periods["subgroup"].map(lambda s: labels.get(s, s)))
    show_table(periods, key="periods")
    st.subheader("Overrides")
    show_table(view.overrides.drop(columns=["patient_id"]), key="overrides")
    if scope.role == "team_leader" and current:
        with st.form("override", clear_on_submit=True):
            subgroup = st.selectbox("Pin to subgroup", list(labels), format_func=labels.get)
            start = st.date_input("From month", value=current.month)
            note = st.text_area("Why (required)")
            if st.form_submit_button("Override subgroup"):
                try:
                    with st.spinner("Saving the override and recomputing subgroups and scorecards..."):
                        oid = override_subgroup(engine(), scope, patient_id, subgroup, start, note)
                    st.session_state["override_done"] = f"Override #{oid} saved: {labels[subgroup]} from {start:%b %Y}."
                    st.rerun()
                except (ValueError, PermissionError) as exc:
                    st.error(str(exc))
        active = view.overrides.loc[view.overrides["lifted_at"].isna(), "override_id"].tolist()
        if active:
            lift = st.selectbox("Active override", active, format_func=lambda i: f"#{i}", key="lift_id")
            if st.button("Lift override"):
                with st.spinner("Lifting the override and recomputing..."):
                    lift_patient_override(engine(), scope, patient_id, int(lift))
                st.session_state["override_done"] = f"Override #{lift} lifted."
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
    show_table(costs.drop(columns=["cost_category"]), key="cost_table")
with tabs[4]:
    show_table(view.conditions)
with tabs[5]:
    show_table(view.econsults)
with tabs[6]:
    show_table(view.care_team.drop(columns=["role"]))
with tabs[7]:
    show_table(view.medications)

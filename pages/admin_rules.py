"""Admin: subgroup rules, how many patients each catches, a draft preview, and overrides."""

import hashlib
import time
from datetime import date

import streamlit as st

from core.access.audit import record_event
from core.access.suppression import suppression_policy
from core.derive.pipeline import derive_all
from core.derive.subgroups.overrides import lift_override, list_overrides, set_override
from core.derive.subgroups.rules import RulesError, active_rules_path, load_rules, parse_rules, save_rules
from core.derive.subgroups.transitions import assignment_mix
from core.views.admin_rules import preview_rules, rules_with_counts, suppress_preview
from ui.auth import audit_view, require
from ui.data import engine, query
from ui.labels import plain
from ui.tables import show_table
from ui.widgets import month_label

scope = require("rules")
st.title("Subgroup rules")
path = active_rules_path()
rules = load_rules(path)
policy = suppression_policy(scope, None)  # the rules count every patient of the network
mix = query(assignment_mix)
month = mix["month"].iloc[0] if len(mix) else None

st.caption(f"First match wins, top to bottom. Rules file: `{path}`. {policy.caption}")
table = rules.to_frame()
if month is not None:
    table, overrides = rules_with_counts(table, mix, policy.suppress)
    st.caption(f"Patients caught in {month_label(month)} (stored assignments; overrides under rule `override`: "
               f"{overrides}).")  # fmt: skip
show_table(table, hide_index=True, placeholder="suppressed")
st.caption(f"Thin history ([history]): a patient-month with fewer than {rules.history.min_months} of the "
           f"{rules.history.lookback_months} months ending with it attributed and with something recorded is marked "
           "'Not enough history'; its subgroup is still the first rule that matches.")  # fmt: skip

st.subheader("Edit a draft")
draft_text = st.text_area("Rules (TOML)", value=path.read_text(encoding="utf-8"), height=420)
preview_col, save_col = st.columns(2)
if preview_col.button("Preview counts", disabled=month is None):
    try:
        draft = parse_rules(draft_text, "draft")
        with st.spinner("Evaluating the draft"):
            preview = suppress_preview(preview_rules(engine(), draft, month, current=rules), policy.suppress)
            show_table(preview, placeholder="suppressed")
    except RulesError as exc:
        st.error(str(exc))
# Saved rules are a file of the installation, not of the store: demo mode previews only.
if save_col.button("Save and re-assign", type="primary", disabled=scope.demo,
                   help="Demo mode previews drafts only; saving needs login." if scope.demo else None):  # fmt: skip
    try:
        saved = save_rules(draft_text)
        record_event(engine(), scope, "rule_save", "subgroup_rules.toml",
                     f"{len(saved.subgroup_ids)} subgroups; sha256 {hashlib.sha256(draft_text.encode()).hexdigest()[:16]}")  # fmt: skip
        started = time.perf_counter()
        with st.spinner("Re-assigning every patient-month"):
            summary = derive_all(engine())
        st.success(f"Saved. Subgroup mix: {summary['subgroups']['mix']} (re-derived in {time.perf_counter() - started:.1f} s)")
    except RulesError as exc:
        st.error(str(exc))

st.subheader("Overrides")
overrides = list_overrides(engine())
if len(overrides):
    audit_view(scope, "view_patients", "overrides", "admin rules")  # patient ids with their notes
show_table(overrides)
with st.form("set_override", clear_on_submit=True):
    patient_id = st.text_input("Patient id")
    subgroup = st.selectbox("Subgroup", rules.subgroup_ids, format_func=rules.subgroup_names.get)
    start = st.date_input("From month", value=month or date.today())
    note = st.text_area("Why (required)")
    if st.form_submit_button("Pin patient"):
        try:
            started = time.perf_counter()
            set_override(engine(), scope, patient_id.strip(), subgroup, start, note, rules)  # re-derives the patient
            st.success(f"{plain(patient_id)} pinned to {rules.subgroup_names[subgroup]} from {month_label(start)} "
                       f"(saved and re-derived in {time.perf_counter() - started:.1f} s).")  # fmt: skip
        except ValueError as exc:
            st.error(str(exc))
with st.form("lift_override"):
    override_id = st.number_input("Override id", min_value=1, step=1)
    if st.form_submit_button("Lift override"):
        try:
            started = time.perf_counter()
            lift_override(engine(), scope, int(override_id), rules)  # re-derives the patient
            st.success(f"Override {override_id} lifted (re-derived in {time.perf_counter() - started:.1f} s).")
        except ValueError as exc:
            st.error(str(exc))

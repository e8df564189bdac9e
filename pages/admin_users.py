"""Admin: who may sign in, with which role and scope."""

import streamlit as st

from core.access.policy import ROLES, load_access_rules
from core.access.users import deactivate_user, list_users, save_user
from core.store.queries import organisation
from ui.auth import require
from ui.data import engine, query
from ui.labels import plain
from ui.tables import show_table

scope = require("users")
st.title("Users")
rules = load_access_rules()
show_table(list_users(engine()))

org = query(organisation)
with st.form("add_user", clear_on_submit=True):
    st.subheader("Add or update a user")
    key = st.text_input("Email (or sub:<subject>)")
    role = st.selectbox("Role", ROLES, format_func=rules.role_labels.get)
    practices = st.multiselect("Practices in scope", sorted(org["practice_id"].unique()))
    teams = st.multiselect("Teams in scope", org["team_id"].tolist(),
                           format_func=lambda t: f"{t} · {org.set_index('team_id').at[t, 'team']}")  # fmt: skip
    patient_level = st.checkbox("Patient-level access (always on for clinicians and team leaders)")
    if st.form_submit_button("Save"):
        try:
            level = patient_level or rules.patient_level_default[role]
            user = save_user(engine(), key, role, practice_ids=",".join(practices), team_ids=",".join(teams), patient_level=level, by=scope)
            st.success(f"Saved {plain(user.user_key)}.")
        except ValueError as exc:
            st.error(str(exc))

with st.form("deactivate_user"):
    st.subheader("Deactivate a user")
    key = st.text_input("Email (or sub:<subject>)", key="deactivate_key")
    if st.form_submit_button("Deactivate"):
        st.success("Deactivated.") if deactivate_user(engine(), key, by=scope) else st.error(f"No user {plain(key)}.")

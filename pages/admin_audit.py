"""Admin: search the audit log of patient views, worklist views and exports."""

import streamlit as st

from core.access.audit import ACTIONS, search_events
from ui.auth import require
from ui.data import engine

require("audit")
st.title("Audit log")
c1, c2, c3 = st.columns(3)
user = c1.text_input("User (email or sub:…)")
action = c2.selectbox("Action", [None, *ACTIONS], format_func=lambda a: "Any" if a is None else a)
target = c3.text_input("Target (patient id, team id, file)")
events = search_events(engine(), user_key=user or None, action=action, target=target or None)
st.caption(f"{len(events):,} events, newest first")
st.dataframe(events, hide_index=True)
st.download_button("Download CSV", events.to_csv(index=False), file_name="audit_log.csv", mime="text/csv")

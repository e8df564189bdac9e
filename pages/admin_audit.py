"""Admin: search the audit log (views of patients, exports, changes, uploads; see core.access.audit)."""

import streamlit as st

from core.access.audit import ACTIONS, search_events
from core.views.format import csv_export
from ui.auth import audited_file, require
from ui.data import engine
from ui.tables import show_table

scope = require("audit")
st.title("Audit log")
c1, c2, c3 = st.columns(3)
user = c1.text_input("User (email or sub:…)")
action = c2.selectbox("Action", [None, *ACTIONS], format_func=lambda a: "Any" if a is None else a)
target = c3.text_input("Target (patient id, team id, file)")
events = search_events(engine(), user_key=user or None, action=action, target=target or None)
st.caption(f"{len(events):,} events, newest first")
show_table(events)
filters = f"user={user or '-'}; action={action or '-'}; target={target or '-'}"
st.download_button("Download CSV", audited_file(scope, "audit_log.csv", filters, lambda: csv_export(events, na_rep=""), action="audit_download"),
                   file_name="audit_log.csv", mime="text/csv", on_click="ignore")  # fmt: skip

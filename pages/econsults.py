"""Executive: e-consult volume, specialist response time and % resolved without a visit, by
specialty and team; specialist spend of patients with and without e-consults."""

import streamlit as st

from core.access.suppression import suppression_policy
from core.metrics.scorecard import WINDOW_COUNTS_NOTE, window_counts_published
from core.store.months import WINDOW_LABELS, window_months
from core.store.queries import organisation
from core.views.econsults import econsults
from core.views.format import csv_export, format_figure
from ui.auth import audited_file, require
from ui.data import query
from ui.tables import show_table
from ui.widgets import month_label, select_month, select_window

scope = require("econsults")
st.title("E-consults")
with st.sidebar:
    month = select_month()
    window = select_window("econsult_window")
org = query(organisation)
team_labels = {r.team_id: f"{r.practice} · {r.team}" for r in org.itertuples()} | {"All": "All teams"}
policy = suppression_policy(scope, None if scope.network else scope.team_ids)
data = query(econsults, tuple(window_months(month, window)), None if scope.network else scope.team_ids, policy.suppress)
total = data["by_team"].iloc[-1]
counts_shown = not policy.suppress or window_counts_published(window)
st.caption(f"{WINDOW_LABELS[window]} to {month_label(month)} · {policy.caption}")
if not counts_shown:
    st.caption(WINDOW_COUNTS_NOTE)
if len(data["by_team"]) == 1:  # the All row alone: no e-consult in the window
    st.info("No e-consults in this window.")
else:
    m1, m2, m3 = st.columns(3)
    hidden = data["all_suppressed"]
    if counts_shown:
        m1.metric("E-consults", format_figure(total["econsults"], hidden["econsults"], 0), border=True)
    m2.metric("Mean specialist response, days", format_figure(total["mean_response_days"], hidden["responded"]), border=True)
    m3.metric("Resolved without a visit, %", format_figure(total["resolved_pct"], hidden["resolved"], 0), border=True)
    if counts_shown and any(hidden.values()):
        st.caption("A figure shown as suppressed rests on 1-10 e-consults, answered, resolved or not resolved in this window.")

tables = {"by_specialty": ("By specialty", data["by_specialty"]),
          "by_team": ("By team", data["by_team"].assign(team_id=data["by_team"]["team_id"].map(lambda t: team_labels.get(t, t)))),
          "spend": ("Specialist spend of patients with and without an e-consult", data["spend"])}  # fmt: skip
for name, (title, frame) in tables.items():
    st.subheader(title)
    show_table(frame, key=f"econsult_{name}", placeholder="suppressed")
    st.download_button(f"Download {title.lower()} (CSV)", audited_file(scope, "econsults", f"{name} {month:%Y-%m} {window}",
                                                                      lambda frame=frame: csv_export(frame)),
                       file_name=f"econsults_{name}_{month:%Y-%m}.csv", mime="text/csv", key=f"dl_econsult_{name}", on_click="ignore")  # fmt: skip

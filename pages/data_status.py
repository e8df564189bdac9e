"""Admin: what is in the database, and the history of imports."""

import pandas as pd
import streamlit as st

from core.store.queries import data_status, import_history
from ui.auth import require
from ui.data import query
from ui.tables import show_table
from ui.widgets import month_label

require("data")
st.title("Data status")
status = query(data_status)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Patients", f"{status['counts']['patient']:,}")
c2.metric("Member-months", f"{status['counts']['attribution']:,}")
c3.metric("Encounters and claims", f"{status['counts']['encounter']:,}")
c4.metric("Data version", status["data_version"])
if status["first_month"]:
    st.caption(f"Months covered: {month_label(status['first_month'])} to {month_label(status['last_month'])}. "
               f"Origin of the data: {', '.join(status['origins']) or 'none'}.")  # fmt: skip

st.subheader("Rows per table")
show_table(pd.DataFrame([{"table": table, "rows": n} for table, n in status["counts"].items()]))
st.caption(("Imported and derived tables were counted when data version " + status["data_version"] + " was built"
            if status["counts_recorded"] else "Every table was counted now (nothing recorded for this data version)")
           + "; overrides, imports, users and audit events are counted now.")  # fmt: skip
st.subheader("Imports")
show_table(query(import_history))
st.caption("Load data with `python -m core import PATH --format csv|fhir|tuva` (see the README for the formats).")

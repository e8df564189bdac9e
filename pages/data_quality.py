"""Admin: data quality checks of the store now and of each import (core/views/data_quality.py)."""

import streamlit as st

from core.views.data_quality import NOT_REPORTED, data_quality
from ui.auth import require
from ui.data import query
from ui.tables import show_table

require("quality")
st.title("Data quality")
quality = query(data_quality)
COLUMNS = ["check", "count", "usd_at_stake", "examples", "status"]

st.subheader("The store now")
show_table(quality["store"][COLUMNS], key="quality_store")
st.caption("Incomplete months come from paid dates where claims have them, else the run-out of core/config/runout.toml; "
           "thin history: attributed months before anything is recorded of the patient.")  # fmt: skip

st.subheader("Imports")
imports = quality["imports"]
if imports.empty:
    st.info("No committed imports yet.")
for import_id, part in imports.groupby("import_id", sort=False):
    first = part.iloc[0]
    with st.expander(f"Import #{import_id} · {first['format']} · {first['imported_at']:%Y-%m-%d %H:%M} · {first['source']}",
                     expanded=import_id == imports["import_id"].iloc[0]):  # fmt: skip
        if (part["status"] == NOT_REPORTED).any():
            st.caption("Claims corrections are not reported for this import (it was loaded before the import report held them).")
        show_table(part[COLUMNS], key=f"quality_import_{import_id}")

"""Admin: upload a data set (CSV bundle, FHIR or Tuva), see its validation and import report."""

import time

import streamlit as st

from core.derive.pipeline import MAX_UPLOAD_BYTES, derive_text, import_files
from core.ingest import FORMATS
from ui.auth import require
from ui.data import engine

scope = require("upload")
st.title("Upload data")
st.markdown(
    "Upload every file of one data set at once. Nothing is written unless the whole set is valid; "
    f"uploads are limited to {MAX_UPLOAD_BYTES // 2**20} MB, so load large data with `python -m core import PATH`. "
    "Importing real data ends demo mode: the dashboard then needs login (see the README)."
)
fmt = st.segmented_control("Format", FORMATS, default="csv", key="upload_format",
                           format_func={"csv": "CSV bundle", "fhir": "FHIR R4", "tuva": "Tuva input layer"}.get)  # fmt: skip
files = st.file_uploader("Files", type=["csv", "json", "ndjson"], accept_multiple_files=True, key="upload_files",
                         max_upload_size=MAX_UPLOAD_BYTES // 2**20)  # fmt: skip
if files and st.button("Validate and import", type="primary"):
    started = time.perf_counter()  # the whole of it: reading, validating, loading and deriving
    bar = st.progress(0.0, text="Reading the files")
    report = import_files(engine(), [(f.name, f.getvalue()) for f in files], fmt or "csv",
                          progress=lambda fraction, text: bar.progress(fraction, text=text))  # fmt: skip
    from core.access.audit import record_event

    record_event(engine(), scope, "import", ",".join(f.name for f in files)[:200], "ok" if report.ok else "rejected")
    if report.ok:
        bar.progress(1.0, text="Done")
        st.success(f"Imported {sum(report.loaded.values()):,} rows in {time.perf_counter() - started:.1f} s: "
                   f"validated and loaded in {report.seconds:.1f} s, then {derive_text(report.derive)}.")  # fmt: skip
        st.cache_data.clear()
    else:
        bar.empty()
        st.error(f"Rejected: {len(report.errors)} problem(s). Nothing was written.")
    st.code(report.to_text(), language=None)

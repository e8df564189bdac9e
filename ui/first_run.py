"""First run: with an empty embedded database, generate and load the sample network."""

from pathlib import Path

import streamlit as st

from core.bootstrap import load_bundle_and_derive
from core.db import PROJECT_ROOT
from core.store import has_patients

SAMPLE_BUNDLE_DIR = PROJECT_ROOT / "data" / "sample_bundle"


def ensure_sample_network(engine, url: str) -> None:
    """Generate and import the default sample network if the SQLite store is empty.

    Only the embedded SQLite default is filled automatically; a PostgreSQL store is loaded
    with the CLI (``python -m core import``) so a shared database is never written by surprise.
    """
    if not url.startswith("sqlite") or has_patients(engine):
        return
    from sample_data.generator import NetworkSpec, write_bundle

    with st.status("First run: building the sample network…", expanded=True) as status:
        bar = st.progress(0.0, text="Generating 5,000 synthetic patients over 24 months")
        write_bundle(NetworkSpec(), Path(SAMPLE_BUNDLE_DIR))
        load_bundle_and_derive(engine, SAMPLE_BUNDLE_DIR, progress=lambda f, text: bar.progress(f, text=text))
        status.update(label="Sample network loaded", state="complete", expanded=False)
    st.cache_data.clear()

"""First run: with an empty embedded database, generate and load the sample network."""

from pathlib import Path

import streamlit as st

from core.access.demo import mark_sample_store
from core.config import PROJECT_ROOT
from core.derive.pipeline import load_bundle_and_derive
from core.store.queries import has_patients
from sample_data.generator import NetworkSpec

SAMPLE_BUNDLE_DIR = PROJECT_ROOT / "data" / "sample_bundle"
FIRST_RUN_SPEC = NetworkSpec()  # 5,000 patients, 24 months ending last month


def ensure_sample_network(engine, url: str) -> None:
    """Generate and import the default sample network if the SQLite store is empty.

    Only the embedded SQLite default is filled automatically; a PostgreSQL store is loaded
    with the CLI (``python -m core import``) so a shared database is never written by surprise.
    The build runs as the only page of a hidden navigation, so Streamlit's automatic
    ``pages/`` menu never shows meanwhile; then the app reruns with its real navigation.
    """
    if not url.startswith("sqlite") or has_patients(engine):
        return
    st.navigation([st.Page(lambda: _build_sample_network(engine), title="First run", url_path="first-run")],
                  position="hidden").run()  # fmt: skip
    st.rerun()


def _build_sample_network(engine) -> None:
    from sample_data.generator import write_bundle

    spec = FIRST_RUN_SPEC
    with st.status("First run: building the sample network…", expanded=True) as status:
        bar = st.progress(0.0, text=f"Generating {spec.patients:,} synthetic patients over {spec.months} months")
        write_bundle(spec, Path(SAMPLE_BUNDLE_DIR))
        load_bundle_and_derive(engine, Path(SAMPLE_BUNDLE_DIR), progress=lambda f, text: bar.progress(f, text=text))
        mark_sample_store(engine)  # this store holds the sample this run made, nothing else: demo mode may run
        status.update(label="Sample network loaded", state="complete", expanded=False)
    st.cache_data.clear()

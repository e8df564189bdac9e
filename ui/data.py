"""Engine and cached queries for the pages.

``query(fn, *args)`` calls a core read function with the engine, cached per database URL,
data version and (small, hashable) arguments, so a page costs one cache lookup per figure.
"""

import importlib

import streamlit as st

from core.derive.activity import ensure_patient_month_activity
from core.derive.page_aggregates import ensure_page_aggregates
from core.store.db import create_schema, database_url, make_engine
from core.store.queries import data_version, derive_pending


@st.cache_resource(show_spinner=False)
def get_engine(url: str):
    """One engine per database URL for the whole server process."""
    engine = make_engine(url)
    create_schema(engine)
    ensure_patient_month_activity(engine)  # a store derived before those tables existed gets them once
    ensure_page_aggregates(engine)  # likewise the pages' monthly aggregates (e-consults, moves, costliest)
    return engine


def current_url() -> str:
    return database_url()


def engine():
    return get_engine(current_url())


def current_version() -> str:
    return data_version(engine())


@st.cache_data(max_entries=512, show_spinner=False)
def _cached_call(fn_path: str, url: str, version: str, args: tuple, kwargs: tuple):
    module, name = fn_path.rsplit(".", 1)
    fn = getattr(importlib.import_module(module), name)
    return fn(get_engine(url), *args, **dict(kwargs))


def query(fn, *args, **kwargs):
    """``fn(engine, *args, **kwargs)``, cached until the data change. Arguments must be hashable."""
    return _cached_call(f"{fn.__module__}.{fn.__name__}", current_url(), current_version(), args, tuple(sorted(kwargs.items())))


def pending_derive_banner(can_rebuild: bool) -> None:
    """A banner while subgroups and cells are behind the imported data (an import or derive that
    did not finish); ``can_rebuild``: offer to derive everything now (admins)."""
    pending = derive_pending(engine())
    if pending is None:
        return
    what = f"import #{pending}" if pending.isdigit() else "the last change"
    st.warning(f"Subgroups and scorecards are being brought up to date after {what}; figures may not include it yet. "
               "The next `python -m core import` or `python -m core assign` finishes this.", icon=":material/sync_problem:")
    if can_rebuild and st.button("Rebuild subgroups and scorecards now", key="finish_pending_derive"):
        from core.derive.pipeline import finish_pending_derive

        with st.spinner("Rebuilding subgroups and scorecards…"):
            finish_pending_derive(engine())
        st.cache_data.clear()
        st.rerun()

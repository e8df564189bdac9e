"""AppTest fixtures: the dashboard on the small sample network (an SQLite file)."""

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core.store.copies import copy_sqlite
from core.store.db import make_engine

DASHBOARD = str(Path(__file__).resolve().parents[2] / "dashboard.py")


@pytest.fixture(autouse=True)
def _clear_streamlit_caches():
    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


@pytest.fixture(autouse=True)
def _navigation_like_the_server(monkeypatch):
    """Run AppTest the way the real server runs dashboard.py.

    AppTest resets ``PagesManager.uses_pages_directory`` before every run, and because a
    ``pages/`` folder exists, the second and later runs would then execute the current page
    file alone in Streamlit's legacy (v1) multipage mode, skipping dashboard.py (login, scope,
    navigation). The real server flips the flag to False for good once ``st.navigation`` has
    run (streamlit/commands/navigation.py), so we pin it to False here.
    """
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


@pytest.fixture
def app(sample_db_url, monkeypatch):
    """A fresh AppTest of dashboard.py on the sample network (not yet run)."""
    monkeypatch.setenv("DATABASE_URL", sample_db_url)
    return AppTest.from_file(DASHBOARD, default_timeout=60)


@pytest.fixture
def private_db(sample_db_url, tmp_path, monkeypatch):
    """A private copy of the sample database, used by the app through DATABASE_URL."""
    path = tmp_path / "copy.db"
    copy_sqlite(sample_db_url.removeprefix("sqlite:///"), path)
    url = f"sqlite:///{path}"
    monkeypatch.setenv("DATABASE_URL", url)
    engine = make_engine(url)
    yield engine
    engine.dispose()

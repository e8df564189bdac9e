"""The page-render step of ``python -m core bench`` (core/cli/bench.py), kept out of core/ because it
needs Streamlit: AppTest render time of each page on the benchmark database.

core.cli.bench runs :func:`step_pages` in a child process (``python -m core.cli.bench pages JSON``).
"""

import os
import time
from pathlib import Path

from core.access.policy import page_openers

PAGES = page_openers()  # (demo role, page): every page of access.toml, opened by a role that may open it
DASHBOARD = Path(__file__).resolve().parents[1] / "dashboard.py"
NEAR = "team + subgroup nearest 2,500 patients"
WORKLIST_PAGE = f"pages/worklist.py, {NEAR}"
REVIEW_PAGE = f"pages/review.py, {NEAR}"


def step_pages(args: dict) -> dict:
    """AppTest render time of each page (cold caches), the way tests/app/test_smoke.py opens them."""
    import streamlit as st
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    from core.cli.bench import selections
    from core.store.db import make_engine

    # Same fix as tests/app/conftest.py: pin the multipage mode to st.navigation (v2), as the
    # real server does after the first run, or AppTest re-runs the page file alone.
    original = PagesManager.__init__

    def init(self, *a, **kw):
        original(self, *a, **kw)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init
    os.environ["DATABASE_URL"] = args["database_url"]
    os.environ["SCORECARDS_DEMO"] = "1"  # the demo personas, on the benchmark's own (marked) network
    engine = make_engine(args["database_url"])
    team, subgroup, members = selections(engine)["worklist"]
    engine.dispose()
    out = {}
    # the demo personas' team is the first; the worklist target is set for 2,500 patients: the
    # team + subgroup nearest that size
    runs = [(role, page, None, page) for role, page in PAGES]
    near = f"({team} {subgroup}, {members:,} patients)"
    runs += [("clinician", "pages/worklist.py", team, f"{WORKLIST_PAGE} {near}"),
             ("team_leader", "pages/review.py", team, f"{REVIEW_PAGE} {near}")]  # fmt: skip
    for role, page, demo_team, name in runs:
        st.cache_data.clear()
        st.cache_resource.clear()
        app = AppTest.from_file(str(DASHBOARD), default_timeout=300)
        app.session_state["demo_role"] = role
        if demo_team is not None:
            app.session_state["demo_team"] = demo_team
            app.session_state[f"subgroup_{demo_team}"] = subgroup  # the worklist's choice
            app.query_params["subgroup"] = subgroup  # the review's
        t0 = time.perf_counter()
        app.run()  # the role's home page (login, scope, navigation), cold
        t1 = time.perf_counter()
        st.cache_data.clear()  # the page itself cold: its data queries are not cached yet
        app.switch_page(page).run()
        t2 = time.perf_counter()
        error = " | ".join(app.exception[0].stack_trace[-2:])[:300] if app.exception else None
        shown = len(app.dataframe[0].value) if app.dataframe else None  # rows of the page's first table
        out[name] = {"role": role, "home_s": round(t1 - t0, 2), "render_s": round(t2 - t1, 2), "rows": shown, "error": error}
    return out



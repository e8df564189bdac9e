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
BIGGEST_PAGE = "pages/worklist.py, the biggest list it shows"


PAGE_TIMEOUT_S = 300  # a page still running after this is reported as timed out, and the step goes on


def step_pages(args: dict) -> dict:
    """AppTest render time of each page (cold caches), the way tests/app/test_smoke.py opens them.
    ``args``: ``database_url``; ``page_timeout_s`` (default :data:`PAGE_TIMEOUT_S`), after which a
    page is reported with its error, and the pages after it are still measured."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from core.cli.bench import selections
    from core.store.db import make_engine

    _app_like_the_server(args["database_url"])
    engine = make_engine(args["database_url"])
    chosen = selections(engine)
    engine.dispose()
    team, subgroup, members = chosen["worklist"]
    big_team, big_subgroup, big_members = chosen["worklist_biggest"]
    out = {}
    # the demo personas' team is the first; the worklist target is set for 2,500 patients: the
    # team + subgroup nearest that size; and the biggest list the worklist shows (max_patients)
    runs = [(role, page, None, None, page) for role, page in PAGES]
    near = f"({team} {subgroup}, {members:,} patients)"
    runs += [("clinician", "pages/worklist.py", team, subgroup, f"{WORKLIST_PAGE} {near}"),
             ("clinician", "pages/worklist.py", big_team, big_subgroup,
              f"{BIGGEST_PAGE} ({big_team} {big_subgroup}, {big_members:,} patients)"),
             ("team_leader", "pages/review.py", team, subgroup, f"{REVIEW_PAGE} {near}")]  # fmt: skip
    for role, page, demo_team, demo_subgroup, name in runs:
        st.cache_data.clear()
        st.cache_resource.clear()
        app = AppTest.from_file(str(DASHBOARD), default_timeout=PAGE_TIMEOUT_S)
        app.session_state["demo_role"] = role
        if demo_team is not None:
            app.session_state["demo_team"] = demo_team
            app.session_state[f"subgroup_{demo_team}"] = demo_subgroup  # the worklist's choice
            app.query_params["subgroup"] = demo_subgroup  # the review's
        t0 = time.perf_counter()
        app.run()  # the role's home page (login, scope, navigation), cold
        t1 = time.perf_counter()
        st.cache_data.clear()  # the page itself cold: its data queries are not cached yet
        try:
            app.switch_page(page).run(timeout=args.get("page_timeout_s", PAGE_TIMEOUT_S))
            error = " | ".join(app.exception[0].stack_trace[-2:])[:300] if app.exception else None
        except RuntimeError as exc:  # AppTest's timeout: say so for this page, and go on with the others
            error = f"{exc} (its script may still run beside the pages after it)"
        t2 = time.perf_counter()
        shown = len(app.dataframe[0].value) if app.dataframe and error is None else None  # rows of the page's first table
        # (milliseconds kept: a page cut off by a 1-ms timeout must not read as 0.00 s)
        out[name] = {"role": role, "home_s": round(t1 - t0, 3), "render_s": round(t2 - t1, 3), "rows": shown, "error": error}
    return out




# --- click speed: every page's first render and every widget change --------------------------

WIDGET_KINDS = ("selectbox", "radio", "segmented_control", "pills", "select_slider", "toggle", "checkbox")
SKIP_KEYS = {"demo_role", "demo_team"}  # the demo's persona switcher reloads the whole app, not a page
MAX_WIDGETS = 8  # per page


class _Shown(str):
    """An option given by its shown text (what a browser sends), whatever the page's format_func."""


def _app_like_the_server(database_url: str) -> None:
    """Pin AppTest's multipage mode to st.navigation (v2), as the real server does after the first
    run (else AppTest re-runs the page file alone; same fix as tests/app/conftest.py), and point
    the app at the benchmark's own (marked sample) network with the demo personas."""
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *a, **kw):
        original(self, *a, **kw)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = init
    os.environ["DATABASE_URL"] = database_url
    os.environ["SCORECARDS_DEMO"] = "1"


def _allow_shown_options() -> None:
    """AppTest formats a set value with the page's ``format_func`` to find its option, which fails
    when the option is given by its shown text (``select_index``): let shown text through as is."""
    from streamlit.testing.v1 import element_tree

    original = element_tree._format_value_for_widget
    if getattr(original, "shown_ok", False):
        return

    def formatted(format_func, value):
        return str(value) if isinstance(value, _Shown) else original(format_func, value)

    formatted.shown_ok = True
    element_tree._format_value_for_widget = formatted


def _change(widget, kind: str):
    """The widget set to a value other than its current one (None: it has no other). A selectbox
    or radio moves to its next option by position, given by its shown text."""
    if kind in ("toggle", "checkbox"):
        return widget.set_value(not widget.value)
    options = list(getattr(widget, "options", []) or [])
    if len(options) < 2:
        return None
    if kind in ("selectbox", "radio"):
        index = widget.index if widget.index is not None else -1
        return widget.set_value(_Shown(options[(index + 1) % len(options)]))
    shown = [getattr(o, "content", o) for o in options]  # segmented_control and pills: option protos
    current = widget.value
    current = current[0] if isinstance(current, list) and current else current
    index = shown.index(current) if current in shown else -1
    return widget.set_value(_Shown(shown[(index + 1) % len(shown)]))


def _widgets(app) -> list[tuple[str, int, str]]:
    """(kind, position, label) of the widgets outside forms that rerun the page when changed."""
    found = []
    for kind in WIDGET_KINDS:
        for i, widget in enumerate(getattr(app, kind)):
            if getattr(widget, "form_id", "") or getattr(widget, "key", None) in SKIP_KEYS:
                continue
            found.append((kind, i, str(getattr(widget, "label", "") or getattr(widget, "key", ""))))
    return found[:MAX_WIDGETS]


def step_clicks(args: dict) -> dict:
    """Server-side time of every page's first render (its data caches cold) and of changing each of
    its widgets once (the page's script rerun with the new value, caches as a user finds them).

    Each page is opened by a role that may open it, as :func:`step_pages` does; times are the
    AppTest script runs (no browser, no network): what the server spends per click, as wall time
    and as the CPU time of this process (the page's own work, SQLite included; steadier when other
    jobs share the machine). The 1-minute load average is recorded with each page.
    """
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    _app_like_the_server(args["database_url"])
    _allow_shown_options()
    out = {}
    patient = _a_patient_of_the_first_team(args["database_url"])
    for role, page in PAGES:
        st.cache_data.clear()
        st.cache_resource.clear()
        app = AppTest.from_file(str(DASHBOARD), default_timeout=PAGE_TIMEOUT_S)
        app.session_state["demo_role"] = role
        app.run()  # the role's home page: login, scope, navigation
        if page == "pages/patient.py" and patient:  # opened from the worklist: ?patient=ID
            app.query_params["patient"] = patient
        st.cache_data.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        app.switch_page(page).run()
        first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
        error = " | ".join(app.exception[0].stack_trace[-2:])[:300] if app.exception else None
        if error is None and not (len(app.dataframe) or len(app.metric) or len(app.get("plotly_chart")) or _widgets(app)):
            said = [e.value for e in (*app.error, *app.warning, *app.info)]
            error = f"page shows no figures: {said[0] if said else 'nothing'}"[:300]  # e.g. a store not in demo mode
        row = {"role": role, "first_render_s": round(first, 2), "first_render_cpu_s": round(first_cpu, 2),
               "load": round(os.getloadavg()[0], 1), "error": error, "widgets": []}  # fmt: skip
        for kind, position, label in _widgets(app):
            try:
                widgets = getattr(app, kind)
                if position >= len(widgets):
                    continue
                changed = _change(widgets[position], kind)
                if changed is None:
                    continue
                t0, c0 = time.perf_counter(), time.process_time()
                changed.run()
                seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
                error = " | ".join(app.exception[0].stack_trace[-2:])[:200] if app.exception else None
            except Exception as exc:  # a widget AppTest cannot drive is reported, not fatal
                seconds, cpu, error = None, None, f"{exc.__class__.__name__}: {exc}"[:200]
            row["widgets"].append({"widget": f"{kind} {label!r}"[:60], "s": None if seconds is None else round(seconds, 2),
                                   "cpu_s": None if cpu is None else round(cpu, 2), "error": error})  # fmt: skip
        out[page] = row
    return out


def _a_patient_of_the_first_team(database_url: str) -> str | None:
    """A patient of the demo personas' team (the first) in the latest month, for the patient page."""
    from sqlalchemy import func, select

    from core.store.db import make_engine
    from core.store.models import Attribution, Team

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            team = conn.execute(select(func.min(Team.team_id))).scalar()
            month = conn.execute(select(func.max(Attribution.month))).scalar()
            return conn.execute(select(func.min(Attribution.patient_id)).where(Attribution.team_id == team,
                                                                               Attribution.month == month)).scalar()  # fmt: skip
    finally:
        engine.dispose()

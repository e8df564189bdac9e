"""Care-team value scorecards: entry point.

Run with ``streamlit run dashboard.py``. Every page is routed through ``st.navigation`` here
(nothing relies on Streamlit's automatic ``pages/`` discovery); the pages offered depend on
the signed-in user's role, and each page checks its permission again (``ui.auth.require``).
"""

import streamlit as st

from core.access.policy import allowed_pages, can_act, home_page, load_access_rules
from core.store.queries import has_patients
from ui.auth import auth_configured, current_scope, demo_switcher
from ui.data import current_url, current_version, engine, pending_derive_banner
from ui.first_run import ensure_sample_network
from ui.labels import plain

st.set_page_config(page_title="Care-team value scorecards", page_icon=":material/monitoring:", layout="wide")

ensure_sample_network(engine(), current_url())
if not has_patients(engine()):
    st.error("The database holds no patients. Load data with `python -m core import PATH` (see the README).")
    st.stop()

scope = current_scope()
st.session_state["current_scope"] = scope

rules = load_access_rules()
home = home_page(scope, rules)
allowed = set(allowed_pages(scope, rules))


def not_allowed(title: str):
    """A page the role may not open: registered under its URL all the same, so a link to it says
    why it does not open instead of "Page not found"."""

    def page() -> None:
        st.title("Not allowed")
        st.error(f"The {rules.role_labels[scope.role]} role may not open **{title}**. "
                 "Ask an admin for access, or pick a page from the menu.")  # fmt: skip

    return page


# Every page is registered on every run, so each one is reachable by its URL from a fresh session;
# except right after a demo role switch, when a page the new role may not open is left out, so
# Streamlit opens the new role's home page instead.
previous_role = st.session_state.get("_kept_demo_role")  # the demo switcher's role of the previous run
role_switched = scope.demo and previous_role is not None and previous_role != scope.role
sections: dict[str, list] = {}
for page_id, p in rules.pages.items():
    if page_id in allowed:
        entry = st.Page(p.file, title=p.title, icon=p.icon, url_path=page_id,
                        visibility="hidden" if p.hidden else "visible", default=page_id == home)  # fmt: skip
    elif not role_switched:
        entry = st.Page(not_allowed(p.title), title=p.title, icon=p.icon, url_path=page_id, visibility="hidden")
    else:
        continue
    sections.setdefault(p.section, []).append(entry)
page = st.navigation(sections)

with st.sidebar:
    demo_switcher(scope)
    st.caption(f"{plain(scope.name)} · {rules.role_labels[scope.role]}" + (" (demo)" if scope.demo else ""))
    if auth_configured():
        st.button("Log out", on_click=st.logout)
    st.caption(f"Data version {current_version()}")
pending_derive_banner(can_rebuild=can_act(scope, "rebuild_derive", rules))
page.run()

"""Who is using the app: OpenID Connect login via ``st.login``, or demo mode on sample data.

The role and scope come from the users table (``core.access.users``), matched on the identity's
subject or verified email, never from the URL or a widget. Demo mode is the operator's setting
(``core.access.demo``). Pages call :func:`require` before rendering.
"""

import streamlit as st

from core.access.audit import record_event
from core.access.demo import DEMO_ENV, demo_setting, demo_wanted, is_sample_store
from core.access.policy import TEAM_ROLES, Scope, can_open, load_access_rules, resolve_scope
from core.access.users import find_user
from core.store.queries import organisation
from ui.data import current_url, engine, query
from ui.downloads import browser_fingerprint, guard_media_store, serve_to
from ui.widgets import team_choice_labels

DEMO_PERSONAS = {
    "team_leader": ("demo-team-leader", "Demo team leader"),
    "clinician": ("demo-clinician", "Demo clinician"),
    "executive": ("demo-executive", "Demo executive"),
    "admin": ("demo-admin", "Demo admin"),
}


def auth_configured() -> bool:
    """Whether ``[auth]`` is configured in the secrets (``st.login`` needs it)."""
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all
        return False


def _login_screen() -> None:
    st.title("Care-team value scorecards")
    st.write("Sign in with your organisation's account to continue.")
    st.button("Log in", type="primary", on_click=st.login)
    st.stop()


def _not_authorised(subject: str | None) -> None:
    st.title("Not authorised")
    st.error("You are signed in but have no access to this dashboard. Ask an admin to add you "
             "(Admin → Users, or `python -m core users add EMAIL --role ROLE`). An email is accepted only "
             "when your identity provider marks it verified; otherwise the admin adds your subject.")  # fmt: skip
    if subject:
        st.text(f"Your subject: sub:{subject}")
    st.button("Log out", on_click=st.logout)
    st.stop()


def _refuse_demo_on_real_data() -> None:
    st.title("Demo mode refused")
    st.error(f"Demo mode is switched on ({DEMO_ENV}=1), but this database holds more than the sample network "
             "the dashboard generated on its first run, so it does not start and no patient data is shown.")  # fmt: skip
    st.markdown(f"Switch demo mode off (`{DEMO_ENV}=0`), configure login in `.streamlit/secrets.toml` "
                "(see the README, section *Login*) and restart the dashboard.")  # fmt: skip
    st.stop()


def _refuse_without_login() -> None:
    st.title("Login required")
    st.error("This database holds imported data, not only the generated sample network, and no login is "
             "configured, so no patient data is shown.")  # fmt: skip
    st.markdown("Configure OpenID Connect in `.streamlit/secrets.toml` (an `[auth]` section: see the README, "
                "section *Login*), add users with `python -m core users add`, and restart the dashboard.")  # fmt: skip
    st.stop()


def _demo_scope() -> Scope:
    """The demo persona picked in the sidebar switcher (drawn by :func:`demo_switcher`)."""
    org = query(organisation)
    for key in ("demo_role", "demo_team"):  # widget state is dropped on st.switch_page in the browser: restore it
        if key not in st.session_state and f"_kept_{key}" in st.session_state:
            st.session_state[key] = st.session_state[f"_kept_{key}"]
    role = st.session_state.get("demo_role", next(iter(DEMO_PERSONAS)))
    team = st.session_state.get("demo_team", org["team_id"].iloc[0]) if role in TEAM_ROLES else ""
    key, name = DEMO_PERSONAS[role]
    return resolve_scope(user_key=key, name=name, role=role, practice_ids="", team_ids=team, patient_level=None,
                         organisation=org, demo=True)  # fmt: skip


def demo_switcher(scope: Scope) -> None:
    """The demo-mode role (and team) switcher.

    Drawn after ``st.navigation``: widgets drawn before it did not register changes in the
    browser (seen with Streamlit 1.67); the values are read back from session state on the
    next run by :func:`_demo_scope`.
    """
    if not scope.demo:
        return
    org = query(organisation)
    rules = load_access_rules()
    st.warning("Demo mode: sample data, no login. Pick a role to try it.", icon=":material/science:")
    st.selectbox("Demo role", list(DEMO_PERSONAS), key="demo_role", format_func=rules.role_labels.get)
    if scope.role in TEAM_ROLES:
        labels = team_choice_labels(org)
        st.selectbox("Demo team", list(labels), key="demo_team", format_func=labels.get)
    for key in ("demo_role", "demo_team"):
        if key in st.session_state:
            st.session_state[f"_kept_{key}"] = st.session_state[key]


def current_scope() -> Scope:
    """The signed-in user's scope; stops the script with a clear page when there is none."""
    setting = demo_setting()
    if demo_wanted(setting, current_url(), auth_configured()):
        if is_sample_store(engine()):
            return _demo_scope()
        if setting:
            _refuse_demo_on_real_data()
    if auth_configured():
        if not st.user.get("is_logged_in", False):
            _login_screen()
        email, subject = st.user.get("email"), st.user.get("sub")
        user = find_user(engine(), subject=subject, email=email, email_verified=st.user.get("email_verified"))
        if user is None:
            _not_authorised(subject)
        return resolve_scope(user_key=user.user_key, name=user.name or email or "", role=user.role,
                             practice_ids=user.practice_ids, team_ids=user.team_ids, patient_level=user.patient_level,
                             organisation=query(organisation))  # fmt: skip
    _refuse_without_login()


def _leave_legacy_pages_mode() -> None:
    """Rerun through ``dashboard.py`` when Streamlit ran this page file on its own.

    Until some session of the server process has called ``st.navigation``, Streamlit treats a
    ``pages/`` folder beside the entrypoint as its legacy automatic pages: a URL such as
    ``/review`` opened first in a fresh server runs ``pages/review.py`` alone, without the
    entrypoint's login and navigation. Switching that mode off (the flag ``st.navigation``
    itself clears) and rerunning the same URL routes it through ``dashboard.py``.
    """
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def require(page_id: str) -> Scope:
    """Defence in depth: a page re-checks its permission before it renders anything."""
    _leave_legacy_pages_mode()
    scope = st.session_state.get("current_scope")
    if scope is None or not can_open(scope, page_id):
        st.error("You do not have access to this page.")
        st.stop()
    return scope


def audit_view(scope: Scope, action: str, target: str, detail: str = "") -> None:
    """Record a view once per distinct target in this session (reruns of the same view are not new views)."""
    seen = st.session_state.setdefault("_audited", set())
    if (action, target, detail) not in seen:
        record_event(engine(), scope, action, target, detail)
        seen.add((action, target, detail))


def audit_export(scope: Scope, target: str, detail: str = "") -> None:
    """Download-button callback: every export is recorded."""
    record_event(engine(), scope, "export", target, detail)


def audited_file(scope: Scope, target: str, detail: str, make, action: str = "export"):
    """The ``data=`` of a download button: a callable that Streamlit runs only when this session's
    user clicks the button. It writes the audit event and returns the file, so the file exists only
    after a recorded click (no ``/media`` URL is published with the page) and the event names the
    signed-in user whose session asked for it. ``make``: a no-argument function returning the
    file's text or bytes. The file's ``/media`` URL then serves it only to the browser (and
    login) that clicked, for two minutes; any other client gets 404 (``ui.downloads``)."""
    bound_engine = engine()  # the callable runs outside the script run: bind what it needs now
    guard_media_store()
    browser = browser_fingerprint(dict(st.context.cookies))

    def data():
        record_event(bound_engine, scope, action, target, detail)
        return serve_to(browser, make())

    return data

"""End to end: OpenID Connect login through st.login against a local OIDC provider process.

oidc-provider-mock (PyPI) runs on loopback with two predefined identities; the dashboard is
configured against it through ``[auth]`` in secrets.toml. Chromium logs in as a clinician and
as an executive, each sees the pages of their role, a forbidden deep link is refused, and the
audit log holds the views.
"""

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from core.access.audit import search_events
from core.access.users import save_user
from core.store.copies import copy_sqlite
from core.store.db import make_engine
from core.store.queries import months_available, organisation, team_patients
from tests.browser.conftest import free_port, screenshot, start_server, wait_for_run

pytestmark = pytest.mark.browser

# Providers send email_verified with the email scope; the dashboard accepts an email only when it is true.
CLINICIAN = {"sub": "doc-1", "email": "doc@example.org", "email_verified": True, "name": "Dr Example"}
EXECUTIVE = {"sub": "exec-1", "email": "exec@example.org", "email_verified": True, "name": "Ms Executive"}
ATTACKER = {"sub": "attacker-1", "email": "doc@example.org", "name": "Not the doctor"}  # the doctor's email, unverified


@pytest.fixture(scope="module")
def oidc_provider(tmp_path_factory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("oidc") / "oidc.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", str(port),
         "--user-claims", json.dumps(CLINICIAN), "--user-claims", json.dumps(EXECUTIVE),
         "--user-claims", json.dumps(ATTACKER)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    issuer = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration", timeout=2)
            break
        except OSError:
            time.sleep(0.2)
    yield issuer
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def auth_app(browser, oidc_provider, sample_db_url, tmp_path_factory):
    """The dashboard with [auth] configured, on a private copy of the sample database with two users."""
    folder = tmp_path_factory.mktemp("auth_app")
    db_path = folder / "auth.db"
    copy_sqlite(sample_db_url.removeprefix("sqlite:///"), db_path)
    url = f"sqlite:///{db_path}"
    engine = make_engine(url)
    team = organisation(engine)["team_id"].iloc[0]
    save_user(engine, CLINICIAN["email"], "clinician", name=CLINICIAN["name"], team_ids=team, patient_level=True)
    save_user(engine, EXECUTIVE["email"], "executive", name=EXECUTIVE["name"])
    port = free_port()
    (folder / ".streamlit").mkdir()
    (folder / ".streamlit" / "secrets.toml").write_text(
        "[auth]\n"
        f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
        'cookie_secret = "test-cookie-secret-not-for-production"\n'
        'client_id = "scorecards"\n'
        'client_secret = "scorecards-secret"\n'
        f'server_metadata_url = "{oidc_provider}/.well-known/openid-configuration"\n'
        'client_kwargs = { scope = "openid profile email" }\n'
    )
    proc, base = start_server({"DATABASE_URL": url}, folder / "streamlit.log", port=port, cwd=folder)
    yield base, engine, team
    proc.terminate()
    proc.wait(timeout=20)
    engine.dispose()


def log_in(browser, base, who):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(base)
    page.get_by_test_id("stAppViewContainer").wait_for()
    wait_for_run(page)
    page.get_by_role("button", name="Log in").click()
    page.locator("input[name=sub]").fill(who["sub"])
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(f"{base}/**", timeout=30000)
    page.get_by_test_id("stAppViewContainer").wait_for()
    wait_for_run(page)
    return context, page


def nav_labels(page) -> set[str]:
    """Titles of the sidebar's page links (the text after the icon's ligature name)."""
    return {link.inner_text().strip().splitlines()[-1] for link in page.get_by_test_id("stSidebarNavLink").all()}


def test_clinician_sees_own_team_only(browser, auth_app):
    base, engine, team = auth_app
    context, page = log_in(browser, base, CLINICIAN)
    assert page.get_by_role("heading", name="My subgroup").first.is_visible()
    # One visible page: Streamlit shows no page menu at all; nothing else is offered.
    assert nav_labels(page) <= {"My subgroup"}
    assert "Trends" not in page.get_by_test_id("stSidebar").inner_text()
    screenshot(page, "login_clinician")

    # A forbidden page by deep link: not registered for this role, so it is not served.
    page.goto(f"{base}/data")
    page.get_by_test_id("stAppViewContainer").wait_for()
    wait_for_run(page)
    assert page.get_by_role("heading", name="Data status").count() == 0

    # A patient of another team by deep link: refused.
    month = months_available(engine)[-1]
    other = team_patients(engine, month, None)
    other_id = other[other["team_id"] != team]["patient_id"].iloc[0]
    own_id = other[other["team_id"] == team]["patient_id"].iloc[0]
    page.goto(f"{base}/patient?patient={other_id}")
    wait_for_run(page)
    assert "not shown" in page.get_by_test_id("stMain").inner_text()
    page.goto(f"{base}/patient?patient={own_id}")
    wait_for_run(page)
    assert own_id in page.get_by_test_id("stMain").inner_text()
    context.close()

    events = search_events(engine, user_key=CLINICIAN["email"])
    assert "view_worklist" in set(events["action"])
    assert events[events["action"] == "view_patient"]["target"].tolist() == [own_id]


def test_executive_sees_network_aggregates(browser, auth_app):
    base, engine, _ = auth_app
    context, page = log_in(browser, base, EXECUTIVE)
    assert page.get_by_role("heading", name="Trends").first.is_visible()
    labels = nav_labels(page)
    assert {"Trends", "Monthly review"} <= labels and "My subgroup" not in labels
    page.goto(f"{base}/worklist")
    wait_for_run(page)
    assert page.get_by_role("heading", name="My subgroup").count() == 0
    screenshot(page, "login_executive")
    context.close()


def test_unverified_email_of_a_user_is_not_authorised(browser, auth_app):
    base, engine, _ = auth_app
    context, page = log_in(browser, base, ATTACKER)
    assert page.get_by_role("heading", name="Not authorised").first.is_visible()
    assert "sub:attacker-1" in page.get_by_test_id("stMain").inner_text()
    assert page.get_by_role("heading", name="My subgroup").count() == 0
    context.close()

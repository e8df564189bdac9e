"""Every page opens on the sample network without an exception and shows real data: a named
metric with a value, or a table with rows, checked against the store where the figure is simple."""

import re

import pytest
from streamlit.testing.v1 import AppTest

from core.access.audit import search_events
from core.access.policy import page_openers
from core.access.users import list_users, save_user
from core.store.db import make_engine
from core.store.queries import data_status, months_available, organisation, team_patients
from tests.app.conftest import DASHBOARD

PAGES = page_openers()  # (demo role, page): every page, opened by a role that may open it

# What each page shows on the sample network: ("metric", label), ("table", a column of the table)
# or, for the upload page, which shows no figures, ("uploader", its widget key)
SHOWS = {
    "pages/review.py": ("metric", "Members"),
    "pages/worklist.py": ("table", "patient_id"),
    "pages/patient.py": ("metric", "As of"),
    "pages/trends.py": ("table", "metric_label"),
    "pages/compare.py": ("table", "team"),
    "pages/payments.py": ("metric", "Bundled per subgroup: margin PMPM"),  # an executive: 12-month totals withheld
    "pages/true_costs.py": ("metric", "Unused capacity, $ a year"),
    "pages/equity.py": ("table", "group"),
    "pages/econsults.py": ("metric", "Mean specialist response, days"),  # 12 months: counts withheld
    "pages/data_status.py": ("metric", "Patients"),
    "pages/data_quality.py": ("table", "check"),
    "pages/admin_rules.py": ("table", "rule_id"),
    "pages/admin_upload.py": ("uploader", "upload_files"),
    "pages/admin_users.py": ("table", "user_key"),
    "pages/admin_audit.py": ("table", "action"),
}


def test_every_page_declares_what_it_shows():
    assert {page for _, page in PAGES} == set(SHOWS)


def metric_value(at: AppTest, label: str) -> str:
    values = {m.label: m.value for m in at.metric}
    assert label in values, f"no metric {label!r} among {sorted(values)}"
    return values[label]


def table_with(at: AppTest, column: str):
    frames = [df.value for df in at.dataframe if column in df.value.columns]
    assert frames, f"no table with a {column!r} column"
    return frames[0]


def assert_shows(at: AppTest, page: str) -> None:
    kind, name = SHOWS[page]
    if kind == "metric":
        assert re.search(r"\d", metric_value(at, name)), f"metric {name!r} has no figure"
    elif kind == "uploader":
        assert at.file_uploader(key=name) is not None
    else:
        assert len(table_with(at, name)) > 0, f"the table with {name!r} is empty"


def open_page(at: AppTest, role: str, page: str) -> AppTest:
    at.session_state["demo_role"] = role
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def test_default_page_is_the_monthly_review(app):
    app.run()
    assert not app.exception
    assert app.title[0].value == "Monthly review"
    assert_shows(app, "pages/review.py")


@pytest.mark.parametrize("role,page", [p for p in PAGES if p[1] not in ("pages/admin_users.py", "pages/admin_audit.py")])
def test_page_opens(app, sample_engine, role, page):
    if page == "pages/patient.py":  # a patient of the demo clinician's team (the first team)
        team = organisation(sample_engine)["team_id"].iloc[0]
        app.query_params["patient"] = team_patients(sample_engine, months_available(sample_engine)[-1], (team,))["patient_id"].iloc[0]
    open_page(app, role, page)
    assert app.title, "every page has a title"
    assert_shows(app, page)


def test_users_page_lists_the_users_in_the_store(private_db):
    save_user(private_db, "lead@example.org", "team_leader", name="Lead", team_ids="TM01")
    at = open_page(AppTest.from_file(DASHBOARD, default_timeout=60), "admin", "pages/admin_users.py")
    assert at.title, "every page has a title"
    assert_shows(at, "pages/admin_users.py")
    assert set(table_with(at, "user_key")["user_key"]) == set(list_users(private_db)["user_key"]) == {"lead@example.org"}


def test_audit_page_lists_the_events_in_the_store(private_db):
    open_page(AppTest.from_file(DASHBOARD, default_timeout=60), "clinician", "pages/worklist.py")  # writes an event
    at = open_page(AppTest.from_file(DASHBOARD, default_timeout=60), "admin", "pages/admin_audit.py")
    assert at.title, "every page has a title"
    assert_shows(at, "pages/admin_audit.py")
    assert len(table_with(at, "action")) == len(search_events(private_db)) > 0
    assert "view_worklist" in set(table_with(at, "action")["action"])


def test_data_status_page_shows_the_database_counts(app, sample_db_url):
    status = data_status(make_engine(sample_db_url))
    app.session_state["demo_role"] = "admin"
    app.run()
    assert app.title[0].value == "Data status"  # the admin's home page
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Patients"] == f"{status['counts']['patient']:,}"
    assert metrics["Member-months"] == f"{status['counts']['attribution']:,}"

"""Every page opens on the sample network without an exception and shows real data."""

import pytest

from core.access.policy import page_openers
from core.store.db import make_engine
from core.store.queries import data_status

PAGES = page_openers()  # (demo role, page): every page, opened by a role that may open it


def test_default_page_is_the_monthly_review(app):
    app.run()
    assert not app.exception
    assert app.title[0].value == "Monthly review"


@pytest.mark.parametrize("role,page", PAGES)
def test_page_opens(app, role, page):
    app.session_state["demo_role"] = role
    app.run()
    app.switch_page(page).run()
    assert not app.exception, app.exception
    assert app.title, "every page has a title"


def test_data_status_page_shows_the_database_counts(app, sample_db_url):
    status = data_status(make_engine(sample_db_url))
    app.session_state["demo_role"] = "admin"
    app.run()
    assert app.title[0].value == "Data status"  # the admin's home page
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Patients"] == f"{status['counts']['patient']:,}"
    assert metrics["Member-months"] == f"{status['counts']['attribution']:,}"

"""In Chromium: every page a role may open is reachable by its URL from a fresh browser, and a
page the role may not open says so instead of "Page not found"."""

import pytest

from tests.browser.conftest import open_page, start_server

expect = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package").expect

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def fresh_server(sample_db_url, tmp_path_factory):
    """A server of its own, so the first request it ever serves is a typed page URL."""
    proc, base = start_server({"DATABASE_URL": sample_db_url}, tmp_path_factory.mktemp("nav") / "streamlit.log")
    yield base
    proc.terminate()
    proc.wait(timeout=20)


def _no_error(page) -> None:
    assert page.get_by_text("Page not found").count() == 0
    assert page.get_by_test_id("stException").count() == 0


@pytest.mark.parametrize("path,heading", [("review", "Monthly review"), ("trends", "Trends"), ("worklist", "My subgroup")])
def test_page_opens_by_its_url_in_a_fresh_browser(fresh_server, page, path, heading):
    # a typed URL starts a new session with no role picked yet (demo mode: the team leader, whose home is the review)
    open_page(page, f"{fresh_server}/{path}")
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("heading", name=heading).first).to_be_visible(timeout=30000)
    _no_error(page)
    if path != "review":  # the role's home page is shown at the root URL
        assert page.url.rstrip("/").endswith(f"/{path}")


def test_a_page_the_role_may_not_open_says_not_allowed(fresh_server, page):
    open_page(page, f"{fresh_server}/users")  # an admin page; the fresh demo session is a team leader's
    main = page.get_by_test_id("stMain")
    expect(main.get_by_role("heading", name="Not allowed").first).to_be_visible(timeout=30000)
    expect(main.get_by_text("may not open Users")).to_be_visible()
    _no_error(page)

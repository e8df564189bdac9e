"""What only a browser shows: the pages render in Chromium (the worklist-to-patient click: test_worklist_browser.py)."""

import pytest

from tests.browser.conftest import choose_demo_role, open_page, screenshot, wait_for_run

expect = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package").expect

pytestmark = pytest.mark.browser


@pytest.mark.parametrize(
    "role,path,heading",
    [("Team leader", "review", "Monthly review"), ("Executive", "trends", "Trends"), ("Admin / analyst", "data", "Data status")],
)
def test_page_renders(server, page, role, path, heading):
    open_page(page, server)
    choose_demo_role(page, role)  # navigate by the menu: a typed URL would start a new session
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=heading).click()
    wait_for_run(page)
    expect(page.get_by_role("heading", name=heading).first).to_be_visible(timeout=30000)
    assert page.get_by_test_id("stException").count() == 0
    screenshot(page, path)

"""The executive views in Chromium: each renders its charts without an exception (screenshots for the README)."""

import pytest

from tests.browser.conftest import choose_demo_role, open_page, screenshot, wait_for_run

expect = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package").expect

pytestmark = pytest.mark.browser

# (sidebar link and page heading, screenshot name)
VIEWS = [("Trends", "trends"), ("Team comparison", "compare"), ("Payment models and ACO", "payments"), ("Equity", "equity"),
         ("E-consults", "econsults")]  # fmt: skip


def test_executive_views_render(server, page):
    open_page(page, server)
    choose_demo_role(page, "Executive")  # navigate by the menu: a typed URL would start a new session
    for heading, name in VIEWS:
        page.get_by_test_id("stSidebarNav").get_by_role("link", name=heading).click()
        wait_for_run(page)
        expect(page.get_by_role("heading", name=heading).first).to_be_visible(timeout=30000)
        if name != "econsults":  # the e-consults view is tables only
            expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=30000)
        expect(page.get_by_test_id("stDataFrame").first).to_be_visible(timeout=30000)
        assert page.get_by_test_id("stException").count() == 0, name
        page.wait_for_timeout(500)  # let plotly finish drawing before the screenshot
        screenshot(page, name)

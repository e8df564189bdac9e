"""What only a browser shows: the pages render in Chromium, and a worklist row opens the patient."""

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


def test_worklist_row_opens_patient_page(server, page):
    open_page(page, server)
    choose_demo_role(page, "Clinician")  # the review page is not a clinician's: the worklist opens
    expect(page.get_by_role("heading", name="My subgroup").first).to_be_visible(timeout=30000)
    screenshot(page, "worklist")
    page.get_by_test_id("stDataFrame").first.click(position={"x": 15, "y": 1 * 35 + 17})
    page.wait_for_url("**/patient?patient=*", timeout=30000)
    wait_for_run(page)
    expect(page.get_by_text("Subgroup history")).to_be_visible(timeout=30000)
    assert page.get_by_test_id("stException").count() == 0
    screenshot(page, "patient")

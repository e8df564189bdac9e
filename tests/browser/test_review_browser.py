"""The monthly review in Chromium: open it on the sample network, change team and month, and
take the README's screenshot."""

from datetime import date

import pytest

from core.store.db import make_engine
from core.store.queries import months_available, organisation
from tests.browser.conftest import choose_demo_role, open_page, screenshot, wait_for_run

expect = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package").expect

pytestmark = pytest.mark.browser


def _choose(page, key: str, label: str) -> None:
    box = page.locator(f".st-key-{key}").get_by_role("combobox")
    box.click()
    box.fill(label)
    box.press("Enter")
    wait_for_run(page)
    expect(box).to_have_value(label, timeout=30000)


def test_review_changes_team_and_month(server, page, sample_db_url):
    engine = make_engine(sample_db_url)
    org = organisation(engine).set_index("team_id")
    months = months_available(engine)
    engine.dispose()

    open_page(page, server)
    choose_demo_role(page, "Executive")  # the whole network: every team in the team picker
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Monthly review").click()
    wait_for_run(page)
    expect(page.get_by_role("heading", name="Monthly review").first).to_be_visible(timeout=30000)

    _choose(page, "team", f"{org.loc['TM04', 'team']} · {org.loc['TM04', 'practice']}")
    expect(page.locator(".st-key-subgroup").get_by_role("combobox")).to_have_value("Complex", timeout=30000)
    previous: date = months[-2]
    _choose(page, "month", previous.strftime("%b %Y"))
    expect(page.get_by_text(f"Riverside Complex Care Team · Complex · scorecard: {previous:%b %Y}")).to_be_visible(timeout=30000)
    expect(page.get_by_test_id("stMetric").first).to_be_visible(timeout=30000)
    assert "month=" in page.url and "subgroup=Complex" in page.url  # the view is in the URL
    assert page.get_by_test_id("stException").count() == 0
    screenshot(page, "review")

    page.get_by_role("tab", name="Value map").click()
    chart = page.get_by_test_id("stPlotlyChart").first
    chart.scroll_into_view_if_needed()
    expect(chart).to_be_visible(timeout=30000)
    screenshot(page, "review-value-map")


def test_review_pack_pdf_is_made_on_click_and_audited(server, page, sample_db_url):
    from pypdf import PdfReader

    from core.access.audit import search_events

    engine = make_engine(sample_db_url)
    before = len(search_events(engine, action="export"))
    open_page(page, server)
    choose_demo_role(page, "Team leader")
    expect(page.get_by_role("heading", name="Monthly review").first).to_be_visible(timeout=30000)
    page.get_by_role("tab", name="Review pack").click()
    page.locator(".st-key-pack_paper").get_by_text("A4").click()
    wait_for_run(page)
    with page.expect_download(timeout=90000) as download:
        page.get_by_role("button", name="Review pack (PDF)").click()
    assert download.value.suggested_filename.endswith("-a4.pdf")
    reader = PdfReader(download.value.path())
    assert round(float(reader.pages[0].mediabox.width)) == 842 and "Scorecard by tier" in reader.pages[0].extract_text()
    assert sum(len(p.images) for p in reader.pages) == 3  # kaleido draws the charts inside the server too
    events = search_events(engine, action="export")
    assert len(events) == before + 1 and "review pack pdf a4" in events["detail"].iloc[0]
    engine.dispose()

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


def test_executive_pack_is_made_on_click_and_audited(server, page, sample_db_url):
    import io

    import openpyxl
    from pypdf import PdfReader

    from core.access.audit import search_events
    from core.store.db import make_engine

    engine = make_engine(sample_db_url)
    before = len(search_events(engine, action="export"))
    open_page(page, server)
    choose_demo_role(page, "Executive")  # the whole network
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Trends").click()
    wait_for_run(page)
    expect(page.get_by_role("button", name="Executive pack (PDF)")).to_be_visible(timeout=60000)
    with page.expect_download(timeout=90000) as download:
        page.get_by_role("button", name="Executive pack (PDF)").click()
    assert download.value.suggested_filename == "executive-pack-all-letter.pdf"
    text = "\n".join(p.extract_text() for p in PdfReader(download.value.path()).pages)
    assert "Executive pack: Whole network" in text and "year to date" in text
    with page.expect_download(timeout=90000) as download:
        page.get_by_role("button", name="Executive pack (XLSX)").click()
    book = openpyxl.load_workbook(io.BytesIO(open(download.value.path(), "rb").read()))
    assert book.sheetnames == ["Summary", "By subgroup"] and book["Summary"].freeze_panes == "A2"
    assert len(search_events(engine, action="export")) == before + 2
    engine.dispose()

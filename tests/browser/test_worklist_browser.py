"""In Chromium: a clinician's worklist row opens the patient page (screenshots of both for the README)."""

import csv
import re

import pytest

from core.views.worklist_page import GRID_COLUMNS
from tests.browser.conftest import choose_demo_role, open_page, screenshot, wait_for_run

expect = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package").expect

pytestmark = pytest.mark.browser


def test_worklist_row_opens_patient_page(server, page):
    open_page(page, server)
    choose_demo_role(page, "Clinician")  # the review page is not a clinician's: the worklist opens
    expect(page.get_by_role("heading", name="My subgroup").first).to_be_visible(timeout=30000)
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible(timeout=30000)
    # the filters above the grid draw after it: wait for them, so the screenshot shows the page whole
    for label in ("Show patients with any of these flags", "Show patients with any of these care gaps open"):
        expect(page.get_by_test_id("stMultiSelect").filter(has_text=label)).to_be_visible(timeout=30000)
    assert page.get_by_test_id("stException").count() == 0
    screenshot(page, "worklist")
    page.get_by_test_id("stDataFrame").first.click(position={"x": 15, "y": 1 * 35 + 17})  # the first patient's row
    page.wait_for_url("**/patient?patient=*", timeout=30000)
    wait_for_run(page)
    expect(page.get_by_text("Subgroup history")).to_be_visible(timeout=30000)
    expect(page.get_by_test_id("stMetric").first).to_be_visible(timeout=30000)
    assert page.get_by_test_id("stException").count() == 0
    expect(page.get_by_text("Demo clinician · Clinician (demo)")).to_be_visible()  # the demo role survives the page switch
    assert page.get_by_role("button", name="Override subgroup").count() == 0  # team leaders only
    patient_id = page.url.split("patient=")[1]
    expect(page.get_by_text(patient_id).first).to_be_visible()
    page.get_by_role("tab", name="Measurements").click()  # charts with their target lines
    expect(page.get_by_test_id("stPlotlyChart").first).to_be_visible(timeout=30000)
    page.wait_for_timeout(500)
    screenshot(page, "patient")


def test_worklist_csv_is_made_on_click_and_audited_and_tables_offer_no_download(server, page, sample_db_url):
    from core.access.audit import search_events
    from core.store.db import make_engine

    engine = make_engine(sample_db_url)
    before = len(search_events(engine, action="export"))
    open_page(page, server)
    choose_demo_role(page, "Clinician")
    table = page.get_by_test_id("stDataFrame").first
    expect(table).to_be_visible(timeout=30000)
    table.hover()  # the table's toolbar shows on hover: search and full screen, no download
    expect(page.get_by_test_id("stElementToolbar").first).to_be_attached(timeout=10000)
    assert page.get_by_role("button", name="Download as CSV").count() == 0
    assert not re.search(r"/media/[0-9a-f]+\.csv", page.content())  # the worklist file is not published with the page
    assert len(search_events(engine, action="export")) == before
    with page.expect_download(timeout=30000) as download:
        page.get_by_role("button", name="Download CSV").click()
    with open(download.value.path(), encoding="utf-8", newline="") as file:
        header = next(csv.reader(file))
    assert header == list(GRID_COLUMNS.values())  # the grid's columns under its headings, nothing it leaves out
    events = search_events(engine, action="export")
    assert len(events) == before + 1 and events["user_key"].iloc[0] == "demo-clinician"
    assert re.fullmatch(r"worklist csv \d{4}-\d{2} \w+: ([\d,]+) of \1 patients", events["detail"].iloc[0])  # which list, how many
    engine.dispose()

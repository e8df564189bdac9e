"""In Chromium against a running server: the URL of a download of patient rows serves the browser
that clicked; a second client asking for the same URL (a shared link, a proxy log) gets 404."""

import urllib.error
import urllib.request

import pytest

from tests.browser.conftest import choose_demo_role, open_page

expect = pytest.importorskip("playwright.sync_api", reason="browser tests need the playwright package").expect

pytestmark = pytest.mark.browser


def fetch_status(url: str) -> int:
    """GET ``url`` from a second client (no cookies, no session): the HTTP status."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_worklist_download_url_is_refused_to_a_second_client(server, page):
    open_page(page, server)
    choose_demo_role(page, "Clinician")
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible(timeout=30000)
    with page.expect_download(timeout=30000) as download:
        page.get_by_role("button", name="Download CSV").click()
    header = open(download.value.path(), encoding="utf-8").readline()
    assert "Patient id" in header  # the browser that clicked got the worklist
    url = download.value.url  # (a download's own response event may come after the download: not waited for)
    assert "/media/" in url
    # the same URL at once, from a client without that browser's cookies: refused
    assert fetch_status(url) == 404
    # and from another browser (a fresh context: its own cookies)
    other = page.context.browser.new_context()
    try:
        assert other.request.get(url).status == 404
    finally:
        other.close()
    assert page.context.request.get(url).status == 200  # the browser that clicked may fetch it again while it lives

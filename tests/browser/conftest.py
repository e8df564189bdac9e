"""Browser tests: a real ``streamlit run dashboard.py`` server and the system Chromium via Playwright.

Skipped with the reason when Chromium or Playwright is missing, except under
REQUIRE_SERVICES=1 (CI), where that fails the run.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, skip_or_fail

# Screenshots go to a temporary folder; UPDATE_SCREENSHOTS=1 writes the README's (docs/screenshots).
SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots" if os.environ.get("UPDATE_SCREENSHOTS") == "1" else None


def chromium_path() -> str | None:
    path = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    return path if Path(path).exists() else shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def browser():
    path = chromium_path()
    if not path:
        skip_or_fail("browser tests need Chromium (apt-get install chromium; or set CHROMIUM_PATH)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("browser tests need the playwright package (pip install -r requirements-dev.txt)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=path,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        yield browser
        browser.close()


def start_server(env_extra: dict, log_path: Path, port: int | None = None, cwd: Path = PROJECT_ROOT):
    """``streamlit run dashboard.py`` on loopback; returns (process, base URL) once healthy.

    Secrets (``[auth]``) are read from ``<cwd>/.streamlit/secrets.toml``, so a test can
    configure login by running the server from a folder of its own.
    """
    port = port or free_port()
    env = {**os.environ, **env_extra}
    env.pop("STREAMLIT_SECRETS_FILES", None)
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(PROJECT_ROOT / "dashboard.py"), "--server.headless=true",
         f"--server.port={port}", "--server.address=127.0.0.1", "--browser.gatherUsageStats=false",
         "--server.fileWatcherType=none"],
        cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{base}/_stcore/health", timeout=2).read() == b"ok":
                return proc, base
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"streamlit did not start; see {log_path}")


@pytest.fixture(scope="session")
def server(sample_db_url, tmp_path_factory):
    """The dashboard served on a free loopback port, on the small sample network."""
    proc, base = start_server({"DATABASE_URL": sample_db_url}, tmp_path_factory.mktemp("server") / "streamlit.log")
    yield base
    proc.terminate()
    proc.wait(timeout=20)


def wait_for_run(page, timeout: int = 60000) -> None:
    """Wait until Streamlit has finished the current script run (as Streamlit's own e2e tests do)."""
    page.wait_for_timeout(200)
    page.locator("[data-testid='stApp'][data-test-connection-state='CONNECTED']").wait_for(state="attached", timeout=timeout)
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(state="attached", timeout=timeout)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def open_page(page, url: str) -> None:
    """Go to a URL and wait until the app is connected and its script run has finished."""
    page.goto(url)
    page.get_by_test_id("stAppViewContainer").wait_for()
    wait_for_run(page)


def choose_demo_role(page, label: str) -> None:
    """Pick a role in the demo-mode switcher of the sidebar."""
    from playwright.sync_api import expect

    box = page.locator(".st-key-demo_role").get_by_role("combobox")
    box.click()
    box.fill(label)
    box.press("Enter")
    wait_for_run(page)
    expect(box).to_have_value(label)


def screenshot(page, name: str) -> Path:
    folder = SCREENSHOTS or Path(os.environ.get("TMPDIR", "/tmp")) / "scorecards-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path

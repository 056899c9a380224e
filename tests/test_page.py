"""The live page (GET /) in a real headless browser: Debian's chromium driven by Selenium.

After known batches, the page shows the right numbers for the right symbol (checked against
math.fsum and statistics.pvariance), follows a new batch, keeps symbol and k in the URL, fits a
phone-width screen, and shows the error state when the server is gone and recovers when it is
back. ``TRADESTATS_SCREENSHOT=docs/page.png`` also saves the screenshot shown in the README.

chromium and chromium-driver come from Debian (``.ci/run`` installs them); without them the
test is skipped, except under CI (``CI`` set), where that is a failure.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import statistics
import time
from pathlib import Path

import pytest

from conftest import ServerProcess, stop_cleanly

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError:  # pragma: no cover - reported below
    webdriver = None

MISSING = [name for name, found in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER),
                                    ("selenium", webdriver)) if not found]
if MISSING and os.environ.get("CI"):
    raise RuntimeError(f"CI needs {', '.join(MISSING)} for the browser test (see .ci/run)")
needs_browser = pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)}")

MAX_K = 3
WAIT_SECONDS = 15


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def post(server: ServerProcess, symbol: str, values: list[float]) -> None:
    reply = server.request("POST", "/add_batch/", json.dumps(
        {"symbol": symbol, "values": values}).encode(), {"Content-Type": "application/json"})
    assert reply.status == 200, reply.body


def expected_rows(prices: list[float]) -> dict[int, list[float] | None]:
    rows = {}
    for k in range(1, MAX_K + 1):
        window = prices[-10**k:]
        if len(prices) < 10**k:
            rows[k] = None
            continue
        variance = statistics.pvariance(window)
        rows[k] = [min(window), max(window), math.fsum(window) / len(window), variance,
                   math.sqrt(variance)]
    return rows


# The page updates its tables in place every second: read each table in one script call, so
# that no element can be replaced between two reads (a stale element reference).
READ_STATS = """
return Array.from(document.querySelectorAll("#stats tbody tr"), (row) => [
  Number(row.dataset.k),
  Array.from(row.cells).slice(1).map((cell) => [cell.textContent, cell.dataset.value ?? null])]);
"""
READ_SYMBOLS = """
return Array.from(document.querySelectorAll("#symbols tbody tr"), (row) =>
  Array.from(row.cells, (cell) => cell.dataset.value ?? cell.textContent));
"""


def shown_rows(driver) -> dict[int, list[float] | str]:
    rows = {}
    for k, cells in driver.execute_script(READ_STATS):
        if len(cells) == 1:
            rows[k] = cells[0][0]
        else:
            rows[k] = [float(value) for _, value in cells]
    return rows


def rows_match(shown, expected) -> bool:
    for k, want in expected.items():
        got = shown.get(k)
        if want is None:
            if got != "not enough data":
                return False
        elif not isinstance(got, list) or not all(
                math.isclose(g, w, rel_tol=1e-12, abs_tol=1e-9) for g, w in zip(got, want)):
            return False
    return True


def wait_for(driver, condition, message: str):
    return WebDriverWait(driver, WAIT_SECONDS, poll_frequency=0.1).until(
        lambda d: condition(d), message=message)


def symbol_rows(driver) -> dict[str, tuple[int, float]]:
    return {symbol: (int(count), float(last))
            for symbol, count, last in driver.execute_script(READ_SYMBOLS)}


@needs_browser
def test_the_live_page_shows_follows_and_survives_the_server(browser, tmp_path):
    rng = random.Random(11)
    aapl = [round(150 + rng.gauss(0, 3), 2) for _ in range(150)]
    msft = [round(410 + rng.gauss(0, 5), 2) for _ in range(20)]
    args = ("--max-k", str(MAX_K), "--workers", "1")
    server = ServerProcess(None, args, tmp_path / "serve.log")
    port = server.port
    try:
        post(server, "AAPL", aapl)
        post(server, "MSFT", msft)
        browser.get(f"http://127.0.0.1:{port}/?symbol=AAPL&k=2")

        # The right numbers for the right symbol; k=3 (1,000 prices) has not enough data.
        wait_for(browser, lambda d: rows_match(shown_rows(d), expected_rows(aapl)),
                 "AAPL's statistics never matched the reference")
        assert browser.find_element(By.ID, "detail-title").text == "AAPL"
        assert symbol_rows(browser) == {"AAPL": (150, aapl[-1]), "MSFT": (20, msft[-1])}
        pressed = browser.find_element(By.CSS_SELECTOR, '#windows button[aria-pressed="true"]')
        assert pressed.get_attribute("data-k") == "2"
        assert "shaded: the window of the last 100" in browser.find_element(
            By.ID, "chart-caption").text
        if os.environ.get("TRADESTATS_SCREENSHOT"):
            browser.save_screenshot(os.environ["TRADESTATS_SCREENSHOT"])

        # Selecting another symbol and window updates the URL (bookmarkable).
        browser.find_element(By.CSS_SELECTOR, '#symbols tr[data-symbol="MSFT"]').click()
        browser.find_element(By.CSS_SELECTOR, '#windows button[data-k="1"]').click()
        wait_for(browser, lambda d: d.current_url.endswith("/?symbol=MSFT&k=1"),
                 f"URL not updated: {browser.current_url}")
        wait_for(browser, lambda d: rows_match(shown_rows(d), expected_rows(msft)),
                 "MSFT's statistics never matched the reference")

        # It follows a new batch by itself.
        more = [round(420 + rng.gauss(0, 5), 2) for _ in range(90)]
        post(server, "MSFT", more)
        wait_for(browser, lambda d: rows_match(shown_rows(d), expected_rows(msft + more)),
                 "the page did not follow a new batch")
        assert symbol_rows(browser)["MSFT"] == (110, more[-1])

        # A phone-width screen: nothing wider than the viewport.
        browser.set_window_size(390, 844)
        time.sleep(0.5)
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth")
        browser.set_window_size(1280, 900)
    finally:
        stop_cleanly(server)

    # The server is gone: the page says so; it comes back: the page recovers by itself.
    status = browser.find_element(By.ID, "status")
    wait_for(browser, lambda d: "not answering" in status.text
             and "down" in status.get_attribute("class"), "no error state shown")
    restarted = ServerProcess(None, (*args, "--data-dir", str(server.data_dir)),
                              tmp_path / "restarted.log", port=port)
    try:
        wait_for(browser, lambda d: status.text.startswith("live"), "the page did not recover")
        assert rows_match(shown_rows(browser), expected_rows(msft + more))
    finally:
        stop_cleanly(restarted)


def test_the_page_is_local_and_documented(tmp_path):
    """Every script and stylesheet the page loads comes from this server."""
    server = ServerProcess(None, ("--max-k", str(MAX_K), "--workers", "1"), tmp_path / "s.log")
    try:
        page = server.request("GET", "/")
        assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
        html = page.body.decode()
        assert f'data-max-k="{MAX_K}"' in html
        for asset in ("/page/assets/page.js", "/page/assets/page.css"):
            assert f'"{asset}"' in html
            assert server.request("GET", asset).status == 200
        assert "http://" not in html and "https://" not in html
        assert "/" in server.request("GET", "/openapi.json").json()["paths"]
    finally:
        stop_cleanly(server)


def test_the_screenshot_in_the_readme_exists():
    root = Path(__file__).resolve().parent.parent
    assert (root / "docs" / "page.png").stat().st_size > 10_000
    assert "docs/page.png" in (root / "README.md").read_text()

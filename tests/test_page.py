"""The live page (GET /) in a real headless browser: Debian's chromium driven by Selenium.

After known batches, the page shows the right numbers for the right symbol (checked against
math.fsum and statistics.pvariance), follows a new batch, keeps symbol and k in the URL, fits a
phone-width screen with every column visible, draws a chart with labelled axes (the whole window
as a min/max envelope above 1,000 prices), lets the keyboard select symbols, works behind a
reverse proxy under a path prefix, and shows the error state when the server is gone and recovers
when it is back. ``TRADESTATS_SCREENSHOT=docs/page.png`` also saves the screenshot shown in the
README.

chromium and chromium-driver come from Debian (``.ci/run`` installs them); without them the
test is skipped, except under CI (``CI`` set), where that is a failure.
"""
from __future__ import annotations

import http.client
import json
import math
import os
import random
import re
import shutil
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import ServerProcess, stop_cleanly

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
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


def expected_rows(prices: list[float], max_k: int = MAX_K) -> dict[int, list[float] | None]:
    rows = {}
    for k in range(1, max_k + 1):
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


# Where every cell is: inside the viewport, its text not wider than the cell, no scrolled box.
READ_FIT = """
const width = document.documentElement.clientWidth;
const cells = Array.from(document.querySelectorAll("#stats tbody td, #symbols tbody td"));
return {
  document: document.documentElement.scrollWidth <= window.innerWidth,
  scrolled: Array.from(document.querySelectorAll(".scroll"),
                       (box) => box.scrollWidth - box.clientWidth).filter((extra) => extra > 0),
  outside: cells.filter((cell) => {
    const box = cell.getBoundingClientRect();
    return box.width === 0 || box.left < 0 || box.right > width + 0.5
      || cell.scrollWidth > cell.clientWidth + 1;
  }).map((cell) => cell.textContent),
  labels: Array.from(document.querySelectorAll("#stats tbody tr"), (row) =>
    Array.from(row.querySelectorAll("td.num"), (cell) => getComputedStyle(cell, "::before").content)),
  columns: Math.max(...Array.from(document.querySelectorAll("#stats tbody tr"), (row) => row.cells.length)),
};
"""


def assert_fits_a_phone(driver) -> None:
    """At 390 px: no horizontal overflow, every statistics column there and labelled."""
    driver.set_window_size(390, 844)
    try:
        wait_for(driver, lambda d: d.execute_script("return window.innerWidth") <= 390,
                 "the window did not narrow")
        time.sleep(1.2)   # a refresh at the new width (compact numbers)
        fit = driver.execute_script(READ_FIT)
        assert fit["document"] and not fit["scrolled"] and not fit["outside"], fit
        assert fit["columns"] == 6, fit
        full = [labels for labels in fit["labels"] if labels]
        assert full and all(labels == ['"min"', '"max"', '"avg"', '"var"', '"std"']
                            for labels in full), fit["labels"]
    finally:
        driver.set_window_size(1280, 900)


# The chart's axes as drawn: tick labels and positions, and what the chart says it shows.
READ_CHART = """
const chart = document.getElementById("chart");
const ticks = (axis) => Array.from(chart.querySelectorAll(`.${axis} .tick`), (tick) => {
  const text = tick.querySelector("text"), box = text.getBoundingClientRect();
  return [tick.dataset.value, text.textContent, box.x + box.width / 2, box.y + box.height / 2];
});
return {kind: chart.dataset.kind ?? null, low: Number(chart.dataset.low),
        high: Number(chart.dataset.high), span: Number(chart.dataset.span),
        band: chart.querySelector(".band").getAttribute("d"),
        line: chart.querySelector(".line").getAttribute("d"),
        y: ticks("y-axis"), x: ticks("x-axis"),
        caption: document.getElementById("chart-caption").textContent};
"""


def check_axes(chart: dict, low: float, high: float, span: int) -> None:
    """y: at least 3 price labels, inside the data's range (padded a little), higher up for
    higher prices; x: prices ago from 0 at the right to about ``span`` at the left."""
    assert (chart["low"], chart["high"], chart["span"]) == (low, high, span), chart
    values = [float(value) for value, _, _, _ in chart["y"]]
    assert len(values) >= 3, chart["y"]
    slack = (high - low) * 0.05 or abs(low) * 0.02 or 1
    assert all(low - slack <= v <= high + slack for v in values), (values, low, high)
    heights = [y for _, _, _, y in chart["y"]]
    assert heights == sorted(heights, reverse=True), chart["y"]   # up the screen as prices rise
    for (value, label, _, _) in chart["y"]:
        assert math.isclose(float(label.replace(",", "")), float(value), rel_tol=1e-9), label
    x = [(value, label, position) for value, label, position, _ in chart["x"]]
    assert x[-1][:2] == ("title", "prices ago"), x
    ticks = [(float(value), position) for value, _, position in x[:-1]]
    assert len(ticks) >= 3 and ticks[0][0] == 0, x
    assert [p for _, p in ticks] == sorted((p for _, p in ticks), reverse=True), x   # 0 at the right
    assert max(v for v, _ in ticks) >= span / 2 and max(v for v, _ in ticks) < span, x


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
        chart = browser.execute_script(READ_CHART)
        assert chart["kind"] == "prices" and chart["line"] and not chart["band"]
        check_axes(chart, min(aapl), max(aapl), len(aapl))

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

        # A phone-width screen: nothing wider than the viewport, every column shown.
        assert_fits_a_phone(browser)
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


READ_FOCUS = """
const row = document.activeElement.closest("#symbols tbody tr");
return row && [row.dataset.symbol, getComputedStyle(row).outlineStyle,
               Array.from(document.querySelectorAll("#symbols tbody tr"),
                          (r) => [r.dataset.symbol, r.tabIndex, r.getAttribute("aria-selected")])];
"""


@needs_browser
def test_symbols_are_selected_from_the_keyboard(browser, tmp_path):
    """Tab reaches the symbols (one row in the tab order), arrow keys move, Enter and Space
    select; the focus is visible and survives the page's refreshes, a new symbol included."""
    rng = random.Random(5)
    prices = {name: [round(base + rng.gauss(0, 2), 2) for _ in range(30)]
              for name, base in (("AAPL", 150), ("MSFT", 410), ("NVDA", 120))}
    server = ServerProcess(None, ("--max-k", str(MAX_K), "--workers", "1"), tmp_path / "k.log")
    try:
        for name, values in prices.items():
            post(server, name, values)
        browser.get(f"http://127.0.0.1:{server.port}/?symbol=MSFT&k=1")
        wait_for(browser, lambda d: rows_match(shown_rows(d), expected_rows(prices["MSFT"])),
                 "MSFT never shown")
        keys = ActionChains(browser)

        def press(*names):
            for name in names:
                keys.send_keys(name).perform()

        def focus():
            return browser.execute_script(READ_FOCUS)

        press(Keys.TAB)   # nothing focusable before the symbols: the selected row is the stop
        symbol, outline, rows = focus()
        assert symbol == "MSFT" and outline != "none", focus()
        assert rows == [["AAPL", -1, "false"], ["MSFT", 0, "true"], ["NVDA", -1, "false"]]

        press(Keys.ARROW_DOWN)   # moves, does not select
        assert focus()[0] == "NVDA" and browser.current_url.endswith("?symbol=MSFT&k=1")
        press(Keys.ARROW_DOWN)   # stays on the last row
        assert focus()[0] == "NVDA"
        press(Keys.ENTER)
        wait_for(browser, lambda d: d.current_url.endswith("?symbol=NVDA&k=1"), "Enter did not select")
        wait_for(browser, lambda d: rows_match(shown_rows(d), expected_rows(prices["NVDA"])),
                 "NVDA never shown")
        assert focus()[2][2] == ["NVDA", 0, "true"]

        press(Keys.HOME)
        assert focus()[0] == "AAPL"
        scrolled = browser.execute_script("return window.scrollY")
        press(Keys.SPACE)   # selects, and does not scroll the page
        wait_for(browser, lambda d: d.current_url.endswith("?symbol=AAPL&k=1"), "Space did not select")
        wait_for(browser, lambda d: rows_match(shown_rows(d), expected_rows(prices["AAPL"])),
                 "AAPL never shown")
        assert browser.execute_script("return window.scrollY") == scrolled
        press(Keys.END, Keys.ARROW_UP)
        assert focus()[0] == "MSFT"

        # Refreshes keep the focus where it is, even when a new symbol rebuilds the rows.
        time.sleep(1.5)
        assert focus()[0] == "MSFT"
        post(server, "AMD", [100.0, 101.0])
        wait_for(browser, lambda d: "AMD" in symbol_rows(d), "AMD never listed")
        symbol, outline, rows = focus()
        assert symbol == "MSFT" and outline != "none"
        assert [tabindex for _, tabindex, _ in rows] == [-1, -1, 0, -1]   # AAPL AMD MSFT NVDA
        press(Keys.ARROW_UP, Keys.ENTER)
        wait_for(browser, lambda d: d.current_url.endswith("?symbol=AMD&k=1"), "AMD not selected")

        # The window buttons were keyboard-reachable already: Tab goes on to them.
        press(Keys.TAB)
        assert browser.switch_to.active_element.get_attribute("data-k") == "1"
    finally:
        stop_cleanly(server)


class PrefixProxy:
    """A reverse proxy serving the server under /tradestats/ (as nginx's ``location
    /tradestats/ { proxy_pass http://server/; }`` does), in a thread, for the length of a test.
    It records every path asked for; anything outside the prefix is a 404."""

    PREFIX = "/tradestats"

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.paths: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10

            def do_GET(self):  # noqa: N802 - http.server's name
                proxy.paths.append(self.path)
                if not self.path.startswith(proxy.PREFIX + "/"):
                    self.send_error(404)
                    return
                connection = http.client.HTTPConnection("127.0.0.1", proxy.upstream, timeout=5)
                try:
                    connection.request("GET", self.path[len(proxy.PREFIX):])
                    reply = connection.getresponse()
                    body = reply.read()
                finally:
                    connection.close()
                self.send_response(reply.status)
                for name in ("Content-Type", "Cache-Control"):
                    if reply.getheader(name):
                        self.send_header(name, reply.getheader(name))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}{self.PREFIX}/"

    def __enter__(self) -> "PrefixProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()


@needs_browser
def test_the_whole_window_as_an_envelope_behind_a_proxy_under_a_prefix(browser, tmp_path):
    """Behind a reverse proxy at /tradestats/ the page, its assets, its API calls and /docs all
    stay under the prefix. With 12,000 prices and k=4 the chart is the min/max envelope of the
    whole window of 10,000 (its range is the window's, not the last 1,000's nor all 12,000's);
    k=3 is back to the prices themselves."""
    rng = random.Random(7)
    walk, level = [], 180.0
    for _ in range(12_000):
        level = max(1.0, level + rng.gauss(0, 0.6))
        walk.append(round(level, 2))
    window = walk[-10_000:]
    # The test can tell the whole window from the last 1,000 and from every price stored.
    assert (min(window), max(window)) != (min(walk[-1000:]), max(walk[-1000:]))
    assert (min(window), max(window)) != (min(walk), max(walk))
    others = {"MSFT": [round(410 + rng.gauss(0, 4), 2) for _ in range(2_500)],
              "NVDA": [round(120 + rng.gauss(0, 2), 2) for _ in range(400)]}
    server = ServerProcess(None, ("--max-k", "4", "--workers", "1"), tmp_path / "e.log")
    try:
        for start in range(0, len(walk), 6_000):
            post(server, "AAPL", walk[start:start + 6_000])
        for name, values in others.items():
            post(server, name, values)
        with PrefixProxy(server.port) as proxy:
            browser.get(proxy.url + "?symbol=AAPL&k=4")
            wait_for(browser, lambda d: rows_match(shown_rows(d), expected_rows(walk, 4)),
                     "AAPL's statistics never matched through the proxy")
            wait_for(browser, lambda d: d.execute_script(READ_CHART)["kind"] == "envelope",
                     "no envelope for k=4")
            chart = browser.execute_script(READ_CHART)
            assert chart["band"] and not chart["line"]
            check_axes(chart, min(window), max(window), 10_000)
            assert "whole window of the last 10,000 prices" in chart["caption"], chart["caption"]
            assert browser.current_url == proxy.url + "?symbol=AAPL&k=4"
            assert browser.find_element(By.ID, "status").text.startswith("live")
            if os.environ.get("TRADESTATS_SCREENSHOT"):
                browser.save_screenshot(os.environ["TRADESTATS_SCREENSHOT"])
            assert_fits_a_phone(browser)

            # k=3: 1,000 prices, drawn one by one again, the window shaded.
            browser.find_element(By.CSS_SELECTOR, '#windows button[data-k="3"]').click()
            wait_for(browser, lambda d: d.execute_script(READ_CHART)["kind"] == "prices",
                     "k=3 is not the prices chart")
            chart = browser.execute_script(READ_CHART)
            check_axes(chart, min(walk[-1000:]), max(walk[-1000:]), 1000)
            # MSFT (2,500 prices) has no window of 10,000: its k=4 chart is its last 1,000.
            browser.find_element(By.CSS_SELECTOR, '#symbols tr[data-symbol="MSFT"]').click()
            browser.find_element(By.CSS_SELECTOR, '#windows button[data-k="4"]').click()
            wait_for(browser, lambda d: rows_match(shown_rows(d), expected_rows(others["MSFT"], 4)),
                     "MSFT's statistics never matched through the proxy")
            wait_for(browser, lambda d: "longer than the chart" in d.execute_script(READ_CHART)["caption"],
                     "MSFT's k=4 chart")
            assert browser.execute_script(READ_CHART)["kind"] == "prices"

            # /docs under the prefix: Swagger UI loads its files and the document from there.
            browser.get(proxy.url + "docs")
            wait_for(browser, lambda d: d.execute_script(
                "return document.querySelectorAll('.swagger-ui .opblock').length") > 5,
                "Swagger UI did not load under the prefix")
            outside = [path for path in proxy.paths
                       if not path.startswith(PrefixProxy.PREFIX + "/") and path != "/favicon.ico"]
            assert not outside, outside
            for path in ("/tradestats/page/assets/page.js", "/tradestats/symbols",
                         "/tradestats/docs/assets/swagger-ui-bundle.js", "/tradestats/openapi.json"):
                assert path in proxy.paths, (path, sorted(set(proxy.paths)))
            assert any(path.startswith("/tradestats/envelope/?symbol=AAPL&k=4&buckets=")
                       for path in proxy.paths)
    finally:
        stop_cleanly(server)


def test_the_page_is_local_and_documented(tmp_path):
    """Every script and stylesheet the page loads comes from this server, by a relative URL
    (so that it works under a path prefix): the page's, its script's and /docs's."""
    server = ServerProcess(None, ("--max-k", str(MAX_K), "--workers", "1"), tmp_path / "s.log")
    try:
        page = server.request("GET", "/")
        assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
        html = page.body.decode()
        assert f'data-max-k="{MAX_K}"' in html
        for asset in ("page/assets/page.js", "page/assets/page.css"):
            assert f'"{asset}"' in html
            assert server.request("GET", "/" + asset).status == 200
        assert "http://" not in html and "https://" not in html
        docs = server.request("GET", "/docs").body.decode()
        for text in (html, docs):
            urls = re.findall(r'(?:src|href|url:)\s*=?\s*"([^"]+)"', text)
            assert urls and not [url for url in urls if url.startswith("/")], urls
        script = server.request("GET", "/page/assets/page.js").body.decode()
        calls = re.findall(r'getJson\([`"](/?)(\w+)', script)
        assert {name for _, name in calls} == {"symbols", "stats", "prices", "envelope"}, calls
        assert not [name for slash, name in calls if slash], calls
        assert "/" in server.request("GET", "/openapi.json").json()["paths"]
    finally:
        stop_cleanly(server)


def test_the_screenshot_in_the_readme_exists():
    root = Path(__file__).resolve().parent.parent
    assert (root / "docs" / "page.png").stat().st_size > 10_000
    assert "docs/page.png" in (root / "README.md").read_text()

"""The /dashboard page in headless Debian chromium: it renders and its charts move.

Skipped only when chromium or chromedriver is missing (the test command,
``bash .ci/run``, installs them as root on Debian); selenium is in the ``test`` extra, so a missing
selenium fails the import instead of skipping.
"""

from __future__ import annotations

import shutil
import time

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from webapp_fixtures import live_fixture  # noqa: F401  (the live fixture)

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver: "
           "apt-get install -y chromium chromium-driver")


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--no-first-run", "--window-size=1200,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


# One read of the page's state (the charts are redrawn every second: element
# references would go stale between two reads).
SNAPSHOT = """
const out = {charts: {}};
for (const name of ["queue", "batch", "latency", "commits"]) {
  const svg = document.getElementById("chart-" + name);
  out.charts[name] = {
    lines: [...svg.querySelectorAll("polyline")].map(p => p.getAttribute("points")),
    labels: [...svg.querySelectorAll("text")].map(t => t.textContent),
    unit: svg.dataset.unit, max: Number(svg.dataset.max),
    now: document.getElementById("now-" + name).textContent};
}
out.samples = Number(document.getElementById("sample-count").textContent || 0);
out.requests = Number(document.getElementById("requests").textContent || 0);
out.status = document.getElementById("status").textContent;
return out;
"""


def test_dashboard_renders_and_its_charts_update(live, browser):
    browser.get(live.url + "/dashboard")
    assert browser.title == "sqlite-gateway dashboard"
    def snapshot_when(ready):
        def probe():
            state = browser.execute_script(SNAPSHOT)
            return state if ready(state) else None
        return probe

    first = _wait(snapshot_when(lambda s: s["samples"] >= 2), 20, "two samples")
    for name, chart in first["charts"].items():
        assert chart["lines"] and all(chart["lines"]), name
        # The time axis: 120 samples back (0.2 s apart in the tests) to now.
        assert "now" in chart["labels"] and "-24 s" in chart["labels"]
        assert chart["unit"] in chart["labels"]  # the y axis says what it counts
        assert "0" in chart["labels"] and len(chart["labels"]) >= 8  # a y scale
        assert chart["now"] not in ("", "\u2013"), name  # the current value

    assert live.post("/api/pages", {"name": "hot", "cap": 1000}).status == 201
    for _ in range(50):
        assert live.post("/api/pages/hot/view").status == 200

    later = _wait(snapshot_when(lambda s: s["charts"]["commits"]["max"] > 0
                                and s["requests"] >= 51), 20, "commits/s above zero")
    assert later["charts"]["commits"]["lines"] != first["charts"]["commits"]["lines"]
    assert later["status"] == "live"
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_a_page_counts_its_view_by_a_json_post_from_its_script(live, browser):
    assert live.post("/api/pages", {"name": "a?b#c/d", "cap": 2}).status == 201
    browser.get(live.url + "/")
    link = browser.find_element(By.LINK_TEXT, "a?b#c/d")
    assert link.get_attribute("href").endswith("/pages/a%3Fb%23c%2Fd")
    link.click()
    _wait(lambda: browser.find_element(By.ID, "views").text == "1", 20, "the view counted")
    assert browser.find_element(By.TAG_NAME, "h1").text == "a?b#c/d"
    assert live.get("/api/pages/a%3Fb%23c%2Fd").json["views"] == 1
    browser.refresh()
    _wait(lambda: browser.find_element(By.ID, "views").text == "2", 20, "the second view")
    browser.refresh()
    _wait(lambda: "cap is reached" in browser.find_element(By.ID, "outcome").text, 20,
          "the cap message")
    assert live.get("/api/pages/a%3Fb%23c%2Fd").json["views"] == 2
    # The page's own script ran under the policy; its only error is the 410 at the cap.
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert all("status of 410" in message for message in errors), errors

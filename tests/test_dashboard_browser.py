"""The /dashboard page in headless Debian chromium: it renders and its charts move.

Skipped only when chromium or chromedriver is missing (the README test
command installs them); selenium is in the ``test`` extra, so a missing
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


def test_dashboard_renders_and_its_charts_update(live, browser):
    browser.get(live.url + "/dashboard")
    assert browser.title == "sqlite-gateway dashboard"
    for chart in ("queue", "batch", "latency", "commits"):
        svg = browser.find_element(By.ID, f"chart-{chart}")
        assert svg.tag_name == "svg" and svg.find_elements(By.TAG_NAME, "polyline")

    def count():
        return int(browser.find_element(By.ID, "sample-count").text or 0)

    _wait(lambda: count() >= 2, 20, "two samples")
    line = browser.find_element(By.CSS_SELECTOR, "#chart-commits polyline")
    before = line.get_attribute("points")
    assert before

    assert live.post("/api/pages", {"name": "hot", "cap": 1000}).status == 201
    for _ in range(50):
        assert live.post("/api/pages/hot/view").status == 200

    commits = browser.find_element(By.ID, "chart-commits")
    _wait(lambda: float(commits.get_attribute("data-max")) > 0, 20, "commits/s above zero")
    assert line.get_attribute("points") != before
    assert int(browser.find_element(By.ID, "requests").text) >= 51
    assert browser.find_element(By.ID, "status").text == "live"
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]

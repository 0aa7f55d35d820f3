"""Headless Chromium for the status page's tests (test_statuspage.py, tests/control/): Debian's chromium
and chromium-driver, driven through WebDriver with Debian's python3-selenium. One browser per test
module, with or without JavaScript, in a profile of its own that is removed afterwards. Screenshots go
to LBD_SCREENSHOTS (meson-logs/statuspage/ in a meson run), beside the test log."""

import contextlib
import os
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

import lbdtest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = Path(os.environ.get("LBD_SCREENSHOTS") or tempfile.mkdtemp(prefix="lbd-statuspage-"))


def require():
    """Skips the calling test module when the browser or its driver is missing."""
    pytest.importorskip("selenium.webdriver", reason="python3-selenium is not installed")
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip("chromium and chromium-driver are not installed", allow_module_level=True)


@contextlib.contextmanager
def chromium(js=True, width=1280, height=1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="lbd-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    if not js:
        opts.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(20)
    driver.js = js
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shot(driver, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}-{'js' if driver.js else 'nojs'}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")


def page_url(lbd):
    return f"http://127.0.0.1:{lbd.admin_port}/"


def open_page(driver, lbd):
    """Loads the page; with JavaScript, waits until its script has redrawn the table."""
    from selenium.webdriver.common.by import By

    driver.get(page_url(lbd))
    assert driver.find_elements(By.CSS_SELECTOR, "#backends tbody"), driver.page_source[:2000]
    if driver.js:
        # The script took over: its rows carry buttons, the server's carry forms.
        lbdtest.wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#backends button[data-action]"), 5,
                           "the page's script to redraw the table")
    else:
        assert not driver.find_elements(By.CSS_SELECTOR, "#backends button[data-action]")


class _Snapshot(HTMLParser):
    """What one serialized copy of the page shows: the script redraws the table every second, so
    elements found one by one may go stale in between; page_source is one consistent copy."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows = {}       # address: {"state_class", "state", label: text}
        self.texts = {}      # element id: its text
        self._row = None
        self._label = None
        self._in_state = False
        self._ids = []       # [(tag, id, depth at start)]
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._depth += 1
        if a.get("id"):
            self._ids.append((tag, a["id"], self._depth))
            self.texts.setdefault(a["id"], "")
        if tag == "tr" and "data-backend" in a:
            self._row = self.rows.setdefault(a["data-backend"], {"state_class": a.get("data-state", ""),
                                                                 "state": ""})
        elif tag == "td" and self._row is not None:
            self._label = a.get("data-label")
            if self._label:
                self._row[self._label] = ""
        elif tag == "span" and self._row is not None and "state" in (a.get("class") or "").split():
            self._in_state = True

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None
        elif tag == "td":
            self._label = None
        elif tag == "span":
            self._in_state = False
        while self._ids and self._ids[-1][2] >= self._depth:
            self._ids.pop()
        self._depth -= 1

    def handle_data(self, data):
        for _, ident, _ in self._ids:
            self.texts[ident] += data
        if self._row is not None:
            if self._in_state:
                self._row["state"] += data
            if self._label:
                self._row[self._label] += data


def snapshot(driver):
    """The page as it is now, in one piece: .rows and .texts (see _Snapshot)."""
    parser = _Snapshot()
    parser.feed(driver.page_source)
    parser.close()
    for row in parser.rows.values():
        for k in list(row):
            row[k] = row[k].strip()
    return parser


def rows(driver):
    """{address: (state class, state word)} as the page shows it now."""
    return {addr: (r["state_class"], r["state"]) for addr, r in snapshot(driver).rows.items()}


def text(driver, ident):
    """The text of the element with id <ident> now ("" when there is none)."""
    return snapshot(driver).texts.get(ident, "")


def click(driver, css, timeout=5.0):
    """Clicks the element <css> selects, finding it again if the script redrew it meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def attempt():
        try:
            found = driver.find_elements(By.CSS_SELECTOR, css)
            if not found:
                return False
            found[0].click()
            return True
        except StaleElementReferenceException:
            return False
    lbdtest.wait_until(attempt, timeout, f"{css} to click", interval=0.05)


def seen(driver, lbd, pred):
    """pred() on the page as it is now: redrawn by the script, or reloaded without it (pred reads the
    page with snapshot(), rows() or text())."""
    if not driver.js:
        driver.get(page_url(lbd))
    return pred()

"""The status page at / on lbd's admin listener, in a real browser: headless Chromium (Debian's chromium and
chromium-driver) driven through WebDriver (Debian's python3-selenium), once with JavaScript and once
without (the server-rendered table). Against lbd with a static pool of test backends the test controls:
one row per backend with the right states, a killed backend shown down within 2 s, a drain from the page
(with its confirmation), charts with data points, the timeline; and a page on another origin that tries
to drain a backend through the browser gets refused. A screenshot of each state is written to
meson-logs/statuspage/ (LBD_SCREENSHOTS) beside the test log."""

import os
import shutil
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import lbdtest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = Path(os.environ.get("LBD_SCREENSHOTS") or tempfile.mkdtemp(prefix="lbd-statuspage-"))

webdriver = pytest.importorskip("selenium.webdriver", reason="python3-selenium is not installed")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

pytestmark = pytest.mark.skipif(not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
                                reason="chromium and chromium-driver are not installed")

DOWN_WITHIN = 2.0  # seconds from a backend's death to "down" on the page


@pytest.fixture(scope="module", params=[True, False], ids=["js", "nojs"])
def browser(request):
    js = request.param
    profile = tempfile.mkdtemp(prefix="lbd-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--disable-background-networking",
                "--window-size=1280,1000", f"--user-data-dir={profile}"):
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
    driver.get(page_url(lbd))
    rows = driver.find_elements(By.CSS_SELECTOR, "#backends tbody tr")
    assert rows, driver.page_source[:2000]
    if driver.js:
        # The script took over: its rows carry buttons, the server's carry forms.
        lbdtest.wait_until(lambda: driver.find_elements(By.CSS_SELECTOR, "#backends button[data-action]"), 5,
                           "the page's script to redraw the table")
    else:
        assert driver.find_elements(By.CSS_SELECTOR, "#backends form[action='/page/confirm']")
        assert not driver.find_elements(By.CSS_SELECTOR, "#backends button[data-action]")


def rows(driver):
    """{address: (state class, state word)} as the page shows it now."""
    out = {}
    for tr in driver.find_elements(By.CSS_SELECTOR, "#backends tbody tr"):
        state = tr.find_element(By.CSS_SELECTOR, ".state")
        out[tr.get_attribute("data-backend")] = (tr.get_attribute("data-state"), state.text.strip())
    return out


def seen(driver, lbd, pred):
    """pred(rows) on the page as it is now: redrawn by the script, or reloaded without it."""
    if not driver.js:
        driver.get(page_url(lbd))
    try:
        return pred(rows(driver))
    except Exception:  # noqa: BLE001 - a row redrawn under our feet: look again
        return False


def test_rows_and_states(harness, browser):
    b1, b2, b3 = harness.backends(3)
    dead = lbdtest.Backend(harness.workdir, "never-started")  # a port nobody listens on
    lbd = harness.lbd([b1, b2, b3, dead], healthy=3)
    open_page(browser, lbd)
    lbdtest.wait_until(lambda: seen(browser, lbd, lambda r: r.get(dead.addr, ("",))[0] == "down"), 5,
                       "the dead backend shown down")
    r = rows(browser)
    assert set(r) == {b1.addr, b2.addr, b3.addr, dead.addr}, r
    for b in (b1, b2, b3):
        assert r[b.addr] == ("up", "up"), r
    assert r[dead.addr] == ("down", "down"), r
    # Colour and word: the state's badge is coloured by its class and says the word.
    badge = browser.find_element(By.CSS_SELECTOR, f'tr[data-backend="{b1.addr}"] .state')
    assert "st-up" in badge.get_attribute("class")
    assert browser.find_element(By.ID, "s-healthy").text == "3 of 4"
    assert browser.find_element(By.ID, "s-desired").text == "4"
    strip = browser.find_elements(By.CSS_SELECTOR, f'tr[data-backend="{b1.addr}"] .strip i.ck-o')
    assert strip, "the health strip shows passed checks"
    shot(browser, "1-rows")


def test_killed_backend_turns_down(harness, browser):
    b1, b2 = harness.backends(2)
    lbd = harness.lbd([b1, b2], healthy=2)
    open_page(browser, lbd)
    assert rows(browser)[b1.addr] == ("up", "up")
    killed = time.monotonic()
    b1.kill()
    lbdtest.wait_until(lambda: seen(browser, lbd, lambda r: r[b1.addr] == ("down", "down")), DOWN_WITHIN,
                       f"{b1.addr} shown down on the page", interval=0.05)
    took = time.monotonic() - killed
    print(f"down on the page {took:.2f} s after the kill")
    assert rows(browser)[b2.addr] == ("up", "up")
    shot(browser, "2-down")


def test_drain_from_the_page(harness, browser):
    b1, b2 = harness.backends(2)
    lbd = harness.lbd([b1, b2], healthy=2)
    open_page(browser, lbd)
    row = f'tr[data-backend="{b1.addr}"]'
    if browser.js:
        browser.find_element(By.CSS_SELECTOR, f'{row} button[data-action="drain"]').click()
        # Asked first, inline; nothing changed yet.
        yes = lbdtest.wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, f"{row} button[data-confirm]"),
                                 5, "the confirmation")
        assert lbd.backend_status(b1.addr)["maintenance"] is False
        shot(browser, "3-confirm")
        yes[0].click()
    else:
        browser.find_element(By.CSS_SELECTOR, f'{row} button[value="drain"]').click()
        # The confirmation page; nothing changed yet.
        assert "Drain " + b1.addr in browser.find_element(By.TAG_NAME, "h1").text
        assert lbd.backend_status(b1.addr)["maintenance"] is False
        shot(browser, "3-confirm")
        browser.find_element(By.ID, "confirm").click()
    lbdtest.wait_until(lambda: lbd.backend_status(b1.addr)["maintenance"] is True, 5, "the drain to reach lbd")
    st = lbd.backend_status(b1.addr)
    assert st["in_rotation"] is False, st
    lbdtest.wait_until(lambda: seen(browser, lbd, lambda r: r[b1.addr] == ("drained", "drained")), 5,
                       "the page to show it drained")
    assert browser.current_url == page_url(lbd)
    assert browser.find_element(By.ID, "s-draining").text == "1"
    # The timeline says who did it.
    lbdtest.wait_until(lambda: seen(browser, lbd, lambda r: "(status page)" in browser.find_element(
        By.ID, "timeline").text), 5, "the drain in the timeline")
    assert f"Drained {b1.addr} (status page)" in browser.find_element(By.ID, "timeline").text
    shot(browser, "4-drained")

    # And back.
    if browser.js:
        browser.find_element(By.CSS_SELECTOR, f'{row} button[data-action="enable"]').click()
        lbdtest.wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, f"{row} button[data-confirm]"), 5,
                           "the confirmation")[0].click()
    else:
        browser.find_element(By.CSS_SELECTOR, f'{row} button[value="enable"]').click()
        browser.find_element(By.ID, "confirm").click()
    lbdtest.wait_until(lambda: lbd.backend_status(b1.addr)["maintenance"] is False, 5, "the enable")


def chart_points(driver, name):
    d = driver.find_element(By.CSS_SELECTOR, f"#chart-{name} path").get_attribute("d") or ""
    return d.count("M") + d.count("L")


def test_charts_have_data_points(harness, browser):
    b1, b2 = harness.backends(2)
    lbd = harness.lbd([b1, b2], healthy=2)
    open_page(browser, lbd)
    # Traffic over a few seconds, bounded in count and time.
    deadline = time.monotonic() + 4.0
    sent = 0
    with lbdtest.HttpConnection(lbd.port) as conn:
        while time.monotonic() < deadline and sent < 400:
            assert conn.get(f"/c{sent}").status == 200
            sent += 1
            time.sleep(0.01)
    lbdtest.wait_until(lambda: seen(browser, lbd, lambda r: chart_points(browser, "rps") >= 3
                                    and chart_points(browser, "p99") >= 2
                                    and chart_points(browser, "healthy") >= 3), 5, "the charts to draw")
    caption = browser.find_element(By.CSS_SELECTOR, "#chart-rps .max").text
    assert caption.startswith("max ") and float(caption[4:]) >= 1, caption
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-backend="{b1.addr}"]')
    assert "ms" in row.find_elements(By.CSS_SELECTOR, "td.num")[4].text  # p99 of the backend
    shot(browser, "5-charts")


def test_phone_width(harness, browser):
    b1, = harness.backends(1)
    lbd = harness.lbd([b1], healthy=1)
    browser.set_window_size(390, 900)
    try:
        open_page(browser, lbd)
        # Nothing wider than the screen: the rows become cards.
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400, width
        assert browser.find_element(By.CSS_SELECTOR, f'tr[data-backend="{b1.addr}"] .state').is_displayed()
        shot(browser, "6-phone")
    finally:
        browser.set_window_size(1280, 1000)


class _EvilHandler(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self):  # noqa: N802 - http.server's name
        body = (f'<!doctype html><form id="f" method="post" action="{self.target}"></form>'
                f'<script>document.getElementById("f").submit()</script>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_another_site_cannot_drain(harness, browser):
    """A page from another origin (127.0.0.2) that posts a form to the admin API and to the page's own
    route: the browser sends it with the operator's reach, lbd refuses it by its Origin and token."""
    if not browser.js:
        pytest.skip("the attacking page needs JavaScript to submit itself")
    b1, b2 = harness.backends(2)
    lbd = harness.lbd([b1, b2], healthy=2)
    for target in (f"/backends/{b1.addr}/drain", f"/page/backends/{b1.addr}/drain"):
        handler = type("Evil", (_EvilHandler,), {"target": f"http://127.0.0.1:{lbd.admin_port}{target}"})
        server = ThreadingHTTPServer(("127.0.0.2", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            browser.get(f"http://127.0.0.2:{server.server_address[1]}/")
            time.sleep(1.0)  # the form posts itself at once; leave it time to land
            assert lbd.backend_status(b1.addr)["maintenance"] is False, target
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
    # Without a browser: no token, or a foreign Origin, is refused as well.
    r = lbd.admin("POST", f"/page/backends/{b1.addr}/drain")
    assert r.status == 403 and b"token" in r.body, r.body
    r = lbd.admin("POST", f"/backends/{b1.addr}/drain", {"Origin": "http://evil.example", "Connection": "close"})
    assert r.status == 403, r.body
    assert lbd.backend_status(b1.addr)["maintenance"] is False
    # Scripts keep working as before.
    assert lbd.admin("POST", f"/backends/{b1.addr}/drain").status == 200
    assert lbd.backend_status(b1.addr)["maintenance"] is True

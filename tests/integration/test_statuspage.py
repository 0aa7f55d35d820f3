"""The status page at / on lbd's admin listener, in a real browser: headless Chromium (Debian's chromium and
chromium-driver) driven through WebDriver (Debian's python3-selenium), once with JavaScript and once
without (the server-rendered table). Against lbd with a static pool of test backends the test controls:
one row per backend with the right states, a killed backend shown down within 2 s, a drain from the page
(with its confirmation), charts with data points, the timeline; and a page on another origin that tries
to drain a backend through the browser gets refused. A screenshot of each state is written to
meson-logs/statuspage/ (LBD_SCREENSHOTS) beside the test log; pagebrowser.py runs the browser."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import lbdtest
import pagebrowser
from pagebrowser import open_page, page_url, rows, shot

pagebrowser.require()
from selenium.webdriver.common.by import By  # noqa: E402

DOWN_WITHIN = 2.0  # seconds from a backend's death to "down" on the page


@pytest.fixture(scope="module", params=[True, False], ids=["js", "nojs"])
def browser(request):
    with pagebrowser.chromium(js=request.param) as driver:
        yield driver


def seen(driver, lbd, pred):
    """pred(rows) on the page as it is now."""
    return pagebrowser.seen(driver, lbd, lambda: pred(rows(driver)))


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
    assert f'<span class="state st-up">up</span>' in browser.page_source
    assert browser.find_element(By.ID, "s-healthy").text == "3 of 4"
    assert browser.find_element(By.ID, "s-desired").text == "4"
    checks = pagebrowser.snapshot(browser).rows[b1.addr]["Health checks"]
    assert checks and set(checks) == {"+"}, f"the health strip shows passed checks: {checks!r}"
    if not browser.js:
        assert browser.find_elements(By.CSS_SELECTOR, "#backends form[action='/page/confirm']")
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
        pagebrowser.click(browser, f'{row} button[data-action="drain"]')
        # Asked first, inline; nothing changed yet.
        lbdtest.wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, f"{row} button[data-confirm]"), 5,
                           "the confirmation")
        assert lbd.backend_status(b1.addr)["maintenance"] is False
        shot(browser, "3-confirm")
        pagebrowser.click(browser, f"{row} button[data-confirm]")
    else:
        pagebrowser.click(browser, f'{row} button[value="drain"]')
        # The confirmation page; nothing changed yet.
        lbdtest.wait_until(lambda: "/page/confirm?" in browser.current_url, 5, "the confirmation page")
        assert f"<h1>Drain {b1.addr}?</h1>" in browser.page_source
        assert lbd.backend_status(b1.addr)["maintenance"] is False
        shot(browser, "3-confirm")
        pagebrowser.click(browser, "#confirm")
    lbdtest.wait_until(lambda: lbd.backend_status(b1.addr)["maintenance"] is True, 5, "the drain to reach lbd")
    st = lbd.backend_status(b1.addr)
    assert st["in_rotation"] is False, st
    lbdtest.wait_until(lambda: seen(browser, lbd, lambda r: r[b1.addr] == ("drained", "drained")), 5,
                       "the page to show it drained")
    assert browser.current_url == page_url(lbd)
    assert browser.find_element(By.ID, "s-draining").text == "1"
    # The timeline says who did it.
    lbdtest.wait_until(lambda: pagebrowser.seen(
        browser, lbd, lambda: f"Drained {b1.addr} (status page)" in pagebrowser.text(browser, "timeline")), 5,
        "the drain in the timeline")
    shot(browser, "4-drained")

    # And back.
    if browser.js:
        pagebrowser.click(browser, f'{row} button[data-action="enable"]')
        pagebrowser.click(browser, f"{row} button[data-confirm]")
    else:
        pagebrowser.click(browser, f'{row} button[value="enable"]')
        lbdtest.wait_until(lambda: "/page/confirm?" in browser.current_url, 5, "the confirmation page")
        pagebrowser.click(browser, "#confirm")
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
    assert pagebrowser.snapshot(browser).rows[b1.addr]["p99"].endswith(" ms")  # the backend's p99
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
        assert pagebrowser.rows(browser)[b1.addr] == ("up", "up")
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

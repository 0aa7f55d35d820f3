"""The status page with the local provider, in headless Chromium with JavaScript: the three relays as
rows with their instance ids and ages, the launches in the timeline; a relay killed shows down, its
replacement is launched, and the timeline says a launch made up for a lost instance; a reload is on the
timeline too. Screenshots in meson-logs/statuspage/ (see tests/integration/pagebrowser.py)."""

import os
import signal

import pytest

import localenv
from localenv import lbdtest

import pagebrowser  # tests/integration, on the path through localenv

pagebrowser.require()
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture
def env(tmp_path):
    yield from localenv.fixture(tmp_path)


def timeline(driver):
    return pagebrowser.text(driver, "timeline")


def test_page_follows_the_pool(env):
    lbd = env.start_lbd(desired=3)
    relays = env.wait_relays(3)
    env.wait_healthy(3)
    with pagebrowser.chromium(js=True) as browser:
        pagebrowser.open_page(browser, lbd)
        st = env.status()
        page = pagebrowser.snapshot(browser)
        assert sorted(page.rows) == sorted(b["address"] for b in st["backends"]), page.rows
        for b in st["backends"]:
            row = page.rows[b["address"]]
            assert (row["state_class"], row["state"]) == ("up", "up"), row
            assert row["Instance"] == b["instance_id"], row  # local-N-PID
            assert row["Age"].endswith(" s"), row
        assert browser.find_element(By.ID, "s-desired").text == "3"
        assert "Provider local" in browser.find_element(By.ID, "s-provider").text
        assert "Launched 3 instances (0 to replace lost ones)" in timeline(browser)
        pagebrowser.shot(browser, "local-1-pool")

        # A relay killed: down on the page, then replaced; the timeline says so.
        victim_pid, victim_port = sorted(relays.items())[1]
        victim = f"127.0.0.1:{victim_port}"
        os.kill(victim_pid, signal.SIGKILL)
        lbdtest.wait_until(lambda: pagebrowser.seen(
            browser, lbd, lambda: "1 to replace lost ones" in timeline(browser)), 20,
            "the replacement's launch in the timeline")
        assert f"lost Instance local-1-{victim_pid}: running -> terminated" in timeline(browser)
        pagebrowser.shot(browser, "local-2-replaced")
        env.wait_healthy(3)
        lbdtest.wait_until(lambda: pagebrowser.seen(
            browser, lbd, lambda: pagebrowser.rows(browser).get(victim) == ("up", "up")), 10,
            "the replacement up on the page")
        assert str(victim_pid) not in pagebrowser.snapshot(browser).rows[victim]["Instance"]

        # A reload.
        env.reconfigure(3)
        lbdtest.wait_until(lambda: pagebrowser.seen(
            browser, lbd, lambda: "Configuration reloaded: provider local, desired 3" in timeline(browser)), 10,
            "the reload in the timeline")
        pagebrowser.shot(browser, "local-3-reloaded")

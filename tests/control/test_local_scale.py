"""Desired count 3 -> 5 -> 2 by SIGHUP with the local provider: processes
started and stopped without a restart of lbd, a bounded request loop through
lbd the whole time and not one failed GET."""

import time

import pytest

import localenv
from localenv import lbdtest


@pytest.fixture
def env(tmp_path):
    yield from localenv.fixture(tmp_path)


def test_desired_3_5_2_by_sighup(env):
    lbd = env.start_lbd(desired=3)
    first = env.wait_relays(3)
    env.wait_healthy(3)
    pid = lbd.pid
    load = env.h.load(lbd.port, n=2, max_seconds=60, pause=0.005).start()

    env.reconfigure(5)
    st = env.wait_healthy(5)
    five = env.wait_relays(5)
    assert set(first) <= set(five)  # the first three kept
    assert st["control"]["desired"] == 5
    assert st["control"]["launches"] == 5
    assert st["control"]["replacements_in_window"] == 0  # growth, not replacements
    time.sleep(1.0)  # traffic through all five
    assert len({b["address"] for b in env.status()["backends"] if b["requests"] > 0}) == 5

    env.reconfigure(2)
    st = env.wait_healthy(2)
    two = env.wait_relays(2)
    # All healthy: the newest go first, so two of the first three stay.
    assert set(two) <= set(first)
    gone = set(five) - set(two)
    assert len(gone) == 3
    lbdtest.wait_until(lambda: not any(localenv.proc_alive(p) for p in gone), 15,
                       "the three stopped relays exited")
    time.sleep(1.0)
    load.stop()
    assert not load.failures, load.failures[:5]
    assert load.ok > 200

    st = env.status()
    assert st["control"]["terminations"] == 3
    assert st["control"]["desired"] == 2
    assert lbd.pid == pid and lbd.proc.poll() is None  # never restarted
    text = lbd.stderr_text()
    assert "Desired instances: 3 -> 5" in text
    assert "Desired instances: 5 -> 2" in text
    assert text.count("beyond desired") >= 3
    # Every stopped relay exited on its own (SIGTERM), none needed SIGKILL.
    assert "did not stop within" not in text

"""The reconciler's safety rules through the real lbd and the local provider:
the replacement-storm guard stops relaunching a backend that keeps dying, and
when every backend fails its health checks at once nothing is terminated and
the least bad stay in rotation (here the health path fails but traffic works,
so not one GET fails)."""

import time

import pytest

import localenv
from localenv import lbdtest


@pytest.fixture
def env(tmp_path):
    yield from localenv.fixture(tmp_path)


def test_storm_guard_holds_back_a_crash_loop(env):
    # A "backend" that exits at once: launched, lost, replaced, ... until the guard says stop.
    lbd = env.start_lbd(desired=1, healthy=0, command="/bin/false {port}", poll="200ms",
                        extra_pool="max_replacements = 2\nreplacement_window = 1m\n")

    def guarded():
        st = env.status()
        return st if st["control"]["storm_guard"] else None

    st = lbdtest.wait_until(guarded, 20, "the storm guard engaged")
    assert st["control"]["launches"] == 3  # one to start, two replacements
    assert st["control"]["replacements_in_window"] == 2
    time.sleep(1.5)  # several polls
    st = env.status()
    assert st["control"]["launches"] == 3
    assert st["control"]["storm_guard"] is True
    assert lbd.metrics().get("lbd_storm_guard") == 1
    assert "Replacement storm guard: 2 replacements in the last 60 s (at most 2)" in lbd.stderr_text()


def test_all_failing_terminates_nothing_and_keeps_serving(env):
    # The relays keep the web host in rotation whatever its /healthcheck says (expect 200-599),
    # so when it answers 503 only lbd's probes fail (they are relayed to it), not the traffic.
    command = "{lbd} --listen {address} --backend {upstream} --admin off --access-log off " \
              "--set health.expect=200-599"
    # fall = 20 (2 s at the harness's 100 ms checks): lbd's settle time, which the three backends' checks
    # must all fail within, is wide enough for a loaded machine where one relay answers late (with 3,
    # 300 ms, two once went down, the third not yet, and lbd rightly replaced the two).
    lbd = env.start_lbd(desired=3, command=command, grace="1s", extra_pool="[health]\nfall = 20\n")
    relays = env.wait_relays(3)
    env.wait_healthy(3)
    time.sleep(1.0)  # past the grace period
    load = env.h.load(lbd.port, n=2, max_seconds=45, pause=0.005).start()

    env.web.set_health(503)

    def all_failing():
        st = env.status()
        return st if st["control"]["all_failing"] else None

    st = lbdtest.wait_until(all_failing, 20, "the all-failing case")
    assert st["healthy"] == 0
    for b in st["backends"]:
        assert b["state"] == "down" and b["forced"] is True and b["in_rotation"] is True
        assert b["last_check"]["result"] == "fail" and b["last_check"]["status"] == 503
    time.sleep(2.0)  # many polls and health checks: still nothing terminated
    st = env.status()
    assert st["control"]["all_failing"] is True
    assert st["control"]["terminations"] == 0 and st["control"]["launches"] == 3
    assert env.relays() == relays
    assert lbd.metrics().get("lbd_pool_all_failing") == 1
    out = localenv.lbctl("-a", f"127.0.0.1:{lbd.admin_port}")
    assert "every backend is failing" in out.stdout and "down, kept" in out.stdout

    # The web host recovers: back to normal, and the backends that come back aren't replaced.
    env.web.set_health(None)
    st = env.wait_healthy(3)
    assert st["control"]["all_failing"] is False
    time.sleep(1.5)
    load.stop()
    assert not load.failures, load.failures[:5]
    assert load.ok > 200
    st = env.status()
    assert st["control"]["terminations"] == 0 and st["control"]["launches"] == 3
    assert env.relays() == relays
    assert all(not b["forced"] for b in st["backends"])
    text = lbd.stderr_text()
    assert "Every backend is failing: terminating nothing; 3 of 3 kept in rotation" in text
    assert "back to normal" in text

"""Maintenance: `lbctl drain BACKEND` takes a backend out of rotation through the admin API (no new
requests, those in flight finish), `lbctl enable` puts it back; /status, /metrics and lbctl's table show
it. Under load, neither step fails a request."""

import os
import signal
import subprocess
import threading
import time

import pytest

import lbdtest

LBCTL = os.environ.get("LBCTL_BINARY")
pytestmark = pytest.mark.skipif(not LBCTL, reason="LBCTL_BINARY not set (lbctl not built)")


def lbctl(lbd, *args, timeout=30):
    return subprocess.run([LBCTL, "--admin", f"127.0.0.1:{lbd.admin_port}", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_drain_and_enable_under_load(harness):
    b1, b2 = harness.backends(2)
    lbd = harness.lbd([b1, b2], healthy=2)
    load = harness.load(lbd.port, n=3, path="/m", max_seconds=12.0).start()
    time.sleep(0.5)

    r = lbctl(lbd, "drain", b1.addr)
    assert r.returncode == 0, r.stderr
    assert f"{b1.addr}: out of rotation for maintenance" in r.stdout
    st = lbd.backend_status(b1.addr)
    assert st["maintenance"] is True and st["in_rotation"] is False and st["state"] == "up", st
    assert f'lbd_backend_maintenance{{backend="{b1.addr}"}} 1' in lbd.metrics_text()
    table = lbctl(lbd, "status")
    assert table.returncode == 0 and "up, drained" in table.stdout, table.stdout

    # Whatever b1 had in flight finished; from now on only b2 answers.
    time.sleep(0.3)
    before = dict(load.by_backend)
    time.sleep(1.0)
    assert load.by_backend.get("b1", 0) == before.get("b1", 0), (before, load.by_backend)
    assert load.by_backend.get("b2", 0) > before.get("b2", 0)

    r = lbctl(lbd, "enable", b1.addr)
    assert r.returncode == 0, r.stderr
    assert f"{b1.addr}: back in rotation" in r.stdout
    assert lbd.backend_status(b1.addr)["in_rotation"] is True
    before = dict(load.by_backend)
    time.sleep(1.0)
    load.stop()
    assert load.by_backend.get("b1", 0) > before.get("b1", 0), load.by_backend
    assert not load.failures, load.failures[:5]
    assert "out of rotation for maintenance" in lbd.stderr_text()


def test_drain_wait_lets_in_flight_finish(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    result = {}

    def slow():
        result["resp"] = lbd.request("GET", "/delay/1500", timeout=10)
    t = threading.Thread(target=slow)
    t.start()
    lbdtest.wait_until(lambda: lbd.backend_status(b1.addr)["active"] == 1, 3, "the slow request in flight")
    t0 = time.monotonic()
    r = lbctl(lbd, "drain", "--wait", "10", b1.addr)
    waited = time.monotonic() - t0
    t.join(10)
    assert r.returncode == 0, r.stderr
    assert "1 request(s) in flight" in r.stdout and "drained, no request in flight" in r.stdout, r.stdout
    assert waited > 0.8, waited
    assert result["resp"].status == 200
    # Nothing left in rotation: a clear 503, until it is enabled again.
    assert lbd.get("/after").status == 503
    assert lbctl(lbd, "enable", b1.addr).returncode == 0
    assert lbd.get("/back").status == 200


def test_drain_wait_gives_up(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    t = threading.Thread(target=lambda: lbd.request("GET", "/delay/4000", timeout=10))
    t.start()
    lbdtest.wait_until(lambda: lbd.backend_status(b1.addr)["active"] == 1, 3, "the slow request in flight")
    r = lbctl(lbd, "drain", "--wait", "1", b1.addr)
    t.join(10)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "still 1 request(s) in flight after 1 s" in r.stderr


def test_errors(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    r = lbctl(lbd, "drain", "127.0.0.1:1")
    assert r.returncode == 1 and "no backend '127.0.0.1:1'" in r.stderr, r.stderr
    for args in (["drain"], ["enable", "--wait", "3", b1.addr], ["drain", "a b"], ["drain", b1.addr, "extra"],
                 ["drain", "--wait", "0", b1.addr]):
        r = lbctl(lbd, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
    # The admin API itself: only POST, only known actions.
    assert lbd.admin("GET", f"/backends/{b1.addr}/drain").status == 405
    assert lbd.admin("POST", f"/backends/{b1.addr}/reboot").status == 404
    assert lbd.admin("POST", "/backends/nope/drain").status == 404
    r = lbctl(lbd, "--json", "drain", b1.addr)
    assert r.returncode == 0 and '"maintenance":true' in r.stdout, r.stdout
    assert lbd.backend_status(b1.addr)["maintenance"] is True


def test_maintenance_survives_reload(harness):
    b1, b2 = harness.backends(2)
    lbd = harness.lbd([b1, b2], healthy=2)
    assert lbctl(lbd, "drain", b1.addr).returncode == 0
    lbd.signal(signal.SIGHUP)
    time.sleep(0.5)
    assert lbd.backend_status(b1.addr)["maintenance"] is True
    assert all(lbd.get(f"/r{i}").header("X-Backend") == "b2" for i in range(6))

"""Active and passive health checking."""

import signal
import time

import lbdtest

NO_BACKEND_BODY = b"503 Service Unavailable: no healthy backend\n"


def health_snapshot(lbd, addr):
    m = lbd.metrics()
    return (m.get("lbd_backend_up", backend=addr),
            m.get("lbd_health_checks_total", backend=addr, result="ok") or 0,
            m.get("lbd_health_checks_total", backend=addr, result="fail") or 0)


def watch_transition(lbd, addr, want_up, counter_index, at_least, timeout, change):
    """Calls change() (which makes addr's checks start to pass or fail), then polls /metrics until addr's
    lbd_backend_up == want_up. Checks, on every snapshot, that the transition never happens before
    `at_least` probes of the relevant kind (ok or fail) counted since the change. The count starts before
    the change: a probe that lands between the change and a first snapshot taken after it would go
    uncounted, and the transition would seem to come one probe early."""
    base = health_snapshot(lbd, addr)[counter_index]
    change()
    deadline = time.monotonic() + timeout
    while True:
        up, ok, fail = health_snapshot(lbd, addr)
        probes = (ok, fail)[counter_index - 1] - base
        if up == (1 if want_up else 0):
            assert probes >= at_least, \
                f"state changed after {probes} probes, expected at least {at_least}"
            return probes
        assert time.monotonic() < deadline, \
            f"{addr} did not become {'up' if want_up else 'down'} in {timeout}s ({probes} probes)"
        time.sleep(0.01)


def test_fall_and_rise(harness):
    b1, b2 = harness.backends(2)
    lbd = harness.lbd([b1, b2], args=["--set", "health.fall=3", "--set", "health.rise=2",
                                      "--set", "health.interval=100ms"])
    probes = watch_transition(lbd, b1.addr, False, 2, 3, 5.0, lambda: b1.set_health(500))
    assert probes <= 5, f"took {probes} failing probes to go down"
    st = lbd.backend_status(b1.addr)
    assert st["state"] == "down" and st["in_rotation"] is False
    assert st["last_check"]["result"] == "fail" and st["last_check"]["status"] == 500
    assert lbd.status()["healthy"] == 1

    # No traffic goes to the down backend.
    before = len(b1.requests())
    with lbd.connect() as conn:
        for i in range(30):
            resp = conn.get(f"/x?{i}")
            assert resp.status == 200 and resp.header("X-Backend") == "b2"
    assert len(b1.requests()) == before

    probes = watch_transition(lbd, b1.addr, True, 1, 2, 5.0, lambda: b1.set_health(None))
    assert probes <= 4
    st = lbd.backend_status(b1.addr)
    assert st["state"] == "up" and st["in_rotation"] is True
    assert st["last_check"]["result"] == "ok"
    with lbd.connect() as conn:
        seen = {conn.get(f"/y?{i}").header("X-Backend") for i in range(10)}
    assert seen == {"b1", "b2"}


def test_expect_range(harness):
    b1, b2 = harness.backends(2)
    lbd = harness.lbd([b1, b2], args=["--set", "health.expect=200-299",
                                      "--set", "health.fall=2"])
    b1.set_health(204)
    watch_transition(lbd, b2.addr, False, 2, 2, 5.0, lambda: b2.set_health(302))
    time.sleep(0.5)
    assert lbd.backend_status(b1.addr)["state"] == "up"


def test_default_expect_accepts_3xx(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "health.fall=2"])
    b1.set_health(302)
    time.sleep(0.8)  # 8 probes at 100 ms
    st = lbd.backend_status(b1.addr)
    assert st["state"] == "up", st
    assert st["last_check"]["status"] == 302


def test_probe_request_format(harness):
    (b1,) = harness.backends(1)
    harness.lbd([b1], args=["--set", "health.path=/healthcheck"])
    lbdtest.wait_until(lambda: len(b1.records()) >= 2, 3, "two probes")
    probes = [r for r in b1.records() if r["path"] == "/healthcheck"]
    assert probes, b1.records()
    for p in probes:
        h = [(n.lower(), v) for n, v in p["headers"]]
        assert p["method"] == "GET" and p["version"] == "HTTP/1.1"
        assert ("host", b1.addr) in h, h
        assert ("user-agent", "lbd-health") in h, h
        assert any(n == "connection" and "close" in v.lower() for n, v in h), h


def test_custom_health_path(harness):
    (b1,) = harness.backends(1)
    harness.lbd([b1], args=["--set", "health.path=/custom/hc?x=1"])
    lbdtest.wait_until(lambda: any(r["path"] == "/custom/hc?x=1" for r in b1.records()), 3,
                       "probe on the custom path")
    assert not any(r["path"] == "/healthcheck" for r in b1.records())


def test_all_down_gives_503(harness):
    b1, b2 = harness.backends(2)
    lbd = harness.lbd([b1, b2], args=["--set", "health.fall=2"])
    b1.set_health(503)
    b2.set_health(500)
    lbdtest.wait_until(lambda: lbd.status()["healthy"] == 0, 5, "both backends down")
    before = len(b1.requests()) + len(b2.requests())
    resp = lbd.get("/x")
    assert resp.status == 503
    assert resp.header("Content-Type").startswith("text/plain")
    assert resp.body == NO_BACKEND_BODY
    assert "close" in resp.connection_tokens()
    assert len(b1.requests()) + len(b2.requests()) == before
    b2.set_health(None)
    lbdtest.wait_until(lambda: lbd.status()["healthy"] == 1, 5, "b2 back up")
    assert lbd.get("/x").header("X-Backend") == "b2"


def test_backend_never_up_at_start(harness):
    (b1,) = harness.backends(1)
    b1.set_health(500)
    lbd = harness.lbd([b1], healthy=0)
    lbdtest.wait_until(lambda: lbd.backend_status(b1.addr)["last_check"]["result"] != "none",
                       3, "a first probe")
    st = lbd.backend_status(b1.addr)
    assert st["state"] == "down" and st["in_rotation"] is False
    assert lbd.get("/x").status == 503
    assert not b1.requests()
    # One pass at startup is enough, but later a down backend needs `rise` passes.
    b1.set_health(None)
    lbdtest.wait_until(lambda: lbd.backend_status(b1.addr)["state"] == "up", 3, "b1 up")


def test_killed_backend_marked_down_by_live_traffic(harness):
    b1, b2 = harness.backends(2)
    # Probes far apart: only live traffic can notice the dead backend in time.
    lbd = harness.lbd([b1, b2], health_interval="20s")
    b1.kill(signal.SIGKILL)
    for i in range(4):
        resp = lbd.get(f"/x?{i}")
        assert resp.status == 200, resp
        assert resp.header("X-Backend") == "b2"
    lbdtest.wait_until(lambda: lbd.backend_status(b1.addr)["state"] == "down", 0.5,
                       "b1 down right after a refused connection")
    assert lbd.status()["healthy"] == 1
    m = lbd.metrics()
    assert m.get("lbd_backend_up", backend=b1.addr) == 0
    assert (m.get("lbd_backend_failures_total", backend=b1.addr) or 0) >= 1
    with lbd.connect() as conn:
        for i in range(10):
            assert conn.get(f"/y?{i}").header("X-Backend") == "b2"


def test_passive_fall_on_5xx(harness):
    """Consecutive 5xx take a backend out (here the pool's only one: passive_max_down 100 allows it); a
    503 is the backend saying it is overloaded or in maintenance: it neither counts nor resets."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], health_interval="20s",
                      args=["--set", "health.passive_fall=3", "--set", "health.passive_max_down=100"])
    with lbd.connect() as conn:
        assert conn.get("/status/500").status == 500
        assert conn.get("/status/502").status == 502
    assert lbd.backend_status(b1.addr)["state"] == "up"
    # A success in between resets the count; 503s do not count.
    assert lbd.get("/ok").status == 200
    assert lbd.get("/status/500").status == 500
    for _ in range(5):
        assert lbd.get("/status/503").status == 503
    assert lbd.get("/status/504").status == 504
    assert lbd.backend_status(b1.addr)["state"] == "up"
    assert lbd.get("/status/500").status == 500
    lbdtest.wait_until(lambda: lbd.backend_status(b1.addr)["state"] == "down", 0.5,
                       "b1 down after 3 consecutive 5xx")
    assert lbd.get("/x").status == 503


def test_passive_health_never_empties_the_pool(harness):
    """Every backend answering 5xx (something they all depend on failing, while their health checks pass):
    passive health takes out at most passive_max_down (50 %) of the pool and says so once; the rest stay in
    rotation for the active checks to judge. And 503s (overload) take out none at all."""
    backends = harness.backends(3)
    lbd = harness.lbd(backends, health_interval="20s", args=["--set", "health.passive_fall=2"])
    for i in range(60):
        assert lbd.get(f"/status/503?i={i}").status == 503
    assert lbd.status()["healthy"] == 3
    for i in range(60):
        assert lbd.get(f"/status/500?i={i}").status == 500
    st = lbd.status()
    assert st["healthy"] == 2, st
    text = lbd.stderr_text()
    assert text.count("passive_max_down is 50 %: it stays, the active checks decide") == 1, text[-3000:]
    # With 1 of 2 (passive_max_down 50 % allows one of two out), a second pool of 2 loses one and keeps one.
    pair = harness.backends(2)
    lbd2 = harness.lbd(pair, health_interval="20s", args=["--set", "health.passive_fall=2"])
    for i in range(40):
        lbd2.get(f"/status/502?i={i}")
    assert lbd2.status()["healthy"] == 1, lbd2.status()

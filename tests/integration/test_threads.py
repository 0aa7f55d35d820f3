"""[lbd] threads = 2: the data plane on two event loops. Connections spread over the loops; least-conn sees
the requests in flight on both; a backend that passive health takes out on one loop is out for both; a
reload reaches both; a graceful stop lets each loop finish its exchanges; access log lines stay whole
under load from both; /metrics sums the loops and counts each loop's connections. Every lbd here sets
threads itself, so LBD_TEST_THREADS does not change these tests."""

import re
import signal
import threading
import time

import lbdtest

THREADS = ["--set", "lbd.threads=2"]


def loop_connections(lbd):
    m = lbd.metrics()
    return [m.get("lbd_loop_client_connections", loop=str(i)) or 0 for i in range(2)]


def connection_on_loop(lbd, want, tries=200):
    """Opens connections until one lands on loop <want> (seen in /metrics); returns it, its request
    answered, and closes the others. Bounded: <tries> connections."""
    others = []
    try:
        for _ in range(tries):
            before = loop_connections(lbd)
            conn = lbd.connect()
            assert conn.get("/").status == 200
            after = loop_connections(lbd)
            if after[want] == before[want] + 1:
                return conn
            others.append(conn)
        raise AssertionError(f"no connection landed on loop {want} in {tries} tries")
    finally:
        for c in others:
            c.close()


def test_connections_spread_over_loops(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=THREADS)
    assert "Serving on 2 event loops" in lbd.stderr_text()
    conns = []
    try:
        # Bounded: at most 100 connections, 10 s.
        deadline = time.monotonic() + 10
        while len(conns) < 100 and time.monotonic() < deadline:
            c = lbd.connect()
            assert c.get("/").status == 200
            conns.append(c)
            per_loop = loop_connections(lbd)
            if len(conns) >= 10 and min(per_loop) >= 2:
                break
        per_loop = loop_connections(lbd)
        assert min(per_loop) >= 2, per_loop
        assert sum(per_loop) == len(conns)
        assert lbd.metrics().get("lbd_client_connections") == len(conns)
    finally:
        for c in conns:
            c.close()


def test_least_conn_sees_requests_of_every_loop(harness):
    """Each loop's balancer starts at the same backend: without the other loop's count, two slow
    requests, one through each loop, would both go to the first backend."""
    b1, b2 = harness.backends(2)
    lbd = harness.lbd([b1, b2], args=THREADS + ["--set", "lbd.balance=least-conn"])
    c0 = connection_on_loop(lbd, 0)
    c1 = connection_on_loop(lbd, 1)
    results = []

    def slow(conn):
        results.append(conn.get("/delay/1500").status)

    workers = [threading.Thread(target=slow, args=(c0,))]
    workers[0].start()
    lbdtest.wait_until(lambda: sum(b["active"] for b in lbd.status()["backends"]) == 1, 5,
                       "the first slow request in flight")
    workers.append(threading.Thread(target=slow, args=(c1,)))
    workers[1].start()
    lbdtest.wait_until(lambda: sum(b["active"] for b in lbd.status()["backends"]) == 2, 5,
                       "the second slow request in flight")
    active = {b["address"]: b["active"] for b in lbd.status()["backends"]}
    for w in workers:
        w.join(10)
    c0.close()
    c1.close()
    assert active == {b1.addr: 1, b2.addr: 1}, active
    assert results == [200, 200]


def test_passive_health_on_one_loop_takes_backend_out_of_every_loop(harness):
    b1, b2 = harness.backends(2)
    # Active checks far apart: only live traffic can take b1 out in this test.
    lbd = harness.lbd([b1, b2], args=THREADS + ["--set", "health.interval=60s"])
    c0 = connection_on_loop(lbd, 0)
    c1 = connection_on_loop(lbd, 1)
    b1.kill()  # connections to it are refused now
    # Loop 0 meets the refusal (round robin reaches b1 within two requests) and retries on b2.
    for _ in range(2):
        assert c0.get("/after-kill").status == 200
    lbdtest.wait_until(lambda: lbd.backend_status(b1.addr)["state"] == "down", 5,
                       "b1 marked down by passive health")
    failures = lbd.backend_status(b1.addr)["failures"]
    # Loop 1 never tries b1 again.
    for _ in range(10):
        assert c1.get("/other-loop").status == 200
    assert lbd.backend_status(b1.addr)["failures"] == failures
    assert lbd.metrics().get("lbd_retries_total") <= 1
    c0.close()
    c1.close()


def test_reload_reaches_every_loop(harness):
    b1, b2 = harness.backends(2)

    def config(b):
        return f"[lbd]\nthreads = 2\n[pool]\nprovider = static\nbackends = {b.addr}\nnetworks = 127.0.0.0/8\n"
    lbd = harness.lbd(config=config(b1), healthy=1)
    c0 = connection_on_loop(lbd, 0)
    c1 = connection_on_loop(lbd, 1)
    lbd.write_config(config(b2))
    lbd.signal(signal.SIGHUP)
    lbdtest.wait_until(lambda: [(b["address"], b["state"]) for b in lbd.status()["backends"]] ==
                       [(b2.addr, "up")], 5, "the reloaded set, up")
    for conn in (c0, c1):
        for _ in range(3):
            resp = conn.get("/reloaded")
            assert resp.status == 200 and resp.header("X-Backend") == "b2", resp
    assert not b1.saw("/reloaded")
    assert sum(r["path"] == "/reloaded" for r in b2.requests()) == 6
    c0.close()
    c1.close()


def test_graceful_stop_finishes_each_loops_exchanges(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=THREADS)
    c0 = connection_on_loop(lbd, 0)
    c1 = connection_on_loop(lbd, 1)
    idle = connection_on_loop(lbd, 0)
    responses = {}

    def slow(name, conn):
        responses[name] = conn.get("/delay/800")

    workers = [threading.Thread(target=slow, args=(n, c)) for n, c in (("c0", c0), ("c1", c1))]
    for w in workers:
        w.start()
    lbdtest.wait_until(lambda: lbd.status()["backends"][0]["active"] == 2, 5, "two slow requests in flight")
    lbd.signal(signal.SIGTERM)
    for w in workers:
        w.join(10)
    assert lbd.wait_exit(10) == 0
    for name in ("c0", "c1"):
        assert responses[name].status == 200, responses
        assert "close" in responses[name].connection_tokens(), responses[name]
    assert idle.closed_by_peer()
    for c in (c0, c1, idle):
        c.close()
    assert "All connections finished" in lbd.stderr_text()


def test_access_log_lines_whole_under_load(harness, tmp_path):
    (b1,) = harness.backends(1)
    path = tmp_path / "access.log"
    lbd = harness.lbd([b1], args=THREADS + ["--access-log", str(path)])
    per_conn, n_conns = 100, 8
    ids = []
    lock = threading.Lock()

    def run(k):
        with lbd.connect() as conn:
            for i in range(per_conn):
                # Long paths make long lines: a torn write would show.
                rid = conn.get(f"/load/{k}/{i}/" + "x" * 300).header("X-Request-Id")
                with lock:
                    ids.append(rid)

    workers = [threading.Thread(target=run, args=(k,)) for k in range(n_conns)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert len(ids) == per_conn * n_conns
    want = set(ids)

    def logged():
        text = path.read_text() if path.exists() else ""
        return {e["request_id"] for e in lbd.access_entries(text)} >= want
    lbdtest.wait_until(logged, 5, "every access line")
    lines = path.read_text().splitlines()
    pattern = re.compile(r"^access client=\S+ method=GET path=/load/\d+/\d+/x{300} status=200 bytes=\d+ "
                         r"backend=\S+ duration_ms=[\d.]+ request_id=[0-9a-f]{32}$")
    bad = [line for line in lines if not pattern.match(line)]
    assert not bad, bad[:3]
    assert len(lines) == len(ids)
    assert min(loop_connections(lbd)) == 0  # every load connection closed


def test_metrics_sum_the_loops(harness):
    b1, b2 = harness.backends(2)
    lbd = harness.lbd([b1, b2], args=THREADS)
    c0 = connection_on_loop(lbd, 0)
    c1 = connection_on_loop(lbd, 1)
    m0 = lbd.metrics()
    base = m0.sum("lbd_requests_total")
    for conn in (c0, c1):
        for _ in range(5):
            assert conn.get("/counted").status == 200
        assert conn.get("/status/503").status == 503
    m = lbd.metrics()
    assert m.sum("lbd_requests_total") - base == 12
    assert m.sum("lbd_requests_total", code="503") - m0.sum("lbd_requests_total", code="503") == 2
    assert m.get("lbd_client_connections") == 2
    assert [m.get("lbd_loop_client_connections", loop=str(i)) for i in range(2)] == [1, 1]
    st = lbd.status()
    assert sum(b["requests"] for b in st["backends"]) == m.sum("lbd_requests_total")
    c0.close()
    c1.close()

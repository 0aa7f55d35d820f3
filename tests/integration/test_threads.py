"""[lbd] threads = 2: the data plane on two event loops. Connections spread over the loops; least-conn sees
the requests in flight on both; a backend that passive health takes out on one loop is out for both; a
reload reaches both; a graceful stop lets each loop finish its exchanges; access log lines stay whole
under load from both; /metrics sums the loops and counts each loop's connections. TLS on both loops:
handshakes and requests on each, a session resumed on the other loop, certificates reloaded under load
and served by every loop, TLS to the backends from every loop (verified, resumed, failing closed). Every
lbd here sets threads itself, so LBD_TEST_THREADS does not change these tests."""

import os
import re
import shutil
import signal
import socket
import ssl
import threading
import time

import pytest

import lbdtest
import tlstest

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


# ---- TLS on every loop ----

@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = tlstest.Pki(tmp_path_factory.mktemp("pki"))
    p.site = p.leaf("site", ["site.test", "IP:127.0.0.1"])
    return p


def loop_handshakes(lbd):
    """Per loop: (full handshakes, resumed handshakes), from /metrics."""
    m = lbd.metrics()
    return [(m.get("lbd_loop_tls_handshakes_total", loop=str(i), resumed="no") or 0,
             m.get("lbd_loop_tls_handshakes_total", loop=str(i), resumed="yes") or 0) for i in range(2)]


def tls_exchange(lbd, ctx, session=None, path="/echo"):
    """One new TLS connection with one request; returns (the loop whose handshake count moved, whether
    the session was resumed, the session lbd gave, the response). Only for a quiet lbd: the loop is read
    from the per-loop counters before and after."""
    before = loop_handshakes(lbd)
    sock = socket.create_connection(("127.0.0.1", lbd.tls_port), timeout=10)
    with ctx.wrap_socket(sock, server_hostname="site.test", session=session) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: site.test\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            assert chunk, "lbd closed the connection"
            head += chunk
        reused, got = s.session_reused, s.session
    after = loop_handshakes(lbd)
    moved = [i for i in range(2) if after[i] != before[i]]
    assert len(moved) == 1, (before, after)
    loop = moved[0]
    kind = 1 if reused else 0
    assert after[loop][kind] == before[loop][kind] + 1, (before, after, reused)
    return loop, reused, got, head


def test_tls_handshakes_and_requests_on_every_loop(harness, pki):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=THREADS, tls=[pki.site])
    ctx = tlstest.client_context(ca=pki.ca_cert)
    n = 0
    # Bounded: at most 80 connections, 20 s; each a full handshake and two requests.
    deadline = time.monotonic() + 20
    while n < 80 and time.monotonic() < deadline:
        with lbdtest.HttpConnection(lbd.tls_port, tls=ctx, server_hostname="site.test") as conn:
            assert conn.get("/one").status == 200
            assert conn.get("/two").status == 200
        n += 1
        per_loop = loop_handshakes(lbd)
        if n >= 10 and min(full for full, _ in per_loop) >= 3:
            break
    m = lbd.metrics()
    per_loop = loop_handshakes(lbd)
    assert min(full for full, _ in per_loop) >= 3, per_loop
    assert sum(full for full, _ in per_loop) == n
    assert m.get("lbd_tls_handshakes_total") == n
    assert m.sum("lbd_tls_handshake_failures_total") == 0
    requests = [m.get("lbd_loop_requests_total", loop=str(i)) for i in range(2)]
    assert min(requests) >= 6 and sum(requests) == 2 * n, requests
    assert b1.requests() and len(b1.requests()) == 2 * n


@pytest.mark.parametrize("version,tickets,client_tickets", [
    (ssl.TLSVersion.TLSv1_2, "on", True),
    (ssl.TLSVersion.TLSv1_3, "on", True),
    (ssl.TLSVersion.TLSv1_2, "off", True),
    (ssl.TLSVersion.TLSv1_3, "off", True),
    # Tickets on, but a client that takes none: its session is in the cache.
    (ssl.TLSVersion.TLSv1_2, "on", False),
])
def test_tls_resumption_across_loops(harness, pki, version, tickets, client_tickets):
    """A session made on one loop resumes on the other: tickets under the one key set, or (tickets off,
    or a client without them) the one session cache."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=THREADS + ["--set", f"tls.tickets={tickets}"], tls=[pki.site])
    ctx = tlstest.client_context(ca=pki.ca_cert, minimum=version, maximum=version)
    if not client_tickets:
        ctx.options |= ssl.OP_NO_TICKET
    crossed = set()
    # Bounded: at most 40 pairs of connections. Each pair: a full handshake, then a resumption on
    # whichever loop the kernel picks; stops once a session crossed from each loop to the other.
    for _ in range(40):
        first, reused, session, head = tls_exchange(lbd, ctx)
        assert not reused and head.startswith(b"HTTP/1.1 200")
        assert session is not None
        second, reused, _, head = tls_exchange(lbd, ctx, session=session)
        assert reused, f"a session from loop {first} not resumed on loop {second}"
        assert head.startswith(b"HTTP/1.1 200")
        if first != second:
            crossed.add(first)
        if crossed == {0, 1}:
            break
    assert crossed == {0, 1}, crossed


def test_tls_reload_under_load_reaches_every_loop(harness, pki, tmp_path):
    """Certificates reloaded three times while clients keep connections busy and others make new ones:
    no request fails, connections opened before keep their certificate, and once the reload is done
    every loop serves the new certificate to every new connection. Which loop answered is told by the
    request id, whose first half is the loop's own random prefix."""
    (b1,) = harness.backends(1)
    live, cert, key = tlstest.live_files(tmp_path, pki.site)
    lbd = harness.lbd([b1], args=THREADS, tls=[(cert, key)])
    ctx = tlstest.client_context(ca=pki.ca_cert)
    held = lbdtest.HttpConnection(lbd.tls_port, tls=ctx, server_hostname="site.test")
    assert held.get("/held").status == 200
    load = harness.load(lbd.tls_port, n=3, path="/echo", max_seconds=60, tls=ctx,
                        server_hostname="site.test")
    load.start()
    fresh_failures = []
    stop = threading.Event()

    def churn():
        # New handshakes all along: at most 2000 connections, 60 s.
        deadline = time.monotonic() + 60
        for _ in range(2000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                with lbdtest.HttpConnection(lbd.tls_port, timeout=5, tls=ctx, server_hostname="site.test") as c:
                    status = c.get("/churn").status
                    if status != 200:
                        fresh_failures.append(status)
            except (OSError, lbdtest.ConnectionClosed, ValueError) as e:
                fresh_failures.append(repr(e))

    churner = threading.Thread(target=churn, daemon=True)
    churner.start()

    def served():
        """(request id prefix, DER certificate) of one new connection."""
        with lbdtest.HttpConnection(lbd.tls_port, tls=ctx, server_hostname="site.test") as c:
            resp = c.get("/which")
            assert resp.status == 200
            return resp.header("X-Request-Id")[:16], c.sock.getpeercert(binary_form=True)

    renewed = pki.leaf("site-renewed", ["site.test", "IP:127.0.0.1"], "ec", days=20)
    try:
        for want in (renewed, pki.site, renewed):
            tlstest.renew(live, cert, key, want)
            os.kill(lbd.pid, signal.SIGHUP)
            lbdtest.wait_until(lambda: served()[1] == tlstest.der(want[0]), 10,
                               "a new handshake to get the reloaded certificate")
            # From now on every new connection, on either loop, gets it. Bounded: 100 connections.
            loops = set()
            for _ in range(100):
                prefix, der = served()
                assert der == tlstest.der(want[0]), f"loop {prefix} served the previous certificate"
                loops.add(prefix)
                if len(loops) == 2:
                    break
            assert len(loops) == 2, loops
    finally:
        stop.set()
        churner.join(70)
        load.stop()
    assert load.failures == [], load.failures[:5]
    assert fresh_failures == [], fresh_failures[:5]
    assert load.ok > 0
    assert held.sock.getpeercert(binary_form=True) == tlstest.der(pki.site[0])
    assert held.get("/held-after").status == 200
    held.close()
    assert lbd.metrics().sum("lbd_tls_handshake_failures_total") == 0


def tls_relay(harness, front, pki, name="site.test", extra=()):
    """A relay on two loops speaking verified TLS to <front>, once its one health check passed (a TLS
    handshake at each end: generous for a loaded machine or valgrind)."""
    target = lbdtest.Backend.__new__(lbdtest.Backend)
    target.addr = f"127.0.0.1:{front.tls_port}"
    relay = harness.lbd([target], health_interval="1h", healthy=0,
                        args=THREADS + ["--set", "tls.backend=on", "--set", f"tls.backend_ca={pki.ca_cert}",
                                        "--set", f"tls.backend_name={name}", "--set", "limits.retries=0",
                                        "--set", "health.timeout=20s", *extra])
    lbdtest.wait_until(lambda: relay.status()["backends"][0]["state"] == "up", 30, "the web host up")
    return relay


def test_backend_tls_from_every_loop_verified_and_resumed(harness, pki):
    """A relay on two loops speaks TLS to a web host on two loops: requests from both loops arrive,
    and each loop resumes its own session with the web host on its next connection."""
    (web,) = harness.backends(1, prefix="web")
    front = harness.lbd([web], args=THREADS, tls=[pki.site])
    relay = tls_relay(harness, front, pki, extra=("--set", "timeouts.backend_idle=100ms"))
    c0 = connection_on_loop(relay, 0)
    c1 = connection_on_loop(relay, 1)
    resumed = front.metrics().get("lbd_tls_resumed_total") or 0
    # Each loop's pooled connection closes after 100 ms idle: the next request makes a new one.
    for i in range(3):
        time.sleep(0.3)
        for k, conn in enumerate((c0, c1)):
            resp = conn.get(f"/via-{k}-{i}")
            assert resp.status == 200 and resp.body == f"{web.name} /via-{k}-{i}\n".encode(), resp
    assert relay.metrics().get("lbd_loop_requests_total", loop="0") >= 3
    assert relay.metrics().get("lbd_loop_requests_total", loop="1") >= 3
    # Six connections after the first of each loop: most resume (a loop's first may not have its
    # ticket yet when the second is made, so not all of them).
    assert (front.metrics().get("lbd_tls_resumed_total") or 0) - resumed >= 3
    c0.close()
    c1.close()


def test_backend_tls_fails_closed_on_every_loop(harness, pki, tmp_path):
    """The web host comes back with a certificate for another name: each loop's next connection fails
    verification (a session from before cannot be resumed: new ticket keys), and no request reaches it."""
    (web,) = harness.backends(1, prefix="web")
    good, bad = pki.leaf("web-good", ["site.test"]), pki.leaf("web-bad", ["other.test"])
    _, cert, key = tlstest.live_files(tmp_path, good)
    front = harness.lbd([web], args=THREADS, tls=[(cert, key)])
    relay = tls_relay(harness, front, pki, extra=("--set", "timeouts.backend_idle=100ms"))
    c0 = connection_on_loop(relay, 0)
    c1 = connection_on_loop(relay, 1)
    front.stop()
    shutil.copy(bad[0], cert)
    shutil.copy(bad[1], key)
    front.start(timeout=30)
    time.sleep(0.5)  # past backend_idle: the pooled connections to the old process are gone
    for k, conn in enumerate((c0, c1)):
        resp = conn.get(f"/after-change-{k}")
        assert resp.status == 502, resp
        assert not web.saw(f"/after-change-{k}")
    assert relay.metrics().get("lbd_loop_requests_total", loop="0") >= 2
    assert relay.metrics().get("lbd_loop_requests_total", loop="1") >= 2
    err = relay.stderr_text()
    assert "certificate not trusted" in err or "certificate verify failed" in err, err[-2000:]
    c0.close()
    c1.close()


def test_tls_ticket_rotation_while_both_loops_resume(harness, pki):
    """Ticket keys rotated every 2 s while both loops make and open tickets: a ticket younger than one
    period opens on either loop, and one older than two periods no longer opens anywhere (the keys it was
    made with are gone)."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=THREADS + ["--set", "tls.ticket_rotate=2s"], tls=[pki.site])
    ctx = tlstest.client_context(ca=pki.ca_cert, minimum=ssl.TLSVersion.TLSv1_3,
                                 maximum=ssl.TLSVersion.TLSv1_3)
    _, _, oldest, _ = tls_exchange(lbd, ctx)
    made = time.monotonic()
    loops = set()
    pairs = 0
    # Bounded: 7 s, at most 300 pairs; past two rotations at the end.
    while time.monotonic() - made < 7 and pairs < 300:
        _, _, session, _ = tls_exchange(lbd, ctx)
        got = time.monotonic()
        loop, reused, _, head = tls_exchange(lbd, ctx, session=session)
        assert head.startswith(b"HTTP/1.1 200")
        if time.monotonic() - got < 2:
            assert reused, f"a ticket {time.monotonic() - got:.2f} s old not opened on loop {loop}"
            loops.add(loop)
        pairs += 1
    assert loops == {0, 1}, loops
    # At least 7 s old: two rotations (4 s) have dropped its key.
    _, reused, _, head = tls_exchange(lbd, ctx, session=oldest)
    assert not reused and head.startswith(b"HTTP/1.1 200")


def test_tls_profile_reload_reaches_every_loop(harness, pki):
    """A reload that changes the profile makes new contexts for every loop: after it TLS 1.2 is refused
    on both loops and TLS 1.3 served on both, and a connection opened before keeps working."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], config="[lbd]\nthreads = 2\n[tls]\nprofile = intermediate\n", tls=[pki.site])
    tls12 = tlstest.client_context(ca=pki.ca_cert, maximum=ssl.TLSVersion.TLSv1_2)
    tls13 = tlstest.client_context(ca=pki.ca_cert, minimum=ssl.TLSVersion.TLSv1_3)
    held = lbdtest.HttpConnection(lbd.tls_port, tls=tls12, server_hostname="site.test")
    assert held.get("/before").status == 200
    lbd.write_config(lbd.config_path.read_text().replace("profile = intermediate", "profile = modern"))
    lbd.signal(signal.SIGHUP)
    lbdtest.wait_until(lambda: "TLS certificates reloaded" in lbd.stderr_text(), 10, "the reload")
    # Bounded: 60 tries of each kind, until each loop has refused TLS 1.2 and served TLS 1.3.
    served = set()
    for _ in range(60):
        before = loop_handshakes(lbd)
        failures = lbd.metrics().get("lbd_tls_handshake_failures_total", reason="protocol") or 0
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            with lbdtest.HttpConnection(lbd.tls_port, tls=tls12, server_hostname="site.test") as conn:
                conn.get("/tls12")
        # lbd counts the failure after its alert is sent: the client may hear it first.
        lbdtest.wait_until(lambda: (lbd.metrics().get("lbd_tls_handshake_failures_total", reason="protocol")
                                    or 0) == failures + 1, 10, "the refusal counted")
        assert loop_handshakes(lbd) == before
        loop, reused, _, head = tls_exchange(lbd, tls13)
        assert not reused and head.startswith(b"HTTP/1.1 200")
        served.add(loop)
        if len(served) == 2:
            break
    assert served == {0, 1}, served
    assert held.get("/after").status == 200
    held.close()
    assert not b1.saw("/tls12")

"""A failure a client causes is never blamed on a backend.

Oversized uploads a backend refuses early, bodies trickled in, responses a
client will not read, heads trickled in: each may cost the client its own
connection, never a backend its place in rotation, never another client its
request. The slow clients here are small Python loops over raw sockets (a
few dozen connections, bounded in count and time); bench/slow.sh runs
slowhttptest's 1,000-connection version of the same attacks.
"""

import os
import select
import socket
import threading
import time

import pytest

import lbdtest

PIECE = b"a" * 65536


def upload_until_answered(port, path, total, timeout=15.0):
    """POSTs a <total>-byte body, and stops sending as soon as an answer
    arrives (as curl does). Returns (Response or None, why there is none)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(lbdtest.HttpConnection.build_head(
            "POST", path, {"Content-Length": str(total), "Content-Type": "application/json"}))
        sock.setblocking(False)
        sent = 0
        deadline = time.monotonic() + timeout
        while sent < total and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 0.5)
            if readable:
                break
            if writable:
                try:
                    sent += sock.send(PIECE[:min(len(PIECE), total - sent)])
                except BlockingIOError:
                    pass
                except (BrokenPipeError, ConnectionResetError):
                    break
        sock.setblocking(True)
        sock.settimeout(max(1.0, deadline - time.monotonic()))
        try:
            return lbdtest.read_response(lbdtest._Reader(sock.recv), "POST",
                                         allow_incomplete=True), None
        except (ConnectionResetError, lbdtest.ConnectionClosed, OSError) as e:
            return None, f"{type(e).__name__}: {e} after {sent} bytes sent"
    finally:
        sock.close()


def downs(lbd):
    return [line for line in lbd.stderr_text().splitlines() if " is down" in line]


def assert_all_in_rotation(lbd, n):
    st = lbd.status()
    assert st["healthy"] == n, st
    assert all(b["state"] == "up" for b in st["backends"]), st
    assert not downs(lbd), "\n".join(downs(lbd))


def probe(harness, lbd):
    """A normal GET every 200 ms through lbd while a test's slow clients run."""
    return harness.load(lbd.port, n=1, path="/probe", pause=0.2, max_seconds=30)


def test_early_answer_reaches_the_client(harness):
    """A backend that refuses an upload before reading it and closes: its 413
    reaches the client (not a 502), and the backend stays in rotation."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "limits.max_body_size=0"])
    for i in range(6):
        resp, why = upload_until_answered(lbd.port, f"/early/413?i={i}", 20_000_000)
        assert resp is not None, why
        assert resp.status == 413, resp
        assert resp.header("X-Backend") == "b1", resp
        assert resp.body == b"early 413\n", resp
    assert_all_in_rotation(lbd, 1)
    assert lbd.backend_status(b1.addr)["failures"] == 0, lbd.status()
    assert lbdtest.request(lbd.port, "GET", "/after").status == 200


def test_early_answer_to_a_client_that_sends_everything_first(harness):
    """A client that sends its whole (3 MB) body before it reads: whether the
    413 came before lbd had the whole body (lbd reads and drops the rest, then
    closes) or after, the client reads the 413, not a reset."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "limits.max_body_size=0"])
    for i in range(3):
        with lbd.connect(timeout=10) as conn:
            resp = conn.request("POST", f"/early/413?i={i}", body=b"a" * 3_000_000)
            assert resp.status == 413, resp
            assert resp.header("X-Backend") == "b1", resp
            if "close" not in resp.connection_tokens():
                # lbd had the whole request (in the kernel's buffers) before the answer: the
                # connection carries on.
                assert conn.get(f"/next?i={i}").status == 200
            else:
                assert conn.closed_by_peer()
    assert_all_in_rotation(lbd, 1)


def test_early_answer_chunked_upload(harness):
    """The same with a chunked upload, which lbd cannot refuse from the head."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "limits.max_body_size=0"])
    for i in range(4):
        with lbd.connect(timeout=10) as conn:
            conn.send(conn.build_head("POST", f"/early/401?i={i}",
                                      {"Transfer-Encoding": "chunked"}))
            status = None
            try:
                for _ in range(400):
                    conn.sock.sendall(b"10000\r\n" + PIECE + b"\r\n")
                    if select.select([conn.sock], [], [], 0)[0]:
                        break
            except (BrokenPipeError, ConnectionResetError):
                pass
            resp = conn.read_response(allow_incomplete=True)
            status = resp.status
        assert status == 401, resp
    assert_all_in_rotation(lbd, 1)


def test_reset_during_an_upload_is_not_held_against_the_backend(harness):
    """A backend that resets the connection, unanswered, while lbd is still
    sending it a 20 MB body (a server refusing the upload its own way): the
    client gets 502, the backend stays in rotation. A reset after the whole
    request was sent still takes it out."""
    b1, b2 = harness.backends(2)
    lbd = harness.lbd([b1, b2], args=["--set", "limits.max_body_size=0"])
    for i in range(6):
        resp, why = upload_until_answered(lbd.port, f"/early-reset?i={i}", 20_000_000)
        assert resp is None or resp.status == 502, resp
    assert_all_in_rotation(lbd, 2)
    # The same backend resetting a GET is a backend failure.
    lbdtest.wait_until(lambda: lbdtest.request(lbd.port, "GET", "/reset").status == 502 and downs(lbd),
                       10, "a reset GET to take a backend out")


def oversized_posts_under_load(harness, lbd_args):
    backends = harness.backends(3)
    lbd = harness.lbd(backends, args=lbd_args)
    load = harness.load(lbd.port, n=3, max_seconds=40).start()
    results = []
    lock = threading.Lock()

    def post_loop(k):
        for i in range(25):
            resp, why = upload_until_answered(lbd.port, f"/early/413?k={k}&i={i}", 20_000_000)
            with lock:
                results.append(resp.status if resp is not None else why)

    start = time.monotonic()
    posters = [threading.Thread(target=post_loop, args=(k,), daemon=True) for k in range(4)]
    for t in posters:
        t.start()
    for t in posters:
        t.join(60)
    elapsed = time.monotonic() - start
    load.stop()
    assert len(results) == 100, results
    assert all(r == 413 for r in results), [r for r in results if r != 413][:10]
    assert not load.failures, load.failures[:10]
    assert load.ok > 0
    assert_all_in_rotation(lbd, 3)
    return lbd, elapsed


def test_oversized_posts_backend_refuses(harness):
    """100 20 MB POSTs that reach three backends (no max_body_size), each refused
    early by the backend, while normal GETs run: every GET succeeds, every
    backend stays in rotation."""
    lbd, _ = oversized_posts_under_load(harness, ["--set", "limits.max_body_size=0"])
    st = lbd.status()
    assert sum(b["requests"] for b in st["backends"]) > 100, st
    assert all(b["failures"] == 0 for b in st["backends"]), st


def test_oversized_posts_default_limit(harness):
    """The same under the default max_body_size: lbd answers 413 itself, and
    the client reads it although it was still sending."""
    lbd, _ = oversized_posts_under_load(harness, [])
    assert lbd.metrics().get("lbd_requests_rejected_total", code="413") >= 100


def test_default_max_body_size_is_bounded(harness):
    """Without max_body_size in the configuration, a body over 1 MiB is refused
    (413), whether its length is announced or it arrives chunked."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    resp, why = upload_until_answered(lbd.port, "/upload", 1024 * 1024 + 1)
    assert resp is not None, why
    assert resp.status == 413, resp
    assert resp.header("X-Backend") is None, resp
    resp = lbdtest.request(lbd.port, "POST", "/upload", body=iter([b"x" * 65536] * 17))
    assert resp.status == 413, resp
    resp = lbdtest.request(lbd.port, "POST", "/upload", body=b"x" * (1024 * 1024))
    assert resp.status == 200, resp


def test_slow_body_is_not_a_backend_timeout(harness):
    """Bodies trickled in for longer than timeouts.backend: the backend cannot
    answer before the body is complete, so that time is not its to answer in.
    Every trickled request completes, the probe never fails, no backend is
    blamed."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "timeouts.backend=1s",
                                  "--set", "timeouts.client_body=5s"])
    n, length, step = 30, 12, 0.25  # 12 bytes, one every 250 ms: 3 s per body
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", lbd.port), timeout=10)
        s.sendall(lbdtest.HttpConnection.build_head(
            "POST", f"/upload?slow={i}", {"Content-Length": str(length)}))
        socks.append(s)
    load = probe(harness, lbd).start()
    try:
        for _ in range(length):
            time.sleep(step)
            for s in socks:
                s.sendall(b"x")
        statuses = []
        for s in socks:
            resp = lbdtest.read_response(lbdtest._Reader(s.recv), "POST")
            statuses.append(resp.status)
        assert statuses == [200] * n, statuses
    finally:
        load.stop()
        for s in socks:
            s.close()
    assert load.ok >= 5 and not load.failures, (load.ok, load.failures[:5])
    assert_all_in_rotation(lbd, 1)
    assert lbd.backend_status(b1.addr)["failures"] == 0, lbd.status()


def slow_readers(port, n, path):
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(lbdtest.HttpConnection.build_head("GET", f"{path}?r={i}"))
        socks.append(s)
    return socks


def test_slow_read_is_not_a_backend_stall(harness):
    """Clients that stop reading a large response: lbd stops reading the
    backend, which is lbd's backpressure, not a backend that stalled. The
    probe never fails and no backend is blamed, for three times
    timeouts.backend."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "timeouts.backend=1s",
                                  "--set", "timeouts.client_body=10s"])
    socks = slow_readers(lbd.port, 30, "/bytes/50000000")
    load = probe(harness, lbd).start()
    try:
        time.sleep(3.5)
    finally:
        load.stop()
        for s in socks:
            s.close()
    assert load.ok >= 5 and not load.failures, (load.ok, load.failures[:5])
    assert "stalled" not in lbd.stderr_text()
    assert_all_in_rotation(lbd, 1)
    assert lbd.backend_status(b1.addr)["failures"] == 0, lbd.status()


def test_slow_read_client_timeout_closes_it(harness):
    """A client that reads nothing for timeouts.client_body loses its own
    connection; the backend is not blamed."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "timeouts.backend=500ms",
                                  "--set", "timeouts.client_body=1500ms"])
    (s,) = slow_readers(lbd.port, 1, "/bytes/50000000")
    try:
        time.sleep(2.5)
        s.setblocking(False)
        received, closed = 0, False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                data = s.recv(1 << 20)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            except ConnectionResetError:
                closed = True
                break
            if not data:
                closed = True
                break
            received += len(data)
        assert closed, "lbd kept a connection that read nothing for client_body"
        assert received < 50_000_000
    finally:
        s.close()
    assert_all_in_rotation(lbd, 1)
    assert "stalled" not in lbd.stderr_text()


def test_pipelining_client_that_reads_nothing(harness):
    """A client that pipelines requests and takes none of the answers: once
    an answer waits for it, lbd forwards no more of its requests, and it
    closes the connection timeouts.client_body after the client last took
    something, however many requests are still queued behind (answers queued
    meanwhile used to push that deadline back, holding the connection and the
    backend for as long as the requests lasted). The backend is not blamed."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "timeouts.client_body=1s"])
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect(("127.0.0.1", lbd.port))
    try:
        # Large answers first, to fill what the kernels hold; then 60 slow small ones.
        data = b"".join(lbdtest.HttpConnection.build_head("GET", f"/bytes/1000000?fill={i}") for i in range(8))
        data += b"".join(lbdtest.HttpConnection.build_head("GET", f"/delay/100?pipe={i}") for i in range(60))
        s.sendall(data)
        start = time.monotonic()
        # Closed by lbd: its own count (the client's kernel may not hear of it, its window being shut).
        while time.monotonic() - start < 15 and lbd.metrics().get("lbd_client_connections") != 0:
            time.sleep(0.05)
        took = time.monotonic() - start
        assert lbd.metrics().get("lbd_client_connections") == 0, "lbd kept a pipelining client that took nothing"
        assert took < 5, took
    finally:
        s.close()
    forwarded = sum(1 for r in b1.requests() if "?pipe=" in r["path"])
    assert forwarded < 10, forwarded
    assert_all_in_rotation(lbd, 1)
    assert lbd.backend_status(b1.addr)["failures"] == 0, lbd.status()


def _memory_instrumented():
    """AddressSanitizer, ThreadSanitizer and valgrind hold freed memory back (quarantine) and add shadow
    memory: RSS figures mean nothing there."""
    try:
        binary = lbdtest.lbd_binary().read_bytes()
        sanitized = b"__asan_init" in binary or b"__tsan_init" in binary
    except OSError:
        sanitized = False
    return sanitized or os.environ.get("LBD_VALGRIND") == "1"


@pytest.mark.skipif(_memory_instrumented(), reason="RSS is not lbd's own under a sanitizer or valgrind")
def test_slow_read_memory_is_bounded_and_returned(harness):
    """What 100 clients that do not read can pin in lbd is bounded per
    connection (64 KiB of response plus the connection's own), and given back
    when they close."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "timeouts.client_body=20s"])
    # Warm up: allocations made once (the recycled exchanges, the event loop's tables).
    for i in range(20):
        assert lbdtest.request(lbd.port, "GET", f"/bytes/300000?w={i}").status == 200
    before = lbd.rss_kib()
    n = 100
    socks = slow_readers(lbd.port, n, "/bytes/50000000")
    try:
        time.sleep(2.0)
        during = lbd.rss_kib()
    finally:
        for s in socks:
            s.close()
    lbdtest.wait_until(lambda: lbd.status()["backends"][0]["active"] == 0, 10,
                       "the slow readers' exchanges to end")
    after = lbdtest.wait_until(
        lambda: (lambda r: r if r - before < 4096 else None)(lbd.rss_kib()), 5,
        "lbd's memory back near its starting figure")
    per_conn = (during - before) / n
    print(f"RSS {before} KiB before, {during} KiB with {n} slow readers, {after} KiB after")
    assert per_conn < 160, f"{per_conn:.0f} KiB per slow reader ({before} -> {during} KiB)"
    assert after - before < 4096, (before, during, after)


def test_slowloris_leaves_the_probe_answered(harness):
    """Heads trickled in on many connections end in 408 at client_header and
    never take a backend's place or another client's request."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "timeouts.client_header=1500ms"])
    socks = []
    load = probe(harness, lbd).start()
    try:
        for i in range(100):
            s = socket.create_connection(("127.0.0.1", lbd.port), timeout=10)
            s.sendall(f"GET /loris?i={i} HTTP/1.1\r\nHost: x\r\n".encode())
            socks.append(s)
        for k in range(8):
            time.sleep(0.3)
            for s in socks:
                try:
                    s.sendall(f"X-{k}: y\r\n".encode())
                except OSError:
                    pass
    finally:
        load.stop()
        for s in socks:
            s.close()
    assert load.ok >= 5 and not load.failures, (load.ok, load.failures[:5])
    assert not b1.saw("/loris")
    assert_all_in_rotation(lbd, 1)


def test_connect_timeouts_count_against_the_backend(harness):
    """What the backend does cause still counts: connects that time out (its
    address drops SYNs: a listener whose accept queue is full) take it out
    after health.passive_fall of them, while every request goes to the other
    backend."""
    b1, b2 = harness.backends(2)
    lbd = harness.lbd([b1, b2], health_interval="1h",
                      args=["--set", "timeouts.connect=200ms", "--set", "health.passive_fall=3"])
    port = int(b1.addr.rsplit(":", 1)[1])
    b1.stop()
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blackhole.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blackhole.bind(("127.0.0.1", port))
    blackhole.listen(0)
    fillers = []
    try:
        for _ in range(3):  # fill the accept queue (a backlog of 0 holds one): later SYNs are dropped
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.setblocking(False)
            f.connect_ex(("127.0.0.1", port))
            fillers.append(f)
        time.sleep(0.2)
        for i in range(8):
            resp = lbdtest.request(lbd.port, "GET", f"/x?i={i}", timeout=10)
            assert resp.status == 200 and resp.header("X-Backend") == "b2", resp
        st = lbd.backend_status(b1.addr)
        assert st["state"] == "down", lbd.status()
        assert any("consecutive timeouts" in line for line in downs(lbd)), downs(lbd)
    finally:
        for f in fillers:
            f.close()
        blackhole.close()

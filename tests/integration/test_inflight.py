"""The count of requests in flight to each backend (`active` in /status, what least-connections
balancing and drain-before-terminate read) goes up once when an exchange is handed to a backend and
down once when it leaves it, however it ends: a success, a client that goes away, a backend that resets
or closes mid-response, a timeout, a retry, an early answer, a body lbd refuses, an upgrade. A count
left above zero would starve a backend of traffic and hold a drain forever; one released twice stops
lbd on its assertion (which these tests see as lbd gone)."""

import socket
import time

import pytest

import lbdtest

UPGRADE_HEAD = (b"GET /upgrade HTTP/1.1\r\nHost: test.local\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n")


def active(lbd):
    return {b["address"]: b["active"] for b in lbd.status()["backends"]}


def settled(lbd, what, timeout=5.0):
    """Waits until every backend's in-flight count is back to 0, with lbd still running, and then until
    both backends are up again (a failure may have marked one down)."""
    last = [None]

    def zero():
        assert lbd.proc.poll() is None, f"lbd exited ({lbd.proc.returncode}) after {what}:\n" \
                                        f"{lbd.stderr_tail()}"
        last[0] = active(lbd)
        return all(n == 0 for n in last[0].values())
    try:
        lbdtest.wait_until(zero, timeout, f"in-flight counts back to 0 after {what}")
    except AssertionError:
        raise AssertionError(f"after {what}: active {last[0]}\n{lbd.stderr_tail()}")
    lbd.wait_ready(timeout=timeout)


def send_and_close(lbd, data, wait_for=None, pause=0.3):
    """Sends <data>, waits <pause> (or until <wait_for> is true), then closes without reading."""
    sock = socket.create_connection(("127.0.0.1", lbd.port), timeout=5)
    try:
        sock.sendall(data)
        if wait_for:
            lbdtest.wait_until(wait_for, 5, "the exchange to reach the backend")
        else:
            time.sleep(pause)
    finally:
        sock.close()


def head(method, path, extra=b""):
    return (f"{method} {path} HTTP/1.1\r\nHost: test.local\r\n".encode() + extra + b"\r\n")


@pytest.fixture
def setup(harness):
    bs = harness.backends(2)
    lbd = harness.lbd(bs, args=["--balance", "least-conn", "--set", "timeouts.backend=1s",
                                "--set", "timeouts.client_body=600ms", "--set", "limits.retries=1",
                                "--set", "limits.max_body_size=64k"])
    return lbd, bs


def test_every_kind_of_ending_releases_once(setup):
    lbd, bs = setup
    settled(lbd, "start")

    # Success, on a kept-alive connection and on a closed one.
    with lbd.connect() as conn:
        for _ in range(3):
            assert conn.get("/x").status == 200
    assert lbd.request("GET", "/x", {"Connection": "close"}).status == 200
    settled(lbd, "successful exchanges")

    # The client goes away while the backend works on its request.
    send_and_close(lbd, head("GET", "/delay/700"),
                   wait_for=lambda: sum(active(lbd).values()) == 1)
    settled(lbd, "a client that left before the answer")

    # The client goes away mid-response.
    send_and_close(lbd, head("GET", "/partial/1500"), pause=0.3)
    settled(lbd, "a client that left mid-response")

    # The backend resets or closes before any response: retried on the other, then 502.
    for path in ("/reset", "/close", "/early-reset"):
        resp = lbd.request("GET", path, {"Connection": "close"})
        assert resp.status == 502, (path, resp)
        settled(lbd, f"a backend that failed on {path}")

    # The backend closes mid-response.
    out, _ = lbd.raw(head("GET", "/partial/10", b"Connection: close\r\n"), timeout=3)
    assert out.startswith(b"HTTP/1.1 200"), out
    settled(lbd, "a backend that closed mid-response")

    # The backend does not answer in time.
    assert lbd.request("GET", "/delay/2500", {"Connection": "close"}).status == 504
    settled(lbd, "a backend timeout")

    # Invalid answers: a 101 nobody asked for.
    assert lbd.get("/upgrade-unasked").status == 502
    settled(lbd, "an unasked protocol switch")

    # An early answer while the body is still coming.
    body = b"x" * 32768
    resp = lbd.request("POST", "/early/413", {"Connection": "close"}, body=body)
    assert resp.status == 413, resp
    settled(lbd, "an early answer")

    # Bodies lbd refuses once the exchange is with a backend: bad chunk, too large, too slow.
    out, _ = lbd.raw(head("POST", "/upload", b"Transfer-Encoding: chunked\r\n") + b"5\r\nhello\r\nzz\r\n",
                     timeout=3)
    assert out.startswith(b"HTTP/1.1 400"), out
    settled(lbd, "a bad chunk")
    big = head("POST", "/upload", b"Transfer-Encoding: chunked\r\n") + \
        (b"8000\r\n" + b"y" * 0x8000 + b"\r\n") * 4
    out, _ = lbd.raw(big, timeout=3)
    assert out.startswith(b"HTTP/1.1 413"), out
    settled(lbd, "a body too large")
    out, _ = lbd.raw(head("POST", "/upload", b"Content-Length: 100\r\n") + b"abc", timeout=3)
    assert out.startswith(b"HTTP/1.1 408"), out
    settled(lbd, "a body not received in time")

    # An upgrade: the tunnel counts as in flight until it closes.
    sock = socket.create_connection(("127.0.0.1", lbd.port), timeout=5)
    sock.sendall(UPGRADE_HEAD)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    assert data.startswith(b"HTTP/1.1 101"), data
    assert sum(active(lbd).values()) == 1
    sock.sendall(b"ping")
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(5)
    while sock.recv(4096):
        pass
    sock.close()
    settled(lbd, "a tunnel")

    # And still balancing: both backends serve.
    names = {lbd.get(f"/y{i}").header("X-Backend") for i in range(4)}
    assert names == {b.name for b in bs}, names


def test_backend_gone_mid_exchange(setup):
    lbd, bs = setup
    # Requests in flight to a backend that dies: failed over or answered 502, counts back to 0.
    sock = socket.create_connection(("127.0.0.1", lbd.port), timeout=5)
    sock.sendall(head("GET", "/delay/2000"))
    lbdtest.wait_until(lambda: sum(active(lbd).values()) == 1, 5, "the request in flight")
    (busy,) = [b for b in bs if active(lbd)[b.addr] == 1]
    busy.kill()
    sock.settimeout(5)
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data:
            break
    sock.close()
    assert data.startswith(b"HTTP/1.1 502") or data.startswith(b"HTTP/1.1 504"), data
    lbdtest.wait_until(lambda: all(n == 0 for n in active(lbd).values()), 5,
                       "in-flight counts back to 0 after a backend killed mid-exchange")
    assert lbd.proc.poll() is None

"""Protocol upgrades (WebSocket): an HTTP/1.1 GET asking to upgrade is forwarded with its Upgrade field
and "Connection: Upgrade"; when the backend answers 101 the connection becomes a byte tunnel both ways,
with backpressure, half-close passed on, and an idle timeout of its own. A 101 nobody asked for is never
relayed."""

import socket
import time

import lbdtest

UPGRADE_HEAD = (b"GET /upgrade HTTP/1.1\r\nHost: test.local\r\nConnection: keep-alive, Upgrade\r\n"
                b"Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n")


def read_head(sock, timeout=5.0):
    """Reads a response head; returns (status, {lowercase name: [values]}, bytes after the head)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a full head: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    fields = {}
    for line in lines[1:]:
        name, value = line.split(":", 1)
        fields.setdefault(name.strip().lower(), []).append(value.strip())
    return status, fields, rest


def recv_exactly(sock, n, have=b"", timeout=10.0):
    sock.settimeout(timeout)
    data = bytearray(have)
    while len(data) < n:
        chunk = sock.recv(min(65536, n - len(data)))
        assert chunk, f"closed after {len(data)} of {n} bytes"
        data += chunk
    return bytes(data)


def recv_until_close(sock, timeout=5.0):
    sock.settimeout(timeout)
    data = bytearray()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return bytes(data)
        data += chunk


def upgrade(lbd, extra=b""):
    sock = socket.create_connection(("127.0.0.1", lbd.port), timeout=5)
    sock.sendall(UPGRADE_HEAD + extra)
    status, fields, rest = read_head(sock)
    return sock, status, fields, rest


def test_websocket_tunnel_both_ways(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    sock, status, fields, rest = upgrade(lbd)
    with sock:
        assert status == 101, fields
        assert fields["upgrade"] == ["websocket"]
        assert fields["connection"] == ["Upgrade"]
        assert fields.get("x-request-id"), fields
        assert rest == b""
        sock.sendall(b"hello")
        assert recv_exactly(sock, 5) == b"hello"
        # 4 MiB each way at once, more than any buffer on the way holds: backpressure, nothing lost.
        payload = bytes(range(256)) * (4 * 4096)
        sock.setblocking(False)
        sent, got = 0, bytearray()
        deadline = time.monotonic() + 20
        while len(got) < len(payload):
            assert time.monotonic() < deadline, f"tunnel stalled at {sent} sent, {len(got)} back"
            if sent < len(payload):
                try:
                    sent += sock.send(payload[sent:sent + 65536])
                except BlockingIOError:
                    pass
            try:
                chunk = sock.recv(65536)
                assert chunk, "closed mid-tunnel"
                got += chunk
            except BlockingIOError:
                time.sleep(0.001)
        assert bytes(got) == payload
        sock.setblocking(True)
        # The client half-closes: the backend sees it, answers, and closes.
        sock.shutdown(socket.SHUT_WR)
        assert recv_until_close(sock) == b"bye\n"

    (seen,) = [r for r in b1.requests() if r["path"] == "/upgrade"]
    names = {n.lower(): v for n, v in seen["headers"]}
    assert names["upgrade"] == "websocket"
    assert names["connection"] == "Upgrade"
    assert names["sec-websocket-key"] == "dGhlIHNhbXBsZSBub25jZQ=="

    def logged():
        return [e for e in lbd.access_entries() if e.get("path") == "/upgrade"] or None
    (entry,) = lbdtest.wait_until(logged, 3, "the tunnel's access log line")
    assert entry["status"] == "101"
    assert int(entry["bytes"]) == 5 + len(payload) + 4


def test_bytes_sent_with_the_head_go_through(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    sock, status, _, rest = upgrade(lbd, extra=b"early bytes")
    with sock:
        assert status == 101
        assert recv_exactly(sock, len(b"early bytes"), have=rest) == b"early bytes"


def test_backend_declining_the_upgrade_is_a_plain_exchange(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    with lbd.connect() as conn:
        resp = conn.get("/echo", [("Connection", "Upgrade"), ("Upgrade", "websocket")])
        assert resp.status == 200
        headers = {n.lower(): v for n, v in resp.json()["headers"]}
        assert headers["upgrade"] == "websocket"
        assert headers["connection"] == "Upgrade"
        # Still an HTTP connection, kept alive.
        assert conn.get("/x").status == 200


def test_upgrade_not_asked_properly_is_not_forwarded(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    # Upgrade without the Connection token, or on a POST with a body, or twice: a plain request.
    cases = [
        [("Upgrade", "websocket")],
        [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Upgrade", "h2c")],
    ]
    for extra in cases:
        resp = lbd.request("GET", "/upgrade", extra)
        assert resp.status == 426, (extra, resp)
    resp = lbd.request("POST", "/upgrade", [("Connection", "Upgrade"), ("Upgrade", "websocket")], body=b"x")
    assert resp.status == 426, resp


def test_unasked_101_is_refused(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    resp = lbd.get("/upgrade-unasked")
    assert resp.status == 502, resp
    assert b"raw bytes" not in resp.body


def test_idle_tunnel_times_out(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "timeouts.tunnel=500ms"])
    sock, status, _, _ = upgrade(lbd)
    with sock:
        assert status == 101
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4) == b"ping"
        t0 = time.monotonic()
        assert recv_until_close(sock, timeout=5) == b""
        assert 0.3 < time.monotonic() - t0 < 3
    # lbd itself is fine.
    assert lbd.get("/x").status == 200

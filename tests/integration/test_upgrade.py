"""Protocol upgrades (WebSocket): an HTTP/1.1 GET asking to upgrade to a protocol on the `upgrades`
list is forwarded with its Upgrade field and "Connection: Upgrade"; when the backend answers 101 the
connection becomes a byte tunnel both ways, with backpressure, half-close passed on, and an idle timeout
of its own. Any other upgrade request (h2c above all) goes as a plain request; an answer other than 101
leaves the connection HTTP; a 101 nobody asked for, or to a protocol not on the list, is never relayed."""

import socket
import time

import pytest

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


H2C_FIELDS = (b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
              b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n")
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
WS_FIELDS = (b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")


def head(path, fields, extra=b""):
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: test.local\r\n" + fields + extra + b"\r\n"


def header_names(record):
    return {n.lower() for n, _ in record["headers"]}


def test_h2c_is_forwarded_as_a_plain_request(harness):
    """The h2c smuggling pattern: h2c is not on the list, so the request goes without Upgrade, Connection
    and HTTP2-Settings; the backend, which would switch, answers 426, and the HTTP/2 preface sent after
    the head is read by lbd as HTTP/1.1 and refused: nothing reaches the backend past lbd's checks."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    out, closed = lbd.raw(head("/upgrade", H2C_FIELDS) + H2_PREFACE, timeout=3)
    resps = lbdtest.parse_responses(out)
    assert [r.status for r in resps][:1] == [426], out
    assert len(resps) == 2 and resps[1].status in (400, 505), out
    assert closed
    (seen,) = [r for r in b1.requests() if r["path"] == "/upgrade"]
    assert not header_names(seen) & {"upgrade", "connection", "http2-settings"}, seen
    assert [r["path"] for r in b1.requests()] == ["/upgrade"]

    # A route that does not care sees a plain GET, and the connection stays HTTP.
    with lbd.connect() as conn:
        conn.send(head("/echo", H2C_FIELDS))
        resp = conn.read_response()
        assert resp.status == 200
        names = {n.lower() for n, _ in resp.json()["headers"]}
        assert not names & {"upgrade", "connection", "http2-settings"}, names
        assert conn.get("/x").status == 200


def test_unasked_101_to_a_plain_forwarded_upgrade_is_refused(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    out, _ = lbd.raw(head("/upgrade-unasked", H2C_FIELDS) + H2_PREFACE, timeout=3)
    resps = lbdtest.parse_responses(out)
    assert [r.status for r in resps][:1] == [502], out
    assert b"raw bytes" not in out


def test_upgrade_tokens_compare_case_insensitively(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    sock = socket.create_connection(("127.0.0.1", lbd.port), timeout=5)
    with sock:
        sock.sendall(head("/upgrade", b"Connection: keep-alive, UPGRADE\r\nUpgrade: WebSocket\r\n"))
        status, fields, rest = read_head(sock)
        assert status == 101, fields
        assert fields["upgrade"] == ["WebSocket"]
        sock.sendall(b"ping")
        assert recv_exactly(sock, 4, have=rest) == b"ping"


def test_upgrades_off(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "lbd.upgrades=off"])
    out, _ = lbd.raw(head("/upgrade", WS_FIELDS) + b"early bytes", timeout=3)
    resps = lbdtest.parse_responses(out)
    assert [r.status for r in resps][:2] == [426, 400], out
    (seen,) = b1.requests()
    assert not header_names(seen) & {"upgrade", "connection"}, seen


def test_upgrades_list(harness):
    """With h2c on the list, it goes through (HTTP2-Settings still dropped: it is hop-by-hop)."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "lbd.upgrades=websocket, H2C"])
    sock = socket.create_connection(("127.0.0.1", lbd.port), timeout=5)
    with sock:
        sock.sendall(head("/upgrade", H2C_FIELDS))
        status, fields, rest = read_head(sock)
        assert status == 101, fields
        assert fields["upgrade"] == ["h2c"]
    (seen,) = b1.requests()
    assert "upgrade" in header_names(seen)
    assert "http2-settings" not in header_names(seen)


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\n"
    b"Content-Length: 3\r\n\r\nno\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nok\nRAW after the body",
], ids=["426", "200"])
def test_answer_other_than_101_keeps_the_connection_http(harness, answer):
    """The upgrade request is forwarded as one, but the backend does not switch: whatever the client sent
    after its head is HTTP, parsed by lbd (a request goes to a backend with lbd's fields; bytes of the
    other protocol get a 400), and nothing is relayed raw either way."""
    with lbdtest.ScriptedBackend(lambda _head: answer) as sb:
        lbd = harness.lbd([sb])
        after = b"GET /after HTTP/1.1\r\nHost: test.local\r\n\r\n"
        frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58\r\n\r\n"
        out, closed = lbd.raw(head("/ws", WS_FIELDS) + after + frame, timeout=3)
        resps = lbdtest.parse_responses(out)
        status = int(answer.split(b" ")[1])
        assert [r.status for r in resps] == [status, status, 400], out
        assert b"RAW" not in out
        assert closed
        heads = list(sb.heads)
        assert len(heads) == 2, heads
        assert b"\r\nUpgrade: websocket\r\n" in heads[0] and b"Connection: Upgrade\r\n" in heads[0]
        assert heads[1].startswith(b"GET /after HTTP/1.1\r\n")
        assert b"X-Forwarded-For: 127.0.0.1\r\n" in heads[1]
        # Nothing followed either head on its backend connection: no byte was tunnelled.
        lbdtest.wait_until(lambda: len(sb.after) == 2 or None, 3, "both exchanges to end")
        assert sb.after == [b"", b""]


def test_101_to_a_protocol_not_on_the_list_is_refused(harness):
    answer = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
              b"RAW h2 frames")
    with lbdtest.ScriptedBackend(lambda _head: answer) as sb:
        lbd = harness.lbd([sb])
        out, _ = lbd.raw(head("/ws", WS_FIELDS) + b"client frames", timeout=3)
        resps = lbdtest.parse_responses(out)
        assert [r.status for r in resps][:1] == [502], out
        assert b"RAW" not in out
        lbdtest.wait_until(lambda: sb.after or None, 3, "the exchange to end")
        assert sb.after == [b""]

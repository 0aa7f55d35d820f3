"""Keep-alive on both sides and pipelining."""

import time

import pytest

import lbdtest


@pytest.fixture
def setup(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    return lbd, b1


def test_client_connection_reused(setup):
    lbd, _ = setup
    with lbd.connect() as conn:
        sock = conn.sock
        for i in range(200):
            resp = conn.get(f"/x?i={i}")
            assert resp.status == 200, resp
            assert "close" not in resp.connection_tokens(), resp
            assert conn.sock is sock
        # Still open: a further request on the same socket works.
        assert conn.get("/last").body == b"b1 /last\n"
    st = lbd.status()
    assert st["backends"][0]["requests"] >= 201


def test_backend_connections_pooled(setup):
    lbd, b1 = setup
    before = b1.conns()["data_conns"]
    with lbd.connect() as conn:
        for i in range(200):
            assert conn.get(f"/x?i={i}").status == 200
    # New client connections, one request each, reuse the idle backend connections too.
    for i in range(50):
        resp = lbd.request("GET", f"/y?i={i}", {"Connection": "close"})
        assert resp.status == 200
    after = b1.conns()["data_conns"]
    used = after - before
    assert 1 <= used <= 5, f"{used} backend connections for 250 requests"


def test_backend_connection_reused_across_keepalive_requests(setup):
    lbd, _ = setup
    with lbd.connect() as conn:
        ids = {conn.get("/x").header("X-Backend-Conn") for _ in range(50)}
    assert len(ids) <= 2, ids


def test_pipelined_requests_answered_in_order(setup):
    lbd, _ = setup
    reqs = b"".join(lbdtest.HttpConnection.build_head("GET", f"/echo?n={i}") for i in range(20))
    with lbd.connect() as conn:
        conn.send(reqs)
        for i in range(20):
            resp = conn.read_response()
            assert resp.status == 200
            assert resp.json()["path"] == f"/echo?n={i}"
        assert conn.get("/after").status == 200


def test_pipelined_then_half_closed(setup):
    """A client that sends its requests and shuts its side (SHUT_WR) reads every answer before lbd closes."""
    lbd, _ = setup
    reqs = b"".join(lbdtest.HttpConnection.build_head("GET", f"/echo?n={i}") for i in range(5))
    out, closed = lbdtest.raw_exchange(lbd.port, reqs, timeout=10, shutdown_write=True)
    assert closed
    assert out.count(b"HTTP/1.1 200 ") == 5, out[:500]
    for i in range(5):
        assert f'"/echo?n={i}"'.encode() in out, out[:500]


def test_pipelined_slow_first(setup):
    lbd, _ = setup
    reqs = (lbdtest.HttpConnection.build_head("GET", "/delay/300")
            + lbdtest.HttpConnection.build_head("GET", "/fast1")
            + b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            + lbdtest.HttpConnection.build_head("HEAD", "/bytes/50")
            + lbdtest.HttpConnection.build_head("GET", "/fast2"))
    with lbd.connect() as conn:
        conn.send(reqs)
        r1 = conn.read_response()
        r2 = conn.read_response()
        r3 = conn.read_response("POST")
        r4 = conn.read_response("HEAD")
        r5 = conn.read_response()
    assert r1.body == b"delayed 300\n"
    assert r2.body == b"b1 /fast1\n"
    assert r3.json()["body_len"] == 5
    assert r4.status == 200 and r4.header("Content-Length") == "50" and r4.body == b""
    assert r5.body == b"b1 /fast2\n"


def test_pipelined_in_one_segment_with_bodies(setup):
    lbd, _ = setup
    data = b""
    for i in range(10):
        body = bytes([65 + i]) * (i * 100)
        data += (b"POST /echo?i=%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                 % (i, len(body)) + body)
    data += b"GET /end HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out, closed = lbd.raw(data, timeout=5)
    assert closed
    resps = lbdtest.parse_responses(out)
    assert len(resps) == 11
    for i in range(10):
        j = resps[i].json()
        assert j["path"] == f"/echo?i={i}" and j["body_len"] == i * 100
    assert resps[10].body == b"b1 /end\n"


def test_connection_close_from_client(setup):
    lbd, _ = setup
    with lbd.connect() as conn:
        resp = conn.get("/x", {"Connection": "close"})
        assert resp.status == 200
        assert "close" in resp.connection_tokens()
        assert conn.closed_by_peer(2.0)


def test_http10_without_keepalive_closes(setup):
    lbd, _ = setup
    out, closed = lbd.raw(b"GET /x HTTP/1.0\r\nHost: x\r\n\r\n", timeout=3)
    assert closed
    (resp,) = lbdtest.parse_responses(out)
    assert resp.status == 200 and resp.body == b"b1 /x\n"


def test_http10_keepalive_consistent(setup):
    """An HTTP/1.0 client asking for keep-alive either gets it announced
    (Connection: keep-alive) and the connection stays usable, or the
    connection is closed after the response."""
    lbd, _ = setup
    with lbd.connect() as conn:
        for _ in range(3):
            conn.send(b"GET /x HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            resp = conn.read_response()
            assert resp.status == 200 and resp.body == b"b1 /x\n"
            if "keep-alive" not in resp.connection_tokens():
                assert conn.closed_by_peer(2.0), "HTTP/1.0 response without keep-alive, not closed"
                return


def test_client_idle_timeout(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "timeouts.client_idle=300ms"])
    with lbd.connect() as conn:
        assert conn.get("/x").status == 200
        assert conn.closed_by_peer(2.0), "idle keep-alive connection not closed"


def test_backend_closing_after_response(setup):
    """The backend ends some responses with Connection: close; lbd must not
    reuse those connections."""
    lbd, _ = setup
    conn = lbd.connect()
    try:
        for i in range(20):
            path = "/closeafter" if i % 2 == 0 else f"/echo?i={i}"
            resp = conn.get(path)
            assert resp.status == 200, (i, resp)
            if i % 2:
                assert resp.json()["path"] == path
            if "close" in resp.connection_tokens():
                conn.close()
                conn = lbd.connect()
    finally:
        conn.close()


def test_backend_idle_timeout_shorter_than_pool(harness):
    """The backend closes idle keep-alive connections after 150 ms: lbd must
    notice (or retry) instead of failing requests on a dead pooled connection."""
    b1 = harness.backend("b1", idle_timeout_ms=150)
    lbd = harness.lbd([b1], health_interval="20s")
    with lbd.connect() as conn:
        for i, gap in enumerate([0.3, 0.1, 0.2, 0.16, 0.14, 0.25, 0.3]):
            resp = conn.get(f"/echo?get={i}")
            assert resp.status == 200 and resp.json()["path"] == f"/echo?get={i}", resp
            time.sleep(gap)
        for i in range(4):
            resp = conn.request("POST", f"/echo?post={i}", body=b"abc")
            assert resp.status == 200, resp
            assert resp.json()["path"] == f"/echo?post={i}"
            time.sleep(0.3)


def test_many_concurrent_connections(setup):
    lbd, _ = setup
    conns = []
    try:
        for i in range(200):
            c = lbd.connect()
            conns.append(c)
            c.send_request("GET", f"/delay/200?c={i}")
        for i, c in enumerate(conns):
            resp = c.read_response()
            assert resp.status == 200 and resp.body == b"delayed 200\n", (i, resp)
    finally:
        for c in conns:
            c.close()


def test_response_hop_by_hop_not_relayed(setup):
    lbd, _ = setup
    with lbd.connect() as conn:
        resp = conn.get("/hopheaders")
        assert resp.status == 200 and resp.body == b"ok\n"
        names = {n.lower() for n, _ in resp.headers}
        for name in ("x-internal", "keep-alive", "proxy-connection"):
            assert name not in names, f"{name} relayed to the client: {resp.headers}"
        assert resp.header("X-Visible") == "yes"
        assert resp.connection_tokens() <= {"keep-alive", "close"}, resp.headers
        assert conn.get("/after").status == 200

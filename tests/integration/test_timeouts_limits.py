"""Timeouts (408, 504) and limits (431, 413), and 503."""

import select
import time

import lbdtest


def only_response(out):
    resps = lbdtest.parse_responses(out)
    assert len(resps) == 1, f"expected one response, got {out!r}"
    return resps[0]


def assert_error(resp, code):
    assert resp.status == code, resp
    assert (resp.header("Content-Type") or "").startswith("text/plain"), resp
    assert resp.body.startswith(f"{code} ".encode()), resp
    assert resp.body.endswith(b"\n")
    assert "close" in resp.connection_tokens(), resp


def test_408_incomplete_head(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "timeouts.client_header=500ms"])
    start = time.monotonic()
    out, closed = lbd.raw(b"GET /slow-head HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n", timeout=4)
    elapsed = time.monotonic() - start
    assert closed, "connection not closed after 408"
    assert_error(only_response(out), 408)
    assert 0.4 <= elapsed <= 2.5, elapsed
    assert not b1.saw("/slow-head")


def test_408_trickled_head(harness):
    """A head sent a few bytes at a time still has to complete within client_header."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "timeouts.client_header=600ms"])
    with lbd.connect(timeout=4) as conn:
        start = time.monotonic()
        head = b"GET /trickle HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: abcdefgh\r\n" * 30
        for i in range(0, len(head), 8):
            conn.send(head[i:i + 8])
            # Stop sending as soon as lbd answers (a 408 is expected at ~600 ms).
            readable, _, _ = select.select([conn.sock], [], [], 0.05)
            if readable or time.monotonic() - start > 2.5:
                break
        elapsed = time.monotonic() - start
        assert elapsed < 2.5, "no answer while the head trickled in"
        resp = conn.read_response(allow_incomplete=True)
    assert_error(resp, 408)
    assert not b1.saw("/trickle")


def test_idle_connection_then_request(harness):
    """client_header does not apply to a keep-alive connection waiting for its
    next request (that is client_idle)."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "timeouts.client_header=300ms",
                                  "--set", "timeouts.client_idle=5s"])
    with lbd.connect() as conn:
        assert conn.get("/a").status == 200
        time.sleep(0.6)
        assert conn.get("/b").status == 200


def test_504_backend_too_slow(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "timeouts.backend=300ms"])
    start = time.monotonic()
    resp = lbd.get("/delay/3000")
    elapsed = time.monotonic() - start
    assert_error(resp, 504)
    assert 0.25 <= elapsed < 2.5, elapsed
    # A fast request still works afterwards.
    assert lbd.get("/fast").status == 200


def test_slow_but_within_backend_timeout(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "timeouts.backend=1s"])
    assert lbd.get("/delay/300").status == 200
    assert lbd.get("/slowhead/300").body == b"slow\n"


def test_431_header_too_large(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "limits.max_header_size=4k"])
    with lbd.connect() as conn:
        assert conn.get("/small", {"X-Big": "a" * 2000}).status == 200
    out, closed = lbd.raw(b"GET /big HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n")
    assert closed
    assert_error(only_response(out), 431)
    # Many small headers adding up beyond the limit.
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 50) for i in range(200))
    out, closed = lbd.raw(b"GET /many HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert closed
    assert_error(only_response(out), 431)
    assert not b1.saw("/big") and not b1.saw("/many")


def test_431_default_limit(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    assert lbd.get("/ok", {"X-Big": "a" * 12000}).status == 200
    out, closed = lbd.raw(b"GET /huge HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000
                          + b"\r\n\r\n")
    assert closed
    assert_error(only_response(out), 431)
    assert not b1.saw("/huge")


def test_431_field_count_leaves_room_for_forwarding_fields(harness):
    # lbd adds X-Forwarded-For, X-Forwarded-Proto and X-Request-Id; the head it forwards must stay
    # within the field limit the next hop (often another lbd) holds it to, so the limit counts them.
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])

    def head(n_extra, marker):
        fields = b"".join(b"X-H%d: v\r\n" % i for i in range(n_extra))
        return b"GET /" + marker + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fields + b"\r\n"

    # Host + 96 fields (+ Connection, hop-by-hop) forward as 100 fields: the most allowed.
    out, _ = lbd.raw(head(96, b"fits"))
    assert only_response(out).status == 200
    rec = [r for r in b1.requests() if "/fits" in r["path"]]
    assert len(rec) == 1 and len(rec[0]["headers"]) == 100, rec
    out, closed = lbd.raw(head(97, b"one-too-many"))
    assert closed
    assert_error(only_response(out), 431)
    assert not b1.saw("/one-too-many")


def test_431_huge_request_line(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "limits.max_header_size=4k"])
    out, closed = lbd.raw(b"GET /long?" + b"q" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert closed
    resp = only_response(out)
    assert resp.status in (414, 431), resp
    assert not b1.saw("/long")


def test_413_content_length(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "limits.max_body_size=1k"])
    with lbd.connect() as conn:
        assert conn.request("POST", "/upload", body=b"x" * 1000).json()["body_len"] == 1000
    out, closed = lbd.raw(b"POST /too-big HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n"
                          + b"x" * 2000)
    assert closed
    assert_error(only_response(out), 413)
    assert not b1.saw("/too-big")
    # Rejected from the head alone, before the body is sent.
    out, closed = lbd.raw(b"POST /too-big2 HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n"
                          b"\r\n")
    assert closed
    assert_error(only_response(out), 413)
    assert not b1.saw("/too-big2")


def test_413_chunked(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "limits.max_body_size=1k"])
    with lbd.connect() as conn:
        resp = conn.request("POST", "/upload", body=iter([b"y" * 500, b"y" * 400]))
        assert resp.json()["body_len"] == 900
    body = b"".join(b"%x\r\n%s\r\n" % (500, b"z" * 500) for _ in range(4)) + b"0\r\n\r\n"
    out, closed = lbd.raw(b"POST /too-big-chunked HTTP/1.1\r\nHost: x\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n" + body)
    assert closed
    assert_error(only_response(out), 413)
    # One chunk declaring more than the limit.
    out, closed = lbd.raw(b"POST /too-big-chunk HTTP/1.1\r\nHost: x\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n100000\r\n" + b"z" * 3000)
    assert closed
    assert_error(only_response(out), 413)
    assert lbd.get("/still-ok").status == 200


def test_503_no_backend(harness):
    dead = lbdtest.Backend(harness.workdir, "dead")  # never started: connection refused
    lbd = harness.lbd([dead], healthy=0)
    lbdtest.wait_until(lambda: lbd.backend_status(dead.addr)["last_check"]["result"] != "none",
                       3, "a first probe")
    resp = lbd.get("/x")
    assert_error(resp, 503)
    assert resp.body == b"503 Service Unavailable: no healthy backend\n"
    st = lbd.backend_status(dead.addr)
    assert st["last_check"]["result"] in ("refused", "error"), st


def test_error_responses_have_no_empty_request_id(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "limits.max_header_size=1k",
                                  "--set", "timeouts.client_header=300ms"])
    for data in (b"GET /x HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n",
                 b"GET /x HTTP/1.1\r\nHost: x\r\n"):
        out, _ = lbd.raw(data)
        resp = only_response(out)
        assert resp.status in (408, 431)
        rid = resp.header_values("X-Request-Id")
        assert rid == [] or (len(rid) == 1 and rid[0]), f"X-Request-Id on the {resp.status}: {rid}"

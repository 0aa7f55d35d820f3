"""webd on the HTTP engine (http/server.c): framing refused exactly as lbd refuses it (lbd's own cases and
the fuzz corpus, run against webd), pipelining, keep-alive and its idle timeout, HEAD, HTTP/1.0,
100-continue, chunked bodies, and every refusal of the engine's own (400, 408, 413, 431, 501, 505)
answered in the API's JSON shape and recorded in the journal and the activity table."""

import select
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

import webdtest
from webdtest import RawConn, raw_exchange

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
from test_framing import ALSO_ACCEPTED, CASES, REASONS  # noqa: E402 - lbd's cases, shared on purpose

CORPUS = Path(__file__).resolve().parent.parent / "fuzz" / "corpus" / "request"
H = b"Host: x\r\n"


WEBD_EXTRA = {"header_timeout": "2s", "body_timeout": "2s", "idle_timeout": "2s", "max_header_size": "4k",
              "max_body_size": "2k"}


@pytest.fixture(scope="module")
def token(webd):
    return webd.user("engine")[1]


def check_json_error(r, status):
    assert r.status == status, (r.status, r.body)
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    assert r.headers.get("x-request-id"), r.headers
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"], body
    return body["error"]


def activity_row(webd, rid):
    """The activity row of request id rid, once the batch is written: (method, path, status)."""
    rows = []

    def found():
        rows[:] = webd.cluster.sql("SELECT method, path, status FROM activity WHERE request_id = :'v1'", rid)
        return bool(rows)
    webdtest.wait_until(found, 10, f"the activity row of {rid}")
    return tuple(rows[0])


def journal_line(webd, rid):
    webdtest.wait_until(lambda: f"request_id={rid}" in webd.log(), 5, f"the journal line of {rid}")
    return next(line for line in webd.log().splitlines() if f"request_id={rid}" in line)


@pytest.mark.parametrize("case_id,data", CASES, ids=[c[0] for c in CASES])
def test_framing_refused_as_lbd_refuses_it(webd, case_id, data):
    out, closed = raw_exchange(webd.port, data, timeout=5)
    assert len(out) == 1, f"{data!r} -> {[(r.status, r.body) for r in out]}"
    r = out[0]
    check_json_error(r, r.status)
    assert r.status in (400,) + ALSO_ACCEPTED.get(case_id, ()), (data, r.status, r.body)
    assert closed and r.headers.get("connection") == "close", r.headers
    if case_id in REASONS:
        assert REASONS[case_id] in r.json()["error"]["message"], r.body


@pytest.mark.parametrize("case_id,data", [c for c in CASES if c[0] in ("two-cl", "bare-lf", "chunk-size-nonhex",
                                                                     "obs-fold-sp", "cl-te", "smuggle-cl-te")],
                         ids=["two-cl", "bare-lf", "chunk-size-nonhex", "obs-fold-sp", "cl-te", "smuggle-cl-te"])
def test_framing_refused_after_a_good_request(webd, case_id, data):
    with RawConn(webd.port) as c:
        c.send(b"GET /healthcheck HTTP/1.1\r\n" + H + b"\r\n")
        assert c.read_response().status == 200
        c.send(data)
        check_json_error(c.read_response(), 400)
        assert c.closed_by_peer(5)


@pytest.mark.parametrize("path", sorted(CORPUS.iterdir()), ids=lambda p: p.name)
def test_fuzz_corpus(webd, path):
    """Each seed of the request fuzzer: an answer (JSON when it is an error) or a close, and webd lives."""
    out, _ = raw_exchange(webd.port, path.read_bytes(), timeout=5)
    for r in out:
        assert 100 <= r.status <= 599
        if r.status >= 400 and r.body:
            check_json_error(r, r.status)
    assert webd.request("GET", "/healthcheck").status_code == 200


def test_pipelined_requests_answered_in_order(webd):
    reqs = b"".join(b"GET %s HTTP/1.1\r\nHost: x\r\nX-Request-Id: pipe-%d\r\n\r\n" % (p, i)
                    for i, p in enumerate([b"/healthcheck", b"/nowhere", b"/tasks", b"/healthcheck"]))
    with RawConn(webd.port) as c:
        c.send(reqs)
        got = [c.read_response() for _ in range(4)]
    assert [r.status for r in got] == [200, 404, 401, 200]
    assert [r.headers["x-request-id"] for r in got] == [f"pipe-{i}" for i in range(4)]


def test_pipelined_after_a_body(webd, token):
    body = b'{"title": "piped"}'
    post = (b"POST /tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    with RawConn(webd.port) as c:
        c.send(post + b"GET /healthcheck HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
        first, second = c.read_response(), c.read_response()
        assert first.status == 201 and first.json()["title"] == "piped", first.body
        assert second.status == 200 and second.headers["connection"] == "close"
        assert c.closed_by_peer(5)


def test_chunked_body_assembled(webd, token):
    chunks = b'5\r\n{"tit\r\n0c;ext=1\r\nle": "chunk"\r\n1\r\n}\r\n0\r\n\r\n'
    with RawConn(webd.port) as c:
        c.send(b"POST /tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode()
               + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
        r = c.read_response()
    assert r.status == 201 and r.json()["title"] == "chunk", r.body


def test_expect_continue(webd, token):
    body = b'{"title": "continued"}'
    with RawConn(webd.port) as c:
        c.send(b"POST /tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode()
               + b"\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
               % len(body))
        assert c.read_response().status == 100
        c.send(body)
        assert c.read_response().status == 201
    # Too large to accept: 413 at once, no 100.
    with RawConn(webd.port) as c:
        c.send(b"POST /tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Expect: 100-continue\r\nContent-Length: 100000\r\n\r\n")
        check_json_error(c.read_response(), 413)
        assert c.closed_by_peer(5)


def test_head_and_http10(webd):
    with RawConn(webd.port) as c:
        c.send(b"HEAD /healthcheck HTTP/1.1\r\n" + H + b"\r\n")
        r = c.read_response(head_only=True)
        assert r.status == 200 and int(r.headers["content-length"]) > 0
        c.send(b"GET /healthcheck HTTP/1.1\r\n" + H + b"\r\n")
        r = c.read_response()  # the HEAD sent no body: this parses as the next answer
        assert r.status == 200 and r.json()
    # HTTP/1.0: closed after the answer, unless it asks to keep it.
    out, closed = raw_exchange(webd.port, b"GET /healthcheck HTTP/1.0\r\n\r\n")
    assert [r.status for r in out] == [200] and closed
    with RawConn(webd.port) as c:
        c.send(b"GET /healthcheck HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.headers["connection"] == "keep-alive"
        c.send(b"GET /healthcheck HTTP/1.0\r\n\r\n")
        assert c.read_response().status == 200
        assert c.closed_by_peer(5)


def test_half_closed_client_gets_its_answers(webd, token):
    """A client that sends its requests and then shuts its side (SHUT_WR) still reads every answer, a body
    included, before webd closes; half a head then EOF is closed without an answer."""
    with RawConn(webd.port) as c:
        body = b'{"title": "half closed"}'
        c.send(b"GET /healthcheck HTTP/1.1\r\n" + H + b"\r\n"
               b"POST /tasks HTTP/1.1\r\n" + H + b"Authorization: Bearer " + token.encode() +
               b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
               b"\r\n\r\n" + body)
        c.sock.shutdown(socket.SHUT_WR)
        assert c.read_response().status == 200
        r = c.read_response()
        assert r.status == 201 and r.json()["title"] == "half closed", r.body
        assert c.closed_by_peer(5)
    with RawConn(webd.port) as c:
        c.send(b"GET /healthcheck HTTP/1.1\r\nHo")
        c.sock.shutdown(socket.SHUT_WR)
        assert c.closed_by_peer(5)
    assert webdtest.Webd.request(webd, "GET", "/healthcheck").status_code == 200


def test_keepalive_idle_timeout(webd):
    with RawConn(webd.port) as kept, RawConn(webd.port) as idle:
        kept.send(b"GET /healthcheck HTTP/1.1\r\n" + H + b"\r\n")
        idle.send(b"GET /healthcheck HTTP/1.1\r\n" + H + b"\r\n")
        assert kept.read_response().status == 200 and idle.read_response().status == 200
        start = time.monotonic()
        # Used again within the timeout, the connection stays.
        time.sleep(1)
        kept.send(b"GET /healthcheck HTTP/1.1\r\n" + H + b"\r\n")
        assert kept.read_response().status == 200
        # Left alone: closed after about idle_timeout (2 s), silently.
        assert idle.closed_by_peer(10)
        assert 1.5 <= time.monotonic() - start < 10
        assert idle.buf == b""


def test_refusals_logged_and_recorded(webd):
    """Each refusal of the engine: JSON, a journal line and an activity row."""
    cases = [
        ("malformed", b"GET /tasks HTTP/1.1\r\nHost: x\r\nBad Field: x\r\n\r\n", 400),
        ("unknown method", b"BREW /tasks HTTP/1.1\r\n" + H + b"\r\n", 501),
        ("version", b"GET /tasks HTTP/2.0\r\n" + H + b"\r\n", 505),
        ("head too large", b"GET /tasks HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 5000 + b"\r\n\r\n", 431),
        ("body too large", b"POST /tasks HTTP/1.1\r\n" + H + b"X-Request-Id: big-body-1\r\n"
         b"Content-Type: application/json\r\nContent-Length: 3000\r\n\r\n" + b"x" * 3000, 413),
        ("chunked too large", b"POST /tasks HTTP/1.1\r\n" + H + b"Content-Type: application/json\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"x" * 1024 + b"\r\n" + b"400\r\n"
         + b"x" * 1024 + b"\r\n" + b"400\r\n" + b"x" * 1024 + b"\r\n0\r\n\r\n", 413),
    ]
    for what, data, status in cases:
        out, closed = raw_exchange(webd.port, data)
        assert len(out) == 1 and closed, (what, [(r.status, r.body) for r in out])
        check_json_error(out[0], status)
        rid = out[0].headers["x-request-id"]
        line = journal_line(webd, rid)
        assert f" {status} " in line, (what, line)
        assert activity_row(webd, rid)[2] == str(status), what
    # A parsed request keeps its method, path and the client's request id.
    assert activity_row(webd, "big-body-1") == ("POST", "/tasks", "413")


def test_slowloris_answered_408_and_recorded(webd):
    """A head trickling in a line at a time is answered 408 at header_timeout (2 s), whatever trickles."""
    with RawConn(webd.port, timeout=10) as c:
        start = time.monotonic()
        c.send(b"GET /tasks HTTP/1.1\r\n")
        for i in range(30):  # a line every 0.3 s until webd answers: it must not wait for the head
            if select.select([c.sock], [], [], 0.3)[0]:
                break
            c.send(b"X-Drip-%d: x\r\n" % i)
        r = c.read_response(timeout=5)
        took = time.monotonic() - start
        check_json_error(r, 408)
        assert 1.5 <= took < 6, took
        assert c.closed_by_peer(5)
    rid = r.headers["x-request-id"]
    assert " 408 " in journal_line(webd, rid)
    assert activity_row(webd, rid)[2] == "408"


def test_slow_body_408(webd, token):
    with RawConn(webd.port, timeout=10) as c:
        c.send(b"POST /tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode()
               + b"\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{")
        start = time.monotonic()
        r = c.read_response(timeout=8)
        check_json_error(r, 408)
        assert 1.5 <= time.monotonic() - start < 6
    assert activity_row(webd, r.headers["x-request-id"]) == ("POST", "/tasks", "408")


def test_client_not_reading_is_bounded(webd, token):
    """Pipelined requests from a client that reads nothing: webd stops reading it once its answers pile
    up, and closes it when it takes nothing for idle_timeout; webd keeps answering others.
    Before it stalls, webd answers every request it has read (each a query) until about
    HTTP_SERVER_OUTPUT_MAX plus the kernel's buffers wait: about 4 s on a quiet machine, over 20 s
    under the sanitizers beside other suites. So the bound is 90 s, and the time it took is reported."""
    one = b"GET /healthcheck HTTP/1.1\r\n" + H + b"\r\n"
    with RawConn(webd.port, timeout=10) as c:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.sock.setblocking(False)
        sent, checked, closed = 0, False, False
        start = time.monotonic()
        while time.monotonic() - start < 90 and sent < 64 * 1024 * 1024:
            try:
                sent += c.sock.send(one * 256)
            except BlockingIOError:
                time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if not checked and time.monotonic() - start > 0.5:
                assert webd.request("GET", "/healthcheck").status_code == 200
                checked = True
        assert sent < 64 * 1024 * 1024, "webd read without bound from a client that reads nothing"
        took = time.monotonic() - start
        assert closed, f"a client that reads nothing was not closed within {took:.1f} s ({sent} bytes sent)"
        print(f"closed after {took:.1f} s, {sent} bytes sent")
        assert checked


def test_request_deadline(new_webd):
    """A request whose query outlasts request_timeout is answered 503 at the deadline, and recorded."""
    w = new_webd(extra={"request_timeout": "500ms"})
    _, tok = w.user("deadline")
    locker = threading.Thread(target=w.cluster.sql,
                              args=("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(3); COMMIT;",))
    locker.start()
    try:
        time.sleep(0.5)
        start = time.monotonic()
        r = w.request("GET", "/tasks", token=tok, headers={"X-Request-Id": "deadline-1"})
        took = time.monotonic() - start
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable", r.text
        assert 0.4 <= took < 2.5, took
    finally:
        locker.join(timeout=30)
    assert activity_row(w, "deadline-1") == ("GET", "/tasks", "503")

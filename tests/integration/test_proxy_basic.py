"""Plain proxying: methods, bodies, paths, forwarding headers, hop-by-hop headers."""

import hashlib
import os
import re

import pytest

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}


@pytest.fixture
def setup(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    return lbd, b1


def echo_headers(resp):
    assert resp.status == 200, resp
    data = resp.json()
    return data, [(n.lower(), v) for n, v in data["headers"]]


def values(headers, name):
    return [v for n, v in headers if n == name]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_methods_with_bodies(setup, method):
    lbd, _ = setup
    body = os.urandom(100_000)
    with lbd.connect() as conn:
        resp = conn.request(method, "/echo/m", body=body)
        data, _ = echo_headers(resp)
        assert data["method"] == method
        assert data["body_len"] == len(body)
        assert data["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert resp.header("X-Backend") == "b1"
        # Without a body too, on the same connection.
        resp = conn.request(method, "/echo/m2")
        data, _ = echo_headers(resp)
        assert data["method"] == method and data["body_len"] == 0


def test_head(setup):
    lbd, _ = setup
    with lbd.connect() as conn:
        resp = conn.request("HEAD", "/bytes/12345")
        assert resp.status == 200
        assert resp.header("Content-Length") == "12345"
        assert resp.body == b""
        # The connection stays usable: a HEAD response has no body to skip.
        resp = conn.get("/bytes/10")
        assert resp.status == 200 and resp.body == bytes(range(10))


def test_status_codes_pass_through(setup):
    lbd, _ = setup
    with lbd.connect() as conn:
        for code in (201, 204, 301, 404, 418):
            resp = conn.get(f"/status/{code}")
            assert resp.status == code, resp
        resp = conn.get("/status/500")
        assert resp.status == 500 and resp.header("X-Backend") == "b1"


@pytest.mark.parametrize("target", [
    "/echo",
    "/echo?a=1&b=2",
    "/echo/deep/path/x.html?q=%20space%2Fslash&empty=&flag",
    "/echo/%7Euser/a%2Fb;p=1?x=y&z=%41",
    "/echo?" + "k=v&" * 500,
])
def test_path_and_query_preserved(setup, target):
    lbd, _ = setup
    resp = lbd.get(target)
    data, _ = echo_headers(resp)
    assert data["path"] == target
    assert data["version"] == "HTTP/1.1"


def test_x_forwarded_for_appended(setup):
    lbd, _ = setup
    with lbd.connect() as conn:
        _, h = echo_headers(conn.get("/echo"))
        assert values(h, "x-forwarded-for") == ["127.0.0.1"]
        _, h = echo_headers(conn.get("/echo", {"X-Forwarded-For": "203.0.113.7"}))
        assert values(h, "x-forwarded-for") == ["203.0.113.7, 127.0.0.1"]
        _, h = echo_headers(conn.get("/echo", {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}))
        assert values(h, "x-forwarded-for") == ["198.51.100.1, 203.0.113.7, 127.0.0.1"]


def test_x_forwarded_proto(setup):
    lbd, _ = setup
    with lbd.connect() as conn:
        _, h = echo_headers(conn.get("/echo"))
        assert values(h, "x-forwarded-proto") == ["http"]
        _, h = echo_headers(conn.get("/echo", {"X-Forwarded-Proto": "https"}))
        assert values(h, "x-forwarded-proto") == ["http"]


@pytest.mark.parametrize("rid", ["abc", "A1.b2_c3:d4-e5", "x" * 128,
                                 "0123456789abcdef0123456789abcdef"])
def test_request_id_kept_when_sane(setup, rid):
    lbd, _ = setup
    resp = lbd.get("/echo", {"X-Request-Id": rid})
    _, h = echo_headers(resp)
    assert values(h, "x-request-id") == [rid]
    assert resp.header_values("X-Request-Id") == [rid]


@pytest.mark.parametrize("rid", [None, "", "has space", "semi;colon", "x" * 129, "quote\"d",
                                 "slash/x", "\u00e9t\u00e9"])
def test_request_id_generated(setup, rid):
    lbd, _ = setup
    headers = {} if rid is None else {"X-Request-Id": rid}
    resp = lbd.get("/echo", headers)
    _, h = echo_headers(resp)
    got = values(h, "x-request-id")
    assert len(got) == 1, h
    assert re.fullmatch(r"[0-9a-f]{32}", got[0]), got
    assert resp.header_values("X-Request-Id") == got


def test_request_ids_unique(setup):
    lbd, _ = setup
    ids = set()
    with lbd.connect() as conn:
        for _ in range(50):
            ids.add(conn.get("/x").header("X-Request-Id"))
    assert len(ids) == 50


def test_hop_by_hop_not_forwarded(setup):
    lbd, _ = setup
    headers = [
        ("Connection", "keep-alive, X-Foo, x-bar2"),
        ("X-Foo", "must not pass"),
        ("X-Bar2", "must not pass either"),
        ("Keep-Alive", "timeout=5, max=100"),
        ("TE", "trailers"),
        ("Upgrade", "example/1"),
        ("Proxy-Connection", "keep-alive"),
        ("Trailer", "X-Checksum"),
        ("X-End-To-End", "kept"),
    ]
    with lbd.connect() as conn:
        resp = conn.get("/echo", headers)
        _, h = echo_headers(resp)
        names = {n for n, _ in h}
        for name in ("x-foo", "x-bar2", "keep-alive", "te", "upgrade", "proxy-connection",
                     "trailer"):
            assert name not in names, f"{name} forwarded: {h}"
        for value in values(h, "connection"):
            tokens = {t.strip().lower() for t in value.split(",")}
            assert tokens <= {"keep-alive", "close"}, f"Connection forwarded as {value!r}"
        assert values(h, "x-end-to-end") == ["kept"]
        # The client connection is still alive (Connection: keep-alive honoured).
        assert conn.get("/x").status == 200


def test_end_to_end_headers_kept(setup):
    lbd, _ = setup
    headers = [("Accept", "text/html"), ("Cookie", "a=1; b=2"), ("X-Dup", "one"),
               ("X-Dup", "two"), ("Authorization", "Bearer abc.def"),
               ("X-Long", "v" * 4000)]
    _, h = echo_headers(lbd.get("/echo", headers))
    assert values(h, "accept") == ["text/html"]
    assert values(h, "cookie") == ["a=1; b=2"]
    assert ",".join(values(h, "x-dup")).replace(" ", "") == "one,two"
    assert values(h, "authorization") == ["Bearer abc.def"]
    assert values(h, "x-long") == ["v" * 4000]
    assert len(values(h, "host")) == 1


def test_backend_receives_http11(setup):
    lbd, _ = setup
    with lbd.connect() as conn:
        conn.send(b"GET /echo HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        resp = conn.read_response()
        data, _ = echo_headers(resp)
        assert data["version"] == "HTTP/1.1"


def test_expect_100_continue(setup):
    """A client sending Expect: 100-continue gets either an interim 100 or
    nothing before it sends the body, then the final response."""
    lbd, _ = setup
    with lbd.connect() as conn:
        conn.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        conn.sock.settimeout(1.0)
        early = b""
        try:
            early = conn.sock.recv(65536)
        except OSError:
            pass
        conn.sock.settimeout(10)
        if early:
            assert early.startswith(b"HTTP/1.1 100"), early
            conn.reader.buf += early
        conn.send(b"hello")
        resp = conn.read_response("POST")
        assert resp.status == 200
        assert resp.json()["body_len"] == 5
        assert conn.get("/after").status == 200


def test_expect_100_continue_body_sent_at_once(setup):
    lbd, _ = setup
    with lbd.connect() as conn:
        resp = conn.request("PUT", "/upload", {"Expect": "100-continue"}, body=b"x" * 70000)
        assert resp.status == 200 and resp.json()["body_len"] == 70000
        assert conn.get("/after").status == 200

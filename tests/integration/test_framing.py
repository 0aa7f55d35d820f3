"""Strict request framing: ambiguous or malformed requests are rejected with
400, the connection is closed, and nothing reaches a backend."""

import time

import pytest

import lbdtest
import tlstest


@pytest.fixture(scope="module", params=["plain", "tls"])
def env(module_harness, tmp_path_factory, request):
    """The same rules on both kinds of listener: over TLS, lbd.raw(), connect() and request() speak TLS."""
    (b1,) = module_harness.backends(1, prefix=request.param)
    tls = None
    if request.param == "tls":
        pki = tlstest.Pki(tmp_path_factory.mktemp("pki"))
        tls = [pki.leaf("site", ["site.test"])]
    lbd = module_harness.lbd([b1], tls=tls, tls_default=tls is not None)
    return lbd, b1


H = b"Host: x\r\n"

# (id, raw request). Every request's target contains "/fr-<id>" so the
# backend's record shows whether it arrived.
CASES = [
    ("cl-te", b"POST /fr-cl-te HTTP/1.1\r\n" + H
     + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("te-cl", b"POST /fr-te-cl HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
    ("two-cl", b"POST /fr-two-cl HTTP/1.1\r\n" + H
     + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("dup-cl", b"POST /fr-dup-cl HTTP/1.1\r\n" + H
     + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
    ("cl-list", b"POST /fr-cl-list HTTP/1.1\r\n" + H + b"Content-Length: 5,5\r\n\r\nhello"),
    ("cl-plus", b"POST /fr-cl-plus HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello"),
    ("cl-minus", b"POST /fr-cl-minus HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n"),
    ("cl-garbage", b"POST /fr-cl-garbage HTTP/1.1\r\n" + H + b"Content-Length:  5a\r\n\r\nhello"),
    ("cl-hex", b"POST /fr-cl-hex HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello"),
    ("cl-empty", b"POST /fr-cl-empty HTTP/1.1\r\n" + H + b"Content-Length: \r\n\r\n"),
    ("cl-space-inside", b"POST /fr-cl-space-inside HTTP/1.1\r\n" + H
     + b"Content-Length: 1 0\r\n\r\nhellohello"),
    ("cl-overflow", b"POST /fr-cl-overflow HTTP/1.1\r\n" + H
     + b"Content-Length: 99999999999999999999999999\r\n\r\nhello"),
    ("te-gzip", b"POST /fr-te-gzip HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\nhello"),
    ("te-chunked-gzip", b"POST /fr-te-chunked-gzip HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
    ("te-chunked-twice-lines", b"POST /fr-te-chunked-twice-lines HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("te-chunked-twice-list", b"POST /fr-te-chunked-twice-list HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    ("te-xchunked", b"POST /fr-te-xchunked HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"),
    ("te-identity", b"POST /fr-te-identity HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: identity\r\n\r\n"),
    ("te-space-before-colon", b"POST /fr-te-space-before-colon HTTP/1.1\r\n" + H
     + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n"),
    ("te-http10", b"POST /fr-te-http10 HTTP/1.0\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("chunk-size-nonhex", b"POST /fr-chunk-size-nonhex HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-overflow", b"POST /fr-chunk-size-overflow HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-negative", b"POST /fr-chunk-size-negative HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-empty", b"POST /fr-chunk-size-empty HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n"),
    ("chunk-missing-crlf", b"POST /fr-chunk-missing-crlf HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"),
    ("space-before-colon", b"GET /fr-space-before-colon HTTP/1.1\r\nHost : x\r\n\r\n"),
    ("obs-fold-sp", b"GET /fr-obs-fold-sp HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n"),
    ("obs-fold-tab", b"GET /fr-obs-fold-tab HTTP/1.1\r\n" + H + b"X-A: a\r\n\tb\r\n\r\n"),
    ("leading-ws-first-header", b"GET /fr-leading-ws-first-header HTTP/1.1\r\n Host: x\r\n\r\n"),
    ("ctl-0x01", b"GET /fr-ctl-0x01 HTTP/1.1\r\n" + H + b"X-A: a\x01b\r\n\r\n"),
    ("ctl-0x7f", b"GET /fr-ctl-0x7f HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n"),
    ("ctl-nul", b"GET /fr-ctl-nul HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n"),
    ("ctl-cr-in-value", b"GET /fr-ctl-cr-in-value HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n"),
    ("bad-header-name", b"GET /fr-bad-header-name HTTP/1.1\r\n" + H + b"X(A): b\r\n\r\n"),
    ("space-in-header-name", b"GET /fr-space-in-header-name HTTP/1.1\r\n" + H
     + b"X A: b\r\n\r\n"),
    ("no-colon", b"GET /fr-no-colon HTTP/1.1\r\n" + H + b"JustAWord\r\n\r\n"),
    ("empty-header-name", b"GET /fr-empty-header-name HTTP/1.1\r\n" + H + b": value\r\n\r\n"),
    ("bare-lf", b"GET /fr-bare-lf HTTP/1.1\nHost: x\n\n"),
    ("bare-lf-mixed", b"GET /fr-bare-lf-mixed HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n"),
    ("bare-cr", b"GET /fr-bare-cr HTTP/1.1\rHost: x\r\n\r\n"),
    ("missing-host", b"GET /fr-missing-host HTTP/1.1\r\nX-A: b\r\n\r\n"),
    ("two-hosts", b"GET /fr-two-hosts HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
    ("two-hosts-same", b"GET /fr-two-hosts-same HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n"),
    ("bad-method", b"G(T /fr-bad-method HTTP/1.1\r\n" + H + b"\r\n"),
    ("method-with-at", b"GE@T /fr-method-with-at HTTP/1.1\r\n" + H + b"\r\n"),
    ("version-2", b"GET /fr-version-2 HTTP/2.0\r\n" + H + b"\r\n"),
    ("version-garbage", b"GET /fr-version-garbage HTTX/1.1\r\n" + H + b"\r\n"),
    ("version-lower", b"GET /fr-version-lower http/1.1\r\n" + H + b"\r\n"),
    ("version-missing-minor", b"GET /fr-version-missing-minor HTTP/1\r\n" + H + b"\r\n"),
    ("version-long", b"GET /fr-version-long HTTP/1.10\r\n" + H + b"\r\n"),
    ("space-in-target", b"GET /fr-space-in-target x HTTP/1.1\r\n" + H + b"\r\n"),
    ("ctl-in-target", b"GET /fr-ctl-in-target\x01 HTTP/1.1\r\n" + H + b"\r\n"),
    ("smuggle-cl-te", b"POST /fr-smuggle-cl-te HTTP/1.1\r\n" + H
     + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
     + b"GET /fr-smuggle-cl-te-inner HTTP/1.1\r\n" + H + b"\r\n"),
    ("smuggle-te-cl", b"POST /fr-smuggle-te-cl HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
     + b"5c\r\nGET /fr-smuggle-te-cl-inner HTTP/1.1\r\n" + H
     + b"Content-Length: 15\r\n\r\nx=1\r\n0\r\n\r\n"),
    ("smuggle-te-obfuscated", b"POST /fr-smuggle-te-obfuscated HTTP/1.1\r\n" + H
     + b"Content-Length: 4\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n"),
    ("smuggle-te-tab-cl", b"POST /fr-smuggle-te-tab-cl HTTP/1.1\r\n" + H
     + b"Content-Length: 4\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n"),
    # Field names a server folding '_' into '-' (CGI, WSGI, some proxies) would read as framing ones.
    ("te-underscore", b"POST /fr-te-underscore HTTP/1.1\r\n" + H
     + b"Content-Length: 4\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("te-underscore-alone", b"POST /fr-te-underscore-alone HTTP/1.1\r\n" + H
     + b"Transfer_Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("te-dashes", b"POST /fr-te-dashes HTTP/1.1\r\n" + H
     + b"Content-Length: 4\r\nTransfer---Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("te-trailing-underscore", b"POST /fr-te-trailing-underscore HTTP/1.1\r\n" + H
     + b"Transfer-Encoding_: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"),
    ("cl-underscore", b"POST /fr-cl-underscore HTTP/1.1\r\n" + H
     + b"Content_Length: 5\r\n\r\nhello"),
    ("cl-underscore-and-cl", b"POST /fr-cl-underscore-and-cl HTTP/1.1\r\n" + H
     + b"Content-Length: 0\r\nContent_Length: 5\r\n\r\nhello"),
    ("connection-underscore", b"GET /fr-connection-underscore HTTP/1.1\r\n" + H
     + b"Connection_: close\r\n\r\n"),
    ("host-underscore", b"GET /fr-host-underscore HTTP/1.1\r\n" + H + b"Host_: evil\r\n\r\n"),
    ("xff-underscore", b"GET /fr-xff-underscore HTTP/1.1\r\n" + H
     + b"X_Forwarded_For: 192.0.2.1\r\n\r\n"),
    ("upgrade-underscore", b"GET /fr-upgrade-underscore HTTP/1.1\r\n" + H
     + b"Connection: upgrade\r\nUpgrade_: h2c\r\n\r\n"),
    # The request target: visible ASCII, no fragment; absolute-form naming the Host, without userinfo.
    ("tab-in-target", b"GET /fr-tab-in-target\tx HTTP/1.1\r\n" + H + b"\r\n"),
    ("ff-in-target", b"GET /fr-ff-in-target\x0cx HTTP/1.1\r\n" + H + b"\r\n"),
    ("vt-in-target", b"GET /fr-vt-in-target\x0bx HTTP/1.1\r\n" + H + b"\r\n"),
    ("del-in-target", b"GET /fr-del-in-target\x7fx HTTP/1.1\r\n" + H + b"\r\n"),
    ("nul-in-target", b"GET /fr-nul-in-target\x00x HTTP/1.1\r\n" + H + b"\r\n"),
    ("nel-in-target", b"GET /fr-nel-in-target\x85x HTTP/1.1\r\n" + H + b"\r\n"),
    ("nbsp-in-target", b"GET /fr-nbsp-in-target\xa0x HTTP/1.1\r\n" + H + b"\r\n"),
    ("fragment-in-target", b"GET /fr-fragment-in-target#x HTTP/1.1\r\n" + H + b"\r\n"),
    ("absolute-other-host", b"GET http://y/fr-absolute-other-host HTTP/1.1\r\n" + H + b"\r\n"),
    ("absolute-userinfo", b"GET http://u@x/fr-absolute-userinfo HTTP/1.1\r\n" + H + b"\r\n"),
    # Chunk lines (RFC 9112 7.1).
    ("chunk-size-zeros-overflow", b"POST /fr-chunk-size-zeros-overflow HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n00000000000000000005\r\nhello\r\n0\r\n\r\n"),
    ("chunk-ext-garbage", b"POST /fr-chunk-ext-garbage HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n5 x\r\nhello\r\n0\r\n\r\n"),
    ("chunk-size-trailing-space", b"POST /fr-chunk-size-trailing-space HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"),
    ("chunk-ext-bare-lf", b"POST /fr-chunk-ext-bare-lf HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n5;a=b\nhello\r\n0\r\n\r\n"),
    ("chunk-ext-too-long", b"POST /fr-chunk-ext-too-long HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n5;a=" + b"b" * 2000 + b"\r\nhello\r\n0\r\n\r\n"),
    ("trailer-obs-fold", b"POST /fr-trailer-obs-fold HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n"),
    ("trailer-cl", b"POST /fr-trailer-cl HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n"),
    ("trailer-xff", b"POST /fr-trailer-xff HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX_Forwarded_For: 192.0.2.1\r\n\r\n"),
]

# What the 400 says: the actual problem.
REASONS = {
    "cl-te": "both Content-Length and Transfer-Encoding",
    "te-cl": "both Content-Length and Transfer-Encoding",
    "two-cl": "more than one Content-Length",
    "dup-cl": "more than one Content-Length",
    "cl-plus": "invalid Content-Length",
    "cl-garbage": "invalid Content-Length",
    "te-gzip": "Transfer-Encoding other than a single",
    "no-colon": "field line without a colon",
    "bad-header-name": "invalid character in a field name",
    "space-in-target": "malformed request line",
    "bare-lf": "bare LF",
    "chunk-size-overflow": "chunk size too large",
    "chunk-size-zeros-overflow": "chunk size too large",
    "chunk-size-nonhex": "invalid chunk size",
    "chunk-ext-garbage": "invalid chunk extension",
    "chunk-ext-too-long": "chunk extension too long",
    "chunk-ext-bare-lf": "bad line ending in chunked framing",
    "trailer-obs-fold": "obsolete line folding",
    "trailer-cl": "Content-Length (or a look-alike) in the trailers",
    "trailer-xff": "X-Forwarded-For (or a look-alike) in the trailers",
    "te-underscore": "imitates Transfer-Encoding",
    "te-underscore-alone": "imitates Transfer-Encoding",
    "te-dashes": "imitates Transfer-Encoding",
    "te-trailing-underscore": "imitates Transfer-Encoding",
    "cl-underscore": "imitates Content-Length",
    "cl-underscore-and-cl": "imitates Content-Length",
    "connection-underscore": "imitates Connection",
    "host-underscore": "imitates Host",
    "xff-underscore": "imitates X-Forwarded-For",
    "tab-in-target": "control character in the request target",
    "ff-in-target": "control character in the request target",
    "vt-in-target": "control character in the request target",
    "del-in-target": "control character in the request target",
    "nul-in-target": "control character in the request target",
    "nel-in-target": "non-ASCII byte in the request target",
    "fragment-in-target": "fragment",
    "absolute-other-host": "Host differs",
    "absolute-userinfo": "userinfo",
    "bare-cr": "bare CR",
    "ctl-cr-in-value": "bare CR",
    "obs-fold-sp": "obsolete line folding",
}


# Cases where another error status is as good as 400.
# RFC 9110 15.6.6: an unsupported major version is answered 505, not 400.
ALSO_ACCEPTED = {"cl-overflow": (413,), "version-2": (505,)}

AFTER_GOOD = ["cl-te", "two-cl", "dup-cl", "cl-plus", "te-gzip", "chunk-size-nonhex",
              "space-before-colon", "obs-fold-sp", "ctl-nul", "bare-lf", "missing-host",
              "two-hosts", "bad-method", "version-2", "smuggle-cl-te"]


def check_rejected(lbd, b1, case_id, data):
    marker = f"/fr-{case_id}"
    out, closed = lbd.raw(data, timeout=2.0)
    assert out, f"no response at all to {data!r}"
    resps = lbdtest.parse_responses(out)
    assert len(resps) == 1, f"expected exactly one response, got {out!r}"
    resp = resps[0]
    assert resp.status in (400,) + ALSO_ACCEPTED.get(case_id, ()), f"{data!r} -> {out!r}"
    assert closed, "connection left open after 400"
    assert "close" in resp.connection_tokens()
    if resp.status == 400:
        assert resp.body.startswith(b"400 Bad Request"), resp
    time.sleep(0.05)
    assert not b1.saw(marker), f"{data!r} reached the backend: {b1.records()[-3:]}"


@pytest.mark.parametrize("case_id,data", CASES, ids=[c[0] for c in CASES])
def test_rejected(env, case_id, data):
    lbd, b1 = env
    check_rejected(lbd, b1, case_id, data)


@pytest.mark.parametrize("case_id,data", [c for c in CASES if c[0] in AFTER_GOOD],
                         ids=[c[0] for c in CASES if c[0] in AFTER_GOOD])
def test_rejected_after_good_request(env, case_id, data):
    """The same malformed request as the second one on a keep-alive connection."""
    lbd, b1 = env
    good = b"GET /fr-good-first HTTP/1.1\r\n" + H + b"\r\n"
    with lbd.connect() as conn:
        conn.send(good)
        assert conn.read_response().status == 200
        conn.send(data)
        resp = conn.read_response(allow_incomplete=True)
        assert resp.status in (400,) + ALSO_ACCEPTED.get(case_id, ()), resp
        assert conn.closed_by_peer(2.0)
    time.sleep(0.05)
    assert not b1.saw(f"/fr-{case_id}")


def test_good_requests_on_same_connection(env):
    lbd, b1 = env
    with lbd.connect() as conn:
        for i in range(3):
            resp = conn.get(f"/fr-good?i={i}")
            assert resp.status == 200 and resp.body == f"{b1.name} /fr-good\n".encode()
        resp = conn.request("POST", "/upload", body=b"hello")
        assert resp.json()["body_len"] == 5
        resp = conn.request("POST", "/upload", body=iter([b"hel", b"lo"]))
        assert resp.json()["body_len"] == 5
        assert conn.get("/fr-good-last").status == 200


@pytest.mark.parametrize("data", [
    b"GET /fr-ok-tab-ows HTTP/1.1\r\nHost:\tx\r\nX-A:\t b \t\r\n\r\n",
    b"GET /fr-ok-no-ows HTTP/1.1\r\nHost:x\r\nX-A:b\r\n\r\n",
    b"GET /fr-ok-empty-value HTTP/1.1\r\nHost: x\r\nX-Empty:\r\n\r\n",
    b"GET /fr-ok-obs-text HTTP/1.1\r\nHost: x\r\nX-A: caf\xe9\r\n\r\n",
    b"GET /fr-ok-case HTTP/1.1\r\nhOsT: x\r\ncontent-LENGTH: 0\r\n\r\n",
    b"POST /fr-ok-te-case HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
    b"GET /fr-ok-http10-no-host HTTP/1.0\r\n\r\n",
    b"GET /fr-ok-plain HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /fr-ok-cl-zero HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"POST /fr-ok-cl-leading-zero HTTP/1.1\r\nHost: x\r\nContent-Length: 005\r\n\r\nhello",
], ids=["tab-ows", "no-ows", "empty-value", "obs-text", "name-case", "te-case",
        "http10-no-host", "plain", "cl-zero", "cl-leading-zero"])
def test_accepted(env, data):
    """Unusual but valid requests are not rejected."""
    lbd, b1 = env
    out, _ = lbd.raw(data + b"GET /fr-ok-after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                     timeout=3)
    resps = lbdtest.parse_responses(out)
    assert [r.status for r in resps][:1] == [200], out
    marker = data.split(b" ")[1].decode()
    assert b1.saw(marker)


@pytest.mark.parametrize("data", [
    b"GET  /fr-lenient-two-spaces HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET\t/fr-lenient-tab HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
], ids=["two-spaces", "tab-separator"])
def test_request_line_whitespace(env, data):
    """RFC 9112 3 lets a server either reject or split on whitespace: only
    a clean 400 or a correct forward is acceptable."""
    lbd, b1 = env
    out, closed = lbd.raw(data, timeout=3)
    resps = lbdtest.parse_responses(out)
    assert len(resps) == 1 and closed, out
    marker = data.split()[1].decode()
    if resps[0].status == 400:
        assert not b1.saw(marker)
    else:
        assert resps[0].status == 200, out
        assert any(r["path"] == marker for r in b1.records())


def test_leading_empty_line_tolerated_or_rejected(env):
    """RFC 9112 2.2: a server SHOULD ignore at least one empty line before
    the request line. Accept either that or a clean 400, never a forward of
    garbage."""
    lbd, b1 = env
    out, _ = lbd.raw(b"\r\nGET /fr-after-empty-line HTTP/1.1\r\nHost: x\r\nConnection: close"
                     b"\r\n\r\n", timeout=3)
    resps = lbdtest.parse_responses(out)
    assert resps and resps[0].status in (200, 400), out


def test_rejection_has_no_empty_request_id(env):
    """A rejected request has no id yet: its 400 carries either none or a
    proper one, not an empty X-Request-Id header."""
    lbd, _ = env
    out, _ = lbd.raw(b"GET /fr-rid HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\nx")
    (resp,) = lbdtest.parse_responses(out)
    assert resp.status == 400
    rid = resp.header_values("X-Request-Id")
    assert rid == [] or (len(rid) == 1 and rid[0]), f"X-Request-Id on the 400: {rid}"


@pytest.mark.parametrize("case_id", sorted(REASONS))
def test_rejection_names_the_problem(env, case_id):
    lbd, _ = env
    (data,) = [d for c, d in CASES if c == case_id]
    out, _ = lbd.raw(data, timeout=2.0)
    (resp,) = lbdtest.parse_responses(out)
    assert resp.status == 400
    assert REASONS[case_id].encode() in resp.body, resp.body


def test_underscore_fields_not_forwarded(env):
    """nginx's rule: request fields with '_' in their names are dropped (WSGI and CGI would read
    X_Custom as X-Custom, so one could pose as a field lbd or a proxy before it wrote)."""
    lbd, _ = env
    resp = lbd.request("GET", "/echo", [("X_Custom", "1"), ("Accept_Language", "x"), ("X-Kept", "2"),
                                        ("X--Dashes", "3")])
    assert resp.status == 200
    names = {n.lower() for n, _ in resp.json()["headers"]}
    assert "x-kept" in names and "x--dashes" in names
    assert not {n for n in names if "_" in n}, names


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent_Length: 11\r\n\r\nhello world",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer_Encoding: chunked\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent--Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
], ids=["cl-underscore", "te-underscore", "cl-dashes", "te-chunked-twice", "te-after-chunked", "te-two-fields",
        "cl-twice"])
def test_response_framed_ambiguously_is_502(harness, answer):
    """A response that some client would frame otherwise than lbd (folding '_', decoding chunked twice or
    reading to the close) is never forwarded."""
    with lbdtest.ScriptedBackend(lambda _head: answer) as sb:
        lbd = harness.lbd([sb])
        out, _ = lbd.raw(b"GET /r HTTP/1.1\r\nHost: x\r\n\r\n", timeout=3)
        resps = lbdtest.parse_responses(out)
        assert [r.status for r in resps][:1] == [502], out
        assert b"hello" not in out


@pytest.mark.parametrize("body", [
    b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    b"5 x\r\nhello\r\n0\r\n\r\n",
    b"5\nhello\r\n0\r\n\r\n",
], ids=["size-overflow", "ext-garbage", "bare-lf"])
def test_response_with_bad_chunk_line_is_cut(harness, body):
    """The head is on its way already: the client gets at most that, none of the body, and the
    connection closes, so no client reads a message lbd could not frame."""
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    with lbdtest.ScriptedBackend(lambda _head: answer) as sb:
        lbd = harness.lbd([sb])
        out, closed = lbd.raw(b"GET /r HTTP/1.1\r\nHost: x\r\n\r\n", timeout=3)
        assert closed
        assert out == b"" or (out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\n")), out


def test_rejections_counted(env):
    lbd, b1 = env
    m = lbd.metrics()
    assert (m.get("lbd_requests_rejected_total", code="400") or 0) >= len(CASES)
    for case_id, _ in CASES:
        assert not b1.saw(f"/fr-{case_id}")
    # Requests after the smuggling attempts never reached the backend either.
    assert not b1.saw("inner")


def test_http10_without_host_through_a_relay(harness):
    """What lbd forwards is HTTP/1.1, which needs a Host: an HTTP/1.0 request without one gets an empty
    Host, or its absolute-form's authority, so the next lbd (the backends' relays) takes it too."""
    (b1,) = harness.backends(1)
    relay = harness.lbd([b1])

    class RelayAddr:
        addr = f"127.0.0.1:{relay.port}"

    front = harness.lbd([RelayAddr()])
    for data in (b"GET /fr-h10-origin HTTP/1.0\r\n\r\n",
                 b"GET http://a.example/fr-h10-absolute HTTP/1.0\r\n\r\n"):
        out, _ = front.raw(data, timeout=3)
        resps = lbdtest.parse_responses(out)
        assert [r.status for r in resps] == [200], out
    hosts = {r["path"]: [v for n, v in r["headers"] if n.lower() == "host"] for r in b1.requests()}
    assert hosts["/fr-h10-origin"] == [""]
    assert hosts["http://a.example/fr-h10-absolute"] == ["a.example"]

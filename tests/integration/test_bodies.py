"""Request and response bodies: chunked both ways, and 1 GiB each way in bounded memory."""

import hashlib
import os
import time

import pytest

import lbdtest

GIB = 1 << 30


def _sanitized():
    """AddressSanitizer keeps freed memory in quarantine (256 MiB by default) and adds shadow memory,
    so a sanitized lbd gets a looser bound: still far below the 1 GiB each test moves, so a body held
    in memory is caught either way."""
    try:
        return b"__asan_init" in lbdtest.lbd_binary().read_bytes()
    except OSError:
        return False


def _memchecked():
    """Under valgrind (LBD_VALGRIND=1) the process is memcheck with its shadow memory and the freed
    blocks it holds back: the same loose bound as for ASan."""
    return os.environ.get("LBD_VALGRIND") == "1"


RSS_LIMIT_KIB = (640 if _sanitized() or _memchecked() else 64) * 1024


@pytest.fixture
def setup(harness):
    (b1,) = harness.backends(1)
    # Gigabyte bodies: no max_body_size (1m by default).
    lbd = harness.lbd([b1], args=["--set", "limits.max_body_size=0"])
    return lbd, b1


@pytest.fixture(scope="module")
def gib_sha256():
    return lbdtest.pattern_sha256(GIB)


def test_chunked_request_body(setup):
    lbd, _ = setup
    pieces = [os.urandom(n) for n in (1, 10, 4096, 100_000, 3, 65536, 70_000)]
    body = b"".join(pieces)
    with lbd.connect() as conn:
        resp = conn.request("POST", "/echo", body=iter(pieces))
        assert resp.status == 200, resp
        data = resp.json()
        assert data["body_len"] == len(body)
        assert data["body_sha256"] == hashlib.sha256(body).hexdigest()
        # The connection stays in sync after the chunked body.
        assert conn.get("/x").status == 200


def test_chunked_request_with_extensions_and_trailers(setup):
    lbd, _ = setup
    raw = (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;name=value\r\nhello\r\n"
           b"6 ; quoted=\"a b\"\r\n world\r\n"
           b"0\r\nX-Trailer: yes\r\n\r\n"
           b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    out, closed = lbd.raw(raw, timeout=3)
    resps = lbdtest.parse_responses(out)
    assert [r.status for r in resps] == [200, 200], out
    assert resps[0].json() == {"body_len": 11,
                               "body_sha256": hashlib.sha256(b"hello world").hexdigest()}
    assert resps[1].body == b"b1 /after\n"


def test_chunked_request_uppercase_hex(setup):
    lbd, _ = setup
    body = b"z" * 0xAB
    raw = (b"PUT /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"AB\r\n" + body + b"\r\n000\r\n\r\n")
    out, _ = lbd.raw(raw + b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=3)
    resps = lbdtest.parse_responses(out)
    assert resps[0].status == 200 and resps[0].json()["body_len"] == 0xAB, out


def test_chunked_response_body(setup):
    lbd, _ = setup
    with lbd.connect() as conn:
        for n in (0, 1, 65536, 1_000_003):
            resp = conn.get(f"/chunked/{n}")
            assert resp.status == 200
            assert resp.body == lbdtest.pattern_bytes(n)


def test_empty_and_small_bodies(setup):
    lbd, _ = setup
    with lbd.connect() as conn:
        resp = conn.request("POST", "/upload", body=b"")
        assert resp.json()["body_len"] == 0
        resp = conn.request("POST", "/upload", body=iter([]))
        assert resp.json()["body_len"] == 0
        resp = conn.request("POST", "/upload", body=b"x")
        assert resp.json()["body_len"] == 1
        for n in (0, 1, 100, 65535, 65536, 65537):
            resp = conn.get(f"/bytes/{n}")
            assert resp.body == lbdtest.pattern_bytes(n)


def test_large_bodies_both_ways(setup):
    lbd, _ = setup
    body = os.urandom(8 << 20)
    with lbd.connect() as conn:
        resp = conn.request("PUT", "/upload", body=body)
        assert resp.json() == {"body_len": len(body),
                               "body_sha256": hashlib.sha256(body).hexdigest()}
        pieces = [body[i:i + 1_000_000] for i in range(0, len(body), 1_000_000)]
        resp = conn.request("POST", "/upload", body=iter(pieces))
        assert resp.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        resp = conn.get(f"/bytes/{8 << 20}")
        assert hashlib.sha256(resp.body).hexdigest() == lbdtest.pattern_sha256(8 << 20)


def test_download_1gib_bounded_memory(setup, gib_sha256):
    lbd, _ = setup
    digest = hashlib.sha256()
    start = time.monotonic()
    with lbdtest.RssSampler(lbd) as rss, lbd.connect(timeout=30) as conn:
        resp = conn.request("GET", f"/bytes/{GIB}", sink=digest.update)
    elapsed = time.monotonic() - start
    assert resp.status == 200
    assert resp.body_len == GIB
    assert digest.hexdigest() == gib_sha256
    assert rss.samples > 10
    assert rss.max_kib < RSS_LIMIT_KIB, f"lbd VmRSS reached {rss.max_kib} KiB"
    print(f"1 GiB download in {elapsed:.2f}s, lbd max RSS {rss.max_kib} KiB")


def test_chunked_download_1gib_bounded_memory(setup, gib_sha256):
    lbd, _ = setup
    digest = hashlib.sha256()
    with lbdtest.RssSampler(lbd) as rss, lbd.connect(timeout=30) as conn:
        resp = conn.request("GET", f"/chunked/{GIB}", sink=digest.update)
    assert resp.status == 200 and resp.body_len == GIB
    assert digest.hexdigest() == gib_sha256
    assert rss.max_kib < RSS_LIMIT_KIB, f"lbd VmRSS reached {rss.max_kib} KiB"


def test_upload_1gib_bounded_memory(setup, gib_sha256):
    lbd, _ = setup
    piece = lbdtest.PATTERN_PIECE * 16  # 1 MiB, a multiple of the pattern period
    start = time.monotonic()
    with lbdtest.RssSampler(lbd) as rss, lbd.connect(timeout=30) as conn:
        resp = conn.request("POST", "/upload", body=(piece for _ in range(GIB // len(piece))),
                            content_length=GIB)
    elapsed = time.monotonic() - start
    assert resp.status == 200, resp
    assert resp.json() == {"body_len": GIB, "body_sha256": gib_sha256}
    assert rss.samples > 10
    assert rss.max_kib < RSS_LIMIT_KIB, f"lbd VmRSS reached {rss.max_kib} KiB"
    print(f"1 GiB upload in {elapsed:.2f}s, lbd max RSS {rss.max_kib} KiB")


def test_slow_client_download_bounded_memory(setup):
    """The client stops reading: lbd must stop reading from the backend
    instead of buffering the body."""
    lbd, _ = setup
    n = 256 << 20
    digest = hashlib.sha256()
    with lbdtest.RssSampler(lbd) as rss, lbd.connect(timeout=30) as conn:
        conn.send_request("GET", f"/bytes/{n}")
        time.sleep(1.5)
        stalled_max = rss.max_kib
        resp = conn.read_response(sink=digest.update)
    assert resp.status == 200 and resp.body_len == n
    assert digest.hexdigest() == lbdtest.pattern_sha256(n)
    assert stalled_max < RSS_LIMIT_KIB, f"lbd VmRSS reached {stalled_max} KiB with a stalled client"
    assert rss.max_kib < RSS_LIMIT_KIB, f"lbd VmRSS reached {rss.max_kib} KiB"


def test_slow_backend_upload_bounded_memory(setup):
    """The backend reads the body only after 1.5 s: lbd must stop reading
    from the client instead of buffering the body."""
    lbd, _ = setup
    n = 256 << 20
    piece = lbdtest.PATTERN_PIECE * 16
    with lbdtest.RssSampler(lbd) as rss, lbd.connect(timeout=30) as conn:
        resp = conn.request("POST", "/sleepbody/1500",
                            body=(piece for _ in range(n // len(piece))), content_length=n)
    assert resp.status == 200, resp
    assert resp.json() == {"body_len": n, "body_sha256": lbdtest.pattern_sha256(n)}
    assert rss.max_kib < RSS_LIMIT_KIB, f"lbd VmRSS reached {rss.max_kib} KiB"


def test_close_delimited_response(setup):
    """A backend response framed by closing the connection reaches the client whole."""
    lbd, _ = setup
    n = 3_000_017
    with lbd.connect() as conn:
        resp = conn.get(f"/eof-body/{n}")
        assert resp.status == 200
        assert resp.body == lbdtest.pattern_bytes(n)
        framed = resp.header("Content-Length") or "chunked" in (
            resp.header("Transfer-Encoding") or "").lower()
        if framed and "close" not in resp.connection_tokens():
            assert conn.get("/after").status == 200
        else:
            assert conn.closed_by_peer(2.0)
    # The backend connection that ended the body is not reused.
    with lbd.connect() as conn:
        for i in range(3):
            assert conn.get(f"/x{i}").body == f"b1 /x{i}\n".encode()


def test_client_abort_during_download(setup):
    lbd, b1 = setup
    with lbd.connect() as conn:
        conn.send_request("GET", f"/bytes/{GIB}")
        got = 0
        while got < (1 << 20):
            data = conn.sock.recv(65536)
            assert data, "connection closed early"
            got += len(data)
    lbdtest.wait_until(lambda: lbd.backend_status(b1.addr)["active"] == 0, 3,
                       "the aborted download to end in lbd")
    with lbd.connect() as conn:
        for i in range(3):
            resp = conn.get(f"/echo?after-abort={i}")
            assert resp.json()["path"] == f"/echo?after-abort={i}"

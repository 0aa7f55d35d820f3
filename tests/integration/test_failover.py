"""Failover and retry rules."""

import hashlib
import os
import signal
import time

import lbdtest


def test_sigkill_under_load_loses_no_get(harness):
    bs = harness.backends(3)
    lbd = harness.lbd(bs)
    load = harness.load(lbd.port, n=4, path="/delay/20", max_seconds=6.0).start()
    time.sleep(1.0)
    bs[1].kill(signal.SIGKILL)
    time.sleep(2.0)
    load.stop()
    assert not load.failures, f"{len(load.failures)} failures, e.g. {load.failures[:5]}"
    assert load.ok > 100, f"only {load.ok} requests completed"
    assert lbd.backend_status(bs[1].addr)["state"] == "down"
    assert load.by_backend.get("b1", 0) > 10 and load.by_backend.get("b3", 0) > 10


def test_sigkill_of_fast_backend_under_load(harness):
    bs = harness.backends(3)
    lbd = harness.lbd(bs, args=["--balance", "least-conn"])
    load = harness.load(lbd.port, n=4, path="/bytes/2000", max_seconds=6.0).start()
    time.sleep(1.0)
    bs[0].kill(signal.SIGKILL)
    time.sleep(2.0)
    load.stop()
    assert not load.failures, f"{len(load.failures)} failures, e.g. {load.failures[:5]}"
    assert load.ok > 100


def test_get_retried_after_connection_closed(harness):
    """b1 accepts every request then closes the connection without answering
    (it still passes health checks); b2 is healthy. Every GET must succeed
    from b2, and at least one of them must have been tried on b1 first."""
    b1 = harness.backend("b1", close_all=True)
    b2 = harness.backend("b2")
    lbd = harness.lbd([b1, b2], health_interval="20s", args=["--balance", "round-robin"])
    for i in range(6):
        resp = lbd.get(f"/retry-get?i={i}")
        assert resp.status == 200, resp
        assert resp.header("X-Backend") == "b2"
        assert b2.saw(f"/retry-get?i={i}")
        if b1.saw("/retry-get"):
            break
    assert b1.saw("/retry-get"), "no GET was ever routed to b1; the retry path was not exercised"


def test_idempotent_methods_retried(harness):
    b1 = harness.backend("b1", close_all=True)
    b2 = harness.backend("b2")
    for method in ("HEAD", "PUT", "DELETE", "OPTIONS"):
        lbd = harness.lbd([b1, b2], health_interval="20s", args=["--balance", "round-robin"])
        tag = f"/idem-{method}"
        for i in range(4):
            body = b"payload" if method == "PUT" else None
            resp = lbd.request(method, f"{tag}?i={i}", body=body)
            assert resp.status == 200, (method, resp)
            if b1.saw(tag):
                break
        assert b1.saw(tag), f"no {method} reached b1"
        lbd.stop()


def test_post_not_retried_after_sent(harness):
    """A POST that reached a backend which then failed gets 502 and is never
    sent to another backend."""
    b1 = harness.backend("b1", close_all=True)
    b2 = harness.backend("b2")
    lbd = harness.lbd([b1, b2], health_interval="20s", args=["--balance", "round-robin"])
    hit = False
    for i in range(6):
        path = f"/post-once?i={i}"
        resp = lbd.request("POST", path, body=b"data")
        if b1.saw(path):
            assert resp.status == 502, resp
            assert not b2.saw(path), "POST was retried on b2 after it was sent to b1"
            assert "close" in resp.connection_tokens()
            hit = True
            break
        assert resp.status == 200 and resp.header("X-Backend") == "b2"
    assert hit, "no POST was ever routed to b1"


def test_post_to_close_single_backend_is_502(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], health_interval="20s")
    resp = lbd.request("POST", "/close", body=b"x" * 100)
    assert resp.status == 502, resp
    assert resp.header("Content-Type").startswith("text/plain")
    assert resp.body.startswith(b"502 ")
    assert sum(1 for r in b1.requests() if r["path"] == "/close") == 1


def test_post_retried_when_nothing_was_sent(harness):
    """b1 is dead (connection refused): a POST routed to it was never sent,
    so it is retried on b2 with its body intact."""
    b1, b2 = harness.backends(2)
    lbd = harness.lbd([b1, b2], health_interval="20s", args=["--balance", "round-robin"])
    b1.kill(signal.SIGKILL)
    body = os.urandom(50_000)
    for i in range(4):
        resp = lbd.request("POST", f"/echo?i={i}", body=body)
        assert resp.status == 200, resp
        data = resp.json()
        assert resp.header("X-Backend") == "b2"
        assert data["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert lbd.backend_status(b1.addr)["state"] == "down"


def test_retry_count_bounded(harness):
    """Three backends that all fail after receiving the request, retries=1:
    a GET is tried exactly twice, then 502."""
    bs = [harness.backend(f"b{i}", close_all=True) for i in (1, 2, 3)]
    lbd = harness.lbd(bs, health_interval="20s", args=["--set", "limits.retries=1"])
    resp = lbd.get("/count-tries")
    assert resp.status == 502, resp
    tries = sum(1 for b in bs for r in b.requests() if r["path"] == "/count-tries")
    assert tries == 2, f"{tries} attempts with retries=1"
    assert (lbd.metrics().get("lbd_retries_total") or 0) >= 1


def test_no_retry_after_response_bytes(harness):
    """A backend that sends the head and part of the body, then dies: the
    client gets the truncated response and the request is not repeated."""
    b1, b2 = harness.backends(2)
    lbd = harness.lbd([b1, b2], health_interval="20s")
    with lbd.connect() as conn:
        conn.send_request("GET", "/partial/200")
        resp = conn.read_response(allow_incomplete=True)
        assert resp.status == 200
        assert not resp.complete and resp.body_len < 1000, resp
    total = sum(1 for b in (b1, b2) for r in b.requests() if r["path"] == "/partial/200")
    assert total == 1


def test_reset_by_backend_is_retried_for_get(harness):
    b1, b2 = harness.backends(2)
    lbd = harness.lbd([b1, b2], health_interval="20s")
    # /reset on whichever backend is chosen; the retry goes to the other which
    # resets too, so the client gets 502 but lbd survives and keeps serving.
    resp = lbd.get("/reset")
    assert resp.status == 502
    assert lbd.proc.poll() is None


def test_client_abort_mid_request(harness):
    """A client that goes away while its request is at the backend: the
    backend connection carrying the late response must not be handed to the
    next request (its answer would go to the wrong client)."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    for round_ in range(3):
        conn = lbd.connect()
        conn.send_request("GET", f"/delay/300?abort={round_}")
        lbdtest.wait_until(lambda: b1.saw(f"abort={round_}"), 2, "request at the backend")
        conn.close()
        with lbd.connect() as other:
            for i in range(5):
                resp = other.get(f"/echo?r={round_}&i={i}")
                assert resp.status == 200
                assert resp.json()["path"] == f"/echo?r={round_}&i={i}", resp
    lbdtest.wait_until(lambda: lbd.backend_status(b1.addr)["active"] == 0, 3,
                       "aborted requests to end")


def test_client_abort_during_upload(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    conn = lbd.connect()
    conn.send(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
    time.sleep(0.2)
    conn.close()
    with lbd.connect() as other:
        for i in range(3):
            resp = other.request("POST", f"/echo?i={i}", body=b"abc")
            assert resp.json()["path"] == f"/echo?i={i}" and resp.json()["body_len"] == 3
    lbdtest.wait_until(lambda: lbd.backend_status(b1.addr)["active"] == 0, 3,
                       "aborted upload to end")

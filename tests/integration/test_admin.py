"""The admin API: /status JSON, /metrics in Prometheus text format, loopback only."""

import os
import re
import socket
import subprocess
import time

import pytest

import lbdtest

STATES = {"up", "down", "draining"}
CHECK_RESULTS = {"ok", "fail", "timeout", "refused", "error", "none"}
FAMILIES = {
    "lbd_requests_total": "counter",
    "lbd_backend_up": "gauge",
    "lbd_backend_active_requests": "gauge",
    "lbd_backend_failures_total": "counter",
    "lbd_health_checks_total": "counter",
    "lbd_retries_total": "counter",
    "lbd_client_connections": "gauge",
    "lbd_requests_rejected_total": "counter",
}


@pytest.fixture
def setup(harness):
    b1, b2 = harness.backends(2)
    lbd = harness.lbd([b1, b2], args=["--balance", "round-robin"])
    return lbd, b1, b2


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def test_status_fields(setup):
    lbd, b1, b2 = setup
    resp = lbd.admin("GET", "/status")
    assert resp.status == 200
    assert resp.header("Content-Type").split(";")[0].strip() == "application/json"
    st = resp.json()
    assert st["version"] == "0.1.0"
    assert st["pid"] == lbd.pid
    assert is_number(st["uptime_s"]) and 0 <= st["uptime_s"] < 60
    assert st["healthy"] == 2 and st["total"] == 2
    assert isinstance(st["connections"], int) and st["connections"] >= 0
    assert {b["address"] for b in st["backends"]} == {b1.addr, b2.addr}
    for b in st["backends"]:
        assert b["state"] in STATES and b["state"] == "up"
        assert b["in_rotation"] is True
        for key in ("active", "requests", "failures"):
            assert isinstance(b[key], int) and b[key] >= 0, (key, b)
        assert isinstance(b["responses"], dict)
        lc = b["last_check"]
        assert lc["result"] in CHECK_RESULTS and lc["result"] == "ok"
        assert lc["status"] == 200
        assert is_number(lc["duration_ms"]) and lc["duration_ms"] >= 0
        assert is_number(lc["age_s"]) and 0 <= lc["age_s"] < 5


def test_status_counters(setup):
    lbd, b1, b2 = setup
    with lbd.connect() as conn:
        for i in range(10):
            assert conn.get(f"/x?{i}").status == 200
        for i in range(4):
            assert conn.get("/status/404").status == 404
        assert conn.get("/status/500").status == 500
    st = lbd.status()
    by_addr = {b["address"]: b for b in st["backends"]}
    assert sum(b["requests"] for b in by_addr.values()) == 15
    assert by_addr[b1.addr]["requests"] in (7, 8)
    resp_sum = {}
    for b in by_addr.values():
        for k, v in b["responses"].items():
            resp_sum[k] = resp_sum.get(k, 0) + v
    assert resp_sum.get("2xx") == 10 and resp_sum.get("4xx") == 4 and resp_sum.get("5xx") == 1
    assert all(b["active"] == 0 for b in by_addr.values())
    assert all(b["failures"] == 0 for b in by_addr.values())
    with lbd.connect() as conn:
        conn.get("/x")
        assert lbd.status()["connections"] >= 1


def test_uptime_advances(setup):
    lbd, _, _ = setup
    a = lbd.status()["uptime_s"]
    lbdtest.wait_until(lambda: lbd.status()["uptime_s"] >= a + 0.2, 2, "uptime to advance")


def test_metrics_format(setup):
    lbd, b1, b2 = setup
    resp = lbd.admin("GET", "/metrics")
    assert resp.status == 200
    ctype = resp.header("Content-Type")
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
    text = resp.body.decode()
    assert text.endswith("\n")
    m = lbdtest.Metrics(text)
    assert not m.errors, m.errors
    for name in m.names():
        family = lbdtest.Metrics.family(name, m.types)
        assert family in m.types, f"no TYPE for {name}"
        assert family in m.help or name in m.help, f"no HELP for {name}"
    # Every TYPE line comes before its samples, and HELP/TYPE of a family appear once.
    seen_samples = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            fam = line.split()[2]
            assert fam not in seen_samples, f"TYPE of {fam} after its samples"
        elif line and not line.startswith("#"):
            seen_samples.add(lbdtest.Metrics.family(re.split(r"[{ ]", line, 1)[0], m.types))


def test_metrics_values(setup):
    lbd, b1, b2 = setup
    with lbd.connect() as conn:
        for i in range(10):
            assert conn.get(f"/x?{i}").status == 200
        for i in range(3):
            assert conn.get("/status/404").status == 404
    # A rejected request.
    out, _ = lbd.raw(b"GET /bad HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400")
    m = lbd.metrics()
    assert not m.errors, m.errors
    for family, kind in FAMILIES.items():
        assert m.types.get(family) == kind, (family, m.types.get(family))
    assert m.sum("lbd_requests_total", code="200") == 10
    assert m.sum("lbd_requests_total", code="404") == 3
    assert sum(m.sum("lbd_requests_total", backend=b.addr) for b in (b1, b2)) == 13
    for b in (b1, b2):
        assert m.get("lbd_backend_up", backend=b.addr) == 1
        assert m.get("lbd_backend_active_requests", backend=b.addr) == 0
        assert (m.get("lbd_backend_failures_total", backend=b.addr) or 0) == 0
        assert m.get("lbd_health_checks_total", backend=b.addr, result="ok") >= 1
        assert 5 <= m.sum("lbd_requests_total", backend=b.addr) <= 8
    assert m.get("lbd_requests_rejected_total", code="400") >= 1
    assert m.get("lbd_retries_total") == 0
    assert m.get("lbd_client_connections") is not None
    with lbd.connect() as c1, lbd.connect() as c2:
        c1.get("/x")
        c2.get("/x")
        assert lbd.metrics().get("lbd_client_connections") >= 2


def test_admin_other_paths_and_methods(setup):
    lbd, _, _ = setup
    assert lbd.admin("GET", "/nope").status == 404
    assert lbd.admin("GET", "/page/nope").status == 404
    page = lbd.admin("GET", "/")
    assert page.status == 200 and page.header("Content-Type") == "text/html; charset=utf-8"
    assert lbd.admin("POST", "/status").status == 405
    assert lbd.admin("DELETE", "/metrics").status == 405


def test_admin_keepalive_and_head(setup):
    lbd, _, _ = setup
    with lbdtest.HttpConnection(lbd.admin_port) as conn:
        for _ in range(3):
            resp = conn.get("/status")
            assert resp.status == 200
            if "close" in resp.connection_tokens():
                break


def test_admin_head_announces_the_length_without_the_body(setup):
    lbd, _, _ = setup
    full = lbd.admin("GET", "/metrics")
    data, _ = lbdtest.raw_exchange(lbd.admin_port, b"HEAD /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                   b"Connection: close\r\n\r\n", timeout=5)
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), data[:200]
    length = int(re.search(rb"\r\nContent-Length: *([0-9]+)", head, re.I).group(1))
    assert abs(length - len(full.body)) < 4096 and rest == b""


# The admin listener is served by the same strict engine as webd: what the proxy refuses, it refuses too,
# and never by guessing.
@pytest.mark.parametrize("raw,status", [
    (b"GET /status HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    (b"GET /status HTTP/1.1\nHost: a\n\n", 400),
    (b"GET /status HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400),
    (b"POST /refresh HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"GET /status HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 9000 + b"\r\n\r\n", 431),
    (b"POST /refresh HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n", 413),
    (b"GET /status HTTP/2.0\r\nHost: a\r\n\r\n", 505),
])
def test_admin_framing_is_strict(setup, raw, status):
    lbd, _, _ = setup
    data, closed = lbdtest.raw_exchange(lbd.admin_port, raw, timeout=5)
    assert data.startswith(b"HTTP/1.1 %d " % status), data[:200]
    assert closed
    assert lbd.admin("GET", "/status").status == 200


def test_admin_slow_head_is_cut_off(setup):
    """A head trickled in a line at a time never completes: 408 and closed at the head deadline (10 s of
    its first byte), however often a line comes, while /status keeps answering others."""
    lbd, _, _ = setup
    sock = socket.create_connection(("127.0.0.1", lbd.admin_port), timeout=5)
    with sock:
        t0 = time.monotonic()
        sock.sendall(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        got = b""
        for i in range(20):
            time.sleep(1)
            assert lbd.admin("GET", "/status").status == 200
            try:
                sock.sendall(b"X-Slow-%d: a\r\n" % i)
                sock.settimeout(0.01)
                got += sock.recv(4096)
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if got:
                break
        elapsed = time.monotonic() - t0
    assert got.startswith(b"HTTP/1.1 408 "), got[:200]
    assert 9 <= elapsed <= 14, elapsed


def test_admin_connection_limit_keeps_lbd_serving(setup):
    """More connections than the admin API takes (256) are held by the kernel, not accepted: lbd's own
    descriptors are not spent on them, the proxy serves on, and the admin API answers again once they go."""
    lbd, _, _ = setup
    socks = []
    try:
        for _ in range(300):
            socks.append(socket.create_connection(("127.0.0.1", lbd.admin_port), timeout=5))
        time.sleep(0.5)
        held = lbdtest.accepted_sockets(lbd.proc.pid, lbd.admin_port)
        assert 200 <= held <= 256, held
        assert lbd.request("GET", "/x").status == 200
    finally:
        for s in socks:
            s.close()
    lbdtest.wait_until(lambda: lbd.admin("GET", "/status").status == 200, 10, "the admin API answering")


def test_admin_is_not_the_proxy(setup):
    lbd, b1, _ = setup
    before = len(b1.requests())
    assert lbd.admin("GET", "/x").status == 404
    assert len(b1.requests()) == before


@pytest.mark.parametrize("addr", ["0.0.0.0:9180", "[::]:9180", "192.0.2.1:9180",
                                  "192.0.2.1:9180"])
def test_admin_must_be_loopback(lbd_path, addr):
    p = subprocess.run([str(lbd_path), "--check-config", "--listen", "127.0.0.1:18000",
                        "--backend", "127.0.0.1:18001", "--admin", addr],
                       capture_output=True, timeout=10)
    assert p.returncode == 78, (p.returncode, p.stderr)
    assert b"admin" in p.stderr


@pytest.mark.parametrize("addr", ["127.0.0.1:9180", "127.0.0.2:9181", "[::1]:9180", "off"])
def test_admin_loopback_accepted(lbd_path, addr):
    p = subprocess.run([str(lbd_path), "--check-config", "--listen", "127.0.0.1:18000",
                        "--backend", "127.0.0.1:18001", "--admin", addr],
                       capture_output=True, timeout=10)
    assert p.returncode == 0, (p.returncode, p.stderr)


def test_admin_loopback_in_config_file(lbd_path, tmp_path):
    conf = tmp_path / "lbd.conf"
    conf.write_text("[lbd]\nlisten = 127.0.0.1:18000\nadmin = 0.0.0.0:9180\n"
                    "[pool]\nprovider = static\nbackends = 127.0.0.1:18001\n")
    p = subprocess.run([str(lbd_path), "--check-config", "--config", str(conf)],
                       capture_output=True, timeout=10)
    assert p.returncode == 78, (p.returncode, p.stderr)
    assert str(conf).encode() in p.stderr and b"admin" in p.stderr


def test_admin_off(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], start=False)
    lbd.args[lbd.args.index("--admin") + 1] = "off"
    lbd.start(wait=False)
    lbdtest.wait_until(lambda: lbd.get("/x").status == 200, 5, "proxy serving without admin")
    with pytest.raises(OSError):
        lbd.admin("GET", "/status", timeout=1)

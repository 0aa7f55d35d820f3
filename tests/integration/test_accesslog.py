"""The access log: one logfmt line per request with the documented fields."""

import re
import signal

import lbdtest

FIELDS = ["client", "method", "path", "status", "bytes", "backend", "duration_ms", "request_id"]


def wait_entries(lbd, ids, timeout=2.0, source=None):
    def found():
        entries = lbd.access_entries(source() if source else None)
        got = [e for e in entries if e.get("request_id") in ids]
        return got if len(got) >= len(ids) else None
    return lbdtest.wait_until(found, timeout, f"access log lines for {len(ids)} requests")


def test_one_line_per_request_with_fields(harness):
    b1, b2 = harness.backends(2)
    lbd = harness.lbd([b1, b2])
    names = {"b1": b1.addr, "b2": b2.addr}
    made = []
    with lbd.connect() as conn:
        port = conn.local_port
        for method, path, body in [("GET", "/a?x=1", None), ("POST", "/echo", b"12345"),
                                   ("GET", "/status/404", None), ("GET", "/bytes/777", None),
                                   ("HEAD", "/bytes/50", None), ("DELETE", "/d", None)]:
            resp = conn.request(method, path, body=body)
            made.append((method, path, resp))
    ids = [r.header("X-Request-Id") for _, _, r in made]
    assert all(ids), "responses must carry X-Request-Id"
    entries = wait_entries(lbd, ids)
    for method, path, resp in made:
        rid = resp.header("X-Request-Id")
        mine = [e for e in entries if e["request_id"] == rid]
        assert len(mine) == 1, f"{len(mine)} access lines for request {rid}"
        e = mine[0]
        for f in FIELDS:
            assert f in e, f"field {f} missing in {e['_line']!r}"
        assert e["_prio"] == "<6>", e["_line"]
        assert e["client"] == f"127.0.0.1:{port}"
        assert e["method"] == method
        assert e["path"] in (path, path.split("?")[0]), e["_line"]
        assert int(e["status"]) == resp.status
        assert int(e["bytes"]) == len(resp.body), e["_line"]
        assert e["backend"] == names[resp.header("X-Backend")]
        assert re.fullmatch(r"\d+(\.\d+)?", e["duration_ms"]), e["_line"]
        assert float(e["duration_ms"]) < 5000
        # logfmt: the line has nothing but key=value pairs after "access".
        assert re.fullmatch(r"(<6>)?access( [a-z_]+=(\"(?:[^\"\\]|\\.)*\"|\S*))+", e["_line"]), \
            e["_line"]


def test_duration_reflects_backend_time(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    resp = lbd.get("/delay/300")
    (e,) = wait_entries(lbd, [resp.header("X-Request-Id")])
    assert 290 <= float(e["duration_ms"]) < 2000, e["_line"]


def test_no_backend_logged_with_dash(harness):
    (b1,) = harness.backends(1)
    b1.set_health(500)
    lbd = harness.lbd([b1], healthy=0)
    lbdtest.wait_until(lambda: lbd.backend_status(b1.addr)["last_check"]["result"] != "none",
                       3, "a first probe")
    resp = lbd.get("/nobody")
    assert resp.status == 503
    rid = resp.header("X-Request-Id")
    if rid:
        (e,) = wait_entries(lbd, [rid])
    else:
        e = lbdtest.wait_until(
            lambda: [x for x in lbd.access_entries() if x.get("path", "").startswith("/nobody")],
            2, "the access line of the 503")[0]
    assert e["backend"] == "-" and e["status"] == "503", e["_line"]
    assert int(e["bytes"]) == len(resp.body)


def test_client_request_id_logged(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    lbd.get("/rid", {"X-Request-Id": "my-id.42"})
    (e,) = wait_entries(lbd, ["my-id.42"])
    assert e["path"] == "/rid"


def test_access_log_off(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--access-log", "off"])
    for _ in range(5):
        assert lbd.get("/quiet").status == 200
    assert lbd.get("/marker").status == 200
    import time
    time.sleep(0.3)
    assert not lbd.access_entries(), lbd.stderr_tail()


def test_access_log_to_file(harness, tmp_path):
    (b1,) = harness.backends(1)
    path = tmp_path / "access.log"
    lbd = harness.lbd([b1], args=["--access-log", str(path)])
    ids = []
    for i in range(5):
        ids.append(lbd.get(f"/f{i}").header("X-Request-Id"))
    entries = wait_entries(lbd, ids, source=lambda: path.read_text() if path.exists() else "")
    assert len(entries) == 5
    assert not lbd.access_entries(), "access lines also went to stderr"


def test_access_log_file_reopened_on_reload(harness, tmp_path):
    """logrotate moves the file away and reloads lbd: the next lines go to a new file of the same name,
    none is lost, and the moved file keeps what came before."""
    (b1,) = harness.backends(1)
    path = tmp_path / "access.log"
    moved = tmp_path / "access.log.1"
    lbd = harness.lbd([b1], args=["--access-log", str(path)])
    # One connection per phase: it stays on one event loop, whose lines keep their order ([lbd]
    # threads > 1 orders lines per loop).
    with lbd.connect() as conn:
        before = [conn.get(f"/before{i}").header("X-Request-Id") for i in range(3)]
    wait_entries(lbd, before, source=lambda: path.read_text() if path.exists() else "")
    path.rename(moved)
    lbd.signal(signal.SIGHUP)
    lbdtest.wait_until(path.exists, 3, "a new access log after the reload")
    with lbd.connect() as conn:
        after = [conn.get(f"/after{i}").header("X-Request-Id") for i in range(3)]
    entries = wait_entries(lbd, after, source=lambda: path.read_text())
    assert [e["request_id"] for e in entries] == after
    old = [e["request_id"] for e in lbd.access_entries(moved.read_text())]
    assert old == before, old
    assert not lbd.access_entries(), "access lines went to stderr"


def test_access_log_many_requests_exact_count(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    ids = []
    with lbd.connect() as conn:
        for i in range(100):
            ids.append(conn.get(f"/n{i}").header("X-Request-Id"))
    entries = wait_entries(lbd, ids)
    assert len(entries) == 100
    assert len(lbd.access_entries()) == 100


def test_rejected_request_logged(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    out, _ = lbd.raw(b"GET /rejected-one HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc")
    assert out.startswith(b"HTTP/1.1 400")
    entries = lbdtest.wait_until(
        lambda: [e for e in lbd.access_entries() if e.get("status") == "400"], 2,
        "the access line of the rejected request")
    assert len(entries) == 1, entries
    e = entries[0]
    assert e["backend"] == "-"
    assert e["method"] in ("GET", "-"), e["_line"]
    assert e["path"] in ("/rejected-one", "-"), e["_line"]


def test_aborted_request_logged(harness):
    """A client that goes away before its response still gets its one line."""
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    conn = lbd.connect()
    conn.send_request("GET", "/delay/300?aborted-by-client")
    lbdtest.wait_until(lambda: b1.saw("aborted-by-client"), 2, "request at the backend")
    conn.close()
    entries = lbdtest.wait_until(
        lambda: [e for e in lbd.access_entries() if "aborted-by-client" in e.get("path", "")],
        3, "the access line of the aborted request")
    assert len(entries) == 1, entries
    assert entries[0]["backend"] == b1.addr

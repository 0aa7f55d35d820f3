"""systemd integration: notify protocol, watchdog, reload on SIGHUP, graceful stop."""

import os
import re
import signal
import socket
import threading
import time

import pytest

import lbdtest
from lbdtest import has_line


def config_text(backends, balance="round-robin"):
    return ("[lbd]\n"
            f"balance = {balance}\n"
            "\n[pool]\n"
            "provider = static\n"
            f"backends = {','.join(b.addr for b in backends)}\n"
            "networks = 127.0.0.0/8\n"
            "\n[health]\n"
            "interval = 100ms\n"
            "timeout = 500ms\n")


def addresses(lbd):
    return {b["address"] for b in lbd.status()["backends"]}


def test_ready_status_and_watchdog(harness):
    (b1,) = harness.backends(1)
    notify = harness.notify_listener()
    lbd = harness.lbd([b1], notify=notify, watchdog_usec=200000)
    i = notify.wait_for(lambda m: has_line(m, "READY=1"), 3, "READY=1")
    ready_at = notify.snapshot()[i][0]
    assert notify.find(lambda m: any(line.startswith("STATUS=") and len(line) > 7
                                     for line in m.split("\n"))) is not None, notify.snapshot()
    time.sleep(1.0)
    pings = [t for t, m in notify.snapshot() if has_line(m, "WATCHDOG=1") and t >= ready_at]
    in_first_second = [t for t in pings if t <= ready_at + 1.0]
    assert len(in_first_second) >= 3, f"{len(pings)} WATCHDOG=1 pings: {notify.snapshot()}"
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert gaps and max(gaps) < 0.2, f"watchdog gaps {gaps}"
    assert lbd.proc.poll() is None


def test_abstract_notify_socket(harness):
    (b1,) = harness.backends(1)
    notify = harness.notify_listener(abstract=True)
    harness.lbd([b1], notify=notify)
    notify.wait_for(lambda m: has_line(m, "READY=1"), 3, "READY=1 on an abstract socket")


def test_no_watchdog_for_other_pid(harness):
    (b1,) = harness.backends(1)
    notify = harness.notify_listener()
    harness.lbd([b1], notify=notify, watchdog_usec=200000, watchdog_pid=os.getpid())
    notify.wait_for(lambda m: has_line(m, "READY=1"), 3, "READY=1")
    time.sleep(0.5)
    assert notify.count("WATCHDOG=1") == 0, notify.snapshot()


def test_status_updates_with_health(harness):
    b1, b2 = harness.backends(2)
    notify = harness.notify_listener()
    harness.lbd([b1, b2], notify=notify, args=["--set", "health.fall=2"])
    notify.wait_for(lambda m: has_line(m, "READY=1"), 3, "READY=1")
    b1.set_health(500)
    notify.wait_for(lambda m: re.search(r"^STATUS=.*\b1/2\b", m, re.M), 5,
                    "a STATUS= update saying 1/2 backends healthy")


def test_reload_changes_backends_without_failures(harness):
    b1, b2, b3 = harness.backends(3)
    notify = harness.notify_listener()
    lbd = harness.lbd(config=config_text([b1, b2]), notify=notify, healthy=2)
    assert addresses(lbd) == {b1.addr, b2.addr}
    notify.wait_for(lambda m: has_line(m, "READY=1"), 3, "READY=1")
    load = harness.load(lbd.port, n=2, path="/x", max_seconds=8.0).start()
    time.sleep(0.5)
    mark = len(notify.snapshot())
    lbd.write_config(config_text([b2, b3]))
    lbd.signal(signal.SIGHUP)
    r = notify.wait_for(lambda m: has_line(m, "RELOADING=1"), 3, "RELOADING=1", start=mark)
    msg = notify.snapshot()[r][1]
    assert re.search(r"^MONOTONIC_USEC=\d+$", msg, re.M), msg
    notify.wait_for(lambda m: has_line(m, "READY=1"), 3, "READY=1 after reload", start=r)

    def new_set():
        st = lbd.status()
        addrs = {b["address"]: b["state"] for b in st["backends"]}
        return set(addrs) == {b2.addr, b3.addr} and addrs[b3.addr] == "up"
    lbdtest.wait_until(new_set, 3, "/status to show exactly b2 and b3, b3 up")
    before_b3 = load.by_backend.get("b3", 0)
    time.sleep(0.7)
    load.stop()
    assert not load.failures, load.failures[:5]
    assert load.by_backend.get("b3", 0) > before_b3, load.by_backend
    b1_after = len(b1.requests())
    assert lbd.get("/y").status == 200
    with lbd.connect() as conn:
        for _ in range(10):
            assert conn.get("/z").header("X-Backend") in ("b2", "b3")
    assert len(b1.requests()) == b1_after


def test_reload_lets_removed_backend_finish(harness):
    b1, b2 = harness.backends(2)
    lbd = harness.lbd(config=config_text([b1]), healthy=1)
    result = {}

    def slow():
        result["resp"] = lbd.get("/delay/800")

    t = threading.Thread(target=slow)
    t.start()
    lbdtest.wait_until(lambda: lbd.backend_status(b1.addr)["active"] == 1, 2, "request in flight")
    lbd.write_config(config_text([b2]))
    lbd.signal(signal.SIGHUP)
    lbdtest.wait_until(lambda: lbd.get("/after").header("X-Backend") == "b2", 3,
                       "traffic going to b2")
    t.join(5)
    resp = result["resp"]
    assert resp.status == 200 and resp.header("X-Backend") == "b1"
    assert resp.body == b"delayed 800\n"
    lbdtest.wait_until(lambda: addresses(lbd) == {b2.addr}, 3, "b1 gone from /status")


def test_reload_with_bad_file_keeps_running(harness):
    b1, b2 = harness.backends(2)
    lbd = harness.lbd(config=config_text([b1, b2]), healthy=2)
    lbd.write_config("[lbd]\nbalance = sideways\nthis is not ini\n")
    lbd.signal(signal.SIGHUP)
    time.sleep(0.5)
    assert lbd.proc.poll() is None
    assert addresses(lbd) == {b1.addr, b2.addr}
    with lbd.connect() as conn:
        assert {conn.get("/x").header("X-Backend") for _ in range(4)} == {"b1", "b2"}
    assert str(lbd.config_path) in lbd.stderr_text() or "balance" in lbd.stderr_text()


def test_reload_flags_still_override(harness):
    b1, b2 = harness.backends(2)
    lbd = harness.lbd(config=config_text([b1, b2]), healthy=2,
                      args=["--set", "limits.max_body_size=100"])
    assert lbd.request("POST", "/upload", body=b"x" * 200).status == 413
    lbd.write_config(config_text([b1, b2]) + "\n[limits]\nmax_body_size = 0\n")
    lbd.signal(signal.SIGHUP)
    time.sleep(0.5)
    assert lbd.request("POST", "/upload", body=b"x" * 200).status == 413


def test_sigterm_drains_in_flight(harness):
    (b1,) = harness.backends(1)
    notify = harness.notify_listener()
    lbd = harness.lbd([b1], notify=notify)
    notify.wait_for(lambda m: has_line(m, "READY=1"), 3, "READY=1")
    idle = lbd.connect()
    assert idle.get("/idle").status == 200
    busy = lbd.connect()
    busy.send_request("GET", "/delay/500")
    lbdtest.wait_until(lambda: lbd.backend_status(b1.addr)["active"] == 1, 2, "request in flight")
    start = time.monotonic()
    lbd.signal(signal.SIGTERM)
    notify.wait_for(lambda m: has_line(m, "STOPPING=1"), 1, "STOPPING=1")

    def refused():
        try:
            socket.create_connection(("127.0.0.1", lbd.port), timeout=0.5).close()
            return False
        except ConnectionRefusedError:
            return True
    lbdtest.wait_until(refused, 0.3, "the listener to close")
    assert time.monotonic() - start < 0.45, "listener closed only after the request finished"
    assert idle.closed_by_peer(0.5), "idle keep-alive connection not closed on SIGTERM"
    resp = busy.read_response()
    assert resp.status == 200 and resp.body == b"delayed 500\n"
    assert "close" in resp.connection_tokens()
    assert lbd.wait_exit(3) == 0, lbd.stderr_tail()
    idle.close()
    busy.close()


def test_sigterm_idle_exits_quickly(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    start = time.monotonic()
    lbd.signal(signal.SIGTERM)
    assert lbd.wait_exit(3) == 0
    assert time.monotonic() - start < 1.5


def test_sigint_exits_zero(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1])
    lbd.signal(signal.SIGINT)
    assert lbd.wait_exit(3) == 0


def test_drain_timeout_bounds_shutdown(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], args=["--set", "lbd.drain_timeout=1s"])
    busy = lbd.connect()
    busy.send_request("GET", "/delay/10000")
    lbdtest.wait_until(lambda: lbd.backend_status(b1.addr)["active"] == 1, 2, "request in flight")
    start = time.monotonic()
    lbd.signal(signal.SIGTERM)
    assert lbd.wait_exit(4) == 0
    elapsed = time.monotonic() - start
    assert 0.8 <= elapsed <= 3.0, elapsed
    busy.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM])
def test_no_notify_socket_is_fine(harness, sig):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], watchdog_usec=200000)
    assert lbd.get("/x").status == 200
    lbd.signal(sig)
    assert lbd.wait_exit(3) == 0

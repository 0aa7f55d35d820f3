"""Out of file descriptors: when accept() fails with EMFILE, lbd stops watching its listeners for a
backoff (100 ms doubling to 1 s) instead of being woken again at once, logs the episode once when it
starts and once when it ends, keeps serving the connections it holds, and accepts again once
descriptors are free. The same for the admin API's listener. Health checks that cannot open a socket
meanwhile are skipped, not held against the backend: lbd's shortage is not the backend's failure."""

import os
import socket
import time

import lbdtest

NOFILE = 64


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def episodes(text, listener):
    """(episodes begun, episodes ended) in lbd's log for <listener> ("proxy" or "admin API")."""
    lines = text.splitlines()
    return (sum(f"{listener}: out of file descriptors" in line for line in lines),
            sum(f"{listener}: accepting again after" in line for line in lines))


def test_descriptors_exhausted(harness):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], start=False, args=["--set", "timeouts.backend_idle=60s"])
    lbd.args = ["prlimit", f"--nofile={NOFILE}:{NOFILE}", "--"] + lbd.args
    lbd.start()

    # A kept-alive connection whose backend connection stays pooled: it needs no new descriptor.
    keep = lbd.connect()
    assert keep.get("/before").status == 200

    # More connections than descriptors: the kernel completes them all, lbd can accept only some.
    held = []
    for _ in range(NOFILE + 16):
        held.append(socket.create_connection(("127.0.0.1", lbd.port), timeout=5))
    lbdtest.wait_until(lambda: "proxy: out of file descriptors" in lbd.stderr_text(), 5,
                       "the proxy's out-of-descriptors warning")
    # The admin API meets the shortage at its next accept. A descriptor lbd frees meanwhile (a health
    # check's socket open when the shortage began; slow checks, as under ThreadSanitizer, make it likely)
    # lets that accept succeed: another connection then finds none.
    admin_waiting = []

    def admin_short():
        if "admin API: out of file descriptors" in lbd.stderr_text():
            return True
        if len(admin_waiting) < 16:
            admin_waiting.append(socket.create_connection(("127.0.0.1", lbd.admin_port), timeout=5))
        return False
    lbdtest.wait_until(admin_short, 10, "the admin API's out-of-descriptors warning", interval=0.2)

    # Exhausted for a while: little CPU, a bounded log, and the held connection still served.
    lines_before = len(lbd.stderr_text().splitlines())
    cpu_before = cpu_seconds(lbd.pid)
    time.sleep(1.5)
    cpu = cpu_seconds(lbd.pid) - cpu_before
    resp = keep.get("/during")
    assert resp.status == 200, resp
    assert " is down" not in lbd.stderr_text(), lbd.stderr_tail()
    lines = lbd.stderr_text().splitlines()
    assert cpu < 0.5, f"lbd used {cpu:.2f} s of CPU in 1.5 s while out of descriptors"
    # A spinning accept would log thousands.
    assert len(lines) - lines_before < 40, lines[lines_before:]
    assert lbd.proc.poll() is None

    # Descriptors back: both listeners accept again, and say so once.
    for s in held + admin_waiting:
        s.close()

    def serves():
        try:
            return lbd.request("GET", "/after", {"Connection": "close"}, timeout=2).status == 200
        except (OSError, lbdtest.ConnectionClosed):
            return False
    lbdtest.wait_until(serves, 10, "lbd to serve new connections again", interval=0.2)
    assert lbd.status()["backends"], lbd.status()
    text = lbd.stderr_text()
    assert "proxy: accepting again after" in text, text
    lbdtest.wait_until(lambda: "admin API: accepting again after" in lbd.stderr_text(), 5,
                       "the admin API's recovery notice")
    # Each episode is logged once when it begins and once when it ends. A listener may have had a second
    # one: a descriptor that lbd frees during the shortage (a health check's socket that was open when it
    # began) lets the next retry accept one waiting connection, which uses it up again; on a loaded
    # machine, where a check takes longer, that happens now and then.
    text = lbd.stderr_text()
    for listener in ("proxy", "admin API"):
        begun, ended = episodes(text, listener)
        assert begun == ended and 1 <= begun <= 5, (listener, begun, ended, text)
    keep.close()

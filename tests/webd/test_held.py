"""Many held connections against webd's HTTP engine: slowloris connections closed at the head deadline,
thousands of idle and partial connections that do not stop /healthcheck nor fill the log, and running
out of descriptors without spinning (one log line per episode, recovery once they close)."""

import os
import resource
import select
import socket
import time

import pytest
import requests

import webdtest
from webdtest import RawConn

HOLD_TARGET = 20000  # what the issue asks for; fewer when the descriptors allowed here do not reach it


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def log_lines(webd):
    return len(webd.log().splitlines())


def healthcheck_seconds(webd):
    """One /healthcheck on a new connection: its time, or a failure when it takes 1 s or more."""
    start = time.monotonic()
    r = webd.request("GET", "/healthcheck", timeout=1, session=requests.Session())
    took = time.monotonic() - start
    assert r.status_code == 200, r.text
    return took


def connect_many(port, n, first_bytes=b""):
    """n connections to port from several loopback sources (each has its own ports); every other one sends
    first_bytes. Stops at n or at the first failure (returned with the sockets)."""
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((f"127.0.0.{2 + i % 4}", 0))
            s.settimeout(10)
            s.connect(("127.0.0.1", port))
            if first_bytes and i % 2:
                s.sendall(first_bytes)
        except OSError:
            s.close()
            raise
        socks.append(s)
    return socks


def close_all(socks):
    for s in socks:
        s.close()


def test_slowloris_closed_at_head_deadline(new_webd):
    webd = new_webd(extra={"header_timeout": "3s"})
    conns = [RawConn(webd.port, timeout=15) for _ in range(100)]
    try:
        for c in conns:
            c.send(b"GET /tasks HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        answered = set()
        line = 0
        while len(answered) < len(conns) and time.monotonic() - start < 15:
            readable = select.select([c.sock for c in conns if c.sock.fileno() not in answered], [], [], 1.0)[0]
            for s in readable:
                answered.add(s.fileno())
            for c in conns:  # one more header line each second, on every connection still open
                if c.sock.fileno() not in answered:
                    try:
                        c.send(b"X-Drip-%d: x\r\n" % line)
                    except OSError:
                        answered.add(c.sock.fileno())
            line += 1
            if time.monotonic() - start < 2:
                assert healthcheck_seconds(webd) < 1
        took = time.monotonic() - start
        assert len(answered) == len(conns), f"{len(conns) - len(answered)} slow heads still open after {took:.1f}s"
        assert took < 10, took
        for c in conns:
            r = c.read_response(timeout=5)
            assert r is not None and r.status == 408, r and r.body
            assert c.closed_by_peer(5)
    finally:
        for c in conns:
            c.close()
    assert healthcheck_seconds(webd) < 1


def test_held_connections_do_not_stop_healthcheck(new_webd):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = min(HOLD_TARGET, hard - 600)
    if n < 2000:
        pytest.skip(f"only {hard} descriptors allowed here: fewer than 2000 connections to hold")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    webd = new_webd(extra={"max_connections": str(n + 200), "header_timeout": "120s",
                           "idle_timeout": "120s"})
    lines = log_lines(webd)
    rss_before = rss_kib(webd.proc.pid)
    socks = []
    try:
        socks = connect_many(webd.port, n, b"GET /tasks HTTP/1.1\r\nHost: x\r\nX-Partial: ")
        # webd accepted them all (the kernel's backlog is far smaller than n).
        times = [healthcheck_seconds(webd) for _ in range(5)]
        rss_held = rss_kib(webd.proc.pid)
        print(f"held {n} connections: /healthcheck {max(times) * 1000:.1f} ms at most, "
              f"webd RSS {rss_before} -> {rss_held} KiB")
        assert max(times) < 1
    finally:
        close_all(socks)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert healthcheck_seconds(webd) < 1
    time.sleep(1)
    grown = log_lines(webd) - lines
    assert grown <= 5, f"the log grew by {grown} lines:\n" + "\n".join(webd.log().splitlines()[lines:][:20])


def test_descriptor_exhaustion(new_webd):
    nofile = 128
    webd = new_webd(extra={"header_timeout": "60s"}, wrapper=["prlimit", f"--nofile={nofile}:{nofile}", "--"])
    assert "Descriptors limited to 128" in webd.log()
    lines = log_lines(webd)
    socks = connect_many(webd.port, nofile * 2)
    try:
        webdtest.wait_until(lambda: "out of file descriptors" in webd.log(), 10, "the out-of-descriptors line")
        cpu = cpu_seconds(webd.proc.pid)
        time.sleep(3)
        spent = cpu_seconds(webd.proc.pid) - cpu
        assert spent < 0.5, f"webd spent {spent:.2f} s of CPU in 3 s while out of descriptors"
        assert webd.log().count("out of file descriptors") == 1
    finally:
        close_all(socks)
    webdtest.wait_until(lambda: "accepting again" in webd.log(), 15, "the end of the episode")
    assert healthcheck_seconds(webd) < 1
    # The backlog drained after the closes may run short again for a moment: another episode, its own two
    # lines; every episode ends with its notice.
    log = webd.log()
    assert log.count("out of file descriptors") == log.count("accepting again") <= 3, log
    grown = log_lines(webd) - lines
    assert grown <= 8, "\n".join(webd.log().splitlines()[lines:][:20])

#!/usr/bin/python3
"""webd's CPU cost of hostile JSON bodies against ordinary ones of the same size.

Starts a throwaway PostgreSQL cluster and webd (tests/webd/webdtest.py's harness: everything on
127.0.0.1, every process stopped by its PID), then POSTs each body to /auth/login (no token needed)
--rounds times and prints, per body, webd's CPU time per request (utime + stime from
/proc/PID/stat, over all rounds divided by them), the status and the size of the answer:

  body                       bytes   status  answer_bytes  webd_cpu_ms
  unknown keys 8362          65536   400     ...           ...
  one long value             65536   ...

Bodies: distinct unknown keys filling the size ("a":0, "b":0, ... as many as fit in 64 KB; 50,000
longer ones in 2 MB, beyond the 10,000 values webd takes; 9,990 in 2 MB, within it), and the reference
of the same size: known fields, one holding a long string (answered 400 too, without a password hash).
The 2 MB bodies run with max_body_size = 2M. The request count is bounded (--rounds, at most 50 per
body) and every request has a 300 s timeout.

Needs root (the cluster runs as postgres through runuser), python3-requests and PostgreSQL 15.
Usage: bench/webd-json.py [--rounds N] [--webd PATH]
"""

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "webd"))

import webdtest  # noqa: E402


def cpu_ms(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1000.0 / os.sysconf("SC_CLK_TCK")


def key_names():
    """Distinct names, shortest first: "a".."9", "aa".. (never a known field's)."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    names = [""]
    while True:
        names = [n + c for n in names for c in alphabet]
        yield from names


def unknown_keys(size, count=None):
    """An object of distinct unknown keys filling size bytes: as many short keys as fit, or <count>
    keys whose names are padded to fill it. Returns (body, number of keys)."""
    names = key_names()
    if count is None:
        parts, used = [], 2
        for name in names:
            item = f'"{name}":0'
            if used + len(item) + 1 > size:
                break
            parts.append(item)
            used += len(item) + 1
    else:
        pad = (size - 2) // count - len('"":0,') - 4
        parts = [f'"{next(names)}{"-" * pad}":0' for _ in range(count)]
    body = "{" + ",".join(parts) + "}"
    return body.ljust(size).encode(), len(parts)


def long_value(size):
    # username of the wrong type: answered 400 before any password hash, like the hostile body.
    head = '{"username":1,"password":"'
    return (head + "x" * (size - len(head) - 2) + '"}').encode()


def measure(w, body, rounds):
    """webd's CPU time over <rounds> requests, divided by them (a clock tick is 10 ms: one request alone
    is often below it)."""
    pid = w.proc.pid
    status, answer = None, 0
    before = cpu_ms(pid)
    for _ in range(rounds):
        r = w.request("POST", "/auth/login", raw=body, headers={"Content-Type": "application/json"},
                      timeout=300)
        status, answer = r.status_code, len(r.content)
    # The answer is sent after the work: give the clock a tick to count it.
    time.sleep(0.05)
    return status, answer, (cpu_ms(pid) - before) / rounds


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--webd", default=None)
    args = p.parse_args()
    if not 1 <= args.rounds <= 50:
        p.error("--rounds must be 1..50")
    if args.webd:
        os.environ["WEBD_BINARY"] = str(Path(args.webd).resolve())

    import tempfile
    tmp = Path(tempfile.mkdtemp(prefix="webd-json-bench-"))
    cluster = webdtest.PgCluster()
    print(f"{'body':28} {'bytes':>8} {'status':>6} {'answer_bytes':>12} {'webd_cpu_ms':>11}", flush=True)
    try:
        for size, limit, counts in ((65536, "64k", (None,)), (2 * 1024 * 1024, "2M", (50000, 9990))):
            w = webdtest.Webd(tmp / limit, cluster, extra={"max_body_size": limit, "activity": "off"})
            try:
                w.start()
                bodies = [unknown_keys(size, count) for count in counts]
                bodies = [(f"unknown keys {n}", body) for body, n in bodies]
                for name, body in bodies + [("one long value", long_value(size))]:
                    status, answer, ms = measure(w, body, args.rounds)
                    print(f"{name:28} {len(body):>8} {status:>6} {answer:>12} {ms:>11.1f}", flush=True)
            finally:
                w.stop()
    finally:
        cluster.cleanup()


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Scaling on demand under a load step: lbd with the local provider, whose every backend serves at most
--capacity requests a second (a token bucket; requests beyond it wait in line, up to 2 s, then 503), and
[pool] target_rps = --target. An open-loop generator sends --low req/s until lbd has a full scale-out
window of data, then --high req/s for --high-seconds, then nothing. It prints, from the step:

  decision_s  the first scale-out decision (lbd's log line "Scaling: N -> M (out)")
  capacity_s  the pool at the count the load calls for (ceil(high / target)), every one healthy
  met_s       the first second from which the per-backend load stays at or under the target
  failed      requests that failed (not 200, or no answer within 5 s) during the whole run
  p99_ms      the 99th percentile of response time during the step, from the generator
  shrink_s    after the load stops, the time until desired is back to min, and the steps it took

Production defaults for scaling out (scale_out_after 30s); scaling in with --in-window and --cooldown
(default 30 s each, not the production 5 min, so that the run ends: the pool shrinks one backend per
cooldown). Everything runs on 127.0.0.1; every process started here is stopped by its PID at the end.

usage: bench/autoscale.py [--low 50] [--high 500] [--capacity 150] [--target 100] [--high-seconds 90]
                          [--in-window 30] [--cooldown 30] [--lbd build/lbd/lbd]
  (also: bench/autoscale.py --serve-backend ADDR:PORT --capacity N, the backend itself)
"""

import argparse
import asyncio
import http.client
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


# ---- the capacity-limited backend ------------------------------------------------------------------

async def serve_backend(addr, capacity):
    host, port = addr.rsplit(":", 1)
    state = {"next": time.monotonic()}
    interval = 1.0 / capacity

    async def slot():
        """Waits for this request's turn at <capacity> a second; False when it would wait over 2 s."""
        now = time.monotonic()
        start = max(now, state["next"])
        if start - now > 2.0:
            return False
        state["next"] = start + interval
        await asyncio.sleep(start - now)
        return True

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > 16384:
                    break
                line = head.split(b"\r\n", 1)[0]
                health = b" /healthcheck " in line
                ok = health or await slot()
                status, body = (b"200 OK", b"ok\n") if ok else (b"503 Service Unavailable", b"busy\n")
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode() +
                             b"\r\nContent-Type: text/plain\r\n\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, int(port), limit=32768)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with server:
        await stop


# ---- the load -------------------------------------------------------------------------------------------

class Load:
    """An open-loop load: requests start at the rate set with .rate whether or not earlier ones were
    answered (as many independent clients would send them), on keep-alive connections taken from a pool
    and opened as needed (at most 4,000 at once); an answer later than 5 s counts as failed. Runs its own
    asyncio loop in a thread."""

    MAX_CONNS = 4000

    def __init__(self, port):
        self.port = port
        self.rate = 0.0
        self.sent = self.ok = self.failed = 0
        self.latencies = []  # (time sent, seconds)
        self.stopping = False
        self.thread = threading.Thread(target=lambda: asyncio.run(self.run()), daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=30)

    async def one(self, idle, open_conns):
        start = time.monotonic()
        good = False
        conn = idle.pop() if idle else None
        try:
            if conn is None:
                if open_conns[0] >= self.MAX_CONNS:
                    raise OSError("too many connections")
                open_conns[0] += 1
                conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 5)
            reader, writer = conn
            writer.write(b"GET /work HTTP/1.1\r\nHost: bench\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await asyncio.wait_for(reader.readexactly(length), 5)
            good = head.startswith(b"HTTP/1.1 200 ")
            if b"\r\nconnection: close" in head.lower():
                raise ConnectionError("closed")
            idle.append(conn)
            conn = None
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError):
            pass
        finally:
            if conn is not None:
                conn[1].close()
                open_conns[0] -= 1
        self.sent += 1
        if good:
            self.ok += 1
        else:
            self.failed += 1
        self.latencies.append((start, time.monotonic() - start))

    async def run(self):
        idle, open_conns, tasks = [], [0], set()
        next_at = time.monotonic()
        while not self.stopping:
            rate = self.rate
            if rate <= 0:
                await asyncio.sleep(0.05)
                next_at = time.monotonic()
                continue
            next_at += 1.0 / rate
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            t = asyncio.ensure_future(self.one(idle, open_conns))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        for _, writer in idle:
            writer.close()


def stop_backends(state_file):
    """lbd leaves the local provider's backends running when it stops (the next start adopts them): the
    ones this run's lbd started, listed in its state file, are stopped by their PIDs."""
    try:
        lines = state_file.read_text().splitlines()
    except OSError:
        return
    me = str(Path(__file__).resolve())
    for line in lines:
        fields = line.split()
        if len(fields) < 2 or line.startswith("#") or not fields[1].isdigit():
            continue
        pid = int(fields[1])
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if me in cmdline and "--serve-backend" in cmdline:
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(admin_port):
    conn = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5)
    try:
        conn.request("GET", "/status")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve-backend", metavar="ADDR:PORT")
    ap.add_argument("--capacity", type=int, default=150)
    ap.add_argument("--low", type=int, default=50)
    ap.add_argument("--high", type=int, default=500)
    ap.add_argument("--target", type=int, default=100)
    ap.add_argument("--high-seconds", type=int, default=90)
    ap.add_argument("--in-window", type=int, default=30)
    ap.add_argument("--cooldown", type=int, default=30)
    ap.add_argument("--lbd", default=str(REPO / "build" / "lbd" / "lbd"))
    args = ap.parse_args()
    if args.serve_backend:
        asyncio.run(serve_backend(args.serve_backend, args.capacity))
        return 0
    for name in ("capacity", "low", "high", "target", "high_seconds", "in_window", "cooldown"):
        if getattr(args, name) <= 0:
            ap.error(f"--{name.replace('_', '-')} must be positive")
    if args.high > 2000:
        ap.error("--high: at most 2000 req/s from this generator")

    need = math.ceil(args.high / args.target)
    tmp = Path(tempfile.mkdtemp(prefix="lbd-bench-autoscale."))
    port, admin = free_port(), free_port()
    base = 20000 + (os.getpid() % 200) * 20
    command = f"{sys.executable} {Path(__file__).resolve()} --serve-backend {{address}} --capacity {args.capacity}"
    conf = tmp / "lbd.conf"
    conf.write_text(
        "[lbd]\n"
        f"listen = 127.0.0.1:{port}\n"
        f"admin = 127.0.0.1:{admin}\n"
        "access_log = off\n"
        "[health]\ninterval = 1s\n"
        "[pool]\nprovider = local\ndesired = 1\npoll = 1s\ngrace = 5s\nnetworks = 127.0.0.0/8\n"
        f"min = 1\nmax = {need + 3}\ntarget_rps = {args.target}\n"
        f"scale_in_after = {args.in_window}s\nscale_in_cooldown = {args.cooldown}s\n"
        "[local]\n"
        f"base_port = {base}\nupstream = 127.0.0.1:9\nstate_file = {tmp / 'local.state'}\n"
        f"command = {command}\n")
    log_path = tmp / "lbd.log"
    log = open(log_path, "wb")
    lbd = subprocess.Popen([args.lbd, "--config", str(conf)], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    load = None
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if status(admin)["healthy"] >= 1:
                    break
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline or lbd.poll() is not None:
                raise SystemExit(f"lbd did not come up: see {log_path}")
            time.sleep(0.2)
        load = Load(port).start()
        load.rate = args.low
        # Low load until lbd has a full scale-out window of figures (30 s by default) and a little more.
        time.sleep(40)
        st = status(admin)
        assert st["control"]["desired"] == 1, "scaled before the step: lower --low"
        step = time.monotonic()
        load.rate = args.high
        decision = capacity = met = None
        under_since = None
        last_ok, last_t = load.ok, time.monotonic()
        while time.monotonic() - step < args.high_seconds:
            time.sleep(1)
            st = status(admin)
            t = time.monotonic()
            now = t - step
            desired, healthy = st["control"]["desired"], st["healthy"]
            if decision is None and desired > 1:
                decision = now
            if capacity is None and desired >= need and healthy >= need:
                capacity = now
            # The load each backend served over the last second, from the generator's answers (read from
            # the generator's thread: plain integers, a torn read is impossible).
            served = (load.ok - last_ok) / (t - last_t)
            last_ok, last_t = load.ok, t
            if healthy > 0 and served / healthy <= args.target * 1.05 and served >= args.high * 0.9:
                under_since = now if under_since is None else under_since
            else:
                under_since = None
            if met is None and under_since is not None and now - under_since >= 10 and capacity is not None:
                met = under_since
        load.rate = 0
        stop = time.monotonic()
        lat = sorted(t for s, t in load.latencies if step <= s < stop)
        p99 = lat[int(len(lat) * 0.99)] * 1000 if lat else float("nan")
        shrink = None
        while time.monotonic() - stop < args.in_window + need * (args.cooldown + 5) + 60:
            time.sleep(1)
            if status(admin)["control"]["desired"] == 1:
                shrink = time.monotonic() - stop
                break
        text = log_path.read_text(errors="replace")
        outs = re.findall(r"Scaling: \d+ -> \d+ \(out\)[^\n]*", text)
        ins = re.findall(r"Scaling: (\d+) -> (\d+) \(in\)", text)
        print(f"step {args.low} -> {args.high} req/s, backends of {args.capacity} req/s, target {args.target} "
              f"req/s per backend (needs {need}); scale_out_after 30s, scale_in_after {args.in_window}s, "
              f"cooldown {args.cooldown}s")
        for line in outs:
            print(f"  {line[:200]}")

        def fmt(x):
            return "never" if x is None else f"{x:.1f}"
        print(f"decision_s {fmt(decision)}  capacity_s {fmt(capacity)}  met_s {fmt(met)}  "
              f"failed {load.failed} of {load.sent}  p99_ms {p99:.0f}  "
              f"shrink_s {fmt(shrink)} in {len(ins)} steps {' '.join(f'{a}->{b}' for a, b in ins)}")
        return 0
    finally:
        if load:
            load.stop()
        lbd.send_signal(signal.SIGTERM)
        try:
            lbd.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lbd.kill()
            lbd.wait()
        log.close()
        stop_backends(tmp / "local.state")


if __name__ == "__main__":
    sys.exit(main())

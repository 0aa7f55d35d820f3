"""Harness for the tests of scripts/demo.sh.

Demo: one run of the script, with --build-dir pointing at the build the tests
run from (DEMO_BUILD_DIR), a free --port, and neither package installation nor
compilation. Its output (stdout and stderr together) is collected by a thread;
the working directory and the admin API's port are read from it. Every
process of a demo mentions its working directory on its command line (the
configuration files live there), except PostgreSQL's auxiliary processes,
which are recorded as the postmaster's children. cleanup() ends whatever a
failed test left behind: SIGTERM to the script, then SIGKILL to each process
still mentioning the working directory. Every wait is bounded.
"""

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(os.environ.get("DEMO_SCRIPT", REPO / "scripts" / "demo.sh"))
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))

# Variables of the environment running the tests that must not reach the demo.
DROP_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
            "WEBD_DATABASE", "WEBCTL_URL", "XDG_CONFIG_HOME")


def build_dir():
    env = os.environ.get("DEMO_BUILD_DIR")
    path = Path(env) if env else REPO / "build"
    for prog in ("lbd/lbd", "webd/webd", "lbctl/lbctl", "webctl/webctl"):
        if not os.access(path / prog, os.X_OK):
            pytest.skip(f"{path / prog} not built: set DEMO_BUILD_DIR to a build with every program")
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL 15 server binaries not found in {PG_BIN}")
    return path


def ephemeral_low():
    """The first port the kernel hands out to outgoing connections (32768 when unknown)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A free port below the kernel's range for outgoing connections: a port from that range, free when
    picked, can be taken by any connection another test opens before demo.sh binds it."""
    low = ephemeral_low()
    for _ in range(200):
        port = random.randrange(10000, max(10001, low))
        if port_free(port):
            return port
    raise AssertionError("no free port found below the kernel's ephemeral range")


def port_free(port):
    """True when nothing listens on 127.0.0.1:port and it can be bound again."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        if s.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_until(fn, timeout, what, interval=0.1):
    """Calls fn until it returns a truthy value (returned) or timeout expires."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = fn()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - remembered for the failure message
            last_exc = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


def proc_stat(pid):
    """(state, ppid, starttime) of pid from /proc/PID/stat, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    if len(fields) < 20:
        return None
    return fields[0], int(fields[1]), int(fields[19])


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None


def alive(pid, starttime=None):
    """True when pid exists, is not a zombie, and (if given) started at starttime."""
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return starttime is None or st[2] == starttime


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def procs_mentioning(text):
    """{pid: cmdline} of the live processes whose command line contains text (this one excepted)."""
    out = {}
    for pid in all_pids():
        if pid == os.getpid():
            continue
        cmd = proc_cmdline(pid)
        if cmd and text in cmd and alive(pid):
            out[pid] = cmd
    return out


def children_of(ppid):
    return [pid for pid in all_pids() if (st := proc_stat(pid)) and st[1] == ppid]


class Demo:
    """One run of scripts/demo.sh."""

    READY = re.compile(r"^demo: ready at (http://127\.0\.0\.1:\d+)$")

    def __init__(self, tmp_path, port=None, extra_args=()):
        self.build = build_dir()
        self.tmp = Path(tmp_path)
        self.port = port or free_port()
        self.env = {k: v for k, v in os.environ.items() if k not in DROP_ENV}
        self.env["XDG_CONFIG_HOME"] = str(self.tmp / "config")
        self.args = ["/bin/bash", str(SCRIPT), "--build-dir", str(self.build), "--port", str(self.port),
                     "--no-packages", "--no-build", *extra_args]
        self.lines = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.proc = None
        self.reader = None
        self.url = None
        self.workdir = None
        self.admin_port = None
        self.recorded = {}  # pid -> starttime of every process of the demo seen so far

    # ---- the script ----------------------------------------------------------

    def start(self):
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=self.env, cwd=str(self.tmp),
                                     start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        return self

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            with self.lock:
                self.lines.append(line)
            m = self.READY.match(line)
            if m:
                self.url = m.group(1)
                self.ready.set()
            m = re.match(r"^demo: working directory: (\S+)$", line)
            if m:
                self.workdir = m.group(1)
            m = re.search(r"--admin 127\.0\.0\.1:(\d+) status$", line)
            if m and self.admin_port is None:
                self.admin_port = int(m.group(1))

    def output(self):
        with self.lock:
            return "\n".join(self.lines)

    def wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.2):
            if self.proc.poll() is not None:
                self.reader.join(timeout=5)
                raise AssertionError(f"demo.sh exited with {self.proc.returncode} before it was ready:\n"
                                     f"{self.output()}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"demo.sh was not ready within {timeout}s:\n{self.output()}")
        assert self.url == f"http://127.0.0.1:{self.port}", self.output()
        assert self.workdir and Path(self.workdir).is_dir(), self.output()
        assert self.admin_port, f"no admin port in the output:\n{self.output()}"
        return self

    def wait_exit(self, timeout=60):
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"demo.sh did not exit within {timeout}s:\n{self.output()}") from None
        self.reader.join(timeout=10)
        return code

    def section(self, title, end):
        """The indented lines of the output between the line `title` and the line starting with `end`."""
        lines = self.output().splitlines()
        start = lines.index(title) + 1
        stop = next(i for i in range(start, len(lines)) if lines[i].startswith(end))
        return [line[2:] for line in lines[start:stop] if line.startswith("  ")]

    # ---- its processes ---------------------------------------------------------

    def processes(self):
        """{pid: cmdline} of the live processes mentioning the working directory."""
        return procs_mentioning(self.workdir)

    def find(self, conf):
        """The pid of the one process started with `conf` (a file in the working directory)."""
        procs = {p: c for p, c in self.processes().items() if f"{self.workdir}/{conf}" in c}
        assert len(procs) == 1, f"processes using {conf}: {procs}"
        return next(iter(procs))

    def postmaster(self):
        text = (Path(self.workdir) / "pg" / "data" / "postmaster.pid").read_text()
        return int(text.split()[0])

    def record(self):
        """Remembers every process of the demo alive now (with its start time, against pid reuse)."""
        pids = set(self.processes())
        pm = self.postmaster()
        pids.add(pm)
        pids.update(children_of(pm))
        for pid in pids:
            st = proc_stat(pid)
            if st:
                self.recorded.setdefault(pid, st[2])
        return pids

    def leftovers(self):
        """Live processes of the demo: recorded ones still alive, and any mentioning the working dir."""
        out = {pid: proc_cmdline(pid) for pid, start in self.recorded.items() if alive(pid, start)}
        if self.workdir:
            out.update(self.processes())
        return out

    # ---- lbd ---------------------------------------------------------------------

    def status(self):
        r = requests.get(f"http://127.0.0.1:{self.admin_port}/status", timeout=5)
        r.raise_for_status()
        return r.json()

    def relays(self):
        """{pid: instance id} of the backends lbd reports."""
        out = {}
        for b in self.status()["backends"]:
            m = re.fullmatch(r"local-\d+-(\d+)", b["instance_id"] or "")
            assert m, b
            out[int(m.group(1))] = b["instance_id"]
        return out

    def healthy(self, n):
        st = self.status()
        up = [b for b in st["backends"] if b["state"] == "up" and b["in_rotation"]]
        live = [i for i in st["control"]["instances"]
                if i["state"] in ("pending", "running") and not i["terminating"]]
        return st if st["healthy"] == n and len(up) == n and len(st["backends"]) == n and len(live) == n \
            else None

    # ---- the end -------------------------------------------------------------------

    def cleanup(self):
        """Ends what a failed test left: the script first, then every process mentioning the working
        directory (each checked again just before the signal), then the directory."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.workdir:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                procs = self.processes()
                for pid in procs:
                    cmd = proc_cmdline(pid)
                    if cmd and self.workdir in cmd:
                        try:
                            os.kill(pid, sig)
                        except ProcessLookupError:
                            pass
                deadline = time.monotonic() + 10
                while procs and time.monotonic() < deadline and any(alive(p) for p in procs):
                    time.sleep(0.1)
            shutil.rmtree(self.workdir, ignore_errors=True)
        if self.proc.stdout:
            self.proc.stdout.close()

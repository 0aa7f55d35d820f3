"""Harness for lbd's local-provider tests.

One LocalEnv holds a test's world, all on 127.0.0.1:
  - the upstream "web host" (tests/helpers/backend.py) the relays forward to;
  - lbd itself with [pool] provider = local, its backends on a block of free
    ports (base_port, base_port + 1, ...) and its state file in the test's
    directory; lbd starts them as `lbd --listen ... --backend <web>` (relay
    mode, the default command);
  - bounded request loops through lbd (lbdtest.LoadThreads).
Every port is one of the test's own (testnet.py), lbdtest's included.
The relays outlive lbd by design (a restarted lbd adopts them), so cleanup()
ends them too: by the pids of the state file, each checked first through
/proc/PID/cmdline to be one of this test's relays. Every wait is bounded.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))

import lbdtest  # noqa: E402  (the data plane's harness: Lbd, Backend, LoadThreads)
import testnet  # noqa: E402

LBCTL_DEFAULT = REPO / "build" / "lbctl" / "lbctl"


def lbctl_binary():
    env = os.environ.get("LBCTL_BINARY")
    if env:
        return Path(env)
    lbd = lbdtest.lbd_binary()
    guess = lbd.parent.parent / "lbctl" / "lbctl"
    return guess if guess.exists() else LBCTL_DEFAULT


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return None


def proc_alive(pid):
    """True when pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return False
    state = stat[stat.rfind(")") + 2:][:1]
    return state not in ("Z", "X", "")


class LocalEnv:
    PORTS = 16  # the block of ports the relays may use

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.h = lbdtest.Harness(self.workdir)
        self.web = self.h.backend("web")
        self.base_port = testnet.free_ports(self.PORTS)
        self.state_file = self.workdir / "local.state"
        self.lbd = None
        self.seen_pids = set()

    # ---- configuration -----------------------------------------------

    def config(self, desired=3, poll="300ms", grace="2s", command=None, extra_pool=""):
        text = (
            "[pool]\n"
            "provider = local\n"
            f"desired = {desired}\n"
            f"poll = {poll}\n"
            f"grace = {grace}\n"
            "networks = 127.0.0.0/8\n"
            f"{extra_pool}"
            "[local]\n"
            f"base_port = {self.base_port}\n"
            f"upstream = {self.web.addr}\n"
            f"state_file = {self.state_file}\n"
        )
        if command:
            text += f"command = {command}\n"
        return text

    def start_lbd(self, desired=3, healthy=None, timeout=20.0, **kw):
        """Starts lbd and waits until `healthy` (default: desired) backends are up."""
        self.lbd = self.h.lbd(config=self.config(desired, **kw), wait=False,
                              args=["--set", "lbd.drain_timeout=5s"])
        self.lbd.wait_ready(healthy=desired if healthy is None else healthy, timeout=timeout)
        return self.lbd

    def restart_lbd(self, healthy, timeout=20.0):
        """Starts the same lbd again (same ports, same config file)."""
        self.lbd.start(wait=False)
        self.lbd.wait_ready(healthy=healthy, timeout=timeout)
        return self.lbd

    def reconfigure(self, desired, **kw):
        """Rewrites lbd's config file and sends SIGHUP."""
        self.lbd.write_config(self.config(desired, **kw))
        self.lbd.signal(signal.SIGHUP)

    # ---- the relays ------------------------------------------------------

    def state(self):
        """[(index, pid, port)] from the state file."""
        out = []
        try:
            text = self.state_file.read_text()
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            index, pid = (int(x) for x in line.split()[:2])
            out.append((index, pid, self.base_port + index))
        for _, pid, _ in out:
            self.seen_pids.add(pid)
        return out

    def is_our_relay(self, pid, port=None):
        cmd = proc_cmdline(pid)
        if not cmd or not proc_alive(pid):
            return False
        text = b" ".join(cmd)
        if str(lbdtest.lbd_binary()).encode() not in text and b"lbd" not in cmd[0]:
            return False
        if port is not None:
            return f"127.0.0.1:{port}".encode() in text
        return any(f"127.0.0.1:{p}".encode() in text
                   for p in range(self.base_port, self.base_port + self.PORTS))

    def relays(self):
        """{pid: port} of the live relays the state file lists."""
        return {pid: port for _, pid, port in self.state() if self.is_our_relay(pid, port)}

    def wait_relays(self, n, timeout=20.0, what=None):
        return lbdtest.wait_until(lambda: (lambda r: r if len(r) == n else None)(self.relays()), timeout,
                                  what or f"{n} relays in {self.state_file}")

    def status(self):
        return self.lbd.status()

    def healthy_instances(self):
        st = self.status()
        return sorted(b["instance_id"] for b in st["backends"] if b["state"] == "up")

    def wait_healthy(self, n, timeout=20.0):
        def check():
            st = self.status()
            up = [b for b in st["backends"] if b["state"] == "up"]
            alive = [i for i in st["control"]["instances"]
                     if i["state"] in ("pending", "running") and not i["terminating"]]
            return st if len(up) == n and len(st["backends"]) == n and len(alive) == n else None
        return lbdtest.wait_until(check, timeout, f"{n} healthy backends and {n} instances")

    # ---- the end -----------------------------------------------------------

    def report(self):
        return self.h.report()

    def cleanup(self):
        try:
            self.h.cleanup()
        finally:
            self.end_relays()

    def end_relays(self):
        pids = set(self.relays())
        for pid in self.seen_pids:
            if self.is_our_relay(pid):
                pids.add(pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(proc_alive(p) for p in pids):
            time.sleep(0.05)
        for pid in pids:
            if self.is_our_relay(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def fixture(tmp_path):
    """Body of the `env` fixture of each test file: yields a LocalEnv, ends it all afterwards; its
    report (lbd's stderr) is printed, which pytest shows only when the test failed."""
    env = LocalEnv(tmp_path)
    try:
        yield env
    finally:
        try:
            print(env.report())
        finally:
            env.cleanup()


def lbctl(*args, timeout=10):
    """Runs lbctl; returns CompletedProcess (text)."""
    return subprocess.run([str(lbctl_binary()), *args], capture_output=True, text=True, timeout=timeout,
                          check=False)

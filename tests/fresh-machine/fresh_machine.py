#!/usr/bin/python3
"""The installer and the systemd units on a fresh Debian 12 machine, as a user would run them.

Phases (each timed; the durations and the total are printed at the end):
  bootstrap    debootstrap a minimal bookworm tree (systemd, dbus) in a directory of its own under the
               build tree, with the host's apt settings that matter (Check-Valid-Until and the like)
  copy         the source tree (git's files, tracked and new, never build directories) to /opt/lbd-src
  boot         systemd-nspawn --boot: systemd is PID 1 inside, the host's network is shared; commands
               run in it through nsenter into its mount, UTS, IPC and PID namespaces
  cloud        on the host: moto_server on 127.0.0.1 with signature checking, an IAM user's key, the
               loopback VPC 127.0.0.0/16 and subnet 127.0.1.0/24, and a registered image
  install-web  installer/installer.sh --non-interactive --role web, inside the machine
  agent        the boot agent (tests/helpers/agent.py) with the host build's lbd: it starts a relay on
               127.0.1.x:[pool] port for every running instance, towards the UPSTREAM in its user data
  install-lb   installer/installer.sh --non-interactive --role lb, lbd's EC2 endpoint being moto; the
               agent follows [pool] port if lbd.conf names another than 80
  start        systemctl start webd lbd
  check        through lbd on 127.0.0.1: /healthcheck, register, login, a task created and read back;
               both units active (running) with their STATUS= text (lbd's saying 3/3 healthy); three
               running instances in moto, launched by lbd from the image with the web host as UPSTREAM
               in their user data, each with a relay the agent started
  teardown     always: the machine powered off (or its nspawn and init ended by pid), the agent and
               moto ended by pid, the tree removed; the logs are kept when the test failed

Exit status: 0 passed, 1 failed, 77 skipped (not root, or debootstrap / systemd-nspawn / nsenter /
moto_server / boto3 missing, unless CI=true, where that is a failure).

Nothing leaves 127.0.0.0/8 but apt and debootstrap's traffic to the Debian mirror
(FRESH_MACHINE_MIRROR, default http://deb.debian.org/debian). Every wait is bounded, and the whole run
stays inside FRESH_MACHINE_BUDGET seconds (default 1250) plus the teardown. FRESH_MACHINE_SEED=DIR
copies a tree bootstrapped earlier (and never booted) instead of running debootstrap, for iterating on
this test; the suite never sets it.
"""

import base64
import configparser
import contextlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "control"))

SKIP = 77
MIRROR = os.environ.get("FRESH_MACHINE_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
SRC_DIR = "/opt/lbd-src"
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_BACKEND_PORT = 80  # [pool] port when the installer is not told otherwise


class Failure(Exception):
    """A check failed; the message says which and what was seen."""


class Interrupted(BaseException):
    """SIGTERM (meson's timeout): unwinds through the teardown."""


def log(msg=""):
    print(msg, flush=True)


class Clock:
    """The run's budget and its phases' durations."""

    def __init__(self, budget):
        self.start = time.monotonic()
        self.deadline = self.start + budget
        self.phases = []

    def left(self, want):
        """<want> seconds, or what remains of the budget if less."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 1:
            raise Failure("the run's time budget is spent")
        return min(want, remaining)

    @contextlib.contextmanager
    def phase(self, name):
        t0 = time.monotonic()
        log(f"==== {name}")
        result = "failed"
        try:
            yield
            result = "ok"
        finally:
            took = time.monotonic() - t0
            self.phases.append((name, took, result))
            log(f"==== {name}: {result} in {took:.1f} s")

    def report(self):
        log("==== phase durations")
        for name, took, result in self.phases:
            log(f"  {name:<12} {took:7.1f} s  {result}")
        log(f"  {'total':<12} {time.monotonic() - self.start:7.1f} s")


def wait_for(fn, timeout, what, interval=0.5):
    """Polls fn() until it returns something true, for at most <timeout> seconds; returns that value."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = fn()
            if value:
                return value
        except Failure:
            raise
        except Exception as e:  # noqa: BLE001 - kept for the message
            last = e
        if time.monotonic() >= deadline:
            extra = f" (last error: {last!r})" if last else ""
            raise Failure(f"timed out after {timeout:.0f} s waiting for {what}{extra}")
        time.sleep(interval)


def run_logged(cmd, log_path, timeout, what):
    """Runs a host command with its output in <log_path>; on failure, raises with the log's tail."""
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            rc = None
    if rc != 0:
        tail = Path(log_path).read_text(errors="replace")[-4000:]
        state = "timed out" if rc is None else f"exited with {rc}"
        raise Failure(f"{what} {state}; its output ends with:\n{tail}")


# ---------------------------------------------------------------------------------------------------

class Machine:
    """A Debian tree booted with systemd-nspawn: created, run in and removed by this object only."""

    def __init__(self, workdir, name):
        self.workdir = Path(workdir)
        self.root = self.workdir / "root"
        self.name = name
        self.console_log = self.workdir / "console.log"
        self.nspawn = None
        self.init_pid = None

    # -- the tree

    def bootstrap(self, timeout):
        seed = os.environ.get("FRESH_MACHINE_SEED")
        if seed:
            # A tree bootstrapped earlier and never booted, copied as is: for iterating on this test.
            log(f"copying the seed tree {seed}")
            run_logged(["cp", "-a", "--", seed, str(self.root)], self.workdir / "debootstrap.log", timeout,
                       "copying the seed tree")
            return self._check_tree()
        cmd = ["debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,dbus", SUITE,
               str(self.root), MIRROR]
        log("$ " + " ".join(cmd))
        run_logged(cmd, self.workdir / "debootstrap.log", timeout, "debootstrap")
        self._check_tree()

    def _check_tree(self):
        if not (self.root / "usr" / "lib" / "systemd" / "systemd").exists():
            raise Failure("debootstrap finished but the tree has no systemd")

    def configure_apt(self):
        """The host's apt settings that make apt work here, and its sources when it is the same release.

        apt.conf.d files are copied unless they run hooks (those name host programs); source lists only
        when the host is bookworm too and every keyring they name exists in the tree."""
        host_apt = Path("/etc/apt")
        apt = self.root / "etc" / "apt"
        confs = [host_apt / "apt.conf"] + sorted((host_apt / "apt.conf.d").glob("*"))
        for conf in confs:
            if not conf.is_file():
                continue
            text = conf.read_text(errors="replace")
            if "Invoke" in text:
                continue
            dest = apt / conf.relative_to(host_apt)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(conf, dest)
            log(f"apt: copied {conf}")

        codename = ""
        with contextlib.suppress(OSError):
            m = re.search(r"^VERSION_CODENAME=(\S+)", Path("/etc/os-release").read_text(), re.M)
            codename = m.group(1).strip('"') if m else ""
        if codename != SUITE:
            log(f"apt: the host is {codename or 'not Debian'}, keeping debootstrap's sources")
            return
        copied = []
        lists = [host_apt / "sources.list"] + sorted((host_apt / "sources.list.d").glob("*"))
        for src in lists:
            if not src.is_file() or src.suffix not in (".list", ".sources"):
                continue
            text = src.read_text(errors="replace")
            keyrings = re.findall(r"(?:Signed-By:\s*|signed-by=)(/\S+?)(?:\]|\s|$)", text)
            if any(not (self.root / k.lstrip("/")).exists() for k in keyrings):
                log(f"apt: not copying {src}: it names a keyring the tree lacks")
                continue
            if not re.search(r"^\s*(deb|Types:)", text, re.M):
                continue
            dest = apt / src.relative_to(host_apt)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
            copied.append(dest)
            log(f"apt: copied {src}")
        own = apt / "sources.list"
        if copied and own not in copied and own.exists():
            own.unlink()

    def copy_source(self, repo):
        """The project's files (tracked and new, as git lists them; else the tree without build dirs)."""
        dest = self.root / SRC_DIR.lstrip("/")
        files = None
        if shutil.which("git") and (repo / ".git").exists():
            res = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others",
                                  "--exclude-standard"], capture_output=True, timeout=60, check=False)
            if res.returncode == 0:
                files = sorted({f for f in res.stdout.decode().split("\0") if f})
        if files is None:
            files = []
            for dirpath, dirnames, filenames in os.walk(repo):
                rel = Path(dirpath).relative_to(repo)
                dirnames[:] = [d for d in dirnames
                               if not (rel == Path(".") and (d.startswith("build") or d == ".git"))
                               and d != "__pycache__"]
                files.extend(str(rel / f) for f in filenames)
        n = 0
        for rel in files:
            if rel.split("/", 1)[0].startswith("build"):
                continue
            src = repo / rel
            if not (src.is_file() or src.is_symlink()):
                continue
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                os.symlink(os.readlink(src), target)
            else:
                shutil.copy2(src, target)
            n += 1
        log(f"copied {n} files to {SRC_DIR}")
        if not (dest / "meson.build").is_file():
            raise Failure(f"the source copy in {SRC_DIR} has no meson.build")

    # -- running it

    def boot(self, timeout):
        cmd = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", f"--machine={self.name}",
               "-D", str(self.root), "--resolv-conf=copy-host", "--console=read-only", "--boot"]
        log("$ " + " ".join(cmd))
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")}
        with open(self.console_log, "ab") as out:
            # In the test's process group: if the test itself is killed, nspawn gets the signal too, and
            # on SIGTERM it shuts the machine down.
            self.nspawn = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env)
        self.init_pid = wait_for(self._find_init, min(timeout, 60), "the machine's systemd to start",
                                 interval=0.2)
        log(f"nspawn pid {self.nspawn.pid}, the machine's systemd pid {self.init_pid}")

        seen = []

        def running():
            # Before dbus and systemd's private socket are up, systemctl can't connect: keep waiting.
            state = self.run(["systemctl", "is-system-running"], timeout=20, check=False, quiet=True)[1].strip()
            if not seen or seen[-1] != state:
                seen.append(state)
            if state in ("running", "degraded"):
                return state
            if state in ("maintenance", "stopping"):
                raise Failure(f"the machine's systemd says {state!r}")
            return None

        try:
            state = wait_for(running, timeout, "systemctl is-system-running to say running or degraded")
        finally:
            log("is-system-running said: " + " -> ".join(repr(s) for s in seen))
        log(f"the machine is {state}")
        if state == "degraded":
            self.run(["systemctl", "--failed", "--no-pager"], timeout=20, check=False)

    def _find_init(self):
        """The pid of the machine's systemd: the child of our nspawn that runs /lib/systemd/systemd."""
        if self.nspawn.poll() is not None:
            tail = self.console_log.read_text(errors="replace")[-3000:]
            raise Failure(f"systemd-nspawn exited with {self.nspawn.returncode}:\n{tail}")
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                comm = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.nspawn.pid and comm == "systemd":
                return int(entry)
        return None

    def run(self, args, timeout, check=True, quiet=False, prefix=None, env=None):
        """Runs <args> inside the machine with a clean environment; returns (exit status, output).

        The command is bounded inside by timeout(1) and on the host by a margin over it. With <prefix>,
        each output line is printed as it arrives; else the output is printed at the end unless quiet."""
        if self.init_pid is None:
            raise Failure("the machine is not running")
        limit = max(1, int(timeout))
        env_args = [f"PATH={CONTAINER_PATH}", "HOME=/root", "LANG=C.UTF-8", "TERM=dumb"]
        env_args += [f"{k}={v}" for k, v in (env or {}).items()]
        # nsenter leaves the working directory where it was on the host, which is outside the machine's
        # root: the command starts from the machine's / instead.
        cmd = ["nsenter", f"--target={self.init_pid}", "--mount", "--uts", "--ipc", "--pid", "--",
               "env", "-i", *env_args, "/bin/sh", "-c", 'cd / && exec "$@"', "sh",
               "timeout", "--kill-after=10", str(limit), *args]
        if not quiet:
            log("# " + " ".join(args))
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines = []

        def reader():
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                lines.append(line)
                if prefix is not None:
                    log(f"{prefix}{line}")

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            rc = proc.wait(limit + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            rc = None
        t.join(10)
        out = "\n".join(lines)
        if prefix is None and not quiet and out:
            log(out)
        if rc == 124:
            rc = None
        if check and rc != 0:
            state = "timed out" if rc is None else f"exited with {rc}"
            tail = "" if prefix is not None else ":\n" + out[-4000:]
            raise Failure(f"{' '.join(args)} {state} in the machine{tail}")
        return rc, out

    def read(self, path):
        """A file of the machine's persistent tree (not /run or /tmp, which live in its namespaces)."""
        return (self.root / path.lstrip("/")).read_text(errors="replace")

    def stop(self):
        """Powers the machine off; escalates to SIGTERM on our nspawn, then SIGKILL on it and its init."""
        if self.nspawn is None or self.nspawn.poll() is not None:
            return
        if self.init_pid is not None:
            with contextlib.suppress(Exception):
                self.run(["systemctl", "poweroff", "--no-block"], timeout=10, check=False, quiet=True)
        for sig, wait in ((None, 45), (signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            if sig is not None:
                log(f"the machine did not stop: sending {sig.name} to nspawn {self.nspawn.pid}")
                with contextlib.suppress(ProcessLookupError):
                    self.nspawn.send_signal(sig)
                if sig == signal.SIGKILL and self.init_pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.init_pid, signal.SIGKILL)
            try:
                self.nspawn.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.wait_init_gone(20)

    def wait_init_gone(self, timeout):
        if self.init_pid is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and Path(f"/proc/{self.init_pid}").exists():
            time.sleep(0.2)

    def remove(self):
        """Removes the tree, never crossing into another file system (a mount left behind)."""
        if self.nspawn is not None and self.nspawn.poll() is None:
            log(f"not removing {self.root}: the machine still runs")
            return False
        if self.root.exists():
            res = subprocess.run(["rm", "-rf", "--one-file-system", "--", str(self.root)],
                                 capture_output=True, timeout=300, check=False)
            if res.returncode != 0:
                log(f"removing {self.root} failed: {res.stderr.decode(errors='replace')[-1000:]}")
                return False
        return True


# ---------------------------------------------------------------------------------------------------

class Api:
    """HTTP/1.1 to <host>:<port>, one connection per request."""

    def __init__(self, port, host="127.0.0.1"):
        self.port = port
        self.host = host

    def request(self, method, path, body=None, token=None, timeout=10):
        headers = {"Connection": "close"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read(1 << 20)
            return resp.status, raw, dict(resp.getheaders())
        finally:
            conn.close()

    def json(self, method, path, want, body=None, token=None):
        status, raw, headers = self.request(method, path, body=body, token=token)
        if status != want:
            raise Failure(f"{method} {path} through lbd: {status} (wanted {want}): {raw[:500]!r}")
        try:
            doc = json.loads(raw) if raw else None
        except ValueError as e:
            raise Failure(f"{method} {path}: not JSON: {raw[:300]!r}") from e
        log(f"{method} {path} -> {status} (X-Request-Id {headers.get('X-Request-Id', '-')})")
        return doc


def read_ini(text):
    ini = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), comment_prefixes=(";", "#"),
                                    strict=False, interpolation=None)
    ini.read_string(text)
    return ini


def unit_props(machine, unit):
    _, out = machine.run(["systemctl", "show", "--no-pager", "-p", "ActiveState,SubState,StatusText,MainPID",
                          unit], timeout=20, quiet=True)
    props = {}
    for line in out.splitlines():
        k, _, v = line.partition("=")
        props[k] = v
    return props


# ---------------------------------------------------------------------------------------------------

class Run:
    def __init__(self, clock, workdir, lbd_path, moto_path):
        import ec2env  # the control tests' harness: moto with signature checking, the agent
        self.ec2env = ec2env
        self.clock = clock
        self.workdir = Path(workdir)
        self.lbd_path = lbd_path
        self.moto_path = moto_path
        self.machine = Machine(self.workdir, f"lbd-fresh-{os.getpid()}")
        self.moto = None
        self.agent = None
        self.image = None
        self.backend_port = DEFAULT_BACKEND_PORT
        self.tag = "lbd:pool=main"
        self.web_port = ec2env.free_port()
        self.lb_port = ec2env.free_port()
        self.admin_port = ec2env.free_port()
        while len({self.web_port, self.lb_port, self.admin_port}) < 3:
            self.lb_port, self.admin_port = ec2env.free_port(), ec2env.free_port()

    def main(self):
        c = self.clock
        with c.phase("bootstrap"):
            self.machine.bootstrap(c.left(420))
            self.machine.configure_apt()
        with c.phase("copy"):
            self.machine.copy_source(REPO)
        with c.phase("boot"):
            self.machine.boot(c.left(120))
        with c.phase("cloud"):
            self.start_cloud()
        with c.phase("install-web"):
            self.install("web")
        # The agent runs before lbd's first launch (the installer starts lbd.service itself).
        with c.phase("agent"):
            self.start_agent(DEFAULT_BACKEND_PORT)
        with c.phase("install-lb"):
            self.install("lb")
            self.check_pool_port()
        with c.phase("start"):
            self.machine.run(["systemctl", "start", "webd", "lbd"], timeout=c.left(120))
        with c.phase("check"):
            self.check()

    def start_cloud(self):
        # Held before its constructor runs: if the IAM or VPC setup fails, the teardown still ends the server.
        self.moto = self.ec2env.Moto.__new__(self.ec2env.Moto)
        self.moto.proc = None
        self.moto.__init__(self.workdir, self.moto_path, auth=True)
        ec2 = self.moto.ec2
        try:
            self.image = ec2.register_image(Name="lbd-backend", Description="lbd relay backend",
                                            Architecture="x86_64", RootDeviceName="/dev/sda1",
                                            VirtualizationType="hvm")["ImageId"]
        except Exception as e:  # noqa: BLE001 - moto builds without RegisterImage use a stock id
            log(f"RegisterImage failed ({e!r}); using {self.ec2env.IMAGE}")
            self.image = self.ec2env.IMAGE
        log(f"moto on {self.moto.endpoint}: key {self.moto.key_id}, VPC {self.moto.vpc_id} 127.0.0.0/16, "
            f"subnet {self.moto.subnet_id} 127.0.1.0/24, image {self.image}")

    def install(self, role):
        cmd = ["/bin/sh", f"{SRC_DIR}/installer/installer.sh", "--non-interactive", "--role", role]
        if role == "web":
            cmd += ["--listen", f"127.0.0.1:{self.web_port}"]
        else:
            # The secret from a file, as the README recommends: never on a command line.
            secret_file = self.machine.root / "root" / "aws-secret"
            secret_file.parent.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.moto.secret + "\n")
            cmd += ["--listen", f"127.0.0.1:{self.lb_port}", "--admin", f"127.0.0.1:{self.admin_port}",
                    "--endpoint", self.moto.endpoint, "--region", self.ec2env.REGION,
                    "--access-key-id", self.moto.key_id, "--secret-access-key-file", "/root/aws-secret",
                    "--subnet", self.moto.subnet_id, "--image", self.image, "--networks", "127.0.0.0/8",
                    "--upstream", f"127.0.0.1:{self.web_port}", "--no-provision"]
        script = self.machine.root / SRC_DIR.lstrip("/") / "installer" / "installer.sh"
        if not script.is_file():
            raise Failure("installer/installer.sh is not in the source tree")
        if "bash" in script.read_text(errors="replace").split("\n", 1)[0]:
            cmd[0] = "/bin/bash"
        t0 = time.monotonic()
        rc, _ = self.machine.run(cmd, timeout=self.clock.left(900 if role == "web" else 600), check=False,
                                 prefix=f"[installer {role}] ", env={"DEBIAN_FRONTEND": "noninteractive"})
        log(f"installer --role {role}: exit {rc} after {time.monotonic() - t0:.1f} s")
        (self.machine.root / "root" / "aws-secret").unlink(missing_ok=True)
        if rc != 0:
            state = "timed out" if rc is None else f"exited with {rc}"
            shown = " ".join(cmd).replace(self.moto.secret, "<secret>")
            raise Failure(f"installer --role {role} {state}: {shown}")

    def start_agent(self, port):
        if self.agent is not None:
            self.agent.stop()
        self.backend_port = port
        self.agent = self.ec2env.Agent(self.workdir, self.moto, self.lbd_path, port)
        log(f"agent on 127.0.0.1:{self.agent.port}: relays on 127.0.1.x:{port} with {self.lbd_path}")

    def check_pool_port(self):
        conf = read_ini(self.machine.read("/etc/lbd/lbd.conf"))
        port = conf.getint("pool", "port", fallback=DEFAULT_BACKEND_PORT)
        self.tag = conf.get("ec2", "tag", fallback="lbd:pool=main")
        log(f"lbd.conf: provider {conf.get('pool', 'provider', fallback='?')}, [pool] port {port}, tag {self.tag}")
        if port != self.backend_port:
            log(f"the backends' port is {port}, not {self.backend_port}: restarting the agent")
            self.start_agent(port)

    def pool_instances(self, states):
        key, _, value = self.tag.partition("=")
        filters = [{"Name": "instance-state-name", "Values": states},
                   {"Name": "subnet-id", "Values": [self.moto.subnet_id]},
                   {"Name": f"tag:{key}", "Values": [value]}]
        out = []
        for res in self.moto.ec2.describe_instances(Filters=filters)["Reservations"]:
            out.extend(res["Instances"])
        return out

    def check(self):
        m = self.machine
        c = self.clock
        wait_for(lambda: unit_props(m, "webd.service").get("SubState") == "running", c.left(60),
                 "webd.service to be running")

        def three_serving():
            running = self.pool_instances(["running"])
            if len(running) != 3 or len(self.pool_instances(self.ec2env.LIVE_STATES)) != 3:
                return None
            ready = set(self.agent.ready_relays())
            ids = sorted(i["InstanceId"] for i in running)
            return ids if set(ids) <= ready else None

        ids = wait_for(three_serving, c.left(180), "3 running pool instances, each with a relay the agent started",
                       interval=1.0)
        state = self.agent.state()["instances"]
        for iid in ids:
            inst = next(i for i in self.pool_instances(["running"]) if i["InstanceId"] == iid)
            relay = state.get(iid, {}).get("relay") or {}
            user_data = self.moto.user_data(iid)
            if f"UPSTREAM=127.0.0.1:{self.web_port}" not in user_data:
                raise Failure(f"{iid}'s user data does not carry UPSTREAM=127.0.0.1:{self.web_port}:\n{user_data}")
            if inst.get("ImageId") != self.image:
                raise Failure(f"{iid} runs image {inst.get('ImageId')}, not {self.image}")
            log(f"instance {iid} {inst['PrivateIpAddress']} image {inst['ImageId']}: relay pid {relay.get('pid')} "
                f"on {relay.get('addr')} -> {relay.get('upstream')}")

        api = Api(self.lb_port)
        wait_for(lambda: api.request("GET", "/healthcheck")[0] == 200, c.left(120),
                 f"GET /healthcheck through lbd on 127.0.0.1:{self.lb_port} to answer 200")
        log(f"GET /healthcheck through lbd on 127.0.0.1:{self.lb_port} -> 200")

        user = f"fresh{os.getpid()}"
        password = base64.urlsafe_b64encode(os.urandom(12)).decode()
        api.json("POST", "/auth/register", 201, body={"username": user, "password": password})
        login = api.json("POST", "/auth/login", 200, body={"username": user, "password": password})
        token = login.get("token") if isinstance(login, dict) else None
        if not token:
            raise Failure(f"login gave no token: {login!r}")
        title = "installed on a fresh machine"
        task = api.json("POST", "/tasks", 201, body={"title": title, "description": "through lbd"}, token=token)
        if not isinstance(task, dict) or "id" not in task:
            raise Failure(f"POST /tasks gave {task!r}")
        back = api.json("GET", f"/tasks/{task['id']}", 200, token=token)
        if back.get("title") != title or back.get("description") != "through lbd":
            raise Failure(f"GET /tasks/{task['id']} gave {back!r}")
        listed = api.json("GET", "/tasks", 200, token=token)
        log(f"task {task['id']} read back; GET /tasks: {json.dumps(listed)[:300]}")

        def lbd_all_healthy():
            p = unit_props(m, "lbd.service")
            return p if re.search(r"\b3/3\b", p.get("StatusText", "")) else None

        wait_for(lbd_all_healthy, c.left(60), "lbd's STATUS= to say 3/3 backends healthy")
        m.run(["systemctl", "status", "--no-pager", "--lines=5", "webd", "lbd"], timeout=20, check=False)
        for unit in ("webd.service", "lbd.service"):
            p = unit_props(m, unit)
            log(f"{unit}: ActiveState={p.get('ActiveState')} SubState={p.get('SubState')} "
                f"MainPID={p.get('MainPID')} StatusText={p.get('StatusText')!r}")
            if (p.get("ActiveState"), p.get("SubState")) != ("active", "running"):
                raise Failure(f"{unit} is {p.get('ActiveState')} ({p.get('SubState')}), not active (running)")
            if not p.get("StatusText"):
                raise Failure(f"{unit} has sent no STATUS= text")
        launched = self.pool_instances(self.ec2env.LIVE_STATES + ["terminated"])
        log(f"moto: {len(launched)} pool instances ever launched, "
            f"{len(self.pool_instances(['running']))} running")

    def diagnose(self):
        """What the failure looked like from every side, for the test log."""
        m = self.machine
        if m.init_pid is not None and m.nspawn is not None and m.nspawn.poll() is None:
            with contextlib.suppress(Exception):
                m.run(["systemctl", "--failed", "--no-pager"], timeout=20, check=False)
                m.run(["systemctl", "status", "--no-pager", "--lines=0", "webd", "lbd"], timeout=20, check=False)
                m.run(["journalctl", "--no-pager", "-n", "150", "-u", "webd", "-u", "lbd", "-u", "postgresql*"],
                      timeout=30, check=False)
        if self.agent is not None:
            with contextlib.suppress(Exception):
                events = self.agent.state()["events"][-30:]
                log("---- agent events (last 30)\n" + "\n".join(json.dumps(e) for e in events))
        if self.moto is not None:
            with contextlib.suppress(Exception):
                insts = self.moto.instances(self.ec2env.LIVE_STATES + ["terminated"], tagged=False)
                log("---- moto instances: " + ", ".join(
                    f"{i['InstanceId']} {i['State']['Name']} {i.get('PrivateIpAddress')}" for i in insts))

    def teardown(self):
        with self.clock.phase("teardown"):
            errors = []
            for what, fn in (("machine", self.machine.stop), ("agent", lambda: self.agent and self.agent.stop()),
                             ("moto", lambda: self.moto and self.moto.stop()), ("tree", self.machine.remove)):
                t0 = time.monotonic()
                try:
                    if fn() is False:
                        errors.append(f"{what}: not done")
                except Exception as e:  # noqa: BLE001 - the rest of the teardown still runs
                    errors.append(f"{what}: {e!r}")
                log(f"teardown: {what} in {time.monotonic() - t0:.1f} s")
            for e in errors:
                log(f"teardown: {e}")
        return not self.machine.root.exists()


# ---------------------------------------------------------------------------------------------------

def find_moto():
    moto = os.environ.get("MOTO_SERVER") or shutil.which("moto_server")
    for candidate in (Path.home() / ".pyenv" / "shims" / "moto_server", Path("/usr/local/bin/moto_server")):
        if not moto and candidate.is_file():
            moto = str(candidate)
    return moto


def prerequisites():
    """None when the test can run, else why not."""
    if os.geteuid() != 0:
        return "not root (debootstrap and systemd-nspawn need it)"
    for tool in ("debootstrap", "systemd-nspawn", "nsenter"):
        if not shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin"):
            return f"{tool} not found (Debian: debootstrap, systemd-container, util-linux)"
    lbd = os.environ.get("LBD_BINARY") or str(REPO / "build" / "lbd" / "lbd")
    if not os.access(lbd, os.X_OK):
        return f"lbd not found at {lbd}: set LBD_BINARY"
    if not find_moto():
        return "moto_server not found (PATH, ~/.pyenv/shims, MOTO_SERVER)"
    for module in ("boto3", "pytest"):  # pytest: tests/control/ec2env.py imports it
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed for this python (Debian: python3-{module})"
    return None


def run_phased(name, why_not, budget, parent, make):
    """Runs a phased test and returns its exit status: 77 when <why_not> says why it cannot run (a failure
    when CI=true); else <make>(clock, workdir) builds the run, an object with main(), diagnose() and
    teardown(), which returns True when nothing it made is left. The run gets <budget> seconds; SIGTERM
    (meson's timeout) and SIGINT unwind through the teardown. The work directory, in <parent>, is removed
    when the run passed and left nothing, else kept for its logs."""
    if why_not:
        if os.environ.get("CI") == "true":
            log(f"{name}: FAIL: {why_not}")
            return 1
        log(f"{name}: skipped: {why_not}")
        return SKIP
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"

    def interrupted(signum, _frame):
        raise Interrupted(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)

    clock = Clock(budget)
    parent = parent or tempfile.gettempdir()
    Path(parent).mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
    log(f"{name}: work directory {workdir}")
    run = None
    ok = False
    try:
        run = make(clock, workdir)
        run.main()
        ok = True
    except (Failure, Interrupted, Exception) as e:  # noqa: BLE001 - every failure is reported, then torn down
        kind = "interrupted" if isinstance(e, Interrupted) else "FAIL"
        log(f"{name}: {kind}: {e if isinstance(e, (Failure, Interrupted)) else repr(e)}")
        if not isinstance(e, (Failure, Interrupted)):
            import traceback
            traceback.print_exc(file=sys.stdout)
        if run is not None:
            with contextlib.suppress(Exception):
                run.diagnose()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        clean = run.teardown() if run is not None else False
        if ok and clean:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"{name}: logs kept in {workdir}")
        clock.report()
    log(f"{name}: {'passed' if ok else 'failed'}")
    return 0 if ok else 1


def main():
    lbd = os.environ.get("LBD_BINARY") or str(REPO / "build" / "lbd" / "lbd")
    # meson's timeout is 1500 s: the phases get the budget, the teardown at most about 200 s more.
    return run_phased("fresh-machine", prerequisites(), float(os.environ.get("FRESH_MACHINE_BUDGET", "1250")),
                      os.environ.get("FRESH_MACHINE_WORKDIR"),
                      lambda clock, workdir: Run(clock, workdir, lbd, find_moto()))


if __name__ == "__main__":
    sys.exit(main())

"""Harness for lbd's control-plane tests against moto_server.

One Ec2Env holds a test's world, all on 127.0.0.1:
  - moto_server with SigV4 checking on (INITIAL_NO_AUTH_ACTION_COUNT=3: those three
    calls create the IAM user, its policy and its access key; everything after is
    signed and verified), a VPC 127.0.0.0/16 and the test's own subnet 127.0.N.0/24
    (testnet.py: N from the test's slot), so every instance gets a loopback address
    that no other test running at the same time uses;
  - the upstream "web host" (tests/helpers/backend.py) the relays forward to;
  - the fault proxy (tests/helpers/faultproxy.py) in front of moto: lbd's EC2 endpoint,
    where its calls are counted and faults injected;
  - the test agent (tests/helpers/agent.py), which boots instances into relays;
  - lbd itself (provider ec2), its stderr captured line by line with arrival times;
  - a bounded request loop through lbd.
Every port is one of the test's own (testnet.py). Every process started here is tracked
and ended by this harness, by its own handle.
Every wait is bounded. Nothing is ever sent outside 127.0.0.0/8: lbd's config sets
[pool] networks = 127.0.0.0/8, its endpoint is the proxy, and its environment carries
no AWS variables but the ones set here (the metadata service is off unless a test
points it at the proxy).
"""

import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HELPERS = REPO / "tests" / "helpers"
sys.path.insert(0, str(HELPERS))

import testnet  # noqa: E402  (tests/helpers/testnet.py: this test's ports and subnets)
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
TAG_KEY, TAG_VALUE = "lbd:pool", "main"
LIVE_STATES = ["pending", "running", "stopping", "stopped", "shutting-down"]
REGION = "us-east-1"
IMAGE = "ami-12345678"

USER_DATA_TEMPLATE = """#!/bin/sh
# Turns a fresh instance into one of lbd's backends: lbd in relay mode towards the web host.
exec /usr/local/sbin/lbd --listen 0.0.0.0:{port} --backend {{{{upstream}}}} --admin off
"""


def lbd_binary():
    env = os.environ.get("LBD_BINARY")
    return Path(env) if env else REPO / "build" / "lbd" / "lbd"


def require_tools():
    lbd = lbd_binary()
    if not (lbd.is_file() and os.access(lbd, os.X_OK)):
        pytest.skip(f"lbd binary not found at {lbd}: set LBD_BINARY")
    # moto_server is on every machine of this project, often as a pyenv shim outside a minimal PATH.
    moto = os.environ.get("MOTO_SERVER") or shutil.which("moto_server")
    for candidate in (Path.home() / ".pyenv" / "shims" / "moto_server", Path("/usr/local/bin/moto_server")):
        if not moto and candidate.is_file():
            moto = str(candidate)
    # In CI a missing tool is a failure, not a skip: these tests must run there.
    missing = pytest.fail if os.environ.get("CI") == "true" else pytest.skip
    if not moto:
        missing("moto_server not found (PATH, ~/.pyenv/shims, MOTO_SERVER)")
    try:
        import boto3  # noqa: F401
    except ImportError:
        missing("boto3 is not installed for this python (Debian: python3-boto3)")
    return lbd, moto


free_port = testnet.free_port


def wait_until(fn, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = fn()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - kept for the message
            last = e
        if time.monotonic() >= deadline:
            extra = f" (last error: {last!r})" if last else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


def end_process(proc, timeout=5.0):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def start_ready(cmd, log_path, env=None, timeout=30.0, what="process"):
    """Starts cmd, waits for "ready" on its stdout."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, env=env)
    os.set_blocking(proc.stdout.fileno(), False)
    buf = b""
    deadline = time.monotonic() + timeout
    while b"ready" not in buf:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited: {Path(log_path).read_text(errors='replace')[-3000:]}")
        if time.monotonic() > deadline:
            end_process(proc)
            raise AssertionError(f"{what} not ready within {timeout}s")
        chunk = proc.stdout.read(256)
        if chunk:
            buf += chunk
        else:
            time.sleep(0.02)
    return proc


def http_json(method, url, timeout=5.0):
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


# ---------------------------------------------------------------------------------------------

class Moto:
    """moto_server on 127.0.0.1 with signature checking, an IAM user, the loopback VPC."""

    def __init__(self, workdir, moto_path, auth=True, subnets=1):
        import boto3
        self.boto3 = boto3
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(workdir) / "moto.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        if auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([moto_path, "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        wait_until(self._up, 60, "moto_server to listen", interval=0.2)
        self.auth = auth
        self._setup(subnets)

    def _up(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"moto_server exited: {self.log_path.read_text()[-2000:]}")
        with urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=2) as resp:
            return resp.status == 200

    def client(self, service, key=None, secret=None, token=None):
        return self.boto3.client(service, endpoint_url=self.endpoint, region_name=REGION,
                                 aws_access_key_id=key or self.key_id,
                                 aws_secret_access_key=secret or self.secret,
                                 aws_session_token=token)

    def _setup(self, subnets=1):
        # The three unauthenticated calls: user, policy, key.
        iam = self.boto3.client("iam", endpoint_url=self.endpoint, region_name=REGION,
                                aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="lbd")
        iam.put_user_policy(UserName="lbd", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="lbd")["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        # From here on every call is signed and checked.
        self.ec2 = self.client("ec2")
        self.vpc_id = self.ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
        # One subnet per zone, all on loopback and the test's own: testnet.subnet(0) in us-east-1a,
        # testnet.subnet(1) in us-east-1b, ...
        self.subnet_ids = [
            self.ec2.create_subnet(VpcId=self.vpc_id, CidrBlock=testnet.subnet(i),
                                   AvailabilityZone=f"{REGION}{'abcdef'[i]}")["Subnet"]["SubnetId"]
            for i in range(subnets)]
        self.subnet_id = self.subnet_ids[0]
        self.sg_id = self.ec2.create_security_group(GroupName="lbd-backends", Description="lbd backends",
                                                    VpcId=self.vpc_id)["GroupId"]

    def instances(self, states=None, tagged=True):
        """The pool's instances as EC2 reports them (boto3), in the given states."""
        filters = [{"Name": "instance-state-name", "Values": states or LIVE_STATES}]
        if tagged:
            filters.append({"Name": f"tag:{TAG_KEY}", "Values": [TAG_VALUE]})
        out = []
        for res in self.ec2.describe_instances(Filters=filters)["Reservations"]:
            out.extend(res["Instances"])
        return out

    def running_ids(self):
        return sorted(i["InstanceId"] for i in self.instances(["running"]))

    def user_data(self, iid):
        attr = self.ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        return base64.b64decode(attr["UserData"]["Value"]).decode()

    def stop(self):
        end_process(self.proc)


class FaultProxy:
    def __init__(self, workdir, moto, imds_credentials=None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [PYTHON, str(HELPERS / "faultproxy.py"), "--port", str(self.port),
               "--upstream-port", str(moto.port), "--max-seconds", "1200"]
        if imds_credentials:
            cmd += ["--imds-credentials", str(imds_credentials)]
        self.proc = start_ready(cmd, Path(workdir) / "faultproxy.log", what="fault proxy")

    def fault(self, mode, seconds=10, actions=None, subnet=None):
        q = f"mode={mode}&seconds={seconds}"
        if actions:
            q += "&actions=" + ",".join(actions)
        if subnet:
            q += f"&subnet={subnet}"
        with urllib.request.urlopen(urllib.request.Request(f"{self.url}/_fault?{q}", method="POST", data=b""),
                                    timeout=5) as resp:
            assert resp.status == 200

    def stats(self):
        return http_json("GET", f"{self.url}/_stats")

    def requests(self, since=0.0, action=None):
        return [r for r in self.stats()["requests"]
                if r["t"] >= since and (action is None or r.get("action") == action)]

    def stop(self):
        end_process(self.proc)


class Agent:
    def __init__(self, workdir, moto, lbd_path, backend_port, boot_delay=0.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(workdir) / "agent-events.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=moto.key_id, AWS_SECRET_ACCESS_KEY=moto.secret,
                   AWS_EC2_METADATA_DISABLED="true")
        cmd = [PYTHON, str(HELPERS / "agent.py"), "--endpoint", moto.endpoint, "--region", REGION,
               "--subnet", ",".join(moto.subnet_ids), "--port", str(backend_port), "--lbd", str(lbd_path),
               "--control-port", str(self.port), "--workdir", str(workdir), "--log", str(self.log),
               "--boot-delay", str(boot_delay), "--max-seconds", "1200"]
        self.proc = start_ready(cmd, Path(workdir) / "agent.log", env=env, what="agent")

    def state(self):
        return http_json("GET", f"{self.url}/state")

    def kill(self, iid):
        return http_json("POST", f"{self.url}/kill?id={iid}")

    def revive(self, iid):
        return http_json("POST", f"{self.url}/revive?id={iid}")

    def ready_relays(self):
        """Instance ids whose relay is alive and accepting connections."""
        return sorted(iid for iid, s in self.state()["instances"].items()
                      if s["relay"] and s["relay"]["alive"] and s["relay"]["ready"])

    def stop(self):
        end_process(self.proc, timeout=15)


class Upstream:
    """The web host the relays forward to: tests/helpers/backend.py."""

    def __init__(self, workdir):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.proc = start_ready([PYTHON, str(HELPERS / "backend.py"), "--listen", self.addr, "--name", "web"],
                                Path(workdir) / "upstream.log", what="upstream")

    def stop(self):
        end_process(self.proc)


class Lbd:
    """lbd with the ec2 provider; stderr kept as (arrival time, line)."""

    def __init__(self, workdir, lbd_path, env_extra, config_text, name="lbd"):
        self.workdir = Path(workdir)
        self.path = lbd_path
        self.config_path = self.workdir / f"{name}.conf"
        self.config_path.write_text(config_text)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith("AWS_") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
                    and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        self.env.update(env_extra)
        self.name = name
        self.lines = []
        self.lock = threading.Lock()
        self.proc = None
        self.runs = 0

    def command(self):
        """lbd's command line. LBD_TEST_THREADS=N (scripts/test.sh --threads N) adds [lbd] threads = N,
        unless the config says how many itself or has a TLS listener (more than one loop refuses it yet)."""
        cmd = [str(self.path), "--config", str(self.config_path)]
        threads = os.environ.get("LBD_TEST_THREADS")
        text = self.config_path.read_text()
        if threads and not re.search(r"(?m)^\s*threads\s*=|^\s*\[tls\]", text):
            cmd += ["--set", f"lbd.threads={threads}"]
        return cmd

    def start(self):
        self.runs += 1
        self.log_path = self.workdir / f"{self.name}.{self.runs}.stderr"
        self.proc = subprocess.Popen(self.command(),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, env=self.env)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        return self

    def _read(self, proc):
        with open(self.log_path, "a", encoding="utf-8") as out:
            for raw in proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                now = time.time()
                out.write(f"{now:.3f} {line}\n")
                out.flush()
                with self.lock:
                    self.lines.append((now, line))

    def log(self, since=0.0):
        with self.lock:
            return [(t, l) for t, l in self.lines if t >= since]

    def log_text(self, since=0.0):
        return "\n".join(l for _, l in self.log(since))

    def find(self, pattern, since=0.0):
        rx = re.compile(pattern)
        return [(t, l) for t, l in self.log(since) if rx.search(l)]

    def wait_log(self, pattern, timeout, since=0.0):
        return wait_until(lambda: self.find(pattern, since), timeout, f"lbd log line /{pattern}/")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def kill9(self):
        self.proc.kill()
        self.proc.wait(5)

    def stop(self):
        end_process(self.proc, timeout=40)


class RequestLoop:
    """GET requests through lbd, one connection each, until stopped; bounded in count and time.
    <path> is the path asked for, with {n} replaced by the request's number."""

    def __init__(self, port, interval=0.02, max_requests=200_000, max_seconds=900, path="/loop/{n}",
                 host="127.0.0.1"):
        self.port = port
        self.host = host
        self.path = path
        self.interval = interval
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.ok = 0
        self.failures = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        deadline = time.monotonic() + self.max_seconds
        n = 0
        while not self.stop_event.is_set() and n < self.max_requests and time.monotonic() < deadline:
            n += 1
            t = time.time()
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                conn.request("GET", self.path.format(n=n), headers={"Connection": "close"})
                resp = conn.getresponse()
                body = resp.read()
                conn.close()
                if resp.status == 200:
                    self.ok += 1
                else:
                    self.failures.append((t, f"HTTP {resp.status}: {body[:200]!r}"))
            except (OSError, http.client.HTTPException) as e:
                self.failures.append((t, repr(e)))
            self.stop_event.wait(self.interval)

    def stop(self):
        self.stop_event.set()
        self.thread.join(20)


class ServingMonitor:
    """Samples lbd's /status every 0.1 s until stopped (bounded in time): the fewest backends in rotation
    it saw."""

    def __init__(self, env, max_seconds=300):
        self.env = env
        self.min = None
        self.samples = 0
        self.stop_event = threading.Event()
        self.deadline = time.monotonic() + max_seconds
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            try:
                n = sum(1 for b in self.env.status()["backends"] if b["in_rotation"])
                self.min = n if self.min is None else min(self.min, n)
                self.samples += 1
            except OSError:
                pass
            self.stop_event.wait(0.1)

    def stop(self):
        self.stop_event.set()
        self.thread.join(10)


# ---------------------------------------------------------------------------------------------

def lbd_config(env, desired=3, poll="1s", grace="15s", extra_pool="", extra_ec2="", health=None, region=REGION,
               subnets=None):
    health = health or {"interval": "200ms", "timeout": "500ms", "rise": "2", "fall": "2"}
    health_lines = "\n".join(f"{k} = {v}" for k, v in health.items())
    return f"""[lbd]
listen = 127.0.0.1:{env.lbd_port}
admin = 127.0.0.1:{env.admin_port}
access_log = off

[health]
path = /healthcheck
{health_lines}

[pool]
provider = ec2
desired = {desired}
port = {env.backend_port}
networks = 127.0.0.0/8
grace = {grace}
poll = {poll}
max_replacements = 10
replacement_window = 5m
{extra_pool}

[ec2]
endpoint = {env.proxy.url}
{f"region = {region}" if region else ""}
image = {IMAGE}
instance_type = t3.micro
{f"subnets = {', '.join(subnets)}" if subnets else f"subnet = {env.moto.subnet_id}"}
security_groups = {env.moto.sg_id}
user_data = {env.user_data_path}
upstream = {env.upstream.addr}
tag = {TAG_KEY}={TAG_VALUE}
{extra_ec2}
"""


class Ec2Env:
    def __init__(self, workdir, moto_auth=True, imds_credentials=None, boot_delay=0.0, subnets=1):
        self.workdir = Path(workdir)
        self.lbd_path, moto_path = require_tools()
        self.procs = []
        self.lbds = []
        self.loops = []
        try:
            self.moto = Moto(workdir, moto_path, auth=moto_auth, subnets=subnets)
            self.procs.append(self.moto)
            self.upstream = Upstream(workdir)
            self.procs.append(self.upstream)
            self.proxy = FaultProxy(workdir, self.moto, imds_credentials)
            self.procs.append(self.proxy)
            self.backend_port = free_port()
            self.lbd_port = free_port()
            self.admin_port = free_port()
            self.user_data_path = self.workdir / "user-data.sh"
            self.user_data_path.write_text(USER_DATA_TEMPLATE.format(port=self.backend_port))
            self.agent = Agent(workdir, self.moto, self.lbd_path, self.backend_port, boot_delay=boot_delay)
            self.procs.append(self.agent)
        except BaseException:
            self.cleanup()
            raise

    def lbd(self, config_text=None, env=None, start=True, **kw):
        """lbd with the moto user's key in its environment (or <env> instead)."""
        if env is None:
            env = {"AWS_ACCESS_KEY_ID": self.moto.key_id, "AWS_SECRET_ACCESS_KEY": self.moto.secret,
                   "AWS_EC2_METADATA_DISABLED": "true"}
        inst = Lbd(self.workdir, self.lbd_path, env, config_text or lbd_config(self, **kw),
                   name=f"lbd{len(self.lbds)}")
        self.lbds.append(inst)
        return inst.start() if start else inst

    def status(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/status", timeout=5) as resp:
            return json.loads(resp.read())

    def healthy(self):
        return self.status().get("healthy", 0)

    def request_loop(self, **kw):
        loop = RequestLoop(self.lbd_port, **kw)
        self.loops.append(loop)
        return loop

    def wait_steady(self, n, timeout=60):
        """n running pool instances in EC2, each with a ready relay, and n healthy backends in lbd."""
        def steady():
            running = self.moto.running_ids()
            if len(running) != n or len(self.moto.instances()) != n:
                return False
            ready = set(self.agent.ready_relays())
            return set(running) <= ready and self.healthy() == n and running
        return wait_until(steady, timeout, f"{n} running instances serving through lbd", interval=0.25)

    def report(self):
        parts = []
        for inst in self.lbds:
            parts.append(f"--- {inst.name} log (last 80 lines)\n" + "\n".join(
                f"{t:.3f} {l}" for t, l in inst.log()[-80:]))
        try:
            parts.append("--- agent events (last 30)\n" + "\n".join(
                json.dumps(e) for e in self.agent.state()["events"][-30:]))
        except Exception as e:  # noqa: BLE001
            parts.append(f"--- agent state unavailable: {e!r}")
        return "\n".join(parts)

    def cleanup(self):
        for loop in self.loops:
            loop.stop()
        for inst in self.lbds:
            inst.stop()
        for p in reversed(self.procs):
            p.stop()

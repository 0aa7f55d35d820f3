#!/usr/bin/python3
"""Test agent: plays the part of instance boot for lbd's control-plane tests.

moto_server only records instances; nothing runs on them. This agent watches moto
(DescribeInstances through boto3, polled every --poll seconds) and, for each instance
that is "running" in the watched subnets, starts what the instance's user data would
start on a real machine: lbd in relay mode, listening on the instance's private
address (127.0.N.x, this machine's loopback) and [pool] port, relaying to the upstream
named in the user data ("--backend ADDR" or "UPSTREAM=ADDR"), over TLS verified against the CA
certificate and name the user data carries (UPSTREAM_CA='PEM' and UPSTREAM_NAME='NAME', as
scripts/cloud-init-backend.sh writes them into the relay's [tls]); with the relay's own
certificate and key in the user data (RELAY_TLS_CERT='PEM', RELAY_TLS_KEY='PEM'), the relay
listens with TLS ("ADDR:PORT tls", [tls] certificate; the key written 0600 in --workdir).
When the instance leaves
"running" (stopping, stopped, shutting-down, terminated, gone), the relay is stopped
(SIGTERM, then SIGKILL after 5 s). A relay that dies on its own is not restarted: on a
real machine the backend would simply be broken, which is what lbd must notice.

Safety: only addresses inside 127.0.0.0/8 are ever used; an instance with any other
address is ignored (and reported). The agent ends only the relays it started, by pid,
and exits by itself after --max-seconds, or on SIGTERM.

Control (HTTP on 127.0.0.1:--control-port):
  GET  /state         JSON: every instance seen and its relay (pid, address, upstream,
                      started, ready: wall-clock times), and the event log
  POST /kill?id=I     SIGKILL instance I's relay, leaving the instance "running" in moto
  POST /revive?id=I   start a relay again for instance I after a /kill, as systemd's Restart=
                      would on the instance
Prints "ready" on stdout once the control port listens.
"""

import argparse
import base64
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
from botocore.config import Config

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
UPSTREAM_RE = re.compile(r"(?:--backend[ =]|UPSTREAM=)(\S+)")
UPSTREAM_CA_RE = re.compile(r"^UPSTREAM_CA='([^']*)'", re.M)
UPSTREAM_NAME_RE = re.compile(r"^UPSTREAM_NAME='([^']*)'", re.M)
RELAY_TLS_CERT_RE = re.compile(r"^RELAY_TLS_CERT='([^']*)'", re.M)
RELAY_TLS_KEY_RE = re.compile(r"^RELAY_TLS_KEY='([^']*)'", re.M)


class Relay:
    def __init__(self, proc, addr, upstream, started):
        self.proc = proc
        self.addr = addr
        self.upstream = upstream
        self.started = started
        self.ready = None
        self.killed = False
        self.stopping_since = None


class Agent:
    def __init__(self, args):
        self.args = args
        self.lock = threading.RLock()
        self.stop = threading.Event()
        self.instances = {}  # id -> {"state", "ip", "upstream", "first_seen", "running_seen"}
        self.relays = {}  # id -> Relay
        self.broken = set()  # ids whose relay was killed on command or died: never restarted
        self.events = []
        self.user_data = {}
        self.tls = {}  # id -> (CA file, name) of a relay that verifies the web host
        self.listen_tls = {}  # id -> (certificate file, key file) of a relay that listens with TLS
        self.ec2 = boto3.client(
            "ec2", endpoint_url=args.endpoint, region_name=args.region,
            config=Config(retries={"max_attempts": 2, "mode": "standard"},
                          connect_timeout=5, read_timeout=10))
        self.log_file = open(args.log, "a", encoding="utf-8") if args.log else None

    def event(self, what, **kw):
        entry = {"t": time.time(), "what": what, **kw}
        with self.lock:
            if len(self.events) < 10000:
                self.events.append(entry)
        if self.log_file:
            self.log_file.write(json.dumps(entry) + "\n")
            self.log_file.flush()

    def upstream_of(self, iid):
        if iid in self.user_data:
            return self.user_data[iid]
        attr = self.ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        raw = attr.get("UserData", {}).get("Value")
        upstream = None
        if raw:
            text = base64.b64decode(raw).decode("utf-8", "replace")
            m = UPSTREAM_RE.search(text)
            if m:
                upstream = m.group(1)
            ca, name = UPSTREAM_CA_RE.search(text), UPSTREAM_NAME_RE.search(text)
            if ca and ca.group(1):
                path = os.path.join(self.args.workdir, f"upstream-ca-{iid}.pem")
                with open(path, "w", encoding="ascii") as f:
                    f.write(ca.group(1) + "\n")
                self.tls[iid] = (path, name.group(1) if name else "")
            cert, key = RELAY_TLS_CERT_RE.search(text), RELAY_TLS_KEY_RE.search(text)
            if cert and cert.group(1) and key and key.group(1):
                paths = []
                for kind, pem in (("pem", cert.group(1)), ("key", key.group(1))):
                    path = os.path.join(self.args.workdir, f"relay-tls-{iid}.{kind}")
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "w", encoding="ascii") as f:
                        f.write(pem + "\n")
                    paths.append(path)
                self.listen_tls[iid] = tuple(paths)
        self.user_data[iid] = upstream
        return upstream

    def list_instances(self):
        filters = [{"Name": "subnet-id", "Values": self.args.subnet.split(",")}]
        seen = {}
        token = None
        for _ in range(20):
            kw = {"Filters": filters, "MaxResults": 100}
            if token:
                kw["NextToken"] = token
            resp = self.ec2.describe_instances(**kw)
            for res in resp.get("Reservations", []):
                for inst in res.get("Instances", []):
                    seen[inst["InstanceId"]] = (inst["State"]["Name"], inst.get("PrivateIpAddress"))
            token = resp.get("NextToken")
            if not token:
                break
        return seen

    def start_relay(self, iid, ip, upstream):
        addr = f"{ip}:{self.args.port}"
        listen = f"{addr} tls" if iid in self.listen_tls else addr
        cmd = [self.args.lbd, "--listen", listen, "--backend", upstream, "--admin", "off",
               "--access-log", "off", "--set", "health.interval=200ms", "--set", "health.timeout=500ms"]
        if iid in self.tls:
            ca, name = self.tls[iid]
            cmd += ["--set", "tls.backend=on", "--set", f"tls.backend_ca={ca}"]
            if name:
                cmd += ["--set", f"tls.backend_name={name}"]
        if iid in self.listen_tls:
            cert, key = self.listen_tls[iid]
            cmd += ["--set", f"tls.certificate={cert} {key}"]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AWS_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        out = open(os.path.join(self.args.workdir, f"relay-{iid}.log"), "ab")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                start_new_session=True)
        out.close()
        relay = Relay(proc, addr, upstream, time.time())
        self.relays[iid] = relay
        self.event("relay-start", id=iid, addr=addr, upstream=upstream, pid=proc.pid, tls=iid in self.tls,
                   listen_tls=iid in self.listen_tls)

    def check_ready(self, iid, relay):
        if relay.ready or relay.proc.poll() is not None:
            return
        host, port = relay.addr.rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=0.2):
                relay.ready = time.time()
                self.event("relay-ready", id=iid, addr=relay.addr, boot_s=relay.ready - relay.started)
        except OSError:
            pass

    def stop_relay(self, iid, reason):
        relay = self.relays.get(iid)
        if not relay:
            return
        if relay.proc.poll() is None:
            if relay.stopping_since is None:
                relay.stopping_since = time.monotonic()
                relay.proc.send_signal(signal.SIGTERM)
                self.event("relay-stop", id=iid, addr=relay.addr, reason=reason)
                return
            if time.monotonic() - relay.stopping_since < 5.0:
                return
            relay.proc.kill()
            relay.proc.wait(timeout=5)
        del self.relays[iid]

    def kill_relay(self, iid):
        with self.lock:
            relay = self.relays.get(iid)
            if not relay or relay.proc.poll() is not None:
                return False
            relay.killed = True
            self.broken.add(iid)
            relay.proc.kill()
            relay.proc.wait(timeout=5)
        self.event("relay-killed", id=iid, addr=relay.addr)
        return True

    def revive_relay(self, iid):
        """Starts a relay again for an instance whose relay was killed (POST /kill), as systemd's
        Restart= would on the instance."""
        with self.lock:
            info = self.instances.get(iid, {})
            relay = self.relays.get(iid)
            if info.get("state") != "running" or not relay or relay.proc.poll() is None:
                return False
            del self.relays[iid]
            self.broken.discard(iid)
            self.start_relay(iid, relay.addr.rsplit(":", 1)[0], relay.upstream)
        return True

    def step(self):
        seen = self.list_instances()
        with self.lock:
            now = time.time()
            for iid, (state, ip) in seen.items():
                info = self.instances.setdefault(iid, {"first_seen": now})
                if info.get("state") != state:
                    self.event("instance-state", id=iid, state=state, ip=ip)
                info["state"], info["ip"] = state, ip
                if state == "running" and "running_seen" not in info:
                    info["running_seen"] = now
            for iid in list(self.instances):
                if iid not in seen and self.instances[iid].get("state") != "gone":
                    self.instances[iid]["state"] = "gone"
                    self.event("instance-state", id=iid, state="gone")

            for iid, info in self.instances.items():
                relay = self.relays.get(iid)
                if info["state"] != "running":
                    if relay:
                        self.stop_relay(iid, info["state"])
                    continue
                if relay:
                    if relay.proc.poll() is not None and not relay.killed and iid not in self.broken:
                        self.broken.add(iid)
                        self.event("relay-died", id=iid, addr=relay.addr, code=relay.proc.returncode)
                    self.check_ready(iid, relay)
                    continue
                if iid in self.broken:
                    continue
                ip = info.get("ip")
                try:
                    ok = ip and ipaddress.ip_address(ip) in LOOPBACK
                except ValueError:
                    ok = False
                if not ok:
                    if not info.get("refused"):
                        info["refused"] = True
                        self.event("refused-address", id=iid, ip=ip)
                    continue
                if now - info["running_seen"] < self.args.boot_delay:
                    continue
                upstream = self.upstream_of(iid)
                if not upstream:
                    if not info.get("no-upstream"):
                        info["no-upstream"] = True
                        self.event("no-upstream", id=iid)
                    continue
                self.start_relay(iid, ip, upstream)

    def run(self):
        deadline = time.monotonic() + self.args.max_seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                self.step()
            except Exception as e:  # noqa: BLE001 - a flaky poll must not end the agent
                self.event("poll-error", error=repr(e))
            self.stop.wait(self.args.poll)
        self.shutdown()

    def shutdown(self):
        with self.lock:
            for relay in self.relays.values():
                if relay.proc.poll() is None:
                    relay.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            for relay in self.relays.values():
                try:
                    relay.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    relay.proc.kill()
                    relay.proc.wait(timeout=5)
            self.relays.clear()

    def state(self):
        with self.lock:
            out = {}
            for iid, info in self.instances.items():
                relay = self.relays.get(iid)
                out[iid] = {
                    "state": info.get("state"), "ip": info.get("ip"),
                    "running_seen": info.get("running_seen"),
                    "broken": iid in self.broken,
                    "relay": None if not relay else {
                        "pid": relay.proc.pid, "alive": relay.proc.poll() is None,
                        "addr": relay.addr, "upstream": relay.upstream,
                        "started": relay.started, "ready": relay.ready},
                }
            return {"instances": out, "events": list(self.events), "now": time.time()}


class Control(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _send(self, status, body, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/state":
            self._send(200, json.dumps(self.server.agent.state()).encode())
        else:
            self._send(404, b"{}")

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 65536))
        if url.path == "/kill" and "id" in q:
            ok = self.server.agent.kill_relay(q["id"][0])
            self._send(200 if ok else 404, json.dumps({"killed": ok}).encode())
        elif url.path == "/revive" and "id" in q:
            ok = self.server.agent.revive_relay(q["id"][0])
            self._send(200 if ok else 404, json.dumps({"revived": ok}).encode())
        else:
            self._send(404, b"{}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", required=True, help="moto_server URL (http://127.0.0.1:PORT)")
    ap.add_argument("--region", default="us-east-1")
    ap.add_argument("--subnet", required=True, help="the watched subnet id, or several comma-separated")
    ap.add_argument("--port", type=int, required=True, help="the backends' port ([pool] port)")
    ap.add_argument("--lbd", required=True)
    ap.add_argument("--control-port", type=int, required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--log")
    ap.add_argument("--poll", type=float, default=0.3)
    ap.add_argument("--boot-delay", type=float, default=0.0,
                    help="seconds between 'running' and starting the relay (a boot)")
    ap.add_argument("--max-seconds", type=float, default=900.0)
    args = ap.parse_args()
    if not args.endpoint.startswith(("http://127.", "http://[::1]")):
        print("agent: the endpoint must be on loopback", file=sys.stderr)
        return 2

    agent = Agent(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.control_port), Control)
    server.daemon_threads = True
    server.agent = agent
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()

    def stop(*_):
        agent.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    try:
        agent.run()
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

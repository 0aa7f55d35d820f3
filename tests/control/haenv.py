"""Harness for the tests of two lbd hosts on one pool ([lease]): test_ha_*.py.

On top of an Ec2Env (ec2env.py: moto with signature checking, the fault proxy, the agent, the upstream):
  - a PostgreSQL cluster started for the test (tests/webd/webdtest.py's PgCluster), holding the lease;
  - two LB hosts, each an instance of its own in moto (tagged lbd:role=lb, not the pool's tag) in the
    environment's subnet, so each host's address is the loopback address moto gave its instance: lbd
    listens there, and the Elastic IP can be associated with it;
  - an Elastic IP allocated in moto for the pool;
  - a TCP fault proxy (PgFault) a host may reach the database through, to cut it off alone.
Every address comes from the environment (moto's instance addresses, free ports on 127.0.0.1). Every
process and thread started here is ended by cleanup(); every wait and every loop is bounded.
"""

import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import json
from pathlib import Path

import ec2env

sys.path.insert(0, str(ec2env.REPO / "tests" / "webd"))
import webdtest  # noqa: E402

LEASE = {"duration": 6.0, "renew": 1.5, "margin": 2.0, "timeout": 1.5}


class PgFault:
    """A TCP forwarder on 127.0.0.1 in front of PostgreSQL. cut(True) stops every byte both ways (the
    connections stay open, as behind a dead network) and leaves new connections unanswered; cut(False)
    forwards again. Bounded: at most 32 connections, and it ends by itself after max_seconds."""

    def __init__(self, upstream_port, max_seconds=600):
        self.upstream_port = upstream_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.blocked = threading.Event()
        self.stop_event = threading.Event()
        self.deadline = time.monotonic() + max_seconds
        self.conns = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def cut(self, on):
        if on:
            self.blocked.set()
        else:
            self.blocked.clear()

    def _live(self):
        return not self.stop_event.is_set() and time.monotonic() < self.deadline

    def _accept(self):
        self.sock.settimeout(0.2)
        while self._live():
            try:
                client, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                if len(self.conns) >= 32:
                    client.close()
                    continue
                self.conns.append(client)
            threading.Thread(target=self._pump, args=(client,), daemon=True).start()

    def _pump(self, client):
        server = None
        try:
            while self.blocked.is_set() and self._live():
                time.sleep(0.05)
            server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            with self.lock:
                self.conns.append(server)
            pair = {client: server, server: client}
            while self._live():
                if self.blocked.is_set():
                    time.sleep(0.05)
                    continue
                ready, _, _ = select.select(list(pair), [], [], 0.1)
                if self.blocked.is_set():
                    continue  # cut while waiting: what arrived meanwhile waits too
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    pair[s].sendall(data)
        except OSError:
            return
        finally:
            for s in (client, server):
                if s:
                    s.close()

    def stop(self):
        self.stop_event.set()
        self.sock.close()
        with self.lock:
            for s in self.conns:
                try:
                    s.close()
                except OSError:
                    pass
        self.thread.join(5)


class Host:
    """One LB host: its instance in moto, its address, its lbd."""

    def __init__(self, ha, name, instance_id, ip, admin_port, lbd):
        self.ha, self.name, self.instance_id, self.ip, self.admin_port, self.lbd = (
            ha, name, instance_id, ip, admin_port, lbd)

    def status(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/status", timeout=5) as resp:
            return json.loads(resp.read())

    def lease(self):
        try:
            return self.status().get("lease") or {}
        except OSError:
            return {}

    def leads(self):
        return bool(self.lease().get("leader"))

    def metrics(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def lbctl_status(self):
        """`lbctl status` against this host's admin API: its output."""
        binary = os.environ.get("LBCTL_BINARY") or str(ec2env.REPO / "build" / "lbctl" / "lbctl")
        out = subprocess.run([binary, "--admin", f"127.0.0.1:{self.admin_port}", "status"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout


class HaEnv:
    def __init__(self, env, lease=None, desired=2, grace="3s"):
        self.env = env
        self.lease = dict(LEASE, **(lease or {}))
        self.desired = desired
        self.grace = grace
        self.hosts = []
        self.faults = []
        self.peer_ports = {}  # host name -> its [lease] listen port on 127.0.0.1; see with_peers()
        self.pg = webdtest.PgCluster(dbname="lbd", user="lbd")
        try:
            self.conninfo = Path(env.workdir) / "lease.conninfo"
            self.conninfo.write_text(self.pg.conninfo() + "\n")
            self.conninfo.chmod(0o600)
            self.allocation_id = env.moto.ec2.allocate_address(Domain="vpc")["AllocationId"]
        except BaseException:
            self.pg.cleanup()
            raise

    def _instance(self, name):
        resp = self.env.moto.ec2.run_instances(
            ImageId=ec2env.IMAGE, InstanceType="t3.micro", MinCount=1, MaxCount=1,
            SubnetId=self.env.moto.subnet_id,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": "lbd:role", "Value": "lb"}, {"Key": "Name", "Value": name}]}])
        inst = resp["Instances"][0]
        return inst["InstanceId"], inst["PrivateIpAddress"]

    def with_peers(self, names=("lb-a", "lb-b")):
        """Each host named answers GET /lease on 127.0.0.1 ([lease] listen) and asks the others ([lease]
        peers)."""
        self.peer_ports = {n: ec2env.free_port() for n in names}

    def config(self, name, ip, admin_port, instance_id, conninfo=None):
        text = ec2env.lbd_config(self.env, desired=self.desired, grace=self.grace)
        text = re.sub(r"(?m)^listen = .*$", f"listen = {ip}:{self.env.lbd_port}", text)
        text = re.sub(r"(?m)^admin = .*$", f"admin = 127.0.0.1:{admin_port}", text)
        lease = self.lease
        return text + f"""
[lease]
conninfo_file = {conninfo or self.conninfo}
name = {name}
duration = {lease['duration']}s
renew = {lease['renew']}s
margin = {lease['margin']}s
timeout = {lease['timeout']}s
elastic_ip = {self.allocation_id}
instance_id = {instance_id}
""" + self._peers_config(name)

    def _peers_config(self, name):
        if name not in self.peer_ports:
            return ""
        others = ", ".join(f"127.0.0.1:{p}" for n, p in self.peer_ports.items() if n != name)
        return f"listen = 127.0.0.1:{self.peer_ports[name]}\npeers = {others}\n"

    def host(self, name, through_fault=False, start=True):
        """A new LB host; <through_fault>: it reaches PostgreSQL through a PgFault of its own."""
        instance_id, ip = self._instance(name)
        admin_port = ec2env.free_port()
        conninfo = None
        fault = None
        if through_fault:
            fault = PgFault(self.pg.port)
            self.faults.append(fault)
            conninfo = Path(self.env.workdir) / f"lease-{name}.conninfo"
            conninfo.write_text(self.pg.conninfo().replace(f"port={self.pg.port}", f"port={fault.port}") + "\n")
        lbd = self.env.lbd(config_text=self.config(name, ip, admin_port, instance_id, conninfo), start=start)
        host = Host(self, name, instance_id, ip, admin_port, lbd)
        host.fault = fault
        self.hosts.append(host)
        return host

    def two_hosts(self, a_through_fault=False):
        """lb-a leading, then lb-b following, and the pool at desired: the start of every test."""
        a = self.host("lb-a", through_fault=a_through_fault)
        self.wait_leader(a)
        b = self.host("lb-b")
        ec2env.wait_until(lambda: b.lease().get("holder") == "lb-a", 30, "lb-b to see lb-a lead")
        self.wait_pool(self.desired)
        return a, b

    def eip_instance(self):
        addrs = self.env.moto.ec2.describe_addresses(AllocationIds=[self.allocation_id])["Addresses"]
        return addrs[0].get("InstanceId") if addrs else None

    def wait_leader(self, host, timeout=30):
        return ec2env.wait_until(host.leads, timeout, f"{host.name} to lead", interval=0.05)

    def wait_pool(self, n, timeout=90):
        """n running pool instances, each with a ready relay, healthy in every running host."""
        def steady():
            running = self.env.moto.running_ids()
            if len(running) != n or len(self.env.moto.instances()) != n:
                return False
            if not set(running) <= set(self.env.agent.ready_relays()):
                return False
            return all(h.status()["healthy"] == n for h in self.hosts if h.lbd.alive())
        return ec2env.wait_until(steady, timeout, f"{n} running instances serving through every host",
                                 interval=0.25)

    def lines(self, pattern):
        """(time, host name, match) of every line matching <pattern> in every host's log, by time."""
        rx = re.compile(pattern)
        out = []
        for h in self.hosts:
            for t, line in h.lbd.log():
                m = rx.search(line)
                if m:
                    out.append((t, h.name, m))
        return sorted(out, key=lambda x: x[0])

    def launched_ids(self):
        ids = []
        for _, _, m in self.lines(r"Launched \d+ instances? .*: (i-\S.*)$"):
            ids.extend(m.group(1).split())
        return ids

    def terminated_ids(self):
        return [m.group(1) for _, _, m in self.lines(r"Terminated instance (i-[0-9a-f]+)")]

    def leaders_by_epoch(self):
        """{epoch: set of host names that took the lease in it} from the hosts' own logs."""
        out = {}
        for _, name, m in self.lines(r"This host \((\S+)\) leads pool \S+ in epoch (\d+)"):
            out.setdefault(int(m.group(2)), set()).add(name)
        return out

    def launch_epochs(self):
        """{epoch: set of host names that launched in it}."""
        out = {}
        for _, name, m in self.lines(r"Launching \d+ instances? .*\(ClientToken lbd-e(\d+)-"):
            out.setdefault(int(m.group(1)), set()).add(name)
        return out

    def all_pool_instances(self):
        """Every instance ever launched into the pool (any state), as moto reports them."""
        out = []
        resp = self.env.moto.ec2.describe_instances(
            Filters=[{"Name": f"tag:{ec2env.TAG_KEY}", "Values": [ec2env.TAG_VALUE]}])
        for res in resp["Reservations"]:
            out.extend(res["Instances"])
        return out

    def assert_each_once(self):
        """No instance reported launched or terminated twice; every instance ever launched into the pool
        carries the epoch of a launch decision made in that epoch (by its one leader), and no epoch has
        more instances than its launches asked for. (An instance may exist that no host reported launched:
        its leader was killed or paused with the call in flight; it was still launched once.)"""
        launched, terminated = self.launched_ids(), self.terminated_ids()
        assert len(launched) == len(set(launched)), f"an instance reported launched twice: {launched}"
        assert len(terminated) == len(set(terminated)), f"an instance terminated twice: {terminated}"
        asked = {}
        for _, _, m in self.lines(r"Launching (\d+) instances? .*\(ClientToken lbd-e(\d+)-"):
            asked[int(m.group(2))] = asked.get(int(m.group(2)), 0) + int(m.group(1))
        ever = {}
        for inst in self.all_pool_instances():
            tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
            ever[inst["InstanceId"]] = int(tags.get("lbd:epoch", "0"))
        assert set(launched) <= set(ever), f"moto has {sorted(ever)}, the hosts launched {sorted(launched)}"
        per_epoch = {}
        for iid, epoch in ever.items():
            assert epoch in asked, f"{iid} carries epoch {epoch}, in which nobody launched ({asked})"
            per_epoch[epoch] = per_epoch.get(epoch, 0) + 1
        for epoch, n in per_epoch.items():
            assert n <= asked[epoch], f"epoch {epoch}: {n} instances for {asked[epoch]} asked"

    def all_pool_instances_by_id(self):
        return {i["InstanceId"]: i for i in self.all_pool_instances()}

    def report(self):
        parts = []
        try:
            parts.append("--- lease row: " + repr(self.pg.sql("SELECT pool, holder, epoch, expires_at FROM lbd_lease")))
        except Exception as e:  # noqa: BLE001
            parts.append(f"--- lease row unavailable: {e!r}")
        return "\n".join(parts)

    def cleanup(self):
        for f in self.faults:
            f.stop()
        self.pg.cleanup()

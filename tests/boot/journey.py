#!/usr/bin/python3
"""The whole journey in booted machines: every instance lbd launches boots its image with systemd-nspawn and
runs its user data through cloud-init (tests/control/bootworld.py), against moto with signature checking.

Phases (each timed; the durations and the figures are printed at the end):
  image      the Debian 12 base image tree (tests/boot/mkimage.sh: debootstrap, cloud-init for NoCloud),
             made once and cached in the build tree (BOOT_IMAGE_DIR)
  cloud      moto_server on 127.0.0.1, the loopback VPC and the journey's own subnet (LBD_TEST_SLOT,
             tests/helpers/testnet.py), the base image registered and mapped to
             the tree; the boot world watching the subnet; the project's source as a .tar.gz served on
             127.0.0.1 (LBD_SOURCE_URL of both user-data scripts)
  provision  `lbctl provision` as the installer runs it: the three security groups and the web host, which
             boots scripts/cloud-init-web.sh (PostgreSQL on localhost, webd built from the source)
  source     lbd on this host (desired 1, the base image, a pool of its own): its backend boots
             scripts/cloud-init-backend.sh, which finds no lbd in the image, fetches the source and runs
             installer.sh --role backend with packages from the Debian mirror; boot-to-healthy of the source
             path is measured (issue 11, 3). Meanwhile the LB host, an instance of its own (lbd:role=lb)
             booted from the base image, gets the source and runs installer.sh --role lb, as the README
             tells a user, with desired 0 while there is no image yet: packages, build, lbd.service
  bake       `lbctl provision --bake-from` that backend: CreateImage, which the world turns into a new image
             holding the machine's tree
  pool       installer.sh --role lb run again on the LB host with the baked image and desired 3: lbd.service
             launches three backends that boot with lbd inside; [pool] grace cut to 20 s with `systemctl
             reload`, as a user of a baked image would; boot-to-healthy of the baked path is measured; a
             client registers, logs in, creates and reads a task through the LB host (1)
  kill       under a bounded request loop of GET /healthcheck, a backend's machine is killed from outside
             (EC2 still says running): lbd replaces it and the new machine serves; no request of the loop
             fails; kill-to-serving is split into detection, API and boot (2)
  restart    the LB host reboots (systemctl reboot inside): lbd.service comes back by itself, adopts the
             three instances and launches none (5)
  failing    a second pool whose backends relay to a closed port: they never become healthy, lbd replaces
             them after their grace period, and the storm guard stops the replacements; the failure shows
             in `lbctl status`, in lbd's log and in the machine's journal (4)
  teardown   always: both lbds, every machine (powered off by name, killed after a bound), moto and the
             file server, each by its own pid

Exit status: 0 passed, 1 failed, 77 skipped (not root, or a tool missing, unless CI=true, where that is a
failure). Nothing leaves 127.0.0.0/8 but apt and debootstrap's traffic to the Debian mirror. Every wait is
bounded and the run stays inside BOOT_BUDGET seconds (default 1000) plus the teardown.
"""

import contextlib
import datetime
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "control"))
sys.path.insert(0, str(REPO / "tests" / "helpers"))
sys.path.insert(0, str(REPO / "tests" / "fresh-machine"))

from fresh_machine import Api, Failure, log, run_phased, wait_for  # noqa: E402

SKIP = 77
BACKEND_PORT = 80  # what scripts/cloud-init-backend.sh listens on
WEB_PORT = 8080  # what scripts/cloud-init-web.sh listens on
TAG = ("lbd:pool", "main")
BAD_TAG = ("lbd:pool", "bad")
SOURCE_TAG = ("lbd:pool", "source")  # the host lbd's pool that makes the instance to bake from
SRC = "/usr/local/src/lbd"
GRACE_BAKED = 20  # [pool] grace on the LB host once its image is baked, in seconds  # where the LB host keeps the source, as the user-data scripts do
HEALTH = "interval = 500ms\ntimeout = 1s\nrise = 2\nfall = 2"


def prerequisites():
    import bootworld
    why = bootworld.prerequisites()
    if why:
        return why
    for var, default in (("LBD_BINARY", REPO / "build" / "lbd" / "lbd"),
                         ("LBCTL_BINARY", REPO / "build" / "lbctl" / "lbctl")):
        if not os.access(os.environ.get(var) or default, os.X_OK):
            return f"{var} is not set and {default} is not there"
    moto = os.environ.get("MOTO_SERVER") or shutil.which("moto_server")
    for candidate in (Path.home() / ".pyenv" / "shims" / "moto_server", Path("/usr/local/bin/moto_server")):
        if not moto and candidate.is_file():
            moto = str(candidate)
    if not moto:
        return "moto_server not found (PATH, ~/.pyenv/shims, MOTO_SERVER)"
    os.environ["MOTO_SERVER"] = moto
    if shutil.which("git") is None:
        return "git not found (it lists the source files to serve)"
    return None


def source_files(repo):
    """The project's files as git lists them (tracked and new, never ignored), without build directories."""
    res = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, timeout=60, check=False)
    if res.returncode != 0:
        raise Failure(f"git ls-files failed: {res.stderr.decode(errors='replace')[-500:]}")
    return sorted(f for f in set(res.stdout.decode().split("\0"))
                  if f and not f.split("/", 1)[0].startswith("build") and (repo / f).is_file())


def make_tarball(repo, dest):
    with tarfile.open(dest, "w:gz", compresslevel=1) as tar:
        for rel in source_files(repo):
            tar.add(repo / rel, arcname=f"lbd-src/{rel}", recursive=False)
    return dest


def with_source_url(script, url, lb_networks=None):
    """<script> with its LBD_SOURCE_URL (and LBD_LB_NETWORKS) lines set, as installer.sh writes them."""
    text = script.read_text()
    text, n = re.subn(r"^LBD_SOURCE_URL=.*$", f"LBD_SOURCE_URL='{url}'", text, count=1, flags=re.M)
    if n != 1:
        raise Failure(f"{script} has no LBD_SOURCE_URL line")
    if lb_networks is not None:
        text = re.sub(r"^LBD_LB_NETWORKS=.*$", f"LBD_LB_NETWORKS='{lb_networks}'", text, count=1, flags=re.M)
    return text


def parse_kv(text):
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep and re.fullmatch(r"[A-Z_]+", k):
            out[k] = v
    return out


class MachineLbd:
    """lbd.service in a machine, read through its journal: the same find() and alive() as ec2env.Lbd."""

    name = "lbd.service"

    def __init__(self, machine):
        self.machine = machine

    def log(self, since=0.0):
        rc, out = self.machine.run(["journalctl", "-u", "lbd", "-o", "short-unix", "--no-pager", "-q",
                                    "--since", f"@{max(0, int(since) - 1)}"], timeout=20)
        lines = []
        for line in out.splitlines() if rc == 0 else []:
            stamp, _, rest = line.partition(" ")
            with contextlib.suppress(ValueError):
                t = float(stamp)
                if t >= since:
                    lines.append((t, rest.split(": ", 1)[-1]))
        return lines

    def log_text(self, since=0.0):
        return "\n".join(line for _, line in self.log(since))

    def find(self, pattern, since=0.0):
        rx = re.compile(pattern)
        return [(t, line) for t, line in self.log(since) if rx.search(line)]

    def alive(self):
        return self.machine.run(["systemctl", "is-active", "--quiet", "lbd"], timeout=20)[0] == 0


class Journey:
    def __init__(self, clock, workdir):
        import bootworld
        import ec2env
        import testnet
        self.bootworld = bootworld
        self.ec2env = ec2env
        self.testnet = testnet
        self.clock = clock
        self.workdir = Path(workdir)
        self.lbd_path = Path(os.environ.get("LBD_BINARY") or REPO / "build" / "lbd" / "lbd")
        self.lbctl_path = Path(os.environ.get("LBCTL_BINARY") or REPO / "build" / "lbctl" / "lbctl")
        self.image_dir = Path(os.environ.get("BOOT_IMAGE_DIR") or self.workdir / "image")
        self.moto = None
        self.world = None
        self.files = None
        self.lbds = []
        self.loops = []
        self.figures = []
        self.lb_host = None  # the LB host's Machine
        self.lb_thread = None
        self.lb_error = None
        self.source_port = ec2env.free_port()
        self.source_admin = f"127.0.0.1:{ec2env.free_port()}"
        self.bad_port = ec2env.free_port()
        self.bad_admin = f"127.0.0.1:{ec2env.free_port()}"
        self.dead_port = ec2env.free_port()  # nothing listens there: the failing pool's upstream

    # -- the phases

    def main(self):
        c = self.clock
        with c.phase("image"):
            self.make_image()
        with c.phase("cloud"):
            self.start_cloud()
        with c.phase("provision"):
            self.provision()
        with c.phase("source"):
            self.source_path()
        with c.phase("bake"):
            self.bake()
        with c.phase("pool"):
            self.pool()
        with c.phase("kill"):
            self.kill()
        with c.phase("restart"):
            self.restart()
        with c.phase("failing"):
            self.failing()

    def make_image(self):
        self.image_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = [str(HERE / "mkimage.sh"), str(self.image_dir)]
        log("$ " + " ".join(cmd))
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=self.clock.left(600),
                             check=False)
        log(res.stdout.decode(errors="replace").rstrip())
        if res.returncode != 0:
            raise Failure(f"mkimage.sh exited with {res.returncode}: {res.stderr.decode(errors='replace')[-3000:]}")

    def start_cloud(self):
        ec2env = self.ec2env
        # Held before its constructor runs: if the IAM or VPC setup fails, the teardown still ends it.
        self.moto = ec2env.Moto.__new__(ec2env.Moto)
        self.moto.proc = None
        self.moto.__init__(self.workdir, os.environ["MOTO_SERVER"], auth=True)
        ec2 = self.moto.ec2
        self.base_image = ec2.register_image(Name="debian-12-boot-world", Architecture="x86_64",
                                             RootDeviceName="/dev/sda1", VirtualizationType="hvm")["ImageId"]
        self.world = self.bootworld.BootWorld(self.workdir / "world", ec2, self.moto.subnet_id,
                                              max_seconds=self.clock.deadline - time.monotonic() + 60)
        self.world.add_image(self.base_image, self.image_dir)
        log(f"moto on {self.moto.endpoint}: VPC {self.moto.vpc_id} 127.0.0.0/16, subnet {self.moto.subnet_id} "
            f"{self.testnet.subnet()}, image {self.base_image} = {self.image_dir}")

        served = self.workdir / "served"
        served.mkdir()
        make_tarball(REPO, served / "lbd-src.tar.gz")
        port = ec2env.free_port()
        self.files = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(served), str(port)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(self.workdir / "files.log", "ab"))  # noqa: SIM115 - the child holds it
        self.source_url = f"http://127.0.0.1:{port}/lbd-src.tar.gz"
        wait_for(lambda: self.http_status(port, "/lbd-src.tar.gz", method="HEAD") == 200, 20,
                 "the source tarball to be served")
        size = (served / "lbd-src.tar.gz").stat().st_size
        log(f"source: {self.source_url} ({size} bytes)")

        self.backend_user_data = self.workdir / "backend-user-data.sh"
        self.backend_user_data.write_text(with_source_url(REPO / "scripts" / "cloud-init-backend.sh",
                                                          self.source_url))

    def provision(self):
        web_user_data = self.workdir / "web-user-data.sh"
        web_user_data.write_text(with_source_url(REPO / "scripts" / "cloud-init-web.sh", self.source_url,
                                                 lb_networks="127.0.0.0/8"))
        out = self.lbctl_provision("--image", self.base_image, "--web-user-data", str(web_user_data))
        self.groups = out["LBD_SECURITY_GROUP_BACKEND"]
        self.lb_group = out["LBD_SECURITY_GROUP_LB"]
        self.upstream = out["LBD_UPSTREAM"]
        self.web_instance = out["LBD_WEB_INSTANCE"]
        if not re.fullmatch(rf"{re.escape(self.testnet.subnet_prefix())}\d+:{WEB_PORT}", self.upstream):
            raise Failure(f"lbctl provision says the upstream is {self.upstream}")
        log(f"web host {self.web_instance} at {self.upstream}; backend group {self.groups}")

    def source_path(self):
        # A grace period longer than the source path takes: the instance builds lbd before it can serve.
        self.source_lbd = self.start_lbd("lbd-source", self.source_port, self.source_admin, self.base_image,
                                         desired=1, grace="900s", upstream=self.upstream, tag=SOURCE_TAG)
        self.start_lb_host()
        iid = wait_for(lambda: self.pool_ids(SOURCE_TAG, ["running"]), self.clock.left(60),
                       "lbd's first instance", interval=0.5)[0]
        self.source_instance = iid
        log(f"source path: {iid} booting; the web host {self.web_instance} builds webd meanwhile")
        host, port = self.upstream.rsplit(":", 1)
        wait_for(lambda: self.http_status(int(port), "/healthcheck", host=host) == 200, self.clock.left(900),
                 f"webd on the web host {self.upstream} to answer /healthcheck", interval=2)
        boot = self.world.find_events("boot", iid=self.web_instance)[0]["t"]
        log(f"web host serving {time.time() - boot:.1f} s after its machine started")
        up = self.wait_up(self.source_lbd, iid, self.clock.left(900))
        started = self.world.find_events("boot", iid=iid)[0]["t"]
        done = self.init_done(iid)
        self.figure("source path: boot to user data done", done - started)
        self.figure("source path: boot to healthy (after the web host)", up - started)
        self.show_init_log(iid)

    def bake(self):
        t0 = time.time()
        out = self.lbctl_provision("--image", self.base_image, "--web-user-data",
                                   str(self.workdir / "web-user-data.sh"), "--bake-from", self.source_instance)
        self.baked_image = out["LBD_IMAGE"]
        if self.baked_image == self.base_image:
            raise Failure("lbctl provision --bake-from reported the base image")
        if out["LBD_WEB_INSTANCE"] != self.web_instance:
            raise Failure(f"the second provision made another web host: {out['LBD_WEB_INSTANCE']}")
        wait_for(lambda: self.world.find_events("snapshot", iid=self.source_instance), self.clock.left(120),
                 "the world to snapshot the machine")
        log(f"baked {self.baked_image} from {self.source_instance} in {time.time() - t0:.1f} s")

    def pool(self):
        self.stop_lbd(self.source_lbd)
        self.lb_thread.join(self.clock.left(900))
        if self.lb_thread.is_alive():
            raise Failure("the LB host's installation did not finish in time")
        if self.lb_error:
            raise Failure(f"the LB host's installation failed: {self.lb_error}")
        t0 = time.time()
        self.install_lb(self.baked_image, 3)
        log(f"installer.sh --role lb again, with {self.baked_image} and desired 3: {time.time() - t0:.1f} s")
        # What a user of a baked image does: a grace period of seconds, not the default's two minutes for
        # instances that build lbd first; `systemctl reload` takes it.
        rc, out = self.lb_host.run(["sh", "-c", f"sed -i 's/^\\[pool\\]$/[pool]\\ngrace = {GRACE_BAKED}s/' "
                                   "/etc/lbd/lbd.conf && lbd --config /etc/lbd/lbd.conf --check-config && "
                                   "systemctl reload lbd"], timeout=60)
        if rc != 0:
            raise Failure(f"setting [pool] grace on the LB host failed: {out[-2000:]}")
        # The instance baked from is no backend of the LB's pool: it goes.
        self.moto.ec2.terminate_instances(InstanceIds=[self.source_instance])
        lbd = self.lb_lbd
        ids = self.wait_pool(lbd, self.lb_admin, TAG, 3, self.clock.left(240))
        for iid in ids:
            inst = self.instance(iid)
            if inst["ImageId"] != self.baked_image:
                raise Failure(f"{iid} runs {inst['ImageId']}, not the baked {self.baked_image}")
            up = self.up_time(lbd, iid)
            self.figure("boot-to-healthy, baked image", up - self.world.find_events("boot", iid=iid)[0]["t"])
        self.show_init_log(ids[0])
        rc, out = self.lb_host.run(["systemctl", "show", "-p", "ActiveState,SubState,UnitFileState,StatusText",
                                    "lbd"], timeout=20)
        log(f"the LB host's lbd.service: {' '.join(out.split())}")
        if "UnitFileState=enabled" not in out or "ActiveState=active" not in out:
            raise Failure(f"lbd.service on the LB host is not enabled and active: {out}")

        api = Api(self.lb_addr[1], host=self.lb_addr[0])
        user = f"boot{os.getpid()}"
        password = os.urandom(9).hex()
        api.json("POST", "/auth/register", 201, body={"username": user, "password": password})
        token = api.json("POST", "/auth/login", 200, body={"username": user, "password": password}).get("token")
        if not token:
            raise Failure("login gave no token")
        self.token = token
        task = api.json("POST", "/tasks", 201, body={"title": "booted", "description": "through lbd"}, token=token)
        back = api.json("GET", f"/tasks/{task['id']}", 200, token=token)
        if back.get("title") != "booted":
            raise Failure(f"GET /tasks/{task['id']} gave {back!r}")
        self.task_id = task["id"]

    # -- the LB host

    def start_lb_host(self):
        """Launches the LB host's instance and installs it on a thread, while the backend builds."""
        resp = self.moto.ec2.run_instances(
            ImageId=self.base_image, MinCount=1, MaxCount=1, InstanceType="t3.micro", SubnetId=self.moto.subnet_id,
            SecurityGroupIds=[self.lb_group], UserData="#!/bin/sh\n# the load balancer: set up with installer.sh\n",
            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": "Name", "Value": "lbd-lb"}, {"Key": "lbd:role", "Value": "lb"}]}])
        inst = resp["Instances"][0]
        self.lb_instance = inst["InstanceId"]
        ip = inst["PrivateIpAddress"]
        self.lb_addr = (ip, BACKEND_PORT)
        self.lb_admin = f"{ip}:9180"
        log(f"LB host {self.lb_instance} at {ip}")

        def install():
            try:
                t0 = time.time()
                self.lb_host = wait_for(lambda: self.world.machine(self.lb_instance), 60, "the LB host's machine")
                wait_for(self.lb_running, 120, "the LB host's systemd to be up")
                rc, out = self.lb_host.run(
                    ["sh", "-c", f"mkdir -p {SRC} && curl -fsS --retry 3 {self.source_url} | "
                                 f"tar -xz -C {SRC} --strip-components=1"], timeout=120)
                if rc != 0:
                    raise Failure(f"fetching the source into the LB host failed: {out[-2000:]}")
                self.install_lb(self.base_image, 0)
                log(f"LB host installed in {time.time() - t0:.1f} s")
            except Exception as e:  # noqa: BLE001 - reported by pool()
                self.lb_error = e if isinstance(e, Failure) else repr(e)

        self.lb_thread = threading.Thread(target=install, name="lb-host", daemon=True)
        self.lb_thread.start()

    def lb_running(self):
        rc, out = self.lb_host.run(["systemctl", "is-system-running"], timeout=20)
        return out.strip() in ("running", "degraded")

    def install_lb(self, image, desired):
        """installer.sh --role lb in the LB host, with the moto user's secret in a file of mode 0600."""
        secret = self.lb_host.root / "root" / "aws-secret"
        secret.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.moto.secret + "\n")
        ip = self.lb_addr[0]
        cmd = ["env", f"LBD_SOURCE_URL={self.source_url}", "DEBIAN_FRONTEND=noninteractive", "/bin/bash",
               f"{SRC}/installer/installer.sh", "--non-interactive", "--role", "lb",
               "--listen", f"{ip}:{BACKEND_PORT}", "--admin", self.lb_admin, "--endpoint", self.moto.endpoint,
               "--region", self.ec2env.REGION, "--access-key-id", self.moto.key_id,
               "--secret-access-key-file", "/root/aws-secret", "--subnet", self.moto.subnet_id,
               "--security-groups", self.groups, "--image", image, "--networks", "127.0.0.0/8",
               "--upstream", self.upstream, "--tag", "=".join(TAG), "--desired", str(desired), "--no-provision"]
        try:
            rc, out = self.lb_host.run(cmd, timeout=self.clock.left(900))
        finally:
            secret.unlink(missing_ok=True)
        with open(self.workdir / "lb-installer.log", "a", encoding="utf-8") as f:
            f.write(out)
        if rc != 0:
            raise Failure(f"installer.sh --role lb exited with {rc} in the LB host:\n{out[-3000:]}")
        self.lb_lbd = MachineLbd(self.lb_host)

    def kill(self):
        victim = self.pool_ids(TAG, ["running"])[0]
        victim_ip = self.instance(victim)["PrivateIpAddress"]
        # Within its grace period a failing instance is left alone: kill one past it.
        launched = self.instance(victim)["LaunchTime"].timestamp()
        time.sleep(max(0.0, min(launched + GRACE_BAKED + 1 - time.time(), self.clock.left(GRACE_BAKED + 1))))
        before = set(self.pool_ids(TAG, self.ec2env.LIVE_STATES + ["terminated"]))
        loop = self.ec2env.RequestLoop(self.lb_addr[1], host=self.lb_addr[0], interval=0.05,
                                       max_seconds=self.clock.left(300), path="/healthcheck")
        self.loops.append(loop)
        time.sleep(2)
        t_kill = self.world.kill(victim)
        log(f"killed {victim}'s machine ({victim_ip})")
        lbd = self.lb_lbd
        launch = self.wait_log(lbd, r"Launching 1 instance", t_kill, self.clock.left(120))
        self.wait_log(lbd, rf"Terminating instance {victim}: ", t_kill, self.clock.left(60))
        new = wait_for(lambda: set(self.pool_ids(TAG, ["running"])) - before, self.clock.left(60),
                       "the replacement instance", interval=0.2)
        new = sorted(new)[0]
        boot = wait_for(lambda: self.world.find_events("boot", iid=new), self.clock.left(60),
                        f"{new}'s machine to boot", interval=0.2)[0]["t"]
        up = self.wait_up(lbd, new, self.clock.left(120))
        self.wait_pool(lbd, self.lb_admin, TAG, 3, self.clock.left(60))
        time.sleep(2)
        loop.stop()
        log(f"request loop: {loop.ok} answered, {len(loop.failures)} failed")
        self.figure("kill-to-serving", up - t_kill)
        self.figure("  detection (kill -> lbd launches the replacement)", launch - t_kill)
        self.figure("  API (RunInstances -> the replacement's machine starts)", boot - launch)
        self.figure("  boot (machine start, cloud-init, relay healthy)", up - boot)
        if loop.failures:
            raise Failure(f"{len(loop.failures)} requests failed during the replacement: {loop.failures[:5]}")
        if loop.ok < 20:
            raise Failure(f"the request loop made only {loop.ok} requests")
        state = self.instance(victim)["State"]["Name"]
        if state not in ("shutting-down", "terminated"):
            raise Failure(f"the killed instance {victim} is {state}, not terminated")
        Api(self.lb_addr[1], host=self.lb_addr[0]).json("GET", f"/tasks/{self.task_id}", 200, token=self.token)

    def restart(self):
        before = set(self.pool_ids(TAG, self.ec2env.LIVE_STATES + ["terminated"]))
        running = set(self.pool_ids(TAG, ["running"]))
        t0 = time.time()
        # The reboot ends the command's machine under it: its exit status says nothing.
        self.lb_host.run(["systemctl", "reboot"], timeout=30)
        wait_for(lambda: self.lb_host.boots >= 2 and self.lb_host.find_init(), self.clock.left(120),
                 "the LB host to boot again", interval=0.2)
        lbd = self.lb_lbd
        wait_for(lbd.alive, self.clock.left(120), "lbd.service to be active after the reboot", interval=0.5)
        ids = self.wait_pool(lbd, self.lb_admin, TAG, 3, self.clock.left(120))
        self.figure("LB host reboot to 3 healthy", time.time() - t0)
        time.sleep(3)  # a few polls: nothing may be launched
        after = set(self.pool_ids(TAG, self.ec2env.LIVE_STATES + ["terminated"]))
        if after != before or set(ids) != running:
            raise Failure(f"lbd after the reboot changed the pool: {sorted(before)} -> {sorted(after)}")
        boot_log = self.lb_host.run(["journalctl", "-b", "-u", "lbd", "--no-pager", "-q"], timeout=20)[1]
        if re.search(r"Launching \d+ instance", boot_log):
            raise Failure("lbd launched instances after the reboot")
        adopted = re.findall(r"Instance (i-\S+) \(running\) found", boot_log)
        if set(adopted) != running:
            raise Failure(f"lbd after the reboot adopted {adopted}, not {sorted(running)}")
        log(f"after the reboot lbd.service adopted {len(adopted)} instances, launched none")
        Api(self.lb_addr[1], host=self.lb_addr[0]).json("GET", f"/tasks/{self.task_id}", 200, token=self.token)

    def failing(self):
        t0 = time.time()
        bad = self.start_lbd("lbd-bad", self.bad_port, self.bad_admin, self.baked_image, desired=1,
                             grace="8s", upstream=f"127.0.0.1:{self.dead_port}", tag=BAD_TAG,
                             extra_pool="max_replacements = 2\nreplacement_window = 10m")
        self.wait_log(bad, r"Replacement storm guard", t0, self.clock.left(240))
        terminated = self.bad_lbd_terminated(bad, t0)
        if len(terminated) < 2:
            raise Failure(f"the failing pool's instances were not replaced twice: {terminated}")
        why = {line.split(": ", 1)[1] for _, line in bad.find(r"Terminating instance i-\S+: ", since=t0)}
        log(f"failing pool: {len(terminated)} replaced ({'; '.join(sorted(why))}), then the storm guard")
        launched = self.pool_ids(BAD_TAG, self.ec2env.LIVE_STATES + ["terminated"])
        if len(launched) > 3:
            raise Failure(f"the storm guard let {len(launched)} instances be launched: {launched}")
        status = self.lbctl("status", "--admin", self.bad_admin)
        log("lbctl status (failing pool):\n" + status)
        if not re.search(r"\bdown\b", status):
            raise Failure("lbctl status does not show the failing backend down")
        current = self.pool_ids(BAD_TAG, ["running"])
        if not current:
            raise Failure("the storm guard left no instance running in the failing pool")
        # The newest instance may still be booting: its user data names the upstream once it has run.
        dead = f"127.0.0.1:{self.dead_port}"

        def names_dead():
            text = self.world.journal(current[0], "-u", "lbd-relay", "-n", "20")
            return text if dead in text else None
        journal = wait_for(names_dead, self.clock.left(90),
                           f"{current[0]}'s journal to name the dead upstream {dead}", interval=1)
        log(f"journal of {current[0]} (lbd-relay):\n{journal}")
        self.stop_lbd(bad)
        ids = self.pool_ids(BAD_TAG, self.ec2env.LIVE_STATES)
        if ids:
            self.moto.ec2.terminate_instances(InstanceIds=ids)

    def bad_lbd_terminated(self, bad, since):
        return sorted({re.search(r"Terminating instance (i-\S+):", line).group(1)
                       for _, line in bad.find(r"Terminating instance i-\S+: ", since=since)})

    # -- helpers

    def figure(self, what, seconds):
        self.figures.append((what, seconds))
        log(f"figure: {what}: {seconds:.1f} s")

    def lbctl_env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=self.moto.key_id, AWS_SECRET_ACCESS_KEY=self.moto.secret,
                   AWS_EC2_METADATA_DISABLED="true", AWS_SHARED_CREDENTIALS_FILE=str(self.workdir / "none"),
                   AWS_CONFIG_FILE=str(self.workdir / "none"))
        return env

    def lbctl_provision(self, *args):
        cmd = [str(self.lbctl_path), "provision", "--endpoint", self.moto.endpoint, "--region",
               self.ec2env.REGION, "--subnet", self.moto.subnet_id, "--tag", "=".join(TAG),
               "--backend-port", str(BACKEND_PORT), "--web-port", str(WEB_PORT),
               # The LB host here is installed with --no-provision and --upstream, which gives its relays
               # no CA: the web tier and the hop to the relays stay on plain HTTP in this journey (the
               # verified TLS to webd is tests/control/test_ec2_web_host.py's, to the relays
               # test_ec2_relay_tls.py's), and nothing is written to /etc/lbd/web-tls.
               "--web-plain-http", "--relay-plain-http", *args]
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, env=self.lbctl_env(),
                             timeout=self.clock.left(300), check=False)
        err = res.stderr.decode(errors="replace")
        log("\n".join(f"[lbctl provision] {line}" for line in err.splitlines()))
        if res.returncode != 0:
            raise Failure(f"lbctl provision exited with {res.returncode}")
        return parse_kv(res.stdout.decode())

    def lbctl(self, *args):
        res = subprocess.run([str(self.lbctl_path), *args], stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=30, check=False)
        if res.returncode != 0:
            raise Failure(f"lbctl {' '.join(args)} exited with {res.returncode}: {res.stderr.decode()[-500:]}")
        return res.stdout.decode(errors="replace")

    def start_lbd(self, name, port, admin, image, desired, grace, upstream, tag, extra_pool=""):
        config = f"""[lbd]
listen = 127.0.0.1:{port}
admin = {admin}
access_log = off

[health]
path = /healthcheck
{HEALTH}

[pool]
provider = ec2
desired = {desired}
port = {BACKEND_PORT}
networks = 127.0.0.0/8
grace = {grace}
poll = 1s
{extra_pool}

[ec2]
endpoint = {self.moto.endpoint}
region = {self.ec2env.REGION}
image = {image}
instance_type = t3.micro
subnet = {self.moto.subnet_id}
security_groups = {self.groups}
user_data = {self.backend_user_data}
upstream = {upstream}
tag = {tag[0]}={tag[1]}
"""
        env = {"AWS_ACCESS_KEY_ID": self.moto.key_id, "AWS_SECRET_ACCESS_KEY": self.moto.secret,
               "AWS_EC2_METADATA_DISABLED": "true"}
        lbd = self.ec2env.Lbd(self.workdir, self.lbd_path, env, config, name=name)
        self.lbds.append(lbd)
        return lbd.start()

    def stop_lbd(self, lbd):
        self.ec2env.end_process(lbd.proc, timeout=40)

    def pool_ids(self, tag, states):
        filters = [{"Name": "instance-state-name", "Values": states},
                   {"Name": "subnet-id", "Values": [self.moto.subnet_id]},
                   {"Name": f"tag:{tag[0]}", "Values": [tag[1]]}]
        out = []
        for res in self.moto.ec2.describe_instances(Filters=filters)["Reservations"]:
            # The web host carries the pool's tag too, with lbd:role=web: it is not a backend.
            out.extend(i["InstanceId"] for i in res["Instances"]
                       if not any(t["Key"] == "lbd:role" for t in i.get("Tags", [])))
        return sorted(out)

    def instance(self, iid):
        return self.moto.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]

    def status(self, admin):
        host, port = admin.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        try:
            conn.request("GET", "/status")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def wait_pool(self, lbd, admin, tag, n, timeout):
        def steady():
            if not lbd.alive():
                raise Failure(f"{lbd.name} exited:\n{lbd.log_text()[-3000:]}")
            running = self.pool_ids(tag, ["running"])
            if len(running) != n or len(self.pool_ids(tag, self.ec2env.LIVE_STATES)) != n:
                return None
            return running if self.status(admin).get("healthy", 0) == n else None
        return wait_for(steady, timeout, f"{n} running instances, all healthy in {lbd.name}", interval=0.5)

    def up_time(self, lbd, iid):
        ip = self.instance(iid)["PrivateIpAddress"]
        lines = lbd.find(rf"backend {re.escape(ip)}:{BACKEND_PORT} is up")
        return lines[-1][0] if lines else None

    def wait_up(self, lbd, iid, timeout):
        def up():
            if not lbd.alive():
                raise Failure(f"{lbd.name} exited:\n{lbd.log_text()[-3000:]}")
            return self.up_time(lbd, iid)
        return wait_for(up, timeout, f"lbd to find {iid}'s backend up", interval=0.2)

    def wait_log(self, lbd, pattern, since, timeout):
        return wait_for(lambda: (lbd.find(pattern, since=since) or [(None,)])[0][0], timeout,
                        f"{lbd.name} to log /{pattern}/", interval=0.2)

    def http_status(self, port, path, host="127.0.0.1", method="GET"):
        conn = http.client.HTTPConnection(host, port, timeout=5)
        try:
            conn.request(method, path, headers={"Connection": "close"})
            return conn.getresponse().status
        finally:
            conn.close()

    def init_log(self, iid):
        """The lines of scripts/cloud-init-backend.sh's log in <iid>'s machine."""
        m = self.world.machine(iid)
        if m is None:
            return []
        with contextlib.suppress(OSError):
            text = (m.root / "var/log/lbd-backend-init.log").read_text(errors="replace")
            return [line for line in text.splitlines() if line.startswith("lbd-backend-init:")]
        return []

    def init_done(self, iid):
        """When the user data said done (its UTC time stamp, to the second)."""
        for line in self.init_log(iid):
            m = re.match(r"lbd-backend-init: (\S+Z) done", line)
            if m:
                return datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(
                    tzinfo=datetime.timezone.utc).timestamp()
        raise Failure(f"{iid}'s user data never said done: {self.init_log(iid)}")

    def show_init_log(self, iid):
        log("\n".join(f"[{iid}] {line}" for line in self.init_log(iid)))

    def report(self):
        log("==== figures")
        for what, seconds in self.figures:
            log(f"  {what:<52} {seconds:6.1f} s")
        baked = [s for w, s in self.figures if w == "boot-to-healthy, baked image"]
        if baked:
            log(f"  baked boot-to-healthy: median {statistics.median(baked):.1f} s over {len(baked)}")

    def diagnose(self):
        if self.lb_host is not None:
            with contextlib.suppress(Exception):
                log("---- the LB host's lbd (journal, last 60 lines)\n" + self.lb_host.run(
                    ["journalctl", "-u", "lbd", "-n", "60", "--no-pager", "-q"], timeout=20)[1])
        for lbd in self.lbds:
            with contextlib.suppress(Exception):
                log(f"---- {lbd.name} log (last 60 lines)\n" + "\n".join(
                    f"{t:.3f} {line}" for t, line in lbd.log()[-60:]))
        if self.world is not None:
            with contextlib.suppress(Exception):
                log("---- boot world events (last 40)\n" + "\n".join(json.dumps(e) for e in self.world.events[-40:]))
            for iid, m in list(self.world.machines.items()):
                with contextlib.suppress(Exception):
                    tail = m.console.read_bytes()[-2500:].decode(errors="replace")
                    log(f"---- console of {iid} (end)\n{tail}")

    def teardown(self):
        with self.clock.phase("teardown"):
            for loop in self.loops:
                loop.stop()
            for lbd in self.lbds:
                with contextlib.suppress(Exception):
                    self.stop_lbd(lbd)
            if self.world is not None:
                t0 = time.monotonic()
                self.world.close()
                log(f"teardown: machines off and removed in {time.monotonic() - t0:.1f} s")
            if self.files is not None:
                self.ec2env.end_process(self.files)
            if self.moto is not None and self.moto.proc is not None:
                self.moto.stop()
        self.report()
        return True


def main():
    return run_phased("boot-journey", prerequisites(), float(os.environ.get("BOOT_BUDGET", "1000")),
                      os.environ.get("BOOT_WORKDIR"), Journey)


if __name__ == "__main__":
    sys.exit(main())

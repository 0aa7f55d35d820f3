"""The boot world: EC2 instances that moto reports running are machines booted with systemd-nspawn.

Where ec2env.py's agent starts a relay from the host's build for each running instance, this world boots the
instance's image as a machine with systemd as PID 1, and Debian's cloud-init inside runs the instance's own
user data, as EC2 would:
  - an image is a stack of root trees (overlayfs lower layers, top first): the debootstrapped base that
    tests/boot/mkimage.sh makes, plus one layer per CreateImage;
  - for each instance "running" in the watched subnet, the world writes a NoCloud seed (user-data: exactly
    the bytes of DescribeInstanceAttribute userData; meta-data: instance-id, local-hostname, local-ipv4) into
    a fresh upper layer, mounts the overlay and boots it: `systemd-nspawn --boot` on the host's network, so
    what the machine serves on its instance address (127.0.N.x) is what lbd reaches;
  - stopping or terminating the instance powers the machine off (SIGRTMIN+4 to its systemd, as
    `machinectl poweroff` sends); a stopped instance keeps its upper layer and boots from it when started
    again, a terminated one loses it. kill() is a crash: SIGKILL to the machine's init from outside, which
    ends every process of its PID namespace, while EC2 still reports the instance running, as with a
    hardware fault; the world does not boot it again;
  - a machine that reboots itself (`systemctl reboot` inside) boots again from its layer, with the same seed,
    so cloud-init does not run the user data twice; one that powers itself off stays off;
  - CreateImage of an instance whose machine runs snapshots its upper layer: the new image is that copy
    stacked on the source image's layers, so its instances boot with what the machine had installed.

Machines are named after their instance ids and tracked here by name: this host's PID 1 is not systemd, so
there is no systemd-machined to register them with, and `machinectl` cannot see them (--register=no);
poweroff and kill go to the pids this world started. Every wait is bounded. Only instances whose address is
inside 127.0.0.0/8 are ever booted. The world's poll thread ends by itself after <max_seconds>.
"""

import base64
import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
SEED_DIR = "var/lib/cloud/seed/nocloud"
NSPAWN_REBOOT = 133  # systemd-nspawn's exit status when the machine asked to reboot
NSENTER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Variables of this process that must not reach a machine's nspawn (it would talk to our supervisor).
NSPAWN_ENV_DROP = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")


def _now():
    return time.time()


def _run(cmd, timeout, check=True):
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited with {res.returncode}: "
                           f"{res.stderr.decode(errors='replace')[-1000:]}")
    return res


def prerequisites():
    """None when machines can be booted here, else why not."""
    if os.geteuid() != 0:
        return "not root (overlay mounts and systemd-nspawn need it)"
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    for tool, package in (("systemd-nspawn", "systemd-container"), ("nsenter", "util-linux"),
                          ("debootstrap", "debootstrap")):
        if not shutil.which(tool, path=path):
            return f"{tool} not found (Debian package {package})"
    with open("/proc/filesystems", encoding="ascii") as f:
        if "overlay" not in f.read():
            return "the kernel has no overlay file system"
    return None


class Machine:
    """One instance's machine: its upper layer, overlay mount and nspawn; owned by its BootWorld."""

    def __init__(self, world, iid, ip, image):
        self.world = world
        self.name = iid
        self.ip = ip
        self.image = image
        self.dir = world.workdir / "machines" / iid
        self.upper = self.dir / "upper"
        self.work = self.dir / "work"
        self.root = self.dir / "root"
        self.console = self.dir / "console.log"
        self.nspawn = None
        self.init_pid = None
        self.boots = 0
        self.started = None  # wall-clock time of the last nspawn start
        self.crashed = False
        self.stopping = None  # the thread powering it off
        self.halted = False  # it powered itself off: it stays off, as EC2 would stop it

    def alive(self):
        return self.nspawn is not None and self.nspawn.poll() is None

    def boot(self, user_data):
        """Seeds and boots the machine; returns at once (the world finds its init later)."""
        for d in (self.upper, self.work, self.root):
            d.mkdir(parents=True, exist_ok=True)
        seed = self.upper / SEED_DIR
        seed.mkdir(parents=True, exist_ok=True)
        (seed / "user-data").write_bytes(user_data)
        hostname = "ip-" + self.ip.replace(".", "-")
        (seed / "meta-data").write_text(f"instance-id: {self.name}\nlocal-hostname: {hostname}\n"
                                        f"local-ipv4: {self.ip}\n")
        lower = ":".join(str(layer) for layer in self.image)
        if not os.path.ismount(self.root):
            _run(["mount", "-t", "overlay", "overlay", "-o",
                  f"lowerdir={lower},upperdir={self.upper},workdir={self.work}", str(self.root)], 30)
        cmd = ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit", f"--machine={self.name}",
               "-D", str(self.root), "--resolv-conf=copy-host", "--timezone=off", "--console=read-only",
               "--kill-signal=SIGRTMIN+4", "--boot"]
        env = {k: v for k, v in os.environ.items() if k not in NSPAWN_ENV_DROP}
        with open(self.console, "ab") as out:
            # A session of its own: a signal meant for the test never reaches a machine by accident; the
            # world powers each one off by its pids.
            self.nspawn = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                           start_new_session=True)
        self.init_pid = None
        self.stopping = None
        self.halted = False
        self.boots += 1
        self.started = _now()
        self.crashed = False

    def find_init(self):
        """The pid of the machine's systemd (the child of our nspawn), or None while it is not there."""
        if self.init_pid is not None or not self.alive():
            return self.init_pid
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.nspawn.pid:
                self.init_pid = int(entry)
                break
        return self.init_pid

    def run(self, args, timeout=30):
        """Runs <args> inside the machine; returns (exit status or None on timeout, output)."""
        pid = self.find_init()
        if pid is None:
            return None, "the machine is not running"
        cmd = ["nsenter", f"--target={pid}", "--mount", "--uts", "--ipc", "--pid", "--",
               "/usr/bin/env", "-i", f"PATH={NSENTER_PATH}", "LANG=C.UTF-8", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0",
               "timeout", "-k", "5", str(int(timeout)), *args]
        try:
            res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout + 15,
                                 check=False)
        except subprocess.TimeoutExpired:
            return None, ""
        out = (res.stdout + res.stderr).decode("utf-8", "replace")
        return (None if res.returncode == 124 else res.returncode), out

    def poweroff(self, timeout=40):
        """Asks systemd inside to power off; escalates to SIGKILL of its init after <timeout> s."""
        if not self.alive():
            return
        pid = self.find_init()
        with contextlib.suppress(ProcessLookupError):
            if pid is not None:
                os.kill(pid, signal.SIGRTMIN + 4)
            else:
                self.nspawn.send_signal(signal.SIGTERM)
        try:
            self.nspawn.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self):
        """A crash: SIGKILL to the machine's init ends its whole PID namespace; nspawn then exits."""
        if not self.alive():
            return
        pid = self.find_init()
        self.crashed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid if pid is not None else self.nspawn.pid, signal.SIGKILL)
        try:
            self.nspawn.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.nspawn.kill()
            self.nspawn.wait(10)

    def unmount(self):
        if os.path.ismount(self.root):
            res = _run(["umount", str(self.root)], 30, check=False)
            if res.returncode != 0:
                _run(["umount", "-l", str(self.root)], 30, check=False)

    def remove(self):
        self.unmount()
        if not os.path.ismount(self.root) and self.dir.exists():
            _run(["rm", "-rf", "--one-file-system", "--", str(self.dir)], 300, check=False)


class BootWorld:
    """Watches moto's instances in one subnet and keeps a machine booted for each running one."""

    def __init__(self, workdir, ec2, subnet_id, poll=0.5, max_seconds=1500):
        self.workdir = Path(workdir)
        self.ec2 = ec2
        self.subnet_id = subnet_id
        self.poll = poll
        self.images = {}  # image id -> [layer, ...], top first
        self.machines = {}  # instance id -> Machine
        self.states = {}  # instance id -> the state moto reported last
        self.waiting = {}  # instance id -> when it was first seen running with an unknown image
        self.events = []
        self.lock = threading.RLock()
        self.stop_event = threading.Event()
        self.known_images = set()
        self.deadline = time.monotonic() + max_seconds
        (self.workdir / "machines").mkdir(parents=True, exist_ok=True)
        (self.workdir / "images").mkdir(parents=True, exist_ok=True)
        self.thread = threading.Thread(target=self._loop, name="boot-world", daemon=True)
        self.thread.start()

    # -- what tests call

    def add_image(self, image_id, tree):
        with self.lock:
            self.images[image_id] = [Path(tree)]
            self.known_images.add(image_id)

    def event(self, what, **kw):
        entry = {"t": _now(), "what": what, **kw}
        with self.lock:
            if len(self.events) < 10000:
                self.events.append(entry)
        return entry

    def find_events(self, what, iid=None, since=0.0):
        with self.lock:
            return [e for e in self.events if e["what"] == what and e["t"] >= since
                    and (iid is None or e.get("id") == iid)]

    def machine(self, iid):
        with self.lock:
            return self.machines.get(iid)

    def kill(self, iid):
        """Crashes instance <iid>'s machine; EC2 goes on reporting it running. Returns the kill's time."""
        m = self.machine(iid)
        if m is None or not m.alive():
            raise RuntimeError(f"{iid} has no running machine")
        t = _now()
        m.kill()
        self.event("killed", id=iid)
        return t

    def journal(self, iid, *args, timeout=30):
        """journalctl inside <iid>'s machine (it must be running), with <args>."""
        m = self.machine(iid)
        if m is None:
            return ""
        return m.run(["journalctl", "--no-pager", "-q", *args], timeout=timeout)[1]

    def close(self):
        """Stops the poll thread, powers off every machine (in parallel), removes their layers."""
        self.stop_event.set()
        self.thread.join(30)
        with self.lock:
            machines = list(self.machines.values())
        threads = [threading.Thread(target=m.poweroff, args=(30,)) for m in machines]
        threads += [m.stopping for m in machines if m.stopping is not None]
        for t in threads:
            if t.ident is None:
                t.start()
        for t in threads:
            t.join(60)
        for m in machines:
            if m.alive():
                m.kill()
            m.remove()
        shutil.rmtree(self.workdir / "images", ignore_errors=True)

    # -- the poll

    def _loop(self):
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            try:
                self.step()
            except Exception as e:  # noqa: BLE001 - a failed poll must not end the world
                self.event("poll-error", error=repr(e))
            self.stop_event.wait(self.poll)

    def _instances(self):
        seen = {}
        token = None
        for _ in range(20):
            kw = {"Filters": [{"Name": "subnet-id", "Values": [self.subnet_id]}], "MaxResults": 100}
            if token:
                kw["NextToken"] = token
            resp = self.ec2.describe_instances(**kw)
            for res in resp.get("Reservations", []):
                for inst in res.get("Instances", []):
                    seen[inst["InstanceId"]] = (inst["State"]["Name"], inst.get("PrivateIpAddress"),
                                                inst.get("ImageId"))
            token = resp.get("NextToken")
            if not token:
                break
        return seen

    def step(self):
        seen = self._instances()
        self._snapshots(seen)
        for iid, (state, ip, image_id) in seen.items():
            if self.states.get(iid) != state:
                self.states[iid] = state
                self.event("state", id=iid, state=state, ip=ip, image=image_id)
            m = self.machine(iid)
            if state != "running":
                gone = state in ("shutting-down", "terminated")
                # A crashed machine has nothing to power off, but a terminated one's layer goes all the same.
                if m is not None and m.stopping is None and (m.alive() or (gone and m.dir.exists())):
                    self._power_off(m, remove=gone)
                continue
            if m is not None and (m.alive() or m.crashed or m.halted or (m.stopping and m.stopping.is_alive())):
                if m.alive() and m.init_pid is None and m.find_init() is not None:
                    self.event("init", id=iid, pid=m.init_pid, boot_s=_now() - m.started)
                continue
            if m is not None and m.stopping is None and m.nspawn.returncode != NSPAWN_REBOOT:
                # Powered off from inside while EC2 says running: it stays off (EC2 would stop it).
                m.halted = True
                self.event("halted", id=iid, code=m.nspawn.returncode)
                continue
            self._boot(iid, ip, image_id, m)
        for iid in list(self.states):
            if iid not in seen and self.states[iid] != "gone":
                self.states[iid] = "gone"
                m = self.machine(iid)
                if m is not None and m.stopping is None:
                    self._power_off(m, remove=True)

    def _boot(self, iid, ip, image_id, m):
        try:
            ok = ip is not None and ipaddress.ip_address(ip) in LOOPBACK
        except ValueError:
            ok = False
        if not ok:
            if iid not in self.waiting:
                self.waiting[iid] = _now()
                self.event("refused-address", id=iid, ip=ip)
            return
        with self.lock:
            layers = self.images.get(image_id)
        if layers is None:
            if iid not in self.waiting:
                self.waiting[iid] = _now()
                self.event("unknown-image", id=iid, image=image_id)
            return
        raw = self.ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
        value = raw.get("UserData", {}).get("Value")
        user_data = base64.b64decode(value) if value else b""
        if m is None:
            m = Machine(self, iid, ip, layers)
            with self.lock:
                self.machines[iid] = m
        m.boot(user_data)
        self.event("boot", id=iid, ip=ip, image=image_id, boots=m.boots, pid=m.nspawn.pid)

    def _power_off(self, m, remove):
        """Powers <m> off and unmounts it, removing its layer when <remove>, on a thread of its own: a slow
        shutdown or a large layer to delete must not delay the other machines' boots."""
        def off():
            t0 = _now()
            m.poweroff()
            self.event("poweroff", id=m.name, took_s=_now() - t0)
            if remove:
                m.remove()
            else:
                m.unmount()
        m.stopping = threading.Thread(target=off, daemon=True)
        m.stopping.start()

    def _snapshots(self, seen):
        """CreateImage: a new image of ours made from a machine we run becomes that machine's layers."""
        resp = self.ec2.describe_images(Owners=["self"])
        new = [i["ImageId"] for i in resp.get("Images", []) if i["ImageId"] not in self.known_images]
        if not new:
            return
        for image_id in new:
            self.known_images.add(image_id)
            source = None
            for iid, m in list(self.machines.items()):
                match = self.ec2.describe_images(
                    Owners=["self"], Filters=[{"Name": "source-instance-id", "Values": [iid]}])
                if image_id in (i["ImageId"] for i in match.get("Images", [])):
                    source = m
                    break
            if source is None:
                self.event("image-not-ours", image=image_id)
                continue
            t0 = _now()
            layer = self.workdir / "images" / image_id
            _run(["cp", "-a", "--reflink=auto", "--", str(source.upper), str(layer)], 600)
            # The seed is each machine's own: the new image carries none.
            shutil.rmtree(layer / SEED_DIR, ignore_errors=True)
            with self.lock:
                self.images[image_id] = [layer, *source.image]
            self.event("snapshot", image=image_id, id=source.name, took_s=_now() - t0)

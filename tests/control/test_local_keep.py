"""The local provider keeps three relays and relaunches a killed one, with a
bounded request loop through lbd the whole time and not one failed GET; and
lbctl shows the pool."""

import json
import os
import signal
import time

import pytest

import localenv
from localenv import lbdtest


@pytest.fixture
def env(tmp_path):
    yield from localenv.fixture(tmp_path)


def test_keeps_three_and_relaunches_a_killed_one(env):
    lbd = env.start_lbd(desired=3)
    relays = env.wait_relays(3)
    st = env.wait_healthy(3)
    assert st["control"]["provider"] == "local"
    assert st["control"]["managed"] is True
    assert st["control"]["desired"] == 3
    assert st["control"]["launches"] == 3
    assert sorted(relays.values()) == [env.base_port, env.base_port + 1, env.base_port + 2]
    for pid, port in relays.items():
        # Each relay is lbd in relay mode, in a process group of its own, forwarding to the web host.
        assert os.getpgid(pid) == pid
        assert b"--backend" in localenv.proc_cmdline(pid)
        resp = lbdtest.request(port, "GET", "/direct")
        assert resp.status == 200 and resp.header("X-Backend") == "web"
    ids = {b["instance_id"]: b["address"] for b in st["backends"]}
    for pid, port in relays.items():
        assert ids.get(f"local-{port - env.base_port}-{pid}") == f"127.0.0.1:{port}"
    for b in st["backends"]:
        assert b["instance_state"] == "running" and b["age_s"] is not None

    # About 50 requests a second: a relay killed with SIGKILL in the middle of sending a response
    # (between its head and its body) takes that response with it, which no proxy can hide; at this rate
    # that window is practically never hit, while every other request around the kill is checked.
    load = env.h.load(lbd.port, n=1, max_seconds=45, pause=0.02).start()
    time.sleep(1.0)
    victim_pid, victim_port = sorted(relays.items())[1]
    os.kill(victim_pid, signal.SIGKILL)

    def replaced():
        r = env.relays()
        return r if len(r) == 3 and victim_pid not in r else None

    now = lbdtest.wait_until(replaced, 20, "the killed relay relaunched")
    # The lowest free index: the replacement takes the killed one's port.
    assert sorted(now.values()) == sorted(relays.values())
    st = env.wait_healthy(3)
    time.sleep(1.0)  # traffic through the new one too
    load.stop()
    assert not load.failures, load.failures[:5]
    assert load.ok > 50

    assert st["control"]["launches"] == 4
    assert st["control"]["replacements_in_window"] == 1
    assert f"local-1-{victim_pid}" not in {b["instance_id"] for b in st["backends"]}
    m = lbd.metrics()
    assert m.get("lbd_launches_total") == 4
    assert m.get("lbd_instances", state="running") == 3
    assert m.get("lbd_provider_errors_total") == 0
    assert m.types["lbd_instances"] == "gauge" and m.types["lbd_launches_total"] == "counter"
    assert not m.errors
    text = lbd.stderr_text()
    assert "Launched 1 instance (1 to replace lost ones)" in text
    assert f"Local backend local-1-{victim_pid} on 127.0.0.1:{victim_port} was killed by signal 9" in text

    # Steady state: nothing more is launched or terminated.
    time.sleep(1.5)
    st = env.status()
    assert st["control"]["launches"] == 4 and st["control"]["terminations"] == 0
    assert len(env.relays()) == 3


def test_lbctl_status(env):
    lbd = env.start_lbd(desired=3)
    env.wait_healthy(3)
    for _ in range(9):
        assert lbd.get("/count").status == 200
    admin = f"127.0.0.1:{lbd.admin_port}"

    out = localenv.lbctl("--admin", admin, "status")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("provider local, desired 3, 3/3 backends healthy")
    header = lines[1].split()
    assert header[:3] == ["INSTANCE", "ADDRESS", "STATE"] and "ROTATION" in header and header[-1] == "AGE"
    rows = [line.split() for line in lines[2:]]
    assert len(rows) == 3
    st = env.status()
    by_id = {b["instance_id"]: b for b in st["backends"]}
    for row in rows:
        # INSTANCE ADDRESS STATE HEALTH IN-ROTATION REQUESTS ERRORS AGE
        b = by_id[row[0]]
        assert row[1] == b["address"]
        assert row[2:5] == ["running", "up", "yes"]
        assert int(row[5]) == b["requests"]
        assert row[6] == "0"
        assert row[7].endswith("s")
    assert sum(int(r[5]) for r in rows) >= 9
    # Columns line up: every row's address starts where the header's does.
    col = lines[1].index("ADDRESS")
    assert all(line[col:col + 10] == "127.0.0.1:" for line in lines[2:])

    out = localenv.lbctl("-a", admin, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["control"]["provider"] == "local" and len(doc["backends"]) == 3

    # Exit status: 4 when nothing listens, 1 on an answer that isn't /status, 2 on bad usage.
    closed = lbdtest.free_port()
    out = localenv.lbctl("-a", f"127.0.0.1:{closed}", "status")
    assert out.returncode == 4 and "can't reach" in out.stderr
    out = localenv.lbctl("-a", f"127.0.0.1:{lbd.port}", "status")
    assert out.returncode == 1
    assert localenv.lbctl("-a", "localhost:9180").returncode == 2
    assert localenv.lbctl("frobnicate").returncode == 2
    out = localenv.lbctl("--help")
    assert out.returncode == 0 and "--json" in out.stdout
    out = localenv.lbctl("--version")
    assert out.returncode == 0 and out.stdout.startswith("lbctl ")

"""lbd killed with SIGKILL and started again adopts the local relays it left
running (through its state file) and launches none; a relay that dies after
that is still noticed and replaced. Request loops before the kill and after
the restart see no failed GET (while lbd itself is down nothing answers)."""

import os
import signal
import time

import pytest

import localenv
from localenv import lbdtest


@pytest.fixture
def env(tmp_path):
    yield from localenv.fixture(tmp_path)


def run_load(env, lbd, seconds):
    load = env.h.load(lbd.port, n=2, max_seconds=seconds + 10, pause=0.005).start()
    time.sleep(seconds)
    load.stop()
    assert not load.failures, load.failures[:5]
    assert load.ok > 50
    return load


def test_sigkill_and_restart_adopts(env):
    lbd = env.start_lbd(desired=3)
    before = env.wait_relays(3)
    st = env.wait_healthy(3)
    ids = sorted(b["instance_id"] for b in st["backends"])
    run_load(env, lbd, 1.5)

    lbd.signal(signal.SIGKILL)
    lbd.wait_exit(5)
    time.sleep(0.3)
    assert env.relays() == before  # they outlive lbd
    first_run = len(lbd.stderr_text())

    env.restart_lbd(healthy=3)
    st = env.wait_healthy(3)
    assert sorted(b["instance_id"] for b in st["backends"]) == ids
    assert st["control"]["launches"] == 0
    # A few polls later: still the same three, nothing launched or terminated.
    time.sleep(1.5)
    st = env.status()
    assert st["control"]["launches"] == 0 and st["control"]["terminations"] == 0
    assert env.relays() == before
    assert len([i for i in st["control"]["instances"] if i["state"] == "running"]) == 3
    run_load(env, lbd, 1.5)

    text = lbd.stderr_text()[first_run:]
    assert text.count("Adopted local backend") == 3
    assert "Launching" not in text

    # An adopted relay is not lbd's child: its death is noticed through /proc, and it is replaced.
    victim = sorted(before)[0]
    os.kill(victim, signal.SIGKILL)

    def replaced():
        r = env.relays()
        return r if len(r) == 3 and victim not in r else None

    lbdtest.wait_until(replaced, 20, "the killed adopted relay replaced")
    st = env.wait_healthy(3)
    assert st["control"]["launches"] == 1
    run_load(env, lbd, 1.0)

"""Desired count 3 -> 5 -> 2 by SIGHUP with the local provider: processes
started and stopped without a restart of lbd, a bounded request loop through
lbd the whole time and not one failed GET."""

import time

import pytest

import localenv
from localenv import lbdtest


@pytest.fixture
def env(tmp_path):
    yield from localenv.fixture(tmp_path)


def test_desired_3_5_2_by_sighup(env):
    lbd = env.start_lbd(desired=3)
    first = env.wait_relays(3)
    env.wait_healthy(3)
    pid = lbd.pid
    load = env.h.load(lbd.port, n=2, max_seconds=60, pause=0.005).start()

    env.reconfigure(5)
    st = env.wait_healthy(5)
    five = env.wait_relays(5)
    assert set(first) <= set(five)  # the first three kept
    assert st["control"]["desired"] == 5
    assert st["control"]["launches"] == 5
    assert st["control"]["replacements_in_window"] == 0  # growth, not replacements
    time.sleep(1.0)  # traffic through all five
    assert len({b["address"] for b in env.status()["backends"] if b["requests"] > 0}) == 5

    env.reconfigure(2)
    st = env.wait_healthy(2)
    two = env.wait_relays(2)
    # All healthy: the newest go first, so two of the first three stay.
    assert set(two) <= set(first)
    gone = set(five) - set(two)
    assert len(gone) == 3
    lbdtest.wait_until(lambda: not any(localenv.proc_alive(p) for p in gone), 15,
                       "the three stopped relays exited")
    time.sleep(1.0)
    load.stop()
    assert not load.failures, load.failures[:5]
    assert load.ok > 200

    st = env.status()
    assert st["control"]["terminations"] == 3
    assert st["control"]["desired"] == 2
    assert lbd.pid == pid and lbd.proc.poll() is None  # never restarted
    text = lbd.stderr_text()
    assert "Desired instances: 3 -> 5" in text
    assert "Desired instances: 5 -> 2" in text
    assert text.count("beyond desired") >= 3
    # Every stopped relay exited on its own (SIGTERM), none needed SIGKILL.
    assert "did not stop within" not in text


def test_scale_in_keeps_the_busy_one(env, tmp_path):
    """Scaling in takes the least loaded backend, not the newest when the newest is clearly busier: the
    third relay (the newest) forwards to an upstream that holds every request 400 ms, so under a
    round-robin request loop it has several requests in flight while the other two have almost none.
    From 3 to 2, one of the idle two goes; the busy one stays; not one request fails."""
    slow = env.h.backend("slow", delay_all_ms=400)
    # The relay of index 2 forwards to the slow upstream, the others to the usual one.
    script = tmp_path / "relay.sh"
    script.write_text(
        "#!/bin/sh\n"
        "# index lbd address upstream\n"
        f'if [ "$1" = 2 ]; then up={slow.addr}; else up=$4; fi\n'
        'exec "$2" --listen "$3" --backend "$up" --admin off --access-log off\n')
    script.chmod(0o755)
    command = f"/bin/sh {script} {{index}} {{lbd}} {{address}} {{upstream}}"

    lbd = env.start_lbd(desired=2, command=command)
    first = env.wait_relays(2)
    env.reconfigure(3, command=command)
    env.wait_healthy(3)
    three = env.wait_relays(3)
    busy_pid = (set(three) - set(first)).pop()
    busy_addr = f"127.0.0.1:{three[busy_pid]}"

    load = env.h.load(lbd.port, n=6, max_seconds=90, pause=0.005).start()

    # The smoothed load shows it: the busy one carries clearly more than each of the others.
    def loads_apart():
        backends = {b["address"]: b for b in env.status()["backends"]}
        busy = backends.get(busy_addr)
        others = [b["load"] for a, b in backends.items() if a != busy_addr]
        return busy and len(others) == 2 and busy["load"] > 2.5 and max(others) < 1.0
    lbdtest.wait_until(loads_apart, 45, "the busy relay's smoothed load above the others'")

    env.reconfigure(2, command=command)
    env.wait_healthy(2)
    two = env.wait_relays(2)
    assert busy_pid in two, (busy_pid, two)
    gone = (set(three) - set(two)).pop()
    assert gone in first
    lbdtest.wait_until(lambda: not localenv.proc_alive(gone), 15, "the stopped relay exited")
    load.stop()
    assert not load.failures, load.failures[:5]
    assert load.ok > 100

    text = lbd.stderr_text()
    assert "Scaling in: " in text and "goes first" in text
    assert lbd.status()["control"]["terminations"] == 1

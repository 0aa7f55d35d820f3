"""Scheduled changes of the pool's size ([schedule] action) with the local provider: the action that
matched last is in force at start (its bounds and desired applied, with the pool following), a reload without
the schedule goes back to [pool]'s bounds, an action applies again at its minute (the timer), and
--check-config refuses what cannot work, naming the action."""

import subprocess
import time

import pytest

import localenv
from localenv import lbdtest

# Scaling on demand with a target no test load reaches: only the schedule moves the bounds.
SCALING = "min = 1\nmax = 4\ntarget_rps = 100000\nscale_out_after = 3s\nscale_in_after = 5m\n"


@pytest.fixture
def env(tmp_path):
    yield from localenv.fixture(tmp_path)


def schedule(*actions):
    return "[schedule]\n" + "".join(f"action = {a}\n" for a in actions)


def test_in_force_at_start_then_reload(env):
    # "yearly" last matched on 1 January: outside the 8 days looked back at start, so not in force.
    env.start_lbd(desired=1, healthy=2, timeout=30,
                  extra_pool=SCALING + schedule("yearly 0 0 1 1 * min=1 max=1", "busy * * * * * min=2 max=3"))
    st = env.status()
    sched = st["control"]["schedule"]
    assert sched["actions"] == 2
    assert sched["in_force"]["name"] == "busy", sched
    assert (sched["in_force"]["min"], sched["in_force"]["max"], sched["in_force"]["desired"]) == (2, 3, None)
    assert abs(sched["in_force"]["matched_unix"] - time.time()) < 120
    assert sched["next"] == "busy" and 0 < sched["next_unix"] - time.time() <= 61
    auto = st["control"]["autoscale"]
    assert (auto["min"], auto["max"]) == (2, 3), auto
    # The pool follows the new minimum: 2 healthy backends although [pool] desired is 1.
    assert st["control"]["desired"] == 2
    env.wait_healthy(2, timeout=30)
    assert "Schedule: in force 'busy' (* * * * *" in env.lbd.stderr_text()
    out = localenv.lbctl("-a", f"127.0.0.1:{env.lbd.admin_port}", "status").stdout
    assert "schedule: 'busy' in force (matched " in out and ": min 2 max 3; next 'busy' at " in out, out

    # Without the schedule: [pool]'s bounds again.
    env.reconfigure(2, extra_pool=SCALING)
    lbdtest.wait_until(lambda: env.status()["control"]["schedule"] is None, 10, "the schedule gone")
    auto = env.status()["control"]["autoscale"]
    assert (auto["min"], auto["max"]) == (1, 4), auto


def test_desired_only_and_the_minute_timer(env):
    """Without scaling on demand an action sets desired; at its minute it applies again, putting the count
    back after another change."""
    env.start_lbd(desired=1, healthy=3, timeout=30, extra_pool=schedule("three * * * * * desired=3"))
    assert env.status()["control"]["desired"] == 3
    # Another count by reload (the action in force keeps its desired only until it matches again), early
    # enough in a minute that the check below sees it before the action matches again.
    lbdtest.wait_until(lambda: time.gmtime().tm_sec < 40, 25, "the first 40 s of a minute")
    env.reconfigure(2, extra_pool=schedule("three * * * * * desired=3"))
    lbdtest.wait_until(lambda: env.status()["control"]["desired"] == 2, 10, "desired 2 after the reload")
    # The next minute: applied again, back to 3.
    st = lbdtest.wait_until(lambda: (lambda s: s if s["control"]["desired"] == 3 else None)(env.status()), 75,
                            "the action applied at its minute")
    assert "Schedule: applying 'three'" in env.lbd.stderr_text()
    assert st["control"]["schedule"]["in_force"]["name"] == "three"
    env.wait_healthy(3, timeout=30)


def check_config(env, text):
    path = env.workdir / "check.conf"
    path.write_text(text)
    return subprocess.run([str(lbdtest.lbd_binary()), "--config", str(path), "--check-config"],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("pool,action,why", [
    ("", "n 0 8 * * * min=2", "min and max bound scaling on demand"),
    (SCALING, "n 0 8 * * * min=5 max=4", "min is above max"),
    (SCALING, "n 0 25 * * * min=2", "hour"),
    (SCALING, "n 0 8 * *", "must be NAME"),
    (SCALING, "n 0 8 * * *", "sets nothing"),
])
def test_check_config_refusals(env, pool, action, why):
    r = check_config(env, env.config(1, extra_pool=pool + schedule(action)))
    assert r.returncode == 78, r.stderr
    assert "[schedule] key 'action'" in r.stderr and why in r.stderr, r.stderr


def test_check_config_names_twice(env):
    r = check_config(env, env.config(1, extra_pool=SCALING + schedule("a 0 8 * * * min=2", "a 0 9 * * * min=1")))
    assert r.returncode == 78 and "a second action named 'a'" in r.stderr, r.stderr

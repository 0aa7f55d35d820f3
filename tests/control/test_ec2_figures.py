"""Figures, with the production defaults for polling and health checks ([pool] poll = 10s; [health]
interval = 1s, timeout = 1s, rise = 2, fall = 3; [pool] grace = 60s, which the failing instance is past):
  - EC2 API calls per minute in a steady state of three healthy backends, counted at the fault proxy
    (every call lbd makes goes through it); the aim is at most 6;
  - the time from a backend's failure (its relay killed while EC2 says running) to its replacement
    serving traffic, split into detection (failure -> lbd decides to replace it), API calls (-> RunInstances
    answered) and boot (-> the instance running, the agent started its relay, and lbd's health checks put
    it in rotation). moto makes instances "running" at once and the agent's "boot" is a
    process start, so on EC2 the API and boot parts grow by the instance's real start and boot times.
The figures are printed (also when the test passes) and written to figures.json in its directory."""

import json
import re
import time

import ec2env

DEFAULTS = {"interval": "1s", "timeout": "1s", "rise": "2", "fall": "3"}


def _first(lbd, pattern, since):
    found = lbd.find(pattern, since=since)
    assert found, f"no log line /{pattern}/:\n" + lbd.log_text(since=since)
    return found[0][0]


def test_figures(ec2_env, capsys):
    env = ec2_env
    lbd = env.lbd(config_text=ec2env.lbd_config(env, poll="10s", grace="60s", health=DEFAULTS))
    env.wait_steady(3, timeout=90)
    time.sleep(12)

    # Steady state: one minute of API calls.
    t0 = time.time()
    time.sleep(60)
    t1 = time.time()
    calls = [r for r in env.proxy.requests(since=t0) if r["t"] < t1 and not r["path"].startswith("/latest/")]
    per_minute = len(calls) * 60.0 / (t1 - t0)
    by_action = {}
    for r in calls:
        by_action[r["action"]] = by_action.get(r["action"], 0) + 1

    # A backend fails.
    loop = env.request_loop()
    time.sleep(2)
    ids = env.moto.running_ids()
    victim = ids[0]
    victim_ip = next(i["PrivateIpAddress"] for i in env.moto.instances() if i["InstanceId"] == victim)
    t_fail = time.time()
    assert env.agent.kill(victim)["killed"]
    env.wait_steady(3, timeout=120)
    new = sorted(set(env.moto.running_ids()) - set(ids))
    assert len(new) == 1, new
    new_id = new[0]
    new_ip = next(i["PrivateIpAddress"] for i in env.moto.instances() if i["InstanceId"] == new_id)
    time.sleep(2)
    loop.stop()

    port = env.backend_port
    t_down = _first(lbd, rf"backend {re.escape(victim_ip)}:{port} is down", t_fail)
    t_decide = min(_first(lbd, r"Launching 1 instance", t_fail),
                   _first(lbd, rf"Terminating instance {victim}", t_fail))
    t_launched = _first(lbd, rf"Launched 1 instance .*{new_id}", t_fail)
    t_up = _first(lbd, rf"backend {re.escape(new_ip)}:{port} is up", t_fail)
    runs = [r for r in env.proxy.requests(since=t_fail, action="RunInstances")]
    terms = [r for r in env.proxy.requests(since=t_fail, action="TerminateInstances")]
    events = env.agent.state()["events"]
    relay_start = next(e["t"] for e in events if e["what"] == "relay-start" and e["id"] == new_id)

    figures = {
        "steady_state": {"window_s": round(t1 - t0, 1), "api_calls": len(calls),
                         "api_calls_per_minute": round(per_minute, 2), "by_action": by_action},
        "replacement_s": {
            "detection": round(t_decide - t_fail, 2),
            "detection.health_checks_mark_down": round(t_down - t_fail, 2),
            "detection.reconciler_decides": round(t_decide - t_down, 2),
            "api_calls": round(t_launched - t_decide, 2),
            "api_calls.count": len(runs) + len(terms),
            "boot": round(t_up - t_launched, 2),
            "boot.instance_running_and_relay_started": round(relay_start - t_launched, 2),
            "boot.relay_up_and_health_checks_pass": round(t_up - relay_start, 2),
            "total": round(t_up - t_fail, 2),
        },
        "requests": {"ok": loop.ok, "failed": len(loop.failures)},
    }
    (env.workdir / "figures.json").write_text(json.dumps(figures, indent=2))
    with capsys.disabled():  # in the test log even when the test passes
        print("\nfigures: " + json.dumps(figures, indent=2))

    assert per_minute <= 7, figures
    assert loop.failures == [], loop.failures[:10]


def test_steady_state_calls_with_everything_on(ec2_env_factory, capsys):
    """The API calls per minute in a steady state stay at one DescribeInstances per poll (6 at poll = 10s)
    with every habit of an Auto Scaling Group on at once: three subnets (zones kept balanced), target
    tracking between min and max with a light request loop, and a scheduled action that fires every minute
    (setting what is already in force)."""
    env = ec2_env_factory(subnets=3)
    text = ec2env.lbd_config(env, poll="10s", grace="60s", health=DEFAULTS, subnets=env.moto.subnet_ids,
                             extra_pool="min = 3\nmax = 6\ntarget_rps = 1000\nscale_out_after = 10s\n"
                                        "scale_in_after = 30s\nscale_in_cooldown = 30s")
    text += "\n[schedule]\naction = steady * * * * * min=3 max=6\n"
    lbd = env.lbd(config_text=text)
    env.wait_steady(3, timeout=90)
    loop = env.request_loop()
    time.sleep(12)

    t0 = time.time()
    time.sleep(65)
    t1 = time.time()
    loop.stop()
    calls = [r for r in env.proxy.requests(since=t0) if r["t"] < t1 and not r["path"].startswith("/latest/")]
    per_minute = len(calls) * 60.0 / (t1 - t0)
    by_action = {}
    for r in calls:
        by_action[r["action"]] = by_action.get(r["action"], 0) + 1
    st = env.status()["control"]
    with capsys.disabled():
        print(f"\nsteady state with zones, target tracking and a schedule: {len(calls)} calls in "
              f"{t1 - t0:.1f} s = {per_minute:.2f} a minute, {by_action}")
    assert st["autoscale"] is not None and st["schedule"] is not None and len(st["zones"]) == 3
    assert lbd.find(r"Schedule: applying 'steady'", since=t0), lbd.log_text(since=t0)[-3000:]
    assert set(by_action) == {"DescribeInstances"}, by_action
    assert per_minute <= 7, (per_minute, by_action)
    assert st["desired"] == 3 and st["launches"] == 3 and st["terminations"] == 0
    assert loop.failures == [], loop.failures[:10]

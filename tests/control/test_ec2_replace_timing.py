"""A relay killed on a running instance, with a request loop running (so live traffic usually takes it
out of rotation before any probe fails), is replaced within the settle time + 1 s of the kill: lbd's
RunInstances for the replacement comes from the early poll, not from the next regular poll. The time lbd
spent waiting on the EC2 API meanwhile (moto's answers, as the fault proxy times them) is not counted: it is
moto's time, which grows on a loaded machine, and a replacement that waited for the regular poll would still
be late by lbd's own clock.

Production health settings (1 s interval, fall 3, rise 2: a settle time of 3 s) and a 10 s poll, so a
replacement that waits for the regular poll is plainly late. A few runs, each killing the oldest
instance's relay; LBD_REPLACE_RUNS (at most 30) sets how many, to measure the distribution by hand.
Prints each run's delay from the kill to RunInstances, and the API's part of it."""

import os
import re
import statistics
import time

import ec2env

HEALTH = {"interval": "1s", "timeout": "1s", "rise": "2", "fall": "3"}
SETTLE = 3.0
RUNS = max(1, min(30, int(os.environ.get("LBD_REPLACE_RUNS", "3"))))


def api_time(requests, start, end):
    """Seconds of [start, end] during which at least one of <requests> (the fault proxy's records) was
    waiting for moto's answer."""
    spans = sorted((max(start, r["t"]), min(end, r["t"] + r.get("elapsed", 0.0))) for r in requests)
    total, reach = 0.0, start
    for lo, hi in spans:
        lo = max(lo, reach)
        if hi > lo:
            total += hi - lo
            reach = hi
    return total


def test_killed_relay_replaced_within_settle(ec2_env):
    env = ec2_env
    config = ec2env.lbd_config(env, poll="10s", grace="3s", health=HEALTH)
    lbd = env.lbd(config_text=config.replace("max_replacements = 10", "max_replacements = 40"))
    env.wait_steady(3, timeout=90)
    time.sleep(3)  # past every instance's grace period
    loop = env.request_loop()
    time.sleep(1)

    delays = []
    for run in range(RUNS):
        instances = sorted(env.moto.instances(["running"]), key=lambda i: (i["LaunchTime"], i["InstanceId"]))
        victim = instances[0]["InstanceId"]
        addr = re.escape(f"{instances[0]['PrivateIpAddress']}:{env.backend_port}")
        t0 = time.time()
        assert env.agent.kill(victim)["killed"]
        run_calls = ec2env.wait_until(lambda: env.proxy.requests(since=t0, action="RunInstances"),
                                      SETTLE + 15, "RunInstances for the replacement")
        t_run = run_calls[0]["t"]
        api = api_time(env.proxy.requests(since=t0), t0, t_run)
        delay = t_run - t0 - api
        down = lbd.find(rf"backend {addr} is down: (.*)", since=t0)
        why = down[0][1].split(" is down: ", 1)[1] if down else "?"
        lists = ", ".join(f"{r['t'] - t0:.2f}+{r.get('elapsed', 0):.2f}"
                          for r in env.proxy.requests(since=t0, action="DescribeInstances"))
        print(f"run {run + 1}: {victim} killed, RunInstances after {t_run - t0:.2f} s, {api:.2f} s of it "
              f"waiting on the API (down: {why}; DescribeInstances at {lists})")
        delays.append(delay)
        env.wait_steady(3, timeout=60)
        assert victim not in env.moto.running_ids()
        time.sleep(3.5)  # the replacement's grace period

    loop.stop()
    print(f"kill -> RunInstances less the API's time over {RUNS} runs: median {statistics.median(delays):.2f} s, "
          f"max {max(delays):.2f} s")
    assert max(delays) <= SETTLE + 1.0, delays
    assert loop.failures == [], loop.failures[:10]
    assert lbd.alive()

"""A relay killed on a running instance, with a request loop running (so live traffic usually takes it
out of rotation before any probe fails), is replaced within the settle time + 1 s of the kill: lbd's
RunInstances for the replacement comes from the early poll, not from the next regular poll.

Production health settings (1 s interval, fall 3, rise 2: a settle time of 3 s) and a 10 s poll, so a
replacement that waits for the regular poll is plainly late. A few runs, each killing the oldest
instance's relay; LBD_REPLACE_RUNS (at most 30) sets how many, to measure the distribution by hand.
Prints each run's delay from the kill to RunInstances."""

import os
import re
import statistics
import time

import ec2env

HEALTH = {"interval": "1s", "timeout": "1s", "rise": "2", "fall": "3"}
SETTLE = 3.0
RUNS = max(1, min(30, int(os.environ.get("LBD_REPLACE_RUNS", "3"))))


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
        delay = run_calls[0]["t"] - t0
        down = lbd.find(rf"backend {addr} is down: (.*)", since=t0)
        why = down[0][1].split(" is down: ", 1)[1] if down else "?"
        lists = ", ".join(f"{r['t'] - t0:.2f}+{r.get('elapsed', 0):.2f}"
                          for r in env.proxy.requests(since=t0, action="DescribeInstances"))
        print(f"run {run + 1}: {victim} killed, RunInstances after {delay:.2f} s (down: {why}; "
              f"DescribeInstances at {lists})")
        delays.append(delay)
        env.wait_steady(3, timeout=60)
        assert victim not in env.moto.running_ids()
        time.sleep(3.5)  # the replacement's grace period

    loop.stop()
    print(f"kill -> RunInstances over {RUNS} runs: median {statistics.median(delays):.2f} s, "
          f"max {max(delays):.2f} s")
    assert max(delays) <= SETTLE + 1.0, delays
    assert loop.failures == [], loop.failures[:10]
    assert lbd.alive()

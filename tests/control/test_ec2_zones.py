"""Zones: [ec2] subnets spreads the pool over three subnets (one per Availability Zone), 1/1/1. With
RunInstances in one subnet failing with InsufficientInstanceCapacity (a fault injected in front of moto for
that SubnetId), the pool is launched at desired in the other two; once the subnet has capacity again lbd
rebalances, launching in it before terminating in the fullest, never below desired, with a request loop
through lbd and not one failed request. lbctl status groups the backends by zone."""

import collections
import re
import time

import localenv
from ec2env import ServingMonitor, lbd_config, wait_until


def _by_subnet(env):
    return collections.Counter(i["SubnetId"] for i in env.moto.instances(["running"]))


def _config(env, **kw):
    return lbd_config(env, subnets=env.moto.subnet_ids, extra_pool="zone_backoff = 2s", **kw)


def test_three_subnets_spread(ec2_env_factory):
    env = ec2_env_factory(subnets=3)
    env.lbd(config_text=_config(env))
    env.wait_steady(3, timeout=60)
    assert _by_subnet(env) == {s: 1 for s in env.moto.subnet_ids}
    # One RunInstances per subnet, each asking for one.
    runs = [r for r in env.proxy.requests(action="RunInstances") if r["status"] == 200]
    assert sorted(r["subnet"] for r in runs) == sorted(env.moto.subnet_ids)
    assert {b["subnet"] for b in env.status()["backends"]} == set(env.moto.subnet_ids)
    zones = env.status()["control"]["zones"]
    assert [z["subnet"] for z in zones] == env.moto.subnet_ids
    assert all(z["instances"] == 1 and z["capacity_refusals"] == 0 for z in zones), zones

    out = localenv.lbctl("-a", f"127.0.0.1:{env.admin_port}", "status")
    assert out.returncode == 0, out.stderr
    zones = re.findall(r"^zone (subnet-\S+): (\d+) instances?$", out.stdout, re.M)
    assert sorted(zones) == sorted((s, "1") for s in env.moto.subnet_ids), out.stdout


def test_subnet_without_capacity(ec2_env_factory):
    env = ec2_env_factory(subnets=3)
    full = env.moto.subnet_ids[2]
    env.proxy.fault("capacity", seconds=20, actions=["RunInstances"], subnet=full)
    t0 = time.time()
    lbd = env.lbd(config_text=_config(env))
    env.wait_steady(3, timeout=60)
    counts = _by_subnet(env)
    assert counts[full] == 0 and sum(counts.values()) == 3, counts
    assert max(counts.values()) == 2, counts
    lbd.wait_log(rf"Zone {full} has no capacity for 1 instance: launching in the other zones", 5, since=t0)
    refused = [r for r in env.proxy.requests(since=t0, action="RunInstances") if r.get("fault") == "capacity"]
    assert refused and all(r["subnet"] == full for r in refused)
    zone = {z["subnet"]: z for z in env.status()["control"]["zones"]}[full]
    assert zone["instances"] == 0 and zone["capacity_refusals"] >= 1, zone

    loop = env.request_loop()
    monitor = ServingMonitor(env)
    # Rebalanced once the subnet has capacity again: 1/1/1, the new one in it.
    wait_until(lambda: _by_subnet(env) == {s: 1 for s in env.moto.subnet_ids} and len(env.moto.instances()) == 3,
               90, "the zones rebalanced", interval=0.5)
    env.wait_steady(3, timeout=30)
    time.sleep(2)
    monitor.stop()
    loop.stop()
    lbd.wait_log(rf"Zones unbalanced .* launching one in {full}", 5, since=t0)
    assert monitor.min >= 3, f"only {monitor.min} backends in rotation at one point"
    assert loop.ok > 100
    assert loop.failures == [], loop.failures[:10]
    # Make before break: exactly one launched to rebalance, in the subnet back, beyond the three of the start.
    ok_runs = [r for r in env.proxy.requests(since=t0, action="RunInstances") if r["status"] == 200]
    assert len(ok_runs) == 4, ok_runs
    assert ok_runs[-1]["subnet"] == full
    lbd.wait_log(r"Terminated instance i-\S+: beyond desired \(rebalancing zones\)", 5, since=t0)
    st = env.status()["control"]
    assert st["replacements_in_window"] == 0

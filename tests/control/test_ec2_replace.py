"""Replacement: an instance terminated from outside, one stopped from outside, and one whose relay
process dies while EC2 still says "running" are each replaced, with a request loop through lbd running
the whole time and not one failed request."""

import time

import ec2env


def _replaced(env, old_ids, gone, timeout=60):
    """Waits for three serving instances, none of them <gone>; returns the new set."""
    env.wait_steady(3, timeout=timeout)
    now = set(env.moto.running_ids())
    assert gone not in now
    assert len(now - set(old_ids)) == 1, (old_ids, now)
    return sorted(now)


def test_replacements(ec2_env):
    env = ec2_env
    lbd = env.lbd()
    env.wait_steady(3, timeout=60)
    loop = env.request_loop()
    time.sleep(1)

    # 1. Terminated from outside.
    ids = env.moto.running_ids()
    victim = ids[0]
    env.moto.ec2.terminate_instances(InstanceIds=[victim])
    ids = _replaced(env, ids, victim)
    print(f"terminated {victim} replaced")

    # 2. Stopped from outside: lbd terminates it (a stopped backend is no backend) and replaces it.
    victim = ids[1]
    t0 = time.time()
    env.moto.ec2.stop_instances(InstanceIds=[victim])
    ids = _replaced(env, ids, victim)
    state = env.moto.ec2.describe_instances(InstanceIds=[victim])["Reservations"][0]["Instances"][0]["State"]
    assert state["Name"] in ("shutting-down", "terminated"), state
    assert [r for r in env.proxy.requests(since=t0, action="TerminateInstances") if r["status"] == 200]
    print(f"stopped {victim} terminated and replaced")

    # 3. The relay process killed while EC2 says running: health checks fail, lbd terminates it.
    victim = ids[2]
    t0 = time.time()
    assert env.agent.kill(victim)["killed"]
    ids = _replaced(env, ids, victim)
    assert lbd.find(f"{victim}.*health", since=t0), lbd.log_text(since=t0)
    state = env.moto.ec2.describe_instances(InstanceIds=[victim])["Reservations"][0]["Instances"][0]["State"]
    assert state["Name"] in ("shutting-down", "terminated"), state
    print(f"{victim} with a dead relay terminated and replaced")

    time.sleep(2)
    loop.stop()
    assert loop.ok > 100
    assert loop.failures == [], loop.failures[:10]
    assert lbd.alive()
    # Exactly three left in EC2, all healthy.
    assert len(env.moto.instances()) == 3

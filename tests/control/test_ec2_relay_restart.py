"""A relay that crashes and is started again on its instance (as lbd-relay.service's Restart= does) comes
back into rotation, and its instance is kept: no RunInstances, no TerminateInstances, with the production
health settings (1 s interval, fall 3, rise 2: a settle time of 3 s from the moment lbd marks it down) and
a request loop running, not one failed request.

The relay comes back 1.8 s after lbd marked it down: its first passing check falls before the settle time
ends, its second (rise = 2) mostly after. That is the case the reconciler must not judge failed: without
that rule this test fails in about three runs of four. A relay that stays dead is replaced
(test_ec2_replace)."""

import re
import time

import ec2env

DEFAULTS = {"interval": "1s", "timeout": "1s", "rise": "2", "fall": "3"}


def test_restarted_relay_keeps_its_instance(ec2_env):
    env = ec2_env
    lbd = env.lbd(config_text=ec2env.lbd_config(env, poll="1s", grace="5s", health=DEFAULTS))
    env.wait_steady(3, timeout=90)
    time.sleep(6)  # past every instance's grace period
    loop = env.request_loop()
    time.sleep(1)

    ids = env.moto.running_ids()
    victim = ids[0]
    ip = next(i["PrivateIpAddress"] for i in env.moto.instances() if i["InstanceId"] == victim)
    addr = re.escape(f"{ip}:{env.backend_port}")
    t0 = time.time()
    assert env.agent.kill(victim)["killed"]
    down = lbd.wait_log(rf"backend {addr} is down", timeout=10, since=t0)[0][0]
    time.sleep(max(0.0, down + 1.8 - time.time()))
    assert env.agent.revive(victim)["revived"]
    assert lbd.wait_log(rf"backend {addr} is up", timeout=10, since=down)
    time.sleep(5)  # the settle time and several polls later: still nothing launched or terminated
    loop.stop()

    calls = [r for r in env.proxy.requests(since=t0) if r["action"] in ("RunInstances", "TerminateInstances")]
    assert calls == [], calls
    assert sorted(env.moto.running_ids()) == sorted(ids)
    assert loop.failures == [], loop.failures[:10]
    assert loop.ok > 20

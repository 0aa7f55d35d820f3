"""The desired count changes on SIGHUP without a restart: 3 -> 5 -> 2, with the request loop running
throughout and no failed request."""

import signal
import time

import ec2env


def test_scale_by_sighup(ec2_env):
    env = ec2_env
    lbd = env.lbd()
    env.wait_steady(3, timeout=60)
    pid = lbd.proc.pid
    loop = env.request_loop()

    lbd.config_path.write_text(ec2env.lbd_config(env, desired=5))
    lbd.signal(signal.SIGHUP)
    env.wait_steady(5, timeout=60)
    five = env.moto.running_ids()

    t0 = time.time()
    lbd.config_path.write_text(ec2env.lbd_config(env, desired=2))
    lbd.signal(signal.SIGHUP)
    env.wait_steady(2, timeout=60)
    two = env.moto.running_ids()
    assert set(two) <= set(five)  # scaling in terminates, it doesn't replace
    assert env.proxy.requests(since=t0, action="RunInstances") == []

    time.sleep(2)
    loop.stop()
    assert lbd.alive() and lbd.proc.pid == pid
    assert loop.ok > 100
    assert loop.failures == [], loop.failures[:10]

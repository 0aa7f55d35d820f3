"""lbd killed with SIGKILL and started again adopts the three instances it finds by their tag and
launches none."""

import signal
import time


def test_restart_adopts(ec2_env):
    env = ec2_env
    lbd = env.lbd()
    env.wait_steady(3, timeout=60)
    before = env.moto.running_ids()
    loop = env.request_loop()
    time.sleep(2)
    loop.stop()
    assert loop.failures == [], loop.failures[:5]

    lbd.kill9()
    assert lbd.proc.returncode == -signal.SIGKILL
    t0 = time.time()
    lbd.start()
    env.wait_steady(3, timeout=30)
    # Let it run several polls: still nothing launched, nothing terminated.
    loop = env.request_loop()
    time.sleep(5)
    loop.stop()
    assert env.moto.running_ids() == before
    assert env.proxy.requests(since=t0, action="RunInstances") == []
    assert env.proxy.requests(since=t0, action="TerminateInstances") == []
    assert len(env.moto.instances()) == 3
    assert not lbd.find("Launching", since=t0)
    assert loop.ok > 50
    assert loop.failures == [], loop.failures[:5]

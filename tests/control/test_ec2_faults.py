"""The EC2 API failing for a while: throttling (RequestLimitExceeded), 503s and stalled connections from
the fault proxy in front of moto. lbd backs off (visible in its log), terminates and launches nothing on
stale data, keeps serving every request, and is back to normal once the API is."""

import time

RETRY = r"EC2 DescribeInstances {what} \({reason}\); retrying in [0-9]+\.[0-9] s \(attempt [2-5]/5\)"


def _describe_ok_after(env, t):
    return [r for r in env.proxy.requests(since=t, action="DescribeInstances") if r["status"] == 200]


def test_api_faults(ec2_env):
    env = ec2_env
    lbd = env.lbd()
    env.wait_steady(3, timeout=60)
    ids = env.moto.running_ids()
    loop = env.request_loop()
    t_start = time.time()

    # Throttling.
    t0 = time.time()
    env.proxy.fault("throttle", seconds=6)
    lbd.wait_log(RETRY.format(what="throttled", reason="RequestLimitExceeded"), timeout=10, since=t0)
    time.sleep(6)
    end = time.time()
    env.wait_steady(3, timeout=15)
    from ec2env import wait_until
    wait_until(lambda: _describe_ok_after(env, end), 10, "a successful DescribeInstances after the fault")

    # 503 from a load balancer in front of the API.
    t0 = time.time()
    env.proxy.fault("503", seconds=6)
    lbd.wait_log(RETRY.format(what="failed", reason="HTTP 503"), timeout=10, since=t0)
    time.sleep(6)
    end = time.time()
    wait_until(lambda: _describe_ok_after(env, end), 10, "a successful DescribeInstances after the fault")

    # Stalls: connections that never answer, longer than the client's timeout.
    t0 = time.time()
    env.proxy.fault("stall", seconds=24)
    lbd.wait_log(RETRY.format(what="failed", reason=".*[Tt]imeout.*|.*timed out.*"), timeout=30, since=t0)
    end = t0 + 24
    wait_until(lambda: _describe_ok_after(env, end), 40, "a successful DescribeInstances after the stall")

    env.wait_steady(3, timeout=20)
    time.sleep(2)
    loop.stop()

    assert env.moto.running_ids() == ids
    assert env.proxy.requests(since=t_start, action="TerminateInstances") == []
    assert env.proxy.requests(since=t_start, action="RunInstances") == []
    assert not lbd.find("Terminating", since=t_start)
    faulted = [r for r in env.proxy.requests(since=t_start) if r.get("fault")]
    assert len(faulted) >= 3
    assert lbd.alive()
    assert loop.ok > 100
    assert loop.failures == [], loop.failures[:10]

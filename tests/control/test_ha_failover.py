"""Two lbd hosts on one pool, one leader ([lease]): the leader is killed with SIGKILL under a bounded
request loop sent to both hosts. The other host takes the lease within the lease time plus one renewal,
moves the Elastic IP to its own instance, and from then on launches and terminates (in its epoch, which
the launched instance's lbd:epoch tag carries); it never stopped serving; no instance is ever launched
or terminated twice. The failover time is printed."""

import time

import ec2env


def test_leader_killed(ha_env):
    ha = ha_env
    env = ha.env
    a, b = ha.two_hosts()
    assert a.leads() and not b.leads()
    ec2env.wait_until(lambda: ha.eip_instance() == a.instance_id, 20, "the Elastic IP on lb-a's instance")
    epoch_a = a.lease()["epoch"]
    # The follower lists and serves, and has never acted.
    assert b.status()["control"]["launches"] == 0
    assert "lbd_lease_is_leader 0" in b.metrics()
    assert any(p["name"] == "lb-a" and p["leader"] for p in b.lease()["peers"])

    loop_a = ec2env.RequestLoop(env.lbd_port, host=a.ip, interval=0.05, max_seconds=120)
    loop_b = ec2env.RequestLoop(env.lbd_port, host=b.ip, interval=0.05, max_seconds=120)
    env.loops.extend([loop_a, loop_b])
    time.sleep(1.0)

    t_kill = time.time()
    a.lbd.kill9()
    ha.wait_leader(b, timeout=60)
    failover = time.time() - t_kill
    lease = ha.lease
    print(f"failover: lb-b leads {failover:.2f} s after lb-a's SIGKILL "
          f"(lease {lease['duration']} s, renew {lease['renew']} s)")
    # The lease could be renewed an instant before the kill: it runs its whole duration, then the next
    # attempt takes it. Room for a loaded machine on top.
    assert failover <= lease["duration"] + lease["renew"] + 3.0, failover
    epoch_b = b.lease()["epoch"]
    assert epoch_b == epoch_a + 1
    ec2env.wait_until(lambda: ha.eip_instance() == b.instance_id, 20, "the Elastic IP on lb-b's instance")
    assert "lbd_lease_is_leader 1" in b.metrics()
    assert "lbd_lease_changes_total 1" in b.metrics()

    # The new leader acts: a backend whose relay dies is terminated and replaced, by lb-b, in its epoch.
    victim = env.moto.running_ids()[0]
    env.agent.kill(victim)
    ec2env.wait_until(lambda: victim not in env.moto.running_ids(), 60, f"{victim} terminated")
    ha.wait_pool(2)
    loop_b.stop()
    loop_a.stop()

    assert b.lbd.find(rf"Terminated instance {victim}")
    new = [i for i in env.moto.instances(["running"]) if i["InstanceId"] != victim]
    tags = {i["InstanceId"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])} for i in new}
    launched_by_b = [iid for iid, t in tags.items() if t.get("lbd:epoch") == str(epoch_b)]
    assert len(launched_by_b) == 1, tags
    assert all(t.get("lbd:epoch") in (str(epoch_a), str(epoch_b)) for t in tags.values()), tags
    ha.assert_each_once()
    assert ha.launch_epochs() == {epoch_a: {"lb-a"}, epoch_b: {"lb-b"}}

    # lb-b served throughout: its loop saw no failure.
    assert loop_b.ok > 0
    assert not loop_b.failures, loop_b.failures[:5]

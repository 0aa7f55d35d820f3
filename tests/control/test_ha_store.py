"""The lease store's failures, with two lbd hosts on one pool ([lease]):
- the leader cut off from PostgreSQL (a TCP fault proxy in front of the database, on its path only) but
  not from EC2 stops acting before the other host's lease can begin, by the database's own clock (the
  same machine's), and whatever it launched carries its old epoch;
- PostgreSQL down for 60 s: both hosts keep serving under a request loop without one failed request,
  neither acts (a backend that fails meanwhile is left alone: no mutating EC2 call in the fault proxy's
  record of what reached moto, none in either host's log), both show the store down in /status and
  `lbctl status`, and both recover by themselves: one leads, the failed backend is replaced exactly
  once."""

import time

import ec2env


def lease_row(ha):
    rows = ha.pg.sql("SELECT holder, epoch, extract(epoch FROM expires_at) FROM lbd_lease WHERE pool = 'main'")
    return (rows[0][0], int(rows[0][1]), float(rows[0][2])) if rows else None


def test_leader_cut_off_from_the_database(ha_env):
    ha = ha_env
    env = ha.env
    a, b = ha.two_hosts(a_through_fault=True)
    epoch_a = a.lease()["epoch"]

    t_cut = time.time()
    a.fault.cut(True)
    # A backend fails right away: lb-a may still replace it while its lease holds, never after.
    victim = env.moto.running_ids()[0]
    env.agent.kill(victim)

    # Watch the row directly: the last expiry the database gave lb-a, until lb-b holds it.
    last_a_expiry = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = lease_row(ha)
        if row and row[0] == "lb-a":
            last_a_expiry = row[2]
        if row and row[0] == "lb-b":
            break
        time.sleep(0.2)
    else:
        raise AssertionError("lb-b never took the lease")
    assert last_a_expiry is not None
    ha.wait_leader(b, timeout=30)
    stopped = a.lbd.wait_log(r"not renewed in time.*stops acting", 10, since=t_cut)[0][0]
    print(f"lb-a stopped acting {stopped - t_cut:.2f} s after the cut, "
          f"{last_a_expiry - stopped:.2f} s before its lease expired in the database")
    # Before the database could give the lease to anyone else.
    assert stopped < last_a_expiry
    taken = b.lbd.wait_log(r"This host \(lb-b\) leads pool main in epoch", 10)[0][0]
    assert stopped < taken
    assert b.lease()["epoch"] == epoch_a + 1
    # lb-a never acted after it stopped.
    late = [l for t, l in a.lbd.log(since=stopped) if "Launching" in l or "Terminating" in l]
    assert not late, late
    assert a.lease()["store_up"] is False

    ha.wait_pool(2)
    ec2env.wait_until(lambda: ha.eip_instance() == b.instance_id, 20, "the Elastic IP on lb-b's instance")
    epochs = ha.launch_epochs()
    assert all(len(hosts) == 1 for hosts in epochs.values()), epochs
    assert epochs.get(epoch_a, {"lb-a"}) == {"lb-a"}
    # Every instance carries the epoch of the host that launched it.
    for inst in env.moto.instances(["running"]):
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        assert tags.get("lbd:epoch") in (None, str(epoch_a), str(epoch_a + 1)), tags
    ha.assert_each_once()

    # Back in touch: lb-a follows.
    a.fault.cut(False)
    ec2env.wait_until(lambda: a.lease().get("store_up") and a.lease().get("holder") == "lb-b", 30,
                      "lb-a to see lb-b lead")
    assert not a.leads()


OUTAGE = 60.0
MUTATING = ("RunInstances", "TerminateInstances", "AssociateAddress", "DisassociateAddress", "CreateTags",
            "DeleteTags", "StopInstances", "StartInstances")


def test_database_down(ha_env):
    ha = ha_env
    env = ha.env
    t_begin = time.time()
    a, b = ha.two_hosts()

    loops = [ec2env.RequestLoop(env.lbd_port, host=h.ip, interval=0.05, max_seconds=240) for h in (a, b)]
    env.loops.extend(loops)
    time.sleep(1.0)

    t_down = time.time()
    ha.pg.stop()
    ec2env.wait_until(lambda: not a.leads(), ha.lease["duration"] + 5, "lb-a to stop acting")
    t_quiet = time.time()
    ec2env.wait_until(lambda: a.lease().get("store_up") is False and b.lease().get("store_up") is False, 15,
                      "both hosts to show the store down")
    assert not b.leads()
    for h in (a, b):
        assert "lease store DOWN" in h.lbctl_status()
    victim = env.moto.running_ids()[0]
    env.agent.kill(victim)
    # The outage lasts 60 s in all; nobody may act on the failed backend meanwhile, and both show it.
    while time.time() < t_down + OUTAGE:
        time.sleep(1.0)
        for h in (a, b):
            lease = h.lease()
            assert lease.get("store_up") is False and not lease.get("leader"), (h.name, lease)
    down_for = a.lease().get("store_down_s", 0)
    assert down_for >= OUTAGE - 15, a.lease()
    assert "lease store DOWN" in a.lbctl_status()
    assert victim in env.moto.running_ids()
    acts = [r for r in env.proxy.requests(since=t_quiet) if r["action"] in MUTATING]
    assert not acts, acts
    for h in (a, b):
        late = h.lbd.find(r"Launching|Terminating|Associat", since=t_quiet)
        assert not late, (h.name, late)
    # Both kept listing the pool, and serving.
    assert env.proxy.requests(since=t_quiet, action="DescribeInstances")
    served = [l.ok for l in loops]

    ha.pg.start()
    t_up = time.time()
    ec2env.wait_until(lambda: a.leads() or b.leads(), 30, "a leader again")
    ec2env.wait_until(lambda: a.lease().get("store_up") and b.lease().get("store_up"), 15,
                      "both hosts to see the store again")
    print(f"PostgreSQL down {t_up - t_down:.0f} s (shown down for {down_for:.0f} s); a leader again "
          f"{time.time() - t_up:.2f} s after it came back; the test took {time.time() - t_begin:.0f} s so far")
    # Logged once per episode, on each host, however many attempts failed.
    for h in (a, b):
        assert len(h.lbd.find(r"Lease store unreachable", since=t_down)) == 1, h.lbd.log_text(since=t_down)[-3000:]
        assert len(h.lbd.find(r"Lease store answers again", since=t_down)) == 1
        assert h.lbd.find(r"Lease store answers again after (5\d|6\d|7\d) s", since=t_down)
    ec2env.wait_until(lambda: victim not in env.moto.running_ids(), 60, f"{victim} replaced")
    ha.wait_pool(2)
    for loop in loops:
        loop.stop()
    assert all(l.ok > s for l, s in zip(loops, served))
    for loop in loops:
        assert not loop.failures, loop.failures[:5]
    assert [t for t in ha.terminated_ids() if t == victim] == [victim]
    ha.assert_each_once()


def test_stop_while_cut_off(ha_env):
    """A planned stop of the leader while the store does not answer: the release gives up after [lease]
    timeout and lbd exits anyway; the lease then expires as after a crash, and nobody leads before."""
    ha = ha_env
    a, b = ha.two_hosts(a_through_fault=True)
    epoch_a = a.lease()["epoch"]
    a.fault.cut(True)
    t_term = time.time()
    a.lbd.stop()
    stopped = time.time() - t_term
    # Still lb-a's, with the expiry of its last renewal: nothing reached the database.
    holder, epoch, expiry = lease_row(ha)
    assert (holder, epoch) == ("lb-a", epoch_a)
    assert expiry > time.time()
    assert a.lbd.find(r"Lease of pool main not released \(.*\): another host takes it when it expires")
    assert not a.lbd.find(r"Lease of pool main released")
    # The release waited [lease] timeout at most; the rest is the drain's (nothing to drain here).
    assert stopped <= ha.lease["timeout"] + 3.0, stopped
    ha.wait_leader(b, timeout=30)
    taken = b.lbd.wait_log(r"This host \(lb-b\) leads pool main in epoch", 10)[0][0]
    print(f"lb-a stopped {stopped:.2f} s after SIGTERM with the store cut off; lb-b led "
          f"{taken - t_term:.2f} s after it")
    # Not before lb-a's lease had expired in the database (the same machine's clock).
    assert taken >= expiry - 0.5, (taken, expiry)
    assert b.lease()["epoch"] == epoch_a + 1

"""Forced leader changes in a row with two lbd hosts on one pool ([lease], a short lease): the leader is
SIGKILLed and restarted, paused with SIGSTOP and resumed, or stopped with SIGTERM and restarted, in
turn; a backend fails during some of the changes. Never two hosts leading in one epoch, nothing launched
in an epoch by a host that did not lead it, no instance launched or terminated twice, the pool never
beyond desired + 1 (a replacement is launched before the failed instance goes), and at desired at the
end."""

import signal
import time

import ec2env

CHANGES = 20
DESIRED = 2


class PoolWatch(ec2env.ServingMonitor):
    """Samples the pool's live instances in moto every 0.5 s (bounded in time): the most it saw."""

    def __init__(self, moto, max_seconds=400):
        self.ec2 = moto.client("ec2")
        self.most = 0
        super().__init__(None, max_seconds=max_seconds)

    def _run(self):
        while not self.stop_event.is_set() and time.monotonic() < self.deadline:
            try:
                resp = self.ec2.describe_instances(Filters=[
                    {"Name": f"tag:{ec2env.TAG_KEY}", "Values": [ec2env.TAG_VALUE]},
                    {"Name": "instance-state-name", "Values": ["pending", "running"]}])
                self.most = max(self.most, sum(len(res["Instances"]) for res in resp["Reservations"]))
            except Exception:  # noqa: BLE001 - a failed sample is only a missing sample
                pass
            self.stop_event.wait(0.5)


def test_leader_changes_in_a_row(ha_env):
    ha = ha_env
    ha.lease = {"duration": 4.0, "renew": 0.8, "margin": 1.5, "timeout": 0.8}
    env = ha.env
    hosts = list(ha.two_hosts())
    watch = PoolWatch(env.moto)
    t0 = time.time()
    failed = []
    try:
        for i in range(CHANGES):
            leader = next(h for h in hosts if h.leads())
            other = hosts[1] if leader is hosts[0] else hosts[0]
            ec2env.wait_until(lambda: other.lease().get("holder") == leader.name, 30,
                              f"{other.name} to follow {leader.name}")
            kind = ("kill", "stop", "term")[i % 3]
            if kind == "kill":
                leader.lbd.kill9()
            elif kind == "stop":
                leader.lbd.signal(signal.SIGSTOP)
            else:
                leader.lbd.stop()
            if i % 4 == 1:
                victim = env.moto.running_ids()[0]
                env.agent.kill(victim)
                failed.append(victim)
            ha.wait_leader(other, timeout=30)
            if kind == "stop":
                leader.lbd.signal(signal.SIGCONT)
            else:
                leader.lbd.start()
            ec2env.wait_until(lambda: leader.lease().get("holder") == other.name, 30,
                              f"{leader.name} back, following {other.name}")
            assert not leader.leads()
        print(f"{CHANGES} leader changes in {time.time() - t0:.1f} s")
        ha.wait_pool(DESIRED, timeout=120)
    finally:
        watch.stop()

    by_epoch = ha.leaders_by_epoch()
    assert len(by_epoch) >= CHANGES + 1, by_epoch
    assert all(len(names) == 1 for names in by_epoch.values()), by_epoch
    for epoch, names in ha.launch_epochs().items():
        assert names == by_epoch.get(epoch), (epoch, names, by_epoch.get(epoch))
    ha.assert_each_once()
    # Each failed backend was terminated (at most once in the logs: a leader killed with the call in
    # flight never logs it) and is gone.
    terminated = ha.terminated_ids()
    running = env.moto.running_ids()
    for victim in failed:
        assert terminated.count(victim) <= 1, (victim, terminated)
        assert victim not in running
    assert watch.most <= DESIRED + 1, watch.most
    assert len(env.moto.running_ids()) == DESIRED

"""Instance refresh: new launch settings (a reload) replace the pool's instances in batches, with a request
loop through lbd the whole time and not one failed request; never fewer than min_healthy of desired
serving (100 %: launch before terminate); a refresh whose new instances never become healthy rolls back;
lbd SIGKILLed in the middle finishes it after a restart without launching more than it replaces; the
storm guard counts none of it."""

import signal
import time

import ec2env
import localenv
from ec2env import ServingMonitor, lbd_config, wait_until

EXTRA_POOL = "refresh_warmup = 1s\nrefresh_timeout = 40s"


def _refresh(env):
    return env.status()["control"]["refresh"]


def _instances(env, **filters):
    """Every pool instance ever launched (terminated included) matching instance-type etc."""
    f = [{"Name": f"tag:{ec2env.TAG_KEY}", "Values": [ec2env.TAG_VALUE]}]
    f += [{"Name": k, "Values": [v]} for k, v in filters.items()]
    out = []
    for res in env.moto.ec2.describe_instances(Filters=f)["Reservations"]:
        out.extend(res["Instances"])
    return out


def _hash_tag(inst):
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}.get("lbd:launch-hash")


def _reload(lbd, text):
    lbd.config_path.write_text(text)
    lbd.signal(signal.SIGHUP)


def _reload_failing(env, lbd, tmp_path, extra_pool, extra_ec2=""):
    """Reloads with new user data that points the relays at a port nobody listens on: they never pass a
    check."""
    dead = ec2env.free_port()
    bad = tmp_path / "bad-user-data.sh"
    bad.write_text(ec2env.USER_DATA_TEMPLATE.format(port=env.backend_port).replace(
        "{{upstream}}", f"127.0.0.1:{dead}"))
    _reload(lbd, lbd_config(env, extra_pool=extra_pool, extra_ec2=extra_ec2).replace(str(env.user_data_path),
                                                                                  str(bad)))


def _wait_back_on(env, old_hash):
    """Waits until the pool is 3 running instances with the launch settings <old_hash>, all healthy."""
    def back_on_old():
        running = env.moto.instances(["running"])
        return (len(running) == 3 and all(_hash_tag(i) == old_hash for i in running)
                and env.healthy() == 3)
    wait_until(back_on_old, 60, "3 instances with the old settings, all healthy", interval=0.5)


def test_refresh_replaces_all(ec2_env):
    env = ec2_env
    lbd = env.lbd(extra_pool=EXTRA_POOL)
    env.wait_steady(3, timeout=60)
    old = env.moto.running_ids()
    old_hash = env.status()["control"]["launch_hash"]
    assert old_hash and all(_hash_tag(i) == old_hash for i in env.moto.instances())
    assert {b["launch_hash"] for b in env.status()["backends"]} == {old_hash}
    loop = env.request_loop()
    monitor = ServingMonitor(env)
    time.sleep(1)

    t0 = time.time()
    _reload(lbd, lbd_config(env, extra_pool=EXTRA_POOL).replace("instance_type = t3.micro",
                                                                "instance_type = t3.small"))
    wait_until(lambda: _refresh(env)["state"] == "running", 15, "the refresh to start")
    new_hash = env.status()["control"]["launch_hash"]
    assert new_hash != old_hash
    lbd.wait_log(r"Instance refresh started: 3 of 3 instances have other launch settings", 5, since=t0)

    wait_until(lambda: _refresh(env)["state"] == "done", 150, "the refresh to finish", interval=0.5)
    env.wait_steady(3, timeout=30)
    time.sleep(2)
    monitor.stop()
    loop.stop()

    now = env.moto.running_ids()
    assert not set(now) & set(old), (old, now)
    for inst in env.moto.instances(["running"]):
        assert inst["InstanceType"] == "t3.small"
        assert _hash_tag(inst) == new_hash
    # Exactly as many launched as replaced, and every old one terminated.
    assert len(_instances(env, **{"instance-type": "t3.small"})) == 3
    for iid in old:
        st = env.moto.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]
        assert st["Name"] in ("shutting-down", "terminated"), (iid, st)
    assert monitor.samples > 50
    assert monitor.min >= 3, f"only {monitor.min} backends in rotation at one point"
    assert loop.ok > 100
    assert loop.failures == [], loop.failures[:10]
    st = env.status()["control"]
    assert st["replacements_in_window"] == 0 and not st["storm_guard"]
    assert st["refresh"]["replaced"] == 3
    assert {b["launch_hash"] for b in env.status()["backends"]} == {new_hash}
    out = localenv.lbctl("-a", f"127.0.0.1:{env.admin_port}", "status")
    assert out.returncode == 0, out.stderr
    assert "instance refresh done" in out.stdout
    assert "LAUNCH" in out.stdout and new_hash in out.stdout and "(old)" not in out.stdout


def test_refresh_rolls_back(ec2_env, tmp_path):
    env = ec2_env
    lbd = env.lbd(extra_pool=EXTRA_POOL)
    env.wait_steady(3, timeout=60)
    old = env.moto.running_ids()
    loop = env.request_loop()
    time.sleep(1)

    t0 = time.time()
    _reload_failing(env, lbd, tmp_path, EXTRA_POOL)
    wait_until(lambda: _refresh(env)["state"] == "rolled-back", 90, "the refresh to roll back", interval=0.5)
    lbd.wait_log(r"Instance refresh rolled-back: instance i-\S+ with the new settings did not become healthy",
                 5, since=t0)
    # The new instance goes; the old ones stay, and nothing more is launched.
    wait_until(lambda: env.moto.running_ids() == old and len(env.moto.instances()) == 3, 30,
               "the new instance to be terminated")
    launched = len(env.proxy.requests(since=t0, action="RunInstances"))
    time.sleep(5)
    loop.stop()
    assert env.moto.running_ids() == old
    assert len(env.proxy.requests(since=t0, action="RunInstances")) == launched
    assert env.healthy() == 3
    assert loop.ok > 100
    assert loop.failures == [], loop.failures[:10]
    st = env.status()["control"]
    assert st["refresh"]["state"] == "rolled-back" and "did not become healthy" in st["refresh"]["reason"]
    assert st["replacements_in_window"] == 0


def test_refresh_rollback_relaunches_old(ec2_env, tmp_path):
    """min_healthy low enough that an old instance is replaced before the new ones show they fail: the
    rollback relaunches the old settings (kept in memory across the reload), so the pool ends at desired
    with every instance on the old settings, and not one request fails."""
    env = ec2_env
    extra = EXTRA_POOL + "\nrefresh_min_healthy = 34"
    lbd = env.lbd(extra_pool=extra)
    env.wait_steady(3, timeout=60)
    old = env.moto.running_ids()
    old_hash = env.status()["control"]["launch_hash"]
    loop = env.request_loop()
    monitor = ServingMonitor(env)
    time.sleep(1)

    t0 = time.time()
    _reload_failing(env, lbd, tmp_path, extra)
    # An old one goes before any new one could count (2 of 3 keep serving).
    wait_until(lambda: len(set(old) - set(env.moto.running_ids())) >= 1, 60, "an old instance replaced",
               interval=0.5)
    wait_until(lambda: _refresh(env)["state"] == "rolled-back", 90, "the refresh to roll back", interval=0.5)
    lbd.wait_log(r"Launching 1 instance .*with the old launch settings " + old_hash, 15, since=t0)
    _wait_back_on(env, old_hash)
    time.sleep(2)
    monitor.stop()
    loop.stop()

    running = env.moto.instances(["running"])
    assert len(set(i["InstanceId"] for i in running) - set(old)) >= 1  # relaunched, not only kept
    assert {b["launch_hash"] for b in env.status()["backends"]} == {old_hash}
    assert monitor.min >= 2, f"only {monitor.min} backends in rotation at one point"
    assert loop.ok > 100
    assert loop.failures == [], loop.failures[:10]
    st = env.status()["control"]
    assert st["refresh"]["state"] == "rolled-back"
    assert "with the old settings " + old_hash in st["refresh"]["reason"]
    assert st["refresh"]["replaced"] >= 1


def test_refresh_rollback_after_restart(ec2_env, tmp_path):
    """[ec2] previous_settings: lbd SIGKILLed after a batch of a failing refresh was replaced, started again
    with the failing settings, reads the old ones back from that file, and the rollback relaunches them:
    the pool ends at desired on the old settings."""
    env = ec2_env
    extra = EXTRA_POOL + "\nrefresh_min_healthy = 34"
    saved = tmp_path / "previous-launch-settings"
    lbd = env.lbd(config_text=lbd_config(env, extra_pool=extra, extra_ec2=f"previous_settings = {saved}"))
    env.wait_steady(3, timeout=60)
    old = env.moto.running_ids()
    old_hash = env.status()["control"]["launch_hash"]

    t0 = time.time()
    _reload_failing(env, lbd, tmp_path, extra, extra_ec2=f"previous_settings = {saved}")
    wait_until(lambda: len(set(old) - set(env.moto.running_ids())) >= 1, 60, "an old instance replaced",
               interval=0.5)
    assert saved.exists()
    lbd.kill9()
    t1 = time.time()
    lbd.start()
    lbd.wait_log(r"Launch settings before the last change: " + old_hash, 10, since=t1)
    wait_until(lambda: _refresh(env)["state"] == "rolled-back", 90, "the refresh to roll back", interval=0.5)
    lbd.wait_log(r"Launching 1 instance .*with the old launch settings " + old_hash, 15, since=t1)
    _wait_back_on(env, old_hash)
    assert t0 < t1


def test_refresh_survives_sigkill(ec2_env):
    env = ec2_env
    lbd = env.lbd(extra_pool=EXTRA_POOL)
    env.wait_steady(3, timeout=60)
    old = env.moto.running_ids()

    t0 = time.time()
    _reload(lbd, lbd_config(env, extra_pool=EXTRA_POOL).replace("instance_type = t3.micro",
                                                                "instance_type = t3.small"))
    # Killed once the first old instance is gone and the next new one launched.
    lbd.wait_log(r"Terminated instance i-\S+: replaced by the instance refresh", 90, since=t0)
    wait_until(lambda: len(_instances(env, **{"instance-type": "t3.small"})) >= 2, 30, "the second launch")
    lbd.kill9()
    t1 = time.time()
    lbd.start()
    wait_until(lambda: _refresh(env)["state"] == "running", 20, "the refresh to resume")
    lbd.wait_log(r"Instance refresh started: [12] of [34] instances have other launch settings", 5, since=t1)
    wait_until(lambda: _refresh(env)["state"] == "done", 150, "the refresh to finish", interval=0.5)
    env.wait_steady(3, timeout=30)

    now = env.moto.running_ids()
    assert not set(now) & set(old)
    assert len(_instances(env, **{"instance-type": "t3.small"})) == 3
    assert len(env.moto.instances()) == 3


def test_refresh_cancel_and_lbctl(ec2_env):
    env = ec2_env
    slow = "refresh_warmup = 1h\nrefresh_timeout = 2h"
    lbd = env.lbd(extra_pool=slow)
    env.wait_steady(3, timeout=60)
    old = env.moto.running_ids()
    admin = f"127.0.0.1:{env.admin_port}"

    # Nothing runs: nothing to cancel; a refresh asked for finds nothing to replace.
    out = localenv.lbctl("-a", admin, "refresh", "--cancel")
    assert out.returncode == 1 and "409" in out.stderr, (out.stdout, out.stderr)
    out = localenv.lbctl("-a", admin, "refresh")
    assert out.returncode == 0 and "instance refresh done: nothing to replace" in out.stdout, out.stdout
    assert localenv.lbctl("-a", admin, "refresh", "--min-healthy", "101").returncode == 2
    assert localenv.lbctl("-a", admin, "refresh", "--cancel", "--warmup", "3").returncode == 2
    assert localenv.lbctl("-a", admin, "status", "--cancel").returncode == 2

    # New settings with a warmup of an hour: the first new instance never counts, so nothing old goes.
    t0 = time.time()
    _reload(lbd, lbd_config(env, extra_pool=slow).replace("instance_type = t3.micro", "instance_type = t3.small"))
    wait_until(lambda: _refresh(env)["new"] == 1 and env.healthy() == 4, 60, "the first new instance")
    out = localenv.lbctl("-a", admin, "status")
    assert "instance refresh running: 3 with other settings (3 serving), 1 new (0 counted)" in out.stdout, out.stdout
    assert out.stdout.count("(old)") == 3
    out = localenv.lbctl("-a", admin, "refresh", "--cancel")
    assert out.returncode == 0 and "instance refresh cancelled" in out.stdout, (out.stdout, out.stderr)
    lbd.wait_log(r"Instance refresh cancelled", 5, since=t0)
    t1 = time.time()
    time.sleep(4)
    assert env.proxy.requests(since=t1, action="RunInstances") == []
    # Cancelled with one instance beyond desired: the usual rule trims it (the newest goes).
    wait_until(lambda: env.moto.running_ids() == old, 30, "the pool back at desired")

    # Started again by hand, with settings of its own: a lower minimum and no warmup.
    out = localenv.lbctl("-a", admin, "refresh", "--min-healthy", "34", "--warmup", "0")
    assert out.returncode == 0 and "instance refresh running" in out.stdout, (out.stdout, out.stderr)
    r = _refresh(env)
    assert r["min_healthy"] == 34 and r["warmup_s"] == 0
    lbd.wait_log(r"Instance refresh started \(admin API\): 3 of 3", 5, since=t1)
    wait_until(lambda: _refresh(env)["state"] == "done", 120, "the refresh to finish", interval=0.5)
    env.wait_steady(3, timeout=30)
    assert not set(env.moto.running_ids()) & set(old)
    running_small = [i for i in env.moto.instances(["running"]) if i["InstanceType"] == "t3.small"]
    assert len(running_small) == 3

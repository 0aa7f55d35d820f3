"""What /status and lbctl say when the EC2 API fails, and what an outage costs in calls.

- A wrong secret key: /status control.last_error and lbctl's "last provider error" carry EC2's own code
  and message (AuthFailure: ...), not an errno string.
- Nothing listening at the endpoint: /status shows the call failing now (for how long, how many
  attempts, "Connection refused"), and lbctl says "API failing for N s, retrying".
- The API answering 503 for 60 s (fault proxy), poll 10 s: the backoff carries from one poll to the next,
  so the outage costs a few calls a minute instead of five per poll; /status shows the failing state
  during it and the time of the last good list; the first poll after it succeeds, within one poll
  interval; nothing is launched or terminated, and every request through lbd succeeds."""

import json
import os
import subprocess
import time
from pathlib import Path

import ec2env

REPO = Path(__file__).resolve().parents[2]


def lbctl(env, *args):
    binary = os.environ.get("LBCTL_BINARY") or str(REPO / "build" / "lbctl" / "lbctl")
    return subprocess.run([binary, "--admin", f"127.0.0.1:{env.admin_port}", *args], capture_output=True,
                          text=True, timeout=10, check=False)


def control(env):
    return env.status()["control"]


def test_errors_in_the_apis_own_words(ec2_env):
    env = ec2_env
    lbd = env.lbd(env={"AWS_ACCESS_KEY_ID": env.moto.key_id, "AWS_SECRET_ACCESS_KEY": "x" * 40,
                       "AWS_EC2_METADATA_DISABLED": "true"})
    c = ec2env.wait_until(lambda: (lambda c: c if c["last_error"] else None)(control(env)), 15,
                          "a provider error in /status")
    assert c["last_error"].startswith("AuthFailure: "), c
    assert "Permission denied" not in c["last_error"]
    assert c["last_list_unix"] is None
    out = lbctl(env, "status")
    assert out.returncode == 0, out.stderr
    assert "last provider error: AuthFailure: " in out.stdout, out.stdout
    lbd.stop()

    # Nothing listens at the endpoint: a call is failing now, and the status says why.
    closed = ec2env.free_port()
    config = ec2env.lbd_config(env, poll="10s").replace(f"endpoint = {env.proxy.url}",
                                                        f"endpoint = http://127.0.0.1:{closed}")
    lbd = env.lbd(config_text=config)
    c = ec2env.wait_until(lambda: (lambda c: c if c["api_failing"] and c["api_failing"]["failed_attempts"] >= 2
                                   else None)(control(env)), 15, "api_failing in /status")
    assert "Connection refused" in c["api_failing"]["error"], c
    assert c["api_failing"]["for_s"] >= 0
    out = lbctl(env, "status")
    assert out.returncode == 0, out.stderr
    assert "API failing for " in out.stdout and "retrying" in out.stdout, out.stdout
    assert "Connection refused" in out.stdout, out.stdout
    assert "Resource temporarily unavailable" not in out.stdout
    lbd.stop()


def test_outage_backoff_across_polls(ec2_env):
    env = ec2_env
    lbd = env.lbd(config_text=ec2env.lbd_config(env, poll="10s"))
    env.wait_steady(3, timeout=60)
    ids = env.moto.running_ids()
    loop = env.request_loop()
    time.sleep(1)
    c = control(env)
    assert c["api_failing"] is None and c["last_error"] is None
    last_list = c["last_list_unix"]
    assert last_list and abs(last_list - time.time()) < 12

    t0 = time.time()
    env.proxy.fault("503", seconds=60, actions=["DescribeInstances"])
    c = ec2env.wait_until(lambda: (lambda c: c if c["api_failing"] and c["api_failing"]["for_s"] >= 15
                                   else None)(control(env)), 40, "a failing state of 15 s in /status")
    print("during the outage:", json.dumps(c["api_failing"]), "last list", c["last_list_unix"])
    assert "HTTP 503" in c["api_failing"]["error"], c
    assert c["last_list_unix"] <= t0 + 0.5
    out = lbctl(env, "status")
    print(out.stdout)
    assert "API failing for " in out.stdout and "HTTP 503" in out.stdout, out.stdout

    end = t0 + 60
    time.sleep(max(0.0, end - time.time()))
    during = [r for r in env.proxy.requests(since=t0, action="DescribeInstances") if r["t"] < end]
    ok = ec2env.wait_until(lambda: [r for r in env.proxy.requests(since=end, action="DescribeInstances")
                                    if r["status"] == 200], 15, "a successful DescribeInstances after the outage")
    print(f"DescribeInstances during a 60 s outage: {len(during)} (the first call's 5 attempts included); "
          f"first success {ok[0]['t'] - end:.1f} s after it ended")
    # 5 attempts for the first call, then one per poll: about 11; five per poll would be about 30.
    assert len(during) <= 14, [round(r["t"] - t0, 1) for r in during]
    assert ok[0]["t"] - end <= 10 + 1.5
    ec2env.wait_until(lambda: control(env)["api_failing"] is None and control(env)["list_ok"], 10,
                      "the failing state to clear")
    loop.stop()

    assert env.moto.running_ids() == ids
    assert env.proxy.requests(since=t0, action="RunInstances") == []
    assert env.proxy.requests(since=t0, action="TerminateInstances") == []
    assert loop.failures == [], loop.failures[:10]
    assert lbd.alive()

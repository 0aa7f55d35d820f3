"""A wrong secret key: moto refuses the signature (AuthFailure); lbd says so clearly, does not retry the
refused call in a loop, launches nothing, keeps running and answering its admin API, and never logs a
secret."""

import time


def test_wrong_secret_key(ec2_env):
    env = ec2_env
    wrong = "x" * 40
    lbd = env.lbd(env={"AWS_ACCESS_KEY_ID": env.moto.key_id, "AWS_SECRET_ACCESS_KEY": wrong,
                       "AWS_EC2_METADATA_DISABLED": "true"})
    t0 = time.time()
    line = lbd.wait_log(r"AuthFailure.*check the AWS access key and secret key", timeout=15)
    print(line[0][1])
    time.sleep(4)  # several polls

    assert lbd.alive()
    assert env.status() is not None  # the admin API still answers
    assert env.moto.instances(tagged=False) == []
    calls = env.proxy.requests(since=t0)
    assert calls and all(r["status"] in (401, 403) for r in calls), calls
    assert env.proxy.requests(action="RunInstances") == []
    # One attempt per poll: a refused signature is never retried.
    assert not lbd.find("retrying")
    assert len(calls) <= 8, len(calls)
    text = lbd.log_text()
    assert wrong not in text and env.moto.secret not in text
    masked = "****" + env.moto.key_id[-4:]
    assert env.moto.key_id not in text
    assert masked in text

    # Fixed by a reload with the right key in a credentials file: launches follow, no restart.
    creds = env.workdir / "credentials"
    creds.write_text(f"[default]\naws_access_key_id = {env.moto.key_id}\n"
                     f"aws_secret_access_key = {env.moto.secret}\n")
    import ec2env
    import signal
    lbd.config_path.write_text(ec2env.lbd_config(env, extra_ec2=f"credentials_file = {creds}"))
    pid = lbd.proc.pid
    lbd.signal(signal.SIGHUP)
    env.wait_steady(3, timeout=60)
    assert lbd.proc.pid == pid
    assert env.moto.secret not in lbd.log_text()

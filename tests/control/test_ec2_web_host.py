"""The web host that `lbctl provision` launches carries the pool's tag (so a second run finds it) and
lbd:role=web. lbd must not take it for one of its backends: before, it counted it towards [pool] desired,
probed it on the backends' port, and terminated it once its grace period was over, taking the database
with it. Here the web host is already running when lbd starts (as after the installer's provisioning); lbd
launches the whole pool beside it, never lists it in its status, and leaves it running past the grace
period. An instance whose role tag is not text lbd knows is left alone the same way."""

import json
import time

import ec2env


def run_tagged(env, role, user_data):
    resp = env.moto.ec2.run_instances(
        ImageId=ec2env.IMAGE, MinCount=1, MaxCount=1, InstanceType="t3.micro", SubnetId=env.moto.subnet_id,
        UserData=user_data,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": ec2env.TAG_KEY, "Value": ec2env.TAG_VALUE}, {"Key": "lbd:role", "Value": role}]}])
    return resp["Instances"][0]["InstanceId"]


def test_web_host_is_not_a_backend(ec2_env):
    env = ec2_env
    # No UPSTREAM in its user data: the agent starts no relay for it, so as a backend it would be down.
    web = run_tagged(env, "web", "#!/bin/sh\n# the web host\n")
    other = run_tagged(env, "x" * 200, "#!/bin/sh\n# something else\n")
    lbd = env.lbd(desired=2, grace="3s")

    def steady():
        running = set(env.moto.running_ids())
        return len(running) == 4 and env.healthy() == 2 and running
    ec2env.wait_until(steady, 60, "two backends beside the web host, both healthy", interval=0.25)
    time.sleep(6)  # past the grace period of every instance, the web host's included

    assert set(env.moto.running_ids()) >= {web, other}
    status = env.status()
    text = json.dumps(status)
    assert web not in text and other not in text, text
    assert status.get("healthy") == 2
    assert len(env.moto.instances(tagged=True)) == 4
    assert env.proxy.requests(action="TerminateInstances") == []
    assert lbd.find(rf"EC2 instance {web} carries the pool's tag with lbd:role=web: not a backend")
    # Logged once, not at every poll.
    assert len(lbd.find(rf"EC2 instance {web} carries")) == 1
    assert lbd.alive()

"""From nothing, lbd launches the pool: three instances with the pool's tags, in the configured subnet,
with the rendered user data, checked through boto3 (EC2's view, not lbd's); then they serve traffic."""

import time

import ec2env
import testnet


def test_launch_from_nothing(ec2_env):
    env = ec2_env
    assert env.moto.instances(tagged=False) == []
    lbd = env.lbd()
    env.wait_steady(3, timeout=60)

    instances = env.moto.instances()
    assert len(instances) == 3
    expected_user_data = ec2env.USER_DATA_TEMPLATE.format(port=env.backend_port).replace(
        "{{upstream}}", env.upstream.addr)
    for inst in instances:
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        assert tags[ec2env.TAG_KEY] == ec2env.TAG_VALUE
        assert tags["Name"] == f"lbd-{ec2env.TAG_VALUE}"
        assert inst["SubnetId"] == env.moto.subnet_id
        assert inst["VpcId"] == env.moto.vpc_id
        assert inst["PrivateIpAddress"].startswith(testnet.subnet_prefix())
        assert inst["ImageId"] == ec2env.IMAGE
        assert inst["InstanceType"] == "t3.micro"
        assert env.moto.sg_id in [g["GroupId"] for g in inst.get("SecurityGroups", [])]
        assert env.moto.user_data(inst["InstanceId"]) == expected_user_data
    # Each backend knows its instance's availability zone (the status page's Zone column).
    zones = {i["InstanceId"]: i["Placement"]["AvailabilityZone"] for i in instances}
    for b in env.status()["backends"]:
        assert b["zone"] and b["zone"] == zones[b["instance_id"]], b
    # Nothing outside the pool's tag was made.
    assert len(env.moto.instances(tagged=False)) == 3

    # Every launch carried a ClientToken.
    runs = env.proxy.requests(action="RunInstances")
    assert runs and all(r["status"] == 200 for r in runs)

    # Traffic flows through the three relays to the web host.
    loop = env.request_loop()
    time.sleep(3)
    loop.stop()
    assert loop.ok > 50
    assert loop.failures == [], loop.failures[:5]
    assert lbd.alive()
    # No secret in the log.
    assert env.moto.secret not in lbd.log_text()

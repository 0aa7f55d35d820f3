"""`lbctl provision` against moto_server with signature checking on (ec2env.Moto: an IAM user's key, the
VPC 127.0.0.0/16 and the test's own subnet, testnet.subnet()). What it made is checked through boto3, EC2's view: every
ingress rule of the three security groups one by one, the web host (subnet, group, tags, user data byte for
byte), and that a second run creates nothing. Also: SSH from the whole Internet and bad options are
refused with exit 2, wrong or missing credentials give exit 3, an API error exit 1 naming the call and
EC2's code.

The web tier's TLS (on by default): the private CA made in the test's --web-tls-dir (its key 0600 there,
never in any user data or log), webd's certificate and key in the web host's user data (the real
scripts/cloud-init-web.sh), the CA certificate and the name in the relays' user data that lbd renders, and
end to end a relay configured from that user data reaching a webd that serves the provisioned certificate,
over verified TLS, failing closed once webd serves a certificate from another CA.

Nothing here contacts an address outside 127.0.0.0/8: lbctl's endpoint is moto on 127.0.0.1, the metadata
service is off, and the web host's address is a loopback one (webd listens there in the end-to-end test
only)."""

import base64
import ipaddress
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ec2env
import testnet

TAG_KEY, TAG_VALUE = "lbd:pool", "main"
SSH_CIDR = "203.0.113.0/24"
# Not text: EC2 takes any bytes (a gzip'd cloud-config, say), and they must arrive as they were.
USER_DATA = b"#!/bin/sh\n# web host\necho 'caf\xc3\xa9' >/tmp/x\n\x00\x01\xfe\xff tail\n"


def lbctl_binary():
    env = os.environ.get("LBCTL_BINARY")
    path = Path(env) if env else ec2env.REPO / "build" / "lbctl" / "lbctl"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(f"lbctl binary not found at {path}: set LBCTL_BINARY")
    return path


@pytest.fixture
def moto(tmp_path):
    _, moto_path = ec2env.require_tools()
    m = ec2env.Moto(tmp_path, moto_path)
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture(scope="module")
def shared_moto(tmp_path_factory):
    """One moto for the web TLS tests (each its own pool tag and names), to keep the file's time down."""
    _, moto_path = ec2env.require_tools()
    m = ec2env.Moto(tmp_path_factory.mktemp("shared-moto"), moto_path)
    try:
        yield m
    finally:
        m.stop()


def clean_env(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    # No shared files from the machine, no metadata service: only what a test sets.
    env.update(HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true",
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
               AWS_CONFIG_FILE=str(tmp_path / "no-config"))
    return env


def provision(moto, tmp_path, *args, key=None, secret=None, credentials=True, subnet=None, timeout=120,
              tls_dir=None):
    env = clean_env(tmp_path)
    if credentials:
        env.update(AWS_ACCESS_KEY_ID=key or moto.key_id, AWS_SECRET_ACCESS_KEY=secret or moto.secret)
    # Never the default /etc/lbd/web-tls: the test's own directory.
    cmd = [str(lbctl_binary()), "provision", "--endpoint", moto.endpoint, "--region", ec2env.REGION,
           "--subnet", subnet or moto.subnet_id, "--web-tls-dir", str(tls_dir or tmp_path / "web-tls"), *args]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, env=env)


def output(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr.decode(errors='replace')}"
    values = {}
    for line in proc.stdout.decode().splitlines():
        key, _, value = line.partition("=")
        assert key not in values
        values[key] = value
    return values


def user_data_file(tmp_path):
    path = tmp_path / "web-user-data"
    path.write_bytes(USER_DATA)
    return path


def group_rules(g):
    """Every ingress rule of group <g>, flattened: (protocol, from, to, kind, source)."""
    out = []
    for p in g["IpPermissions"]:
        base = (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"))
        out += [base + ("cidr", r["CidrIp"]) for r in p.get("IpRanges", [])]
        out += [base + ("cidr6", r["CidrIpv6"]) for r in p.get("Ipv6Ranges", [])]
        out += [base + ("group", r["GroupId"]) for r in p.get("UserIdGroupPairs", [])]
        out += [base + ("prefix", r["PrefixListId"]) for r in p.get("PrefixListIds", [])]
    return sorted(out, key=repr)


def groups_by_id(moto, ids):
    return {g["GroupId"]: g for g in moto.ec2.describe_security_groups(GroupIds=list(ids))["SecurityGroups"]}


def pool_groups(moto, prefix="lbd"):
    """The names of the VPC's groups that lbctl would make (the harness's own "lbd-backends" aside)."""
    res = moto.ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [moto.vpc_id]}])
    mine = {f"{prefix}-{role}" for role in ("lb", "backend", "web")}
    return sorted(g["GroupName"] for g in res["SecurityGroups"] if g["GroupName"] in mine)


def web_instances(moto, states=("pending", "running"), pool=TAG_VALUE):
    filters = [{"Name": f"tag:{TAG_KEY}", "Values": [pool]}, {"Name": "tag:lbd:role", "Values": ["web"]},
               {"Name": "instance-state-name", "Values": list(states)}]
    return [i for r in moto.ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]


def user_data_bytes(moto, iid):
    attr = moto.ec2.describe_instance_attribute(InstanceId=iid, Attribute="userData")
    return base64.b64decode(attr["UserData"]["Value"])


def check_world(groups, lb_id, lb_port):
    """Only the LB group is open to the world, on the LB port only; nothing anywhere on 5432."""
    for gid, g in groups.items():
        for proto, lo, hi, kind, src in group_rules(g):
            assert not (lo is not None and lo <= 5432 <= hi), (g["GroupName"], proto, lo, hi, src)
            assert proto != "-1", (g["GroupName"], "all protocols open")
            if kind in ("cidr", "cidr6") and ipaddress.ip_network(src).prefixlen == 0:
                assert gid == lb_id and (proto, lo, hi) == ("tcp", lb_port, lb_port), (g["GroupName"], src)


def test_provision_from_nothing_then_again(moto, tmp_path):
    ud = user_data_file(tmp_path)
    args = ["--web-user-data", str(ud), "--ssh-cidr", SSH_CIDR, "--backend-port", "8081", "--web-port", "8080"]
    first = provision(moto, tmp_path, *args)
    out = output(first)
    log = first.stderr.decode()
    assert list(out) == ["LBD_VPC", "LBD_SUBNET", "LBD_SECURITY_GROUP_LB", "LBD_SECURITY_GROUP_BACKEND",
                         "LBD_SECURITY_GROUP_WEB", "LBD_IMAGE", "LBD_WEB_INSTANCE", "LBD_UPSTREAM",
                         "LBD_RELAY_CERT", "LBD_RELAY_KEY", "LBD_RELAY_NAME"]
    for v in out.values():
        assert v and all(c.isalnum() or c in "._:/-" for c in v), out
    # A user data without webd's certificate placeholders can't carry one: it goes out byte for byte, the
    # relays stay on plain HTTP to it (said on stderr), and no certificate is issued for webd; the CA is
    # made for the relays' own certificate (the hop from lbd to them).
    assert "has no {{web_tls_cert}}" in log and "plain HTTP" in log, log
    assert sorted(p.name for p in (tmp_path / "web-tls").iterdir()) == ["ca.key", "ca.pem", "relay.key",
                                                                          "relay.pem"]
    assert out["LBD_VPC"] == moto.vpc_id
    assert out["LBD_SUBNET"] == moto.subnet_id
    assert "created" in log and "launched" in log, log

    lb, be, web = out["LBD_SECURITY_GROUP_LB"], out["LBD_SECURITY_GROUP_BACKEND"], out["LBD_SECURITY_GROUP_WEB"]
    assert len({lb, be, web, moto.sg_id}) == 4
    groups = groups_by_id(moto, [lb, be, web])
    names = {gid: g["GroupName"] for gid, g in groups.items()}
    assert names == {lb: "lbd-lb", be: "lbd-backend", web: "lbd-web"}
    for g in groups.values():
        assert g["VpcId"] == moto.vpc_id
        tags = {t["Key"]: t["Value"] for t in g.get("Tags", [])}
        assert tags.get(TAG_KEY) == TAG_VALUE, g

    # Every rule, one by one.
    ssh = ("tcp", 22, 22, "cidr", SSH_CIDR)
    assert group_rules(groups[lb]) == sorted([("tcp", 80, 80, "cidr", "0.0.0.0/0"),
                                              ("tcp", 80, 80, "cidr6", "::/0"), ssh], key=repr)
    assert group_rules(groups[be]) == sorted([("tcp", 8081, 8081, "group", lb), ssh], key=repr)
    assert group_rules(groups[web]) == sorted([("tcp", 8080, 8080, "group", be), ssh], key=repr)
    check_world(groups, lb, 80)

    # The image: moto's newest Ubuntu LTS of Canonical's (two share a creation date: the later release wins).
    image = moto.ec2.describe_images(ImageIds=[out["LBD_IMAGE"]])["Images"][0]
    assert image["OwnerId"] == "099720109477"
    assert image["Name"] == "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-20170721"

    # The web host.
    insts = web_instances(moto)
    assert [i["InstanceId"] for i in insts] == [out["LBD_WEB_INSTANCE"]]
    inst = insts[0]
    assert inst["SubnetId"] == moto.subnet_id and inst["VpcId"] == moto.vpc_id
    assert ipaddress.ip_address(inst["PrivateIpAddress"]) in ipaddress.ip_network(testnet.subnet())
    assert out["LBD_UPSTREAM"] == f"{inst['PrivateIpAddress']}:8080"
    assert [g["GroupId"] for g in inst["SecurityGroups"]] == [web]
    assert inst["ImageId"] == out["LBD_IMAGE"]
    assert inst["InstanceType"] == "t3.micro"
    tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
    assert tags == {TAG_KEY: TAG_VALUE, "lbd:role": "web", "Name": "lbd-web"}
    assert user_data_bytes(moto, inst["InstanceId"]) == USER_DATA
    assert moto.secret not in log

    # Again: the same ids, the same rules, one web host, nothing created.
    all_groups = pool_groups(moto)
    all_instances = moto.instances(tagged=False)
    second = provision(moto, tmp_path, *args)
    assert output(second) == out
    log2 = second.stderr.decode()
    for word in ("created", "added", "launched"):
        assert word not in log2, log2
    assert "found" in log2
    again = groups_by_id(moto, [lb, be, web])
    for gid in (lb, be, web):
        assert group_rules(again[gid]) == group_rules(groups[gid])
    assert pool_groups(moto) == all_groups == ["lbd-backend", "lbd-lb", "lbd-web"]
    assert len(moto.instances(tagged=False)) == len(all_instances) == 1
    assert len(web_instances(moto)) == 1


def test_no_ssh_by_default_no_web_json(moto, tmp_path):
    proc = provision(moto, tmp_path, "--no-web", "--json", "--name", "pool2", "--tag", "lbd:pool=two",
                     "--lb-port", "8000", "--backend-port", "9000", "--image", "ami-1e749f67")
    assert proc.returncode == 0, proc.stderr.decode()
    out = json.loads(proc.stdout)
    assert out["LBD_WEB_INSTANCE"] == "" and out["LBD_UPSTREAM"] == ""
    assert out["LBD_IMAGE"] == "ami-1e749f67"
    lb, be, web = out["LBD_SECURITY_GROUP_LB"], out["LBD_SECURITY_GROUP_BACKEND"], out["LBD_SECURITY_GROUP_WEB"]
    groups = groups_by_id(moto, [lb, be, web])
    assert {g["GroupName"] for g in groups.values()} == {"pool2-lb", "pool2-backend", "pool2-web"}
    for g in groups.values():
        assert {t["Key"]: t["Value"] for t in g.get("Tags", [])}.get(TAG_KEY) == "two"
        for _, lo, hi, _, _ in group_rules(g):
            assert not (lo is not None and lo <= 22 <= hi), g
    assert group_rules(groups[lb]) == sorted([("tcp", 8000, 8000, "cidr", "0.0.0.0/0"),
                                              ("tcp", 8000, 8000, "cidr6", "::/0")], key=repr)
    assert group_rules(groups[be]) == [("tcp", 9000, 9000, "group", lb)]
    assert group_rules(groups[web]) == [("tcp", 8080, 8080, "group", be)]
    check_world(groups, lb, 8000)
    assert moto.instances(tagged=False) == []


def test_existing_resources_are_completed_not_duplicated(moto, tmp_path):
    """A group made by hand (untagged, half its rules, one rule too many) is kept, tagged and completed;
    the extra rule is reported, not removed; a running web host of the pool is adopted."""
    ec2 = moto.ec2
    lb = ec2.create_security_group(GroupName="lbd-lb", Description="by hand", VpcId=moto.vpc_id)["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=lb, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]},
        {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432, "IpRanges": [{"CidrIp": "198.18.0.0/15"}]}])
    web = ec2.run_instances(ImageId="ami-1e749f67", MinCount=1, MaxCount=1, SubnetId=moto.subnet_id,
                            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                {"Key": TAG_KEY, "Value": TAG_VALUE}, {"Key": "lbd:role", "Value": "web"}]}])
    web_id = web["Instances"][0]["InstanceId"]

    proc = provision(moto, tmp_path)
    out = output(proc)
    log = proc.stderr.decode()
    assert out["LBD_SECURITY_GROUP_LB"] == lb
    assert out["LBD_WEB_INSTANCE"] == web_id
    assert "tagged" in log and "5432" in log and "left as it is" in log, log
    assert "launched" not in log
    g = groups_by_id(moto, [lb])[lb]
    assert {t["Key"]: t["Value"] for t in g.get("Tags", [])}.get(TAG_KEY) == TAG_VALUE
    assert group_rules(g) == sorted([("tcp", 80, 80, "cidr", "0.0.0.0/0"), ("tcp", 80, 80, "cidr6", "::/0"),
                                     ("tcp", 5432, 5432, "cidr", "198.18.0.0/15")], key=repr)
    assert len(web_instances(moto)) == 1


def test_group_of_another_pool_is_refused(moto, tmp_path):
    moto.ec2.create_security_group(GroupName="lbd-web", Description="x", VpcId=moto.vpc_id,
                                   TagSpecifications=[{"ResourceType": "security-group",
                                                       "Tags": [{"Key": TAG_KEY, "Value": "other"}]}])
    proc = provision(moto, tmp_path, "--no-web")
    assert proc.returncode == 1, proc.stderr.decode()
    assert "another pool" in proc.stderr.decode()


def test_bake_image(moto, tmp_path):
    src = moto.ec2.run_instances(ImageId="ami-1e749f67", MinCount=1, MaxCount=1,
                                 SubnetId=moto.subnet_id)["Instances"][0]["InstanceId"]
    ud = user_data_file(tmp_path)
    out = output(provision(moto, tmp_path, "--bake-from", src, "--web-user-data", str(ud)))
    image = moto.ec2.describe_images(ImageIds=[out["LBD_IMAGE"]])["Images"][0]
    assert image["Name"] == f"lbd-backend-{src}"
    assert image["State"] == "available"
    # The web host boots from Ubuntu, not from the backends' image.
    inst = web_instances(moto)[0]
    assert inst["ImageId"] != out["LBD_IMAGE"]
    again = output(provision(moto, tmp_path, "--bake-from", src, "--web-user-data", str(ud)))
    assert again == out
    mine = moto.ec2.describe_images(Owners=["self"])["Images"]
    assert [i["ImageId"] for i in mine if i["Name"] == f"lbd-backend-{src}"] == [out["LBD_IMAGE"]]


def test_ssh_from_the_world_refused(moto, tmp_path):
    for cidr in ["0.0.0.0/0", "::/0", "1.2.3.4/0", "::ffff:0:0/0", "198.18.0.1/15", "nonsense"]:
        proc = provision(moto, tmp_path, "--ssh-cidr", cidr, "--no-web")
        assert proc.returncode == 2, (cidr, proc.stderr.decode())
        assert proc.stdout == b""
    assert pool_groups(moto) == []


BAD_USAGE = [
    ["--tag", "novalue"], ["--tag", "Name=x"], ["--tag", "aws:x=y"], ["--tag", "lbd:role=x"], ["--tag", "k=v\n"],
    ["--lb-port", "0"], ["--web-port", "65536"], ["--backend-port", "-1"], ["--image", "notanami"],
    ["--name", "a b"], ["--name", "x" * 65], ["--bake-from", "ami-1"], ["--no-web", "--web-user-data", "/x"],
    ["--web-user-data", "/nonexistent/file"], ["extra"], ["--endpoint", "ftp://127.0.0.1/"],
    ["--instance-type", "t3 micro"], ["--region", "us east"], ["--unknown"],
    ["--web-name", "web lbd"], ["--web-name", "-web.x"], ["--web-name", "web_x.internal"], ["--web-name", "1.2.3.4"],
    ["--web-tls-dir", "relative/dir"], ["--web-tls-dir", "/a b"], ["--web-plain-http", "--renew-web-cert"],
    ["--no-web", "--renew-web-cert"], ["--renew-web-cert"],
    ["--relay-name", "relay lbd"], ["--relay-name", "-relay.x"], ["--relay-name", "192.0.2.1"], ["--relay-name"],
]


def test_bad_usage(moto, tmp_path):
    big = tmp_path / "big-user-data"
    big.write_bytes(b"x" * 16385)
    # Renewing needs a user data that can carry the certificate.
    for args in BAD_USAGE + [["--web-user-data", str(big)],
                             ["--renew-web-cert", "--web-user-data", str(user_data_file(tmp_path))]]:
        proc = provision(moto, tmp_path, *args)
        assert proc.returncode == 2, (args, proc.stderr.decode())
        assert proc.stdout == b""
    assert pool_groups(moto) == []
    assert not (tmp_path / "web-tls").exists()


def test_missing_subnet_option(moto, tmp_path):
    env = clean_env(tmp_path)
    proc = subprocess.run([str(lbctl_binary()), "provision", "--endpoint", moto.endpoint], capture_output=True,
                          timeout=30, env=env)
    assert proc.returncode == 2


def test_credentials(moto, tmp_path):
    wrong_secret = provision(moto, tmp_path, "--no-web", secret="x" * 40)
    assert wrong_secret.returncode == 3, wrong_secret.stderr.decode()
    unknown_key = provision(moto, tmp_path, "--no-web", key="AKIAUNKNOWNUNKNOWN00", secret="y" * 40)
    assert unknown_key.returncode == 3, unknown_key.stderr.decode()
    none = provision(moto, tmp_path, "--no-web", credentials=False)
    assert none.returncode == 3, none.stderr.decode()
    assert "credentials" in none.stderr.decode()
    # The same key from a credentials file works.
    creds = tmp_path / "creds"
    creds.write_text(f"[default]\naws_access_key_id = {moto.key_id}\naws_secret_access_key = {moto.secret}\n")
    ok = provision(moto, tmp_path, "--no-web", "--credentials-file", str(creds), credentials=False)
    assert ok.returncode == 0, ok.stderr.decode()
    bad_file = provision(moto, tmp_path, "--no-web", "--credentials-file", str(tmp_path / "nope"),
                         credentials=False)
    assert bad_file.returncode == 3, bad_file.stderr.decode()


def test_api_error_names_call_and_code(moto, tmp_path):
    proc = provision(moto, tmp_path, "--no-web", subnet="subnet-0123456789abcdef0")
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "DescribeSubnets" in err and "InvalidSubnetID.NotFound" in err, err


def test_iam_policy_document():
    """installer/iam-policy.json: valid JSON, every action lbd and `lbctl provision` call is allowed, the
    writes are held to the pool's tag, nothing is allowed wholesale. (moto evaluates neither resource ARNs
    nor conditions, so the document is checked here rather than enforced there.)"""
    doc = json.loads((ec2env.REPO / "installer" / "iam-policy.json").read_text())
    assert doc["Version"] == "2012-10-17"
    statements = doc["Statement"]
    assert len({s["Sid"] for s in statements}) == len(statements)

    def allowing(action):
        out = []
        for s in statements:
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            assert s["Effect"] == "Allow"
            assert all(a != "*" and not a.endswith(":*") for a in actions), s
            if action in actions:
                out.append(s)
        return out

    used = ["ec2:DescribeInstances", "ec2:RunInstances", "ec2:TerminateInstances", "ec2:CreateTags",
            "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups", "ec2:CreateSecurityGroup",
            "ec2:AuthorizeSecurityGroupIngress", "ec2:DescribeImages", "ec2:CreateImage", "iam:PassRole",
            "ec2:AssociateAddress", "ec2:DescribeAddresses", "ec2:StopInstances", "ec2:StartInstances",
            "ec2:ModifyInstanceAttribute"]
    for action in used:
        assert allowing(action), action
    for s in allowing("ec2:RunInstances"):
        resources = s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]]
        if any(r.endswith(":instance/*") for r in resources):
            assert s["Condition"]["StringEquals"][f"aws:RequestTag/{TAG_KEY}"] == TAG_VALUE
    for s in allowing("ec2:TerminateInstances"):
        assert s["Condition"]["StringEquals"][f"ec2:ResourceTag/{TAG_KEY}"] == TAG_VALUE
    # Renewing webd's certificate stops, changes and starts the pool's web host, and nothing else.
    for action in ("ec2:StopInstances", "ec2:StartInstances", "ec2:ModifyInstanceAttribute"):
        for s in allowing(action):
            cond = s["Condition"]["StringEquals"]
            assert cond[f"ec2:ResourceTag/{TAG_KEY}"] == TAG_VALUE and cond["ec2:ResourceTag/lbd:role"] == "web", s
    for s in allowing("ec2:CreateTags"):
        assert s["Condition"]["StringEquals"][f"aws:RequestTag/{TAG_KEY}"] == TAG_VALUE
    for s in allowing("ec2:AuthorizeSecurityGroupIngress"):
        assert s["Condition"]["StringEquals"][f"ec2:ResourceTag/{TAG_KEY}"] == TAG_VALUE
    # The address moves only if it is the pool's, and only to an LB host.
    for s in allowing("ec2:AssociateAddress"):
        cond = s["Condition"]["StringEquals"]
        assert cond.get(f"ec2:ResourceTag/{TAG_KEY}") == TAG_VALUE or cond.get("ec2:ResourceTag/lbd:role") == "lb", s
    for s in allowing("ec2:AllocateAddress"):
        assert s["Condition"]["StringEquals"][f"aws:RequestTag/{TAG_KEY}"] == TAG_VALUE
    for s in allowing("iam:PassRole"):
        assert s["Condition"]["StringEquals"]["iam:PassedToService"] == "ec2.amazonaws.com"
        assert s["Resource"] != "*"
    # Only reads may name every resource.
    for s in statements:
        if s["Resource"] == "*":
            actions = s["Action"] if isinstance(s["Action"], list) else [s["Action"]]
            assert all(a.startswith("ec2:Describe") for a in actions), s


def test_elastic_ip(moto, tmp_path):
    """--elastic-ip: the pool's address is allocated once, tagged with the pool's tag, and found again by
    the next run; the output names it."""
    first = output(provision(moto, tmp_path, "--no-web", "--elastic-ip", "--image", "ami-1e749f67"))
    assert list(first)[-2:] == ["LBD_ELASTIC_IP", "LBD_PUBLIC_IP"]
    alloc, public = first["LBD_ELASTIC_IP"], first["LBD_PUBLIC_IP"]
    assert alloc.startswith("eipalloc-") and public.count(".") == 3
    addrs = moto.ec2.describe_addresses()["Addresses"]
    assert [a["AllocationId"] for a in addrs] == [alloc]
    tags = {t["Key"]: t["Value"] for t in addrs[0].get("Tags", [])}
    assert tags[TAG_KEY] == TAG_VALUE and tags["Name"] == "lbd-lb"
    again = output(provision(moto, tmp_path, "--no-web", "--elastic-ip", "--image", "ami-1e749f67"))
    assert again["LBD_ELASTIC_IP"] == alloc and again["LBD_PUBLIC_IP"] == public
    assert len(moto.ec2.describe_addresses()["Addresses"]) == 1
    # Without the flag, neither the call nor the keys.
    plain = output(provision(moto, tmp_path, "--no-web", "--image", "ami-1e749f67"))
    assert "LBD_ELASTIC_IP" not in plain


def test_lb_peer(moto, tmp_path):
    """--lb-peer FILE: the second LB host is launched once (the pool's tag, lbd:role=lb, the LB group, the
    user data given), found again by the next run, and named in the output with its address."""
    ud = tmp_path / "lb-user-data"
    ud.write_bytes(b"#!/bin/sh\necho second lb host\n")
    first = output(provision(moto, tmp_path, "--no-web", "--lb-peer", str(ud), "--image", "ami-1e749f67"))
    assert list(first)[-2:] == ["LBD_LB_PEER_INSTANCE", "LBD_LB_PEER_IP"]
    peer = first["LBD_LB_PEER_INSTANCE"]
    insts = moto.instances(tagged=True)
    assert [i["InstanceId"] for i in insts] == [peer]
    tags = {t["Key"]: t["Value"] for t in insts[0]["Tags"]}
    assert tags["lbd:role"] == "lb" and tags[TAG_KEY] == TAG_VALUE and tags["Name"] == "lbd-lb"
    assert [g["GroupId"] for g in insts[0]["SecurityGroups"]] == [first["LBD_SECURITY_GROUP_LB"]]
    assert first["LBD_LB_PEER_IP"] == insts[0]["PrivateIpAddress"]
    assert moto.user_data(peer) == ud.read_text()
    # The LB hosts reach each other's lease listener ([lease] listen, the installer's --peer), nobody else.
    lb = first["LBD_SECURITY_GROUP_LB"]
    g = moto.ec2.describe_security_groups(GroupIds=[lb])["SecurityGroups"][0]
    assert ("tcp", 9181, 9181, "group", lb) in group_rules(g), group_rules(g)
    again = output(provision(moto, tmp_path, "--no-web", "--lb-peer", str(ud), "--image", "ami-1e749f67"))
    assert again["LBD_LB_PEER_INSTANCE"] == peer
    assert len(moto.instances(tagged=True)) == 1


# ---------------------------------------------------------------------------------------------------------
# TLS from the relays to the web host

WEB_NAME = "web.lbd.internal"
WEB_SCRIPT = ec2env.REPO / "scripts" / "cloud-init-web.sh"
BACKEND_SCRIPT = ec2env.REPO / "scripts" / "cloud-init-backend.sh"


def openssl(*args, stdin=None):
    proc = subprocess.run(["openssl", *args], input=stdin, capture_output=True, text=True, timeout=60)
    return proc


def shell_value(text, name):
    """The single-quoted value of shell variable <name> in <text> (the user data's assignment)."""
    m = re.search(rf"^{name}='([^']*)'", text, re.M)
    assert m, f"no {name}='...' in the user data"
    return m.group(1)


def public_key(pem_path_or_text, kind):
    """The public key (PEM) of a certificate ("x509") or private key ("pkey") file or text."""
    args = ["x509", "-noout", "-pubkey"] if kind == "x509" else ["pkey", "-pubout"]
    text = pem_path_or_text if "-----BEGIN" in str(pem_path_or_text) else Path(pem_path_or_text).read_text()
    proc = openssl(*args, stdin=text)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def check_web_certificate(cert_text, key_text, ca, name, tmp_path):
    """<cert_text> chains to <ca>, carries <name>, is a server certificate for <key_text>'s key."""
    leaf = tmp_path / "check-leaf.pem"
    leaf.write_text(cert_text + "\n")
    proc = openssl("verify", "-CAfile", str(ca), "-verify_hostname", name, "-purpose", "sslserver", str(leaf))
    assert proc.returncode == 0 and ": OK" in proc.stdout, proc.stdout + proc.stderr
    assert public_key(cert_text, "x509") == public_key(key_text, "pkey")
    leaf.unlink()


def key_lines(path):
    """The base64 lines of a PEM key: none of them may appear anywhere they should not."""
    return [l for l in Path(path).read_text().splitlines() if l and not l.startswith("-----")]


def test_web_tls_by_default(shared_moto, tmp_path):
    """The CA is made once, on this host only; webd's certificate (for the name, from that CA) and its key
    are in the web host's user data, nothing else changed in it; the CA key is in no user data and no log;
    a second run finds everything and keeps the CA; a web host without a recorded certificate keeps the
    relays on plain HTTP, said on stderr."""
    moto = shared_moto
    tls = tmp_path / "web-tls"
    template = WEB_SCRIPT.read_text()
    first = provision(moto, tmp_path, "--web-user-data", str(WEB_SCRIPT))
    out = output(first)
    log = first.stderr.decode()
    assert out["LBD_WEB_CA"] == f"{tls}/ca.pem" and out["LBD_WEB_NAME"] == WEB_NAME
    assert "made the web tier's private CA" in log, log

    ca, ca_key = tls / "ca.pem", tls / "ca.key"
    assert stat.S_IMODE(ca_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.stat().st_mode) == 0o644
    assert openssl("x509", "-in", str(ca), "-noout", "-ext", "basicConstraints").stdout.count("CA:TRUE") == 1

    web = out["LBD_WEB_INSTANCE"]
    ud = moto.user_data(web)
    cert, key = shell_value(ud, "LBD_WEB_TLS_CERT"), shell_value(ud, "LBD_WEB_TLS_KEY")
    assert cert.startswith("-----BEGIN CERTIFICATE-----") and key.startswith("-----BEGIN PRIVATE KEY-----")
    # Only the two placeholders were filled.
    assert ud == template.replace("{{web_tls_cert}}", cert).replace("{{web_tls_key}}", key)
    check_web_certificate(cert, key, ca, WEB_NAME, tmp_path)
    # The certificate lasts 825 days; the CA's key is nowhere but in ca.key.
    end = openssl("x509", "-noout", "-enddate", stdin=cert).stdout
    assert "notAfter=" in end
    days = openssl("x509", "-noout", "-checkend", str(824 * 86400), stdin=cert).returncode
    assert days == 0, "webd's certificate should last 825 days"
    assert openssl("x509", "-noout", "-checkend", str(826 * 86400), stdin=cert).returncode == 1
    assert ud.count("PRIVATE KEY-----") == template.count("PRIVATE KEY-----") + 2  # webd's own key only
    assert public_key(key, "pkey") != public_key(ca, "x509")
    for line in key_lines(ca_key) + [l for l in key.splitlines() if not l.startswith("-----")]:
        assert line not in log
    for line in key_lines(ca_key):
        assert line not in ud
    assert (tls / "web.pem").read_text().strip() == cert.strip()
    assert sorted(p.name for p in tls.iterdir()) == ["ca.key", "ca.pem", "relay.key", "relay.pem", "web.pem"]
    # The relays' key is not the web host's business.
    for line in key_lines(tls / "relay.key"):
        assert line not in ud and line not in log

    # Again: nothing launched, the same CA, the certificate's days reported.
    ca_bytes, key_bytes = ca.read_bytes(), ca_key.read_bytes()
    second = provision(moto, tmp_path, "--web-user-data", str(WEB_SCRIPT))
    assert output(second) == out
    log2 = second.stderr.decode()
    assert "launched" not in log2 and "made the web tier" not in log2
    assert re.search(r"certificate for web\.lbd\.internal has 82[45] days left", log2), log2
    assert ca.read_bytes() == ca_bytes and ca_key.read_bytes() == key_bytes
    assert len(web_instances(moto)) == 1

    # The record of webd's certificate gone: the web host found can't be trusted to speak TLS.
    (tls / "web.pem").unlink()
    third = provision(moto, tmp_path, "--web-user-data", str(WEB_SCRIPT))
    out3 = output(third)
    assert "LBD_WEB_CA" not in out3 and "LBD_WEB_NAME" not in out3
    assert "relays stay on plain HTTP" in third.stderr.decode()


def test_web_plain_http_empties_the_placeholders(shared_moto, tmp_path):
    """--web-plain-http: webd gets no certificate, the relays still theirs; with --relay-plain-http too,
    no TLS at all and no CA."""
    moto = shared_moto
    pool = ("--web-user-data", str(WEB_SCRIPT), "--web-plain-http", "--tag", "lbd:pool=plain", "--name", "plain")
    out = output(provision(moto, tmp_path, *pool))
    assert "LBD_WEB_CA" not in out and "LBD_WEB_NAME" not in out
    assert out["LBD_RELAY_CERT"] == f"{tmp_path}/web-tls/relay.pem"
    ud = moto.user_data(out["LBD_WEB_INSTANCE"])
    assert shell_value(ud, "LBD_WEB_TLS_CERT") == "" and shell_value(ud, "LBD_WEB_TLS_KEY") == ""
    assert ud == WEB_SCRIPT.read_text().replace("{{web_tls_cert}}", "").replace("{{web_tls_key}}", "")
    assert sorted(p.name for p in (tmp_path / "web-tls").iterdir()) == ["ca.key", "ca.pem", "relay.key",
                                                                          "relay.pem"]
    plain = tmp_path / "all-plain"
    plain.mkdir()
    out2 = output(provision(moto, plain, *pool, "--relay-plain-http"))
    assert not [k for k in out2 if k.startswith(("LBD_WEB_CA", "LBD_RELAY"))], out2
    assert not (plain / "web-tls").exists()


def test_ca_files_checked(shared_moto, tmp_path):
    """Half a CA is refused (a new one would not match what the relays trust); a CA key others can read is
    refused; neither run launches anything."""
    moto = shared_moto
    pool = ("--tag", "lbd:pool=cafiles", "--name", "cafiles")

    def provision(moto, tmp_path, *args):
        return globals()["provision"](moto, tmp_path, *pool, *args)
    tls = tmp_path / "web-tls"
    output(provision(moto, tmp_path, "--no-web", "--relay-plain-http"))
    assert not tls.exists()  # --no-web and plain relays: no TLS, no CA
    tls.mkdir()
    (tls / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    proc = provision(moto, tmp_path, "--web-user-data", str(WEB_SCRIPT))
    assert proc.returncode == 1 and "without" in proc.stderr.decode(), proc.stderr.decode()
    (tls / "ca.pem").unlink()
    output(provision(moto, tmp_path, "--web-user-data", str(WEB_SCRIPT)))
    os.chmod(tls / "ca.key", 0o644)
    proc = provision(moto, tmp_path, "--web-user-data", str(WEB_SCRIPT))
    assert proc.returncode == 1 and "readable by others" in proc.stderr.decode(), proc.stderr.decode()
    os.chmod(tls / "ca.key", 0o600)
    (tls / "ca.key").write_text("not a key\n")
    os.chmod(tls / "ca.key", 0o600)
    proc = provision(moto, tmp_path, "--web-user-data", str(WEB_SCRIPT))
    assert proc.returncode == 1 and "not a CA certificate and its key" in proc.stderr.decode()
    assert len(web_instances(moto, pool="cafiles")) == 1



def test_web_certificate_renewed_with_the_same_ca(shared_moto, tmp_path):
    """A run renews webd's certificate when the one recorded has fewer than 30 days left, and
    --renew-web-cert at once: the same CA, a new key, the name and now the web host's address; the web host
    (stopped for it, as EC2 changes user data only then) runs again with it in its user data, and web.pem
    records it. A certificate with time left is kept by a plain run."""
    moto = shared_moto
    pool = ("--tag", "lbd:pool=renew", "--name", "renew", "--web-user-data", str(WEB_SCRIPT))
    tls = tmp_path / "web-tls"
    out = output(provision(moto, tmp_path, *pool))
    web, ip = out["LBD_WEB_INSTANCE"], out["LBD_UPSTREAM"].rsplit(":", 1)[0]
    ca_bytes, ca_key_bytes = (tls / "ca.pem").read_bytes(), (tls / "ca.key").read_bytes()
    first = shell_value(moto.user_data(web), "LBD_WEB_TLS_CERT")
    assert "IP Address" not in openssl("x509", "-noout", "-ext", "subjectAltName", stdin=first).stdout

    def web_cert():
        ud = moto.user_data(web)
        cert, key = shell_value(ud, "LBD_WEB_TLS_CERT"), shell_value(ud, "LBD_WEB_TLS_KEY")
        check_web_certificate(cert, key, tls / "ca.pem", WEB_NAME, tmp_path)
        return cert, key

    # Time left: nothing changes.
    again = provision(moto, tmp_path, *pool)
    assert output(again) == out and "renewing" not in again.stderr.decode()
    assert web_cert()[0] == first

    # --renew-web-cert: now.
    renewed = provision(moto, tmp_path, *pool, "--renew-web-cert")
    assert output(renewed) == out, renewed.stderr.decode()
    log = renewed.stderr.decode()
    assert "renewing webd's certificate" in log and "running again" in log, log
    cert, key = web_cert()
    assert cert != first
    san = openssl("x509", "-noout", "-ext", "subjectAltName", stdin=cert).stdout
    assert f"DNS:{WEB_NAME}" in san and f"IP Address:{ip}" in san, san
    assert (tls / "web.pem").read_text().strip() == cert.strip()
    assert (tls / "ca.pem").read_bytes() == ca_bytes and (tls / "ca.key").read_bytes() == ca_key_bytes
    assert [i["State"]["Name"] for i in web_instances(moto, pool="renew")] == ["running"]
    assert web_instances(moto, pool="renew")[0]["InstanceId"] == web
    assert not any(l for l in key.splitlines() if not l.startswith("-----") and l in log)

    # A recorded certificate with 10 days left (signed here by the same CA): a plain run renews it.
    short = tmp_path / "short"
    short.mkdir()
    (short / "ext").write_text(f"subjectAltName=DNS:{WEB_NAME}\nextendedKeyUsage=serverAuth\n")
    for args in (["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                  str(short / "key"), "-out", str(short / "csr"), "-subj", f"/CN={WEB_NAME}"],
                 ["x509", "-req", "-in", str(short / "csr"), "-CA", str(tls / "ca.pem"), "-CAkey",
                  str(tls / "ca.key"), "-set_serial", "7", "-days", "10", "-extfile", str(short / "ext"),
                  "-out", str(tls / "web.pem")]):
        assert openssl(*args).returncode == 0
    auto = provision(moto, tmp_path, *pool)
    assert output(auto) == out
    assert re.search(r"renewing webd's certificate \((9|10) days left\)", auto.stderr.decode()), auto.stderr.decode()
    assert web_cert()[0] not in (cert, first)
    assert (tls / "web.pem").read_text().strip() == web_cert()[0].strip()


RELAY_NAME = "relay.lbd.internal"


def test_relay_certificate_issued_kept_and_renewed(shared_moto, tmp_path):
    """The relays' certificate: from the pool's CA for relay.lbd.internal, with its key (0600) beside the CA,
    never in any output, log or web user data; kept by the next run; issued again when it has fewer than
    30 days left, when its key is readable by others or is not its key, and for another --relay-name."""
    moto = shared_moto
    pool = ("--tag", "lbd:pool=relaytls", "--name", "relaytls", "--no-web")
    tls = tmp_path / "web-tls"
    first = provision(moto, tmp_path, *pool)
    out = output(first)
    assert (out["LBD_RELAY_CERT"], out["LBD_RELAY_KEY"], out["LBD_RELAY_NAME"]) == (
        f"{tls}/relay.pem", f"{tls}/relay.key", RELAY_NAME)
    cert, key = tls / "relay.pem", tls / "relay.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(cert.stat().st_mode) == 0o644
    check_web_certificate(cert.read_text().strip(), key.read_text().strip(), tls / "ca.pem", RELAY_NAME, tmp_path)
    assert openssl("x509", "-noout", "-checkend", str(824 * 86400), stdin=cert.read_text()).returncode == 0
    for line in key_lines(key) + key_lines(tls / "ca.key"):
        assert line not in first.stderr.decode() and line not in first.stdout.decode()
    assert public_key(str(key), "pkey") != public_key(str(tls / "ca.pem"), "x509")

    # Again: kept, byte for byte.
    ca_bytes = (tls / "ca.pem").read_bytes() + (tls / "ca.key").read_bytes()
    cert_bytes, key_bytes = cert.read_bytes(), key.read_bytes()
    again = provision(moto, tmp_path, *pool)
    assert output(again) == out
    assert re.search(r"relays' certificate for relay\.lbd\.internal: 82[45] days left", again.stderr.decode())
    assert cert.read_bytes() == cert_bytes and key.read_bytes() == key_bytes

    def reissued(*args):
        before = cert.read_bytes(), key.read_bytes()
        proc = provision(moto, tmp_path, *pool, *args)
        output(proc)
        assert cert.read_bytes() != before[0] and key.read_bytes() != before[1], proc.stderr.decode()
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        return proc.stderr.decode()

    # A key others can read may have leaked: a new pair.
    os.chmod(key, 0o640)
    assert "readable by others" in reissued()
    # A key that is not the certificate's.
    key.write_text(Path(tls / "ca.key").read_text())
    os.chmod(key, 0o600)
    assert "not a pair" in reissued()
    # Another name; the new key keeps the owner of the old one (the installer gives it to lbd's user).
    if os.geteuid() == 0:
        os.chown(key, 4242, 4243)
    log = reissued("--relay-name", "relays.example.internal")
    if os.geteuid() == 0:
        assert (key.stat().st_uid, key.stat().st_gid) == (4242, 4243)
    check_web_certificate(cert.read_text().strip(), key.read_text().strip(), tls / "ca.pem",
                          "relays.example.internal", tmp_path)
    assert "not a pair" in log
    # Ten days left (signed here by the same CA): renewed.
    short = tmp_path / "short"
    short.mkdir()
    (short / "ext").write_text(f"subjectAltName=DNS:{RELAY_NAME}\nextendedKeyUsage=serverAuth\n")
    for args in (["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                  str(key), "-out", str(short / "csr"), "-subj", f"/CN={RELAY_NAME}"],
                 ["x509", "-req", "-in", str(short / "csr"), "-CA", str(tls / "ca.pem"), "-CAkey",
                  str(tls / "ca.key"), "-set_serial", "7", "-days", "10", "-extfile", str(short / "ext"),
                  "-out", str(cert)]):
        assert openssl(*args).returncode == 0
    os.chmod(key, 0o600)
    assert re.search(r"(9|10) days left, renewing it", reissued()), "a certificate with 10 days left was kept"
    check_web_certificate(cert.read_text().strip(), key.read_text().strip(), tls / "ca.pem", RELAY_NAME, tmp_path)
    # The CA never changed.
    assert (tls / "ca.pem").read_bytes() + (tls / "ca.key").read_bytes() == ca_bytes

"""Credentials (and the region) from the instance metadata service, IMDSv2: a session token from
PUT /latest/api/token with its TTL header, then the role name and its credentials, every GET carrying the
token. lbd's environment has no key and no region; its metadata endpoint is the fault proxy, which
forwards to moto and records what lbd sent.

moto_server serves the whole exchange (token PUT included), but the credentials it hands out
("test-key") are not keys of its own IAM, so a moto with signature checking refuses them. Hence two
cases:
  - moto's metadata end to end, against a moto without signature checking;
  - signature checking on: the token and the role name come from moto, and the fault proxy answers the
    role's credentials with real temporary credentials from sts:AssumeRole (an ASIA key and a session
    token), which moto verifies on every call, X-Amz-Security-Token included."""

import datetime
import json

import ec2env


def _imds_env(env):
    return {
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": env.proxy.url,
        "HOME": str(env.workdir),
        "AWS_SHARED_CREDENTIALS_FILE": str(env.workdir / "no-credentials"),
        "AWS_CONFIG_FILE": str(env.workdir / "no-config"),
    }


def _check_imds_exchange(env):
    reqs = env.proxy.requests()
    imds = [r for r in reqs if r["path"].startswith("/latest/")]
    puts = [r for r in imds if r["method"] == "PUT"]
    gets = [r for r in imds if r["method"] == "GET"]
    assert puts and all(r["path"] == "/latest/api/token" and r["imds_ttl"] == "21600" for r in puts), puts
    assert gets and all(r["imds_token"] for r in gets), gets
    paths = {r["path"] for r in gets}
    assert "/latest/meta-data/placement/region" in paths
    assert "/latest/meta-data/iam/security-credentials/" in paths
    assert any(p.startswith("/latest/meta-data/iam/security-credentials/") and not p.endswith("/") for p in paths)
    # Fetched once, then reused: not one metadata round per API call.
    api = [r for r in reqs if not r["path"].startswith("/latest/")]
    assert len(gets) <= 4, gets
    return api


def test_moto_imds_end_to_end(ec2_env_factory):
    env = ec2_env_factory(moto_auth=False)
    lbd = env.lbd(env=_imds_env(env), config_text=ec2env.lbd_config(env, region=None))
    env.wait_steady(3, timeout=60)
    api = _check_imds_exchange(env)
    assert api and all(r["key_id"] == "test-key" and r["session_token"] for r in api), api[:3]
    assert lbd.find(r"instance metadata.*access key \*\*\*\*-key, session")
    assert "test-secret-key" not in lbd.log_text()


def test_instance_role_with_signature_checking(ec2_env_factory, tmp_path):
    creds_file = tmp_path / "imds-credentials.json"
    env = ec2_env_factory(imds_credentials=creds_file)
    iam = env.moto.client("iam")
    user_arn = iam.get_user(UserName="lbd")["User"]["Arn"]
    role = iam.create_role(RoleName="lbd-role", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": user_arn}, "Action": "sts:AssumeRole"}]}))
    iam.put_role_policy(RoleName="lbd-role", PolicyName="ec2", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:*", "Resource": "*"}]}))
    c = env.moto.client("sts").assume_role(RoleArn=role["Role"]["Arn"], RoleSessionName="lbd")["Credentials"]
    creds_file.write_text(json.dumps({
        "Code": "Success", "Type": "AWS-HMAC",
        "LastUpdated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "AccessKeyId": c["AccessKeyId"], "SecretAccessKey": c["SecretAccessKey"], "Token": c["SessionToken"],
        "Expiration": c["Expiration"].astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}))
    assert c["AccessKeyId"].startswith("ASIA")

    lbd = env.lbd(env=_imds_env(env), config_text=ec2env.lbd_config(env, region=None))
    env.wait_steady(3, timeout=60)
    api = _check_imds_exchange(env)
    assert api and all(r["key_id"] == c["AccessKeyId"] and r["session_token"] for r in api), api[:3]
    assert all(r["status"] == 200 for r in api), [r for r in api if r["status"] != 200][:3]
    text = lbd.log_text()
    assert c["SecretAccessKey"] not in text and c["SessionToken"] not in text

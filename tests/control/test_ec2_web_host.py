"""The web host that `lbctl provision` launches carries the pool's tag (so a second run finds it) and
lbd:role=web. lbd must not take it for one of its backends: before, it counted it towards [pool] desired,
probed it on the backends' port, and terminated it once its grace period was over, taking the database
with it. Here the web host is already running when lbd starts (as after the installer's provisioning); lbd
launches the whole pool beside it, never lists it in its status, and leaves it running past the grace
period. An instance whose role tag is not text lbd knows is left alone the same way.

And the web host `lbctl provision` launches by default, end to end: webd serving the certificate its user
data carries, reached by a relay over TLS verified against the pool's CA (see the last test)."""

import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import ec2env
import testnet
from test_provision import BACKEND_SCRIPT, WEB_NAME, WEB_SCRIPT, output, provision, shell_value


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


def webd_binary():
    env = os.environ.get("WEBD_BINARY")
    if env:
        return Path(env)
    # The same build as lbd's (meson puts it beside lbd/).
    return ec2env.lbd_binary().resolve().parents[1] / "webd" / "webd"


def get(port, path="/healthcheck"):
    """One request through lbd on 127.0.0.1:<port>: (status, body), or (None, error) when it failed."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except OSError as e:
        return None, repr(e).encode()
    finally:
        conn.close()


def test_relay_reaches_webd_over_verified_tls(ec2_env, tmp_path, monkeypatch):
    """End to end on loopback: `lbctl provision` launches the web host with the real web user data; webd
    serves the certificate and key found in it, on the web host's address; lbd (ec2 provider, [ec2]
    upstream_ca and upstream_name from provision's output, the real backend user data) launches a relay
    whose user data carries the CA and the name; the relay that the agent starts from that user data
    reaches webd over TLS verified against the CA and the name: requests through lbd get webd's answer.
    Then webd serves a certificate for the same name from another CA: the relay refuses it, and no request
    gets an answer from webd."""
    env = ec2_env
    sys.path.insert(0, str(ec2env.REPO / "tests" / "webd"))
    sys.path.insert(0, str(ec2env.REPO / "tests" / "integration"))
    import tlstest
    import webdtest
    if not os.environ.get("WEBD_BINARY"):
        monkeypatch.setenv("WEBD_BINARY", str(webd_binary()))

    web_port = testnet.free_port()
    out = output(provision(env.moto, tmp_path, "--web-user-data", str(WEB_SCRIPT), "--web-port", str(web_port),
                           "--image", "ami-1e749f67"))
    upstream, ca = out["LBD_UPSTREAM"], out["LBD_WEB_CA"]
    web_ip = upstream.rsplit(":", 1)[0]
    assert ipaddress.ip_address(web_ip) in ipaddress.ip_network("127.0.0.0/8")
    ud = env.moto.user_data(out["LBD_WEB_INSTANCE"])
    cert, key = tmp_path / "webd.pem", tmp_path / "webd.key"
    cert.write_text(shell_value(ud, "LBD_WEB_TLS_CERT") + "\n")
    key.write_text(shell_value(ud, "LBD_WEB_TLS_KEY") + "\n")
    os.chmod(key, 0o600)

    cluster = webdtest.PgCluster()
    webds = []

    def start_webd(cert_path, key_path):
        w = webdtest.Webd(tmp_path / f"webd{len(webds)}", cluster,
                          extra={"listen": upstream, "tls_cert": str(cert_path), "tls_key": str(key_path)})
        # Its own readiness probe only: what is under test is the relay's verification.
        w.port, w.url, w.verify = web_port, f"https://{upstream}", False
        webds.append(w)
        return w.start()

    try:
        start_webd(cert, key)
        backend_ud = tmp_path / "backend-user-data.sh"
        backend_ud.write_bytes(BACKEND_SCRIPT.read_bytes())
        config = ec2env.lbd_config(env, desired=1, extra_ec2=f"upstream_ca = {ca}\nupstream_name = {WEB_NAME}\n")
        config = config.replace(f"upstream = {env.upstream.addr}", f"upstream = {upstream}")
        config = config.replace(f"user_data = {env.user_data_path}", f"user_data = {backend_ud}")
        lbd = env.lbd(config_text=config)
        # One relay besides the web host (which carries the pool's tag too), healthy in lbd: its health
        # checks pass through it to webd.
        ec2env.wait_until(lambda: env.healthy() == 1, 90, "the relay healthy in lbd", interval=0.25)

        # The relay's user data: the CA certificate (public) and the name, no key of any kind.
        relay_id = [i for i in env.moto.running_ids() if i != out["LBD_WEB_INSTANCE"]]
        assert len(relay_id) == 1
        bud = env.moto.user_data(relay_id[0])
        assert f"\nUPSTREAM={upstream}\n" in bud
        assert shell_value(bud, "UPSTREAM_CA").strip() == Path(ca).read_text().strip()
        assert shell_value(bud, "UPSTREAM_NAME") == WEB_NAME
        assert "PRIVATE KEY-----" not in bud
        assert any(e["what"] == "relay-start" and e.get("tls") for e in env.agent.state()["events"])

        for _ in range(5):
            status, body = get(env.lbd_port)
            assert status == 200 and b'"database":"ok"' in body, (status, body)

        # webd with a certificate for the same name and its address from another CA: refused.
        webds[-1].stop()
        other = tlstest.Pki(tmp_path / "other-ca", name="another CA")
        ocert, okey = other.leaf("web", [WEB_NAME, f"IP:{web_ip}"])
        start_webd(ocert, okey)
        deadline = time.monotonic() + 30
        status = 200
        while time.monotonic() < deadline:
            status, body = get(env.lbd_port)
            if status != 200:
                break
            time.sleep(0.2)
        assert status != 200, "a relay accepted a certificate from another CA"
        answers = [get(env.lbd_port) for _ in range(10)]
        assert all(s != 200 for s, _ in answers), answers
        # webd itself is up and serves that certificate (a client trusting the other CA gets through), so
        # what the relay refuses is the certificate; asked directly, it answers 502 without webd's answer.
        import requests
        assert requests.get(f"https://{upstream}/healthcheck", verify=str(other.ca_cert), timeout=5).status_code == 200
        relay = env.agent.state()["instances"][relay_id[0]]["relay"]
        host, port = relay["addr"].rsplit(":", 1)
        import http.client
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", "/healthcheck")
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        assert resp.status in (502, 503) and b"database" not in body, (resp.status, body)
        assert lbd.alive()
    finally:
        for w in webds:
            w.stop()
        cluster.cleanup()


def test_relays_never_silently_plain(tmp_path):
    """[ec2] upstream_ca set with a user-data template that has no {{upstream_ca}} would launch relays that
    speak plain HTTP while the configuration says they verify the web host: lbd refuses to start (before
    any EC2 call). A CA file that is not a PEM certificate (it goes between quotes in a shell script) is
    refused the same way."""
    lbd_path, _ = ec2env.require_tools()
    sys.path.insert(0, str(ec2env.REPO / "tests" / "integration"))
    import tlstest
    good_ca = tlstest.Pki(tmp_path / "pki").ca_cert
    bad_ca = tmp_path / "bad-ca.pem"
    bad_ca.write_text("-----BEGIN CERTIFICATE-----\n'$(reboot)'\n-----END CERTIFICATE-----\n")
    no_placeholder = tmp_path / "user-data.sh"
    no_placeholder.write_text(ec2env.USER_DATA_TEMPLATE.format(port=8080))
    port = testnet.free_ports(2)
    admin = port + 1
    cases = [(good_ca, no_placeholder, "has no {{upstream_ca}}"), (bad_ca, BACKEND_SCRIPT, "not a PEM certificate file")]
    for ca, user_data, why in cases:
        config = tmp_path / "lbd.conf"
        config.write_text(f"""[lbd]
listen = 127.0.0.1:{port}
admin = 127.0.0.1:{admin}
[pool]
provider = ec2
networks = 127.0.0.0/8
[ec2]
endpoint = http://127.0.0.1:9
region = {ec2env.REGION}
image = {ec2env.IMAGE}
user_data = {user_data}
upstream = 127.0.0.1:8080
upstream_ca = {ca}
upstream_name = {WEB_NAME}
""")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID="AKIAEXAMPLE", AWS_SECRET_ACCESS_KEY="x" * 40, AWS_EC2_METADATA_DISABLED="true")
        r = subprocess.run([str(lbd_path), "--config", str(config)], stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=30, env=env)
        assert r.returncode != 0 and why in r.stderr, r.stderr
        assert "Launching" not in r.stderr

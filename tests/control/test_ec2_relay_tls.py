"""The hop from lbd to the relays, over TLS by default: `lbctl provision` issues the relays' certificate
and key from the pool's private CA; lbd ([ec2] relay_tls_cert and relay_tls_key) puts both into each
backend's user data (the real scripts/cloud-init-backend.sh), where the agent finds them and starts each
relay listening with TLS, as that script configures it; lbd ([tls] backend = on, backend_ca = the CA,
backend_name = the relays' name, as the installer's lb role writes them) proxies and health-checks over
TLS it verifies. Requests through lbd get the web host's answer, and /status counts the relays healthy.

It fails closed: relays given a certificate from another CA, or from the pool's CA for another name, are
never healthy in lbd and no request reaches them (503).

Everything listens on 127.0.0.0/8: moto, the relays (the instances' loopback addresses), lbd."""

import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

import ec2env
from test_provision import BACKEND_SCRIPT, output, provision, shell_value
from test_ec2_web_host import get

RELAY_NAME = "relay.lbd.internal"


def provisioned(env, tmp_path, tls_dir, *args):
    """`lbctl provision --no-web` with <tls_dir>: the relays' certificate, key and the CA there."""
    out = output(provision(env.moto, tmp_path, "--no-web", "--image", "ami-1e749f67", *args, tls_dir=tls_dir))
    assert out["LBD_RELAY_CERT"] == f"{tls_dir}/relay.pem" and out["LBD_RELAY_KEY"] == f"{tls_dir}/relay.key"
    return out


def relay_lbd(env, tmp_path, ca, cert, key, desired=2):
    """lbd launching relays with <cert> and <key> in their user data, verifying them against <ca>."""
    backend_ud = tmp_path / "backend-user-data.sh"
    backend_ud.write_bytes(BACKEND_SCRIPT.read_bytes())
    config = ec2env.lbd_config(env, desired=desired, extra_ec2=f"relay_tls_cert = {cert}\nrelay_tls_key = {key}\n")
    config = config.replace(f"user_data = {env.user_data_path}", f"user_data = {backend_ud}")
    config += f"\n[tls]\nbackend = on\nbackend_ca = {ca}\nbackend_name = {RELAY_NAME}\n"
    return env.lbd(config_text=config)


def key_lines(text):
    return [l for l in text.splitlines() if l and not l.startswith("-----")]


def test_lbd_to_relays_over_verified_tls(ec2_env, tmp_path):
    env = ec2_env
    tls = tmp_path / "web-tls"
    out = provisioned(env, tmp_path, tls)
    assert out["LBD_RELAY_NAME"] == RELAY_NAME
    lbd = relay_lbd(env, tmp_path, tls / "ca.pem", tls / "relay.pem", tls / "relay.key")
    env.wait_steady(2, timeout=90)

    # Each relay's user data: its certificate and key, nothing of the CA's key.
    cert_text, key_text = (tls / "relay.pem").read_text().strip(), (tls / "relay.key").read_text().strip()
    for iid in env.moto.running_ids():
        ud = env.moto.user_data(iid)
        assert shell_value(ud, "RELAY_TLS_CERT").strip() == cert_text
        assert shell_value(ud, "RELAY_TLS_KEY").strip() == key_text
        for line in key_lines((tls / "ca.key").read_text()):
            assert line not in ud
    starts = [e for e in env.agent.state()["events"] if e["what"] == "relay-start"]
    assert len(starts) >= 2 and all(e.get("listen_tls") for e in starts), starts

    for i in range(10):
        status, body = get(env.lbd_port, f"/item/{i}")
        assert status == 200 and body == f"web /item/{i}\n".encode(), (status, body)
    assert env.healthy() == 2

    # The relay speaks TLS only, with the certificate lbd verifies: for the name, from the CA.
    addr = env.agent.state()["instances"][env.moto.running_ids()[0]]["relay"]["addr"]
    host, port = addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(tls / "ca.pem"))
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        with ctx.wrap_socket(sock, server_hostname=RELAY_NAME) as tsock:
            assert tsock.version() is not None
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/healthcheck")
        plain = conn.getresponse().status
    except (OSError, http.client.HTTPException):
        plain = None
    finally:
        conn.close()
    assert plain != 200, "the relay answered plain HTTP"
    # The key went into the user data only: never into lbd's log.
    assert not [l for l in key_lines(key_text) if lbd.find(re.escape(l))]
    assert lbd.alive()


@pytest.mark.parametrize("case", ["other-ca", "other-name"])
def test_relay_certificate_not_trusted_fails_closed(ec2_env, tmp_path, case):
    env = ec2_env
    tls = tmp_path / "web-tls"
    provisioned(env, tmp_path, tls)
    bad = tmp_path / "bad-tls"
    if case == "other-ca":
        provisioned(env, tmp_path, bad)  # a CA of its own, a certificate for the right name
        assert (bad / "ca.pem").read_bytes() != (tls / "ca.pem").read_bytes()
    else:
        bad.mkdir()
        for name in ("ca.pem", "ca.key"):
            shutil.copy2(tls / name, bad / name)
        provisioned(env, tmp_path, bad, "--relay-name", "other.lbd.internal")
    lbd = relay_lbd(env, tmp_path, tls / "ca.pem", bad / "relay.pem", bad / "relay.key")

    def relays_up():
        running = env.moto.running_ids()
        return len(running) == 2 and set(running) <= set(env.agent.ready_relays()) and running
    ec2env.wait_until(relays_up, 90, "two relays listening", interval=0.25)
    # Many health checks (every 200 ms) against relays that are up: none may pass.
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        assert env.healthy() == 0, env.status()
        time.sleep(0.25)
    answers = [get(env.lbd_port) for _ in range(5)]
    assert all(s == 503 for s, _ in answers), answers
    assert env.healthy() == 0
    assert lbd.alive()


def test_user_data_without_relay_placeholders_refused(ec2_env, tmp_path):
    """[ec2] relay_tls_cert set with a template lacking the placeholders would launch relays listening in
    the clear while lbd expects TLS: lbd refuses to start (before any launch); a key that is not the
    certificate's likewise, its text never in the log."""
    env = ec2_env
    tls, other = tmp_path / "web-tls", tmp_path / "other-tls"
    provisioned(env, tmp_path, tls)
    provisioned(env, tmp_path, other)
    cases = []
    for drop in ("{{relay_tls_cert}}", "{{relay_tls_key}}"):
        path = tmp_path / f"no-{drop.strip('{}')}.sh"
        path.write_text(BACKEND_SCRIPT.read_text().replace(drop, ""))
        cases.append((path, tls / "relay.key", "lacks {{relay_tls_cert}} or {{relay_tls_key}}"))
    cases.append((BACKEND_SCRIPT, other / "relay.key", "is not the key of relay_tls_cert"))
    cases.append((BACKEND_SCRIPT, tls / "relay.pem", "no PEM private key in it"))
    for template, key, why in cases:
        config = ec2env.lbd_config(env, desired=1,
                                   extra_ec2=f"relay_tls_cert = {tls / 'relay.pem'}\nrelay_tls_key = {key}\n")
        config = config.replace(f"user_data = {env.user_data_path}", f"user_data = {template}")
        path = tmp_path / "lbd.conf"
        path.write_text(config)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        environ.update(AWS_ACCESS_KEY_ID=env.moto.key_id, AWS_SECRET_ACCESS_KEY=env.moto.secret,
                       AWS_EC2_METADATA_DISABLED="true")
        r = subprocess.run([str(env.lbd_path), "--config", str(path)], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=30, env=environ)
        assert r.returncode != 0 and why in r.stderr, (template, key, r.stderr)
        for line in key_lines(Path(key).read_text()):
            assert line not in r.stderr
    assert env.moto.running_ids() == []

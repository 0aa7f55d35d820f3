"""The installer's HTTPS: a certificate the user has (--tls-cert/--tls-key), or certbot in webroot mode
(--domain/--acme-email): the configuration, files and modes it writes staged with --root, and certbot's
deploy hook run for real against a running lbd, with certificates from a CA the test makes. No ACME
server is reachable here: the hook is given what certbot would give it."""

import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time

import pytest

from deploytest import LBD, SOURCE
from test_installer import installer, install_ok, ini, mode, read, snapshot, staged

sys.path.insert(0, os.path.join(SOURCE, "tests", "integration"))
import tlstest  # noqa: E402

STATIC = ["--role", "lb", "--provider", "static", "--upstream", "127.0.0.1:18080",
          "--listen", "127.0.0.1:8000", "--admin", "127.0.0.1:9181"]
HOOK = "/etc/letsencrypt/renewal-hooks/deploy/lbd.sh"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = tlstest.Pki(tmp_path_factory.mktemp("pki"))
    p.site = p.leaf("site", ["example.test"])
    p.renewed = p.leaf("renewed", ["example.test"], days=60)
    p.other = p.leaf("other", ["other.test"])
    return p


def test_own_certificate(tmp_path, pki):
    install_ok(tmp_path, *STATIC, "--tls-cert", str(pki.site[0]), "--tls-key", str(pki.site[1]),
               "--tls-listen", "127.0.0.1:8443")
    conf = ini(read(tmp_path, "/etc/lbd/lbd.conf"))
    assert conf[("lbd", "listen")] == "127.0.0.1:8000 redirect, 127.0.0.1:8443 tls"
    assert conf[("tls", "certificate")] == "/etc/lbd/tls/site.pem /etc/lbd/tls/site.key"
    assert read(tmp_path, "/etc/lbd/tls/site.pem") == pki.site[0].read_text()
    assert read(tmp_path, "/etc/lbd/tls/site.key") == pki.site[1].read_text()
    assert mode(tmp_path, "/etc/lbd/tls/site.key") == 0o640
    assert mode(tmp_path, "/etc/lbd/tls") == 0o750
    before = snapshot(tmp_path)
    install_ok(tmp_path, *STATIC, "--tls-cert", str(pki.site[0]), "--tls-key", str(pki.site[1]),
               "--tls-listen", "127.0.0.1:8443")
    assert snapshot(tmp_path) == before


def test_mismatched_key_is_refused(tmp_path, pki):
    r = installer(tmp_path, *STATIC, "--tls-cert", str(pki.site[0]), "--tls-key", str(pki.other[1]))
    assert r.returncode != 0
    assert "does not match" in r.stdout + r.stderr


@pytest.mark.parametrize("args,flag", [
    (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "--tls-cert"),
    (["--tls-cert", "relative.pem", "--tls-key", "/x.key"], "--tls-cert"),
    (["--domain", "example.test"], "--acme-email"),
    (["--domain", "bad name", "--acme-email", "ops@example.test"], "--domain"),
    (["--domain", "example.test", "--acme-email", "not-an-address"], "--acme-email"),
    (["--domain", "example.test", "--acme-email", "ops@example.test", "--tls-listen", "127.0.0.1:8000"],
     "--tls-listen"),
])
def test_bad_tls_flags_exit_2(tmp_path, args, flag):
    r = installer(tmp_path, *STATIC, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert flag in r.stderr


def test_domain_serves_the_challenge_and_installs_the_hook(tmp_path):
    install_ok(tmp_path, *STATIC, "--domain", "example.test", "--acme-email", "ops@example.test")
    conf = ini(read(tmp_path, "/etc/lbd/lbd.conf"))
    # No certificate yet: plain HTTP with the challenge; certbot runs only on a real installation.
    assert conf[("lbd", "listen")] == "127.0.0.1:8000"
    assert conf[("tls", "acme_challenge_dir")] == "/var/lib/lbd/acme/.well-known/acme-challenge"
    assert ("tls", "certificate") not in conf
    assert os.path.isdir(staged(tmp_path, "/var/lib/lbd/acme/.well-known/acme-challenge"))
    assert mode(tmp_path, HOOK) == 0o755
    hook = read(tmp_path, HOOK)
    assert "name=example.test" in hook and "systemctl reload lbd.service" in hook
    subprocess.run(["sh", "-n", staged(tmp_path, HOOK)], check=True)
    # Uninstalled with the rest.
    r = installer(tmp_path, *STATIC, "--uninstall")
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(staged(tmp_path, HOOK))


def _peer_cert(port):
    ctx = tlstest.client_context()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="example.test") as t:
            return t.getpeercert(binary_form=True)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_deploy_hook_installs_the_renewal_and_reloads_lbd(tmp_path, pki):
    """certbot's flow after the challenge: the hook gets the new lineage, copies it whole next to lbd's
    configuration and reloads lbd, which serves the renewed certificate to new connections, and lbd
    serves the challenge files certbot writes into the webroot the installer made."""
    root = tmp_path / "root"
    install_ok(root, *STATIC, "--domain", "example.test", "--acme-email", "ops@example.test")
    tls_dir = staged(root, "/etc/lbd/tls")
    webroot = staged(root, "/var/lib/lbd/acme")
    # What certbot leaves after its first run.
    live = tmp_path / "letsencrypt" / "live" / "example.test"
    live.mkdir(parents=True)

    def certbot_renewed(cert):
        (live / "fullchain.pem").write_text(cert[0].read_text())
        (live / "privkey.pem").write_text(cert[1].read_text())

    lbd_pid = []
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    # systemctl as the hook calls it: a reload of lbd.service is a SIGHUP to the test's lbd (none yet: it
    # fails, as systemctl would for a stopped unit).
    (fakebin / "systemctl").write_text("#!/bin/sh\n[ \"$1 $2\" = \"reload lbd.service\" ] || exit 1\n"
                                       "[ \"${LBD_TEST_PID:-0}\" -gt 1 ] || exit 1\n"
                                       "exec kill -HUP \"$LBD_TEST_PID\"\n")
    (fakebin / "systemctl").chmod(0o755)

    def run_hook():
        env = dict(os.environ, RENEWED_LINEAGE=str(live), LBD_TLS_DIR=tls_dir, LBD_GROUP="root",
                   PATH=f"{fakebin}:{os.environ['PATH']}", LBD_TEST_PID=str(lbd_pid[0] if lbd_pid else 0))
        return subprocess.run(["sh", staged(root, HOOK)], env=env, capture_output=True, text=True, timeout=30)

    certbot_renewed(pki.site)
    lbd_pid.append(0)
    run_hook()  # the first certificate: installed; the reload of an lbd not running yet fails
    assert os.path.exists(os.path.join(tls_dir, "example.test.pem"))
    assert stat.S_IMODE(os.stat(os.path.join(tls_dir, "example.test.key")).st_mode) == 0o640

    plain, tls = _free_port(), _free_port()
    conf = tmp_path / "lbd.conf"
    conf.write_text(f"[lbd]\nlisten = 127.0.0.1:{plain} redirect, 127.0.0.1:{tls} tls\nadmin = off\n"
                    f"[tls]\ncertificate = {tls_dir}/example.test.pem {tls_dir}/example.test.key\n"
                    f"acme_challenge_dir = {webroot}/.well-known/acme-challenge\n"
                    "[pool]\nbackends = 127.0.0.1:9\nnetworks = 127.0.0.0/8\n")
    proc = subprocess.Popen([LBD, "--config", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "lbd.stderr", "wb"))
    try:
        lbd_pid[0] = proc.pid
        deadline = time.monotonic() + 10
        while True:
            try:
                assert _peer_cert(tls) == tlstest.der(pki.site[0])
                break
            except (OSError, ssl.SSLError):
                assert time.monotonic() < deadline, (tmp_path / "lbd.stderr").read_text()
                time.sleep(0.05)
        # The challenge, as certbot's webroot plugin writes it, through lbd's plain listener.
        token = "tok_-EN123"
        with open(os.path.join(webroot, ".well-known", "acme-challenge", token), "w") as f:
            f.write("tok_-EN123.key-authorization")
        with socket.create_connection(("127.0.0.1", plain), timeout=5) as s:
            s.sendall(f"GET /.well-known/acme-challenge/{token} HTTP/1.1\r\nHost: example.test\r\n"
                      "Connection: close\r\n\r\n".encode())
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"tok_-EN123.key-authorization")
        # A renewal: the hook runs, lbd reloads and new connections get the new certificate.
        certbot_renewed(pki.renewed)
        r = run_hook()
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 10
        while _peer_cert(tls) != tlstest.der(pki.renewed[0]):
            assert time.monotonic() < deadline, (tmp_path / "lbd.stderr").read_text()
            time.sleep(0.05)
        # Another lineage's renewal is not ours: nothing copied, no reload.
        other = tmp_path / "letsencrypt" / "live" / "other.test"
        other.mkdir()
        env = dict(os.environ, RENEWED_LINEAGE=str(other), LBD_TLS_DIR=tls_dir, LBD_GROUP="root",
                   PATH=f"{fakebin}:{os.environ['PATH']}", LBD_TEST_PID="0")
        r = subprocess.run(["sh", staged(root, HOOK)], env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0
        assert _peer_cert(tls) == tlstest.der(pki.renewed[0])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_relay_to_the_web_host_over_tls(tmp_path, pki):
    args = ["--role", "backend", "--upstream", "127.0.0.1:8443", "--listen", "127.0.0.1:8001"]
    install_ok(tmp_path, *args, "--upstream-ca", str(pki.ca_cert), "--upstream-name", "web.example.test")
    conf = ini(read(tmp_path, "/etc/lbd/relay.conf"))
    assert conf[("tls", "backend")] == "on"
    assert conf[("tls", "backend_ca")] == "/etc/lbd/upstream-ca.pem"
    assert conf[("tls", "backend_name")] == "web.example.test"
    assert read(tmp_path, "/etc/lbd/upstream-ca.pem") == pki.ca_cert.read_text()
    assert mode(tmp_path, "/etc/lbd/upstream-ca.pem") == 0o640
    # Without the flags the relay speaks plain HTTP, as before.
    plain = tmp_path / "plain"
    install_ok(plain, *args)
    assert not any(section == "tls" for section, _ in ini(read(plain, "/etc/lbd/relay.conf")))
    for bad, flag in ((["--upstream-name", "web.example.test"], "--upstream-name"),
                      (["--upstream-ca", "/nonexistent.pem"], "--upstream-ca")):
        r = installer(tmp_path / "bad", *args, *bad)
        assert r.returncode == 2 and flag in r.stderr, r.stderr
    r = installer(tmp_path / "bad", *STATIC, "--upstream-ca", str(pki.ca_cert))
    assert r.returncode == 2 and "--upstream-ca does not apply to role lb" in r.stderr


def test_relay_listens_with_tls(tmp_path, pki):
    """Role backend with --tls-cert/--tls-key (what scripts/cloud-init-backend.sh passes from the user data
    when lbd is not in the image): the relay listens with TLS with them, beside its own TLS to the web
    host; one without the other is refused."""
    cert, key = pki.site
    args = ["--role", "backend", "--upstream", "127.0.0.1:8443", "--listen", "127.0.0.1:8001"]
    install_ok(tmp_path, *args, "--upstream-ca", str(pki.ca_cert), "--tls-cert", str(cert), "--tls-key", str(key))
    text = read(tmp_path, "/etc/lbd/relay.conf")
    conf = ini(text)
    assert conf[("lbd", "listen")] == "127.0.0.1:8001 tls"
    assert conf[("tls", "certificate")] == "/etc/lbd/relay-tls.pem /etc/lbd/relay-tls.key"
    assert conf[("tls", "backend")] == "on" and text.count("[tls]") == 1, text
    assert read(tmp_path, "/etc/lbd/relay-tls.key") == key.read_text()
    assert mode(tmp_path, "/etc/lbd/relay-tls.key") == 0o640
    r = installer(tmp_path / "bad", *args, "--tls-cert", str(cert))
    assert r.returncode == 2 and "--tls-cert and --tls-key go together" in r.stderr, r.stderr


WEB = ["--role", "web", "--listen", "127.0.0.1:8443", "--database", "host=127.0.0.1 dbname=app user=app"]


def openssl(*args):
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)


def test_web_private_ca(tmp_path):
    """--tls-private-ca NAME: a private CA made once, webd's certificate for NAME from it, webd configured
    for HTTPS; a second run keeps both; another name makes a new certificate from the same CA; the relay
    installed with a copy of the CA trusts it."""
    r = install_ok(tmp_path, *WEB, "--tls-private-ca", "web.internal")
    assert "--upstream-ca" in r.stdout and "web.internal" in r.stdout
    conf = ini(read(tmp_path, "/etc/webd/webd.conf"))
    assert conf[("webd", "tls_cert")] == "/etc/webd/tls/web.pem"
    assert conf[("webd", "tls_key")] == "/etc/webd/tls/web.key"
    ca, cert = staged(tmp_path, "/etc/webd/tls/ca.pem"), staged(tmp_path, "/etc/webd/tls/web.pem")
    assert (mode(tmp_path, "/etc/webd/tls/ca.key"), mode(tmp_path, "/etc/webd/tls/web.key")) == (0o600, 0o640)
    assert mode(tmp_path, "/etc/webd/tls") == 0o750
    v = openssl("verify", "-CAfile", ca, "-verify_hostname", "web.internal", cert)
    assert v.returncode == 0, v.stdout + v.stderr
    assert openssl("verify", "-CAfile", ca, "-verify_hostname", "other.internal", cert).returncode != 0
    before = snapshot(tmp_path)
    install_ok(tmp_path, *WEB, "--tls-private-ca", "web.internal")
    assert snapshot(tmp_path) == before
    ca_text = read(tmp_path, "/etc/webd/tls/ca.pem")
    install_ok(tmp_path, *WEB, "--tls-private-ca", "web2.internal")
    assert read(tmp_path, "/etc/webd/tls/ca.pem") == ca_text
    assert openssl("verify", "-CAfile", ca, "-verify_hostname", "web2.internal", cert).returncode == 0
    relay = tmp_path / "relay"
    install_ok(relay, "--role", "backend", "--upstream", "127.0.0.1:8443", "--listen", "127.0.0.1:8001",
               "--upstream-ca", ca, "--upstream-name", "web2.internal")
    assert read(relay, "/etc/lbd/upstream-ca.pem") == ca_text


def test_web_own_certificate(tmp_path, pki):
    cert, key = pki.site
    install_ok(tmp_path, *WEB, "--tls-cert", str(cert), "--tls-key", str(key))
    assert read(tmp_path, "/etc/webd/tls/web.pem") == cert.read_text()
    assert mode(tmp_path, "/etc/webd/tls/web.key") == 0o640
    assert ini(read(tmp_path, "/etc/webd/webd.conf"))[("webd", "tls_key")] == "/etc/webd/tls/web.key"
    assert not os.path.exists(staged(tmp_path, "/etc/webd/tls/ca.pem"))
    # A key that is not the certificate's: webd's check refuses it, naming the file.
    r = installer(tmp_path / "bad", *WEB, "--tls-cert", str(cert), "--tls-key", str(pki.other[1]))
    assert r.returncode != 0 and "does not match" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize("args,flag", [
    (["--tls-private-ca", "not a name"], "--tls-private-ca"),
    (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "--tls-cert"),
    (["--tls-private-ca", "web.internal", "--tls-cert", "CERT", "--tls-key", "KEY"], "pick one"),
])
def test_web_bad_tls_flags_exit_2(tmp_path, pki, args, flag):
    args = [str(pki.site[0]) if a == "CERT" else str(pki.site[1]) if a == "KEY" else a for a in args]
    r = installer(tmp_path, *WEB, *args)
    assert r.returncode == 2 and flag in r.stderr, r.stderr


def test_private_ca_flag_is_for_the_web_role(tmp_path):
    r = installer(tmp_path, *STATIC, "--tls-private-ca", "web.internal")
    assert r.returncode == 2 and "--tls-private-ca does not apply to role lb" in r.stderr, r.stderr


def test_web_boot_hook_installs_a_renewed_certificate(tmp_path, pki):
    """scripts/web-tls-boot.sh (run at every boot of a web host `lbctl provision` made): the certificate and
    key of the user data replace webd's when they differ (0640, whole), webd is reloaded once; the same
    certificate again changes nothing; user data without one, or plain HTTP, leaves webd as it is; the key
    never reaches the output."""
    import grp
    tls = tmp_path / "webd-tls"
    tls.mkdir()
    calls = tmp_path / "systemctl-calls"
    fake = tmp_path / "systemctl"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >>{calls}\n")
    fake.chmod(0o755)
    ud = tmp_path / "user-data"
    env = dict(os.environ, LBD_WEB_USER_DATA=str(ud), WEBD_TLS_DIR=str(tls),
               WEBD_GROUP=grp.getgrgid(os.getgid()).gr_name, SYSTEMCTL=str(fake))
    hook = os.path.join(SOURCE, "scripts", "web-tls-boot.sh")

    def boot():
        r = subprocess.run([hook], env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout + r.stderr

    def user_data(cert, key):
        ud.write_text("#!/bin/bash\nLBD_SOURCE_URL=''\n"
                      f"LBD_WEB_TLS_CERT='{cert.strip()}'\nLBD_WEB_TLS_KEY='{key.strip()}'\necho rest\n")

    first_cert, first_key = (p.read_text() for p in pki.site)
    user_data(first_cert, first_key)
    out = boot()
    assert (tls / "web.pem").read_text() == first_cert.strip() + "\n"
    assert (tls / "web.key").read_text() == first_key.strip() + "\n"
    assert stat.S_IMODE((tls / "web.key").stat().st_mode) == 0o640
    assert calls.read_text() == "reload webd.service\n"
    assert "PRIVATE" not in out and first_key.splitlines()[1] not in out
    boot()
    assert calls.read_text() == "reload webd.service\n"  # the same certificate: no reload
    renewed_cert, renewed_key = (p.read_text() for p in pki.renewed)
    user_data(renewed_cert, renewed_key)
    boot()
    assert (tls / "web.pem").read_text() == renewed_cert.strip() + "\n"
    assert calls.read_text().count("reload") == 2
    assert sorted(p.name for p in tls.iterdir()) == ["web.key", "web.pem"]
    user_data("", "")  # plain HTTP: nothing to do
    assert "nothing to do" in boot()
    assert calls.read_text().count("reload") == 2


FAKE_TLS_LBCTL = """#!/bin/bash
# Answers like `lbctl provision` with the web tier's TLS: the CA in --web-tls-dir, unless --web-plain-http;
# the relays' certificate and key there too, unless --relay-plain-http.
printf '%s\\n' "$@" > "$(dirname "$0")/args"
dir="" plain=false relay_plain=false
while (($#)); do
    case "$1" in
        --web-tls-dir) dir=$2; shift ;;
        --web-plain-http) plain=true ;;
        --relay-plain-http) relay_plain=true ;;
    esac
    shift
done
echo "LBD_SECURITY_GROUP_BACKEND=sg-0bbbbbbbbbbbbbbbb"
echo "LBD_IMAGE=ami-0dddddddddddddddd"
echo "LBD_WEB_INSTANCE=i-0fffffffffffffff0"
echo "LBD_UPSTREAM=127.0.1.30:8080"
if $plain; then
    echo "LBD_WEB_CA="
    echo "LBD_WEB_NAME="
else
    mkdir -p "$dir" && cp "$FAKE_CA" "$dir/ca.pem"
    echo "LBD_WEB_CA=$dir/ca.pem"
    echo "LBD_WEB_NAME=web.lbd.internal"
fi
if ! $relay_plain; then
    mkdir -p "$dir" && cp "$FAKE_CA" "$dir/ca.pem"
    cp "$FAKE_RELAY_CERT" "$dir/relay.pem"
    (umask 077 && cp "$FAKE_RELAY_KEY" "$dir/relay.key")
    echo "LBD_RELAY_CERT=$dir/relay.pem"
    echo "LBD_RELAY_KEY=$dir/relay.key"
    echo "LBD_RELAY_NAME=relay.lbd.internal"
fi
"""


def fake_tls_lbctl(tmp_path, pki):
    """The fake lbctl and the environment it takes its files from."""
    lbctl = tmp_path / "fake" / "lbctl"
    lbctl.parent.mkdir()
    lbctl.write_text(FAKE_TLS_LBCTL)
    lbctl.chmod(0o755)
    cert, key = pki.site
    return lbctl, {"LBD_LBCTL": str(lbctl), "FAKE_CA": str(pki.ca_cert), "FAKE_RELAY_CERT": str(cert),
                   "FAKE_RELAY_KEY": str(key)}


@pytest.mark.parametrize("plain", [False, True])
def test_provision_wires_the_relays_tls(tmp_path, pki, plain):
    """With provisioning, lbd.conf's [ec2] names the web tier's CA (kept in /etc/lbd/web-tls) and webd's
    name, which lbd puts in every relay's user data; --web-plain-http leaves them out."""
    from test_installer import provision_args
    lbctl, env = fake_tls_lbctl(tmp_path, pki)
    root = tmp_path / "root"
    extra = ["--web-plain-http"] if plain else []
    install_ok(root, *provision_args(), *extra, env=env)
    conf = ini(read(root, "/etc/lbd/lbd.conf"))
    args = (lbctl.parent / "args").read_text().splitlines()
    assert args[args.index("--web-tls-dir") + 1] == staged(root, "/etc/lbd/web-tls")
    if plain:
        assert "--web-plain-http" in args
        assert ("ec2", "upstream_ca") not in conf and ("ec2", "upstream_name") not in conf
    else:
        assert "--web-plain-http" not in args
        assert conf[("ec2", "upstream_ca")] == "/etc/lbd/web-tls/ca.pem"
        assert conf[("ec2", "upstream_name")] == "web.lbd.internal"
    # The backends' user data carries the placeholders lbd fills in.
    ud = read(root, "/etc/lbd/backend-user-data.sh")
    assert "UPSTREAM_CA='{{upstream_ca}}'" in ud and "UPSTREAM_NAME='{{upstream_name}}'" in ud


@pytest.mark.parametrize("plain", [False, True])
def test_provision_wires_lbd_to_relays_tls(tmp_path, pki, plain):
    """With provisioning, lbd.conf's [ec2] names the relays' certificate and key (kept in /etc/lbd/web-tls,
    the key 0600 and lbd's to read), which lbd puts in every relay's user data, and its [tls] verifies the
    relays against the CA and their name, for proxying and health checks; --relay-plain-http leaves all of
    it out."""
    from test_installer import provision_args
    lbctl, env = fake_tls_lbctl(tmp_path, pki)
    root = tmp_path / "root"
    extra = ["--relay-plain-http"] if plain else []
    install_ok(root, *provision_args(), *extra, env=env)
    text = read(root, "/etc/lbd/lbd.conf")
    conf = ini(text)
    args = (lbctl.parent / "args").read_text().splitlines()
    if plain:
        assert "--relay-plain-http" in args
        for key in (("ec2", "relay_tls_cert"), ("ec2", "relay_tls_key"), ("tls", "backend"),
                    ("tls", "backend_ca"), ("tls", "backend_name")):
            assert key not in conf, text
    else:
        assert "--relay-plain-http" not in args
        assert conf[("ec2", "relay_tls_cert")] == "/etc/lbd/web-tls/relay.pem"
        assert conf[("ec2", "relay_tls_key")] == "/etc/lbd/web-tls/relay.key"
        assert conf[("tls", "backend")] == "on"
        assert conf[("tls", "backend_ca")] == "/etc/lbd/web-tls/ca.pem"
        assert conf[("tls", "backend_name")] == "relay.lbd.internal"
        assert text.count("[tls]") == 1, text
        assert mode(root, "/etc/lbd/web-tls/relay.key") == 0o600
    # The backends' user data carries the placeholders lbd fills in.
    ud = read(root, "/etc/lbd/backend-user-data.sh")
    assert "RELAY_TLS_CERT='{{relay_tls_cert}}'" in ud and "RELAY_TLS_KEY='{{relay_tls_key}}'" in ud


def test_relay_plain_http_needs_role_lb(tmp_path):
    r = installer(tmp_path / "root", "--role", "backend", "--upstream", "127.0.1.30:8080", "--relay-plain-http")
    assert r.returncode == 2, r.stdout + r.stderr


def test_web_plain_http_needs_role_lb(tmp_path):
    r = installer(tmp_path / "root", "--role", "web", "--web-plain-http")
    assert r.returncode == 2, r.stdout + r.stderr

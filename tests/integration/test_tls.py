"""TLS listeners: certificates chosen by SNI (exact, wildcard, default), RSA and ECDSA side by side, the
protocol profile, resumption, ALPN, X-Forwarded-Proto, certificate reload, and the strict HTTP rules over
TLS. Every certificate is made by the test (tlstest.Pki); clients are Python's ssl and openssl s_client."""

import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

import lbdtest
import tlstest


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = tlstest.Pki(tmp_path_factory.mktemp("pki"))
    p.default = p.leaf("default", ["default.test"])
    p.site_ec = p.leaf("site-ec", ["site.test", "www.site.test"], "ec")
    p.site_rsa = p.leaf("site-rsa", ["www.site.test", "site.test"], "rsa")
    p.wild = p.leaf("wild", ["*.wild.test"])
    return p


@pytest.fixture(scope="module")
def env(module_harness, pki):
    (b1,) = module_harness.backends(1)
    lbd = module_harness.lbd([b1], tls=[pki.default, pki.site_ec, pki.site_rsa, pki.wild])
    return lbd, b1


def peer_cert(lbd, server_hostname, ctx=None):
    """The DER certificate lbd shows a client asking for <server_hostname> (None: no SNI)."""
    ctx = ctx or tlstest.client_context()
    with lbdtest.HttpConnection(lbd.tls_port, tls=ctx, server_hostname=server_hostname) as conn:
        return conn.sock.getpeercert(binary_form=True)


def s_client(port, *args, data=b"", timeout=20):
    """Runs openssl s_client against <port>; returns its combined output."""
    proc = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args],
                          input=data, capture_output=True, timeout=timeout)
    return (proc.stdout + proc.stderr).decode(errors="replace")


@pytest.mark.parametrize("name,which", [
    ("site.test", "site_ec"),
    ("WWW.Site.Test", "site_ec"),
    ("a.wild.test", "wild"),
    ("b.a.wild.test", "default"),   # a wildcard covers one label only
    ("wild.test", "default"),
    ("unknown.test", "default"),
    (None, "default"),              # no SNI: the first certificate listed
])
def test_sni_choice(env, pki, name, which):
    lbd, _ = env
    ctx = tlstest.client_context(maximum=ssl.TLSVersion.TLSv1_2,
                                 ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    assert peer_cert(lbd, name, ctx) == tlstest.der(getattr(pki, which)[0])


def test_sni_verified_by_a_client_that_checks_names(env, pki):
    lbd, _ = env
    ctx = tlstest.client_context(ca=pki.ca_cert)
    for name in ("site.test", "www.site.test", "x.wild.test", "default.test"):
        with lbdtest.HttpConnection(lbd.tls_port, tls=ctx, server_hostname=name) as conn:
            resp = conn.get("/echo")
            assert resp.status == 200
            assert conn.sock.version() == "TLSv1.3"


@pytest.mark.parametrize("cipher,which", [
    ("ECDHE-ECDSA-AES128-GCM-SHA256", "site_ec"),
    ("ECDHE-RSA-AES128-GCM-SHA256", "site_rsa"),
    ("ECDHE-RSA-CHACHA20-POLY1305", "site_rsa"),
])
def test_rsa_and_ecdsa_for_the_same_name(env, pki, cipher, which):
    lbd, _ = env
    ctx = tlstest.client_context(maximum=ssl.TLSVersion.TLSv1_2, ciphers=cipher)
    assert peer_cert(lbd, "site.test", ctx) == tlstest.der(getattr(pki, which)[0])


def test_rsa_chosen_for_a_tls13_client_that_signs_only_rsa(env, pki):
    lbd, _ = env
    out = s_client(lbd.tls_port, "-servername", "site.test", "-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256")
    assert "Peer signature type: RSA-PSS" in out, out
    out = s_client(lbd.tls_port, "-servername", "site.test", "-tls1_3", "-sigalgs",
                   "ecdsa_secp256r1_sha256")
    assert "Peer signature type: ECDSA" in out, out


@pytest.mark.parametrize("flag", ["-tls1", "-tls1_1"])
def test_old_protocols_refused(env, flag):
    lbd, _ = env
    before = lbd.metrics().get("lbd_tls_handshake_failures_total", reason="protocol") or 0
    # The client is allowed everything (security level 0): the refusal is lbd's, a protocol_version alert.
    out = s_client(lbd.tls_port, flag, "-cipher", "DEFAULT@SECLEVEL=0", "-servername", "site.test")
    assert "alert protocol version" in out, out
    lbdtest.wait_until(
        lambda: (lbd.metrics().get("lbd_tls_handshake_failures_total", reason="protocol") or 0) > before,
        5, "the refused handshake counted as a protocol failure")


def test_weak_ciphers_refused(env):
    lbd, _ = env
    for cipher in ("AES128-SHA", "ECDHE-RSA-AES128-SHA", "AES128-GCM-SHA256", "DHE-RSA-AES128-GCM-SHA256"):
        out = s_client(lbd.tls_port, "-tls1_2", "-cipher", cipher + "@SECLEVEL=0", "-servername",
                       "site.test")
        assert "handshake failure" in out or "no shared cipher" in out, (cipher, out)


def test_no_compression_no_renegotiation(env):
    lbd, _ = env
    out = s_client(lbd.tls_port, "-tls1_2", "-servername", "site.test", data=b"R\n")
    assert "Compression: NONE" in out, out
    assert "Secure Renegotiation IS NOT supported" not in out
    # An attempted renegotiation ('R') is refused: the connection carries no second handshake.
    assert out.count("SSL handshake has read") == 1, out


def test_alpn_http11(env):
    lbd, _ = env
    ctx = tlstest.client_context(alpn=["h2", "http/1.1"])
    with lbdtest.HttpConnection(lbd.tls_port, tls=ctx, server_hostname="site.test") as conn:
        assert conn.sock.selected_alpn_protocol() == "http/1.1"
        assert conn.get("/echo").status == 200
    # A client that offers only h2 goes on without ALPN, and speaks HTTP/1.1 or nothing.
    ctx = tlstest.client_context(alpn=["h2"])
    with lbdtest.HttpConnection(lbd.tls_port, tls=ctx, server_hostname="site.test") as conn:
        assert conn.sock.selected_alpn_protocol() is None


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_resumption_on_a_second_connection(env, version):
    lbd, _ = env
    ctx = tlstest.client_context(minimum=version, maximum=version)
    before = lbd.metrics().get("lbd_tls_resumed_total") or 0
    with lbdtest.HttpConnection(lbd.tls_port, tls=ctx, server_hostname="site.test") as conn:
        assert conn.get("/echo").status == 200
        session = conn.sock.session
        assert not conn.sock.session_reused
    assert session is not None
    sock = socket.create_connection(("127.0.0.1", lbd.tls_port), timeout=10)
    with ctx.wrap_socket(sock, server_hostname="site.test", session=session) as s:
        assert s.session_reused
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")
    assert (lbd.metrics().get("lbd_tls_resumed_total") or 0) > before


def test_forwarded_proto_and_client_address(env):
    lbd, b1 = env
    with lbdtest.HttpConnection(lbd.tls_port, tls=lbd.client_tls, server_hostname="site.test") as conn:
        resp = conn.request("GET", "/echo", [("X-Forwarded-Proto", "http")])
    seen = dict((k.lower(), v) for k, v in resp.json()["headers"])
    assert seen["x-forwarded-proto"] == "https"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    plain = lbdtest.request(lbd.plain_port, "GET", "/echo").json()
    assert dict((k.lower(), v) for k, v in plain["headers"])["x-forwarded-proto"] == "http"


def test_bodies_both_ways_and_pipelining(env):
    lbd, _ = env
    with lbdtest.HttpConnection(lbd.tls_port, tls=lbd.client_tls, server_hostname="site.test") as conn:
        body = os.urandom(900 << 10)
        resp = conn.request("POST", "/upload", body=body)
        assert resp.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
        resp = conn.get(f"/bytes/{8 << 20}")
        assert hashlib.sha256(resp.body).hexdigest() == lbdtest.pattern_sha256(8 << 20)
        # Three requests in one record: the second and third wait inside OpenSSL, not in the socket.
        conn.send(b"".join(b"GET /echo/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3)))
        for i in range(3):
            resp = conn.read_response()
            assert resp.status == 200 and resp.json()["path"] == f"/echo/{i}"


def test_plain_http_on_the_tls_port(env):
    lbd, _ = env
    out, closed = lbdtest.raw_exchange(lbd.tls_port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
    assert closed and b"200" not in out
    lbdtest.wait_until(
        lambda: (lbd.metrics().get("lbd_tls_handshake_failures_total", reason="not_tls") or 0) >= 1,
        5, "the plain request counted as not_tls")
    assert lbdtest.request(lbd.tls_port, "GET", "/echo", tls=lbd.client_tls).status == 200


def test_handshake_that_never_comes_times_out(harness, pki):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], tls=[pki.default], args=["--set", "timeouts.client_header=500ms"])
    with socket.create_connection(("127.0.0.1", lbd.tls_port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01")  # the start of a record, never finished
        s.settimeout(5)
        assert s.recv(100) == b""
    lbdtest.wait_until(
        lambda: (lbd.metrics().get("lbd_tls_handshake_failures_total", reason="timeout") or 0) >= 1,
        5, "the stalled handshake counted as a timeout")


def test_modern_profile_refuses_tls12(harness, pki):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], tls=[pki.default], args=["--set", "tls.profile=modern"])
    out = s_client(lbd.tls_port, "-tls1_2")
    assert "alert protocol version" in out, out
    ctx = tlstest.client_context()
    with lbdtest.HttpConnection(lbd.tls_port, tls=ctx) as conn:
        assert conn.sock.version() == "TLSv1.3"
        assert conn.get("/echo").status == 200


def test_strict_sni_refuses_unknown_names(harness, pki):
    (b1,) = harness.backends(1)
    lbd = harness.lbd([b1], tls=[pki.default, pki.site_ec], args=["--set", "tls.strict_sni=on"])
    with pytest.raises(ssl.SSLError):
        peer_cert(lbd, "unknown.test")
    assert peer_cert(lbd, "site.test") == tlstest.der(pki.site_ec[0])
    assert peer_cert(lbd, None) == tlstest.der(pki.default[0])
    lbdtest.wait_until(
        lambda: (lbd.metrics().get("lbd_tls_handshake_failures_total", reason="no_certificate") or 0) >= 1,
        5, "the refused name counted")


def check_config(lbd_path, tmp_path, tls_lines):
    conf = tmp_path / "bad.conf"
    conf.write_text("[lbd]\nlisten = 127.0.0.1:1443 tls\n[pool]\nbackends = 127.0.0.1:1\n[tls]\n"
                    + "".join(f"certificate = {line}\n" for line in tls_lines))
    proc = subprocess.run([str(lbd_path), "--config", str(conf), "--check-config"],
                          capture_output=True, text=True, timeout=30)
    return proc.returncode, proc.stderr


def test_bad_certificates_refused_with_file_and_reason(lbd_path, tmp_path, pki):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    huge = tmp_path / "huge.pem"
    huge.write_bytes(b"A" * (2 << 20))
    cases = [
        ([f"{pki.site_ec[0]} {pki.site_rsa[1]}"], [str(pki.site_rsa[1]), "does not match"]),
        ([f"{tmp_path}/missing.pem"], ["missing.pem", "No such file"]),
        ([f"{garbage}"], [str(garbage), "no PEM certificate"]),
        ([f"{huge}"], [str(huge), "larger than"]),
        ([f"{pki.site_ec[0]} {pki.site_ec[0]}"], ["no unencrypted PEM private key"]),
        ([f"{pki.site_ec[0]} {pki.site_ec[1]}", f"{pki.site_ec[0]} {pki.site_ec[1]}"],
         ["a second ECDSA certificate"]),
        (["relative.pem"], ["absolute"]),
    ]
    for lines, words in cases:
        code, err = check_config(lbd_path, tmp_path, lines)
        assert code == 78, (lines, err)
        for w in words:
            assert w in err, (lines, w, err)
    code, err = check_config(lbd_path, tmp_path, [])
    assert code == 78 and "at least one certificate" in err
    code, err = check_config(lbd_path, tmp_path, [f"{pki.site_ec[0]} {pki.site_ec[1]}",
                                                  f"{pki.site_rsa[0]} {pki.site_rsa[1]}"])
    assert code == 0, err


def test_reload_under_load_switches_certificates(harness, pki, tmp_path):
    (b1,) = harness.backends(1)
    live, cert, key = tlstest.live_files(tmp_path, pki.site_ec)
    lbd = harness.lbd([b1], tls=[(cert, key)])
    ctx = tlstest.client_context(ca=pki.ca_cert)
    held = lbdtest.HttpConnection(lbd.tls_port, tls=ctx, server_hostname="site.test")
    assert held.get("/echo").status == 200
    load = harness.load(lbd.tls_port, n=3, path="/echo", max_seconds=20, tls=ctx,
                        server_hostname="site.test")
    fresh = tlstest.client_context(ca=pki.ca_cert)
    for t in load.threads:
        t.start()
    renewed = pki.leaf("site-renewed", ["site.test", "www.site.test"], "ec", days=20)
    for want in (renewed, pki.site_ec, renewed):
        tlstest.renew(live, cert, key, want)
        os.kill(lbd.pid, signal.SIGHUP)
        lbdtest.wait_until(lambda: peer_cert(lbd, "site.test", fresh) == tlstest.der(want[0]), 10,
                           "new handshakes to get the reloaded certificate")
    load.stop_event.set()
    for t in load.threads:
        t.join(timeout=30)
    assert load.failures == [], load.failures[:5]
    assert load.ok > 0
    # The connection opened before the reloads still works, on the certificate it negotiated.
    assert held.sock.getpeercert(binary_form=True) == tlstest.der(pki.site_ec[0])
    assert held.get("/echo").status == 200
    held.close()


def test_bad_file_on_reload_keeps_the_running_certificate(harness, pki, tmp_path):
    (b1,) = harness.backends(1)
    _, cert, key = tlstest.live_files(tmp_path, pki.site_ec)
    lbd = harness.lbd([b1], tls=[(cert, key)])
    other = pki.leaf("other", ["site.test"], "ec")
    # A renewal caught half way: the new certificate with the old key.
    shutil.copy(other[0], cert)
    os.kill(lbd.pid, signal.SIGHUP)
    lbdtest.wait_until(lambda: "TLS certificates not reloaded" in lbd.stderr_text(), 10, "the refusal")
    err = lbd.stderr_text()
    assert f"{key}" in err and "does not match" in err, err
    assert peer_cert(lbd, "site.test") == tlstest.der(pki.site_ec[0])
    assert lbd.metrics().get("lbd_tls_reloads_failed_total") == 1
    # Then the files are made whole: the next reload takes them.
    shutil.copy(other[1], key)
    os.kill(lbd.pid, signal.SIGHUP)
    lbdtest.wait_until(lambda: peer_cert(lbd, "site.test") == tlstest.der(other[0]), 10,
                       "the fixed files to be used")
    assert lbd.get("/echo").status == 200


def test_rejected_requests_over_tls(env):
    lbd, b1 = env
    out, closed = lbdtest.raw_exchange(
        lbd.tls_port, b"POST /tls-smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", timeout=5, tls=lbd.client_tls)
    assert out.startswith(b"HTTP/1.1 400") and closed
    assert not b1.saw("/tls-smuggle")


@pytest.fixture(scope="module")
def redirect_env(module_harness, pki, tmp_path_factory):
    (b1,) = module_harness.backends(1, prefix="redir")
    acme = tmp_path_factory.mktemp("acme")
    rport = lbdtest.free_port()
    lbd = module_harness.lbd([b1], tls=[pki.site_ec],
                             args=["--listen", f"127.0.0.1:{rport} redirect",
                                   "--set", f"tls.acme_challenge_dir={acme}",
                                   "--set", "tls.hsts=31536000"])
    lbd.redirect_port = rport
    lbd.ca_cert = pki.ca_cert
    return lbd, b1, acme


def test_redirect_keeps_path_and_query(redirect_env):
    lbd, b1, _ = redirect_env
    with lbdtest.HttpConnection(lbd.redirect_port) as conn:
        resp = conn.request("GET", "/a/b?x=1&y=%2F", host="site.test")
        assert resp.status == 308
        assert resp.header("Location") == f"https://site.test:{lbd.tls_port}/a/b?x=1&y=%2F"
        assert "close" not in resp.connection_tokens()
        resp = conn.request("HEAD", "/hd-redir", host="Site.Test:80")
        assert resp.status == 308 and resp.body == b""
        assert resp.header("Location") == f"https://Site.Test:{lbd.tls_port}/hd-redir"
        resp = conn.request("GET", "http://other.test/abs?q", host="other.test")
        assert resp.header("Location") == f"https://other.test:{lbd.tls_port}/abs?q"
        resp = conn.request("GET", "/v6", host="[::1]:8080")
        assert resp.header("Location") == f"https://[::1]:{lbd.tls_port}/v6"
    # A body is not read: the answer comes, then the connection ends.
    with lbdtest.HttpConnection(lbd.redirect_port) as conn:
        resp = conn.request("POST", "/form", body=b"x" * 5000, host="site.test")
        assert resp.status == 308 and "close" in resp.connection_tokens()
        assert conn.closed_by_peer(5)
    # Followed, the redirect reaches the backend over TLS.
    ctx = tlstest.client_context(ca=pki_ca(lbd))
    with lbdtest.HttpConnection(lbd.tls_port, tls=ctx, server_hostname="site.test") as conn:
        resp = conn.get("/a/b?x=1&y=%2F")
        assert resp.status == 200 and resp.body == f"{b1.name} /a/b\n".encode()
    assert not b1.saw("/form") and not b1.saw("/hd-redir")


def pki_ca(lbd):
    return lbd.ca_cert


@pytest.mark.parametrize("host", ["", "a b", "x/y", "a@b", "[::1", "evil.test:80x", "a\tb", "é.test",
                                  "x" * 300])
def test_redirect_refuses_hosts_that_are_not_names(redirect_env, host):
    lbd, _, _ = redirect_env
    head = b"GET /p HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n"
    out, _ = lbdtest.raw_exchange(lbd.redirect_port, head, timeout=5)
    assert out.startswith(b"HTTP/1.1 400"), out
    assert b"Location" not in out


def test_redirect_without_host_or_with_asterisk(redirect_env):
    lbd, _, _ = redirect_env
    out, _ = lbdtest.raw_exchange(lbd.redirect_port, b"GET /p HTTP/1.0\r\n\r\n", timeout=5)
    assert out.startswith(b"HTTP/1.1 400"), out
    out, _ = lbdtest.raw_exchange(lbd.redirect_port, b"OPTIONS * HTTP/1.1\r\nHost: site.test\r\n\r\n",
                                  timeout=5)
    assert out.startswith(b"HTTP/1.1 400"), out


def test_acme_challenge_served_not_redirected(redirect_env, tmp_path):
    lbd, b1, acme = redirect_env
    token = "Xq1-_abcDEF0123456789abcdefghijklmnopqrstuv"
    (acme / token).write_text(token + ".thumbprint")
    for port in (lbd.redirect_port, lbd.plain_port):
        resp = lbdtest.request(port, "GET", f"/.well-known/acme-challenge/{token}")
        assert resp.status == 200 and resp.body == (token + ".thumbprint").encode()
        resp = lbdtest.request(port, "HEAD", f"/.well-known/acme-challenge/{token}")
        assert resp.status == 200 and resp.body == b""
        assert resp.header("Content-Length") == str(len(token) + 11)
    resp = lbdtest.request(lbd.plain_port, "POST", f"/.well-known/acme-challenge/{token}", body=b"x")
    assert resp.status == 405
    # Over TLS the path is the backend's like any other.
    resp = lbdtest.request(lbd.tls_port, "GET", f"/.well-known/acme-challenge/{token}", tls=lbd.client_tls)
    assert resp.status == 200 and resp.header("X-Backend") == b1.name


def test_acme_challenge_names_and_sizes(redirect_env, tmp_path):
    lbd, b1, acme = redirect_env
    secret = tmp_path / "secret"
    secret.write_text("not for clients")
    (acme / "link").symlink_to(secret)
    (acme / "big").write_bytes(b"x" * 5000)
    (acme / "sub").mkdir()
    (acme / "dotted.name").write_text("x")
    (acme / "fine").write_text("ok")
    for token in ("link", "big", "sub", "dotted.name", "missing", "..%2Fsecret", "../secret",
                  "fine?x=1", "fine/", "%66ine", "x" * 200):
        resp = lbdtest.request(lbd.plain_port, "GET", f"/.well-known/acme-challenge/{token}")
        assert resp.status == 404, (token, resp)
        assert b"not for clients" not in resp.body
    assert lbdtest.request(lbd.plain_port, "GET", "/.well-known/acme-challenge/fine").body == b"ok"
    assert not any(b1.saw(t) for t in ("/.well-known/acme-challenge/link", "acme-challenge/big"))


def test_hsts_on_tls_only(redirect_env):
    lbd, _, _ = redirect_env
    resp = lbdtest.request(lbd.tls_port, "GET", "/echo", tls=lbd.client_tls)
    assert resp.status == 200
    assert resp.header_values("Strict-Transport-Security") == ["max-age=31536000"]
    resp = lbdtest.request(lbd.plain_port, "GET", "/echo")
    assert resp.status == 200 and resp.header("Strict-Transport-Security") is None


def test_certificates_in_status_metrics_and_lbctl(env, pki):
    lbd, _ = env
    st = lbd.status()["tls"]
    certs = {c["file"]: c for c in st["certificates"]}
    assert set(certs) == {str(p[0]) for p in (pki.default, pki.site_ec, pki.site_rsa, pki.wild)}
    site = certs[str(pki.site_rsa[0])]
    assert site["key"] == "RSA" and site["name"] in ("site.test", "www.site.test")
    assert 28 <= site["days_left"] <= 30
    assert certs[str(pki.default[0])]["default"] and not certs[str(pki.wild[0])]["default"]
    m = lbd.metrics()
    expiry = m.get("lbd_tls_certificate_expiry_timestamp_seconds", file=str(pki.wild[0]),
                   domain="*.wild.test", key="ECDSA")
    assert expiry == certs[str(pki.wild[0])]["not_after"]
    assert abs(expiry - (time.time() + 30 * 86400)) < 2 * 86400
    lbctl = os.environ.get("LBCTL_BINARY")
    if lbctl:
        out = subprocess.run([lbctl, "--admin", f"127.0.0.1:{lbd.admin_port}", "status"],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert "TLS certificates:" in out.stdout
        line = next(x for x in out.stdout.splitlines() if "*.wild.test" in x)
        assert "ECDSA" in line and "days" in line and str(pki.wild[0]) in line


@pytest.fixture(scope="module")
def tls_web(module_harness, pki):
    """A TLS server standing in for the web host: an lbd terminating TLS (site.test and 127.0.0.1 in its
    certificate) in front of a test backend."""
    (web,) = module_harness.backends(1, prefix="web")
    front = module_harness.lbd([web], tls=[pki.leaf("web", ["site.test", "IP:127.0.0.1"])])
    return front, web


def relay(harness, tls_web, ca, name=None, healthy=None):
    front, _ = tls_web
    target = lbdtest.Backend.__new__(lbdtest.Backend)
    target.addr = f"127.0.0.1:{front.tls_port}"
    # TLS checks of a TLS server: generous under valgrind, where both sides are slow.
    args = ["--set", "tls.backend=on", "--set", f"tls.backend_ca={ca}", "--set", "health.timeout=5s"]
    if name is not None:
        args += ["--set", f"tls.backend_name={name}"]
    return harness.lbd([target], args=args, healthy=healthy)


@pytest.mark.parametrize("name", ["site.test", None])
def test_tls_upstream_verified(harness, pki, tls_web, name):
    _, web = tls_web
    r = relay(harness, tls_web, pki.ca_cert, name)
    with r.connect() as conn:
        for i in range(3):
            resp = conn.get(f"/verified-{i}")
            assert resp.status == 200 and resp.body == f"{web.name} /verified-{i}\n".encode()
    body = os.urandom(500 << 10)
    resp = r.request("POST", "/upload", body=body)
    assert resp.json()["body_sha256"] == hashlib.sha256(body).hexdigest()
    resp = r.get(f"/bytes/{4 << 20}")
    assert hashlib.sha256(resp.body).hexdigest() == lbdtest.pattern_sha256(4 << 20)


@pytest.mark.parametrize("case", ["wrong-ca", "wrong-name"])
def test_tls_upstream_fails_closed(harness, pki, tls_web, tmp_path, case):
    _, web = tls_web
    if case == "wrong-ca":
        ca, name = tlstest.Pki(tmp_path / "other", "another CA").ca_cert, "site.test"
    else:
        ca, name = pki.ca_cert, "other.test"
    r = relay(harness, tls_web, ca, name, healthy=0)
    lbdtest.wait_until(lambda: (r.status()["backends"][0].get("last_check") or {}).get("result")
                       == "fail", 10, "a failed health check")
    resp = r.get(f"/closed-{case}")
    assert resp.status in (502, 503), resp
    assert not web.saw(f"/closed-{case}")
    st = r.status()["backends"][0]
    assert st["state"] != "up", st


def test_tls_upstream_proxy_fails_closed_on_a_new_connection(harness, pki, tmp_path):
    """The web host comes back with a certificate for another name: lbd's next connection to it fails
    verification, and the request gets a 502 without reaching it."""
    (web,) = harness.backends(1, prefix="web")
    good, bad = pki.leaf("web-good", ["site.test"]), pki.leaf("web-bad", ["other.test"])
    _, cert, key = tlstest.live_files(tmp_path, good)
    front = harness.lbd([web], tls=[(cert, key)])
    target = lbdtest.Backend.__new__(lbdtest.Backend)
    target.addr = f"127.0.0.1:{front.tls_port}"
    # One health check at start, none after: what follows is the proxy's own handshake.
    r = harness.lbd([target], health_interval="1h",
                    args=["--set", "tls.backend=on", "--set", f"tls.backend_ca={pki.ca_cert}",
                          "--set", "tls.backend_name=site.test", "--set", "limits.retries=0",
                          "--set", "timeouts.backend_idle=100ms", "--set", "health.timeout=10s"])
    assert r.get("/before").status == 200
    # Restarted with the other certificate (and new ticket keys, so lbd's session is not resumed).
    front.stop()
    shutil.copy(bad[0], cert)
    shutil.copy(bad[1], key)
    front.start()
    time.sleep(0.5)  # past backend_idle: the pooled connection to the old process is gone
    resp = r.get("/after-change")
    assert resp.status == 502, resp
    assert not web.saw("/after-change")
    assert "certificate not trusted" in r.stderr_text() or "certificate verify failed" in r.stderr_text()


# ---- hostile clients over TLS: the same answers as on plain connections, nothing held ----

def test_garbage_and_oversized_heads_over_tls(env):
    lbd, b1 = env
    out, closed = lbdtest.raw_exchange(lbd.tls_port, b"\x00\x01\x02 not http\r\n\r\n", timeout=5,
                                       tls=lbd.client_tls)
    assert out.startswith(b"HTTP/1.1 400") and closed
    head = b"GET /tls-big HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * (20 << 10) + b"\r\n\r\n"
    out, closed = lbdtest.raw_exchange(lbd.tls_port, head, timeout=5, tls=lbd.client_tls)
    assert out.startswith(b"HTTP/1.1 431") and closed
    assert not b1.saw("/tls-big")


def test_request_one_byte_per_record(env):
    """Every byte in a TLS record of its own: the parser sees the head grow one byte at a time."""
    lbd, _ = env
    with lbdtest.HttpConnection(lbd.tls_port, tls=lbd.client_tls, server_hostname="site.test") as conn:
        for b in b"GET /echo/bytewise HTTP/1.1\r\nHost: site.test\r\n\r\n":
            conn.sock.sendall(bytes([b]))
        resp = conn.read_response()
        assert resp.status == 200 and resp.json()["path"] == "/echo/bytewise"


def test_close_notify_mid_request_and_abandoned_handshakes(env):
    lbd, _ = env
    before = lbd.metrics().get("lbd_tls_handshake_failures_total", reason="client_abort") or 0
    with lbdtest.HttpConnection(lbd.tls_port, tls=lbd.client_tls, server_hostname="site.test") as conn:
        conn.sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf")
        raw = conn.sock.unwrap()  # close_notify: the client is done, the request never ends
        raw.settimeout(5)
        try:
            data = raw.recv(100)
        except ConnectionResetError:
            data = b""
        # lbd closes: at most its own close_notify (an alert record) before the end.
        assert data == b"" or data.startswith(b"\x15\x03\x03"), data
        raw.close()
    # Half a ClientHello, then gone, many times.
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", lbd.tls_port), timeout=5) as s:
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    lbdtest.wait_until(
        lambda: (lbd.metrics().get("lbd_tls_handshake_failures_total", reason="client_abort") or 0)
        >= before + 20, 10, "the abandoned handshakes counted")
    lbdtest.wait_until(lambda: lbd.status()["connections"] == 0, 10, "every connection closed")
    assert lbdtest.request(lbd.tls_port, "GET", "/echo", tls=lbd.client_tls).status == 200


def test_reload_without_certificates_keeps_the_running_ones(lbd_path, pki, tmp_path):
    """The file loses its TLS listener and its certificates: the listener stays until a restart, with
    the certificates it has."""
    plain, tls = lbdtest.free_port(), lbdtest.free_port()
    conf = tmp_path / "lbd.conf"
    base = (f"[lbd]\nadmin = off\n[pool]\nbackends = 127.0.0.1:9\nnetworks = 127.0.0.0/8\n")
    conf.write_text(base + f"[lbd]\nlisten = 127.0.0.1:{plain}, 127.0.0.1:{tls} tls\n"
                    f"[tls]\ncertificate = {pki.site_ec[0]} {pki.site_ec[1]}\n")
    err = tmp_path / "lbd.stderr"
    with open(err, "wb") as f:
        proc = subprocess.Popen([str(lbd_path), "--config", str(conf)], stdout=subprocess.DEVNULL, stderr=f)
    try:
        ctx = tlstest.client_context()

        def cert():
            with lbdtest.HttpConnection(tls, tls=ctx, server_hostname="site.test") as conn:
                return conn.sock.getpeercert(binary_form=True)

        lbdtest.wait_until(lambda: cert() == tlstest.der(pki.site_ec[0]), 10, "lbd serving TLS")
        conf.write_text(base + f"[lbd]\nlisten = 127.0.0.1:{plain}\n")
        proc.send_signal(signal.SIGHUP)
        lbdtest.wait_until(lambda: "lists none; keeping the running ones" in err.read_text(), 10,
                           "the refusal")
        assert cert() == tlstest.der(pki.site_ec[0])
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_websocket_tunnel_over_tls(env):
    """An upgrade over TLS: after the 101 the bytes go both ways through lbd's TLS, large ones too, and
    the client's close_notify ends the tunnel like a half-close: the backend's last words come back."""
    lbd, _ = env
    head = (b"GET /upgrade HTTP/1.1\r\nHost: site.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with lbdtest.HttpConnection(lbd.tls_port, tls=lbd.client_tls, server_hostname="site.test") as conn:
        conn.send(head)
        conn.sock.settimeout(10)
        got = bytearray()
        while b"\r\n\r\n" not in got:
            chunk = conn.sock.recv(65536)
            assert chunk, f"closed before the 101: {bytes(got)!r}"
            got += chunk
        answer, _, rest = bytes(got).partition(b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 101"), answer
        got = bytearray(rest)
        payload = os.urandom(300 << 10)
        conn.send(payload)
        while len(got) < len(payload):
            chunk = conn.sock.recv(65536)
            assert chunk, f"tunnel closed after {len(got)} bytes"
            got += chunk
        assert bytes(got[:len(payload)]) == payload
        # close_notify: the client is done sending. lbd passes the half-close on; the backend's last
        # words ("bye") come back after it, which Python's ssl reports as data after close_notify.
        with pytest.raises(ssl.SSLError, match="APPLICATION_DATA_AFTER_CLOSE_NOTIFY"):
            conn.sock.unwrap()
    lbdtest.wait_until(lambda: lbd.status()["connections"] == 0, 10, "the tunnel closed")

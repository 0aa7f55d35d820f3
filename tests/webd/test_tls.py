"""webd serving HTTPS on its engine ([webd] tls_cert and tls_key): the API over TLS verified against a
private CA, the intermediate profile (TLS 1.0/1.1 refused, ALPN http/1.1, sessions resumed), the engine's
rules over TLS (strict framing, the head deadline covering the handshake), the certificate reloaded on
SIGHUP without dropping a connection and a bad file refused with the old one kept, and --check-config's
verdicts. The certificates come from a CA the test makes (tests/integration/tlstest.py)."""

import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

import webdtest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))
import tlstest  # noqa: E402 - the CA helper lbd's TLS tests use

EXIT_CONFIG = 78


@pytest.fixture
def pki(tmp_path):
    return tlstest.Pki(tmp_path / "pki", name="webd test CA")


def tls_webd(new_webd, pki, stem="web", extra=None):
    cert, key = pki.leaf(stem, ["IP:127.0.0.1", "web.test"])
    settings = {"tls_cert": str(cert), "tls_key": str(key), "header_timeout": "2s"}
    settings.update(extra or {})
    return new_webd(extra=settings, ca=pki.ca_cert)


def tls_conn(port, ctx, server_hostname="127.0.0.1", session=None, timeout=5):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=server_hostname, session=session)


def exchange(sock, data, until=b"\r\n\r\n"):
    """Sends data and reads until the peer closes or <until> has come with the whole body."""
    sock.sendall(data)
    buf = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not chunk:
            break
        buf += chunk
        head, sep, body = buf.partition(b"\r\n\r\n")
        if sep and until in buf:
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            if len(body) >= length:
                break
    return buf


def test_api_over_verified_tls(new_webd, pki):
    w = tls_webd(new_webd, pki)
    assert w.url.startswith("https://")
    _, tok = w.user("tls-user")
    r = w.request("POST", "/tasks", token=tok, body={"title": "over TLS"})
    assert r.status_code == 201, r.text
    r = w.request("GET", "/tasks", token=tok)
    assert r.status_code == 200 and r.json()["items"][0]["title"] == "over TLS", r.text
    # The certificate is the one configured, checked against the CA and the address.
    ctx = tlstest.client_context(ca=pki.ca_cert, alpn=["h2", "http/1.1"])
    with tls_conn(w.port, ctx) as s:
        assert s.getpeercert(True) == tlstest.der(pki.dir / "web.pem")
        assert s.selected_alpn_protocol() == "http/1.1"
        assert s.version() in ("TLSv1.2", "TLSv1.3")
        out = exchange(s, b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200 "), out


def test_old_protocols_and_plain_http_refused(new_webd, pki):
    w = tls_webd(new_webd, pki)
    ctx = tlstest.client_context(ca=pki.ca_cert, maximum=ssl.TLSVersion.TLSv1_1)
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        tls_conn(w.port, ctx).close()
    # Plain HTTP on the TLS port gets no HTTP answer, and webd goes on serving.
    with socket.create_connection(("127.0.0.1", w.port), timeout=5) as s:
        out = exchange(s, b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not out.startswith(b"HTTP/"), out
    assert w.request("GET", "/healthcheck").status_code == 200


def test_session_resumed(new_webd, pki):
    w = tls_webd(new_webd, pki)
    ctx = tlstest.client_context(ca=pki.ca_cert, maximum=ssl.TLSVersion.TLSv1_2)
    with tls_conn(w.port, ctx) as s:
        assert exchange(s, b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200 ")
        session = s.session
    with tls_conn(w.port, ctx, session=session) as s:
        assert s.session_reused
        assert exchange(s, b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200 ")


def test_engine_rules_over_tls(new_webd, pki):
    """Strict framing, pipelining and the head deadline hold over TLS as over plain HTTP."""
    w = tls_webd(new_webd, pki)
    ctx = tlstest.client_context(ca=pki.ca_cert)
    with tls_conn(w.port, ctx) as s:
        out = exchange(s, b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}")
        assert out.startswith(b"HTTP/1.1 400 "), out
    with tls_conn(w.port, ctx) as s:
        s.sendall(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n" * 3 + b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: close\r\n\r\n")
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        assert buf.count(b"HTTP/1.1 200 ") == 4, buf
    # A client that connects and never finishes the handshake is closed within header_timeout (2 s).
    with socket.create_connection(("127.0.0.1", w.port), timeout=10) as s:
        s.sendall(b"\x16\x03\x01\x00\x05")  # the start of a ClientHello record, then nothing
        start = time.monotonic()
        try:
            assert s.recv(100) == b""
        except ConnectionResetError:
            pass
        assert time.monotonic() - start < 6


def test_reload_keeps_connections_and_refuses_bad_files(new_webd, pki):
    w = tls_webd(new_webd, pki)
    ctx = tlstest.client_context(ca=pki.ca_cert)
    old = tlstest.der(pki.dir / "web.pem")
    kept = tls_conn(w.port, ctx)
    try:
        assert exchange(kept, b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200 ")
        # A renewal: new files in place, SIGHUP; new connections get the new certificate.
        cert, key = pki.leaf("renewed", ["IP:127.0.0.1", "web.test"])
        (pki.dir / "web.pem").write_bytes(cert.read_bytes())
        (pki.dir / "web.key").write_bytes(key.read_bytes())
        w.proc.send_signal(signal.SIGHUP)
        webdtest.wait_until(lambda: "TLS: loaded" in w.log(), 10, "the reload's log line")
        with tls_conn(w.port, ctx) as s:
            assert s.getpeercert(True) != old
            assert s.getpeercert(True) == tlstest.der(cert)
        # The connection opened before the reload goes on.
        assert exchange(kept, b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200 ")
        # A key that does not match: refused, named, and the running certificate stays.
        _, other_key = pki.leaf("other", ["web.test"])
        (pki.dir / "web.key").write_bytes(other_key.read_bytes())
        w.proc.send_signal(signal.SIGHUP)
        webdtest.wait_until(lambda: "reload refused" in w.log(), 10, "the refused reload's log line")
        assert "does not match" in w.log()
        with tls_conn(w.port, ctx) as s:
            assert s.getpeercert(True) == tlstest.der(cert)
        assert w.request("GET", "/healthcheck").status_code == 200
    finally:
        kept.close()


def run_check(tmp_path, extra):
    conf = tmp_path / "check.conf"
    lines = ["[webd]", "database = dbname=unused", f"secret_file = {tmp_path / 'jwt.key'}"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    conf.write_text("\n".join(lines) + "\n")
    return subprocess.run([str(webdtest.require_webd()), "--config", str(conf), "--check-config"],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_check_config(tmp_path, pki):
    cert, key = pki.leaf("web", ["IP:127.0.0.1"])
    r = run_check(tmp_path, {"tls_cert": cert, "tls_key": key})
    assert r.returncode == 0, r.stderr
    r = run_check(tmp_path, {"tls_cert": cert})
    assert r.returncode == EXIT_CONFIG and "tls_key" in r.stderr and "go together" in r.stderr, r.stderr
    _, other = pki.leaf("other", ["web.test"])
    r = run_check(tmp_path, {"tls_cert": cert, "tls_key": other})
    assert r.returncode == EXIT_CONFIG and "does not match" in r.stderr and str(other) in r.stderr, r.stderr
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    r = run_check(tmp_path, {"tls_cert": bad, "tls_key": key})
    assert r.returncode == EXIT_CONFIG and str(bad) in r.stderr, r.stderr
    r = run_check(tmp_path, {"tls_cert": "relative.pem", "tls_key": key})
    assert r.returncode == EXIT_CONFIG and "absolute" in r.stderr, r.stderr


def relay(tmp_path, web_port, ca, name):
    """An lbd relay (static pool of one: webd) speaking verified TLS to webd, as a backend host runs it."""
    binary = Path(__import__("os").environ.get("LBD_BINARY", ""))
    if not binary.is_file():
        pytest.skip("LBD_BINARY not set: the relay test needs lbd")
    port = webdtest.free_port()
    log = open(tmp_path / f"relay-{port}.log", "wb")
    proc = subprocess.Popen([str(binary), "--listen", f"127.0.0.1:{port}", "--backend", f"127.0.0.1:{web_port}",
                             "--admin", "off", "--set", "health.interval=200ms",
                             "--set", "tls.backend=on", "--set", f"tls.backend_ca={ca}",
                             "--set", f"tls.backend_name={name}"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    return proc, port, log


def through(port, path="/healthcheck"):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        return exchange(s, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())


def test_relay_to_webd_over_verified_tls(new_webd, pki, tmp_path):
    """The relay-to-web hop encrypted end to end: lbd verifies webd's certificate against the private CA
    and the name; with another CA, or another name, it fails closed (no request reaches webd in clear)."""
    w = tls_webd(new_webd, pki)
    other = tlstest.Pki(tmp_path / "other-pki", name="another CA")
    cases = [(pki.ca_cert, "web.test", True), (other.ca_cert, "web.test", False), (pki.ca_cert, "wrong.test", False)]
    for ca, name, ok in cases:
        proc, port, log = relay(tmp_path, w.port, ca, name)
        try:
            deadline = time.monotonic() + 10
            out = b""
            while time.monotonic() < deadline:
                try:
                    out = through(port)
                except OSError:
                    out = b""
                if out.startswith(b"HTTP/1.1 200 ") or (not ok and out.startswith(b"HTTP/1.1 5")):
                    break
                time.sleep(0.2)
            if ok:
                assert out.startswith(b"HTTP/1.1 200 ") and b'"database":"ok"' in out, out
            else:
                assert out.startswith(b"HTTP/1.1 5"), out
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            log.close()

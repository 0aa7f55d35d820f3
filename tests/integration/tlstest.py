"""Certificates for the TLS tests, made by the openssl command: a private CA and leaf certificates
signed by it (ECDSA P-256 or RSA 2048), every file in the test's own directory."""

import os
import shutil
import ssl
import subprocess
from pathlib import Path


def _openssl(*args, cwd):
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def _newkey(kind):
    if kind == "rsa":
        return ["-newkey", "rsa:2048"]
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]


class Pki:
    """A CA in <workdir>; leaf(...) signs certificates with it."""

    def __init__(self, workdir, name="lbd test CA"):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_cert = self.dir / "ca.pem"
        self.ca_key = self.dir / "ca.key"
        self.serial = 1
        _openssl("req", "-x509", *_newkey("ec"), "-nodes", "-keyout", str(self.ca_key),
                 "-out", str(self.ca_cert), "-days", "30", "-subj", f"/CN={name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign", cwd=self.dir)

    def leaf(self, stem, names, kind="ec", days=30):
        """Writes <stem>.pem and <stem>.key for the DNS <names>; returns (cert, key) paths."""
        cert, key, csr = (self.dir / f"{stem}.pem", self.dir / f"{stem}.key", self.dir / f"{stem}.csr")
        ext = self.dir / f"{stem}.ext"
        ext.write_text("subjectAltName="
                       + ",".join(n if n.startswith("IP:") else f"DNS:{n}" for n in names) + "\n"
                       "extendedKeyUsage=serverAuth\n")
        _openssl("req", "-new", *_newkey(kind), "-nodes", "-keyout", str(key), "-out", str(csr),
                 "-subj", f"/CN={names[0].removeprefix('IP:')}", cwd=self.dir)
        self.serial += 1
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca_cert), "-CAkey", str(self.ca_key),
                 "-set_serial", str(self.serial), "-days", str(days), "-out", str(cert),
                 "-extfile", str(ext), cwd=self.dir)
        return cert, key


def der(cert_path):
    """The DER bytes of the first certificate in a PEM file, to compare with getpeercert(True)."""
    return ssl.PEM_cert_to_DER_cert(Path(cert_path).read_text())


def client_context(ca=None, minimum=None, maximum=None, ciphers=None, alpn=None):
    """A client context: verifying against <ca> (names checked) or not verifying at all."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        ctx.load_verify_locations(cafile=str(ca))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    if ciphers:
        ctx.set_ciphers(ciphers)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def live_files(tmp_path, pair):
    """A copy of <pair> (certificate, key) that the test then changes: (directory, cert path, key path)."""
    live = Path(tmp_path) / "live"
    live.mkdir()
    cert, key = live / "cert.pem", live / "key.pem"
    shutil.copy(pair[0], cert)
    shutil.copy(pair[1], key)
    return live, cert, key


def renew(live, cert, key, pair):
    """Puts <pair> in place of <cert> and <key> as certbot and a careful operator do: each written whole
    beside it, then renamed in."""
    shutil.copy(pair[0], live / "cert.tmp")
    shutil.copy(pair[1], live / "key.tmp")
    os.replace(live / "key.tmp", key)
    os.replace(live / "cert.tmp", cert)

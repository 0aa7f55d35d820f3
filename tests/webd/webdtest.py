"""Harness for webd's integration tests.

PgCluster: a throwaway PostgreSQL 15 cluster in a temporary directory, owned by
the `postgres` user (initdb refuses root), listening on 127.0.0.1 and on a
Unix socket inside that directory. TCP needs a password (scram-sha-256); the
role and database webd uses are created here with a generated password.

Webd: the webd binary started with a temporary config file; HTTP to it goes
through `requests` to 127.0.0.1 only.

Every wait is bounded; every process started here is ended by the object that
started it (PostgreSQL with pg_ctl stop -m fast, webd by its PID).
"""

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
sys.path.insert(0, str(REPO / "tests" / "helpers"))

import testnet  # noqa: E402  (tests/helpers/testnet.py: this test's ports)

# Variables that must not leak from the environment running the tests into webd.
SYSTEMD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
               "LISTEN_FDNAMES", "INVOCATION_ID", "JOURNAL_STREAM", "WEBD_DATABASE")


def webd_binary():
    env = os.environ.get("WEBD_BINARY")
    return Path(env) if env else REPO / "build" / "webd" / "webd"


def require_webd():
    path = webd_binary()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(f"webd binary not found at {path}: build it or point WEBD_BINARY at it")
    return path


def require_postgres():
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL 15 server binaries not found in {PG_BIN}")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no 'postgres' user to run the PostgreSQL server as")
    if os.geteuid() != 0:
        pytest.skip("the PostgreSQL harness runs the server as 'postgres' through runuser: needs root")


def free_port():
    """A free port of this test's own (its slot's, LBD_TEST_SLOT), below the kernel's ephemeral range, so
    that neither a test running beside it nor an outgoing connection takes it before webd or PostgreSQL
    binds it."""
    return testnet.free_port()


def wait_until(fn, timeout, what, interval=0.05):
    """Calls fn until it returns a truthy value (returned) or timeout expires."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = fn()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - remembered for the failure message
            last_exc = e
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


class PgCluster:
    """A PostgreSQL 15 cluster for one test module."""

    def __init__(self, dbname="webd", user="webd"):
        require_postgres()
        self.dir = Path(tempfile.mkdtemp(prefix="webd-pg-", dir="/tmp"))
        self.data = self.dir / "data"
        self.sock = self.dir / "sock"
        self.log = self.dir / "postgres.log"
        self.port = free_port()
        self.dbname = dbname
        self.user = user
        self.password = secrets.token_hex(16)
        self.running = False
        pg = pwd.getpwnam("postgres")
        self.sock.mkdir()
        superpw = self.dir / "superpw"
        superpw.write_text(secrets.token_hex(16) + "\n")
        for p in (self.dir, self.sock, superpw):
            os.chown(p, pg.pw_uid, pg.pw_gid)
        os.chmod(self.dir, 0o700)
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--locale=C",
                 "--auth-host=scram-sha-256", "--auth-local=peer", f"--pwfile={superpw}")
        superpw.unlink()
        self.start()
        self.admin_sql(f"CREATE ROLE {user} LOGIN PASSWORD '{self.password}'")
        self.admin_sql(f"CREATE DATABASE {dbname} OWNER {user}")

    def _pg(self, tool, *args, timeout=60, check=True):
        cmd = ["runuser", "-u", "postgres", "--", str(PG_BIN / tool), *args]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout,
                              cwd=str(self.dir))

    def _options(self):
        return (f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 "
                f"-c max_connections=200 -c shared_buffers=64MB")

    def start(self):
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self._options(), "-w",
                 "-t", "30", "start")
        self.running = True

    def stop(self):
        if self.running:
            self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop",
                     check=False)
            self.running = False

    def restart(self):
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self._options(), "-m",
                 "fast", "-w", "-t", "30", "restart")
        self.running = True

    def conninfo(self):
        return (f"host=127.0.0.1 port={self.port} dbname={self.dbname} user={self.user} "
                f"password={self.password}")

    def admin_sql(self, sql, db="postgres"):
        """Runs sql as the superuser over the Unix socket (peer auth); returns stdout."""
        out = self._pg("psql", "-X", "-v", "ON_ERROR_STOP=1", "-h", str(self.sock), "-p",
                       str(self.port), "-d", db, "-At", "-c", sql)
        return out.stdout

    def sql(self, sql, *params):
        """Runs sql in webd's database as webd's role over TCP (with its password); returns the rows
        as lists of strings. Parameters are passed as psql variables (:'v1', :'v2', ...), which psql
        quotes itself, so test data never has to be spliced into SQL text."""
        args = ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-F", "\x1f", "-R", "\x1e",
                "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", self.dbname]
        for i, p in enumerate(params, 1):
            args += ["-v", f"v{i}={p}"]
        env = dict(os.environ, PGPASSWORD=self.password)
        # Bytes, decoded here: text mode would turn a stored "\r" into "\n".
        out = subprocess.run([str(PG_BIN / "psql"), *args[1:]], input=sql.encode(), capture_output=True,
                             timeout=60, env=env, check=True)
        text = out.stdout.decode()
        if text.endswith("\n"):
            text = text[:-1]
        if not text:
            return []
        return [row.split("\x1f") for row in text.split("\x1e")]

    def cleanup(self):
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class Webd:
    """One webd process with its own config file and key."""

    def __init__(self, tmp, cluster, extra=None, env=None, wrapper=None, ca=None):
        self.binary = require_webd()
        self.wrapper = list(wrapper or [])  # a command webd runs under, e.g. ["prlimit", "--nofile=64:64", "--"]
        self.tmp = Path(tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.cluster = cluster
        self.port = free_port()
        # With tls_cert in <extra>: HTTPS, verified against the CA file <ca>.
        tls = bool((extra or {}).get("tls_cert"))
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.verify = str(ca) if ca else True
        self.secret = self.tmp / "jwt.key"
        self.config = self.tmp / "webd.conf"
        self.stderr_path = self.tmp / "webd.stderr"
        settings = {
            "listen": f"127.0.0.1:{self.port}",
            "secret_file": str(self.secret),
            "pool_size": "4",
            "startup_timeout": "10s",
            "request_timeout": "5s",
        }
        settings.update(extra or {})
        # "section.key" names a key of another section than [webd].
        sections = {"webd": {}}
        for k, v in settings.items():
            section, _, key = k.rpartition(".")
            sections.setdefault(section or "webd", {})[key] = v
        lines = []
        for section, keys in sections.items():
            lines += [f"[{section}]"] + [f"{k} = {v}" for k, v in keys.items()]
        self.config.write_text("\n".join(lines) + "\n")
        self.env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_ENV}
        self.env["WEBD_DATABASE"] = cluster.conninfo()
        self.env.update(env or {})
        self.proc = None
        self.session = requests.Session()
        self.session.verify = self.verify

    def start(self, timeout=20):
        self.stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(self.wrapper + [str(self.binary), "--config", str(self.config)],
                                     stdin=subprocess.DEVNULL, stdout=self.stderr,
                                     stderr=self.stderr, env=self.env)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"webd exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return requests.get(self.url + "/healthcheck", timeout=1, verify=self.verify).status_code == 200
            except requests.ConnectionError:
                return False
        wait_until(ready, timeout, "webd to answer /healthcheck with 200")
        return self

    def log(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout=15):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.stderr.close()
        self.session.close()
        code = self.proc.returncode
        self.proc = None
        return code

    def check_clean_exit(self, code):
        """After stop(): exit status 0 and no sanitizer report in the log."""
        log = self.log()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            assert marker not in log, f"webd reported a memory error:\n{log[-4000:]}"
        assert code == 0, f"webd exited with {code}:\n{log[-2000:]}"

    def key(self):
        return self.secret.read_bytes()

    def metrics(self):
        """GET /metrics parsed: {"name{labels}": value}."""
        r = self.request("GET", "/metrics")
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("text/plain"), r.headers
        values = {}
        for line in r.text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    # HTTP helpers: all to 127.0.0.1, all with timeouts.

    def request(self, method, path, token=None, body=None, raw=None, headers=None, timeout=10,
                session=None):
        h = {}
        if token:
            h["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        if raw is not None:
            data = raw
        h.update(headers or {})
        s = session or self.session
        return s.request(method, self.url + path, data=data, headers=h, timeout=timeout,
                         allow_redirects=False, verify=self.verify)

    def register(self, username, password="correct horse battery"):
        r = self.request("POST", "/auth/register", body={"username": username, "password": password})
        assert r.status_code == 201, r.text
        return r.json()

    def login(self, username, password="correct horse battery"):
        r = self.request("POST", "/auth/login", body={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return r.json()["token"]

    def user(self, username, password="correct horse battery"):
        """Registers username and returns (id, token)."""
        info = self.register(username, password)
        return info["id"], self.login(username, password)


def assert_error(r, status, code):
    """Checks the API's error shape: status, JSON content type, {"error":{"code","message"}}."""
    assert r.status_code == status, f"{r.status_code} {r.text}"
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    assert r.headers.get("X-Request-Id"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    if status == 401:
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), r.headers
    return body["error"]


class Load:
    """Runs fn(i) on n threads until stop() or max_seconds; results collected by fn."""

    def __init__(self, n, fn, max_seconds):
        self.stop_event = threading.Event()
        self.deadline = time.monotonic() + max_seconds
        self.errors = []
        self.threads = [threading.Thread(target=self._run, args=(i, fn), daemon=True)
                        for i in range(n)]

    def _run(self, i, fn):
        try:
            while not self.stop_event.is_set() and time.monotonic() < self.deadline:
                fn(i)
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.errors.append(e)

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "load threads did not stop"
        return self.errors


class RawResponse:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # {lower-case name: value}, the last of a repeated field
        self.body = body

    def json(self):
        return json.loads(self.body)


class RawConn:
    """A plain socket to webd, for what requests can't send: pipelined, malformed, partial requests."""

    def __init__(self, port, timeout=5.0, source="127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer in time")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
        self.buf += data
        return bool(data)

    def read_response(self, timeout=5.0, head_only=False):
        """The next response (bytes read until it is complete), or None when the peer closed first."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                return None
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head_only or status in (100, 204, 304) else int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            if not self._fill(deadline):
                raise AssertionError(f"response body cut short: {head!r}")
        body, self.buf = self.buf[:length], self.buf[length:]
        return RawResponse(status, headers, body)

    def closed_by_peer(self, timeout=5.0):
        """True when the peer closes within timeout (anything it still sends is read and kept)."""
        deadline = time.monotonic() + timeout
        try:
            while not self.eof:
                self._fill(deadline)
        except (TimeoutError, socket.timeout):
            return False
        return True


def raw_exchange(port, data, timeout=5.0):
    """Sends data on a new connection; returns (responses, closed by webd)."""
    with RawConn(port, timeout) as c:
        c.send(data)
        out = []
        while True:
            try:
                r = c.read_response(timeout)
            except (TimeoutError, socket.timeout):
                return out, False
            if r is None:
                return out, True
            out.append(r)
            if "close" in r.headers.get("connection", "").lower():
                return out, c.closed_by_peer(timeout)

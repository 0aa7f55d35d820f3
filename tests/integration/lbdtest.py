"""Harness for lbd's integration tests.

Starts the test backends (tests/helpers/backend.py) and lbd itself as child
processes, talks HTTP/1.1 to them over plain sockets (so tests control every
byte and every connection), parses lbd's admin API, access log and systemd
notifications. Every wait is bounded in time; every process started here is
tracked by its Popen object and ended by the Harness that started it.
"""

import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BACKEND_PY = REPO / "tests" / "helpers" / "backend.py"
sys.path.insert(0, str(REPO / "tests" / "helpers"))

import testnet  # noqa: E402  (tests/helpers/testnet.py: this test's ports)
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

PATTERN_PIECE = bytes(range(256)) * 256  # what backend.py sends, 64 KiB
BODY_STATUS_NONE = (204, 304)

# Variables that must not leak from the environment running the tests into lbd.
SYSTEMD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
               "LISTEN_FDNAMES", "INVOCATION_ID", "JOURNAL_STREAM")


def lbd_binary():
    env = os.environ.get("LBD_BINARY")
    return Path(env) if env else REPO / "build" / "lbd" / "lbd"


def require_lbd():
    path = lbd_binary()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(f"lbd binary not found at {path}: build it (meson compile -C build) "
                    f"or point LBD_BINARY at it")
    return path


def free_port():
    """A free port of this test's own (its slot's, LBD_TEST_SLOT), below the kernel's ephemeral range, so
    that neither a test running beside it nor an outgoing connection takes it before lbd or a backend binds it."""
    return testnet.free_port()


def wait_until(fn, timeout, what, interval=0.02):
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


def accepted_sockets(pid, port):
    """How many connected TCP sockets process <pid> holds with local port <port>: the connections it has
    accepted on that port (the listening socket and the connections still in the kernel's queue are not
    counted, nor the process's other sockets, such as its health checks)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    held = set()  # by inode: a table read while sockets come and go can list one twice
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] != "0A" and fields[9] in inodes:  # 0A: LISTEN
                held.add(fields[9])
    return len(held)


def pattern_sha256(n):
    """sha256 of the first n bytes of backend.py's body pattern."""
    digest = hashlib.sha256()
    full, rest = divmod(n, len(PATTERN_PIECE))
    for _ in range(full):
        digest.update(PATTERN_PIECE)
    digest.update(PATTERN_PIECE[:rest])
    return digest.hexdigest()


def pattern_bytes(n):
    full, rest = divmod(n, len(PATTERN_PIECE))
    return PATTERN_PIECE * full + PATTERN_PIECE[:rest]


# ---------------------------------------------------------------------------
# HTTP/1.1 over raw sockets

class ConnectionClosed(Exception):
    """The peer closed the connection before a complete response."""

    def __init__(self, message, partial=None):
        super().__init__(message)
        self.partial = partial


class Response:
    def __init__(self, version, status, reason, headers):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] as received
        self.body = b""
        self.body_len = 0
        self.complete = False

    def header_values(self, name):
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def header(self, name):
        values = self.header_values(name)
        return values[0] if values else None

    def json(self):
        return json.loads(self.body)

    def connection_tokens(self):
        tokens = set()
        for value in self.header_values("connection"):
            tokens.update(t.strip().lower() for t in value.split(","))
        return tokens

    def __repr__(self):
        return f"<Response {self.status} {self.headers!r} {self.body[:200]!r}>"


class _Reader:
    """Buffered reads over a recv function returning b"" at end of stream."""

    def __init__(self, recv):
        self.recv = recv
        self.buf = bytearray()
        self.eof = False

    def _fill(self):
        if self.eof:
            return False
        data = self.recv(1 << 20)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_until(self, sep, limit):
        start = 0
        while True:
            idx = self.buf.find(sep, start)
            if idx >= 0:
                end = idx + len(sep)
                out = bytes(self.buf[:end])
                del self.buf[:end]
                return out
            if len(self.buf) > limit:
                raise ValueError(f"no {sep!r} within {limit} bytes")
            start = max(0, len(self.buf) - len(sep) + 1)
            if not self._fill():
                return None

    def read_some(self, n):
        if not self.buf:
            # Straight from the socket: no copy through the buffer.
            if self.eof:
                return b""
            data = self.recv(min(n, 1 << 20))
            if not data:
                self.eof = True
            return data
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def _parse_head(raw):
    text = raw.decode("latin-1")
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"bad status line {lines[0]!r}")
    version, status = parts[0], int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line {line!r}")
        headers.append((name, value.strip(" \t")))
    return Response(version, status, reason, headers)


def read_response(reader, method="GET", sink=None, allow_incomplete=False):
    """Reads one response. sink(data) receives the body instead of .body."""
    raw = reader.read_until(b"\r\n\r\n", 1 << 20)
    if raw is None:
        raise ConnectionClosed(f"connection closed before a response head "
                               f"({len(reader.buf)} bytes pending)")
    resp = _parse_head(raw)
    if 100 <= resp.status < 200:
        # Interim response: skip it and read the final one.
        return read_response(reader, method, sink, allow_incomplete)
    parts = []

    def take(data):
        resp.body_len += len(data)
        if sink is not None:
            sink(data)
        else:
            parts.append(data)

    def incomplete(why):
        resp.body = b"".join(parts)
        if allow_incomplete:
            return resp
        raise ConnectionClosed(why, resp)

    te = ",".join(resp.header_values("transfer-encoding")).lower()
    cl = resp.header_values("content-length")
    if method == "HEAD" or resp.status in BODY_STATUS_NONE:
        pass
    elif "chunked" in te:
        while True:
            line = reader.read_until(b"\r\n", 4096)
            if line is None:
                return incomplete("closed inside a chunked body")
            size = int(line[:-2].split(b";", 1)[0].strip(), 16)
            if size == 0:
                while True:  # trailers
                    t = reader.read_until(b"\r\n", 65536)
                    if t is None:
                        return incomplete("closed inside trailers")
                    if t == b"\r\n":
                        break
                break
            remaining = size
            while remaining:
                data = reader.read_some(remaining)
                if not data:
                    return incomplete("closed inside a chunk")
                take(data)
                remaining -= len(data)
            if reader.read_until(b"\r\n", 2) != b"\r\n":
                raise ValueError("bad chunk terminator")
    elif cl:
        remaining = int(cl[0])
        while remaining:
            data = reader.read_some(min(remaining, 1 << 20))
            if not data:
                return incomplete(f"closed with {remaining} body bytes missing")
            take(data)
            remaining -= len(data)
    else:
        while True:
            data = reader.read_some(1 << 20)
            if not data:
                break
            take(data)
    resp.body = b"".join(parts)
    resp.complete = True
    return resp


def parse_responses(data, methods=None):
    """Parses every response in data (bytes received until close)."""
    view = [bytes(data)]

    def recv(_n):
        out, view[0] = view[0], b""
        return out

    reader = _Reader(recv)
    out = []
    while True:
        if not reader.buf and not reader._fill():
            return out
        method = methods[len(out)] if methods and len(out) < len(methods) else "GET"
        out.append(read_response(reader, method, allow_incomplete=True))


class HttpConnection:
    """One client TCP connection; requests and responses on it, in order."""

    def __init__(self, port, host="127.0.0.1", timeout=10.0, tls=None, server_hostname=None):
        """tls: an ssl.SSLContext to speak TLS with (server_hostname sent as SNI)."""
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            try:
                self.sock = tls.wrap_socket(self.sock, server_hostname=server_hostname)
            except BaseException:
                self.sock.close()
                raise
        self.reader = _Reader(self.sock.recv)

    @property
    def local_port(self):
        return self.sock.getsockname()[1]

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        self.sock.sendall(data)

    @staticmethod
    def build_head(method, path, headers=None, host="test.local", version="HTTP/1.1"):
        lines = [f"{method} {path} {version}"]
        items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        if host is not None and not any(n.lower() == "host" for n, _ in items):
            lines.append(f"Host: {host}")
        lines += [f"{n}: {v}" for n, v in items]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def send_request(self, method, path, headers=None, body=None, host="test.local",
                     content_length=None, chunked=False):
        """Sends a request. body: bytes, or an iterable of bytes pieces
        (sent with content_length if given, else chunked)."""
        items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        if isinstance(body, (bytes, bytearray)) and not chunked:
            if not any(n.lower() == "content-length" for n, _ in items):
                items.append(("Content-Length", str(len(body))))
            self.send(self.build_head(method, path, items, host) + bytes(body))
            return
        if body is None:
            self.send(self.build_head(method, path, items, host))
            return
        pieces = [body] if isinstance(body, (bytes, bytearray)) else body
        if content_length is not None:
            items.append(("Content-Length", str(content_length)))
            self.send(self.build_head(method, path, items, host))
            for piece in pieces:
                self.sock.sendall(piece)
            return
        items.append(("Transfer-Encoding", "chunked"))
        self.send(self.build_head(method, path, items, host))
        for piece in pieces:
            if piece:
                self.sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        self.sock.sendall(b"0\r\n\r\n")

    def read_response(self, method="GET", sink=None, allow_incomplete=False):
        return read_response(self.reader, method, sink, allow_incomplete)

    def request(self, method, path, headers=None, body=None, host="test.local",
                content_length=None, chunked=False, sink=None):
        self.send_request(method, path, headers, body, host, content_length, chunked)
        return self.read_response(method, sink)

    def get(self, path, headers=None):
        return self.request("GET", path, headers)

    def closed_by_peer(self, timeout=2.0):
        """True when the peer closes the connection within timeout, with no more data."""
        self.sock.settimeout(timeout)
        try:
            if self.reader.buf:
                return False
            data = self.sock.recv(65536)
            if data:
                self.reader.buf += data
                return False
            return True
        except socket.timeout:
            return False
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def request(port, method, path, headers=None, body=None, timeout=10.0, tls=None, **kw):
    """One request on a new connection (closed afterwards)."""
    with HttpConnection(port, timeout=timeout, tls=tls) as conn:
        return conn.request(method, path, headers, body, **kw)


def raw_exchange(port, data, timeout=2.0, shutdown_write=False, tls=None):
    """Sends exact bytes (over TLS with the ssl.SSLContext <tls>); reads until the peer closes or
    timeout. Returns (received bytes, closed_by_peer)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls is not None:
        sock = tls.wrap_socket(sock)
    with sock as s:
        s.sendall(data)
        if shutdown_write:
            s.shutdown(socket.SHUT_WR)
        out = bytearray()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(out), False
            s.settimeout(left)
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return bytes(out), False
            except (ConnectionResetError, ssl.SSLError):
                return bytes(out), True
            if not chunk:
                return bytes(out), True
            out += chunk


# ---------------------------------------------------------------------------
# Prometheus text format

_METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE_RE = re.compile(rf"^({_METRIC_NAME})(?:\{{(.*)\}})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?$")
_LABEL_RE = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\[\\"n])*)"[ \t]*')
_HELP_RE = re.compile(rf"^# HELP ({_METRIC_NAME})( .*)?$")
_TYPE_RE = re.compile(rf"^# TYPE ({_METRIC_NAME}) (counter|gauge|histogram|summary|untyped)$")


def _parse_labels(text):
    labels = {}
    pos = 0
    text = text.rstrip(" \t")
    while pos < len(text):
        m = _LABEL_RE.match(text, pos)
        if not m:
            raise ValueError(f"bad labels {text!r}")
        name, value = m.group(1), m.group(2)
        if name in labels:
            raise ValueError(f"duplicate label {name} in {text!r}")
        labels[name] = value.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        pos = m.end()
        if pos < len(text):
            if text[pos] != ",":
                raise ValueError(f"bad labels {text!r}")
            pos += 1
    return labels


class Metrics:
    """A parsed /metrics page: samples keyed by (name, sorted label items)."""

    def __init__(self, text):
        self.text = text
        self.samples = {}
        self.help = {}
        self.types = {}
        self.errors = []
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            if line.startswith("#"):
                m = _HELP_RE.match(line)
                if m:
                    self.help[m.group(1)] = (m.group(2) or "").strip()
                    continue
                m = _TYPE_RE.match(line)
                if m:
                    if m.group(1) in self.types:
                        self.errors.append(f"line {n}: second TYPE for {m.group(1)}")
                    self.types[m.group(1)] = m.group(2)
                    continue
                if line.startswith("# HELP") or line.startswith("# TYPE"):
                    self.errors.append(f"line {n}: malformed {line!r}")
                continue
            m = _SAMPLE_RE.match(line)
            if not m:
                self.errors.append(f"line {n}: malformed sample {line!r}")
                continue
            try:
                labels = _parse_labels(m.group(2) or "")
                value = float(m.group(3))
            except ValueError as e:
                self.errors.append(f"line {n}: {e}")
                continue
            key = (m.group(1), tuple(sorted(labels.items())))
            if key in self.samples:
                self.errors.append(f"line {n}: duplicate sample {line!r}")
            self.samples[key] = value

    @staticmethod
    def family(name, types):
        if name in types:
            return name
        for suffix in ("_total", "_count", "_sum", "_bucket", "_created"):
            if name.endswith(suffix) and name[: -len(suffix)] in types:
                return name[: -len(suffix)]
        return name

    def get(self, name, **labels):
        """The value of the sample with exactly these labels, or None."""
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def sum(self, name, **labels):
        """Sum over the samples of name whose labels include the given ones."""
        total = 0.0
        for (n, items), value in self.samples.items():
            if n == name and all(dict(items).get(k) == v for k, v in labels.items()):
                total += value
        return total

    def names(self):
        return {n for n, _ in self.samples}


# ---------------------------------------------------------------------------
# systemd notifications

class NotifyListener:
    """A bound AF_UNIX datagram socket collecting sd_notify messages."""

    def __init__(self, abstract=False):
        self.dir = None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"lbd-test-{os.getpid()}-{uuid.uuid4().hex[:12]}"
            self.sock.bind("\0" + name)
            self.env_value = "@" + name
        else:
            self.dir = tempfile.mkdtemp(prefix="lbdn-", dir="/tmp")
            path = os.path.join(self.dir, "notify.sock")
            self.sock.bind(path)
            self.env_value = path
        self.sock.settimeout(0.05)
        self.messages = []  # (monotonic time, text)
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_event.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.messages.append((time.monotonic(), data.decode("utf-8", "replace")))

    def snapshot(self):
        with self.lock:
            return list(self.messages)

    def find(self, pred, start=0):
        """Index of the first message at or after start for which pred(text), or None."""
        msgs = self.snapshot()
        for i in range(start, len(msgs)):
            if pred(msgs[i][1]):
                return i
        return None

    def wait_for(self, pred, timeout, what, start=0):
        return wait_until(lambda: (lambda i: None if i is None else (i,))(self.find(pred, start)),
                          timeout, what)[0]

    def count(self, line):
        return sum(1 for _, m in self.snapshot() if line in m.split("\n"))

    def close(self):
        self.stop_event.set()
        self.thread.join(2)
        self.sock.close()
        if self.dir:
            try:
                os.unlink(os.path.join(self.dir, "notify.sock"))
                os.rmdir(self.dir)
            except OSError:
                pass


def has_line(text, line):
    return line in text.split("\n")


# ---------------------------------------------------------------------------
# processes

def _end_process(proc, timeout=5.0):
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


class Backend:
    def __init__(self, workdir, name, port=None, close_all=False, idle_timeout_ms=None, delay_all_ms=None):
        self.name = name
        self.delay_all_ms = delay_all_ms
        self.idle_timeout_ms = idle_timeout_ms
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.close_all = close_all
        self.record_path = Path(workdir) / f"{name}.record.jsonl"
        self.health_path = Path(workdir) / f"{name}.health"
        self.log_path = Path(workdir) / f"{name}.log"
        self.proc = None

    def start(self, timeout=5.0):
        cmd = [PYTHON, str(BACKEND_PY), "--listen", self.addr, "--name", self.name,
               "--record", str(self.record_path), "--health-file", str(self.health_path)]
        if self.close_all:
            cmd.append("--close-all")
        if self.idle_timeout_ms:
            cmd += ["--idle-timeout", str(self.idle_timeout_ms)]
        if self.delay_all_ms:
            cmd += ["--delay-all", str(self.delay_all_ms)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=log)
        os.set_blocking(self.proc.stdout.fileno(), False)
        buf = b""
        deadline = time.monotonic() + timeout
        while b"ready" not in buf:
            if self.proc.poll() is not None:
                raise AssertionError(f"backend {self.name} exited: {self.log_path.read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"backend {self.name} not ready within {timeout}s")
            chunk = self.proc.stdout.read(256)
            if chunk:
                buf += chunk
            else:
                time.sleep(0.01)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def set_health(self, status):
        """Makes /healthcheck answer status (None: back to 200)."""
        if status is None:
            try:
                self.health_path.unlink()
            except FileNotFoundError:
                pass
            return
        tmp = self.health_path.with_suffix(".tmp")
        tmp.write_text(f"{status}\n")
        os.replace(tmp, self.health_path)

    def records(self):
        try:
            text = self.record_path.read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def requests(self, include_health=False):
        return [r for r in self.records()
                if include_health or (r["path"] != "/healthcheck" and not r["path"].startswith("/_"))]

    def saw(self, marker):
        """Whether any request whose target contains marker reached this backend."""
        return any(marker in r["path"] for r in self.records())

    def conns(self):
        resp = request(self.port, "GET", "/_conns", {"Connection": "close"}, timeout=5)
        return resp.json()

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            self.proc.send_signal(sig)
            self.proc.wait(5)

    def stop(self):
        _end_process(self.proc)
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()


class Lbd:
    def __init__(self, workdir, backends=(), args=(), config=None, notify=None,
                 watchdog_usec=None, watchdog_pid=None, health_interval="100ms",
                 log_level="info", defaults=True, tls=None, tls_default=False):
        """tls: a list of (certificate, key) paths for a TLS listener on tls_port (a [tls] section is
        added to the config). tls_default: connect(), request() and raw() speak TLS to it, and `port`
        is that listener's (the plain one stays at plain_port)."""
        self.workdir = Path(workdir)
        self.backends = list(backends)
        self.port = free_port()
        self.plain_port = self.port
        self.admin_port = free_port()
        self.tls_port = free_port() if tls else None
        self.client_tls = None
        if tls:
            section = "\n[tls]\n" + "".join(f"certificate = {c} {k}\n" for c, k in tls)
            config = (config or "") + section
            self.client_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.client_tls.check_hostname = False
            self.client_tls.verify_mode = ssl.CERT_NONE
        self.stderr_path = self.workdir / f"lbd-{self.port}.stderr"
        self.stdout_path = self.workdir / f"lbd-{self.port}.stdout"
        self.config_path = None
        if config is not None:
            self.config_path = self.workdir / f"lbd-{self.port}.conf"
            self.config_path.write_text(config)
        self.notify = notify
        self.watchdog_usec = watchdog_usec
        self.watchdog_pid = watchdog_pid
        self.args = [str(require_lbd())]
        # LBD_VALGRIND=1 runs lbd under memcheck; the harness checks its report when the test ends.
        self.valgrind_log = None
        if os.environ.get("LBD_VALGRIND") == "1":
            self.valgrind_log = self.workdir / f"lbd-{self.port}.valgrind"
            self.args = ["valgrind", "--quiet", "--leak-check=full",
                         "--show-leak-kinds=definite,indirect,possible",
                         "--errors-for-leak-kinds=definite,indirect,possible",
                         f"--log-file={self.valgrind_log}"] + self.args
        if self.config_path:
            self.args += ["--config", str(self.config_path)]
        self.args += ["--listen", f"127.0.0.1:{self.port}",
                      "--admin", f"127.0.0.1:{self.admin_port}"]
        if self.tls_port:
            self.args += ["--listen", f"127.0.0.1:{self.tls_port} tls"]
        self.default_tls = None
        if tls_default:
            self.port, self.default_tls = self.tls_port, self.client_tls
        if defaults:
            self.args += ["--log-level", log_level,
                          "--set", f"health.interval={health_interval}",
                          "--set", "health.timeout=500ms",
                          "--set", "lbd.drain_timeout=3s",
                          "--set", "pool.networks=127.0.0.0/8"]
        for b in self.backends:
            self.args += ["--backend", b.addr]
        # LBD_TEST_THREADS=N runs every lbd with [lbd] threads = N (scripts/test.sh --threads N), but
        # those that set threads themselves.
        threads = os.environ.get("LBD_TEST_THREADS")
        every = [str(a) for a in args] + [config or ""]
        if threads and not any("threads" in a for a in every):
            self.args += ["--set", f"lbd.threads={threads}"]
        self.args += list(args)
        self.proc = None
        self.exit_code = None

    def write_config(self, text):
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.config_path)

    def start(self, wait=True, healthy=None, timeout=10.0):
        env = {k: v for k, v in os.environ.items() if k not in SYSTEMD_ENV}
        if self.notify is not None:
            env["NOTIFY_SOCKET"] = self.notify.env_value
        if self.watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        if self.watchdog_pid is not None:
            env["WATCHDOG_PID"] = str(self.watchdog_pid)
        with open(self.stderr_path, "ab") as err, open(self.stdout_path, "ab") as out:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, env=env)
        if wait:
            self.wait_ready(healthy, timeout)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def wait_ready(self, healthy=None, timeout=10.0):
        """Waits until the admin API answers and `healthy` backends are up
        (default: every --backend given)."""
        want = len(self.backends) if healthy is None else healthy
        last = [None]
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"lbd exited with {self.proc.returncode} before being "
                                     f"ready:\n{self.stderr_tail()}")
            try:
                st = self.status()
                last[0] = st
                up = sum(1 for b in st.get("backends", []) if b.get("state") == "up")
                if up >= want and st.get("healthy", 0) >= want:
                    return st
            except (OSError, ValueError, ConnectionClosed) as e:
                last[0] = e
            if time.monotonic() > deadline:
                raise AssertionError(f"lbd not ready with {want} healthy backends within "
                                     f"{timeout}s; last /status: {last[0]!r}\n"
                                     f"lbd stderr:\n{self.stderr_tail()}")
            time.sleep(0.02)

    # ---- admin API ------------------------------------------------------

    def admin(self, method, path, headers=None, timeout=5.0):
        with HttpConnection(self.admin_port, timeout=timeout) as conn:
            return conn.request(method, path, headers or {"Connection": "close"},
                                host=f"127.0.0.1:{self.admin_port}")

    def status(self):
        resp = self.admin("GET", "/status")
        if resp.status != 200:
            raise AssertionError(f"/status answered {resp.status}: {resp.body!r}")
        return resp.json()

    def backend_status(self, addr):
        for b in self.status()["backends"]:
            if b["address"] == addr:
                return b
        return None

    def metrics_text(self):
        resp = self.admin("GET", "/metrics")
        if resp.status != 200:
            raise AssertionError(f"/metrics answered {resp.status}: {resp.body!r}")
        return resp.body.decode()

    def metrics(self):
        return Metrics(self.metrics_text())

    # ---- traffic --------------------------------------------------------

    def connect(self, timeout=10.0):
        return HttpConnection(self.port, timeout=timeout, tls=self.default_tls)

    def request(self, method, path, headers=None, body=None, timeout=10.0, **kw):
        return request(self.port, method, path, headers, body, timeout, tls=self.default_tls, **kw)

    def get(self, path, headers=None):
        return self.request("GET", path, headers)

    def raw(self, data, timeout=2.0, **kw):
        return raw_exchange(self.port, data, timeout, tls=self.default_tls, **kw)

    # ---- logs -----------------------------------------------------------

    def stderr_text(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stderr_tail(self, n=40):
        return "\n".join(self.stderr_text().splitlines()[-n:])

    def access_entries(self, text=None):
        """Parsed access-log lines from stderr (or the given text)."""
        out = []
        for line in (self.stderr_text() if text is None else text).splitlines():
            m = re.match(r"^(<\d>)?access (.*)$", line)
            if m:
                out.append(dict(parse_logfmt(m.group(2)), _prio=m.group(1), _line=line))
        return out

    # ---- process --------------------------------------------------------

    def signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout=5.0):
        try:
            self.exit_code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"lbd did not exit within {timeout}s") from None
        return self.exit_code

    def rss_kib(self):
        try:
            with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except (OSError, ValueError):
            return None
        return None

    def stop(self):
        _end_process(self.proc, timeout=30.0 if self.valgrind_log else 5.0)

    def valgrind_problems(self):
        """memcheck's report, when lbd ran under it and it found errors or leaks; else None."""
        if not self.valgrind_log or not self.valgrind_log.exists():
            return None
        text = self.valgrind_log.read_text(errors="replace")
        return text if text.strip() else None


def parse_logfmt(text):
    """key=value pairs separated by spaces; values may be double-quoted."""
    out = {}
    for m in re.finditer(r'([A-Za-z_][A-Za-z0-9_.-]*)=("(?:[^"\\]|\\.)*"|\S*)', text):
        value = m.group(2)
        if value.startswith('"'):
            value = re.sub(r'\\(.)', r'\1', value[1:-1])
        out[m.group(1)] = value
    return out


class RssSampler:
    """Samples a process's VmRSS every interval seconds in a thread."""

    def __init__(self, lbd, interval=0.02):
        self.lbd = lbd
        self.interval = interval
        self.max_kib = 0
        self.samples = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop_event.is_set():
            rss = self.lbd.rss_kib()
            if rss is not None:
                self.max_kib = max(self.max_kib, rss)
                self.samples += 1
            self.stop_event.wait(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join(2)


class LoadThreads:
    """n client threads doing keep-alive GETs until stopped (bounded by max_seconds). With rate (requests
    per second per thread), each thread starts a request at most every 1/rate seconds, never catching up
    after a slow one, so the load never exceeds n x rate."""

    def __init__(self, port, n=4, path="/load", max_seconds=10.0, pause=0.0, tls=None,
                 server_hostname=None, rate=None):
        self.port = port
        self.rate = rate
        self.tls = tls
        self.server_hostname = server_hostname
        self.path = path
        self.max_seconds = max_seconds
        self.pause = pause
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures = []  # descriptions
        self.by_backend = {}
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(n)]

    def _run(self, idx):
        deadline = time.monotonic() + self.max_seconds
        conn = None
        i = 0
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            i += 1
            started = time.monotonic()
            try:
                if conn is None:
                    conn = HttpConnection(self.port, timeout=5, tls=self.tls,
                                          server_hostname=self.server_hostname)
                resp = conn.get(f"{self.path}?t={idx}&i={i}")
                if resp.status != 200:
                    with self.lock:
                        self.failures.append(f"status {resp.status}: {resp.body[:200]!r}")
                else:
                    with self.lock:
                        self.ok += 1
                        name = resp.header("X-Backend")
                        self.by_backend[name] = self.by_backend.get(name, 0) + 1
                if "close" in resp.connection_tokens():
                    conn.close()
                    conn = None
            except (OSError, ConnectionClosed, ValueError) as e:
                with self.lock:
                    self.failures.append(f"{type(e).__name__}: {e}")
                if conn is not None:
                    conn.close()
                conn = None
            if self.pause:
                time.sleep(self.pause)
            if self.rate:
                self.stop_event.wait(max(0.0, started + 1.0 / self.rate - time.monotonic()))
        if conn is not None:
            conn.close()

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(self.max_seconds + 10)


class Harness:
    """Owns every process a test starts; cleanup() ends them all."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.all_backends = []
        self.all_lbds = []
        self.listeners = []
        self.threads = []

    def backend(self, name, **kw):
        b = Backend(self.workdir, name, **kw)
        self.all_backends.append(b)
        return b.start()

    def backends(self, n, prefix="b", **kw):
        return [self.backend(f"{prefix}{i + 1}", **kw) for i in range(n)]

    def notify_listener(self, abstract=False):
        listener = NotifyListener(abstract)
        self.listeners.append(listener)
        return listener

    def lbd(self, backends=(), start=True, wait=True, healthy=None, **kw):
        inst = Lbd(self.workdir, backends, **kw)
        self.all_lbds.append(inst)
        if start:
            inst.start(wait=wait, healthy=healthy)
        return inst

    def load(self, port, **kw):
        load = LoadThreads(port, **kw)
        self.threads.append(load)
        return load

    def report(self):
        out = []
        for inst in self.all_lbds:
            out.append(f"--- lbd {' '.join(inst.args[1:])}\n{inst.stderr_tail(60)}")
        return "\n".join(out)

    def cleanup(self):
        for load in self.threads:
            load.stop_event.set()
        for inst in self.all_lbds:
            inst.stop()
        problems = [p for p in (inst.valgrind_problems() for inst in self.all_lbds) if p]
        for b in self.all_backends:
            b.stop()
        for load in self.threads:
            load.stop()
        for listener in self.listeners:
            listener.close()
        if problems:
            raise AssertionError("valgrind found errors or leaks in lbd:\n" + problems[0][:8000])


class ScriptedBackend:
    """A backend on 127.0.0.1 for what backend.py will not do: it answers /healthcheck with 200 (kept
    alive) and every other request with the bytes respond(head) returns, then records for a short while
    what else arrives on that connection (what a proxy might have tunnelled) and closes it. Heads are
    bounded to 64 KiB; every socket has a timeout; the threads end at stop() or after max_seconds.
    Use it as a context manager."""

    def __init__(self, respond, max_seconds=60.0, linger=0.5):
        self.respond = respond
        self.linger = linger
        self.heads = []          # request heads received (bytes), health checks excluded
        self.after = []          # bytes received after each of those heads
        self.deadline = time.monotonic() + max_seconds
        self.stop_event = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.addr = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _running(self):
        return not self.stop_event.is_set() and time.monotonic() < self.deadline

    def _accept(self):
        while self._running():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            conn.settimeout(5.0)
            data = b""
            try:
                while self._running():
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk or len(data) > 65536:
                            return
                        data += chunk
                    head, data = data.split(b"\r\n\r\n", 1)
                    if head.split(b" ")[1:2] == [b"/healthcheck"]:
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        continue
                    with self.lock:
                        self.heads.append(head + b"\r\n\r\n")
                    conn.sendall(self.respond(head + b"\r\n\r\n"))
                    rest = bytearray(data)
                    end = time.monotonic() + self.linger
                    while time.monotonic() < end and len(rest) < 65536:
                        conn.settimeout(max(0.01, end - time.monotonic()))
                        try:
                            chunk = conn.recv(65536)
                        except socket.timeout:
                            break
                        if not chunk:
                            break
                        rest += chunk
                    with self.lock:
                        self.after.append(bytes(rest))
                    return
            except OSError:
                return

    def stop(self):
        self.stop_event.set()
        self.sock.close()
        self.thread.join(2.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

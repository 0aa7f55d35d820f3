#!/usr/bin/python3
"""Scriptable HTTP/1.1 test backend for lbd's integration tests.

One asyncio process serving keep-alive HTTP/1.1 on raw streams. It parses
request heads itself (bounded to 64 KiB), reads Content-Length and chunked
request bodies by streaming them, and answers from a small set of routes
that let a test provoke every behaviour of the proxy in front of it:

  /healthcheck      200 "ok", or the status code written in --health-file
  /echo             JSON description of the request as received
  /status/NNN       that status
  /delay/MS         waits MS milliseconds, then 200
  /bytes/N          N bytes (Content-Length) of a fixed pattern
  /chunked/N        the same content with Transfer-Encoding: chunked
  /upload           JSON {"body_len","body_sha256"} of the request body
  /close            closes the connection without a response
  /reset            resets the connection (RST) without a response
  /slowhead/MS      status line, MS milliseconds pause, then the rest
  /partial/MS       head and part of the body, MS milliseconds pause, close
  /sleepbody/MS     waits MS milliseconds before reading the request body, then
                    answers like /upload (a backend slower than its client)
  /early/NNN        answers NNN with "Connection: close" as soon as the head is
                    read, without reading the request body, and closes (the
                    kernel resets a connection closed with unread bytes): a
                    server refusing an upload early, as webd does with 413
  /early-reset      resets the connection as soon as the head is read, without
                    reading the request body and without a response
  /eof-body/N       N bytes with neither Content-Length nor chunked: the body
                    ends when the connection closes
  /closeafter       200, then "Connection: close" and the connection closes
  /hopheaders       200 with hop-by-hop headers a proxy must not relay
  /upgrade          asked with Connection: upgrade and Upgrade: 101 with the same
                    Upgrade, then an echo: every byte comes back until the client
                    half-closes, then "bye\n" and the connection closes; asked
                    without them: 426
  /upgrade-unasked  101 whatever was asked (a backend a proxy must not trust)
  /_conns           JSON connection counters of this process
  anything else     200 "<name> <path>\\n"

With --delay-all MS every request but /healthcheck and /_conns waits MS
milliseconds first: a backend slower than its peers, holding requests.

Every response carries "X-Backend: <name>" and "X-Backend-Conn: <n>", the
sequence number of the connection it was sent on. With --record FILE each
received request head is appended to FILE as one JSON line. With
--close-all every request but /healthcheck and /_conns is answered by
closing the connection (a backend that passes health checks but fails all
traffic). With --idle-timeout MS a connection waiting longer than MS for its
next request is closed (like servers with a short keep-alive timeout).
Prints "ready" on stdout once listening; SIGTERM exits cleanly.
"""

import argparse
import asyncio
import hashlib
import http
import json
import signal
import socket
import struct
import sys

MAX_HEAD = 64 * 1024
STREAM_LIMIT = 1024 * 1024
MAX_HEADERS = 256
MAX_CHUNK_LINE = 4096
MAX_TRAILERS = 64 * 1024
MAX_DELAY_MS = 600_000
MAX_BYTES = 1 << 40
PIECE = 64 * 1024
PATTERN = bytes(range(256)) * (PIECE // 256)
TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789"
                        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class BadRequest(Exception):
    """The client sent something this backend refuses to parse."""


class Request:
    def __init__(self, method, target, version, headers):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers

    def header(self, name):
        name = name.lower()
        values = [v for n, v in self.headers if n.lower() == name]
        return values

    @property
    def path(self):
        return self.target.split("?", 1)[0]

    def keep_alive(self):
        tokens = set()
        for value in self.header("connection"):
            tokens.update(t.strip().lower() for t in value.split(","))
        if "close" in tokens:
            return False
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return True


class Stats:
    def __init__(self):
        self.accepted = 0
        self.open = 0
        self.data_conns = 0
        self.requests = 0


class Backend:
    def __init__(self, args):
        self.name = args.name
        self.health_file = args.health_file
        self.close_all = args.close_all
        self.delay_all = args.delay_all / 1000 if args.delay_all else 0
        self.idle_timeout = args.idle_timeout / 1000 if args.idle_timeout else None
        self.record = open(args.record, "a", encoding="utf-8") if args.record else None
        self.stats = Stats()
        self.tasks = set()

    # ---- parsing -------------------------------------------------------

    @staticmethod
    def parse_head(raw):
        try:
            text = raw.decode("latin-1")
        except UnicodeDecodeError as e:  # latin-1 never fails; kept for safety
            raise BadRequest("undecodable head") from e
        if not text.endswith("\r\n\r\n"):
            raise BadRequest("unterminated head")
        lines = text[:-4].split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            raise BadRequest("bad request line")
        method, target, version = parts
        if not method or any(ord(c) not in TOKEN_CHARS for c in method):
            raise BadRequest("bad method")
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise BadRequest("bad version")
        if not target or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in target):
            raise BadRequest("bad target")
        headers = []
        for line in lines[1:]:
            if len(headers) >= MAX_HEADERS:
                raise BadRequest("too many headers")
            name, sep, value = line.partition(":")
            if not sep or not name or any(ord(c) not in TOKEN_CHARS for c in name):
                raise BadRequest("bad header line")
            value = value.strip(" \t")
            if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
                raise BadRequest("bad header value")
            headers.append((name, value))
        return Request(method, target, version, headers)

    @staticmethod
    def body_framing(req):
        te = req.header("transfer-encoding")
        cl = req.header("content-length")
        if te:
            if cl:
                raise BadRequest("both Content-Length and Transfer-Encoding")
            codings = [c.strip().lower() for v in te for c in v.split(",")]
            if codings != ["chunked"]:
                raise BadRequest("unsupported transfer coding")
            return "chunked", None
        if cl:
            if len(cl) != 1 or not cl[0].isdigit() or len(cl[0]) > 15:
                raise BadRequest("bad Content-Length")
            return "length", int(cl[0])
        return "length", 0

    @staticmethod
    async def read_line(reader, limit):
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as e:
            raise BadRequest("line too long") from e
        if len(line) > limit:
            raise BadRequest("line too long")
        return line

    async def read_body(self, reader, req):
        """Streams the body; returns (length, sha256 hex)."""
        kind, length = self.body_framing(req)
        digest = hashlib.sha256()
        total = 0
        if kind == "length":
            remaining = length
            while remaining > 0:
                data = await reader.read(min(remaining, 1 << 20))
                if not data:
                    raise ConnectionError("eof in body")
                digest.update(data)
                remaining -= len(data)
                total += len(data)
            return total, digest.hexdigest()
        while True:
            line = await self.read_line(reader, MAX_CHUNK_LINE)
            size_text = line[:-2].split(b";", 1)[0].strip(b" \t")
            if not size_text or len(size_text) > 15 or any(
                    c not in b"0123456789abcdefABCDEF" for c in size_text):
                raise BadRequest("bad chunk size")
            size = int(size_text, 16)
            if size == 0:
                break
            remaining = size
            while remaining > 0:
                data = await reader.read(min(remaining, 1 << 20))
                if not data:
                    raise ConnectionError("eof in chunk")
                digest.update(data)
                remaining -= len(data)
                total += len(data)
            if await reader.readexactly(2) != b"\r\n":
                raise BadRequest("bad chunk terminator")
        trailer_bytes = 0
        while True:
            line = await self.read_line(reader, MAX_CHUNK_LINE)
            trailer_bytes += len(line)
            if trailer_bytes > MAX_TRAILERS:
                raise BadRequest("trailers too long")
            if line == b"\r\n":
                break
        return total, digest.hexdigest()

    # ---- responses -----------------------------------------------------

    def head_bytes(self, status, headers, conn_id, keep_alive):
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Status"
        lines = [f"HTTP/1.1 {status} {reason}", f"X-Backend: {self.name}",
                 f"X-Backend-Conn: {conn_id}"]
        lines += [f"{n}: {v}" for n, v in headers]
        if not keep_alive:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def send(self, writer, req, status, body, conn_id, keep_alive,
                   content_type="text/plain"):
        if isinstance(body, str):
            body = body.encode()
        headers = [("Content-Type", content_type)]
        no_body = status in (204, 304) or (100 <= status < 200)
        if not no_body:
            headers.append(("Content-Length", str(len(body))))
        # Head and a small body in one send, as real servers do (nginx writes them with one writev): a
        # backend killed between two sends truncates a response mid-way, which no proxy can retry.
        head = self.head_bytes(status, headers, conn_id, keep_alive)
        if req is None or (req.method != "HEAD" and not no_body):
            head += body
        writer.write(head)
        await writer.drain()

    async def send_pattern(self, writer, req, n, chunked, conn_id, keep_alive):
        headers = [("Content-Type", "application/octet-stream")]
        headers.append(("Transfer-Encoding", "chunked") if chunked
                       else ("Content-Length", str(n)))
        head = self.head_bytes(200, headers, conn_id, keep_alive)
        if req.method == "HEAD":
            writer.write(head)
            await writer.drain()
            return
        # The head goes out with the first piece in one send, and a body that fits in one piece whole
        # (as nginx writes a small response): a backend killed between two sends would truncate a
        # response after its head, which no proxy may retry.
        pending = head
        remaining = n
        view = memoryview(PATTERN)
        while remaining > 0:
            size = min(remaining, PIECE)
            remaining -= size
            if chunked:
                piece = b"%x\r\n" % size + view[:size] + b"\r\n" + (b"0\r\n\r\n" if remaining == 0 else b"")
            else:
                piece = view[:size]
            writer.write(bytes(pending) + bytes(piece))
            pending = b""
            await writer.drain()
        if pending or (chunked and n == 0):
            writer.write(bytes(pending) + (b"0\r\n\r\n" if chunked else b""))
        await writer.drain()

    def health_status(self):
        if not self.health_file:
            return 200
        try:
            with open(self.health_file, encoding="utf-8") as f:
                text = f.read(64).strip()
        except OSError:
            return 200
        if text.isdigit() and 100 <= int(text) <= 599:
            return int(text)
        return 200

    @staticmethod
    def number_arg(path, prefix, maximum):
        text = path[len(prefix):]
        if not text.isdigit() or len(text) > 15:
            raise BadRequest("bad number in path")
        value = int(text)
        if value > maximum:
            raise BadRequest("number too large")
        return value

    def record_head(self, conn_id, req):
        if not self.record:
            return
        line = json.dumps({"backend": self.name, "conn": conn_id, "method": req.method,
                           "path": req.target, "version": req.version,
                           "headers": req.headers})
        self.record.write(line + "\n")
        self.record.flush()

    @staticmethod
    def reset(writer):
        """Ends the connection with a RST (SO_LINGER 0), unanswered."""
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    # ---- connection handling -------------------------------------------

    async def handle(self, reader, writer):
        self.stats.accepted += 1
        self.stats.open += 1
        conn_id = self.stats.accepted
        counted_data = False
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"),
                                                 self.idle_timeout)
                except (asyncio.IncompleteReadError, asyncio.TimeoutError):
                    return
                except asyncio.LimitOverrunError:
                    raw = b""
                if not raw or len(raw) > MAX_HEAD:
                    await self.send(writer, None, 400, "head too large\n", conn_id, False)
                    return
                try:
                    req = self.parse_head(raw)
                except BadRequest as e:
                    await self.send(writer, None, 400, f"bad request: {e}\n", conn_id, False)
                    return
                self.stats.requests += 1
                self.record_head(conn_id, req)
                path = req.path
                if not counted_data and path != "/healthcheck" and not path.startswith("/_"):
                    counted_data = True
                    self.stats.data_conns += 1
                if path == "/early-reset":
                    self.reset(writer)
                    return
                if path.startswith("/early/"):
                    try:
                        status = self.number_arg(path, "/early/", 599)
                    except BadRequest as e:
                        status, detail = 400, f"bad request: {e}\n"
                    else:
                        detail = f"early {status}\n"
                    await self.send(writer, req, max(status, 200), detail, conn_id, False)
                    return
                if path.startswith("/sleepbody/"):
                    try:
                        ms = self.number_arg(path, "/sleepbody/", MAX_DELAY_MS)
                    except BadRequest as e:
                        await self.send(writer, None, 400, f"bad request: {e}\n", conn_id, False)
                        return
                    await asyncio.sleep(ms / 1000)
                try:
                    body_len, body_sha = await self.read_body(reader, req)
                except BadRequest as e:
                    await self.send(writer, None, 400, f"bad request: {e}\n", conn_id, False)
                    return
                keep_alive = req.keep_alive()
                try:
                    keep_going = await self.route(reader, writer, req, conn_id, keep_alive,
                                                  body_len, body_sha)
                except BadRequest as e:
                    await self.send(writer, req, 400, f"bad request: {e}\n", conn_id, False)
                    return
                if not keep_going or not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            return
        finally:
            self.stats.open -= 1
            if not writer.is_closing():
                writer.close()

    async def route(self, reader, writer, req, conn_id, keep_alive, body_len, body_sha):
        """Answers one request; returns False when the connection must end."""
        path = req.path
        if path == "/healthcheck":
            status = self.health_status()
            await self.send(writer, req, status, "ok\n" if status == 200 else f"status {status}\n",
                            conn_id, keep_alive)
            return True
        if path == "/_conns":
            body = json.dumps({"accepted": self.stats.accepted, "open": self.stats.open,
                               "data_conns": self.stats.data_conns,
                               "requests": self.stats.requests})
            await self.send(writer, req, 200, body, conn_id, keep_alive, "application/json")
            return True
        if self.close_all:
            return False
        if self.delay_all:
            await asyncio.sleep(self.delay_all)
        if path == "/echo" or path.startswith("/echo/"):
            body = json.dumps({"method": req.method, "path": req.target, "version": req.version,
                               "headers": req.headers, "body_len": body_len,
                               "body_sha256": body_sha})
            await self.send(writer, req, 200, body, conn_id, keep_alive, "application/json")
        elif path == "/upload" or path.startswith("/sleepbody/"):
            body = json.dumps({"body_len": body_len, "body_sha256": body_sha})
            await self.send(writer, req, 200, body, conn_id, keep_alive, "application/json")
        elif path.startswith("/status/"):
            status = self.number_arg(path, "/status/", 599)
            if status < 200:
                raise BadRequest("status out of range")
            await self.send(writer, req, status, f"status {status}\n", conn_id, keep_alive)
        elif path.startswith("/delay/"):
            ms = self.number_arg(path, "/delay/", MAX_DELAY_MS)
            await asyncio.sleep(ms / 1000)
            await self.send(writer, req, 200, f"delayed {ms}\n", conn_id, keep_alive)
        elif path.startswith("/bytes/"):
            n = self.number_arg(path, "/bytes/", MAX_BYTES)
            await self.send_pattern(writer, req, n, False, conn_id, keep_alive)
        elif path.startswith("/chunked/"):
            n = self.number_arg(path, "/chunked/", MAX_BYTES)
            await self.send_pattern(writer, req, n, True, conn_id, keep_alive)
        elif path == "/close":
            return False
        elif path == "/closeafter":
            await self.send(writer, req, 200, f"{self.name} closing\n", conn_id, False)
            return False
        elif path.startswith("/eof-body/"):
            n = self.number_arg(path, "/eof-body/", MAX_BYTES)
            writer.write(self.head_bytes(200, [("Content-Type", "application/octet-stream")],
                                         conn_id, False))
            remaining = n if req.method != "HEAD" else 0
            while remaining > 0:
                size = min(remaining, PIECE)
                writer.write(PATTERN[:size])
                remaining -= size
                await writer.drain()
            await writer.drain()
            return False
        elif path == "/hopheaders":
            headers = [("Content-Type", "text/plain"), ("Content-Length", "3"),
                       ("Connection", "X-Internal, keep-alive"), ("X-Internal", "secret"),
                       ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive"),
                       ("X-Visible", "yes")]
            writer.write(self.head_bytes(200, headers, conn_id, keep_alive))
            if req.method != "HEAD":
                writer.write(b"ok\n")
            await writer.drain()
        elif path == "/upgrade":
            tokens = {t.strip().lower() for v in req.header("connection") for t in v.split(",")}
            upgrade = req.header("upgrade")
            if "upgrade" not in tokens or len(upgrade) != 1:
                await self.send(writer, req, 426, "upgrade required\n", conn_id, keep_alive)
                return True
            writer.write(self.head_bytes(101, [("Upgrade", upgrade[0]), ("Connection", "Upgrade")],
                                         conn_id, True))
            await writer.drain()
            while True:
                data = await reader.read(PIECE)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
            writer.write(b"bye\n")
            await writer.drain()
            return False
        elif path == "/upgrade-unasked":
            writer.write(self.head_bytes(101, [("Upgrade", "websocket"), ("Connection", "Upgrade")],
                                         conn_id, True))
            writer.write(b"raw bytes")
            await writer.drain()
            return False
        elif path == "/reset":
            self.reset(writer)
            return False
        elif path.startswith("/slowhead/"):
            ms = self.number_arg(path, "/slowhead/", MAX_DELAY_MS)
            head = self.head_bytes(200, [("Content-Type", "text/plain"),
                                         ("Content-Length", "5")], conn_id, keep_alive)
            first_line_end = head.index(b"\r\n") + 2
            writer.write(head[:first_line_end])
            await writer.drain()
            await asyncio.sleep(ms / 1000)
            writer.write(head[first_line_end:])
            if req.method != "HEAD":
                writer.write(b"slow\n")
            await writer.drain()
        elif path.startswith("/partial/"):
            ms = self.number_arg(path, "/partial/", MAX_DELAY_MS)
            writer.write(self.head_bytes(200, [("Content-Type", "application/octet-stream"),
                                               ("Content-Length", "1000")], conn_id, keep_alive))
            writer.write(PATTERN[:100])
            await writer.drain()
            await asyncio.sleep(ms / 1000)
            return False
        else:
            await self.send(writer, req, 200, f"{self.name} {path}\n", conn_id, keep_alive)
        return True

    async def on_connect(self, reader, writer):
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            await self.handle(reader, writer)
        except asyncio.CancelledError:
            pass
        finally:
            self.tasks.discard(task)


async def serve(args):
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        print(f"bad --listen {args.listen}", file=sys.stderr)
        return 2
    host = host.strip("[]")
    backend = Backend(args)
    server = await asyncio.start_server(backend.on_connect, host, int(port), limit=STREAM_LIMIT,
                                        reuse_address=True, backlog=512)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    for task in list(backend.tasks):
        task.cancel()
    await asyncio.gather(*backend.tasks, return_exceptions=True)
    await server.wait_closed()
    if backend.record:
        backend.record.close()
    return 0


def main():
    parser = argparse.ArgumentParser(description="HTTP/1.1 test backend")
    parser.add_argument("--listen", required=True, help="HOST:PORT to listen on")
    parser.add_argument("--name", required=True, help="sent back in X-Backend")
    parser.add_argument("--record", help="append one JSON line per request head to this file")
    parser.add_argument("--health-file", help="file whose status code /healthcheck returns")
    parser.add_argument("--close-all", action="store_true",
                        help="close the connection on every request but /healthcheck")
    parser.add_argument("--delay-all", type=int, default=0, metavar="MS",
                        help="wait MS milliseconds before answering any request but /healthcheck")
    parser.add_argument("--idle-timeout", type=int, default=0, metavar="MS",
                        help="close connections idle for longer than MS milliseconds")
    args = parser.parse_args()
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Open many idle keep-alive HTTP/1.1 client connections to a proxy.

Each connection sends one GET request and reads the whole response, then
stays open and silent. At most --parallel connections are in progress at
once, so the proxy opens few backend connections. Once every connection is
idle the program prints "ready N" on stdout and holds them until SIGTERM or
SIGINT or --hold seconds, then prints "done open=N closed_by_peer=M" and
closes them with a reset (no TIME_WAIT left behind). The exit status is 0
only if every request got a 200 and no connection was closed by the peer
before "ready".

With --tls each connection speaks TLS (no certificate check: a benchmark of
the proxy's memory, not of trust) before its request.

Only loopback addresses are accepted.
"""

import argparse
import errno
import ipaddress
import resource
import selectors
import signal
import socket
import ssl
import struct
import sys
import time

MAX_HEAD = 16384


class Conn:
    """One client connection and the response read so far."""

    __slots__ = ("sock", "buf", "need", "handshaking")

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.need = -1  # total response bytes once the head is parsed
        self.handshaking = False


def parse_head(buf):
    """Return the total response length, None if the head is incomplete,
    or raise ValueError on an unusable response."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise ValueError("response head too large")
        return None
    lines = buf[:end].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError("bad status line %r" % lines[0][:80])
    if parts[1] != b"200":
        raise ValueError("status %s" % parts[1].decode("ascii", "replace"))
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding":
            raise ValueError("chunked response not supported")
        elif name == b"connection" and value.strip().lower() == b"close":
            raise ValueError("server closes the connection")
    if length is None:
        raise ValueError("no content-length")
    return end + 4 + length


def reset_close(sock):
    """Close with RST so that no TIME_WAIT state stays behind."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--path", default="/")
    ap.add_argument("--parallel", type=int, default=64)
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds allowed to make every connection idle")
    ap.add_argument("--hold", type=float, default=600.0,
                    help="seconds to hold the idle connections at most")
    ap.add_argument("--tls", action="store_true", help="speak TLS")
    args = ap.parse_args()
    tls = None
    if args.tls:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE

    if not ipaddress.ip_address(args.host).is_loopback:
        sys.exit("idle-conns: only loopback addresses are allowed")
    if args.count < 1 or args.parallel < 1:
        sys.exit("idle-conns: --count and --parallel must be positive")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < args.count + 64:
        sys.exit("idle-conns: open file limit %d too low for %d connections"
                 % (hard, args.count))
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: idle-conns\r\n\r\n"
               % (args.path, args.host, args.port)).encode("ascii")
    sel = selectors.DefaultSelector()
    idle = []
    started = 0
    active = 0
    deadline = time.monotonic() + args.timeout

    def start_one():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex((args.host, args.port))
        sel.register(sock, selectors.EVENT_WRITE, Conn(sock))

    def fail(msg):
        sys.stdout.write("error %s\n" % msg)
        sys.stdout.flush()
        sys.exit(1)

    while len(idle) < args.count:
        while active < args.parallel and started < args.count:
            start_one()
            started += 1
            active += 1
        if stop:
            fail("interrupted after %d idle connections" % len(idle))
        left = deadline - time.monotonic()
        if left <= 0:
            fail("timeout after %d idle connections" % len(idle))
        for key, events in sel.select(timeout=min(left, 1.0)):
            conn = key.data
            sock = conn.sock
            if events & selectors.EVENT_WRITE and not conn.handshaking and tls and \
                    not isinstance(sock, ssl.SSLSocket):
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail("connect: %s" % errno.errorcode.get(err, err))
                sel.unregister(sock)
                sock = conn.sock = tls.wrap_socket(sock, do_handshake_on_connect=False)
                sel.register(sock, selectors.EVENT_WRITE, conn)
                conn.handshaking = True
            if conn.handshaking:
                try:
                    sock.do_handshake()
                except ssl.SSLWantReadError:
                    sel.modify(sock, selectors.EVENT_READ, conn)
                    continue
                except ssl.SSLWantWriteError:
                    sel.modify(sock, selectors.EVENT_WRITE, conn)
                    continue
                except (OSError, ssl.SSLError) as e:
                    fail("TLS handshake: %s" % e)
                conn.handshaking = False
                events = selectors.EVENT_WRITE
            if events & selectors.EVENT_WRITE:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail("connect: %s" % errno.errorcode.get(err, err))
                # The request is far smaller than any socket buffer.
                if sock.send(request) != len(request):
                    fail("short send")
                sel.modify(sock, selectors.EVENT_READ, conn)
                continue
            try:
                data = sock.recv(65536)
            except ssl.SSLWantReadError:
                continue
            except OSError as e:
                fail("recv: %s" % e)
            if not data:
                fail("connection closed before the response ended")
            conn.buf += data
            try:
                if conn.need < 0:
                    need = parse_head(conn.buf)
                    if need is not None:
                        conn.need = need
            except ValueError as e:
                fail(str(e))
            if conn.need >= 0 and len(conn.buf) >= conn.need:
                if len(conn.buf) > conn.need:
                    fail("extra bytes after the response")
                sel.unregister(sock)
                conn.buf = b""
                idle.append(sock)
                active -= 1

    sys.stdout.write("ready %d\n" % len(idle))
    sys.stdout.flush()

    # Hold: watch for connections the peer closes, until told to stop.
    for sock in idle:
        sel.register(sock, selectors.EVENT_READ, sock)
    open_socks = len(idle)
    closed = 0
    hold_end = time.monotonic() + args.hold
    while not stop and time.monotonic() < hold_end:
        for key, _ in sel.select(timeout=0.5):
            sel.unregister(key.data)
            closed += 1
            open_socks -= 1
    sys.stdout.write("done open=%d closed_by_peer=%d\n" % (open_socks, closed))
    sys.stdout.flush()
    for sock in idle:
        reset_close(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main())

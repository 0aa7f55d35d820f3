#!/usr/bin/python3
"""Fault-injecting HTTP proxy between lbd and moto_server, for lbd's control-plane tests.

Forwards every request to the upstream (moto) unchanged, Host header included, so
SigV4 signatures still verify; it counts and records each one (time, method, path,
EC2 Action, status). On command it fails requests for a bounded period instead:

  POST /_fault?mode=MODE&seconds=N[&actions=A,B]   start a fault for N seconds (at most 300)
      MODE: 503       HTTP 503 "Service Unavailable" (text body, as a load balancer gives)
            throttle  HTTP 503 with EC2's XML error RequestLimitExceeded
            stall     reads the request, then holds the connection silent until the
                      fault ends, and closes it without an answer
            capacity  HTTP 500 with EC2's XML error InsufficientInstanceCapacity
      actions limits the fault to those EC2 Actions (default: every EC2 request);
      &subnet=ID limits it to requests whose SubnetId is ID (a zone out of capacity).
      Each recorded request carries its SubnetId, when it has one, as "subnet", and its
      ClientToken (RunInstances) as "client_token".
  POST /_fault?mode=off                            ends any fault now
  GET  /_stats                                     JSON: {"requests": [...], "fault": ...}
  POST /_reset                                     forgets the recorded requests

With --imds-credentials FILE, GET /latest/meta-data/iam/security-credentials/<role>
is answered from that JSON file instead of the upstream (the instance metadata token
and role listing still come from moto); everything else under /latest/ is forwarded.

Only 127.0.0.1 is used on both sides. The proxy exits by itself after --max-seconds,
or on SIGTERM. Prints "ready" on stdout once listening.
"""

import argparse
import http.client
import json
import signal
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 4 * 1024 * 1024
MAX_FAULT_SECONDS = 300
MAX_RECORDS = 100_000
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade", "content-length"}

THROTTLE_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                 b'<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>'
                 b'</Error></Errors><RequestID>faultproxy</RequestID></Response>')


CAPACITY_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                 b'<Code>InsufficientInstanceCapacity</Code><Message>We currently do not have sufficient '
                 b'capacity in the Availability Zone you requested.</Message>'
                 b'</Error></Errors><RequestID>faultproxy</RequestID></Response>')


class State:
    def __init__(self, upstream, imds_credentials):
        self.lock = threading.Lock()
        self.upstream = upstream
        self.imds_credentials = imds_credentials
        self.fault = None  # {"mode", "until", "actions"}
        self.records = []
        self.stop = threading.Event()

    def current_fault(self, action, subnet=None):
        with self.lock:
            f = self.fault
            if not f:
                return None
            if time.monotonic() >= f["until"]:
                self.fault = None
                return None
            if f["actions"] and action not in f["actions"]:
                return None
            if f.get("subnet") and subnet != f["subnet"]:
                return None
            if action is None:  # not an EC2 call (the metadata service): never faulted
                return None
            return dict(f)

    def record(self, **kw):
        with self.lock:
            if len(self.records) < MAX_RECORDS:
                self.records.append(kw)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faultproxy"

    def log_message(self, fmt, *args):  # quiet: the test reads /_stats
        pass

    def _read_body(self):
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        n = int(length)
        if n < 0 or n > MAX_BODY:
            raise ValueError("body too large")
        return self.rfile.read(n)

    def _send(self, status, body, content_type="text/plain", extra=None, close=False):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or []):
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _control(self, body):
        st = self.server.state
        url = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(url.query)
        if url.path == "/_stats":
            with st.lock:
                f = st.fault
                data = {"requests": list(st.records),
                        "fault": ({"mode": f["mode"], "remaining": max(0.0, f["until"] - time.monotonic())}
                                  if f else None),
                        "now": time.time()}
            self._send(200, json.dumps(data).encode(), "application/json")
            return
        if url.path == "/_reset":
            with st.lock:
                st.records = []
            self._send(200, b"ok\n")
            return
        if url.path == "/_fault":
            mode = q.get("mode", ["off"])[0]
            if mode == "off":
                with st.lock:
                    st.fault = None
                self._send(200, b"ok\n")
                return
            if mode not in ("503", "throttle", "stall", "capacity"):
                self._send(400, b"unknown mode\n")
                return
            seconds = min(float(q.get("seconds", ["10"])[0]), MAX_FAULT_SECONDS)
            actions = set(a for a in q.get("actions", [""])[0].split(",") if a)
            with st.lock:
                st.fault = {"mode": mode, "until": time.monotonic() + seconds, "actions": actions,
                            "subnet": q.get("subnet", [""])[0]}
            self._send(200, b"ok\n")
            return
        self._send(404, b"unknown control path\n")

    def _action(self, body):
        """(Action, SubnetId or None, ClientToken or None) of an EC2 request; (None, None, None) for the
        metadata service."""
        if self.path.startswith("/latest/"):
            return None, None, None
        try:
            form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        except ValueError:
            return "?", None, None
        return (form.get("Action", ["?"])[0], form.get("SubnetId", [None])[0],
                form.get("ClientToken", [None])[0])

    def _handle(self):
        st = self.server.state
        try:
            body = self._read_body()
        except ValueError:
            self._send(413, b"too large\n", close=True)
            return
        if self.path.startswith("/_"):
            self._control(body)
            return

        action, subnet, token = self._action(body)
        now = time.time()
        info = {"t": now, "method": self.command, "path": self.path.split("?")[0], "action": action}
        if subnet:
            info["subnet"] = subnet
        if token:
            info["client_token"] = token
        if self.path.startswith("/latest/"):
            info["imds_token"] = self.headers.get("X-aws-ec2-metadata-token") is not None
            info["imds_ttl"] = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        else:
            auth = self.headers.get("Authorization", "")
            cred = auth.partition("Credential=")[2].partition("/")[0]
            info["key_id"] = cred
            info["session_token"] = self.headers.get("X-Amz-Security-Token") is not None

        fault = st.current_fault(action, subnet)
        if fault:
            info["fault"] = fault["mode"]
            if fault["mode"] == "capacity":
                info["status"] = 500
                st.record(**info)
                self._send(500, CAPACITY_BODY, "text/xml")
                return
            if fault["mode"] == "503":
                info["status"] = 503
                st.record(**info)
                self._send(503, b"Service Unavailable\n")
                return
            if fault["mode"] == "throttle":
                info["status"] = 503
                st.record(**info)
                self._send(503, THROTTLE_BODY, "text/xml")
                return
            # stall: silent until the fault ends (or the proxy stops), then close.
            info["status"] = 0
            st.record(**info)
            while time.monotonic() < fault["until"] and not st.stop.is_set():
                time.sleep(0.05)
            self.close_connection = True
            return

        if (st.imds_credentials and self.command == "GET"
                and self.path.startswith("/latest/meta-data/iam/security-credentials/")
                and self.path.rstrip("/") != "/latest/meta-data/iam/security-credentials"):
            with open(st.imds_credentials, "rb") as f:
                data = f.read()
            info["status"] = 200
            info["served_by"] = "faultproxy"
            st.record(**info)
            self._send(200, data, "application/json")
            return

        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        try:
            conn = http.client.HTTPConnection(st.upstream[0], st.upstream[1], timeout=30)
            conn.request(self.command, self.path, body=body if body or self.command in ("POST", "PUT") else None,
                         headers=headers)
            resp = conn.getresponse()
            data = resp.read(MAX_BODY + 1)[:MAX_BODY]
            rheaders = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP
                        and k.lower() not in ("content-type", "server", "date")]
            ctype = resp.getheader("Content-Type", "text/plain")
            status = resp.status
            conn.close()
        except (OSError, http.client.HTTPException) as e:
            info["status"] = 502
            info["error"] = repr(e)
            st.record(**info)
            self._send(502, b"upstream failed\n", close=True)
            return
        info["status"] = status
        info["elapsed"] = round(time.time() - now, 3)
        st.record(**info)
        self._send(status, data, ctype, rheaders)

    do_GET = _handle
    do_POST = _handle
    do_PUT = _handle
    do_DELETE = _handle
    do_HEAD = _handle


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream-port", type=int, required=True, help="moto_server's port on 127.0.0.1")
    ap.add_argument("--imds-credentials", help="JSON file served as the instance role's credentials")
    ap.add_argument("--max-seconds", type=float, default=900.0)
    args = ap.parse_args()

    state = State(("127.0.0.1", args.upstream_port), args.imds_credentials)
    server = Server(("127.0.0.1", args.port), Handler)
    server.state = state

    def stop(*_):
        state.stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    timer = threading.Timer(args.max_seconds, stop)
    timer.daemon = True
    timer.start()
    print("ready", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        state.stop.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

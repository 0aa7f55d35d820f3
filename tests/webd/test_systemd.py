"""systemd notification: READY=1 once webd serves, STATUS= lines, WATCHDOG=1 pings from the event loop
when WATCHDOG_USEC is set, and STOPPING=1 on SIGTERM, all over a NOTIFY_SOCKET made here."""

import socket
import time

from webdtest import wait_until


class NotifySocket:
    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []

    def drain(self):
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (socket.timeout, BlockingIOError):
                return self.messages

    def seen(self, text):
        return any(text in m for m in self.drain())

    def close(self):
        self.sock.close()


def test_notify_ready_watchdog_stopping(new_webd, tmp_path):
    n = NotifySocket(tmp_path / "notify.sock")
    try:
        w = new_webd(env={"NOTIFY_SOCKET": n.path, "WATCHDOG_USEC": "400000"})
        wait_until(lambda: n.seen("READY=1"), 10, "READY=1")
        assert any("STATUS=Serving on" in m for m in n.messages)
        count = sum(m.count("WATCHDOG=1") for m in n.drain())
        time.sleep(1.0)
        assert sum(m.count("WATCHDOG=1") for m in n.drain()) >= count + 3, n.messages
        assert w.stop() == 0
        assert n.seen("STOPPING=1") or any("STOPPING=1" in m for m in n.messages)
    finally:
        n.close()


def test_status_follows_the_database(new_webd, cluster, tmp_path):
    n = NotifySocket(tmp_path / "notify.sock")
    try:
        new_webd(env={"NOTIFY_SOCKET": n.path})
        wait_until(lambda: n.seen("READY=1"), 10, "READY=1")
        cluster.stop()
        try:
            wait_until(lambda: n.seen("database down"), 15, "STATUS saying the database is down")
            n.drain()
            n.messages.clear()
        finally:
            cluster.start()
        wait_until(lambda: n.seen("database up"), 20, "STATUS saying the database is up again")
    finally:
        n.close()

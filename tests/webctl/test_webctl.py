"""webctl driven end to end: the real webctl binary against a real webd on a throwaway PostgreSQL 15
cluster (the harness of tests/webd/webdtest.py).

Each webctl run gets its own HOME and XDG_CONFIG_HOME in a temporary directory, no proxy variables and
a UTF-8 locale, has stdin from the test (or nothing) and no controlling terminal (a new session), and a
timeout. Everything goes to 127.0.0.1.
"""

import json
import os
import pty
import select
import signal
import stat
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "webd"))
import webdtest  # noqa: E402 - found through the path set just above

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"


def webctl_binary():
    env = os.environ.get("WEBCTL_BINARY")
    path = Path(env) if env else REPO / "build" / "webctl" / "webctl"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(f"webctl binary not found at {path}: build it or point WEBCTL_BINARY at it")
    return path


class Ctl:
    """Runs webctl as one user: its own home and config directory."""

    def __init__(self, home, url):
        self.binary = webctl_binary()
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.config = self.home / "config"
        self.token_file = self.config / "webctl" / "token"
        drop = {"http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY", "NO_PROXY", "WEBCTL_URL", "LANG", "LANGUAGE"}
        self.env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("LC_")}
        self.env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.config), WEBCTL_URL=url,
                        LC_ALL="C.UTF-8")

    def run(self, *args, input=None, env=None, timeout=40):
        e = dict(self.env)
        e.update(env or {})
        return subprocess.run([str(self.binary), *args], input=input, capture_output=True, text=True,
                              env=e, timeout=timeout, start_new_session=True,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def ok(self, *args, **kw):
        p = self.run(*args, **kw)
        assert p.returncode == 0, f"webctl {args}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    def json(self, *args, **kw):
        return json.loads(self.ok("--json", *args, **kw).stdout)

    def register(self, user, password=PASSWORD):
        return self.ok("register", user, "--password-stdin", input=password + "\n")

    def login(self, user, password=PASSWORD):
        return self.ok("login", user, "--password-stdin", input=password + "\n")


@pytest.fixture(scope="module")
def cluster():
    c = webdtest.PgCluster()
    try:
        yield c
    finally:
        c.cleanup()


@pytest.fixture(scope="module")
def webd(cluster, tmp_path_factory):
    w = webdtest.Webd(tmp_path_factory.mktemp("webd"), cluster)
    try:
        w.start()
        yield w
    finally:
        w.stop()


@pytest.fixture
def ctl(webd, tmp_path):
    return Ctl(tmp_path / "home", webd.url)


_users = iter(range(1, 1000))


def new_user(prefix="user"):
    """A fresh username per call: the database is shared by the whole module."""
    return f"{prefix}{next(_users)}_{os.getpid()}"


def test_version_and_help(tmp_path):
    c = Ctl(tmp_path / "h", "http://127.0.0.1:1")
    p = c.ok("--version")
    assert p.stdout.startswith("webctl ")
    for args in (["--help"], ["help"], ["tasks", "--help"], ["tasks", "list", "--help"]):
        p = c.ok(*args)
        assert "Usage: webctl" in p.stdout and "Exit status" in p.stdout


@pytest.mark.parametrize("args", [
    [],
    ["frobnicate"],
    ["--bogus", "tasks", "list"],
    ["tasks"],
    ["tasks", "frob"],
    ["tasks", "show"],
    ["tasks", "show", "abc"],
    ["tasks", "show", "0"],
    ["tasks", "show", "-5"],
    ["tasks", "show", "1", "2"],
    ["tasks", "list", "--limit", "0"],
    ["tasks", "list", "--limit", "101"],
    ["tasks", "list", "--limit"],
    ["tasks", "list", "--done", "--todo"],
    ["tasks", "list", "extra"],
    ["tasks", "add"],
    ["tasks", "add", "two", "words"],
    ["tasks", "edit", "1"],
    ["tasks", "rm", "x"],
    ["activity", "--limit", "x"],
    ["login"],
    ["register", "a", "b"],
    ["logout", "now"],
    ["--url", "ftp://127.0.0.1:1", "tasks", "list"],
])
def test_usage_errors(tmp_path, args):
    c = Ctl(tmp_path / "u", "http://127.0.0.1:1")
    p = c.run(*args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stderr.startswith("webctl: "), p.stderr
    assert p.stdout == ""


def test_not_logged_in(ctl):
    for args in (["tasks", "list"], ["tasks", "show", "1"], ["activity"], ["tasks", "add", "x"]):
        p = ctl.run(*args)
        assert p.returncode == 3, (args, p.stderr)
        assert "not logged in" in p.stderr and "webctl login" in p.stderr
    p = ctl.ok("logout")
    assert "Not logged in" in p.stdout


def test_register_and_login(ctl, webd):
    user = new_user("alice")
    p = ctl.register(user)
    assert f"Registered {user}" in p.stdout

    # Taken name, bad fields: the server's message (and field problems) on stderr, exit 1.
    p = ctl.run("register", user, "--password-stdin", input=PASSWORD + "\n")
    assert p.returncode == 1 and p.stderr.startswith("webctl: "), p.stderr
    p = ctl.run("register", new_user("bob"), "--password-stdin", input="short\n")
    assert p.returncode == 1
    assert "\n  password: " in p.stderr, p.stderr
    p = ctl.run("--json", "register", "x", "--password-stdin", input=PASSWORD + "\n")
    assert p.returncode == 1
    assert json.loads(p.stdout)["error"]["code"] == "validation_failed"
    assert "  username: " in p.stderr

    # Wrong password and unknown user: exit 1 with the server's message, no token saved.
    for who, pw in ((user, "wrong password"), (new_user("nobody"), PASSWORD)):
        p = ctl.run("login", who, "--password-stdin", input=pw + "\n")
        assert p.returncode == 1, p.stderr
        assert "invalid username or password" in p.stderr
        assert not ctl.token_file.exists()

    p = ctl.login(user)
    assert f"Logged in to {webd.url} as {user} until " in p.stdout

    # The token file: directory 0700, file 0600, no temporary file left, the URL it belongs to.
    d = ctl.token_file.parent
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE(ctl.token_file.stat().st_mode) == 0o600
    assert sorted(x.name for x in d.iterdir()) == ["token"]
    saved = json.loads(ctl.token_file.read_text())
    assert saved["url"] == webd.url and saved["username"] == user
    assert saved["expires"] > time.time() + 3000
    assert saved["token"] not in p.stdout + p.stderr  # never shown without --json

    # The token is webd's: it verifies with PyJWT under the server's key.
    jwt = pytest.importorskip("jwt")
    claims = jwt.decode(saved["token"], webd.key(), algorithms=["HS256"], issuer="webd")
    assert claims["name"] == user

    # A second login replaces the file atomically; --json prints the server's answer.
    answer = ctl.json("login", user, "--password-stdin", input=PASSWORD + "\n")
    assert answer["token_type"] == "Bearer" and answer["token"]
    assert json.loads(ctl.token_file.read_text())["token"] == answer["token"]
    assert sorted(x.name for x in d.iterdir()) == ["token"]


def test_password_input(ctl):
    user = new_user("carol")
    # No terminal (a new session, stdin not a tty) and no --password-stdin: refused, exit 2.
    p = ctl.run("register", user)
    assert p.returncode == 2 and "--password-stdin" in p.stderr, p.stderr
    p = ctl.run("login", user)
    assert p.returncode == 2 and "--password-stdin" in p.stderr
    # Empty stdin, and a line too long to be a password.
    p = ctl.run("register", user, "--password-stdin", input="")
    assert p.returncode == 2 and "no password" in p.stderr
    p = ctl.run("register", user, "--password-stdin", input="x" * 5000 + "\n")
    assert p.returncode == 2 and "too long" in p.stderr
    # CRLF and no final newline are both fine; only the first line counts.
    ctl.register(user, password=PASSWORD + "\r")
    ctl.ok("login", user, "--password-stdin", input=PASSWORD)
    ctl.ok("login", user, "--password-stdin", input=PASSWORD + "\nsecond line\n")


def run_on_terminal(ctl, args, answers, interrupt=False, timeout=20):
    """Runs webctl on a new pseudo-terminal and types each of <answers> once its password prompt is
    shown (or sends SIGINT at the first prompt, with <interrupt>). Returns (output, wait status, whether
    the terminal echoes afterwards)."""
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execve(str(ctl.binary), ["webctl", *args], ctl.env)
        finally:
            os._exit(127)
    out, prompts, answers = b"", 0, list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the child has gone
                break
            if not data:
                break
            out += data
            if out.count(b"assword: ") > prompts:
                prompts += 1
                time.sleep(0.05)  # echo is turned off right after the prompt
                if interrupt:
                    os.kill(pid, signal.SIGINT)
                elif answers:
                    os.write(fd, answers.pop(0))
        echo = bool(termios.tcgetattr(fd)[3] & termios.ECHO)
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return out.decode(errors="replace"), status, echo


def test_password_prompt(ctl):
    """Typed at a terminal: asked twice to register, never echoed, echo back on even after Ctrl-C."""
    user, secret = new_user("olivia"), "typed horse battery"
    out, status, echo = run_on_terminal(ctl, ["register", user], [secret.encode() + b"\n"] * 2)
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert "Password: " in out and "Repeat password: " in out and f"Registered {user}" in out
    assert secret not in out and echo
    out, status, echo = run_on_terminal(ctl, ["register", new_user("pat")], [b"one horse battery\n",
                                                                            b"two horse battery\n"])
    assert os.waitstatus_to_exitcode(status) == 2 and "don't match" in out and echo
    out, status, echo = run_on_terminal(ctl, ["login", user], [secret.encode() + b"\n"])
    assert os.waitstatus_to_exitcode(status) == 0 and "Logged in" in out and secret not in out and echo
    out, status, echo = run_on_terminal(ctl, ["login", user], [], interrupt=True)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT, (out, status)
    assert echo


def test_tasks_end_to_end(ctl, webd):
    user = new_user("dave")
    ctl.register(user)
    ctl.login(user)

    p = ctl.ok("tasks", "list")
    assert p.stdout == "No tasks.\n"

    p = ctl.ok("tasks", "add", "Buy milk")
    assert p.stdout.startswith("Created task ")
    first = int(p.stdout.split()[2].rstrip("."))
    tricky = "Robert'); DROP TABLE tasks;-- \"quoted\" \\ % _ ü 日本"
    second = ctl.json("tasks", "add", tricky, "--description", "line one\nline two", "--done")
    assert second["title"] == tricky and second["done"] is True
    assert second["description"] == "line one\nline two"
    long_title = "A very long title " + "x" * 150
    third = ctl.json("tasks", "add", "--", long_title)
    assert third["title"] == long_title and third["done"] is False

    # The table: header, newest first, the long title cut with an ellipsis, columns aligned.
    p = ctl.ok("tasks", "list")
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["ID", "DONE", "TITLE", "CREATED"]
    assert [int(line.split()[0]) for line in lines[1:]] == [third["id"], second["id"], first]
    assert "\u2026" in lines[1] and long_title not in p.stdout
    assert tricky in lines[2]
    title_col = lines[0].index("TITLE")
    assert all(line[title_col - 2:title_col] == "  " for line in lines[1:])
    assert lines[1].split()[1] == "no" and lines[2].split()[1] == "yes"

    # Filters and paging.
    listed = ctl.json("tasks", "list", "--done")
    assert [t["id"] for t in listed["items"]] == [second["id"]]
    listed = ctl.json("tasks", "list", "--todo")
    assert [t["id"] for t in listed["items"]] == [third["id"], first]
    p = ctl.ok("tasks", "list", "--limit", "1")
    assert len(p.stdout.splitlines()) == 2
    assert "More tasks: webctl tasks list --offset 1" in p.stderr
    listed = ctl.json("tasks", "list", "--limit", "2", "--offset", "1")
    assert [t["id"] for t in listed["items"]] == [second["id"], first]
    assert listed["next_offset"] is None

    # show: a record, the description on its lines.
    p = ctl.ok("tasks", "show", str(second["id"]))
    rec = p.stdout.splitlines()
    assert rec[0].split() == ["ID", str(second["id"])]
    assert rec[1].startswith("Title") and rec[1].endswith(tricky)
    assert rec[2].split() == ["Done", "yes"]
    assert rec[5].startswith("Description") and rec[5].endswith("line one")
    assert rec[6].strip() == "line two" and rec[6].startswith(" ")
    shown = ctl.json("tasks", "show", str(second["id"]))
    assert shown == second or {k: shown[k] for k in ("id", "title", "description", "done")} == \
        {k: second[k] for k in ("id", "title", "description", "done")}

    # edit: only the fields given; done / --todo.
    p = ctl.ok("tasks", "edit", str(first), "--title", "Buy oat milk", "--description", "2 litres")
    assert p.stdout == f"Updated task {first}.\n"
    t = ctl.json("tasks", "show", str(first))
    assert (t["title"], t["description"], t["done"]) == ("Buy oat milk", "2 litres", False)
    p = ctl.ok("tasks", "done", str(first))
    assert p.stdout == f"Task {first} is done.\n"
    assert ctl.json("tasks", "show", str(first))["done"] is True
    t = ctl.json("tasks", "edit", str(first), "--todo")
    assert t["done"] is False and t["title"] == "Buy oat milk"
    p = ctl.run("tasks", "edit", str(first), "--title", "")
    assert p.returncode == 1 and "  title: " in p.stderr

    # rm, then the task is gone: 404 is an API error, exit 1, with the server's message.
    p = ctl.ok("tasks", "rm", str(first))
    assert p.stdout == f"Deleted task {first}.\n"
    for args in (["tasks", "show", str(first)], ["tasks", "rm", str(first)], ["tasks", "done", str(first)]):
        p = ctl.run(*args)
        assert p.returncode == 1, (args, p.stderr)
        assert p.stderr.startswith("webctl: ") and len(p.stderr.splitlines()) == 1
        p = ctl.run("--json", *args)
        assert p.returncode == 1 and json.loads(p.stdout)["error"]["code"] == "not_found"
    p = ctl.run("--json", "tasks", "rm", str(second["id"]))
    assert p.returncode == 0 and p.stdout == ""

    # The rows are in PostgreSQL as sent.
    rows = webd.cluster.sql("SELECT title FROM tasks WHERE id = :'v1'", third["id"])
    assert rows == [[long_title]]


def test_terminal_safety(ctl):
    """Control characters from the server are not sent to the terminal as is."""
    user = new_user("eve")
    ctl.register(user)
    ctl.login(user)
    title = "evil\x1b[31mred\x07bell\u202eRTL"
    created = ctl.json("tasks", "add", title)
    assert created["title"] == title
    for args in (["tasks", "list"], ["tasks", "show", str(created["id"])]):
        out = ctl.ok(*args).stdout
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
        assert "evil?[31mred?bell?RTL" in out


def test_other_users_tasks(ctl, tmp_path, webd):
    a, b = new_user("frank"), new_user("grace")
    ctl.register(a)
    ctl.login(a)
    task = ctl.json("tasks", "add", "private")
    other = Ctl(tmp_path / "other", webd.url)
    other.register(b)
    other.login(b)
    p = other.run("--json", "tasks", "show", str(task["id"]))
    assert p.returncode == 1 and json.loads(p.stdout)["error"]["code"] == "not_found"
    assert other.json("tasks", "list")["items"] == []


def test_activity(ctl):
    user = new_user("heidi")
    ctl.register(user)
    ctl.login(user)
    ctl.ok("tasks", "add", "one")
    ctl.ok("tasks", "list")

    def have_entries():
        items = ctl.json("activity")["items"]
        paths = [(i["method"], i["path"]) for i in items]
        return ("POST", "/tasks") in paths and items

    items = webdtest.wait_until(have_entries, 10, "the activity entries")
    for i in items:
        assert set(i) >= {"id", "at", "method", "path", "status", "latency_ms", "request_id", "client"}
    p = ctl.ok("activity", "--limit", "100")
    lines = p.stdout.splitlines()
    assert lines[0].split()[:5] == ["TIME", "METHOD", "STATUS", "MS", "PATH"]
    assert any(line.split()[2:4] == ["POST", "201"] for line in lines[1:]), p.stdout
    p = ctl.ok("activity", "--limit", "1")
    assert len(p.stdout.splitlines()) == 2 and "More: webctl activity --offset 1" in p.stderr


def test_logout(ctl):
    user = new_user("ivan")
    ctl.register(user)
    ctl.login(user)
    ctl.ok("tasks", "list")
    p = ctl.ok("logout")
    assert p.stdout == "Logged out.\n"
    assert not ctl.token_file.exists()
    p = ctl.run("tasks", "list")
    assert p.returncode == 3
    assert ctl.ok("logout").stdout == "Not logged in.\n"


def test_logout_all(ctl, webd, tmp_path):
    """logout --all revokes the user's tokens on the server: a login on another machine stops working."""
    user = new_user("ines")
    ctl.register(user)
    ctl.login(user)
    laptop = Ctl(tmp_path / "laptop", webd.url)
    laptop.login(user)
    laptop.ok("tasks", "list")
    p = ctl.ok("logout", "--all")
    assert "revoked" in p.stdout and p.stdout.endswith("Logged out.\n")
    assert not ctl.token_file.exists()
    p = laptop.run("tasks", "list")
    assert p.returncode == 3, p.stderr
    # The laptop's login is refused by the server: logging out everywhere again says so, and forgets it.
    p = laptop.run("logout", "--all")
    assert p.returncode == 3 and not laptop.token_file.exists()
    # With no login at all there is nothing to revoke.
    assert ctl.run("logout", "--all").returncode == 3
    # A fresh login works.
    ctl.login(user)
    ctl.ok("tasks", "list")


def save_token(c, **changes):
    saved = json.loads(c.token_file.read_text())
    saved.update(changes)
    c.token_file.write_text(json.dumps(saved))
    os.chmod(c.token_file, 0o600)


def test_expired_and_refused_tokens(ctl, webd):
    user = new_user("judy")
    ctl.register(user)
    ctl.login(user)

    # Expired by the saved expiry: webctl says so without asking the server.
    save_token(ctl, expires=int(time.time()) - 10)
    p = ctl.run("tasks", "list")
    assert p.returncode == 3 and "expired" in p.stderr and f"webctl login {user}" in p.stderr

    # The server refuses the token (another key's signature): its message, exit 3.
    jwt = pytest.importorskip("jwt")
    now = int(time.time())
    forged = jwt.encode({"sub": "1", "name": user, "iat": now, "exp": now + 600, "iss": "webd"},
                        b"not the server's key 0123456789abcdef", algorithm="HS256")
    save_token(ctl, token=forged, expires=now + 600)
    for args in (["tasks", "list"], ["activity"], ["tasks", "show", "1"]):
        p = ctl.run(*args)
        assert p.returncode == 3, (args, p.stderr)
        assert "log in again" in p.stderr

    # A token for another URL isn't used.
    ctl.login(user)
    p = ctl.run("--url", "http://127.0.0.2:1/", "tasks", "list")
    assert p.returncode == 3 and "not logged in to http://127.0.0.2:1" in p.stderr
    # The same URL with a trailing slash is the same server.
    ctl.ok("--url", webd.url + "/", "tasks", "list")
    ctl.ok("tasks", "list", "--url", webd.url)


def test_server_down(ctl, webd):
    down = f"http://127.0.0.1:{webdtest.free_port()}"
    start = time.monotonic()
    p = ctl.run("--url", down, "register", new_user("ken"), "--password-stdin", input=PASSWORD + "\n")
    assert p.returncode == 4, p.stderr
    assert f"cannot connect to {down}" in p.stderr
    assert time.monotonic() - start < 10

    # Logged in, then the server goes away.
    user = new_user("leo")
    ctl.register(user)
    ctl.login(user)
    save_token(ctl, url=down)
    for args in (["tasks", "list"], ["tasks", "add", "x"], ["activity"]):
        p = ctl.run("--url", down, *args)
        assert p.returncode == 4, (args, p.stderr)
    p = ctl.run("--url", down, "--json", "tasks", "list")
    assert p.returncode == 4 and p.stdout == ""


def test_database_down(ctl, webd, cluster):
    """webd answers 503 while PostgreSQL is down: an API error, exit 1, with the server's message."""
    user = new_user("mallory")
    ctl.register(user)
    ctl.login(user)
    cluster.stop()
    try:
        p = ctl.run("tasks", "list")
        assert p.returncode == 1, p.stderr
        assert p.stderr.startswith("webctl: ")
    finally:
        cluster.start()
    webdtest.wait_until(lambda: ctl.run("tasks", "list").returncode == 0, 30, "webd to reconnect")

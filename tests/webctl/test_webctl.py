"""webctl driven end to end: the real webctl binary against a real webd on a throwaway PostgreSQL 15
cluster (the harness of tests/webd/webdtest.py).

Each webctl run gets its own HOME and XDG_CONFIG_HOME in a temporary directory, no proxy variables and
a UTF-8 locale, has stdin from the test (or nothing) and no controlling terminal (a new session), and a
timeout. Everything goes to 127.0.0.1.
"""

import json
import os
import re
import shlex
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
                "ALL_PROXY", "NO_PROXY", "WEBCTL_URL", "LANG", "LANGUAGE", "NO_COLOR", "TERM", "COLUMNS",
                "TZ"}
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
    for args in (["--help"], ["help"]):
        p = c.ok(*args)
        assert "Usage: webctl" in p.stdout and "Exit status" in p.stdout
        assert "tasks list [--done|--todo]" in p.stdout and "register USER" in p.stdout


@pytest.mark.parametrize("args,usage", [
    (["tasks", "--help"], "tasks COMMAND"),
    (["tasks", "-h"], "tasks COMMAND"),
    (["help", "tasks"], "tasks COMMAND"),
    (["tasks", "list", "--help"], "tasks list [--done|--todo] [--limit N] [--offset N]"),
    (["tasks", "ls", "--help"], "tasks list [--done|--todo]"),
    (["tasks", "add", "--help"], "tasks add TITLE"),
    (["tasks", "add", "x", "--help"], "tasks add TITLE"),
    (["help", "tasks", "add"], "tasks add TITLE"),
    (["tasks", "show", "-h"], "tasks show ID"),
    (["tasks", "edit", "--help"], "tasks edit ID"),
    (["tasks", "done", "--help"], "tasks done ID"),
    (["tasks", "rm", "--help"], "tasks rm ID"),
    (["activity", "--help"], "activity [--limit N]"),
    (["register", "--help"], "register USER"),
    (["login", "--help"], "login USER"),
    (["logout", "--help"], "logout"),
])
def test_command_help(tmp_path, args, usage):
    """Every command has its own help, not the program's."""
    c = Ctl(tmp_path / "h", "http://127.0.0.1:1")
    p = c.ok(*args)
    first = p.stdout.splitlines()[0]
    assert first == f"Usage: webctl [--url URL] [--json] {usage}" or \
        first.startswith(f"Usage: webctl [--url URL] [--json] {usage}"), p.stdout
    assert "Exit status" not in p.stdout and p.stderr == ""


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
    assert f"Registered {user}" in p.stdout and f"logged in to {webd.url} as {user} until " in p.stdout
    ctl.ok("tasks", "list")  # register logs in
    ctl.token_file.unlink()

    # Taken name, bad fields: the server's message (and field problems) on stderr, exit 1.
    p = ctl.run("register", user, "--password-stdin", input=PASSWORD + "\n")
    assert p.returncode == 1 and p.stderr.startswith("webctl: this username is taken"), p.stderr
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
    saved = json.loads(ctl.token_file.read_text())["logins"][0]
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
    assert json.loads(ctl.token_file.read_text())["logins"][0]["token"] == answer["token"]
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


def run_on_terminal(ctl, args, answers, interrupt=False, timeout=20, env=None):
    """Runs webctl on a new pseudo-terminal (stdin, stdout and stderr), with <env> added to the user's
    environment, and types each of <answers> once its password prompt is shown (or sends SIGINT at the
    first prompt, with <interrupt>). Returns (output, wait status, whether the terminal echoes
    afterwards)."""
    e = dict(ctl.env)
    e.update(env or {})
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execve(str(ctl.binary), ["webctl", *args], e)
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
    assert "More tasks: webctl tasks list --limit 1 --offset 1" in p.stderr
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
    assert any(line.split()[3:5] == ["POST", "201"] for line in lines[1:]), p.stdout
    p = ctl.ok("activity", "--limit", "1")
    assert len(p.stdout.splitlines()) == 2, p.stdout
    assert re.search(r"^More: webctl activity --limit 1 --before [0-9]+$", p.stderr, re.M), p.stderr


def test_logout(ctl):
    user = new_user("ivan")
    ctl.register(user)
    ctl.login(user)
    ctl.ok("tasks", "list")
    p = ctl.ok("logout")
    assert p.stdout == f"Logged out of {ctl.env['WEBCTL_URL']}.\n"
    assert not ctl.token_file.exists()
    p = ctl.run("tasks", "list")
    assert p.returncode == 3
    assert ctl.ok("logout").stdout == f"Not logged in to {ctl.env['WEBCTL_URL']}.\n"


def test_logout_all(ctl, webd, tmp_path):
    """logout --all revokes the user's tokens on the server: a login on another machine stops working."""
    user = new_user("ines")
    ctl.register(user)
    ctl.login(user)
    laptop = Ctl(tmp_path / "laptop", webd.url)
    laptop.login(user)
    laptop.ok("tasks", "list")
    p = ctl.ok("logout", "--all")
    assert "revoked" in p.stdout and p.stdout.endswith(f"Logged out of {webd.url}.\n")
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
    """Changes the one saved login."""
    saved = json.loads(c.token_file.read_text())
    assert len(saved["logins"]) == 1, saved
    saved["logins"][0].update(changes)
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
        assert f"Log in again with: webctl login {user}\n" in p.stderr

    # A token for another URL isn't used: that server is asked first, so a wrong URL says so.
    ctl.login(user)
    p = ctl.run("--url", "http://127.0.0.2:1/", "tasks", "list")
    assert p.returncode == 4 and "cannot connect to http://127.0.0.2:1" in p.stderr, p.stderr
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


# ---- what a new user meets (issue 9, items 14 and 15) ----------------------------------------------------

def signup(ctl, user):
    """Registers <user> and makes sure of the login (that register logs in is
    test_register_checks_name_first_and_logs_in's point), so that each test below checks its own alone."""
    ctl.register(user)
    if not ctl.token_file.exists():
        ctl.login(user)


def run_hint(ctl, line, **kw):
    """Runs a command line webctl printed, as a shell would split it, with this user's webctl."""
    args = shlex.split(line)
    assert args[0] == "webctl", line
    return ctl.run(*args[1:], **kw)


def hint(stderr, label):
    lines = [line for line in stderr.splitlines() if line.startswith(label + ": ")]
    assert len(lines) == 1, stderr
    return lines[0][len(label) + 2:]


def test_more_hint_keeps_filters(ctl, webd):
    """The next page's command repeats the filter, the limit and --url, quoted, and works as printed."""
    user = new_user("nina")
    signup(ctl, user)
    ids = {}
    for title, done in (("old done", True), ("todo one", False), ("todo two", False), ("new done", True)):
        ids[title] = ctl.json("tasks", "add", title, *(["--done"] if done else []))["id"]

    p = ctl.ok("tasks", "list", "--todo", "--limit", "1")
    assert "todo two" in p.stdout and "todo one" not in p.stdout, p.stdout
    line = hint(p.stderr, "More tasks")
    assert line == "webctl tasks list --todo --limit 1 --offset 1", line
    p = run_hint(ctl, line)
    assert p.returncode == 0 and "todo one" in p.stdout and "done" not in p.stdout.split("\n", 1)[1], p.stdout
    assert "More tasks" not in p.stderr

    p = ctl.ok("tasks", "ls", "--done", "--limit", "1")
    line = hint(p.stderr, "More tasks")
    assert line == "webctl tasks list --done --limit 1 --offset 1", line
    p = run_hint(ctl, line)
    assert "old done" in p.stdout and "todo" not in p.stdout, p.stdout

    # --url given on the command line is repeated (the default or WEBCTL_URL would be picked again).
    env = {"WEBCTL_URL": ""}
    p = ctl.ok("--url", webd.url + "/", "tasks", "list", "--todo", "--limit", "1", env=env)
    line = hint(p.stderr, "More tasks")
    assert line == f"webctl --url {webd.url} tasks list --todo --limit 1 --offset 1", line
    p = run_hint(ctl, line, env=env)
    assert p.returncode == 0 and "todo one" in p.stdout, p.stderr

    # Activity pages by a cursor: the page after stays put while the reads themselves add entries.
    p = ctl.ok("activity", "--limit", "2", "--url", webd.url, env=env)
    line = hint(p.stderr, "More")
    m = re.fullmatch(re.escape(f"webctl --url {webd.url} activity --limit 2 --before ") + r"([0-9]+)", line)
    assert m, line
    first = ctl.json("activity", "--limit", "2", "--before", m.group(1))["items"]
    assert run_hint(ctl, line, env=env).returncode == 0
    again = ctl.json("activity", "--limit", "2", "--before", m.group(1))["items"]
    assert [i["id"] for i in first] == [i["id"] for i in again] and all(i["id"] < int(m.group(1)) for i in first)


@pytest.mark.parametrize("args,culprit,message", [
    (["tasks", "add", "-urgent"], "-urgent", "unknown option '-u' in '-urgent'"),
    (["tasks", "add", "--description", "d", "-urgent"], "-urgent", "unknown option '-u' in '-urgent'"),
    (["tasks", "add", "--description", "-x", "-urgent"], "-urgent", "unknown option '-u' in '-urgent'"),
    (["tasks", "add", "-u"], "-u", "unknown option '-u'"),
    (["tasks", "add", "x", "--urgent"], "--urgent", "unknown option '--urgent'"),
    (["tasks", "add", "x", "--d"], "--d", "option '--d' is ambiguous: --description, --done"),
    (["tasks", "add", "x", "--done=yes"], "--done=yes", "option '--done' takes no value"),
    (["tasks", "list", "--limit"], "--limit", "option '--limit' needs a value"),
    (["tasks", "list", "-x"], "-x", "unknown option '-x'"),
    (["tasks", "show", "-5"], "-5", "unknown option '-5'"),
    (["login", "-bob"], "-bob", "unknown option '-b' in '-bob'"),
    (["--url", "http://127.0.0.1:1", "register", "-bob"], "-bob", "unknown option '-b' in '-bob'"),
    (["-q", "tasks", "list"], "-q", "unknown option '-q'"),
])
def test_option_errors_name_the_culprit(tmp_path, args, culprit, message):
    c = Ctl(tmp_path / "o", "http://127.0.0.1:1")
    p = c.run(*args)
    assert p.returncode == 2 and p.stdout == "", p
    first = p.stderr.splitlines()[0]
    assert first.startswith("webctl: " + message), p.stderr
    if args[0] == "tasks":
        assert f"Try 'webctl tasks {args[1]} --help'." in p.stderr, p.stderr
    elif args[0].startswith("-") and args[0] != "--url":
        assert "Try 'webctl --help'." in p.stderr, p.stderr
    # The message never names an argument that is not at fault (the old bug named the command).
    assert "'add'" not in p.stderr and "'list'" not in p.stderr
    # Commands that take free text suggest '--' for an argument that looks like an option.
    if culprit.startswith("-") and not culprit.startswith("--") and ("add" in args or "-bob" in args):
        assert "goes after '--'" in p.stderr, p.stderr
    else:
        assert "goes after '--'" not in p.stderr, p.stderr


def test_dashdash_suggestion_works(ctl, webd):
    user = new_user("oscar")
    signup(ctl, user)
    p = ctl.run("tasks", "add", "--description", "it's late", "-urgent")
    assert p.returncode == 2
    line = hint(p.stderr, "An argument that starts with '-' goes after '--'")
    assert line == "webctl tasks add --description 'it'\\''s late' -- -urgent", line
    p = run_hint(ctl, "webctl --json" + line[len("webctl"):])
    assert p.returncode == 0, p.stderr
    task = json.loads(p.stdout)
    assert task["title"] == "-urgent" and task["description"] == "it's late"

    # Several words for one TITLE: the same command with them quoted as one.
    for args, title in ((["tasks", "add", "Buy", "oat", "milk", "--done"], "Buy oat milk"),
                        (["tasks", "add", "--", "-a", "b"], "-a b")):
        p = ctl.run(*args)
        assert p.returncode == 2
        line = hint(p.stderr, "A TITLE of several words is quoted")
        p = run_hint(ctl, "webctl --json" + line[len("webctl"):])
        assert p.returncode == 0 and json.loads(p.stdout)["title"] == title, (line, p.stderr)


def test_logins_per_server(ctl, webd, tmp_path):
    """One login per normalised server URL; logout forgets only that server's."""
    port = webd.url.rsplit(":", 1)[1]
    other_url = f"http://localhost:{port}"  # the same webd under another name: another server to webctl
    a, b = new_user("pia"), new_user("quinn")
    signup(ctl, a)
    ctl.ok("tasks", "add", "a's task")
    ctl.ok("--url", other_url, "register", b, "--password-stdin", input=PASSWORD + "\n")
    ctl.ok("--url", other_url, "tasks", "add", "b's task")
    assert "a's task" in ctl.ok("tasks", "list").stdout
    assert "b's task" in ctl.ok("--url", other_url, "tasks", "list").stdout
    # Other spellings of the same URL find the same login.
    for spelling in (webd.url.upper().replace("HTTP://", "http://"), webd.url + "//",
                     webd.url.replace("http://", "HTTP://")):
        assert "a's task" in ctl.ok("--url", spelling, "tasks", "list").stdout, spelling
    saved = json.loads(ctl.token_file.read_text())
    assert sorted(x["url"] for x in saved["logins"]) == sorted([webd.url, other_url])
    assert stat.S_IMODE(ctl.token_file.stat().st_mode) == 0o600

    p = ctl.ok("--url", other_url + "/", "logout")
    assert p.stdout == f"Logged out of {other_url}.\n"
    p = ctl.run("--url", other_url, "tasks", "list")
    assert p.returncode == 3 and f"not logged in to {other_url} (saved logins: {webd.url})" in p.stderr
    assert f"Log in with: webctl --url {other_url} login USER" in p.stderr, p.stderr
    assert "a's task" in ctl.ok("tasks", "list").stdout

    # The single-login file of earlier versions is still read, and rewritten in the new form.
    token = json.loads(ctl.token_file.read_text())["logins"][0]
    ctl.token_file.write_text(json.dumps({"url": webd.url + "/", "username": a, "token": token["token"],
                                          "expires": token["expires"]}))
    os.chmod(ctl.token_file, 0o600)
    assert "a's task" in ctl.ok("tasks", "list").stdout
    ctl.ok("--url", other_url, "login", b, "--password-stdin", input=PASSWORD + "\n")
    saved = json.loads(ctl.token_file.read_text())
    assert sorted(x["url"] for x in saved["logins"]) == sorted([webd.url, other_url])
    assert "a's task" in ctl.ok("tasks", "list").stdout


def test_wrong_url_with_saved_login(ctl, webd):
    """A mistyped URL is reported as one (connection refused, not webd), never as "not logged in"."""
    user = new_user("rita")
    signup(ctl, user)
    down = f"http://127.0.0.1:{webdtest.free_port()}"
    for args in (["tasks", "list"], ["activity"], ["tasks", "show", "1"], ["tasks", "add", "x"]):
        p = ctl.run("--url", down, *args)
        assert p.returncode == 4, (args, p.stderr)
        assert f"cannot connect to {down}" in p.stderr and "logged in" not in p.stderr, p.stderr


class NotWebd:
    """An HTTP server on 127.0.0.1 that answers <status> with <body> to everything, but the paths in
    <routes> ({path: (status, JSON body)})."""

    def __init__(self, status=404, body=b"<html>nothing here</html>", routes=None):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                code, data = status, body
                ctype = "text/html" if body.startswith(b"<") else "text/plain"
                if self.path in (routes or {}):
                    code, answer = routes[self.path]
                    data, ctype = json.dumps(answer).encode(), "application/json"
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_url_not_webd(ctl, webd):
    """A URL with a path, or another server: "not a webd API", with the root to use when it has a path."""
    user = new_user("sam")
    signup(ctl, user)
    wrong = webd.url + "/api"
    for args in (["tasks", "list"], ["tasks", "add", "x"], ["activity"], ["login", user, "--password-stdin"],
                 ["register", new_user("tom"), "--password-stdin"]):
        p = ctl.run("--url", wrong, *args, input=PASSWORD + "\n")
        assert p.returncode == 1, (args, p.stderr)
        assert f"webctl: {wrong}: not a webd API (404 on /api/healthcheck)" in p.stderr, p.stderr
        assert f"--url {webd.url}" in p.stderr and "not found" not in p.stderr, p.stderr
    # A task that does not exist is still webd's own 404.
    p = ctl.run("tasks", "show", "999999999")
    assert p.returncode == 1 and "not a webd API" not in p.stderr, p.stderr

    for status in (404, 200, 301, 403):
        other = NotWebd(status)
        try:
            for args in (["tasks", "list"], ["login", user, "--password-stdin"], ["activity"]):
                p = ctl.run("--url", other.url, *args, input=PASSWORD + "\n")
                assert p.returncode == 1, p.stderr
                assert f"{other.url}: not a webd API ({status} on /healthcheck)" in p.stderr, p.stderr
        finally:
            other.close()

    # A proxy in front with nothing behind it: unavailable, with its reason, made safe for the terminal.
    other = NotWebd(503, b"503 Service Unavailable: no healthy backend\x1b[31m\nsecond line\n")
    try:
        for args in (["tasks", "list"], ["login", user, "--password-stdin"]):
            p = ctl.run("--url", other.url, *args, input=PASSWORD + "\n")
            assert p.returncode == 1, p.stderr
            assert "not a webd API" not in p.stderr and "\x1b" not in p.stderr, p.stderr
            assert "503 Service Unavailable: no healthy backend?[31m" in p.stderr, p.stderr
            assert "second line" not in p.stderr
    finally:
        other.close()


def test_register_checks_name_first_and_logs_in(ctl, webd):
    # A bad name is refused before any password is asked for (no terminal, no --password-stdin).
    p = ctl.run("register", "a b")
    assert p.returncode == 1 and "  username: " in p.stderr and "password" not in p.stderr, p.stderr
    out, status, _ = run_on_terminal(ctl, ["register", "x"], [b"never typed\n"] * 2)
    assert os.waitstatus_to_exitcode(status) == 1 and "assword" not in out and "username" in out, out
    # Typed on a terminal: asked twice, once; then logged in.
    user, secret = new_user("uma"), "typed horse battery"
    out, status, _ = run_on_terminal(ctl, ["register", user], [secret.encode() + b"\n"] * 3)
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert out.count("Password: ") == 1 and out.count("Repeat password: ") == 1, out
    assert f"logged in to {webd.url} as {user}" in out
    assert ctl.json("tasks", "list")["items"] == []


def test_token_file_permissions(ctl, webd):
    user = new_user("vera")
    signup(ctl, user)
    path = str(ctl.token_file)
    for mode in (0o644, 0o640, 0o604, 0o660, 0o620):
        os.chmod(path, mode)
        for args in (["tasks", "list"], ["logout"], ["login", user, "--password-stdin"]):
            p = ctl.run(*args, input=PASSWORD + "\n")
            assert p.returncode == 3, (oct(mode), args, p.stderr)
            assert f"{path} is open to other users (mode {mode:04o})" in p.stderr, p.stderr
            assert f"chmod 600 {path}" in p.stderr, p.stderr
    os.chmod(path, 0o600)
    ctl.ok("tasks", "list")
    # Not the user's own file: refused too.
    os.chown(path, 65534, 65534)
    try:
        p = ctl.run("tasks", "list")
        assert p.returncode == 3 and "belongs to user 65534" in p.stderr, p.stderr
    finally:
        os.chown(path, os.geteuid(), os.getegid())
    ctl.ok("tasks", "list")


def test_times_have_a_zone(ctl):
    user = new_user("wes")
    signup(ctl, user)
    ctl.ok("tasks", "add", "zoned")
    for tz, zone in (("UTC", "UTC"), ("Asia/Tokyo", "JST"), ("America/New_York", "E[SD]T")):
        env = {"TZ": tz}
        p = ctl.ok("login", user, "--password-stdin", input=PASSWORD + "\n", env=env)
        assert re.search(rf" until \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d {zone}\.$", p.stdout.strip()), p.stdout
        p = ctl.ok("tasks", "list", env=env)
        assert re.search(rf"\d\d:\d\d:\d\d {zone}$", p.stdout.splitlines()[1]), p.stdout
        p = ctl.ok("activity", "--limit", "1", env=env)
        assert re.match(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d {zone} ", p.stdout.splitlines()[1]), p.stdout


def run_on_pty(ctl, args, env):
    """Runs webctl with its output on a terminal; returns (output, exit status)."""
    out, status, _ = run_on_terminal(ctl, args, [], env=env)
    return out, os.waitstatus_to_exitcode(status)


def test_colour(ctl):
    user = new_user("xena")
    signup(ctl, user)
    ctl.ok("tasks", "add", "open one")
    ctl.ok("tasks", "add", "closed one", "--done")
    out, status = run_on_pty(ctl, ["tasks", "list"], env={"TERM": "xterm"})
    assert status == 0 and "\x1b[" in out, out
    done_line = next(line for line in out.splitlines() if "closed one" in line)
    assert "\x1b[2m" in done_line  # done tasks dim
    out, status = run_on_pty(ctl, ["tasks", "show", "999999999"], env={"TERM": "xterm"})
    assert status == 1 and "\x1b[31mwebctl: " in out, out  # errors red
    # NO_COLOR empty counts as unset; so does TERM unset (only "dumb" says no).
    for env in ({"NO_COLOR": ""}, {}):
        out, status = run_on_pty(ctl, ["tasks", "list"], env=env)
        assert status == 0 and "\x1b[" in out, (env, out)
    # No colour with NO_COLOR, with TERM=dumb, or into a pipe.
    for env in ({"TERM": "xterm", "NO_COLOR": "1"}, {"TERM": "dumb"}):
        for args in (["tasks", "list"], ["tasks", "show", "999999999"], ["activity"]):
            out, _ = run_on_pty(ctl, args, env=env)
            assert "\x1b" not in out, (env, args, out)
    for args in (["tasks", "list"], ["tasks", "show", "999999999"], ["activity"], ["--help"]):
        p = ctl.run(*args, env={"TERM": "xterm"})
        assert "\x1b" not in p.stdout + p.stderr, (args, p)


def test_tables_fit_the_width(ctl):
    user = new_user("yves")
    signup(ctl, user)
    ctl.ok("tasks", "add", "A title that is much longer than a narrow terminal can show in its column " * 2)
    ctl.ok("tasks", "add", "short")
    ctl.run("tasks", "show", "1" * 18)  # an activity entry with a long path
    webdtest.wait_until(lambda: len(ctl.json("activity")["items"]) >= 4, 10, "the activity entries")
    for columns in (60, 80):
        for args in (["tasks", "list"], ["activity"]):
            p = ctl.ok(*args, env={"COLUMNS": str(columns)})
            lines = p.stdout.splitlines()
            assert all(len(line) <= columns for line in lines), (columns, args, p.stdout)
            assert lines[0].split()[:2] in (["ID", "DONE"], ["TIME", "METHOD"]), p.stdout
    p = ctl.ok("activity", env={"COLUMNS": "60"})
    assert "PATH" in p.stdout.splitlines()[0] and "\u2026" in p.stdout, p.stdout
    p = ctl.ok("activity", env={"COLUMNS": "200"})
    assert "REQUEST ID" in p.stdout.splitlines()[0] and "CLIENT" in p.stdout.splitlines()[0]
    assert "/tasks/" + "1" * 18 in p.stdout and all(len(line) <= 200 for line in p.stdout.splitlines())
    p = ctl.ok("tasks", "list", env={"COLUMNS": "200"})
    assert "short" in p.stdout and "A title that is much longer than a narrow terminal can show" * 1 in p.stdout
    long_title = "T" * 120
    ctl.ok("tasks", "add", long_title)
    p = ctl.ok("tasks", "list", env={"COLUMNS": "200"})
    assert long_title in p.stdout and all(len(line) <= 200 for line in p.stdout.splitlines()), p.stdout
    assert long_title not in ctl.ok("tasks", "list").stdout  # a pipe: capped
    # Into a pipe without COLUMNS nothing is cut but the widest titles.
    p = ctl.ok("activity", env={"COLUMNS": ""})
    assert "/tasks/" + "1" * 18 in p.stdout


def test_saved_logins_are_bounded(ctl, webd):
    """At most 16 servers: expired logins are dropped, then the one that expires first makes room."""
    user = new_user("zoe")
    signup(ctl, user)
    now = int(time.time())
    saved = json.loads(ctl.token_file.read_text())
    mine = saved["logins"][0]
    others = [{"url": f"http://127.0.0.{i + 2}:1", "username": "x", "token": "t", "expires": now + 1000 + i}
              for i in range(14)]
    others.append({"url": "http://127.0.0.99:1", "username": "x", "token": "t", "expires": now - 5})
    ctl.token_file.write_text(json.dumps({"logins": others + [mine]}))
    os.chmod(ctl.token_file, 0o600)
    assert len(json.loads(ctl.token_file.read_text())["logins"]) == 16
    ctl.ok("tasks", "list")
    # A 17th server: the expired login goes.
    port = webd.url.rsplit(":", 1)[1]
    ctl.ok("--url", f"http://localhost:{port}", "login", user, "--password-stdin", input=PASSWORD + "\n")
    urls = [x["url"] for x in json.loads(ctl.token_file.read_text())["logins"]]
    assert len(urls) == 16 and "http://127.0.0.99:1" not in urls and f"http://localhost:{port}" in urls
    # Another one (127.1 is 127.0.0.1 to the resolver): the login that expires first (127.0.0.2) goes.
    ctl.ok("--url", f"http://127.1:{port}", "login", user, "--password-stdin", input=PASSWORD + "\n")
    urls = [x["url"] for x in json.loads(ctl.token_file.read_text())["logins"]]
    assert len(urls) == 16 and "http://127.0.0.2:1" not in urls and "http://127.0.0.3:1" in urls, urls
    assert webd.url in urls and f"http://localhost:{port}" in urls and f"http://127.1:{port}" in urls
    ctl.ok("--url", "http://127.0.0.250:1", "logout")  # nothing saved for it: nothing changes
    assert len(json.loads(ctl.token_file.read_text())["logins"]) == 16
    # Too many logins, or a file that is not JSON: refused with what to do.
    for text in (json.dumps({"logins": others * 2}), "{not json", json.dumps({"logins": [mine]}) + " trailing"):
        ctl.token_file.write_text(text)
        p = ctl.run("tasks", "list")
        assert p.returncode == 3 and "bad format" in p.stderr and "remove it" in p.stderr, p.stderr


def test_changes_of_the_logins_wait_for_each_other(ctl, webd):
    """A change of the token file (login, logout) waits while another webctl holds the directory's lock,
    so that two at once never lose a login; reading needs no lock."""
    import fcntl

    user = new_user("abel")
    signup(ctl, user)
    port = webd.url.rsplit(":", 1)[1]
    other = f"http://localhost:{port}"
    ctl.ok("--url", other, "login", user, "--password-stdin", input=PASSWORD + "\n")
    fd = os.open(ctl.token_file.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        start = time.monotonic()
        p = subprocess.Popen([str(ctl.binary), "--url", other, "logout"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=ctl.env, text=True, start_new_session=True)
        assert ctl.ok("tasks", "list").returncode == 0  # a reader is not held up
        time.sleep(1.5)
        assert p.poll() is None, p.communicate()
        fcntl.flock(fd, fcntl.LOCK_UN)
        out, err = p.communicate(timeout=20)
        assert p.returncode == 0 and out == f"Logged out of {other}.\n", err
        assert time.monotonic() - start >= 1.5
    finally:
        os.close(fd)
    saved = [x["url"] for x in json.loads(ctl.token_file.read_text())["logins"]]
    assert saved == [webd.url]


def test_server_text_is_made_safe(ctl):
    """What a server sends back is never written to the terminal as is: messages, names, times."""
    evil = "\x1b]0;owned\x07\x1b[31m"
    health = (200, {"status": "ok", "database": "ok"})
    server = NotWebd(routes={
        "/healthcheck": health,
        "/auth/register": (201, {"id": 1, "username": "bob" + evil, "created_at": evil}),
        "/auth/login": (200, {"token": "t.t.t", "token_type": "Bearer", "expires_in": 3600,
                              "expires_at": "2026-12-07T14:03:05Z" + evil}),
        "/tasks": (400, {"error": {"code": "x" + evil, "message": "bad" + evil, "fields": {"f" + evil: evil}}}),
    })
    try:
        for args in (["login", "bob", "--password-stdin"], ["register", "bob", "--password-stdin"],
                     ["tasks", "add", "x"]):
            p = ctl.run("--url", server.url, *args, input=PASSWORD + "\n")
            assert "\x1b" not in p.stdout + p.stderr and "\x07" not in p.stdout + p.stderr, (args, p)
        p = ctl.run("--url", server.url, "login", "bob", "--password-stdin", input=PASSWORD + "\n")
        assert p.returncode == 0 and "until 2026-12-07T14:03:05Z?]0;owned??[31m." in p.stdout, p.stdout
        p = ctl.run("--url", server.url, "tasks", "add", "x")
        assert p.returncode == 1 and "webctl: bad?]0;owned??[31m\n" in p.stderr, p.stderr
        assert "  f?]0;owned??[31m: ?]0;owned??[31m\n" in p.stderr, p.stderr
    finally:
        server.close()

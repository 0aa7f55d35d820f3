"""scripts/demo.sh as a user runs it: the whole system comes up on one machine, serves the tasks API
through lbd, keeps serving while a relay is killed, and a Ctrl-C leaves nothing behind."""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

import demotest
from demotest import Demo, alive, port_free, proc_cmdline, wait_until

PASSWORD = "correct horse battery"


@pytest.fixture
def demo(tmp_path):
    d = Demo(tmp_path)
    try:
        yield d
    finally:
        try:
            print(d.output())
        finally:
            d.cleanup()


def api(d, method, path, token=None, body=None, session=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return (session or requests).request(method, d.url + path, json=body, headers=headers, timeout=10)


def user(d, name):
    r = api(d, "POST", "/auth/register", body={"username": name, "password": PASSWORD})
    assert r.status_code == 201, r.text
    r = api(d, "POST", "/auth/login", body={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert r.json()["token_type"].lower() == "bearer", r.text
    return r.json()["token"]


def assert_all_gone(d, ports):
    """Nothing of the demo is left: no process, no working directory, no listener."""
    try:
        wait_until(lambda: not d.leftovers(), 10, "the demo's processes to be gone")
    except AssertionError:
        raise AssertionError(f"processes left behind: {d.leftovers()}\n{d.output()}") from None
    assert not os.path.exists(d.workdir), f"{d.workdir} is still there"
    for port in ports:
        assert port_free(port), f"127.0.0.1:{port} is still in use"


def test_demo_serves_survives_a_relay_kill_and_stops_clean(demo, tmp_path):
    d = demo.start().wait_ready()
    out = d.output()
    assert f"demo: ready at http://127.0.0.1:{d.port}" in out.splitlines()[-1]
    assert "local-0-" in out and "3/3 backends healthy" in out, out
    assert d.healthy(3), d.status()

    # The API through lbd: register, login, a task created with the token, read back, listed.
    token = user(d, "carol")
    r = api(d, "POST", "/tasks", token, {"title": "Buy milk", "description": "two litres"})
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["title"] == "Buy milk" and task["done"] is False, task
    r = api(d, "GET", f"/tasks/{task['id']}", token)
    assert r.status_code == 200, r.text
    assert r.json() == task
    r = api(d, "GET", "/tasks", token)
    assert r.status_code == 200, r.text
    assert [t["id"] for t in r.json()["items"]] == [task["id"]], r.text
    r = api(d, "GET", "/tasks")
    assert r.status_code == 401, r.text
    assert r.headers.get("X-Request-Id"), r.headers

    # The webctl examples it printed, pasted into a shell that has neither webctl on its PATH nor
    # WEBCTL_URL, with the password on stdin instead of the prompt.
    examples = d.section("With webctl (in another terminal; it asks for the password, at least 8 characters):",
                         "With curl:")
    assert examples[0] == f"export WEBCTL_URL={d.url}", examples
    assert examples[1] == f'export PATH={d.build / "webctl"}:"$PATH"', examples
    assert all(line.startswith("webctl ") for line in examples[2:]), examples
    script = "\n".join(line + (f" --password-stdin <<<'{PASSWORD}'" if line.startswith("webctl register") else "")
                       for line in examples)
    env = {k: v for k, v in d.env.items() if k not in ("WEBCTL_URL", "PATH")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "webctl"), PATH="/usr/bin:/bin")
    p = subprocess.run(["/bin/bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                       timeout=60, env=env, check=False)
    assert p.returncode == 0, f"{script}\n{p.stdout}{p.stderr}"
    assert "Registered alice" in p.stdout and "logged in to " + d.url in p.stdout, p.stdout
    assert "Buy milk" in p.stdout.split("Created task", 1)[1], p.stdout

    # The curl examples it printed, run as they are.
    if shutil.which("curl"):
        script = "\n".join(d.section("With curl:", "The pool"))
        p = subprocess.run(["/bin/bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                           timeout=60, check=False)
        assert p.returncode == 0, f"{script}\n{p.stdout}{p.stderr}"
        assert '"username":"bob"' in p.stdout and '"items":[{' in p.stdout, p.stdout
        assert p.stdout.count('"title":"Buy milk"') == 2, p.stdout

    # Every process of the demo, as it runs now.
    pids = d.record()
    relays = d.relays()
    assert len(relays) == 3, relays
    for pid in relays:
        assert pid in pids, (pid, pids)
        assert f"{d.workdir}/relay.conf" in proc_cmdline(pid)
    lbd = d.find("lbd.conf")
    webd = d.find("webd.conf")
    postmaster = d.postmaster()
    assert {lbd, webd, postmaster} <= pids
    assert os.getpgid(next(iter(relays))) != os.getpgid(lbd)  # relays have process groups of their own

    # Authenticated reads through lbd while a relay is killed: every one must succeed (lbd retries a
    # request that failed before any response byte on another backend).
    stop = threading.Event()
    failures = []
    counts = [0] * 4
    deadline = time.monotonic() + 60

    def load(i):
        with requests.Session() as s:
            while not stop.is_set() and time.monotonic() < deadline:
                path = "/tasks" if i % 2 else f"/tasks/{task['id']}"
                try:
                    r = api(d, "GET", path, token, session=s)
                    if r.status_code != 200:
                        failures.append(f"GET {path}: {r.status_code} {r.text}")
                    else:
                        counts[i] += 1
                except requests.RequestException as e:
                    failures.append(f"GET {path}: {e!r}")

    threads = [threading.Thread(target=load, args=(i,), daemon=True) for i in range(len(counts))]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        victim, victim_id = next(iter(relays.items()))
        assert f"{d.workdir}/relay.conf" in proc_cmdline(victim)
        before = sum(counts)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not alive(victim), 5, f"relay {victim} to die")

        def replaced():
            st = d.healthy(3)
            if not st:
                return None
            ids = {b["instance_id"] for b in st["backends"]}
            return st if victim_id not in ids else None
        st = wait_until(replaced, 30, "lbd to replace the killed relay and have 3 healthy backends")
        time.sleep(2)  # and keep serving a moment with the new one in rotation
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "load threads did not stop"
    assert not failures, f"{len(failures)} failed requests, e.g. {failures[:5]}"
    assert sum(counts) > before > 0, counts
    assert all(c > 0 for c in counts), counts
    assert st["control"]["launches"] >= 4, st["control"]
    new = set(d.relays()) - set(relays)
    assert len(new) == 1, (relays, d.relays())
    for pid in new:
        assert f"{d.workdir}/relay.conf" in proc_cmdline(pid)
    d.record()

    # Writes work again through the new pool.
    r = api(d, "POST", "/tasks", token, {"title": "after the kill"})
    assert r.status_code == 201, r.text
    r = api(d, "GET", "/tasks", token)
    assert "after the kill" in [t["title"] for t in r.json()["items"]], r.text

    # Ctrl-C: everything stops, exit status 0, nothing left.
    d.record()
    d.proc.send_signal(signal.SIGINT)
    code = d.wait_exit(60)
    assert code == 0, f"demo.sh exited with {code}:\n{d.output()}"
    assert d.output().splitlines()[-1] == "demo: stopped", d.output()
    assert_all_gone(d, [d.port, d.admin_port])
    assert len(d.recorded) >= 6, d.recorded  # lbd, webd, 4 relays, the postmaster and its helpers


def test_demo_stops_everything_when_a_component_dies(demo):
    d = demo.start().wait_ready()
    d.record()
    webd = d.find("webd.conf")
    os.kill(webd, signal.SIGKILL)
    code = d.wait_exit(60)
    out = d.output()
    assert code == 1, f"demo.sh exited with {code}:\n{out}"
    assert "webd" in out and "exited; stopping the rest" in out, out
    assert out.splitlines()[-1] == "demo: stopped", out
    assert_all_gone(d, [d.port, d.admin_port])


def test_demo_keep_leaves_the_working_directory(demo):
    d = Demo(demo.tmp, extra_args=["--keep"])
    try:
        d.start().wait_ready()
        d.record()
        os.killpg(d.proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the script and its jobs
        assert d.wait_exit(60) == 0, d.output()
        assert not d.leftovers(), d.leftovers()
        work = Path(d.workdir)
        assert f"demo: kept {work} (logs in {work}/logs)" in d.output(), d.output()
        for log in ("lbd.log", "webd.log", "postgres.log", "setup.log"):
            assert (work / "logs" / log).stat().st_size > 0, log
        assert (work / "lbd.conf").is_file() and (work / "pg" / "data").is_dir()
        assert port_free(d.port)
    finally:
        d.cleanup()


def test_demo_refuses_a_port_in_use(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        d = Demo(tmp_path, port=s.getsockname()[1])
        try:
            d.start()
            code = d.wait_exit(30)
            assert code == 1, d.output()
            assert f"port {d.port} is in use" in d.output(), d.output()
            assert d.workdir is None, d.output()
        finally:
            d.cleanup()


def test_usage():
    script = str(demotest.SCRIPT)
    p = subprocess.run(["/bin/bash", script, "--help"], capture_output=True, text=True, timeout=10, check=False)
    assert p.returncode == 0, p.stderr
    for opt in ("--port", "--build-dir", "--keep", "--no-packages", "--help"):
        assert opt in p.stdout, p.stdout
    for args in (["--port", "http"], ["--port", "70000"], ["--bogus"], ["--port"]):
        p = subprocess.run(["/bin/bash", script, *args], capture_output=True, text=True, timeout=10,
                           check=False)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert p.stdout == "" and "demo:" in p.stderr, (args, p.stdout, p.stderr)
    p = subprocess.run(["/bin/bash", script, "--no-packages", "--build-dir", "/nonexistent/build"],
                       capture_output=True, text=True, timeout=10, check=False)
    assert p.returncode == 1 and "not a meson build directory" in p.stderr, (p.stdout, p.stderr)


def test_webctl_default_url_is_the_demos():
    """webctl with no --url and no WEBCTL_URL talks to the port the demo serves by default."""
    script = str(demotest.SCRIPT)
    p = subprocess.run(["/bin/bash", script, "--help"], capture_output=True, text=True, timeout=10, check=False)
    port = re.search(r"--port N .*\(default (\d+)\)", p.stdout).group(1)
    webctl = demotest.build_dir() / "webctl" / "webctl"
    env = {k: v for k, v in os.environ.items() if k not in demotest.DROP_ENV}
    p = subprocess.run([str(webctl), "--help"], capture_output=True, text=True, timeout=10, env=env, check=False)
    assert f"else http://127.0.0.1:{port})" in p.stdout, p.stdout

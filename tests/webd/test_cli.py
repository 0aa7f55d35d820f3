"""webd's command line: --help, --version, --check-config, exit codes for bad usage and bad
configuration, secrets kept out of messages, start-up failures."""

import os
import subprocess
import time

import pytest

import webdtest

EXIT_USAGE = 2
EXIT_CONFIG = 78


def run(args, env=None, timeout=30):
    binary = webdtest.require_webd()
    e = {k: v for k, v in os.environ.items() if k not in webdtest.SYSTEMD_ENV}
    e.update(env or {})
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout,
                          env=e, stdin=subprocess.DEVNULL)


def write(tmp_path, text, name="webd.conf"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_help_and_version():
    r = run(["--help"])
    assert r.returncode == 0
    assert "Usage: webd" in r.stdout
    for flag in ("--config", "--listen", "--database", "--set", "--check-config", "--version"):
        assert flag in r.stdout
    r = run(["--version"])
    assert r.returncode == 0
    assert r.stdout.startswith("webd ")


def test_usage_errors():
    assert run(["--no-such-flag"]).returncode == EXIT_USAGE
    assert run(["extra-argument"]).returncode == EXIT_USAGE
    assert run(["--listen"]).returncode == EXIT_USAGE


def test_check_config_ok(tmp_path):
    path = write(tmp_path, "[webd]\nlisten = 127.0.0.1:18080\ndatabase = dbname=webd\n"
                 "pool_size = 8\ntoken_ttl = 15m\nmax_body_size = 16k\nactivity = off\n")
    r = run(["--config", path, "--check-config"])
    assert r.returncode == 0, r.stderr
    assert "configuration OK" in r.stdout
    assert "127.0.0.1:18080" in r.stdout


def test_check_config_from_options_and_environment():
    r = run(["--check-config", "--listen", "[::1]:9000", "--set", "webd.pool_size=2"],
            env={"WEBD_DATABASE": "host=/run/postgresql dbname=webd"})
    assert r.returncode == 0, r.stderr
    r = run(["--check-config", "--database", "dbname=webd", "--set", "webd.log_level=debug"])
    assert r.returncode == 0, r.stderr


def test_missing_database_is_a_config_error():
    r = run(["--check-config"])
    assert r.returncode == EXIT_CONFIG
    assert "database" in r.stderr


@pytest.mark.parametrize("line, words", [
    ("pool_size = 0", ["pool_size", "between 1 and 64"]),
    ("pool_size = 65", ["pool_size"]),
    ("listen = nowhere", ["listen", "numeric address"]),
    ("listen = 127.0.0.1:0", ["listen"]),
    ("token_ttl = 1.5s", ["token_ttl", "whole number of seconds"]),
    ("token_ttl = 0", ["token_ttl"]),
    ("max_body_size = 10", ["max_body_size"]),
    ("request_timeout = soon", ["request_timeout", "duration"]),
    ("log_level = loud", ["log_level"]),
    ("activity = maybe", ["activity"]),
    ("secret_file = relative/key", ["secret_file", "absolute"]),
    ("colour = blue", ["colour", "unknown key"]),
])
def test_bad_keys(tmp_path, line, words):
    path = write(tmp_path, f"[webd]\ndatabase = dbname=webd\n{line}\n")
    r = run(["--config", path, "--check-config"])
    assert r.returncode == EXIT_CONFIG, r.stderr
    assert f"{path}:3:" in r.stderr
    for w in words:
        assert w in r.stderr


def test_every_bad_line_reported(tmp_path):
    path = write(tmp_path, "[webd]\npool_size = x\nlog_level = y\n[other]\nkey = 1\n")
    r = run(["--config", path, "--check-config"])
    assert r.returncode == EXIT_CONFIG
    for n in (2, 3, 5):
        assert f"{path}:{n}:" in r.stderr, r.stderr


def test_syntax_error_and_missing_file(tmp_path):
    path = write(tmp_path, "[webd\n")
    assert run(["--config", path, "--check-config"]).returncode == EXIT_CONFIG
    r = run(["--config", str(tmp_path / "absent.conf"), "--check-config"])
    assert r.returncode == EXIT_CONFIG


def test_database_secrets_never_printed(tmp_path):
    secret = "s3cr3t-Passw0rd"
    path = write(tmp_path, f"[webd]\ndatabase = host=x password={secret} bogus\n")
    r = run(["--config", path, "--check-config"])
    assert r.returncode == EXIT_CONFIG
    assert "database" in r.stderr
    assert secret not in r.stderr + r.stdout
    r = run(["--check-config", "--set", f"webd.databse=password={secret}"])
    assert r.returncode == EXIT_CONFIG
    assert secret not in r.stderr + r.stdout


def test_bad_set_syntax():
    r = run(["--check-config", "--database", "dbname=x", "--set", "nodot"])
    assert r.returncode == EXIT_CONFIG
    assert "SECTION.KEY=VALUE" in r.stderr


def test_unreachable_database_fails_start(tmp_path):
    port = webdtest.free_port()  # nothing listens there
    start = time.monotonic()
    r = run(["--listen", f"127.0.0.1:{webdtest.free_port()}", "--set", "webd.startup_timeout=1s",
             "--set", f"webd.secret_file={tmp_path}/key",
             "--database", f"host=127.0.0.1 port={port} dbname=x user=x password=hunter22"])
    assert r.returncode == 1, r.stderr
    assert time.monotonic() - start < 15
    assert "database" in r.stderr
    assert "hunter22" not in r.stderr


def test_unsafe_secret_file_refused(cluster, tmp_path):
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32))
    os.chmod(key, 0o644)
    r = run(["--listen", f"127.0.0.1:{webdtest.free_port()}", "--set", f"webd.secret_file={key}",
             "--database", cluster.conninfo()])
    assert r.returncode == 1
    assert str(key) in r.stderr
    assert cluster.password not in r.stderr


def test_start_creates_key_and_schema_then_stops_cleanly(new_webd, cluster):
    w = new_webd()
    assert w.secret.exists()
    assert (w.secret.stat().st_mode & 0o777) == 0o600
    assert len(w.key()) >= 32
    tables = {row[0] for row in cluster.sql(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"users", "tasks", "activity", "schema_migrations"} <= tables
    assert cluster.sql("SELECT version FROM schema_migrations ORDER BY version") == [["1"], ["2"], ["3"], ["4"]]
    # A second start on the same database applies nothing again and keeps the same key.
    key = w.key()
    assert w.stop() == 0
    w2 = new_webd()
    assert w2.key() != b"" and w2.secret != w.secret
    assert cluster.sql("SELECT count(*) FROM schema_migrations") == [["4"]]
    assert "ready on" in w2.log()
    assert w.log().count("Stopped") == 1
    assert key == w.key()
    for log in (w.log(), w2.log()):
        assert cluster.password not in log

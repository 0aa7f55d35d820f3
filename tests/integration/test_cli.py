"""Command line: --help, --version, --check-config, exit codes."""

import re
import subprocess

import pytest

OPTIONS = ["--config", "--listen", "--backend", "--admin", "--balance", "--access-log", "--set",
           "--log-level", "--check-config", "--help", "--version"]

GOOD_CONFIG = """\
; every documented key, at its default or a test value
[lbd]
listen = 127.0.0.1:18080
admin = 127.0.0.1:19180
balance = round-robin
access_log = stderr
max_connections = 10000
drain_timeout = 30s

[timeouts]
client_header = 10s
client_idle = 60s
client_body = 30s
connect = 3s
backend = 30s
backend_idle = 10s

[limits]
max_header_size = 16k
max_body_size = 0
retries = 2
max_idle_per_backend = 64

[health]
path = /healthcheck
interval = 1s
timeout = 1s
rise = 2
fall = 3
expect = 200-399
passive_fall = 3

[pool]
provider = static
backends = 127.0.0.1:18081,127.0.0.1:18082
networks = 127.0.0.0/8
port = 80
desired = 3
grace = 120s
poll = 10s
"""


def run(lbd_path, *args, timeout=10):
    return subprocess.run([str(lbd_path), *args], capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_help(lbd_path):
    p = run(lbd_path, "--help")
    assert p.returncode == 0, p.stderr
    text = (p.stdout + p.stderr).decode()
    for opt in OPTIONS:
        assert opt in text, f"--help does not mention {opt}"
    assert p.stdout, "--help output should go to stdout"


def test_version(lbd_path):
    p = run(lbd_path, "--version")
    assert p.returncode == 0
    assert "0.1.0" in p.stdout.decode()


def test_check_config_good_file(lbd_path, tmp_path):
    conf = tmp_path / "good.conf"
    conf.write_text(GOOD_CONFIG)
    p = run(lbd_path, "--check-config", "--config", str(conf))
    assert p.returncode == 0, p.stderr.decode()


def test_check_config_flags_only(lbd_path):
    p = run(lbd_path, "--check-config", "--listen", "127.0.0.1:18080", "--backend",
            "127.0.0.1:18081", "--admin", "off", "--balance", "p2c", "--access-log", "off",
            "--set", "health.interval=200ms", "--set", "limits.max_body_size=1k",
            "--log-level", "debug")
    assert p.returncode == 0, p.stderr.decode()


def test_check_config_does_not_bind(lbd_path, tmp_path):
    """--check-config validates and exits: it must not need the port."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run(lbd_path, "--check-config", "--listen", f"127.0.0.1:{port}",
                "--backend", "127.0.0.1:18081", "--admin", "off")
    assert p.returncode == 0, p.stderr.decode()


BAD = [
    # (name, file text, key the message must name); the line is where the text differs
    ("unknown-key", GOOD_CONFIG.replace("retries = 2", "retriez = 2"), "retriez"),
    ("bad-duration", GOOD_CONFIG.replace("interval = 1s", "interval = soon"), "interval"),
    ("bad-balance", GOOD_CONFIG.replace("balance = round-robin", "balance = random-ish"),
     "balance"),
    ("bad-size", GOOD_CONFIG.replace("max_header_size = 16k", "max_header_size = 16q"),
     "max_header_size"),
    ("bad-number", GOOD_CONFIG.replace("fall = 3", "fall = three"), "fall"),
    ("negative", GOOD_CONFIG.replace("retries = 2", "retries = -1"), "retries"),
    ("bad-listen", GOOD_CONFIG.replace("listen = 127.0.0.1:18080", "listen = 127.0.0.1:99999"),
     "listen"),
    ("bad-expect", GOOD_CONFIG.replace("expect = 200-399", "expect = 399-200"), "expect"),
    ("bad-provider", GOOD_CONFIG.replace("provider = static", "provider = magic"), "provider"),
    ("bad-backend", GOOD_CONFIG.replace("127.0.0.1:18081,", "not-an-address,"), "backends"),
    ("bad-admin", GOOD_CONFIG.replace("admin = 127.0.0.1:19180", "admin = 0.0.0.0:19180"),
     "admin"),
    ("bad-cidr", GOOD_CONFIG.replace("networks = 127.0.0.0/8", "networks = 127.0.0.0/33"),
     "networks"),
    ("unknown-section", GOOD_CONFIG + "\n[nosuch]\nkey = 1\n", "nosuch"),
    ("no-equals", GOOD_CONFIG.replace("rise = 2", "rise 2"), None),
    ("unterminated-section", GOOD_CONFIG.replace("[health]", "[health"), None),
]


def error_line(text, original):
    """1-based number of the first line where text differs from original."""
    a, b = text.splitlines(), original.splitlines()
    for i, line in enumerate(a):
        if i >= len(b) or line != b[i]:
            return i + 1
    raise AssertionError("no difference")


@pytest.mark.parametrize("name,text,key", BAD, ids=[b[0] for b in BAD])
def test_check_config_bad_file(lbd_path, tmp_path, name, text, key):
    conf = tmp_path / f"{name}.conf"
    conf.write_text(text)
    line = error_line(text, GOOD_CONFIG)
    if name == "unknown-section":
        line = text.splitlines().index("key = 1") + 1
        line_options = {line, line - 1}  # the section header or its key
    else:
        line_options = {line}
    p = run(lbd_path, "--check-config", "--config", str(conf))
    err = p.stderr.decode()
    assert p.returncode == 78, (p.returncode, err)
    assert str(conf) in err, f"stderr does not name the file: {err!r}"
    assert any(re.search(rf"(?<![0-9]){n}(?![0-9])", err) for n in line_options), \
        f"stderr does not name line {line_options}: {err!r}"
    if key:
        assert key in err, f"stderr does not name {key}: {err!r}"


@pytest.mark.parametrize("setting", ["health.interval=abc", "limits.max_body_size=-5",
                                     "nosuch.key=1", "health.nosuch=1", "lbd.balance=bogus",
                                     "noequals"])
def test_check_config_bad_set(lbd_path, setting):
    p = run(lbd_path, "--check-config", "--listen", "127.0.0.1:18080", "--backend",
            "127.0.0.1:18081", "--set", setting)
    assert p.returncode in (2, 78), (p.returncode, p.stderr)
    assert p.returncode == 78 or setting == "noequals"
    assert setting.split("=")[0].split(".")[-1].encode() in p.stderr, p.stderr


def test_flags_override_file(lbd_path, tmp_path):
    conf = tmp_path / "o.conf"
    conf.write_text(GOOD_CONFIG.replace("balance = round-robin", "balance = bogus"))
    p = run(lbd_path, "--check-config", "--config", str(conf), "--balance", "p2c")
    # The bad value in the file is still reported, or the flag wins; both
    # are fine as long as the file's problem is not silently ignored.
    assert p.returncode in (0, 78)
    conf.write_text(GOOD_CONFIG)
    p = run(lbd_path, "--check-config", "--config", str(conf), "--balance", "bogus")
    assert p.returncode == 78


def test_missing_config_file(lbd_path, tmp_path):
    p = run(lbd_path, "--check-config", "--config", str(tmp_path / "absent.conf"))
    assert p.returncode != 0
    assert str(tmp_path / "absent.conf") in p.stderr.decode()


@pytest.mark.parametrize("args", [["--frobnicate"], ["--listen"], ["--balance"], ["--set"],
                                  ["positional"], ["-z"], ["--help=yes"]])
def test_bad_command_line(lbd_path, args):
    p = run(lbd_path, *args, timeout=5)
    assert p.returncode == 2, (args, p.returncode, p.stderr)
    assert p.stderr, "a usage error should be explained on stderr"


def test_bad_log_level(lbd_path):
    p = run(lbd_path, "--check-config", "--listen", "127.0.0.1:18080", "--backend",
            "127.0.0.1:18081", "--log-level", "loud")
    assert p.returncode in (2, 78), (p.returncode, p.stderr)


def test_bad_balance_flag_is_config_error(lbd_path):
    p = run(lbd_path, "--check-config", "--listen", "127.0.0.1:18080", "--backend",
            "127.0.0.1:18081", "--balance", "sideways")
    assert p.returncode in (2, 78)


def test_cannot_bind_exits_1(lbd_path, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run(lbd_path, "--listen", f"127.0.0.1:{port}", "--backend", "127.0.0.1:18081",
                "--admin", "off", timeout=10)
    assert p.returncode == 1, (p.returncode, p.stderr)

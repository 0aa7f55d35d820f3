"""The systemd units: systemd-analyze verify is clean and security exposure is at most 1.5, and the
settings the daemons rely on are there."""

import configparser
import os
import re

import pytest

from deploytest import LBD, SOURCE, UNITS, WEBD, need, run

MAX_EXPOSURE = 1.5


def unit_path(unit):
    return os.path.join(SOURCE, "systemd", unit)


def service_settings(unit):
    """Returns {key: [values]} of the unit's [Service] section (repeated keys kept in order)."""
    settings = {}
    section = None
    with open(unit_path(unit), encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                section = line
                continue
            key, _, value = line.partition("=")
            settings.setdefault((section, key), []).append(value)
    return settings


def with_built_binaries(unit, tmp_path):
    """A copy of <unit> whose ExecStart runs the built binaries (verify needs them to exist)."""
    with open(unit_path(unit), encoding="utf-8") as f:
        text = f.read()
    text = text.replace("/usr/local/sbin/lbd", LBD).replace("/usr/local/sbin/webd", WEBD)
    assert "/usr/local/sbin" not in text
    path = tmp_path / unit
    path.write_text(text)
    return path


@pytest.mark.parametrize("unit", UNITS)
def test_verify(unit, tmp_path):
    analyze = need("systemd-analyze")
    path = with_built_binaries(unit, tmp_path)
    r = run([analyze, "verify", str(path)])
    # verify exits 0 on unknown keys and bad values, only warning: any output is a failure.
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_security_exposure(unit):
    analyze = need("systemd-analyze")
    r = run([analyze, "security", "--offline=true", "--no-pager", unit_path(unit)])
    assert r.returncode == 0, r.stderr
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", r.stdout + r.stderr)
    assert m, "no 'Overall exposure level' line:\n" + r.stdout + r.stderr
    exposure = float(m.group(1))
    assert exposure <= MAX_EXPOSURE, f"{unit}: exposure {exposure} > {MAX_EXPOSURE}\n{r.stdout}"


@pytest.mark.parametrize("unit,config", [("lbd.service", "/etc/lbd/lbd.conf"),
                                         ("lbd-relay.service", "/etc/lbd/relay.conf")])
def test_lbd_units(unit, config):
    s = service_settings(unit)
    svc = "[Service]"
    assert s[(svc, "Type")] == ["notify"]
    assert s[(svc, "NotifyAccess")] == ["main"]
    assert s[(svc, "Restart")] == ["on-failure"]
    assert s[(svc, "WatchdogSec")]
    assert s[(svc, "ExecStart")] == [f"/usr/local/sbin/lbd --config {config}"]
    assert s[(svc, "ExecReload")] == ["/bin/kill -HUP $MAINPID"]
    if unit == "lbd.service":
        # Local backends are the unit's processes: they outlive lbd's drain, then go.
        assert s[(svc, "KillMode")] == ["mixed"]
        # [ec2] previous_settings lives there (the installer writes it), kept from everyone else.
        assert s[(svc, "StateDirectory")] == ["lbd"]
        assert s[(svc, "StateDirectoryMode")] == ["0700"]
    assert s[(svc, "User")] == ["lbd"]
    # Port 80 as a non-root user: the capability, and no private user namespace (which would void it).
    assert s[(svc, "AmbientCapabilities")] == ["CAP_NET_BIND_SERVICE"]
    assert s[(svc, "CapabilityBoundingSet")] == ["CAP_NET_BIND_SERVICE"]
    assert (svc, "PrivateUsers") not in s or s[(svc, "PrivateUsers")] == ["no"]
    assert (svc, "PrivateNetwork") not in s
    families = " ".join(s[(svc, "RestrictAddressFamilies")]).split()
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= set(families)
    assert (svc, "IPAddressDeny") not in s  # EC2's endpoint and IMDS (169.254.169.254) must be reachable


def test_webd_unit():
    s = service_settings("webd.service")
    svc = "[Service]"
    assert s[(svc, "Type")] == ["notify"]
    assert s[(svc, "NotifyAccess")] == ["main"]
    assert s[(svc, "Restart")] == ["on-failure"]
    assert s[(svc, "WatchdogSec")]
    assert s[(svc, "ExecStart")] == ["/usr/local/sbin/webd --config /etc/webd/webd.conf"]
    assert s[(svc, "User")] == ["webd"]
    assert s[(svc, "StateDirectory")] == ["webd"]
    assert "postgresql.service" in " ".join(s[("[Unit]", "After")]).split()
    families = " ".join(s[(svc, "RestrictAddressFamilies")]).split()
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= set(families)  # the socket in /run/postgresql or TCP
    # ProtectSystem=strict leaves /run readable, where the PostgreSQL socket lives.
    assert s[(svc, "ProtectSystem")] == ["strict"]
    assert (svc, "InaccessiblePaths") not in s


def test_units_parse_as_ini():
    for unit in UNITS:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str
        parser.read(unit_path(unit))
        assert parser.sections() == ["Unit", "Service", "Install"], unit

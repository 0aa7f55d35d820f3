"""scripts/deps.sh: the package groups and deps_missing, with dpkg-query stubbed."""

import os
import textwrap

from deploytest import SOURCE, run

DEPS = os.path.join(SOURCE, "scripts", "deps.sh")


def bash(script, path_prefix=None):
    env = dict(os.environ)
    if path_prefix:
        env["PATH"] = path_prefix + ":" + env["PATH"]
    return run(["bash", "-c", f"set -u; source {DEPS}; {script}"], env=env)


def fake_dpkg(tmp_path, installed):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    stub = bindir / "dpkg-query"
    stub.write_text(textwrap.dedent(f"""\
        #!/bin/bash
        pkg=${{!#}}
        for p in {' '.join(installed)}; do
            if [[ $p == "$pkg" ]]; then printf installed; exit 0; fi
        done
        exit 1
        """))
    stub.chmod(0o755)
    return str(bindir)


def test_groups():
    r = bash("deps_group_packages build")
    assert r.returncode == 0
    build = r.stdout.split()
    for pkg in ("build-essential", "meson", "ninja-build", "pkg-config", "libevent-dev",
                "libcurl4-openssl-dev", "libssl-dev", "libcjson-dev", "libsystemd-dev",
                "libhttp-parser-dev", "libxml2-dev", "libpq-dev", "libargon2-dev"):
        assert pkg in build
    assert bash("deps_group_packages run").stdout.split() == ["ca-certificates", "curl", "openssl", "procps"]
    web = bash("deps_group_packages web").stdout.split()
    assert web in (["postgresql-15"], ["postgresql"])


def test_unknown_group_fails():
    r = bash("deps_missing build nosuchgroup")
    assert r.returncode != 0
    assert "nosuchgroup" in r.stderr
    r = bash("deps_ensure nosuchgroup")
    assert r.returncode != 0
    assert "nosuchgroup" in r.stderr


def test_missing_lists_what_is_not_installed(tmp_path):
    path = fake_dpkg(tmp_path, ["curl", "meson"])
    r = bash("deps_missing run build run", path)
    assert r.returncode == 0, r.stderr
    missing = r.stdout.split()
    assert "ca-certificates" in missing and "libevent-dev" in missing
    assert "curl" not in missing and "meson" not in missing
    assert len(missing) == len(set(missing))


def test_nothing_missing_installs_nothing(tmp_path):
    everything = bash("deps_group_packages build; deps_group_packages run").stdout.split()
    path = fake_dpkg(tmp_path, everything)
    r = bash("deps_missing build run", path)
    assert r.returncode == 0 and r.stdout == ""
    r = bash("deps_ensure build run", path)
    assert r.returncode == 0
    assert "installed" in r.stderr

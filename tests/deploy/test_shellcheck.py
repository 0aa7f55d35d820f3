"""Every shell script of the installer and of scripts/ passes shellcheck -x."""

import os

import pytest

from deploytest import SOURCE, need, run


def shell_scripts():
    found = []
    for top in ("installer", "scripts"):
        for dirpath, _, names in os.walk(os.path.join(SOURCE, top)):
            for name in sorted(names):
                path = os.path.join(dirpath, name)
                with open(path, "rb") as f:
                    first = f.readline()
                if name.endswith(".sh") or (first.startswith(b"#!") and b"sh" in first):
                    found.append(os.path.relpath(path, SOURCE))
    return sorted(found)


def test_scripts_are_found():
    scripts = shell_scripts()
    for expected in ("installer/installer.sh", "scripts/deps.sh", "scripts/cloud-init-backend.sh",
                     "scripts/cloud-init-web.sh"):
        assert expected in scripts


@pytest.mark.parametrize("script", shell_scripts())
def test_shellcheck(script):
    shellcheck = need("shellcheck")
    r = run([shellcheck, "-x", script], cwd=SOURCE)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("script", ["installer/installer.sh", "scripts/cloud-init-backend.sh",
                                    "scripts/cloud-init-web.sh"])
def test_strict_mode_and_executable(script):
    path = os.path.join(SOURCE, script)
    assert os.access(path, os.X_OK), f"{script} is not executable"
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text.startswith("#!/bin/bash\n")
    assert "\nset -euo pipefail\n" in text


def test_backend_user_data_upstream_line():
    """lbd fills in {{upstream}}; the line must be exactly UPSTREAM={{upstream}}, unquoted, once."""
    with open(os.path.join(SOURCE, "scripts", "cloud-init-backend.sh"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines.count("UPSTREAM={{upstream}}") == 1
    assert sum("{{upstream}}" in line for line in lines) == 1

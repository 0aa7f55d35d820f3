"""Shared helpers of the deployment tests: where the source, the build and the programs are."""

import os
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("LBD_SOURCE_ROOT") or os.path.normpath(os.path.join(HERE, "..", ".."))
BUILD = os.environ.get("LBD_BUILD_ROOT") or os.path.join(SOURCE, "build")
PREFIX = os.environ.get("LBD_PREFIX") or "/usr/local"
LBD = os.environ.get("LBD_BINARY") or os.path.join(BUILD, "lbd", "lbd")
WEBD = os.environ.get("WEBD_BINARY") or os.path.join(BUILD, "webd", "webd")
INSTALLER = os.path.join(SOURCE, "installer", "installer.sh")
UNITS = ("lbd.service", "lbd-relay.service", "webd.service")


def need(program):
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed")
    return path


def run(args, **kwargs):
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 240)
    return subprocess.run(args, check=False, **kwargs)

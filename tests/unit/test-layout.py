"""The tree's libraries as the build links them (README, "Source tour"): lbctl links common and the AWS
client (aws/) only, never lbd's core, the daemon library, libsystemd, the HTTP engine or http_parser; and
the AWS client and the HTTP engine reach into no program's code nor into each other.

The link lines come from the build's own ninja manifest (`ninja -t commands`), because the binary alone
can't show it: with --as-needed a library linked but unused leaves no trace in `ldd`.

Usage: test-layout.py NINJA BUILD_ROOT"""

import re
import subprocess
import sys


def link_line(ninja, build, target):
    out = subprocess.run([ninja, "-C", build, "-t", "commands", target], check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()
    assert out, f"no build command for {target}"
    return out[-1].split()


def defined(build, archive):
    out = subprocess.run(["nm", "-g", "--defined-only", "--format=posix", f"{build}/{archive}"],
                         check=True, capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line and not line.endswith(":")}


def undefined(build, archive):
    out = subprocess.run(["nm", "--undefined-only", "--format=posix", f"{build}/{archive}"],
                         check=True, capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line and not line.endswith(":")}


def check_lbctl(ninja, build):
    args = link_line(ninja, build, "lbctl/lbctl")
    for wanted in ("common/libcommon.a", "aws/libaws.a"):
        assert wanted in args, f"lbctl does not link {wanted}: {' '.join(args)}"
    refused = re.compile(r"liblbd_core\.a$|libdaemon\.a$|libhttp\.a$|systemd|http_parser")
    bad = [a for a in args if refused.search(a)]
    assert not bad, f"lbctl links {bad}; it must link common and aws only"


def check_libraries(build):
    programs = defined(build, "lbd/liblbd_core.a") | defined(build, "common/libdaemon.a")
    aws = defined(build, "aws/libaws.a")
    http = defined(build, "http/libhttp.a")
    for lib, others in (("aws/libaws.a", programs | http), ("http/libhttp.a", programs | aws)):
        reached = sorted(undefined(build, lib) & others)
        assert not reached, f"{lib} uses {reached}, defined outside common and its own folder"


def main():
    ninja, build = sys.argv[1], sys.argv[2]
    check_lbctl(ninja, build)
    check_libraries(build)
    print("ok: lbctl links common and aws only; aws/ and http/ use nothing of lbd, the daemon or each other")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)

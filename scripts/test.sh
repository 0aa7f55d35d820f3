#!/bin/bash
# Builds the project with meson and runs its tests, then prints one summary line:
#   N passed, N failed[, N skipped]
# Exit status: 0 when every test passed; 1 when a test failed, the build failed or no test ran;
# 2 when build dependencies are missing and can't be installed (not root).
#
# Usage: scripts/test.sh [--sanitize] [--tsan] [--fuzz] [--compiler gcc|clang] [--suite NAME]... [--threads N]
#                       [--jobs N] [--valgrind] [--no-install] [--no-build] [--log NAME]
#   --sanitize        build in build-sanitize/ with AddressSanitizer and UndefinedBehaviorSanitizer
#   --tsan            build in build-tsan/ with ThreadSanitizer (a race stops lbd) and run the integration
#                     suite (unless --suite says otherwise) with lbd's [lbd] threads = 2 (unless --threads)
#   --threads N       integration and control tests run lbd with [lbd] threads = N (LBD_TEST_THREADS; the
#                     relays lbd and the agent start stay at 1, as on a backend)
#   --fuzz            build the libFuzzer targets with clang in build-fuzz/ (ASan + UBSan) and run the
#                     'fuzz' suite: the corpus replays and a short fuzzing run of each target
#   --compiler NAME   use gcc or clang (a build dir made with another compiler is wiped); default: $CC or
#                     meson's choice
#   --suite NAME      run only that meson test suite (unit, integration, ...); may be repeated
#   --jobs N          run N tests at a time (default 2; tests meson marks is_parallel false run alone)
#   --valgrind        run each test under valgrind (best with --suite unit)
#   --no-install      don't check or install the Debian packages
#   --no-build        don't configure or build: run the tests on the build dir as it is (a run beside another
#                     one on the same build dir, which built it; pair it with --log)
#   --log NAME        meson's test log is meson-logs/NAME.json (default testlog), so that two runs on one
#                     build dir at once keep their results apart
set -euo pipefail

# Debian packages needed to build and test everything. "a|b" means either one will do (a is installed).
PACKAGES=(
    build-essential
    meson
    ninja-build
    pkg-config
    clang
    libclang-rt-14-dev
    libevent-dev
    libcurl4-openssl-dev
    libssl-dev
    libcjson-dev
    libsystemd-dev
    libhttp-parser-dev
    libcmocka-dev
    libxml2-dev
    libpq-dev
    libargon2-dev
    postgresql-15
    postgresql-client-15
    python3
    python3-pytest
    python3-requests
    slowhttptest
    python3-boto3
    python3-jwt
    wrk
    haproxy
    "nginx-light|nginx"
    apache2-utils
    procps
    iproute2
    curl
    openssl
    valgrind
    shellcheck
    debootstrap
    systemd-container
    chromium
    chromium-driver
    python3-selenium
    git
)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() {
    echo "test.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

sanitize=false
tsan=false
threads=""
jobs=2
fuzz=false
valgrind=false
install=true
do_build=true
logbase=testlog
compiler=""
suites=()

while (($# > 0)); do
    case "$1" in
        --sanitize) sanitize=true ;;
        --tsan) tsan=true ;;
        --threads)
            (($# >= 2)) || die "--threads needs a number"
            threads=$2
            shift
            ;;
        --threads=*) threads=${1#*=} ;;
        --jobs)
            (($# >= 2)) || die "--jobs needs a number"
            jobs=$2
            shift
            ;;
        --jobs=*) jobs=${1#*=} ;;
        --fuzz) fuzz=true ;;
        --valgrind) valgrind=true ;;
        --no-install) install=false ;;
        --no-build) do_build=false ;;
        --log)
            (($# >= 2)) || die "--log needs a name"
            logbase=$2
            shift
            ;;
        --log=*) logbase=${1#*=} ;;
        --compiler)
            (($# >= 2)) || die "--compiler needs gcc or clang"
            compiler=$2
            shift
            ;;
        --compiler=*) compiler=${1#*=} ;;
        --suite)
            (($# >= 2)) || die "--suite needs a name"
            suites+=("$2")
            shift
            ;;
        --suite=*) suites+=("${1#*=}") ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done

[[ -z $threads || $threads =~ ^[1-9][0-9]?$ ]] || die "--threads must be a number from 1 to 64, not '$threads'"
[[ $jobs =~ ^[1-9]$ ]] || die "--jobs must be a number from 1 to 9, not '$jobs'"
log_name_re='^[a-z0-9][a-z0-9-]{0,39}$'
[[ $logbase =~ $log_name_re ]] || die "--log must be a short name (a-z, 0-9, -), not '$logbase'"
! ($sanitize && $tsan) || die "--sanitize and --tsan need separate builds: run them one after the other"

case "$compiler" in
    "" | gcc | clang) ;;
    *) die "--compiler must be gcc or clang, not '$compiler'" ;;
esac

# Prints the packages of PACKAGES that are not installed (the first name of each alternative).
missing_packages() {
    local spec alt
    local -a alts
    for spec in "${PACKAGES[@]}"; do
        IFS='|' read -ra alts <<<"$spec"
        for alt in "${alts[@]}"; do
            # shellcheck disable=SC2016 # ${db:Status-Status} is dpkg-query's field, not a shell variable
            if [[ $(dpkg-query -W -f='${db:Status-Status}' "$alt" 2>/dev/null) == installed ]]; then
                continue 2
            fi
        done
        echo "${alts[0]}"
    done
}

install_packages() {
    local -a missing
    if ! command -v dpkg-query >/dev/null; then
        echo "test.sh: not a Debian system, not checking packages" >&2
        return 0
    fi
    mapfile -t missing < <(missing_packages)
    ((${#missing[@]} > 0)) || return 0

    if ((EUID != 0)); then
        echo "test.sh: missing Debian packages: ${missing[*]}" >&2
        echo "test.sh: install them as root: apt-get install --no-install-recommends ${missing[*]}" >&2
        exit 2
    fi
    echo "test.sh: installing ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
}

# Prints the id ("gcc", "clang") of the C compiler a configured build dir uses, or nothing. meson logs
# it as "C compiler for the host machine: cc (gcc 12.2.0 ...)" at every (re)configuration.
configured_compiler() {
    sed -n 's/^C compiler for the host machine: .* (\([a-z]*\) .*/\1/p' "$1/meson-logs/meson-log.txt" \
        2>/dev/null | tail -n 1
}

# Prints "PASSED FAILED SKIPPED" from a meson testlog.json (one JSON object per line), and the names
# of the failed tests on stderr.
count_results() {
    python3 - "$1" <<'EOF'
import json
import sys

passed = failed = skipped = 0
with open(sys.argv[1], encoding="utf-8", errors="replace") as log:
    for line in log:
        try:
            test = json.loads(line)
        except ValueError:
            continue
        result = test.get("result")
        if result in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif result == "SKIP":
            skipped += 1
        elif result in ("FAIL", "TIMEOUT", "ERROR", "UNEXPECTEDPASS"):
            failed += 1
            print(f"test.sh: {result}: {test.get('name', '?')}", file=sys.stderr)
print(passed, failed, skipped)
EOF
}

if $install; then
    install_packages
fi

cd "$ROOT"

builddir=build
setup_args=(-Dtests=true)
if $sanitize; then
    builddir=build-sanitize
    setup_args+=("-Db_sanitize=address,undefined" -Db_lundef=false)
    export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=1:print_stacktrace=1}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
fi

if $tsan; then
    builddir=build-tsan
    setup_args+=("-Db_sanitize=thread" -Db_lundef=false)
    export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:second_deadlock_stack=1}"
    ((${#suites[@]} > 0)) || suites=(integration)
    [[ -n $threads ]] || threads=2
fi
if [[ -n $threads ]]; then
    export LBD_TEST_THREADS=$threads
fi

if $fuzz; then
    builddir=build-fuzz
    compiler=clang
    setup_args+=(-Dfuzz=true "-Db_sanitize=address,undefined" -Db_lundef=false)
    ((${#suites[@]} > 0)) || suites=(fuzz)
    export ASAN_OPTIONS="${ASAN_OPTIONS:-halt_on_error=1:abort_on_error=1:detect_leaks=1}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
fi

if [[ -n $compiler ]]; then
    export CC=$compiler
fi
wanted_compiler=""
case "${CC:-}" in
    *clang*) wanted_compiler=clang ;;
    *gcc*) wanted_compiler=gcc ;;
esac

# Configure: reuse the build dir when we can, wipe it only when the compiler changes or it is broken.
status=0
if ! $do_build; then
    [[ -f $builddir/meson-private/coredata.dat ]] || die "--no-build: $builddir is not built yet"
elif [[ -f $builddir/meson-private/coredata.dat ]]; then
    current=$(configured_compiler "$builddir")
    if [[ -n $wanted_compiler && -n $current && $current != "$wanted_compiler" ]]; then
        echo "test.sh: $builddir was configured with $current, wiping it for $wanted_compiler"
        meson setup --wipe "$builddir" "${setup_args[@]}" || status=$?
    elif ! meson setup --reconfigure "$builddir" "${setup_args[@]}"; then
        echo "test.sh: reconfiguring $builddir failed, wiping it"
        meson setup --wipe "$builddir" "${setup_args[@]}" || status=$?
    fi
else
    [[ ! -e $builddir ]] || rm -rf -- "${ROOT:?}/$builddir"
    meson setup "$builddir" "${setup_args[@]}" || status=$?
fi
if ((status != 0)); then
    echo "test.sh: error: meson setup failed" >&2
    echo "0 passed, 0 failed"
    exit 1
fi

# The fuzz and TSan runs build only what their tests need (meson test does, exiting with 125 when that build
# fails): the libFuzzer targets and the libraries under them, or lbd and lbctl for the integration suite, not
# every daemon, client and test of the tree.
test_args=(-C "$builddir" --print-errorlogs --num-processes "$jobs" --logbase "$logbase")
if ! $do_build; then
    test_args+=(--no-rebuild)
elif $fuzz || $tsan; then
    :
elif meson compile -C "$builddir"; then
    test_args+=(--no-rebuild)
else
    echo "test.sh: error: the build failed" >&2
    echo "0 passed, 0 failed"
    exit 1
fi

for suite in "${suites[@]}"; do
    test_args+=(--suite "$suite")
done
# The fresh-machine suite (the installer in a debootstrapped machine) runs only when named: the boot
# suite's journey installs the LB host and the web host in booted machines the same way, and more.
if ((${#suites[@]} == 0)); then
    test_args+=(--no-suite fresh-machine)
fi
if $valgrind; then
    test_args+=(--wrapper "valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite")
fi

testlog=$builddir/meson-logs/$logbase.json
rm -f "$testlog"
meson_status=0
meson test "${test_args[@]}" || meson_status=$?

passed=0
failed=0
skipped=0
if [[ -f $testlog ]] && counts=$(count_results "$testlog"); then
    read -r passed failed skipped <<<"$counts"
fi

status=0
if ((failed > 0)); then
    status=1
elif ($fuzz || $tsan) && ((meson_status == 125)); then
    echo "test.sh: error: the build failed" >&2
    status=1
elif ((meson_status != 0)); then
    echo "test.sh: error: meson test exited with status $meson_status" >&2
    status=1
elif ((passed + failed == 0)); then
    echo "test.sh: error: no test ran" >&2
    status=1
fi

summary="$passed passed, $failed failed"
if ((skipped > 0)); then
    summary+=", $skipped skipped"
fi
echo "$summary"
exit "$status"

#!/bin/bash
# Runs the whole system on this machine, no cloud account: a throwaway PostgreSQL 15 cluster, webd on it,
# and lbd keeping three local relay backends (lbd in relay mode) in front of webd. Then it prints the URL,
# client examples and the pool's status, and runs until Ctrl-C or SIGTERM, which stops everything it
# started and removes its working directory.
#
# Usage: scripts/demo.sh [--port N] [--build-dir DIR] [--keep] [--no-packages] [--no-build] [--timeout S]
#   --port N          lbd's port on 127.0.0.1 (default 8000)
#   --build-dir DIR   use this existing meson build instead of building into build-demo/
#   --keep            keep the working directory (logs, configuration, database) after the stop
#   --no-packages     don't check or install the Debian packages
#   --no-build        don't compile (the build directory must already hold the programs)
#   --timeout S       how long to wait for each program to become ready (default 60)
#   -h, --help        show this help
#
# As root it installs the missing Debian packages (scripts/deps.sh, groups build and web) and runs
# PostgreSQL as the `postgres` user; otherwise everything runs as the invoking user. Everything listens on
# 127.0.0.1 only: lbd on --port, its admin API, webd and PostgreSQL on free ports. PG_BIN overrides
# the PostgreSQL binaries' directory (/usr/lib/postgresql/15/bin).
#
# Exit status: 0 stopped by Ctrl-C or SIGTERM; 1 a start failed or a program died; 2 bad usage.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
DESIRED=3
RELAY_PORTS=8 # the block of ports the relays may use (replacements can overlap the ones they replace)

port=8000
builddir=""
keep=false
packages=true
build=true
timeout=60

# What has been started, for the stop: set as each part comes up.
workdir=""
pg_started=false
webd_pid=""
lbd_pid=""
sleep_pid=""
exit_status=1
stopping=false

say() {
    echo "demo: $*"
}

warn() {
    echo "demo: $*" >&2
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

usage_error() {
    warn "$*"
    warn "see --help"
    exit 2
}

is_uint() {
    [[ $1 =~ ^[0-9]+$ ]] && ((${#1} <= 6))
}

while (($# > 0)); do
    case "$1" in
        --port | --build-dir | --timeout)
            (($# >= 2)) || usage_error "$1 needs a value"
            case "$1" in
                --port) port=$2 ;;
                --build-dir) builddir=$2 ;;
                --timeout) timeout=$2 ;;
            esac
            shift
            ;;
        --port=*) port=${1#*=} ;;
        --build-dir=*) builddir=${1#*=} ;;
        --timeout=*) timeout=${1#*=} ;;
        --keep) keep=true ;;
        --no-packages) packages=false ;;
        --no-build) build=false ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) usage_error "unknown option '$1'" ;;
    esac
    shift
done

if ! is_uint "$port" || ((10#$port < 1 || 10#$port > 65535)); then
    usage_error "--port must be a port number (1-65535), not '$port'"
fi
if ! is_uint "$timeout" || ((10#$timeout < 1)); then
    usage_error "--timeout must be a number of seconds, not '$timeout'"
fi
port=$((10#$port))
timeout=$((10#$timeout))

# ---- processes -------------------------------------------------------------------------------------

# True when PID exists and is not a zombie.
alive() {
    local stat
    [[ -n $1 && -r /proc/$1/stat ]] || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ -n $stat && ${stat:0:1} != Z && ${stat:0:1} != X ]]
}

# True when PID is alive and its command line contains TEXT.
cmdline_has() {
    local pid=$1 text=$2 cmd
    alive "$pid" || return 1
    cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
    [[ $cmd == *"$text"* ]]
}

# Waits up to SECONDS for every PID to be gone (or a zombie); false if one is still there.
wait_gone() {
    local seconds=$1 pid i
    shift
    for ((i = 0; i < seconds * 10; i++)); do
        for pid in "$@"; do
            if alive "$pid"; then
                sleep 0.1
                continue 2
            fi
        done
        return 0
    done
    return 1
}

# Stops one child of this shell: SIGTERM, up to SECONDS, then SIGKILL; then reaps it.
stop_child() {
    local name=$1 pid=$2 seconds=$3
    [[ -n $pid ]] || return 0
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_gone "$seconds" "$pid"; then
            warn "$name (pid $pid) did not stop within ${seconds}s, killing it"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone 5 "$pid" || warn "$name (pid $pid) is still there after SIGKILL"
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

# Prints the pids of the relays: those the state file lists, and any other process started with the
# relays' configuration file (one launched just before lbd stopped could be missing from the file). Each
# is checked through /proc/PID/cmdline to be one of this demo's relays.
relay_pids() {
    local marker=$workdir/relay.conf index pid file
    {
        if [[ -f $workdir/local.state ]]; then
            while read -r index pid _; do
                if [[ $index =~ ^[0-9]+$ && $pid =~ ^[0-9]+$ ]]; then
                    echo "$pid"
                fi
            done <"$workdir/local.state"
        fi
        grep -lsF -- "$marker" /proc/[0-9]*/cmdline | while read -r file; do
            file=${file#/proc/}
            echo "${file%/cmdline}"
        done
    } | sort -un | while read -r pid; do
        if cmdline_has "$pid" "$marker"; then
            echo "$pid"
        fi
    done
}

stop_relays() {
    local -a pids
    local pid
    mapfile -t pids < <(relay_pids)
    ((${#pids[@]} > 0)) || return 0
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    if ! wait_gone 10 "${pids[@]}"; then
        for pid in "${pids[@]}"; do
            if cmdline_has "$pid" "$workdir/relay.conf"; then
                warn "relay (pid $pid) did not stop within 10s, killing it"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done
        wait_gone 5 "${pids[@]}" || warn "a relay is still there after SIGKILL"
    fi
}

# The PostgreSQL tools run as the cluster's owner: `postgres` when root (initdb refuses root), else us.
pg() {
    local tool=$1
    shift
    if ((EUID == 0)); then
        (cd "$workdir/pg" && runuser -u postgres -- "$PG_BIN/$tool" "$@")
    else
        "$PG_BIN/$tool" "$@"
    fi
}

postmaster_pid() {
    local pid
    [[ -r $workdir/pg/data/postmaster.pid ]] || return 1
    read -r pid <"$workdir/pg/data/postmaster.pid" || return 1
    [[ $pid =~ ^[0-9]+$ ]] && echo "$pid"
}

stop_postgres() {
    local pid
    $pg_started || return 0
    pg_started=false
    # No postmaster.pid: initdb ran but the server never started.
    pid=$(postmaster_pid) || return 0
    if ! pg pg_ctl -D "$workdir/pg/data" -m fast -w -t 30 stop >>"$workdir/logs/setup.log" 2>&1; then
        warn "pg_ctl stop failed (see $workdir/logs/setup.log)"
        if cmdline_has "$pid" "$workdir/pg/data"; then
            pg pg_ctl -D "$workdir/pg/data" -m immediate -w -t 10 stop >>"$workdir/logs/setup.log" 2>&1 ||
                true
        fi
    fi
    if ! wait_gone 10 "$pid"; then
        warn "PostgreSQL (pid $pid) is still running"
    fi
}

# Stops everything that was started, in the reverse order, and removes the working directory.
stop_all() {
    $stopping && return 0
    stopping=true
    trap '' INT TERM HUP
    if [[ -n $sleep_pid ]]; then
        kill -TERM "$sleep_pid" 2>/dev/null || true
        wait "$sleep_pid" 2>/dev/null || true
    fi
    [[ -n $workdir ]] || return 0
    say "stopping"
    stop_child lbd "$lbd_pid" 15
    stop_relays
    stop_child webd "$webd_pid" 15
    stop_postgres
    if $keep; then
        say "kept $workdir (logs in $workdir/logs)"
    else
        rm -rf -- "$workdir"
    fi
    say "stopped"
}

on_exit() {
    stop_all
    exit "$exit_status"
}

on_signal() {
    exit_status=0
    exit 0
}

trap on_exit EXIT
trap on_signal INT TERM HUP

# ---- start-up helpers ------------------------------------------------------------------------------------

# Prints the last lines of each log, for a failure.
show_logs() {
    local log
    for log in "$workdir"/logs/*.log; do
        [[ -s $log ]] || continue
        warn "---- last lines of $log ----"
        tail -n 20 "$log" >&2 || true
    done
}

# Says what failed, after the logs' last lines, and exits (the EXIT trap stops what was started).
fail() {
    if [[ -n $workdir && -d $workdir/logs ]]; then
        show_logs
        warn "----"
    fi
    warn "error: $*"
    exit_status=1
    exit 1
}

# True when something on this machine has a TCP socket on PORT (listening or not, IPv4 or IPv6).
port_in_use() {
    local hex
    hex=$(printf ':%04X' "$1")
    awk -v p="$hex" 'FNR > 1 && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# The ports handed out (set by free_port) and the list of them.
pg_port=""
web_port=""
admin_port=""
base_port=""
taken_ports=" "

# Sets the variable named VAR to a free port (or the first of COUNT consecutive free ports) not handed out
# before.
free_port() {
    local var=$1 count=${2:-1} try base p low
    # Below the kernel's range for outgoing connections, which could take a port between the check and
    # the bind, and below 20000: the test suite's control tests, which may run beside the demo, own the
    # ports from there (tests/helpers/testnet.py).
    low=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null) || low=""
    [[ $low =~ ^[0-9]+$ ]] && ((low > 10000 + count)) || low=32768
    ((low <= 20000)) || low=20000
    for ((try = 0; try < 200; try++)); do
        base=$((10000 + RANDOM % (low - 10000 - count)))
        for ((p = base; p < base + count; p++)); do
            if port_in_use "$p" || [[ $taken_ports == *" $p "* ]]; then
                continue 2
            fi
        done
        for ((p = base; p < base + count; p++)); do
            taken_ports+="$p "
        done
        printf -v "$var" '%s' "$base"
        return 0
    done
    fail "no free port found on 127.0.0.1"
}

# Prints the HTTP status code of GET PATH on 127.0.0.1:PORT, or fails. A subshell: a write to a connection
# closed under it (SIGPIPE) ends only the subshell.
http_status() (
    local hport=$1 hpath=$2 line
    exec 3<>"/dev/tcp/127.0.0.1/$hport" || exit 1
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$hpath" "$hport" >&3 || exit 1
    read -r -t 3 line <&3 || exit 1
    line=${line%$'\r'}
    [[ $line =~ ^HTTP/1\.[01]\ ([0-9]{3}) ]] || exit 1
    echo "${BASH_REMATCH[1]}"
)

# Prints the number of healthy backends lbd reports, or fails.
healthy_backends() {
    local json
    json=$("$lbctl" --admin "127.0.0.1:$admin_port" --timeout 2 --json 2>/dev/null) || return 1
    json=$(tr -d ' \n\t' <<<"$json")
    [[ $json =~ \"healthy\":([0-9]+) ]] || return 1
    echo "${BASH_REMATCH[1]}"
}

# Fails naming the program if NAME's PID has exited.
check_alive() {
    local name=$1 pid=$2 log=$3
    alive "$pid" || fail "$name exited during the start (its log: $log)"
}

# ---- packages and build ---------------------------------------------------------------------------------

if $packages; then
    [[ -f $ROOT/scripts/deps.sh ]] || fail "$ROOT/scripts/deps.sh is missing"
    # shellcheck source=scripts/deps.sh
    source "$ROOT/scripts/deps.sh"
    deps_ensure build web || fail "the packages the demo needs are not installed (see above)"
fi

if [[ -n $builddir ]]; then
    [[ -f $builddir/meson-private/coredata.dat ]] ||
        fail "--build-dir $builddir is not a meson build directory"
    builddir=$(cd "$builddir" && pwd)
else
    builddir=$ROOT/build-demo
    if $build && [[ ! -f $builddir/meson-private/coredata.dat ]]; then
        say "configuring the build in $builddir"
        meson setup "$builddir" "$ROOT" -Dtests=false || fail "meson setup failed"
    fi
fi
if $build; then
    say "building in $builddir"
    meson compile -C "$builddir" || fail "the build failed"
fi

lbd=$builddir/lbd/lbd
webd=$builddir/webd/webd
lbctl=$builddir/lbctl/lbctl
webctl=$builddir/webctl/webctl
for prog in "$lbd" "$webd" "$lbctl" "$webctl"; do
    [[ -x $prog ]] || fail "$prog is missing: build the project (libpq, libargon2 and libcurl are needed)"
done
for tool in initdb pg_ctl psql; do
    [[ -x $PG_BIN/$tool ]] || fail "$PG_BIN/$tool is missing: install postgresql-15 (or set PG_BIN)"
done
if ((EUID == 0)); then
    id -u postgres >/dev/null 2>&1 || fail "there is no 'postgres' user to run PostgreSQL as"
    command -v runuser >/dev/null || fail "runuser is missing (util-linux)"
fi

# ---- the working directory --------------------------------------------------------------------------

if port_in_use "$port"; then
    fail "port $port is in use on this machine: choose another with --port"
fi
taken_ports+="$port "

tmp=${TMPDIR:-/tmp}
[[ -d $tmp && $tmp != *[[:space:]]* ]] || tmp=/tmp
# No blanks in the path: lbd splits the relay command at blanks.
workdir=$(mktemp -d "$tmp/lbd-demo.XXXXXXXX")
workdir=$(cd "$workdir" && pwd -P)
[[ $workdir != *[[:space:]]* ]] || fail "the working directory $workdir has blanks in its path"
# PostgreSQL's user must be able to reach its own directory inside.
chmod 0711 "$workdir"
mkdir -m 0755 "$workdir/logs"
mkdir -m 0700 "$workdir/pg"
: >"$workdir/logs/setup.log"
: >"$workdir/logs/postgres.log"
if ((EUID == 0)); then
    chown postgres: "$workdir/pg" "$workdir/logs/postgres.log"
    runuser -u postgres -- test -w "$workdir/pg" ||
        fail "the postgres user can't reach $workdir: set TMPDIR to a directory it can reach, such as /tmp"
fi
say "working directory: $workdir"
say "logs: $workdir/logs/ (postgres.log, webd.log, lbd.log with the relays' lines, access.log, setup.log)"

# Programs started here must not think they run under systemd.
unset NOTIFY_SOCKET WATCHDOG_USEC WATCHDOG_PID LISTEN_FDS LISTEN_PID LISTEN_FDNAMES WEBD_DATABASE

# ---- PostgreSQL -----------------------------------------------------------------------------------------

free_port pg_port
pg_super=$(id -un)
if ((EUID == 0)); then
    pg_super=postgres
fi
db_password=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')

say "starting PostgreSQL on 127.0.0.1:$pg_port"
mkdir -m 0700 "$workdir/pg/sock"
(umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$workdir/pg/superpw")
if ((EUID == 0)); then
    chown postgres: "$workdir/pg/sock" "$workdir/pg/superpw"
fi
pg initdb -D "$workdir/pg/data" -U "$pg_super" -E UTF8 --locale=C --auth-host=scram-sha-256 \
    --auth-local=peer --pwfile="$workdir/pg/superpw" >>"$workdir/logs/setup.log" 2>&1 ||
    fail "initdb failed"
rm -f -- "$workdir/pg/superpw"
pg_started=true
pg pg_ctl -D "$workdir/pg/data" -l "$workdir/logs/postgres.log" -w -t "$timeout" \
    -o "-p $pg_port -k $workdir/pg/sock -c listen_addresses=127.0.0.1" start \
    </dev/null >>"$workdir/logs/setup.log" 2>&1 || fail "PostgreSQL did not start"
pg psql -X -q -v ON_ERROR_STOP=1 -h "$workdir/pg/sock" -p "$pg_port" -U "$pg_super" -d postgres \
    -c "CREATE ROLE webd LOGIN PASSWORD '$db_password'" -c "CREATE DATABASE webd OWNER webd" \
    </dev/null >>"$workdir/logs/setup.log" 2>&1 || fail "creating webd's role and database failed"

# ---- webd -----------------------------------------------------------------------------------------------

free_port web_port
cat >"$workdir/webd.conf" <<EOF
; webd for the demo: written by scripts/demo.sh
[webd]
listen = 127.0.0.1:$web_port
secret_file = $workdir/jwt.key
startup_timeout = ${timeout}s
EOF

say "starting webd on 127.0.0.1:$web_port"
WEBD_DATABASE="host=127.0.0.1 port=$pg_port dbname=webd user=webd password=$db_password" \
    "$webd" --config "$workdir/webd.conf" </dev/null >>"$workdir/logs/webd.log" 2>&1 &
webd_pid=$!

deadline=$((SECONDS + timeout))
while true; do
    check_alive webd "$webd_pid" "$workdir/logs/webd.log"
    if [[ $(http_status "$web_port" /healthcheck 2>/dev/null) == 200 ]]; then
        break
    fi
    ((SECONDS < deadline)) || fail "webd did not answer /healthcheck with 200 within ${timeout}s"
    sleep 0.1
done

# ---- lbd and its relays ------------------------------------------------------------------------------------

free_port admin_port
free_port base_port "$RELAY_PORTS"

cat >"$workdir/relay.conf" <<EOF
; The relays (lbd in relay mode, one per backend): written by scripts/demo.sh
[lbd]
admin = off
access_log = off
drain_timeout = 2s

[pool]
networks = 127.0.0.0/8
EOF

cat >"$workdir/lbd.conf" <<EOF
; lbd for the demo: written by scripts/demo.sh
[lbd]
listen = 127.0.0.1:$port
admin = 127.0.0.1:$admin_port
access_log = $workdir/logs/access.log
drain_timeout = 5s

[health]
path = /healthcheck
interval = 1s
timeout = 1s

[pool]
provider = local
desired = $DESIRED
networks = 127.0.0.0/8
poll = 1s
grace = 15s

[local]
command = {lbd} --config $workdir/relay.conf --listen {address} --backend {upstream}
base_port = $base_port
upstream = 127.0.0.1:$web_port
state_file = $workdir/local.state
EOF

say "starting lbd on 127.0.0.1:$port (admin API on 127.0.0.1:$admin_port, relays from port $base_port)"
"$lbd" --config "$workdir/lbd.conf" </dev/null >>"$workdir/logs/lbd.log" 2>&1 &
lbd_pid=$!

healthy=0
deadline=$((SECONDS + timeout))
while true; do
    check_alive lbd "$lbd_pid" "$workdir/logs/lbd.log"
    check_alive webd "$webd_pid" "$workdir/logs/webd.log"
    healthy=$(healthy_backends) || healthy=0
    ((healthy < DESIRED)) || break
    ((SECONDS < deadline)) ||
        fail "lbd did not report $DESIRED healthy backends within ${timeout}s (last: $healthy healthy)"
    sleep 0.2
done

# ---- ready -----------------------------------------------------------------------------------------------

url=http://127.0.0.1:$port
# The lines to paste: webctl found on PATH, and told where the API is (webctl's own default is port 8000).
printf -v webctl_dir '%q' "${webctl%/*}"
curl_note=""
command -v curl >/dev/null || curl_note=" (not installed here: apt-get install curl)"
cat <<EOF

The tasks API is served at $url by lbd, through $DESIRED relays, from webd on PostgreSQL.

With webctl (in another terminal; it asks for the password, at least 8 characters):

  export WEBCTL_URL=$url
  export PATH=$webctl_dir:"\$PATH"
  webctl register alice
  webctl tasks add 'Buy milk'
  webctl tasks list

With curl:$curl_note

  curl -sS -w '\\n' -X POST $url/auth/register -H 'Content-Type: application/json' -d '{"username": "bob", "password": "correct horse"}'
  TOKEN=\$(curl -sS -X POST $url/auth/login -H 'Content-Type: application/json' -d '{"username": "bob", "password": "correct horse"}' | sed -n 's/.*"token": *"\\([^"]*\\)".*/\\1/p')
  curl -sS -w '\\n' -X POST $url/tasks -H "Authorization: Bearer \$TOKEN" -H 'Content-Type: application/json' -d '{"title": "Buy milk"}'
  curl -sS -w '\\n' $url/tasks -H "Authorization: Bearer \$TOKEN"

The pool (lbd's admin API; kill a relay and watch lbd replace it):

  $lbctl --admin 127.0.0.1:$admin_port status

EOF
"$lbctl" --admin "127.0.0.1:$admin_port" status || warn "lbctl status failed"
echo
say "logs in $workdir/logs; Ctrl-C stops everything"
say "ready at $url"

# ---- running ---------------------------------------------------------------------------------------------

while true; do
    sleep 1 &
    sleep_pid=$!
    wait "$sleep_pid" || true
    sleep_pid=""
    died=""
    if ! alive "$lbd_pid"; then
        died="lbd (log: $workdir/logs/lbd.log)"
    elif ! alive "$webd_pid"; then
        died="webd (log: $workdir/logs/webd.log)"
    elif ! pid=$(postmaster_pid) || ! alive "$pid"; then
        died="PostgreSQL (log: $workdir/logs/postgres.log)"
    fi
    if [[ -n $died ]]; then
        fail "$died exited; stopping the rest"
    fi
done

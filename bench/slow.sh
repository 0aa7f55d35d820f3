#!/usr/bin/env bash
# Slow-client attacks against lbd: slowhttptest's slowloris (slow head), slow
# body and slow read, each with 1,000 connections, against lbd in front of one
# healthy backend (tests/helpers/backend.py), all on 127.0.0.1. During each
# attack a probe sends one normal GET per second through lbd; the report gives
# per attack the probes answered 200, the backends lbd took out of rotation,
# lbd's RSS before, at its peak, and after the attack ended, and what
# slowhttptest saw. Every attack stops by itself (slowhttptest -l, and a
# timeout around it). See bench/README.md.
set -euo pipefail

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname -- "$script_dir")
# shellcheck source=lib.sh
source "$script_dir/lib.sh"

connections=1000
length=40
settle=5
attacks="slowloris,slowbody,slowread"
lbd_bin="$repo_dir/build/lbd/lbd"
lbd_extra=()
out_dir=""

usage() {
	cat <<EOF
usage: bench/slow.sh [options]
  --connections N   slowhttptest connections per attack (default $connections)
  --length S        seconds each attack lasts (default $length; lbd's backend timeout is 30 s)
  --settle S        seconds after an attack before the "after" RSS (default $settle)
  --attacks LIST    comma-separated subset of slowloris,slowbody,slowread (default all)
  --lbd PATH        lbd binary (default build/lbd/lbd)
  --lbd-arg ARG     extra argument for lbd (repeatable), e.g. --lbd-arg --set --lbd-arg timeouts.backend=5s
  --out DIR         keep slowhttptest's reports, the probes and lbd's log in DIR
  --quick           smoke run: 200 connections, 12 s attacks, lbd's backend timeout 5 s
  -h, --help        this text
EOF
}

while (($# > 0)); do
	case $1 in
	--connections) bench_need_int "$1" "${2-}"; connections=$2; shift ;;
	--length) bench_need_int "$1" "${2-}"; length=$2; shift ;;
	--settle) bench_need_int "$1" "${2-}"; settle=$2; shift ;;
	--attacks) attacks=${2-}; shift ;;
	--lbd) lbd_bin=${2-}; shift ;;
	--lbd-arg) lbd_extra+=("${2-}"); shift ;;
	--out) out_dir=${2-}; shift ;;
	--quick)
		connections=200
		length=12
		lbd_extra+=(--set timeouts.backend=5s)
		;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
	shift
done

((length <= 600)) || bench_die "--length is at most 600 s"
((connections <= 5000)) || bench_die "--connections is at most 5000"
for tool in slowhttptest curl python3 ss; do
	command -v "$tool" >/dev/null || bench_die "$tool is needed (Debian package: ${tool/ss/iproute2})"
done
[[ -x "$lbd_bin" ]] || bench_die "no lbd at $lbd_bin (build it, or --lbd PATH)"

trap bench_cleanup EXIT
bench_tmpdir
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

backend_port="" lbd_port="" admin_port=""
bench_free_port backend_port
bench_free_port lbd_port
bench_free_port admin_port

python3 "$repo_dir/tests/helpers/backend.py" --listen "127.0.0.1:$backend_port" --name b1 \
	>"$BENCH_TMP/backend.out" 2>"$BENCH_TMP/backend.err" &
bench_track $!
"$lbd_bin" --listen "127.0.0.1:$lbd_port" --admin "127.0.0.1:$admin_port" --backend "127.0.0.1:$backend_port" \
	--access-log off --set pool.networks=127.0.0.0/8 "${lbd_extra[@]}" 2>"$BENCH_TMP/lbd.err" &
lbd_pid=$!
bench_track "$lbd_pid"
bench_wait_http "http://127.0.0.1:$lbd_port/healthcheck" 10 || bench_die "lbd did not come up"

# probe_loop SECONDS FILE: one GET a second through lbd, one status per line.
probe_loop() {
	local end=$((SECONDS + $1)) code
	while ((SECONDS < end)); do
		code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$lbd_port/probe" 2>/dev/null) || true
		printf '%s\n' "${code:-000}" >>"$2"
		sleep 1
	done
}

# rss_loop SECONDS FILE: lbd's RSS every half second.
rss_loop() {
	local end=$((SECONDS + $1))
	while ((SECONDS < end)); do
		bench_rss_kib "$lbd_pid" >>"$2" 2>/dev/null || true
		sleep 0.5
	done
}

attack_args() {
	local url="http://127.0.0.1:$lbd_port"
	case $1 in
	slowloris) echo "-H -i 10 -r 200 -t GET -x 24 -u $url/loris" ;;
	slowbody) echo "-B -i 10 -r 200 -s 8192 -t POST -x 10 -u $url/upload" ;;
	slowread) echo "-X -r 200 -w 512 -y 1024 -n 5 -z 32 -k 3 -u $url/bytes/1000000" ;;
	*) bench_die "unknown attack '$1'" ;;
	esac
}

printf '%-10s %8s %7s %10s %10s %10s  %s\n' attack probes downs rss_before rss_peak rss_after slowhttptest
IFS=, read -ra list <<<"$attacks"
for attack in "${list[@]}"; do
	read -ra args <<<"$(attack_args "$attack")"
	downs_before=$(grep -c ' is down' "$BENCH_TMP/lbd.err" || true)
	before=$(bench_rss_kib "$lbd_pid")
	: >"$BENCH_TMP/$attack.probes"
	: >"$BENCH_TMP/$attack.rss"
	probe_loop "$length" "$BENCH_TMP/$attack.probes" &
	probe_pid=$!
	bench_track "$probe_pid"
	rss_loop "$length" "$BENCH_TMP/$attack.rss" &
	rss_pid=$!
	bench_track "$rss_pid"
	timeout -k 5 $((length + 30)) slowhttptest -c "$connections" -l "$length" -p 3 "${args[@]}" \
		>"$BENCH_TMP/$attack.slowhttptest" 2>&1 || true
	wait "$probe_pid" || true
	bench_untrack "$probe_pid"
	wait "$rss_pid" || true
	bench_untrack "$rss_pid"
	sleep "$settle"
	after=$(bench_rss_kib "$lbd_pid")
	peak=$(sort -n "$BENCH_TMP/$attack.rss" | tail -1)
	answered=$(grep -c '^200$' "$BENCH_TMP/$attack.probes" || true)
	sent=$(wc -l <"$BENCH_TMP/$attack.probes")
	downs=$(($(grep -c ' is down' "$BENCH_TMP/lbd.err" || true) - downs_before))
	# slowhttptest colours its report: the escapes go, then its last status block says how many
	# connections it held and whether its own probe was answered.
	sed 's/\x1b\[[0-9;]*[A-Za-z]//g' "$BENCH_TMP/$attack.slowhttptest" >"$BENCH_TMP/$attack.report"
	held=$({ grep -Eo 'connected: *[0-9]+' "$BENCH_TMP/$attack.report" || true; } | tail -1 | grep -Eo '[0-9]+' || true)
	avail=$({ grep -Eo 'service available: *[A-Z]+' "$BENCH_TMP/$attack.report" || true; } | tail -1 |
		grep -Eo '[A-Z]+$' || true)
	verdict="connected ${held:-?}, service available ${avail:-?}"
	printf '%-10s %8s %7s %10s %10s %10s  %s\n' "$attack" "$answered/$sent" "$downs" "${before}K" \
		"${peak:-?}K" "${after}K" "${verdict:-?}"
	# A backend lbd took out comes back after its health checks pass: wait, so attacks stay apart.
	bench_wait_http "http://127.0.0.1:$lbd_port/healthcheck" 20 || bench_log "lbd has no healthy backend"
done
grep -E 'is down|stalled' "$BENCH_TMP/lbd.err" | sort | uniq -c | sort -rn | head -5 >&2 || true
if [[ -n $out_dir ]]; then
	mkdir -p -- "$out_dir"
	cp -- "$BENCH_TMP"/*.slowhttptest "$BENCH_TMP"/*.probes "$BENCH_TMP"/*.rss "$BENCH_TMP/lbd.err" "$out_dir/"
fi

# shellcheck shell=bash
# Helpers shared by the benchmark scripts of bench/: free loopback ports,
# processes started and stopped by PID, figures read from /proc, and the
# parsing of wrk's report. Meant to be sourced, not run.

# Every process a script starts is recorded here and stopped by bench_cleanup.
BENCH_PIDS=()
BENCH_TMP=""

bench_log() {
	printf '%s\n' "$*" >&2
}

bench_die() {
	bench_log "error: $*"
	exit 1
}

# bench_need_int OPTION VALUE: die unless VALUE is a positive integer.
bench_need_int() {
	[[ "$2" =~ ^[1-9][0-9]*$ ]] || bench_die "$1 needs a positive integer, got '$2'"
}

# bench_tmpdir: create the run's private directory (readable by the
# unprivileged nginx workers) and remember it for removal at exit.
bench_tmpdir() {
	BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/lbd-bench.XXXXXX")
	chmod 755 "$BENCH_TMP"
}

# bench_track PID: stop PID at exit.
bench_track() {
	BENCH_PIDS+=("$1")
}

# bench_untrack PID: forget PID once it has been waited for, so that a
# later process given the same number is never signalled.
bench_untrack() {
	local i kept=()
	for i in "${BENCH_PIDS[@]}"; do
		[[ $i == "$1" ]] || kept+=("$i")
	done
	BENCH_PIDS=("${kept[@]}")
}

# bench_stop PID: SIGTERM, then SIGKILL after 5 s; waits for it either way.
bench_stop() {
	local pid=$1 i
	kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

# bench_cleanup: the EXIT trap; stops every tracked process, newest first,
# and removes the private directory.
bench_cleanup() {
	local i
	for ((i = ${#BENCH_PIDS[@]} - 1; i >= 0; i--)); do
		bench_stop "${BENCH_PIDS[i]}"
	done
	BENCH_PIDS=()
	if [[ -n "$BENCH_TMP" && -d "$BENCH_TMP" ]]; then
		rm -rf -- "$BENCH_TMP"
	fi
}

# bench_free_port VAR: set VAR to a TCP port on 127.0.0.1 nobody listens on,
# below the ephemeral range so that client sockets never take it first.
BENCH_PORTS_TAKEN=" "
bench_free_port() {
	local i p
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + RANDOM % 12000))
		[[ "$BENCH_PORTS_TAKEN" == *" $p "* ]] && continue
		if [[ -z "$(ss -Htan "sport = :$p" 2>/dev/null)" ]]; then
			BENCH_PORTS_TAKEN+="$p "
			printf -v "$1" '%s' "$p"
			return 0
		fi
	done
	bench_die "no free port found"
}

# bench_wait_http URL SECONDS: wait until URL answers 200, at most SECONDS.
bench_wait_http() {
	local url=$1 limit=$2 i code
	for ((i = 0; i < limit * 10; i++)); do
		code=$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$url" 2>/dev/null) || true
		[[ "$code" == 200 ]] && return 0
		sleep 0.1
	done
	return 1
}

# bench_tree PID: print PID and its direct children (nginx master + workers).
bench_tree() {
	printf '%s\n' "$1"
	pgrep -P "$1" 2>/dev/null || true
}

# bench_cpu_ticks PID...: print the utime+stime sum of the given processes,
# in clock ticks. The command name may hold spaces, so fields are counted
# after its closing parenthesis.
bench_cpu_ticks() {
	local pid line rest total=0
	local -a f
	for pid in "$@"; do
		line=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
		rest=${line##*) }
		read -r -a f <<<"$rest"
		# rest starts at field 3 (state): utime is field 14, stime 15.
		total=$((total + f[11] + f[12]))
	done
	printf '%s\n' "$total"
}

# bench_rss_kib PID: print VmRSS of PID in KiB.
bench_rss_kib() {
	awk '$1 == "VmRSS:" { print $2; found = 1 } END { if (!found) exit 1 }' "/proc/$1/status"
}

# bench_wrk_parse FILE: print "rps p99_us requests errors" from a
# `wrk --latency` report. errors counts socket errors and non-2xx/3xx.
bench_wrk_parse() {
	awk '
	function us(v) {
		if (v ~ /us$/) return v + 0
		if (v ~ /ms$/) return (v + 0) * 1000
		if (v ~ /m$/) return (v + 0) * 60000000
		if (v ~ /s$/) return (v + 0) * 1000000
		return -1
	}
	/^Requests\/sec:/ { rps = $2 }
	$1 == "99%" { p99 = us($2) }
	/ requests in / { reqs = $1 }
	/Socket errors:/ {
		gsub(/,/, "")
		errs += $4 + $6 + $8 + $10
	}
	/Non-2xx or 3xx responses:/ { errs += $5 }
	END {
		if (rps == "" || p99 == "" || reqs == "") exit 1
		printf "%s %.1f %d %d\n", rps, p99, reqs, errs
	}' "$1"
}

# bench_idle_pct SECONDS: print the share of CPU time, in percent, that the
# whole machine spent idle over the next SECONDS.
bench_idle_pct() {
	local -a a b
	local k total=0
	read -r -a a </proc/stat
	sleep "$1"
	read -r -a b </proc/stat
	for ((k = 1; k <= 8; k++)); do
		total=$((total + b[k] - a[k]))
	done
	((total > 0)) || total=1
	printf '%s\n' $((100 * (b[4] - a[4]) / total))
}

# bench_median V...: print the median of the numbers given (mean of the two
# middle ones for an even count).
bench_median() {
	printf '%s\n' "$@" | sort -g | awk '
	{ v[NR] = $1 }
	END {
		if (NR == 0) exit 1
		if (NR % 2) printf "%.6f\n", v[(NR + 1) / 2]
		else printf "%.6f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
	}'
}

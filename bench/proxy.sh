#!/usr/bin/env bash
# Proxy benchmark: lbd, HAProxy and nginx, each in front of the same three
# nginx backends on 127.0.0.1, loaded in alternating rounds by wrk with
# keep-alive. Reports per proxy the median req/s, the median p99 latency,
# the CPU time per request, the RSS after the load and the RSS cost of one
# idle keep-alive client connection. See bench/README.md.
set -euo pipefail

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname -- "$script_dir")
# shellcheck source=lib.sh
source "$script_dir/lib.sh"

connections=50
duration=5
rounds=5
threads=1
proxy_threads=1
idle_count=10000
proxies="lbd,haproxy,nginx"
lbd_bin="$repo_dir/build/lbd/lbd"
lbd_extra=()
pin_wrk=""
hold=0
path="/1k.txt"

usage() {
	cat <<EOF
usage: bench/proxy.sh [options]
  --connections N   wrk connections (default $connections)
  --duration S      seconds per round (default $duration)
  --rounds N        counted rounds per proxy, after one warm-up (default $rounds)
  --threads N       wrk threads (default $threads)
  --threads-proxy N event loops of each proxy: lbd threads = N, HAProxy nbthread N, nginx
                    worker_processes N (default $proxy_threads)
  --idle N          idle client connections for the RSS figure (default $idle_count)
  --proxies LIST    comma-separated subset of lbd,haproxy,nginx (default all)
  --lbd PATH        lbd binary (default build/lbd/lbd)
  --lbd-arg ARG     extra argument for lbd (repeatable)
  --pin-wrk CPU     run wrk under taskset -c CPU (default: not pinned)
  --quick           smoke run: 1 round of 2 s, 1000 idle connections
  --hold S          start the backends and proxies, print their ports and PIDs,
                    keep them up for S seconds (for profiling by hand), then stop
  -h, --help        this text
EOF
}

while (($# > 0)); do
	case $1 in
	--connections) bench_need_int "$1" "${2-}"; connections=$2; shift ;;
	--duration) bench_need_int "$1" "${2-}"; duration=$2; shift ;;
	--rounds) bench_need_int "$1" "${2-}"; rounds=$2; shift ;;
	--threads) bench_need_int "$1" "${2-}"; threads=$2; shift ;;
	--threads-proxy) bench_need_int "$1" "${2-}"; proxy_threads=$2; shift ;;
	--idle) bench_need_int "$1" "${2-}"; idle_count=$2; shift ;;
	--proxies) proxies=${2-}; shift ;;
	--lbd) lbd_bin=${2-}; shift ;;
	--lbd-arg) lbd_extra+=("${2-}"); shift ;;
	--pin-wrk)
		[[ "${2-}" =~ ^[0-9]+$ ]] || bench_die "--pin-wrk needs a CPU number"
		pin_wrk=$2
		shift
		;;
	--quick) rounds=1; duration=2; idle_count=1000 ;;
	--hold) bench_need_int "$1" "${2-}"; hold=$2; shift ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
	shift
done

selected=()
IFS=, read -r -a wanted <<<"$proxies"
for p in "${wanted[@]}"; do
	case $p in
	lbd | haproxy | nginx) selected+=("$p") ;;
	*) bench_die "unknown proxy '$p' (lbd, haproxy, nginx)" ;;
	esac
done
((${#selected[@]} > 0)) || bench_die "--proxies selects nothing"

for tool in nginx haproxy wrk curl ss pgrep python3 awk taskset timeout; do
	command -v "$tool" >/dev/null || bench_die "$tool not found"
done

lbd_missing=0
if [[ " ${selected[*]} " == *" lbd "* && ! -x "$lbd_bin" ]]; then
	bench_log "lbd not found at $lbd_bin: comparing the other proxies only"
	lbd_missing=1
	kept=()
	for p in "${selected[@]}"; do
		[[ $p == lbd ]] || kept+=("$p")
	done
	selected=("${kept[@]}")
	((${#selected[@]} > 0)) || { bench_log "nothing left to measure"; exit 1; }
fi

# Each idle client connection takes one descriptor in the helper and one in
# the proxy; the proxies are told to accept 20000 connections.
hard=$(ulimit -Hn)
if [[ $hard == unlimited ]]; then
	ulimit -n 65536
else
	ulimit -n "$hard"
fi
nofile=$(ulimit -n)
((nofile >= idle_count + 1000)) ||
	bench_die "open file limit $nofile too low for $idle_count idle connections"

clk_tck=$(getconf CLK_TCK)

bench_tmpdir
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# nginx keeps its temporary files and its log under its own prefix.
# nginx_common DIR [WORKERS]: the main context (worker_processes WORKERS, default 1).
nginx_common() {
	local dir=$1 workers=${2:-1}
	mkdir -p "$dir/tmp"
	cat <<EOF
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_processes $workers;
EOF
}

nginx_http_common() {
	local dir=$1
	cat <<EOF
    access_log off;
    keepalive_timeout 65s;
    keepalive_requests 1000000;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
EOF
}

start_nginx_dir() {
	local dir=$1 pid
	nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" >"$dir/stderr" 2>&1 &
	pid=$!
	bench_track "$pid"
	START_PID=$pid
}

backend_ports=()
start_backends() {
	local i dir port
	for i in 1 2 3; do
		bench_free_port port
		dir="$BENCH_TMP/backend$i"
		mkdir -p "$dir/html"
		head -c 1024 /dev/zero | tr '\0' 'x' >"$dir/html/1k.txt"
		chmod -R a+rX "$dir"
		{
			nginx_common "$dir"
			cat <<EOF
worker_rlimit_nofile 8192;
events { worker_connections 4096; }
http {
$(nginx_http_common "$dir")
    default_type text/plain;
    server {
        listen 127.0.0.1:$port backlog=4096;
        root $dir/html;
        location = /healthcheck { return 200 "ok\n"; }
        location / { }
    }
}
EOF
		} >"$dir/nginx.conf"
		start_nginx_dir "$dir"
		backend_ports+=("$port")
	done
	for port in "${backend_ports[@]}"; do
		bench_wait_http "http://127.0.0.1:$port$path" 10 ||
			bench_die "backend on port $port did not start: $(cat "$BENCH_TMP"/backend*/error.log)"
	done
}

declare -A proxy_port proxy_pid proxy_log

start_haproxy() {
	local dir="$BENCH_TMP/haproxy" port i pid
	mkdir -p "$dir"
	bench_free_port port
	{
		cat <<EOF
global
    nbthread $proxy_threads
    maxconn 20000
    # The hard descriptor limit may be below the 2 * maxconn HAProxy asks
    # for; 10000 idle client connections still fit.
    no strict-limits

defaults
    mode http
    maxconn 20000
    option http-keep-alive
    option forwardfor
    http-reuse always
    timeout connect 3s
    timeout client 60s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 60s

frontend fe
    bind 127.0.0.1:$port
    http-request set-header X-Forwarded-Proto http
    default_backend be

backend be
    balance roundrobin
    option httpchk GET /healthcheck
EOF
		for i in "${!backend_ports[@]}"; do
			printf '    server b%d 127.0.0.1:%s check\n' "$((i + 1))" "${backend_ports[i]}"
		done
	} >"$dir/haproxy.cfg"
	haproxy -db -f "$dir/haproxy.cfg" >"$dir/stderr" 2>&1 &
	pid=$!
	bench_track "$pid"
	proxy_port[haproxy]=$port
	proxy_pid[haproxy]=$pid
	proxy_log[haproxy]="$dir/stderr"
}

start_nginx_proxy() {
	local dir="$BENCH_TMP/nginx" port p
	mkdir -p "$dir"
	bench_free_port port
	{
		nginx_common "$dir" "$proxy_threads"
		cat <<EOF
worker_rlimit_nofile 20000;
events { worker_connections 20000; }
http {
$(nginx_http_common "$dir")
    upstream backends {
$(for p in "${backend_ports[@]}"; do printf '        server 127.0.0.1:%s;\n' "$p"; done)
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / {
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
EOF
	} >"$dir/nginx.conf"
	start_nginx_dir "$dir"
	proxy_port[nginx]=$port
	proxy_pid[nginx]=$START_PID
	proxy_log[nginx]="$dir/error.log"
}

start_lbd() {
	local dir="$BENCH_TMP/lbd" port b pid
	local -a args
	mkdir -p "$dir"
	bench_free_port port
	args=(--listen "127.0.0.1:$port")
	for b in "${backend_ports[@]}"; do
		args+=(--backend "127.0.0.1:$b")
	done
	args+=(--admin off --access-log off --set lbd.max_connections=20000)
	# Only when asked: an lbd from before [lbd] threads (--lbd) still runs with one loop.
	if ((proxy_threads != 1)); then
		args+=(--set "lbd.threads=$proxy_threads")
	fi
	"$lbd_bin" "${args[@]}" "${lbd_extra[@]}" >"$dir/stderr" 2>&1 &
	pid=$!
	bench_track "$pid"
	proxy_port[lbd]=$port
	proxy_pid[lbd]=$pid
	proxy_log[lbd]="$dir/stderr"
}

# serving_pids NAME: the processes that handle connections (nginx's workers).
serving_pids() {
	local pid=${proxy_pid[$1]} children
	if [[ $1 == nginx ]]; then
		children=$(pgrep -P "$pid") || true
		[[ -n $children ]] || bench_die "nginx proxy has no worker"
		printf '%s\n' "$children"
	else
		printf '%s\n' "$pid"
	fi
}

# serving_rss NAME: VmRSS of the processes that handle connections, summed, in KiB.
serving_rss() {
	local pid total=0 kib
	for pid in $(serving_pids "$1"); do
		kib=$(bench_rss_kib "$pid") || bench_die "no VmRSS for $1 ($pid)"
		total=$((total + kib))
	done
	printf '%s\n' "$total"
}

wait_proxy() {
	local name=$1 url i code
	url="http://127.0.0.1:${proxy_port[$name]}$path"
	if ! bench_wait_http "$url" 15 || ! kill -0 "${proxy_pid[$name]}" 2>/dev/null; then
		bench_die "$name did not start: $(tail -n 20 "${proxy_log[$name]}")"
	fi
	# Every backend must be in rotation before the load starts.
	for ((i = 0; i < 60; i++)); do
		code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url") || true
		[[ $code == 200 ]] || bench_die "$name answered $code during the readiness check"
	done
}

declare -A r_rps r_p99 r_cpu r_errs
# run_wrk NAME COUNTED: one round of load against NAME.
run_wrk() {
	local name=$1 counted=$2 out t0 t1 rps p99 reqs errs cpu
	local -a pids cmd
	out="$BENCH_TMP/wrk-$name.out"
	mapfile -t pids < <(bench_tree "${proxy_pid[$name]}")
	cmd=(timeout "$((duration + 30))" wrk -t"$threads" -c"$connections" -d"${duration}s"
		--latency "http://127.0.0.1:${proxy_port[$name]}$path")
	if [[ -n $pin_wrk ]]; then
		cmd=(taskset -c "$pin_wrk" "${cmd[@]}")
	fi
	t0=$(bench_cpu_ticks "${pids[@]}")
	"${cmd[@]}" >"$out" 2>&1 || bench_die "wrk failed against $name: $(cat "$out")"
	t1=$(bench_cpu_ticks "${pids[@]}")
	kill -0 "${proxy_pid[$name]}" 2>/dev/null ||
		bench_die "$name died during the load: $(tail -n 20 "${proxy_log[$name]}")"
	read -r rps p99 reqs errs < <(bench_wrk_parse "$out") ||
		bench_die "cannot read wrk's report: $(cat "$out")"
	((reqs > 0)) || bench_die "no request completed against $name"
	cpu=$(awk -v t=$((t1 - t0)) -v hz="$clk_tck" -v n="$reqs" 'BEGIN { printf "%.3f", t / hz * 1e6 / n }')
	bench_log "$(printf '  %-8s %-7s rps=%-10s p99=%8.3fms cpu/req=%7.2fus errors=%s (p50 %s p90 %s)' \
		"$name" "$counted" "$rps" "$(awk -v v="$p99" 'BEGIN { print v / 1000 }')" "$cpu" "$errs" \
		"$(awk '$1 == "50%" { print $2 }' "$out")" "$(awk '$1 == "90%" { print $2 }' "$out")")"
	if [[ $counted == round ]]; then
		r_rps[$name]+="$rps "
		r_p99[$name]+="$p99 "
		r_cpu[$name]+="$cpu "
		r_errs[$name]=$((${r_errs[$name]:-0} + errs))
	fi
}

declare -A m_rss m_idle
# idle_test NAME: RSS before and after idle_count idle client connections.
idle_test() {
	local name=$1 before after out hp i state rc=0
	out="$BENCH_TMP/idle-$name.out"
	before=$(serving_rss "$name")
	python3 "$script_dir/idle-conns.py" --port "${proxy_port[$name]}" --path "$path" \
		--count "$idle_count" --timeout 240 --hold 300 >"$out" 2>&1 &
	hp=$!
	bench_track "$hp"
	state=""
	for ((i = 0; i < 2500; i++)); do
		if grep -qs '^ready ' "$out"; then
			state=ready
			break
		fi
		kill -0 "$hp" 2>/dev/null || break
		sleep 0.1
	done
	if [[ $state == ready ]]; then
		sleep 1
		after=$(serving_rss "$name")
	fi
	kill -TERM "$hp" 2>/dev/null || true
	wait "$hp" || rc=$?
	bench_untrack "$hp"
	[[ $state == ready && $rc == 0 ]] ||
		bench_die "idle connections to $name failed (status $rc): $(cat "$out")"
	grep -q "^done open=$idle_count closed_by_peer=0\$" "$out" ||
		bench_die "$name closed idle connections: $(cat "$out")"
	m_idle[$name]=$(((after - before) * 1024 / idle_count))
	bench_log "  $name idle: VmRSS ${before} KiB -> ${after} KiB for $idle_count connections"
}

idle_pct=$(bench_idle_pct 2)
if ((idle_pct < 90)); then
	bench_log "warning: the machine was only ${idle_pct}% idle before the run: the figures will be noisy"
fi
bench_log "lbd proxy benchmark: wrk -t$threads -c$connections -d${duration}s, $rounds round(s), $proxy_threads loop(s) per proxy," \
	"$idle_count idle connections, proxies: ${selected[*]}"
start_backends
for p in "${selected[@]}"; do
	case $p in
	lbd) start_lbd ;;
	haproxy) start_haproxy ;;
	nginx) start_nginx_proxy ;;
	esac
done
for p in "${selected[@]}"; do
	wait_proxy "$p"
done

if ((hold > 0)); then
	bench_log "backends: ${backend_ports[*]} (path $path)"
	for p in "${selected[@]}"; do
		bench_log "$p: port ${proxy_port[$p]} pid(s) $(serving_pids "$p" | tr "\n" " ")"
	done
	bench_log "holding for $hold s (Ctrl-C stops everything)"
	# In the background, so that a signal is handled at once, not when the sleep ends.
	sleep "$hold" &
	bench_track "$!"
	wait "$!" || true
	exit 0
fi

bench_log "warm-up"
for p in "${selected[@]}"; do
	run_wrk "$p" warmup
done
for ((r = 1; r <= rounds; r++)); do
	bench_log "round $r/$rounds"
	for p in "${selected[@]}"; do
		run_wrk "$p" round
	done
done
for p in "${selected[@]}"; do
	m_rss[$p]=$(serving_rss "$p")
done
bench_log "idle connections"
for p in "${selected[@]}"; do
	idle_test "$p"
done

declare -A m_rps m_p99 m_cpu
failed=0
printf '\n%-8s %12s %10s %12s %10s %14s %8s\n' proxy req/s p99_ms cpu_us/req rss_kib idle_B/conn errors
for p in "${selected[@]}"; do
	read -r -a v <<<"${r_rps[$p]}"
	m_rps[$p]=$(bench_median "${v[@]}")
	read -r -a v <<<"${r_p99[$p]}"
	m_p99[$p]=$(bench_median "${v[@]}")
	read -r -a v <<<"${r_cpu[$p]}"
	m_cpu[$p]=$(bench_median "${v[@]}")
	printf '%-8s %12.0f %10.3f %12.2f %10s %14s %8s\n' "$p" "${m_rps[$p]}" \
		"$(awk -v v="${m_p99[$p]}" 'BEGIN { print v / 1000 }')" "${m_cpu[$p]}" \
		"${m_rss[$p]}" "${m_idle[$p]}" "${r_errs[$p]}"
	((${r_errs[$p]} == 0)) || failed=1
done

printf 'idle_rss_per_conn lbd=%s haproxy=%s nginx=%s\n' \
	"${m_idle[lbd]:-n/a}" "${m_idle[haproxy]:-n/a}" "${m_idle[nginx]:-n/a}"
if [[ -n ${m_rps[lbd]:-} && -n ${m_rps[haproxy]:-} ]]; then
	awk -v a="${m_rps[lbd]}" -v b="${m_rps[haproxy]}" -v c="${m_p99[lbd]}" -v d="${m_p99[haproxy]}" \
		'BEGIN { printf "ratio lbd/haproxy rps=%.2f p99=%.2f\n", a / b, c / d }'
else
	printf 'ratio lbd/haproxy rps=n/a p99=n/a\n'
fi

if ((lbd_missing)); then
	bench_log "lbd was not measured: $lbd_bin is missing"
	exit 1
fi
if ((failed)); then
	bench_log "some requests failed: the figures above are not trustworthy"
	exit 1
fi

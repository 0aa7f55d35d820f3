#!/usr/bin/env bash
# TLS benchmark: lbd and HAProxy terminating TLS with the same certificates (ECDSA P-256 and RSA 2048
# for one name, made by the script) in front of the same nginx backend on 127.0.0.1, in the same run.
# Reports per proxy: full handshakes per second with each key type (openssl s_time -new, TLS 1.2 so
# that the cipher picks the certificate), requests per second and CPU per request over kept-alive TLS
# connections (wrk), and the RSS cost of one idle TLS client connection; with --threads, for lbd with N
# event loops against HAProxy with nbthread N, for each N given, all in one run. See bench/README.md.
set -euo pipefail

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname -- "$script_dir")
# shellcheck source=lib.sh
source "$script_dir/lib.sh"

connections=50
duration=5
rounds=3
idle_count=2000
clients=2
lbd_bin="$repo_dir/build/lbd/lbd"
path="/1k.txt"
threads_list="1"

usage() {
	cat <<EOF
usage: bench/tls.sh [options]
  --connections N   wrk connections (default $connections)
  --duration S      seconds per round (default $duration)
  --rounds N        counted rounds per proxy and measure, after one warm-up (default $rounds)
  --clients N       openssl s_time processes at once for the handshake rate (default $clients)
  --idle N          idle TLS client connections for the RSS figure (default $idle_count)
  --threads LIST    comma-separated thread counts: lbd [lbd] threads = N against HAProxy nbthread N for
                    each N (default $threads_list); wrk uses N threads, s_time N * --clients processes
  --lbd PATH        lbd binary (default build/lbd/lbd)
  --quick           smoke run: 1 round of 2 s, 200 idle connections
  -h, --help        this text
EOF
}

while (($# > 0)); do
	case $1 in
	--connections) bench_need_int "$1" "${2-}"; connections=$2; shift ;;
	--duration) bench_need_int "$1" "${2-}"; duration=$2; shift ;;
	--rounds) bench_need_int "$1" "${2-}"; rounds=$2; shift ;;
	--clients) bench_need_int "$1" "${2-}"; clients=$2; shift ;;
	--idle) bench_need_int "$1" "${2-}"; idle_count=$2; shift ;;
	--threads) threads_list=${2-}; shift ;;
	--lbd) lbd_bin=${2-}; shift ;;
	--quick) rounds=1; duration=2; idle_count=200 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
	shift
done

for tool in nginx haproxy wrk curl openssl ss python3 awk timeout; do
	command -v "$tool" >/dev/null || bench_die "$tool not found"
done
[[ -x $lbd_bin ]] || bench_die "lbd not found at $lbd_bin"
IFS=, read -r -a thread_counts <<<"$threads_list"
((${#thread_counts[@]} > 0)) || bench_die "--threads needs at least one number"
for n in "${thread_counts[@]}"; do
	[[ $n =~ ^[1-9][0-9]?$ ]] || bench_die "--threads takes numbers from 1 to 99, not '$n'"
done
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) >= idle_count + 1000)) || bench_die "open file limit too low for $idle_count idle connections"
clk_tck=$(getconf CLK_TCK)

bench_tmpdir
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- certificates: one name, both key types ----
certs="$BENCH_TMP/certs"
mkdir -p "$certs/haproxy"
for kind in ecdsa rsa; do
	if [[ $kind == rsa ]]; then newkey=(-newkey rsa:2048); else newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256); fi
	openssl req -x509 "${newkey[@]}" -nodes -keyout "$certs/$kind.key" -out "$certs/$kind.pem" -days 2 \
		-subj /CN=bench.test -addext subjectAltName=DNS:bench.test 2>/dev/null ||
		bench_die "openssl could not make the $kind certificate"
	# HAProxy takes certificate and key in one file; of several for one name it picks by the client's
	# algorithms, as lbd does.
	cat "$certs/$kind.pem" "$certs/$kind.key" >"$certs/haproxy/$kind.pem"
done
chmod -R a+rX "$certs"

# ---- the backend: one nginx serving a 1 KiB file ----
bench_free_port backend_port
backend_dir="$BENCH_TMP/backend"
mkdir -p "$backend_dir/html" "$backend_dir/tmp"
head -c 1024 /dev/zero | tr '\0' 'x' >"$backend_dir/html/1k.txt"
chmod -R a+rX "$backend_dir"
cat >"$backend_dir/nginx.conf" <<EOF
daemon off;
pid $backend_dir/nginx.pid;
error_log $backend_dir/error.log warn;
worker_processes 1;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $backend_dir/tmp/body;
    proxy_temp_path $backend_dir/tmp/proxy;
    fastcgi_temp_path $backend_dir/tmp/fastcgi;
    uwsgi_temp_path $backend_dir/tmp/uwsgi;
    scgi_temp_path $backend_dir/tmp/scgi;
    server {
        listen 127.0.0.1:$backend_port backlog=4096;
        root $backend_dir/html;
        location = /healthcheck { return 200 "ok\n"; }
    }
}
EOF
nginx -e "$backend_dir/error.log" -p "$backend_dir" -c "$backend_dir/nginx.conf" >"$backend_dir/stderr" 2>&1 &
bench_track "$!"
bench_wait_http "http://127.0.0.1:$backend_port$path" 10 || bench_die "the backend did not start"

# ---- the proxies, with the same profile: TLS 1.2 and 1.3, ECDHE with AEAD, tickets, N threads ----
# One lbd and one HAProxy per thread count. Names: "lbd" and "haproxy" with one count, else "lbd-N" and
# "haproxy-N".
declare -A port pid log rsa_port nthreads
proxies=()
start_lbd() {
	local name=$1 n=$2
	bench_free_port "port[$name]"
	cat >"$BENCH_TMP/$name.conf" <<EOF
[lbd]
listen = 127.0.0.1:${port[$name]} tls
admin = off
access_log = off
max_connections = 20000
threads = $n
[tls]
certificate = $certs/ecdsa.pem $certs/ecdsa.key
certificate = $certs/rsa.pem $certs/rsa.key
[pool]
backends = 127.0.0.1:$backend_port
EOF
	"$lbd_bin" --config "$BENCH_TMP/$name.conf" >"$BENCH_TMP/$name.stderr" 2>&1 &
	pid[$name]=$!
	log[$name]="$BENCH_TMP/$name.stderr"
	bench_track "${pid[$name]}"
	rsa_port[$name]=${port[$name]}
}

start_haproxy() {
	local name=$1 n=$2
	bench_free_port "port[$name]"
	# Without SNI (s_time sends none) HAProxy offers only a bind line's first certificate: RSA gets a bind
	# of its own. lbd offers both to such clients and needs one listener.
	bench_free_port "rsa_port[$name]"
	cat >"$BENCH_TMP/$name.cfg" <<EOF
global
    nbthread $n
    maxconn 20000
    no strict-limits
    ssl-default-bind-ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305
    ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256
    # The client's cipher order, as lbd's intermediate profile (Mozilla's) does: the same suites negotiated.
    ssl-default-bind-options ssl-min-ver TLSv1.2 prefer-client-ciphers
    ssl-default-bind-curves X25519:P-256:P-384
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
    bind 127.0.0.1:${port[$name]} ssl crt $certs/haproxy/ecdsa.pem crt $certs/haproxy/rsa.pem alpn http/1.1
    bind 127.0.0.1:${rsa_port[$name]} ssl crt $certs/haproxy/rsa.pem alpn http/1.1
    http-request set-header X-Forwarded-Proto https
    default_backend be
backend be
    option httpchk GET /healthcheck
    server b1 127.0.0.1:$backend_port check
EOF
	haproxy -db -f "$BENCH_TMP/$name.cfg" >"$BENCH_TMP/$name.stderr" 2>&1 &
	pid[$name]=$!
	log[$name]="$BENCH_TMP/$name.stderr"
	bench_track "${pid[$name]}"
}

for n in "${thread_counts[@]}"; do
	suffix=""
	((${#thread_counts[@]} == 1)) || suffix="-$n"
	start_lbd "lbd$suffix" "$n"
	start_haproxy "haproxy$suffix" "$n"
	nthreads[lbd$suffix]=$n
	nthreads[haproxy$suffix]=$n
	proxies+=("lbd$suffix" "haproxy$suffix")
done

for p in "${proxies[@]}"; do
	ok=0
	for ((i = 0; i < 150; i++)); do
		code=$(curl -sk -o /dev/null -m 1 -w '%{http_code}' "https://127.0.0.1:${port[$p]}$path" 2>/dev/null) || true
		if [[ $code == 200 ]]; then ok=1; break; fi
		sleep 0.1
	done
	((ok)) || bench_die "$p did not serve over TLS: $(tail -n 20 "${log[$p]}")"
done

# handshakes NAME CIPHER: full TLS 1.2 handshakes per second (s_time -new, <clients> at once) and the
# proxy's CPU per handshake.
declare -A r_hs r_hs_cpu
handshakes() {
	local name=$1 cipher=$2 key=$3 counted=$4 t0 t1 i n total=0 cpu rate target=${port[$1]}
	local -a hp=()
	[[ $key == ecdsa ]] || target=${rsa_port[$name]}
	t0=$(bench_cpu_ticks "${pid[$name]}")
	for ((i = 0; i < clients * ${nthreads[$name]}; i++)); do
		timeout "$((duration + 30))" openssl s_time -connect "127.0.0.1:$target" -new -tls1_2 \
			-cipher "$cipher" -time "$duration" >"$BENCH_TMP/stime-$name-$i.out" 2>&1 &
		hp+=("$!")
	done
	for i in "${!hp[@]}"; do
		wait "${hp[i]}" || bench_die "s_time failed against $name: $(cat "$BENCH_TMP/stime-$name-$i.out")"
		n=$(awk '/connections in [0-9.]+s;/ { print $1; exit }' "$BENCH_TMP/stime-$name-$i.out")
		[[ -n $n ]] || bench_die "cannot read s_time's report: $(cat "$BENCH_TMP/stime-$name-$i.out")"
		total=$((total + n))
	done
	t1=$(bench_cpu_ticks "${pid[$name]}")
	((total > 0)) || bench_die "no handshake completed against $name"
	rate=$(awk -v n="$total" -v s="$duration" 'BEGIN { printf "%.1f", n / s }')
	cpu=$(awk -v t=$((t1 - t0)) -v hz="$clk_tck" -v n="$total" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
	bench_log "$(printf '  %-8s %-6s %-7s handshakes/s=%-9s cpu/handshake=%sus' "$name" "$key" "$counted" "$rate" "$cpu")"
	if [[ $counted == round ]]; then
		r_hs[$name-$key]+="$rate "
		r_hs_cpu[$name-$key]+="$cpu "
	fi
}

declare -A r_rps r_cpu r_errs
keepalive() {
	local name=$1 counted=$2 out t0 t1 rps p99 reqs errs cpu
	out="$BENCH_TMP/wrk-$name.out"
	t0=$(bench_cpu_ticks "${pid[$name]}")
	timeout "$((duration + 30))" wrk -t"${nthreads[$name]}" -c"$connections" -d"${duration}s" --latency \
		"https://127.0.0.1:${port[$name]}$path" >"$out" 2>&1 || bench_die "wrk failed against $name: $(cat "$out")"
	t1=$(bench_cpu_ticks "${pid[$name]}")
	read -r rps p99 reqs errs < <(bench_wrk_parse "$out") || bench_die "cannot read wrk's report: $(cat "$out")"
	((reqs > 0)) || bench_die "no request completed against $name"
	cpu=$(awk -v t=$((t1 - t0)) -v hz="$clk_tck" -v n="$reqs" 'BEGIN { printf "%.3f", t / hz * 1e6 / n }')
	bench_log "$(printf '  %-8s %-7s rps=%-10s p99=%8.3fms cpu/req=%7.2fus errors=%s' "$name" "$counted" "$rps" \
		"$(awk -v v="$p99" 'BEGIN { print v / 1000 }')" "$cpu" "$errs")"
	if [[ $counted == round ]]; then
		r_rps[$name]+="$rps "
		r_cpu[$name]+="$cpu "
		r_errs[$name]=$((${r_errs[$name]:-0} + errs))
	fi
}

declare -A m_idle
idle_test() {
	local name=$1 before after out hp i rc=0 state=""
	out="$BENCH_TMP/idle-$name.out"
	before=$(bench_rss_kib "${pid[$name]}")
	python3 "$script_dir/idle-conns.py" --tls --port "${port[$name]}" --path "$path" --count "$idle_count" \
		--parallel 16 --timeout 240 --hold 300 >"$out" 2>&1 &
	hp=$!
	bench_track "$hp"
	for ((i = 0; i < 2500; i++)); do
		if grep -qs '^ready ' "$out"; then state=ready; break; fi
		kill -0 "$hp" 2>/dev/null || break
		sleep 0.1
	done
	[[ $state == ready ]] && sleep 1 && after=$(bench_rss_kib "${pid[$name]}")
	kill -TERM "$hp" 2>/dev/null || true
	wait "$hp" || rc=$?
	bench_untrack "$hp"
	[[ $state == ready && $rc == 0 ]] || bench_die "idle TLS connections to $name failed: $(cat "$out")"
	grep -q "^done open=$idle_count closed_by_peer=0\$" "$out" || bench_die "$name closed idle connections: $(cat "$out")"
	m_idle[$name]=$(((after - before) * 1024 / idle_count))
	bench_log "  $name idle: VmRSS ${before} KiB -> ${after} KiB for $idle_count TLS connections"
}

idle_pct=$(bench_idle_pct 2)
((idle_pct >= 90)) || bench_log "warning: the machine was only ${idle_pct}% idle before the run: the figures will be noisy"
bench_log "lbd TLS benchmark: threads $threads_list, s_time x$clients per thread, wrk -tN -c$connections, ${duration}s rounds, $rounds round(s)"
# Idle connections first, on fresh processes: after the load, what each allocator kept from thousands of
# closed connections (glibc's heap in HAProxy; lbd gives it back with malloc_trim()) would be counted too.
bench_log "idle connections"
for p in "${proxies[@]}"; do
	idle_test "$p"
done
bench_log "warm-up"
for p in "${proxies[@]}"; do
	handshakes "$p" ECDHE-ECDSA-AES128-GCM-SHA256 ecdsa warmup
	keepalive "$p" warmup
done
for ((r = 1; r <= rounds; r++)); do
	bench_log "round $r/$rounds"
	for p in "${proxies[@]}"; do
		handshakes "$p" ECDHE-ECDSA-AES128-GCM-SHA256 ecdsa round
		handshakes "$p" ECDHE-RSA-AES128-GCM-SHA256 rsa round
		keepalive "$p" round
	done
done

median() {
	local -a v
	read -r -a v <<<"$1"
	bench_median "${v[@]}"
}
printf '\n%-10s %14s %14s %14s %14s %12s %12s %14s %7s\n' proxy ecdsa_hs/s ecdsa_cpu_us rsa_hs/s rsa_cpu_us \
	req/s cpu_us/req idle_B/conn errors
failed=0
declare -A m
for p in "${proxies[@]}"; do
	m[$p-ecdsa]=$(median "${r_hs[$p-ecdsa]}")
	m[$p-rsa]=$(median "${r_hs[$p-rsa]}")
	m[$p-rps]=$(median "${r_rps[$p]}")
	printf '%-10s %14.0f %14.0f %14.0f %14.0f %12.0f %12.2f %14s %7s\n' "$p" "${m[$p-ecdsa]}" \
		"$(median "${r_hs_cpu[$p-ecdsa]}")" "${m[$p-rsa]}" "$(median "${r_hs_cpu[$p-rsa]}")" "${m[$p-rps]}" \
		"$(median "${r_cpu[$p]}")" "${m_idle[$p]}" "${r_errs[$p]}"
	((${r_errs[$p]} == 0)) || failed=1
done
for n in "${thread_counts[@]}"; do
	suffix=""
	((${#thread_counts[@]} == 1)) || suffix="-$n"
	l=lbd$suffix h=haproxy$suffix
	awk -v a="${m[$l-ecdsa]}" -v b="${m[$h-ecdsa]}" -v c="${m[$l-rsa]}" -v d="${m[$h-rsa]}" \
		-v e="${m[$l-rps]}" -v f="${m[$h-rps]}" -v n="$n" \
		'BEGIN { printf "ratio lbd/haproxy threads=%s ecdsa_hs=%.2f rsa_hs=%.2f rps=%.2f\n", n, a / b, c / d, e / f }'
	printf 'idle_rss_per_tls_conn threads=%s lbd=%s haproxy=%s\n' "$n" "${m_idle[$l]}" "${m_idle[$h]}"
done
((failed == 0)) || { bench_log "some requests failed: the figures above are not trustworthy"; exit 1; }

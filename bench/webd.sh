#!/usr/bin/env bash
# webd against the database alone: the same PostgreSQL cluster, the same
# number of client connections, the same statements. wrk drives
# authenticated GET /tasks/{id} (ids at random among seeded tasks) and
# POST /tasks through webd; pgbench runs the equivalent prepared SELECT ...
# WHERE id = $1 AND user_id = $2 and INSERT ... RETURNING directly
# (-n -M prepared, custom scripts). The ratio webd/pgbench tells how much of
# the database's throughput survives webd's own work (HTTP, token check,
# JSON, activity log).
#
# Everything runs on this machine: a throwaway cluster (initdb as the
# postgres user, TCP on 127.0.0.1 with scram-sha-256), webd with its default
# pool, wrk and pgbench with one thread each. Needs root (runuser), wrk,
# curl, python3 and PostgreSQL 15. Each kind of load has a warm-up, then
# the rounds alternate webd and pgbench; medians are printed:
#
#   kind  webd_req/s pgbench_tps webd_us pg_us wrk_us   pg_us pgb_us
#   read  ...
#   write ...
#   ratio webd/pgbench read=R write=W
#
# The *_us columns are CPU time per request, in microseconds, from
# /proc/PID/stat: webd's, the cluster's (postmaster, backends, background
# processes) and the load generator's, for the webd run and for the pgbench
# run. On a shared or small machine they say more than req/s: they show
# where the time goes. Every process started here is stopped by its PID
# (the cluster with pg_ctl stop) when the script exits.
set -euo pipefail

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(dirname -- "$script_dir")
# shellcheck source=lib.sh
source "$script_dir/lib.sh"

connections=16
pool=4
duration=10
rounds=1
warmup=2
seed_tasks=10000
webd_bin="$repo_dir/build/webd/webd"
webd_extra=()
pg_bin=/usr/lib/postgresql/15/bin

usage() {
	cat <<EOF
usage: bench/webd.sh [options]
  --connections N   wrk connections = pgbench clients (default $connections)
  --pool N          webd's database connections, pool_size (default $pool, webd's default)
  --duration S      seconds per measurement (default $duration)
  --rounds N        measurements of each kind, alternating webd and pgbench (default $rounds)
  --warmup S        seconds of warm-up of each kind, not counted (default $warmup)
  --webd PATH       webd binary (default build/webd/webd)
  --webd-arg ARG    extra argument for webd (repeatable), e.g. --webd-arg --set=webd.activity=off
  --quick           smoke run: 3 s measurements, 1 s warm-up
  -h, --help        this text
EOF
}

while (($# > 0)); do
	case "$1" in
	--connections) connections=$2; shift ;;
	--pool) pool=$2; shift ;;
	--duration) duration=$2; shift ;;
	--rounds) rounds=$2; shift ;;
	--warmup) warmup=$2; shift ;;
	--webd) webd_bin=$2; shift ;;
	--webd-arg) webd_extra+=("$2"); shift ;;
	--quick) duration=3; warmup=1 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
	shift
done

for n in connections pool duration rounds warmup; do
	[[ ${!n} =~ ^[0-9]+$ ]] || bench_die "--$n must be a number"
done
((connections >= 1 && connections <= 150)) || bench_die "--connections must be 1..150"
((pool >= 1 && pool <= 64)) || bench_die "--pool must be 1..64"
((duration >= 1 && duration <= 120 && rounds >= 1 && rounds <= 20)) || bench_die "duration 1..120 s, rounds 1..20"
[[ -x $webd_bin ]] || bench_die "webd not found at $webd_bin (build it, or --webd PATH)"
for tool in wrk curl runuser ss "$pg_bin/initdb" "$pg_bin/pg_ctl" "$pg_bin/pgbench" "$pg_bin/psql"; do
	command -v "$tool" >/dev/null || bench_die "$tool is needed"
done
((EUID == 0)) || bench_die "run as root: the cluster is run as the postgres user through runuser"
id postgres >/dev/null 2>&1 || bench_die "no postgres user"

trap 'pg_stop; bench_cleanup' EXIT
trap 'exit 130' INT TERM
bench_tmpdir
pg_dir="$BENCH_TMP/pg"
pg_running=false

pg() {
	runuser -u postgres -- "$@"
}

pg_stop() {
	if $pg_running; then
		pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
		pg_running=false
	fi
}

# --- PostgreSQL: a throwaway cluster, TCP on 127.0.0.1 with scram-sha-256 ----
mkdir -p "$pg_dir/sock"
chown -R postgres: "$pg_dir"
chmod 700 "$pg_dir"
pg_port=""
bench_free_port pg_port
password=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$pg_dir/superpw"
chown postgres: "$pg_dir/superpw"
bench_log "initdb in $pg_dir"
pg "$pg_bin/initdb" -D "$pg_dir/data" -U postgres -E UTF8 --locale=C --auth-host=scram-sha-256 \
	--auth-local=peer --pwfile="$pg_dir/superpw" >"$BENCH_TMP/initdb.log" 2>&1 ||
	bench_die "initdb failed: $(tail -n 5 "$BENCH_TMP/initdb.log")"
rm -f "$pg_dir/superpw"
pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -t 30 \
	-o "-p $pg_port -k $pg_dir/sock -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null ||
	bench_die "PostgreSQL did not start: $(tail -n 5 "$pg_dir/postgres.log")"
pg_running=true
postmaster=$(head -n 1 "$pg_dir/data/postmaster.pid")

admin_sql() {
	pg "$pg_bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$pg_dir/sock" -p "$pg_port" -At "$@"
}
admin_sql -d postgres -c "CREATE ROLE webd LOGIN PASSWORD '$password'"
admin_sql -d postgres -c "CREATE DATABASE webd OWNER webd"
conninfo="host=127.0.0.1 port=$pg_port dbname=webd user=webd password=$password"

# --- webd ---------------------------------------------------------------------
webd_port=""
bench_free_port webd_port
url="http://127.0.0.1:$webd_port"
cat >"$BENCH_TMP/webd.conf" <<EOF
[webd]
listen = 127.0.0.1:$webd_port
pool_size = $pool
secret_file = $BENCH_TMP/jwt.key
EOF
WEBD_DATABASE=$conninfo "$webd_bin" --config "$BENCH_TMP/webd.conf" "${webd_extra[@]}" \
	</dev/null >/dev/null 2>"$BENCH_TMP/webd.log" &
webd_pid=$!
bench_track "$webd_pid"
bench_wait_http "$url/healthcheck" 20 || bench_die "webd did not become healthy: $(tail -n 5 "$BENCH_TMP/webd.log")"

json_field() {
	python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}
api() {
	curl -sS -m 10 -H 'Content-Type: application/json' "$@"
}
user_id=$(api -d '{"username":"bench","password":"bench password"}' "$url/auth/register" | json_field id)
token=$(api -d '{"username":"bench","password":"bench password"}' "$url/auth/login" | json_field token)
[[ $user_id =~ ^[0-9]+$ && -n $token ]] || bench_die "could not register and log in"

# The tasks the reads pick from, at random, in both tools.
admin_sql -d webd -c "INSERT INTO tasks (user_id, title, description)
	SELECT $user_id, 'task ' || i, 'seeded for the benchmark' FROM generate_series(1, $seed_tasks) AS i"
admin_sql -d webd -c "VACUUM ANALYZE tasks"
read -r id_min id_max < <(admin_sql -d webd -F ' ' -c "SELECT min(id), max(id) FROM tasks")
code=$(curl -sS -m 10 -o "$BENCH_TMP/check.json" -w '%{http_code}' -H "Authorization: Bearer $token" \
	"$url/tasks/$id_max") || true
[[ $code == 200 ]] || bench_die "GET /tasks/$id_max answered $code: $(cat "$BENCH_TMP/check.json")"

# --- the two loads, described twice -------------------------------------------
cat >"$BENCH_TMP/read.lua" <<EOF
wrk.headers["Authorization"] = "Bearer $token"
request = function()
	return wrk.format("GET", "/tasks/" .. math.random($id_min, $id_max))
end
EOF
cat >"$BENCH_TMP/write.lua" <<EOF
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer $token"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"title":"bench","description":"written by the benchmark"}'
EOF
cat >"$BENCH_TMP/read.sql" <<EOF
\\set id random($id_min, $id_max)
SELECT id, title, description, done, created_at, updated_at FROM tasks WHERE id = :id AND user_id = :uid;
EOF
cat >"$BENCH_TMP/write.sql" <<EOF
INSERT INTO tasks (user_id, title, description, done) VALUES (:uid, 'bench', 'written by the benchmark', false) RETURNING id, title, description, done, created_at, updated_at;
EOF
chmod 644 "$BENCH_TMP"/*.sql

# pg_ticks: CPU clock ticks used so far by the cluster: the postmaster, its live children, and the
# children it has reaped (pgbench's backends exit before the run is measured).
pg_ticks() {
	local rest live
	local -a f
	# shellcheck disable=SC2046 # one argument per PID
	live=$(bench_cpu_ticks $(pgrep -P "$postmaster" 2>/dev/null || true))
	rest=$(cat "/proc/$postmaster/stat")
	rest=${rest##*) }
	read -r -a f <<<"$rest"
	printf '%s\n' $((live + f[11] + f[12] + f[13] + f[14]))
}

# children_ticks PID: CPU clock ticks of the children the (sub)shell PID has waited for.
children_ticks() {
	local rest
	local -a f
	rest=$(cat "/proc/$1/stat")
	rest=${rest##*) }
	read -r -a f <<<"$rest"
	printf '%s\n' $((f[13] + f[14]))
}

# us_per N TICKS: microseconds of CPU per request.
us_per() {
	awk -v n="$1" -v t="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (n > 0 ? t * 1e6 / hz / n : 0) }'
}

# run_wrk KIND SECONDS: print "req/s webd_us postgres_us wrk_us" (CPU per request); fails on any error or
# non-2xx answer.
run_wrk() {
	local out="$BENCH_TMP/wrk-$1.txt" pid parsed rps reqs errs w0 p0 c0 w1 p1 c1 me=$BASHPID
	w0=$(bench_cpu_ticks "$webd_pid") p0=$(pg_ticks) c0=$(children_ticks "$me")
	wrk -t1 -c"$connections" -d"$2"s --latency -s "$BENCH_TMP/$1.lua" "$url/tasks" >"$out" 2>&1 &
	pid=$!
	bench_track "$pid"
	wait "$pid" || true
	bench_untrack "$pid"
	w1=$(bench_cpu_ticks "$webd_pid") p1=$(pg_ticks) c1=$(children_ticks "$me")
	parsed=$(bench_wrk_parse "$out") || bench_die "wrk failed: $(cat "$out")"
	read -r rps _ reqs errs <<<"$parsed"
	((errs == 0)) || bench_die "wrk saw $errs errors or non-2xx answers: $(cat "$out")"
	printf '%s %s %s %s\n' "$rps" "$(us_per "$reqs" $((w1 - w0)))" "$(us_per "$reqs" $((p1 - p0)))" \
		"$(us_per "$reqs" $((c1 - c0)))"
}

# run_pgbench KIND SECONDS: print "tps postgres_us pgbench_us" (excluding connection time).
run_pgbench() {
	local out="$BENCH_TMP/pgbench-$1.txt" pid tps n p0 c0 p1 c1 me=$BASHPID
	p0=$(pg_ticks) c0=$(children_ticks "$me")
	PGPASSWORD=$password "$pg_bin/pgbench" -n -h 127.0.0.1 -p "$pg_port" -U webd -c "$connections" -j 1 \
		-T "$2" -M prepared -D uid="$user_id" -f "$BENCH_TMP/$1.sql" webd >"$out" 2>&1 &
	pid=$!
	bench_track "$pid"
	wait "$pid" || bench_die "pgbench failed: $(tail -n 5 "$out")"
	bench_untrack "$pid"
	sleep 0.2 # let the postmaster reap the backends, so their CPU time is counted
	p1=$(pg_ticks) c1=$(children_ticks "$me")
	tps=$(awk '/^tps = / { print $3; exit }' "$out")
	n=$(awk '/^number of transactions actually processed:/ { print $NF; exit }' "$out")
	[[ -n $tps && -n $n ]] || bench_die "no tps in pgbench's report: $(cat "$out")"
	printf '%s %s %s\n' "$tps" "$(us_per "$n" $((p1 - p0)))" "$(us_per "$n" $((c1 - c0)))"
}

bench_log "warm-up: ${warmup}s of each; then $rounds round(s) of ${duration}s, $connections connections each"
if ((warmup > 0)); then
	for kind in read write; do
		run_wrk "$kind" "$warmup" >/dev/null
		run_pgbench "$kind" "$warmup" >/dev/null
	done
fi

# results[NAME_KIND]: the values of every round, space-separated.
declare -A results
names=(webd_rps webd_us webd_pg_us wrk_us pgbench_tps pgbench_pg_us pgbench_us)
for kind in read write; do
	for name in "${names[@]}"; do
		results[${name}_$kind]=""
	done
done
for ((round = 1; round <= rounds; round++)); do
	for kind in read write; do
		read -r rps wus wpg wcl < <(run_wrk "$kind" "$duration")
		read -r tps ppg pcl < <(run_pgbench "$kind" "$duration")
		bench_log "round $round $kind: webd $rps req/s (CPU us/req: webd $wus, postgres $wpg, wrk $wcl)," \
			"pgbench $tps tps (postgres $ppg, pgbench $pcl)"
		results[webd_rps_$kind]+=" $rps"
		results[webd_us_$kind]+=" $wus"
		results[webd_pg_us_$kind]+=" $wpg"
		results[wrk_us_$kind]+=" $wcl"
		results[pgbench_tps_$kind]+=" $tps"
		results[pgbench_pg_us_$kind]+=" $ppg"
		results[pgbench_us_$kind]+=" $pcl"
	done
done

# The activity log's own account: a row dropped (the queue full) is work the figures above did not pay for.
metric() {
	curl -sS -m 5 "$url/metrics" | awk -v name="$1" '$1 == name { sum += $2 } END { printf "%d\n", sum }'
}
for ((i = 0; i < 50; i++)); do
	[[ $(metric webd_activity_queued) == 0 ]] && break
	sleep 0.2
done
dropped=$(curl -sS -m 5 "$url/metrics" |
	awk '$1 ~ /^webd_activity_dropped_total/ { sum += $2 } END { printf "%d\n", sum }')
activity_line="activity rows: written $(metric webd_activity_written_total)"
activity_line+=" (with COPY $(metric webd_activity_copied_total)), dropped $dropped"

median() {
	# shellcheck disable=SC2086 # the list is meant to be split into arguments
	bench_median ${results[$1]}
}
printf '%-6s %11s %12s %8s %8s %8s %12s %8s %8s\n' kind webd_req/s pgbench_tps \
	webd_us pg_us wrk_us "" pg_us pgb_us
for kind in read write; do
	printf '%-6s %11.0f %12.0f %8.1f %8.1f %8.1f %12s %8.1f %8.1f\n' "$kind" \
		"$(median "webd_rps_$kind")" "$(median "pgbench_tps_$kind")" "$(median "webd_us_$kind")" \
		"$(median "webd_pg_us_$kind")" "$(median "wrk_us_$kind")" "" "$(median "pgbench_pg_us_$kind")" \
		"$(median "pgbench_us_$kind")"
done
awk -v wr="$(median webd_rps_read)" -v pr="$(median pgbench_tps_read)" -v ww="$(median webd_rps_write)" \
	-v pw="$(median pgbench_tps_write)" \
	'BEGIN { printf "ratio webd/pgbench read=%.2f write=%.2f\n", wr / pr, ww / pw }'
printf '%s\n' "$activity_line"
((dropped == 0)) || printf 'warning: %s activity rows were dropped: the figures undercount the table\n' "$dropped"

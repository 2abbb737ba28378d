#!/usr/bin/env bash
# authz.sh: meshid's ext_authz server, with its decision cache and without,
# against a no-op ext_authz server on the same gRPC stack (bench/authznoop),
# all driven by the same load (bench/authzload) on loopback, at concurrency
# 1, 8 and 32, in one run. At each concurrency the three servers take
# turns (ROUNDS rounds, each server warmed up for a second and then
# measured for DURATION/ROUNDS in each), so that other load on the machine
# falls on all three alike rather than on whichever ran while it lasted. Prints throughput and p50/p99 latency side by
# side, the throughput ratios meshid / no-op with the goal (>= 0.9x at c=8
# and c=32 with the cache, 0 errors), and meshid's resident memory under
# the load (goal <= 55 MB).
#
#   bench/authz.sh                          # 5 s measured per server and concurrency, ~1.5 min
#   DURATION=10s CONCURRENCY="1 8 32 64" bench/authz.sh
#   MIX=0 bench/authz.sh                    # one request over and over instead of the mix
#
# meshid runs as `meshid run` with the shipped policies (policies/envoy).
# The load is a mesh's mix (authzload -mix): the demo frontend's pods
# calling the backend's /hello with a few queries and clients most of the
# time, other paths and other callers now and then; meshid must answer each
# as the demo policy decides (-expect), the no-op allows all. With at least
# two CPUs the servers get the last CPU and the load generator the others
# (taskset), so the two do not steal each other's time.
#
# Exits non-zero only when the benchmark cannot run; BELOW is a verdict to
# read, not a failure (benchmarks on a shared machine are noisy).
set -euo pipefail

duration="${DURATION:-5s}"
rounds="${ROUNDS:-3}"
concurrency="${CONCURRENCY:-1 8 32}"
mix="${MIX:-1}"
goal="0.9"
goal_cs="8 32"
goal_rss_mb="55"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/meshid-authz-bench.XXXXXX")"
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

(cd "$root" && go build -o "$work/meshid" ./cmd/meshid &&
	go build -o "$work/authznoop" ./bench/authznoop &&
	go build -o "$work/authzload" ./bench/authzload)

# CPU split: servers on the last CPU, load on the rest.
ncpu="$(nproc)"
server_cpus="" load_cpus=""
if [ "$ncpu" -ge 2 ] && command -v taskset >/dev/null; then
	server_cpus="taskset -c $((ncpu - 1))"
	load_cpus="taskset -c 0-$((ncpu - 2))"
fi

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_tcp waits until something accepts connections on 127.0.0.1:$1.
wait_tcp() {
	for _ in $(seq 200); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	echo "authz.sh: nothing listens on 127.0.0.1:$1; logs in $work" >&2
	return 1
}

noop_port="$(free_port)"
$server_cpus "$work/authznoop" -listen "127.0.0.1:$noop_port" 2>"$work/authznoop.log" &
pids+=($!)

# meshid_config PORT ADMIN_PORT CACHE writes a meshid.yaml for one meshid.
meshid_config() {
	cat <<EOF
trust_domain: example.org
data_dir: $work/data-$3
socket_path: $work/sock-$3/agent.sock
entries_file: $work/entries.yaml
authz:
  address: 127.0.0.1:$1
  policy_dir: $root/policies
  cache:
    enabled: $3
admin:
  address: 127.0.0.1:$2
log:
  level: warn
EOF
}
echo "entries: []" >"$work/entries.yaml"
declare -A port admin pid
for cache in true false; do
	port[$cache]="$(free_port)"
	admin[$cache]="$(free_port)"
	meshid_config "${port[$cache]}" "${admin[$cache]}" "$cache" >"$work/meshid-cache-$cache.yaml"
	$server_cpus "$work/meshid" run -config "$work/meshid-cache-$cache.yaml" 2>"$work/meshid-cache-$cache.log" &
	pids+=($!)
	pid[$cache]=$!
done

wait_tcp "$noop_port"
wait_tcp "${port[true]}"
wait_tcp "${port[false]}"

# rss_kb PID: the resident size of PID now and its peak so far, in kB.
rss_kb() { awk '/^VmRSS:/ {rss = $2} /^VmHWM:/ {hwm = $2} END {print rss, hwm}' "/proc/$1/status"; }

load_flags=()
[ "$mix" = 1 ] && load_flags=(-mix)
expect=""
[ "$mix" = 1 ] && expect=",expect"
results="$work/results.txt"
: >"$results"
for c in $concurrency; do
	$load_cpus "$work/authzload" -c "$c" -d "$duration" -rounds "$rounds" "${load_flags[@]}" \
		-server "noop=127.0.0.1:$noop_port" \
		-server "meshid=127.0.0.1:${port[true]}$expect" \
		-server "meshid-nocache=127.0.0.1:${port[false]}$expect" 2>>"$work/authzload.log" |
		while read -r server line; do
			server="${server#server=}"
			rss=""
			case "$server" in
			meshid) read -r now peak < <(rss_kb "${pid[true]}"); rss="rss_kb=$now hwm_kb=$peak" ;;
			meshid-nocache) read -r now peak < <(rss_kb "${pid[false]}"); rss="rss_kb=$now hwm_kb=$peak" ;;
			esac
			echo "$server $line $rss" >>"$results"
		done
done
hits="$(curl -s "http://127.0.0.1:${admin[true]}/metrics" 2>/dev/null |
	awk '/^meshid_authz_cache_hits_total/ {h = $2} /^meshid_authz_cache_misses_total/ {m = $2} END {if (h + m > 0) printf "%.0f hits, %.0f misses: %.1f%% of the decisions from the cache", h, m, 100 * h / (h + m)}')"

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//') ($ncpu CPUs${server_cpus:+; servers on CPU $((ncpu - 1)), load on the rest})  $(go version | cut -d' ' -f3)"
if [ "$mix" = 1 ]; then
	echo "load: $duration per server and concurrency, in $rounds turns; a mesh's mix of 48 requests (authzload -mix), answered as policies/envoy decides"
else
	echo "load: $duration per server and concurrency, in $rounds turns; the demo frontend's GET /hello, allowed by policies/envoy"
fi
echo
awk -v goal="$goal" -v goal_cs="$goal_cs" -v goal_rss="$goal_rss_mb" -v work="$work" -v hits="$hits" '
function field(name,    i, kv) {
	for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] }
	return ""
}
{
	s = $1; c = field("c")
	rps[s, c] = field("rps"); p50[s, c] = field("p50_us"); p99[s, c] = field("p99_us")
	errs[s, c] = field("errors")
	if (field("hwm_kb") + 0 > hwm[s] + 0) hwm[s] = field("hwm_kb")
	if (!(c in seen)) { seen[c] = 1; order[++n] = c }
}
END {
	printf "%5s | %26s | %26s | %26s | %15s\n", "", "no-op ext_authz", "meshid, decision cache", "meshid, no cache", "ratio to no-op"
	printf "%5s | %8s %8s %8s | %8s %8s %8s | %8s %8s %8s | %7s %7s %s\n", "c", "req/s", "p50 us", "p99 us", "req/s", "p50 us", "p99 us", "req/s", "p50 us", "p99 us", "cache", "none", "errors"
	split(goal_cs, gcs, " "); for (i in gcs) isgoal[gcs[i]] = 1
	verdict = "PASS"; total = 0; goals = ""
	for (k = 1; k <= n; k++) {
		c = order[k]
		ratio = rps["noop", c] > 0 ? rps["meshid", c] / rps["noop", c] : 0
		ratio0 = rps["noop", c] > 0 ? rps["meshid-nocache", c] / rps["noop", c] : 0
		e = errs["noop", c] + errs["meshid", c] + errs["meshid-nocache", c]; total += e
		printf "%5s | %8.0f %8.1f %8.1f | %8.0f %8.1f %8.1f | %8.0f %8.1f %8.1f | %6.2fx %6.2fx %d\n", c,
			rps["noop", c], p50["noop", c], p99["noop", c],
			rps["meshid", c], p50["meshid", c], p99["meshid", c],
			rps["meshid-nocache", c], p50["meshid-nocache", c], p99["meshid-nocache", c], ratio, ratio0, e
		if (c in isgoal) { goals = goals sprintf(" c=%s %.2fx", c, ratio); if (ratio < goal + 0) verdict = "BELOW" }
	}
	if (total > 0) verdict = "BELOW"
	rssmb = hwm["meshid"] / 1024; rss0mb = hwm["meshid-nocache"] / 1024
	if (rssmb > goal_rss + 0) verdict = "BELOW"
	printf "\nmeshid (decision cache) / no-op throughput:%s   (goal >= %.1fx at c=%s, 0 errors; %d errors in all)\n", goals, goal, goal_cs, total
	printf "meshid resident memory, peak: %.1f MB with the cache, %.1f MB without (goal <= %s MB)\n", rssmb, rss0mb, goal_rss
	if (hits != "") print "decision cache: " hits
	print verdict
	print "raw results and server logs: " work
}' "$results"

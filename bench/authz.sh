#!/usr/bin/env bash
# authz.sh: meshid's ext_authz server against a no-op ext_authz server on
# the same gRPC stack (bench/authznoop), both driven by the same load
# (bench/authzload) on loopback, at concurrency 1, 8 and 32, in one run.
# Prints throughput and p50/p99 latency side by side and the throughput
# ratio meshid / no-op, with the goal (>= 0.7x at c=8, 0 errors).
#
#   bench/authz.sh                          # 5 s per server and concurrency, ~1 min
#   DURATION=10s CONCURRENCY="1 8 32 64" bench/authz.sh
#
# meshid runs as `meshid run` with the shipped policies (policies/envoy):
# the request, the demo frontend's GET /hello to the backend, is allowed by
# policy, so each call is a full decision. With at least two CPUs the
# servers get the last CPU and the load generator the others (taskset),
# so the two do not steal each other's time.
#
# Exits non-zero only when the benchmark cannot run; BELOW is a verdict to
# read, not a failure (benchmarks on a shared machine are noisy).
set -euo pipefail

duration="${DURATION:-5s}"
concurrency="${CONCURRENCY:-1 8 32}"
goal="0.7"
goal_c="8"

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

authz_port="$(free_port)"
admin_port="$(free_port)"
cat >"$work/meshid.yaml" <<EOF
trust_domain: example.org
data_dir: $work/data
socket_path: $work/sock/agent.sock
entries_file: $work/entries.yaml
authz:
  address: 127.0.0.1:$authz_port
  policy_dir: $root/policies
admin:
  address: 127.0.0.1:$admin_port
log:
  level: warn
EOF
echo "entries: []" >"$work/entries.yaml"
$server_cpus "$work/meshid" run -config "$work/meshid.yaml" 2>"$work/meshid.log" &
pids+=($!)

wait_tcp "$noop_port"
wait_tcp "$authz_port"

results="$work/results.txt"
: >"$results"
for c in $concurrency; do
	for server in noop meshid; do
		port="$noop_port"
		[ "$server" = meshid ] && port="$authz_port"
		line="$($load_cpus "$work/authzload" -addr "127.0.0.1:$port" -c "$c" -d "$duration")"
		echo "$server $line" >>"$results"
	done
done

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//') ($ncpu CPUs${server_cpus:+; servers on CPU $((ncpu - 1)), load on the rest})  $(go version | cut -d' ' -f3)"
echo "load: $duration per server and concurrency; the demo frontend's GET /hello, allowed by policies/envoy"
echo
awk -v goal="$goal" -v goal_c="$goal_c" -v work="$work" '
function field(name,    i, kv) {
	for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] }
	return ""
}
{
	s = $1; c = field("c")
	rps[s, c] = field("rps"); p50[s, c] = field("p50_us"); p99[s, c] = field("p99_us")
	errs[s, c] = field("errors"); req[s, c] = field("requests")
	if (!(c in seen)) { seen[c] = 1; order[++n] = c }
}
END {
	printf "%5s | %26s | %26s | %7s\n", "", "no-op ext_authz", "meshid (policies/envoy)", ""
	printf "%5s | %8s %8s %8s | %8s %8s %8s | %7s %s\n", "c", "req/s", "p50 us", "p99 us", "req/s", "p50 us", "p99 us", "ratio", "errors"
	verdict = "BELOW"; total = 0
	for (k = 1; k <= n; k++) {
		c = order[k]
		ratio = rps["noop", c] > 0 ? rps["meshid", c] / rps["noop", c] : 0
		e = errs["noop", c] + errs["meshid", c]; total += e
		printf "%5s | %8.0f %8.1f %8.1f | %8.0f %8.1f %8.1f | %6.2fx %d\n", c,
			rps["noop", c], p50["noop", c], p99["noop", c],
			rps["meshid", c], p50["meshid", c], p99["meshid", c], ratio, e
		if (c == goal_c) { goal_ratio = ratio; if (ratio >= goal + 0 && e == 0) verdict = "PASS" }
	}
	printf "\nmeshid / no-op throughput at c=%s = %.2fx   (goal >= %.1fx, 0 errors; %d errors in all)   %s\n", goal_c, goal_ratio, goal, total, verdict
	print "raw results and server logs: " work
}' "$results"

#!/usr/bin/env bash
# issuance.sh: X509-SVID issuance rate against the raw crypto floor, both
# measured in one `go test` run. Prints ns/op, B/op and allocs/op (medians)
# and the ratio issuance rate / raw rate with the goal (>= 0.8x).
#
#   bench/issuance.sh                      # 5 runs of 1s each per benchmark
#   COUNT=10 BENCHTIME=2s bench/issuance.sh
#
# Exits non-zero only when the benchmarks cannot run; BELOW is a verdict to
# read, not a failure (benchmarks on a shared machine are noisy).
set -euo pipefail

count="${COUNT:-5}"
benchtime="${BENCHTIME:-1s}"
goal="0.8"
issue="BenchmarkIssueX509SVID"
raw="BenchmarkRawECDSAKeygenSign"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$(mktemp "${TMPDIR:-/tmp}/meshid-issuance.XXXXXX")"

if ! (cd "$root" && go test -run '^$' -bench "^($issue|$raw)\$" -benchmem \
	-count "$count" -benchtime "$benchtime" ./ca/) >"$out"; then
	cat "$out" >&2
	exit 1
fi

awk -v issue="$issue" -v raw="$raw" -v goal="$goal" -v raw_out="$out" '
# median of the n values in a[1..n] (sorted in place).
function median(a, n,    i, j, t) {
	for (i = 2; i <= n; i++) {
		t = a[i]
		for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]
		a[j + 1] = t
	}
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
/^(goos|goarch|cpu):/ { env = env $0 "  " }
$1 ~ "^(" issue "|" raw ")(-[0-9]+)?$" {
	name = $1; sub(/-[0-9]+$/, "", name)
	k = ++runs[name]
	for (i = 3; i < NF; i++) {
		if ($(i + 1) == "ns/op") ns[name, k] = $i
		if ($(i + 1) == "B/op") by[name, k] = $i
		if ($(i + 1) == "allocs/op") al[name, k] = $i
	}
}
END {
	if (!runs[issue] || !runs[raw]) {
		print "issuance.sh: no results for " issue " and " raw "; go test output in " raw_out > "/dev/stderr"
		exit 1
	}
	print env
	printf "%-28s %12s %10s %10s %5s\n", "benchmark (median)", "ns/op", "B/op", "allocs/op", "runs"
	split(issue " " raw, names, " ")
	for (b = 1; b <= 2; b++) {
		name = names[b]; n = runs[name]
		for (k = 1; k <= n; k++) { x[k] = ns[name, k]; y[k] = by[name, k]; z[k] = al[name, k] }
		med[name] = median(x, n)
		printf "%-28s %12.0f %10.0f %10.0f %5d\n", name, med[name], median(y, n), median(z, n), n
	}
	ratio = med[raw] / med[issue]
	verdict = (ratio >= goal + 0) ? "PASS" : "BELOW"
	printf "\nissuance rate / raw rate = %.2fx   (goal >= %.1fx)   %s\n", ratio, goal, verdict
	print "go test output: " raw_out
}' "$out"

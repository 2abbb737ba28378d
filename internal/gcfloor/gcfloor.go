// Package gcfloor keeps the Go heap from being collected while it is still
// small.
//
// With the runtime's default GOGC=100 the heap is collected each time it
// doubles. meshid's live heap is a few megabytes (its CA, entries and
// compiled policies), while every ext_authz decision allocates a few
// kilobytes of garbage: left alone, a node answering tens of thousands of
// decisions a second collects dozens of times a second and spends a fifth
// of its CPU doing it. A floor lets the heap grow to a fixed size before
// a collection (as if GOGC were raised while the live heap is small) and
// falls back to GOGC=100 as soon as the live heap is large enough for the
// floor not to matter, so memory stays bounded by max(floor, 2 × live).
//
// The floor is what GOMEMLIMIT is not: a limit bounds the heap from above
// and makes the collector work harder near it; a floor bounds the work
// from above while the heap is small. Operators who set GOGC or
// GOMEMLIMIT themselves keep exactly what they set: Run does nothing then.
package gcfloor

import (
	"context"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// DefaultFloor is the heap size below which meshid does not collect.
const DefaultFloor = 12 << 20

const (
	defaultPercent = 100
	// maxPercent bounds GOGC however small the live heap: 32 MiB over a
	// 1 MiB heap would be 3100, and a heap that small does not need it.
	maxPercent = 1600
	// interval is how often the live heap is looked at. It changes when
	// entries or policies are reloaded, not from one request to the next.
	interval = time.Second
)

// Percent is the GOGC that makes the next collection happen at about
// floor bytes of heap, given live bytes of live heap: never below the
// runtime's default, never above maxPercent.
func Percent(floor, live uint64) int {
	if live == 0 || floor <= 2*live {
		return defaultPercent
	}
	return min(int((floor-live)*100/live), maxPercent)
}

// Overridden says whether the operator tuned the collector through the
// environment, in which case Run leaves it alone.
func Overridden() bool {
	_, gogc := os.LookupEnv("GOGC")
	_, limit := os.LookupEnv("GOMEMLIMIT")
	return gogc || limit
}

// Run keeps the collector's target at floor bytes, adjusting GOGC to the
// live heap every second, until ctx ends; then it restores the default.
// It does nothing if Overridden.
func Run(ctx context.Context, floor uint64, log *slog.Logger) {
	if Overridden() {
		log.Info("gc: GOGC or GOMEMLIMIT is set; meshid leaves the collector as configured")
		return
	}
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	current := defaultPercent
	apply := func() {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return
		}
		live := sample[0].Value.Uint64()
		want := Percent(floor, live)
		// SetGCPercent stops the world for a moment: only call it for a
		// change that matters.
		if want*10 < current*9 || want*10 > current*11 {
			debug.SetGCPercent(want)
			current = want
			log.Debug("gc: heap floor", "floor_bytes", floor, "live_bytes", live, "gogc", want)
		}
	}
	apply()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			debug.SetGCPercent(defaultPercent)
			return
		case <-t.C:
			apply()
		}
	}
}

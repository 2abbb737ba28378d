package gcfloor

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mib = 1 << 20
	for _, tt := range []struct {
		floor, live uint64
		want        int
	}{
		{32 * mib, 0, 100},        // nothing collected yet
		{32 * mib, 4 * mib, 700},  // collect at 4 + 28 = 32 MiB
		{32 * mib, 12 * mib, 166}, // collect at about 32 MiB
		{32 * mib, 16 * mib, 100}, // the default reaches the floor already
		{32 * mib, 64 * mib, 100}, // large heaps are the default's
		{32 * mib, 1024, 1600},    // bounded however small the heap
	} {
		if got := Percent(tt.floor, tt.live); got != tt.want {
			t.Errorf("Percent(%d MiB, %d) = %d, want %d", tt.floor/mib, tt.live, got, tt.want)
		}
	}
}

// gcPercent reads GOGC as the runtime has it now.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

func TestRunRaisesAndRestores(t *testing.T) {
	if Overridden() {
		t.Skip("GOGC or GOMEMLIMIT is set in this environment; Run leaves the collector alone by design")
	}
	runtime.GC() // a live heap to measure
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Run(ctx, 1<<40, slog.New(slog.DiscardHandler))
		close(done)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for gcPercent() != maxPercent {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC = %d after 5s, want %d under a 1 TiB floor", gcPercent(), maxPercent)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if p := gcPercent(); p != defaultPercent {
		t.Errorf("GOGC = %d after Run ended, want %d", p, defaultPercent)
	}
}

func TestRunLeavesOperatorSettings(t *testing.T) {
	t.Setenv("GOGC", "50")
	before := gcPercent()
	done := make(chan struct{})
	go func() {
		Run(context.Background(), 1<<40, slog.New(slog.DiscardHandler))
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return at once with GOGC set")
	}
	if p := gcPercent(); p != before {
		t.Errorf("GOGC changed from %d to %d although the environment sets it", before, p)
	}
}

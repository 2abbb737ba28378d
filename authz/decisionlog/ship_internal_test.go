package decisionlog

import (
	"testing"
	"time"
)

// TestShipBackoff: the wait after the n-th failure in a row doubles from
// MinDelay, is capped at MaxDelay, and is jittered down to half, however
// many failures there were.
func TestShipBackoff(t *testing.T) {
	s := NewShipper(ShipperOptions{MinDelay: 10 * time.Second, MaxDelay: time.Minute})
	for _, tc := range []struct {
		n        int
		min, max time.Duration
	}{
		{1, 5 * time.Second, 10 * time.Second},
		{2, 10 * time.Second, 20 * time.Second},
		{3, 20 * time.Second, 40 * time.Second},
		{4, 30 * time.Second, time.Minute},
		{40, 30 * time.Second, time.Minute},
		{1 << 20, 30 * time.Second, time.Minute},
	} {
		for range 100 {
			if d := s.backoff(tc.n); d < tc.min || d > tc.max {
				t.Fatalf("backoff(%d) = %v, want %v to %v", tc.n, d, tc.min, tc.max)
			}
		}
	}
}

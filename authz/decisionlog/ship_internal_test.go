package decisionlog

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
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

// countingUploads answers every upload 200 after delay, and counts them.
type countingUploads struct {
	delay time.Duration
	n     atomic.Int64
}

func (c *countingUploads) Upload(context.Context, []byte) (int, error) {
	c.n.Add(1)
	time.Sleep(c.delay)
	return http.StatusOK, nil
}

// Under steady traffic the buffer is never empty and never full; the
// slots of the events shipped are given back all the same, so that the
// buffer's memory follows what it holds, not how many ever passed.
func TestShipSteadyTrafficKeepsSlotsBounded(t *testing.T) {
	c := &countingUploads{delay: 2 * time.Millisecond}
	s := NewShipper(ShipperOptions{Collector: c, MinDelay: 20 * time.Millisecond, MaxDelay: 40 * time.Millisecond})
	l := New(Options{Shipper: s, QueueSize: 100000})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, nil) }()
	in := ast.MustParseTerm(`{"attributes":{"request":{"http":{"path":"/x"}}}}`).Value
	const total = 50000
	for i := range total {
		l.Add(&Record{ID: strconv.Itoa(i), Path: "data.x", Time: time.Now(), Input: in, Decision: ast.Boolean(true)})
		if i%20 == 0 {
			time.Sleep(50 * time.Microsecond)
		}
	}
	s.mu.Lock()
	slots, buffered := cap(s.buf), len(s.buf)-s.head
	s.mu.Unlock()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	t.Logf("%d events, %d shipped in %d uploads; %d buffered in %d slots", total, st.Shipped, c.n.Load(), buffered, slots)
	if st.Shipped < total/2 {
		t.Fatalf("only %d of %d shipped: the test did not run steady traffic", st.Shipped, total)
	}
	if slots > 4*buffered+4096 {
		t.Errorf("%d slots for %d buffered events: the slots of shipped events are kept", slots, buffered)
	}
}

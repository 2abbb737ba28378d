package logpace

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// clock is a test clock moved by hand.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

const every = 10 * time.Second

// TestAllow walks one pacer through a scenario a step at a time: each step
// moves the clock, then asks for key n times; the last answer is checked.
func TestAllow(t *testing.T) {
	type step struct {
		after        time.Duration // the clock moves this much first
		key          string
		n            int // Allow calls; 0 is 1
		ok           bool
		unlogged     int
		rememberKeys int // how many keys the pacer holds afterwards
	}
	tests := []struct {
		name    string
		maxKeys int
		steps   []step
	}{
		{"first line of a key is allowed", 8, []step{
			{key: "a", ok: true, rememberKeys: 1},
		}},
		{"a flood is held back until the interval passes", 8, []step{
			{key: "a", ok: true, rememberKeys: 1},
			{key: "a", n: 1000, ok: false, rememberKeys: 1},
			{after: every - time.Nanosecond, key: "a", ok: false, rememberKeys: 1},
			{after: time.Nanosecond, key: "a", ok: true, unlogged: 1001, rememberKeys: 1},
			{key: "a", ok: false, rememberKeys: 1},
		}},
		{"the count starts again after each allowed line", 8, []step{
			{key: "a", n: 6, ok: false, rememberKeys: 1},
			{after: every, key: "a", ok: true, unlogged: 5, rememberKeys: 1},
			{after: every, key: "a", ok: true, unlogged: 0, rememberKeys: 1},
		}},
		{"keys are paced apart", 8, []step{
			{key: "a", n: 3, ok: false, rememberKeys: 1},
			{key: "b", ok: true, rememberKeys: 2},
			{key: "b", ok: false, rememberKeys: 2},
			{after: every, key: "a", ok: true, unlogged: 2, rememberKeys: 2},
			{key: "b", ok: true, unlogged: 1, rememberKeys: 2},
		}},
		{"a full pacer allows every line of a new key", 2, []step{
			{key: "a", ok: true, rememberKeys: 1},
			{key: "b", ok: true, rememberKeys: 2},
			{key: "c", n: 100, ok: true, unlogged: 0, rememberKeys: 2},
			{key: "a", ok: false, rememberKeys: 2},
		}},
		{"a full pacer forgets keys whose interval passed", 2, []step{
			{key: "a", n: 4, ok: false, rememberKeys: 1},
			{after: every / 2, key: "b", ok: true, rememberKeys: 2},
			{after: every / 2, key: "c", ok: true, rememberKeys: 2}, // a forgotten
			{key: "a", ok: true, unlogged: 0, rememberKeys: 2},      // its 3 lost
			{key: "b", ok: false, rememberKeys: 2},
		}},
		{"one key", 1, []step{
			{key: "", n: 50, ok: false, rememberKeys: 1},
			{after: every, key: "", ok: true, unlogged: 49, rememberKeys: 1},
		}},
		{"no room at all paces nothing", 0, []step{
			{key: "a", n: 10, ok: true, rememberKeys: 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{now: time.Unix(1_700_000_000, 0)}
			p := New[string](every, tt.maxKeys, clk.Now)
			for i, s := range tt.steps {
				clk.now = clk.now.Add(s.after)
				var ok bool
				var unlogged int
				for range max(s.n, 1) {
					ok, unlogged = p.Allow(s.key)
				}
				if ok != s.ok || unlogged != s.unlogged {
					t.Fatalf("step %d (%q ×%d): Allow = %v, %d; want %v, %d", i, s.key, max(s.n, 1), ok, unlogged, s.ok, s.unlogged)
				}
				if len(p.keys) != s.rememberKeys {
					t.Fatalf("step %d: %d keys remembered, want %d", i, len(p.keys), s.rememberKeys)
				}
			}
		})
	}
}

// Many keys, as many refused uids make: the pacer holds no more than its
// bound, and once their intervals pass it makes room for new ones.
func TestKeysAreBounded(t *testing.T) {
	const most = 1024
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	p := New[uint32](every, most, clk.Now)
	lines := 0
	for k := range uint32(4 * most) {
		if ok, _ := p.Allow(k); ok {
			lines++
		}
	}
	if lines != 4*most || len(p.keys) != most {
		t.Fatalf("%d keys: %d lines allowed, %d keys remembered; want every line and %d keys", 4*most, lines, len(p.keys), most)
	}
	clk.now = clk.now.Add(every)
	if ok, _ := p.Allow(4 * most); !ok || len(p.keys) != 1 {
		t.Fatalf("after the interval: Allow = %v with %d keys remembered, want true with only the new key", ok, len(p.keys))
	}
}

// Concurrent callers lose no count: all but the first are held back and
// the next allowed line says so.
func TestAllowConcurrently(t *testing.T) {
	clk := &clock{now: time.Unix(1_700_000_000, 0)}
	p := New[string](every, 4, clk.Now)
	const callers, each = 8, 500
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := map[string]int{}
	for i := range callers {
		key := fmt.Sprint(i % 2)
		wg.Go(func() {
			for range each {
				if ok, _ := p.Allow(key); ok {
					mu.Lock()
					allowed[key]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if allowed["0"] != 1 || allowed["1"] != 1 {
		t.Fatalf("lines allowed per key: %v, want one each", allowed)
	}
	clk.now = clk.now.Add(every)
	for _, key := range []string{"0", "1"} {
		if ok, unlogged := p.Allow(key); !ok || unlogged != callers/2*each-1 {
			t.Errorf("key %s after the interval: Allow = %v, %d; want true, %d", key, ok, unlogged, callers/2*each-1)
		}
	}
}

// A nil clock is the wall clock.
func TestNilClockIsNow(t *testing.T) {
	p := New[int](time.Hour, 1, nil)
	if ok, _ := p.Allow(1); !ok {
		t.Fatal("first line held back")
	}
	if ok, _ := p.Allow(1); ok {
		t.Fatal("second line within the hour allowed")
	}
}

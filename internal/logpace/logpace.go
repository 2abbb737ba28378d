// Package logpace paces repeated log lines: for each key, the first line and
// then at most one an interval, each saying how many were held back since
// the last. It is a leaf any package may use (it imports nothing of
// meshid's): identity paces its refusals of callers by uid and reason with
// it, the workload socket its refused connections.
//
// It owns the decision and the count, never the line: the caller writes it,
// with its own message and fields, and counts every event in its metrics
// (a line held back is still an event). It starts no goroutine and reads
// time only from the clock it is given.
package logpace

import (
	"sync"
	"time"
)

// Pacer decides, key by key, whether a line may be written now. It is safe
// for concurrent use.
type Pacer[K comparable] struct {
	every   time.Duration
	maxKeys int
	clock   func() time.Time

	mu   sync.Mutex
	keys map[K]window
}

type window struct {
	logged   time.Time // when the last line for the key was allowed
	unlogged int       // lines held back since
}

// New returns a Pacer allowing one line per key every interval, on clock
// (nil is time.Now). It remembers at most maxKeys keys: when that many are
// remembered, those whose interval has passed are forgotten to make room,
// and a key that still finds no room is allowed every line. A pacer that
// cannot remember is too loud rather than silent: a key never seen before
// is one whose first line matters, and one flooding many keys at once is
// a flood the caller's metrics still count.
func New[K comparable](every time.Duration, maxKeys int, clock func() time.Time) *Pacer[K] {
	if clock == nil {
		clock = time.Now
	}
	return &Pacer[K]{every: every, maxKeys: maxKeys, clock: clock, keys: map[K]window{}}
}

// Allow reports whether a line for key may be written now: the first for
// key, or the first once the interval since the last allowed one has
// passed. When it may, unlogged is how many Allow held back for key since
// that last one; the caller puts it in the line.
func (p *Pacer[K]) Allow(key K) (ok bool, unlogged int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock()
	w, seen := p.keys[key]
	if seen && now.Sub(w.logged) < p.every {
		w.unlogged++
		p.keys[key] = w
		return false, 0
	}
	if !seen && !p.room(now) {
		return true, 0
	}
	p.keys[key] = window{logged: now}
	return true, w.unlogged
}

// room tells whether a new key can be remembered, forgetting those whose
// interval has passed when the pacer is full. A forgotten key's held-back
// count is lost with it (the caller's metrics still have those events).
func (p *Pacer[K]) room(now time.Time) bool {
	if len(p.keys) < p.maxKeys {
		return true
	}
	for k, w := range p.keys {
		if now.Sub(w.logged) >= p.every {
			delete(p.keys, k)
		}
	}
	return len(p.keys) < p.maxKeys
}

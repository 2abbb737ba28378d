// Package liveset keeps a record of each thing open now (a stream), for
// operators to read while its owner updates it. Each record has its own
// lock, so a reader copying all of them holds up one owner at a time and
// never for longer than a copy. It decides nothing about what a record
// holds.
package liveset

import (
	"maps"
	"slices"
	"sync"
)

// Set is the records open now; its zero value is empty and ready.
type Set[T any] struct {
	mu   sync.Mutex
	live map[*Record[T]]struct{}
}

// Record is one open thing's state, T, changed only through Update.
type Record[T any] struct {
	mu sync.Mutex
	v  T
}

// Add records v until the returned func is called.
func (s *Set[T]) Add(v T) (*Record[T], func()) {
	r := &Record[T]{v: v}
	s.mu.Lock()
	if s.live == nil {
		s.live = map[*Record[T]]struct{}{}
	}
	s.live[r] = struct{}{}
	s.mu.Unlock()
	return r, func() {
		s.mu.Lock()
		delete(s.live, r)
		s.mu.Unlock()
	}
}

// Update changes the record under its lock.
func (r *Record[T]) Update(f func(*T)) {
	r.mu.Lock()
	f(&r.v)
	r.mu.Unlock()
}

// Each returns what view makes of every record, each read under its own
// lock (view must copy what it keeps), in the order cmp sorts them.
func Each[T, V any](s *Set[T], view func(*T) V, cmp func(a, b V) int) []V {
	s.mu.Lock()
	records := slices.Collect(maps.Keys(s.live))
	s.mu.Unlock()
	out := make([]V, 0, len(records))
	for _, r := range records {
		r.mu.Lock()
		out = append(out, view(&r.v))
		r.mu.Unlock()
	}
	slices.SortFunc(out, cmp)
	return out
}

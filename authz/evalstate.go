package authz

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// evalState is what one evaluation needs besides the input: the deadline
// that cancels it and OPA's cache of rule values. rego would make both
// anew for every evaluation (a timer, a goroutine or context callback, a
// tree of hash maps); at tens of thousands of decisions a second that is
// a good part of the garbage meshid makes, so they are pooled instead.
type evalState struct {
	deadline deadline
	rules    ruleCache
}

var evalStates = sync.Pool{New: func() any { return new(evalState) }}

// getEvalState is the state of an evaluation that must end by at, by the
// clock now, or when ctx ends.
func getEvalState(ctx context.Context, at time.Time, now func() time.Time) *evalState {
	s := evalStates.Get().(*evalState)
	s.deadline.reset(ctx, at, now)
	return s
}

// maxPooledRules bounds the rule cache a pooled evalState keeps: one
// evaluation of an unusual policy may cache many rules, and its memory
// should not stay behind in the pool for every later one.
const maxPooledRules = 1024

func putEvalState(s *evalState) {
	if len(s.rules.refs) > maxPooledRules {
		return
	}
	s.deadline.reset(context.Background(), time.Time{}, nil) // drop the caller's context and clock
	s.rules.reset()
	evalStates.Put(s)
}

// deadlineCheckEvery is how many of OPA's cancellation checks pass between
// two looks at the clock. OPA checks before every expression it evaluates,
// so an evaluation overruns its deadline by at most this many expressions.
const deadlineCheckEvery = 16

// deadline is a topdown.Cancel that cancels the evaluation once the clock
// passes a point in time or the caller's context ends. OPA polls Cancelled
// before each expression; checking the time there, every few calls, bounds
// an evaluation exactly as well as a timer setting a flag would, without
// arming and stopping a timer per evaluation.
type deadline struct {
	ctx      context.Context
	at       time.Time
	now      func() time.Time
	calls    int // Cancelled is only called by the evaluating goroutine
	expired  atomic.Bool
	canceled atomic.Bool
}

func (d *deadline) reset(ctx context.Context, at time.Time, now func() time.Time) {
	d.ctx, d.at, d.now, d.calls = ctx, at, now, 0
	d.expired.Store(false)
	d.canceled.Store(false)
}

// Cancel stops the evaluation at its next check.
func (d *deadline) Cancel() { d.canceled.Store(true) }

// Cancelled reports whether the evaluation must stop.
func (d *deadline) Cancelled() bool {
	if d.canceled.Load() || d.expired.Load() {
		return true
	}
	if d.calls++; d.calls%deadlineCheckEvery != 0 {
		return false
	}
	if d.now().After(d.at) {
		d.expired.Store(true)
		return true
	}
	if d.ctx != nil && d.ctx.Err() != nil {
		d.canceled.Store(true)
		return true
	}
	return false
}

// timedOut says whether the deadline, rather than the caller, stopped the
// evaluation.
func (d *deadline) timedOut() bool { return d.expired.Load() }

// ruleCache is a topdown.VirtualCache: within one evaluation it remembers
// the value (or undefinedness) of every rule reference evaluated, so that a
// rule used by several others is evaluated once. OPA's own is a tree of
// hash maps built afresh per evaluation; this one is a hash index over a
// flat list of entries, kept across evaluations and emptied between them.
// Frames are pushed and popped around `with` statements, which change what
// rules evaluate to; only the top frame is consulted, as in OPA's.
type ruleCache struct {
	frames []ruleFrame
	top    int // index of the active frame in frames
	refs   []*ast.Term
}

type ruleFrame struct {
	index   map[int]int32 // ref hash → 1 + index of the newest entry with it
	entries []ruleEntry
}

type ruleEntry struct {
	ref       ast.Ref
	value     *ast.Term
	undefined bool
	prev      int32 // 1 + index of the previous entry with the same hash; 0: none
}

func (c *ruleCache) frame() *ruleFrame {
	if len(c.frames) == 0 {
		c.frames = append(c.frames, ruleFrame{index: map[int]int32{}})
	}
	return &c.frames[c.top]
}

// Push starts an empty frame.
func (c *ruleCache) Push() {
	c.frame()
	c.top++
	if c.top == len(c.frames) {
		c.frames = append(c.frames, ruleFrame{index: map[int]int32{}})
	}
}

// Pop drops the top frame and everything in it.
func (c *ruleCache) Pop() {
	if c.top == 0 {
		return
	}
	c.frames[c.top].clear()
	c.top--
}

// Get returns the value cached for ref; undefined is true when ref was
// recorded as having no value.
func (c *ruleCache) Get(ref ast.Ref) (value *ast.Term, undefined bool) {
	f := c.frame()
	for i := f.index[ref.Hash()]; i != 0; i = f.entries[i-1].prev {
		if e := &f.entries[i-1]; e.ref.Equal(ref) {
			return e.value, e.undefined
		}
	}
	return nil, false
}

// Put records the value of ref; nil records that it is undefined.
func (c *ruleCache) Put(ref ast.Ref, value *ast.Term) {
	f := c.frame()
	h := ref.Hash()
	for i := f.index[h]; i != 0; i = f.entries[i-1].prev {
		if e := &f.entries[i-1]; e.ref.Equal(ref) {
			e.value, e.undefined = value, value == nil
			return
		}
	}
	// OPA passes refs backed by buffers it goes on using: keep a copy of
	// the term pointers (the terms themselves are never changed).
	start := len(c.refs)
	c.refs = append(c.refs, ref...)
	f.entries = append(f.entries, ruleEntry{
		ref:       c.refs[start:len(c.refs):len(c.refs)],
		value:     value,
		undefined: value == nil,
		prev:      f.index[h],
	})
	f.index[h] = int32(len(f.entries))
}

// Keys returns the references with a value in the top frame.
func (c *ruleCache) Keys() []ast.Ref {
	f := c.frame()
	var keys []ast.Ref
	for _, e := range f.entries {
		if e.value != nil {
			keys = append(keys, e.ref)
		}
	}
	return keys
}

// reset empties the cache for the next evaluation, keeping its memory.
func (c *ruleCache) reset() {
	for i := range c.frames {
		c.frames[i].clear()
	}
	c.top = 0
	clear(c.refs)
	c.refs = c.refs[:0]
}

func (f *ruleFrame) clear() {
	clear(f.index)
	clear(f.entries)
	f.entries = f.entries[:0]
}

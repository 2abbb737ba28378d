package authz

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// The pooled rule cache must decide exactly as OPA's own: the same
// policies, evaluated once with each, give the same value. The policies
// lean on what the cache is for: rules used many times, rules that are
// undefined, partial sets and objects, functions, and `with`, which
// pushes a frame in which rules evaluate differently.
func TestRuleCacheDecidesAsOPAs(t *testing.T) {
	const policy = `package p

import rego.v1

a := input.a
b := a + 1
twice := [a, a, b, b]
missing := input.nope
uses_missing if missing
not_missing if not missing

s contains x if some x in input.xs
o[k] := v if some k, v in input.m

f(x) := y if y := x * a

with_input := x if x := b with input.a as 41
inner := x if x := b with input.a as 1
nested := [b, x, inner] if x := inner with input.a as 2
with_data := v if v := count(s) with input.xs as ["only"]
back := [b, with_input, b]
rule_with := w if w := twice with a as 100
every_ok if every x in input.xs { s[x] }
result := {
	"twice": twice, "uses_missing": uses_missing, "not_missing": not_missing,
	"s": s, "o": o, "f": f(3), "with_input": with_input, "nested": nested,
	"with_data": with_data, "back": back, "rule_with": rule_with, "every_ok": every_ok,
}
`
	inputs := []string{
		`{"a": 1, "xs": ["x", "y"], "m": {"k": 1}}`,
		`{"a": 7, "xs": [], "m": {}}`,
		`{"a": 0, "nope": false, "xs": ["z"], "m": {"a": "b", "c": "d"}}`,
		`{"a": 2, "nope": true}`,
	}
	ctx := context.Background()
	pq, err := rego.New(
		rego.Query("data.p.result"),
		rego.Module("p.rego", policy),
	).PrepareForEval(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := getEvalState(ctx, time.Now().Add(time.Minute), time.Now)
	defer putEvalState(st)
	for _, in := range inputs {
		input := ast.MustParseTerm(in).Value
		want, err := pq.Eval(ctx, rego.EvalParsedInput(input))
		if err != nil {
			t.Fatal(err)
		}
		// The same state serves every input, as the pool would.
		got, err := pq.Eval(ctx, rego.EvalParsedInput(input), rego.EvalVirtualCache(&st.rules), rego.EvalExternalCancel(&st.deadline))
		st.rules.reset()
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("input %s:\n got %v\nwant %v", in, got, want)
		}
	}
}

func TestRuleCacheFrames(t *testing.T) {
	var c ruleCache
	var _ topdown.VirtualCache = &c
	a, b := ast.MustParseRef("data.p.a"), ast.MustParseRef("data.p.b")
	one, two := ast.IntNumberTerm(1), ast.IntNumberTerm(2)

	if v, undef := c.Get(a); v != nil || undef {
		t.Fatalf("empty cache: Get = %v, %v", v, undef)
	}
	c.Put(a, one)
	c.Put(b, nil)
	if v, _ := c.Get(a); v != one {
		t.Errorf("Get(a) = %v, want 1", v)
	}
	if v, undef := c.Get(b); v != nil || !undef {
		t.Errorf("Get(b) = %v, %v; want recorded undefined", v, undef)
	}

	c.Push()
	if v, undef := c.Get(a); v != nil || undef {
		t.Errorf("new frame sees the outer one: Get(a) = %v, %v", v, undef)
	}
	c.Put(a, two)
	if v, _ := c.Get(a); v != two {
		t.Errorf("inner Get(a) = %v, want 2", v)
	}
	c.Pop()
	if v, _ := c.Get(a); v != one {
		t.Errorf("after Pop, Get(a) = %v, want the outer 1", v)
	}
	c.Push()
	if v, _ := c.Get(a); v != nil {
		t.Errorf("a popped frame came back: Get(a) = %v", v)
	}
	c.Pop()
	c.Pop() // popping the bottom frame is a no-op, as in OPA's cache
	if keys := c.Keys(); len(keys) != 1 || !keys[0].Equal(a) {
		t.Errorf("Keys = %v, want [data.p.a]", keys)
	}

	// The ref is copied: OPA reuses the buffer behind the one it passes.
	buf := ast.MustParseRef("data.p.c")
	c.Put(buf, one)
	buf[2] = ast.StringTerm("x")
	if v, _ := c.Get(ast.MustParseRef("data.p.c")); v != one {
		t.Errorf("Get(data.p.c) after its buffer changed = %v, want 1", v)
	}

	c.reset()
	if v, _ := c.Get(a); v != nil {
		t.Errorf("after reset, Get(a) = %v", v)
	}
}

// Many refs land in few hash buckets' chains; each must still be found.
func TestRuleCacheMany(t *testing.T) {
	var c ruleCache
	const n = 3000
	for i := range n {
		c.Put(ast.MustParseRef(fmt.Sprintf("data.p.r%d", i)), ast.IntNumberTerm(i))
	}
	for i := range n {
		v, _ := c.Get(ast.MustParseRef(fmt.Sprintf("data.p.r%d", i)))
		if v == nil || !v.Equal(ast.IntNumberTerm(i)) {
			t.Fatalf("Get(data.p.r%d) = %v", i, v)
		}
	}
	if len(c.refs) <= maxPooledRules {
		t.Fatalf("test premise: %d refs should exceed the pool bound %d", len(c.refs), maxPooledRules)
	}
}

func TestDeadline(t *testing.T) {
	checks := func(d *deadline) int {
		for i := 1; i <= 10*deadlineCheckEvery; i++ {
			if d.Cancelled() {
				return i
			}
		}
		return 0
	}

	var d deadline
	d.reset(context.Background(), time.Now().Add(time.Hour), time.Now)
	if n := checks(&d); n != 0 {
		t.Errorf("cancelled after %d checks with an hour to go", n)
	}

	d.reset(context.Background(), time.Now().Add(-time.Millisecond), time.Now)
	if n := checks(&d); n == 0 || n > deadlineCheckEvery {
		t.Errorf("past deadline: cancelled after %d checks, want within %d", n, deadlineCheckEvery)
	}
	if !d.timedOut() {
		t.Error("past deadline: timedOut() = false")
	}

	ctx, cancel := context.WithCancel(context.Background())
	d.reset(ctx, time.Now().Add(time.Hour), time.Now)
	cancel()
	if n := checks(&d); n == 0 || n > deadlineCheckEvery {
		t.Errorf("caller gone: cancelled after %d checks, want within %d", n, deadlineCheckEvery)
	}
	if d.timedOut() {
		t.Error("caller gone: reported as a timeout")
	}

	d.reset(context.Background(), time.Now().Add(time.Hour), time.Now)
	d.Cancel()
	if !d.Cancelled() {
		t.Error("Cancel did not cancel at once")
	}
}

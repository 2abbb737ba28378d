package authz

import (
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// reads is what a compiled decision can depend on besides its policies
// and data: the parts of input its rules can read, and whether it calls
// anything whose value is not a function of its arguments (the clock,
// randomness, the network, the runtime). It is found once per policy set
// by walking the compiled rules the decision can reach, and decides
// whether and by what the decision cache keys its decisions.
type reads struct {
	// paths are the parts of input read, as key paths from input's root:
	// sorted, none a prefix of another (the shorter covers the longer).
	// An empty path is the whole input.
	paths [][]string
	// uncacheable says why the decision cannot be cached; empty: it can.
	uncacheable string
}

// Builtins whose value OPA's metadata does not mark Nondeterministic but
// that read the clock of the evaluation (io.jwt.decode_verify without a
// "time" constraint, certificate verification), print or trace (a cached
// decision would skip the output), or come from OPA's runtime, the network
// or randomness under a name not yet in the metadata. Anything not in OPA's
// builtin table at all is not cached either: nothing is known of it.
var impureBuiltins = map[string]bool{
	"io.jwt.decode_verify":                                   true,
	"crypto.x509.parse_and_verify_certificates":              true,
	"crypto.x509.parse_and_verify_certificates_with_options": true,
	"trace":          true,
	"print":          true,
	"internal.print": true,
	"time.now_ns":    true,
	"http.send":      true,
	"opa.runtime":    true,
}

// impurePrefixes are families of builtins treated as impure as a whole:
// new members would be too.
var impurePrefixes = []string{"rand.", "uuid.", "http.", "opa.", "net.lookup"}

// findReads walks the rules decision can reach in the compiled policies.
func findReads(c *ast.Compiler, decision ast.Ref) reads {
	w := readWalker{c: c, seen: map[*ast.Rule]bool{}}
	w.follow(decision)
	for len(w.queue) > 0 && w.uncacheable == "" {
		r := w.queue[len(w.queue)-1]
		w.queue = w.queue[:len(w.queue)-1]
		w.rule(r)
	}
	if w.uncacheable != "" {
		return reads{uncacheable: w.uncacheable}
	}
	paths := minimalPaths(w.paths)
	if len(paths) == 1 && len(paths[0]) == 0 {
		// Keyed by all of input, which holds the request's id and time,
		// no two requests would share a decision.
		return reads{paths: paths, uncacheable: "the policy reads input as a whole (a reference into it by a variable, input passed as a value, or with input), so no two requests share a decision"}
	}
	return reads{paths: paths}
}

type readWalker struct {
	c           *ast.Compiler
	seen        map[*ast.Rule]bool
	queue       []*ast.Rule
	paths       [][]string
	uncacheable string
}

// follow queues every rule a reference into data can evaluate: those at
// its ground prefix, under it, and above it.
func (w *readWalker) follow(ref ast.Ref) {
	prefix := ref
	for i, t := range ref {
		if i > 0 && !t.IsGround() {
			prefix = ref[:i]
			break
		}
	}
	for _, r := range w.c.GetRules(prefix) {
		for ; r != nil; r = r.Else {
			if !w.seen[r] {
				w.seen[r] = true
				w.queue = append(w.queue, r)
			}
		}
	}
}

func (w *readWalker) rule(r *ast.Rule) {
	visit := func(x any) {
		ast.WalkRefs(x, func(ref ast.Ref) bool {
			w.ref(ref)
			return false
		})
		ast.WalkExprs(x, func(e *ast.Expr) bool {
			if e.IsCall() {
				w.call(e.Operator(), e.Location)
			}
			if e.With != nil {
				for _, with := range e.With {
					// Replacing input makes what the rules below read
					// something else; the whole input stands for it.
					if ref, ok := with.Target.Value.(ast.Ref); ok && ref.HasPrefix(ast.InputRootRef) {
						w.paths = append(w.paths, nil)
					}
				}
			}
			return false
		})
		ast.WalkTerms(x, func(t *ast.Term) bool {
			if call, ok := t.Value.(ast.Call); ok && len(call) > 0 {
				if op, ok := call[0].Value.(ast.Ref); ok {
					w.call(op, t.Location)
				}
			}
			return false
		})
	}
	visit(r.Head)
	if r.Head.Reference != nil {
		visit(r.Head.Reference)
	}
	visit(r.Body)
}

// ref records a read of input (its ground string prefix: a variable or a
// number past it reads the whole value there) and follows a read of data.
func (w *readWalker) ref(ref ast.Ref) {
	switch {
	case ref.HasPrefix(ast.InputRootRef):
		var path []string
		for _, t := range ref[1:] {
			s, ok := t.Value.(ast.String)
			if !ok {
				break
			}
			path = append(path, string(s))
		}
		w.paths = append(w.paths, path)
	case ref.HasPrefix(ast.DefaultRootRef):
		w.follow(ref)
	}
}

// call classifies the function called: a rule of the policy is followed
// through its reference, a builtin must be a pure one.
func (w *readWalker) call(op ast.Ref, loc *ast.Location) {
	if op.HasPrefix(ast.DefaultRootRef) {
		w.follow(op)
		return
	}
	name := op.String()
	b, known := ast.BuiltinMap[name]
	why := ""
	switch {
	case !known:
		why = "is not one of OPA's builtins"
	case b.Nondeterministic:
		why = "is non-deterministic"
	case impureBuiltins[name] || slices.ContainsFunc(impurePrefixes, func(p string) bool { return strings.HasPrefix(name, p) }):
		why = "depends on more than its arguments"
	default:
		return
	}
	if w.uncacheable == "" {
		at := ""
		if loc != nil {
			at = fmt.Sprintf(" at %s:%d", loc.File, loc.Row)
		}
		w.uncacheable = fmt.Sprintf("the policy calls %s%s, which %s", name, at, why)
	}
}

// minimalPaths sorts paths and drops each one another covers.
func minimalPaths(paths [][]string) [][]string {
	slices.SortFunc(paths, slices.Compare)
	var out [][]string
	for _, p := range paths {
		if n := len(out); n > 0 && isPrefix(out[n-1], p) {
			continue
		}
		out = append(out, p)
	}
	return out
}

func isPrefix(prefix, path []string) bool {
	return len(prefix) <= len(path) && slices.Equal(prefix, path[:len(prefix)])
}

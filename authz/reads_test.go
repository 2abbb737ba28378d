package authz

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// TestFindReads: what of input a policy can read, and what makes it
// uncacheable, found in the compiled rules the decision reaches.
func TestFindReads(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		paths  []string // dotted; "" is the whole input
		why    string   // in uncacheable; "" for cacheable
	}{
		{
			name: "fixed paths, import aliases, rules and functions reached",
			policy: `import input.attributes.request.http as req
allow if {
	req.method == "GET"
	input.parsed_path == ["hello"]
	ok_caller(input.spiffe.source.id)
	data.envoy.other.p
}
ok_caller(id) if startswith(id, "spiffe://example.org/")`,
			paths: []string{"attributes.request.http.method", "parsed_path", "spiffe.source.id", "x"},
		},
		{name: "a variable or an index widens to the object", policy: `allow if { h := "x-a"; input.attributes.request.http.headers[h] == "1" }
allow if input.parsed_path[0] == "a"`, paths: []string{"attributes.request.http.headers", "parsed_path"}},
		{name: "iteration", policy: `allow if { some k, v in input.parsed_query; k == v[0] }`, paths: []string{"parsed_query"}},
		{name: "a subtree passed as a value", policy: `allow if json.marshal(input.spiffe) != ""`, paths: []string{"spiffe"}},
		{name: "a shorter path covers a longer", policy: `allow if { input.spiffe.source.id; count(input.spiffe) > 1 }`, paths: []string{"spiffe"}},
		{name: "only rules the decision reaches", policy: `allow if input.a
unused if time.now_ns() > 0`, paths: []string{"a"}},
		{name: "a decision from data alone reads nothing", policy: `allow := data.envoy.other.p`, paths: []string{"x"}},
		{name: "walk(input)", policy: `allow if { walk(input, [_, v]); v == "x" }`, why: "reads input as a whole"},
		{name: "input passed whole", policy: `allow if f(input)
f(x) if x.a`, why: "reads input as a whole"},
		{name: "with input", policy: `allow if g with input as {"a": 1}
g if input.a == 1`, why: "reads input as a whole"},
		{name: "with input below the root", policy: `allow if g with input.a as 1
g if input.a == 1`, why: "reads input as a whole"},
		{name: "time", policy: `allow if time.now_ns() > 0`, why: "time.now_ns at "},
		{name: "http.send", policy: `allow if http.send({"method": "GET", "url": "http://x"}).status_code == 200`, why: "http.send"},
		{name: "rand", policy: `allow if rand.intn("x", 10) > 5`, why: "rand.intn"},
		{name: "uuid", policy: `allow if uuid.rfc4122("x") != ""`, why: "uuid.rfc4122"},
		{name: "opa.runtime", policy: `allow if opa.runtime().env.X == "1"`, why: "opa.runtime"},
		{name: "net lookups", policy: `allow if count(net.lookup_ip_addr("example.org")) > 0`, why: "net.lookup_ip_addr"},
		{name: "a JWT verified against the clock", policy: `allow if { [ok, _, _] := io.jwt.decode_verify(input.t, {"secret": "s"}); ok }`, why: "io.jwt.decode_verify"},
		{name: "in a reached function", policy: `allow if f(1)
f(x) if x < time.now_ns()`, why: "time.now_ns"},
		{name: "in a comprehension", policy: `allow if count([x | some x in [1]; x < time.now_ns()]) > 0`, why: "time.now_ns"},
		{name: "in an else", policy: `allow if input.a == 1
else := true if time.now_ns() > 0`, why: "time.now_ns"},
		{name: "pure builtins are fine", policy: `allow if { net.cidr_contains("10.0.0.0/8", input.ip); time.parse_rfc3339_ns(input.t) > 0; regex.match("a", input.s) }`, paths: []string{"ip", "s", "t"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			files := map[string]string{
				"authz.rego": "package envoy.authz\n\n" + tt.policy + "\n",
				"other.rego": "package envoy.other\n\np if input.x\n",
			}
			for name, src := range files {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			ps, err := LoadPolicies(dir, ast.RegoV1)
			if err != nil {
				t.Fatal(err)
			}
			c := ast.NewCompiler()
			if c.Compile(ps.Modules); c.Failed() {
				t.Fatal(c.Errors)
			}
			got := findReads(c, ast.MustParseRef(DefaultDecision))
			if tt.why != "" {
				if !strings.Contains(got.uncacheable, tt.why) {
					t.Fatalf("uncacheable = %q, want it to say %q", got.uncacheable, tt.why)
				}
				return
			}
			if got.uncacheable != "" {
				t.Fatalf("uncacheable: %s", got.uncacheable)
			}
			var paths []string
			for _, p := range got.paths {
				paths = append(paths, strings.Join(p, "."))
			}
			if !slices.Equal(paths, tt.paths) {
				t.Errorf("paths = %q, want %q", paths, tt.paths)
			}
		})
	}
}

// TestCacheKeyIsInjective: inputs differing anywhere the policy reads
// have different keys; inputs differing only elsewhere share one.
func TestCacheKeyIsInjective(t *testing.T) {
	paths := keyPaths([][]string{{"a"}, {"b", "c"}})
	key := func(doc string) string { return string(appendKey(nil, ast.MustParseTerm(doc).Value, paths)) }
	distinct := []string{
		`{}`, `{"a": null}`, `{"a": false}`, `{"a": true}`, `{"a": 1}`, `{"a": 1.0}`, `{"a": "1"}`,
		`{"a": ""}`, `{"a": []}`, `{"a": {}}`, `{"a": [""]}`, `{"a": ["", ""]}`, `{"a": {"": ""}}`,
		`{"a": "x", "b": {"c": "y"}}`, `{"a": "xy"}`, `{"a": "x", "b": {"c": ""}}`, `{"a": "x", "b": {}}`,
		`{"a": "x", "b": "c"}`, `{"a": "x", "b": ["c"]}`, `{"a": {"b": "c"}}`, `{"a": {"b": ["c"]}}`,
		`{"a": {"x", "y"}}`, `{"a": ["x", "y"]}`, `{"a": ["xy"]}`,
	}
	seen := map[string]string{}
	for _, d := range distinct {
		k := key(d)
		if other, dup := seen[k]; dup {
			t.Errorf("%s and %s have the same key", d, other)
		}
		seen[k] = d
	}
	if key(`{"a": 1, "b": {"c": 2, "d": 3}, "e": 4}`) != key(`{"b": {"d": 5, "c": 2}, "a": 1}`) {
		t.Error("inputs differing only where the policy does not read have different keys")
	}
	if key(`{"a": {"y", "x"}}`) != key(`{"a": {"x", "y"}}`) {
		t.Error("equal sets have different keys")
	}
}

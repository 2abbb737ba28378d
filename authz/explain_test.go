package authz_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/authz/decisionlog"
	"github.com/meshid/meshid/test/authztest"
	"github.com/meshid/meshid/test/syncbuf"
)

// explainPolicy has a helper rule, a default and two ways to be allowed,
// so that an explanation must name rules nested in others, undefined
// input, and values the policy compared.
const explainPolicy = `package envoy.authz

default allow := false

is_frontend if input.spiffe.source.id == "spiffe://example.org/ns/demo/sa/frontend"

allow if {
	is_frontend
	input.attributes.request.http.method == "GET"
	input.parsed_path == ["hello"]
}

allow if {
	some role in input.roles
	role == "admin"
}
`

// TestExplain: the explanation names each rule of the decision at its
// file:line, whether it applied, and for those that did not the first
// expression that failed, with its line and the values it saw.
func TestExplain(t *testing.T) {
	dir := authztest.PolicyDir(t, map[string]string{"envoy/authz.rego": explainPolicy})
	file := filepath.Join(dir, "envoy/authz.rego")
	e, err := authz.NewEngine(context.Background(), authz.Config{PolicyDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	frontend := `"spiffe": {"source": {"id": "spiffe://example.org/ns/demo/sa/frontend"}}`
	tests := []struct {
		name  string
		input string
		value string
		want  []string // lines, in order, each a substring of one line
	}{
		{"wrong path", `{` + frontend + `, "attributes": {"request": {"http": {"method": "GET"}}}, "parsed_path": ["admin"]}`, "false", []string{
			"data.envoy.authz.allow is false:",
			"rule allow at " + file + ":7 did not apply: at " + file + ":10, `input.parsed_path == [\"hello\"]` was false",
			`input.parsed_path is ["admin"]`,
			"rule allow at " + file + ":13 did not apply: at " + file + ":14, `some role in input.roles` was undefined",
			"input.roles is not in the input",
			"so the default at " + file + ":3 gave false",
		}},
		{"nested rule", `{"spiffe": {"source": {"id": "spiffe://example.org/ns/demo/sa/other"}}, "roles": ["reader", "writer"]}`, "false", []string{
			"rule allow at " + file + ":7 did not apply: at " + file + ":8, `is_frontend` was false",
			"rule is_frontend at " + file + ":5 did not apply: at " + file + ":5, `input.spiffe.source.id == \"spiffe://example.org/ns/demo/sa/frontend\"` was false",
			`input.spiffe.source.id is "spiffe://example.org/ns/demo/sa/other"`,
			"rule allow at " + file + ":13 did not apply: at " + file + ":15, `role == \"admin\"` was false",
			`role is "reader"`,
		}},
		{"allowed", `{` + frontend + `, "attributes": {"request": {"http": {"method": "GET"}}}, "parsed_path": ["hello"]}`, "true", []string{
			"data.envoy.authz.allow is true:",
			"rule allow at " + file + ":7 applied: every expression in its body held",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := e.Explain(context.Background(), ast.MustParseTerm(tt.input).Value)
			if x.Err != nil || x.Value == nil || x.Value.String() != tt.value {
				t.Fatalf("value %v, err %v; want %s", x.Value, x.Err, tt.value)
			}
			lines := x.Lines(nil)
			at := 0
			for _, w := range tt.want {
				for at < len(lines) && !strings.Contains(lines[at], w) {
					at++
				}
				if at == len(lines) {
					t.Fatalf("no line %q (in order) in:\n%s", w, strings.Join(lines, "\n"))
				}
			}
			if strings.Contains(strings.Join(lines, "\n"), "default") != (tt.value == "false") {
				t.Errorf("the default is named iff it decided:\n%s", strings.Join(lines, "\n"))
			}
		})
	}
}

// TestExplainUndefined: with no default, an undefined decision says so,
// and meshid denies it.
func TestExplainUndefined(t *testing.T) {
	e := engine(t, "package envoy.authz\n\nallow if input.parsed_path == [\"hello\"]\n", authz.Config{})
	x := e.Explain(context.Background(), ast.MustParseTerm(`{"parsed_path": ["x"]}`).Value)
	got := x.Summary(filepath.Base)
	want := "data.envoy.authz.allow is undefined: no rule for it applied and it has no default, so meshid denies: rule allow at policy.rego:3 did not apply: at policy.rego:3, `input.parsed_path == [\"hello\"]` was false; input.parsed_path is [\"x\"]"
	if x.Value != nil || got != want {
		t.Errorf("value %v, summary\n%s\nwant\n%s", x.Value, got, want)
	}
}

// TestExplainDenials: with ExplainDenials, a denial's decision log line
// carries its reason and an allow's carries none; every line names the
// policy revision, which the log keeps.
func TestExplainDenials(t *testing.T) {
	revs := decisionlog.NewRevisions(filepath.Join(t.TempDir(), "policies"))
	var out syncbuf.Buffer
	d := decisionlog.New(decisionlog.Options{Revisions: revs})
	stop := runLog(t, d, &out)
	e := engine(t, explainPolicy, authz.Config{})
	srv := newServer(t, e, authz.Options{DecisionLog: d, ExplainDenials: true})
	allowed := srv.Decide(t.Context(), checkRequest(frontend, backend, "GET", "/hello"))
	denied := srv.Decide(t.Context(), checkRequest(frontend, backend, "GET", "/admin"))
	if !allowed.Allowed || denied.Allowed {
		t.Fatalf("allowed %v, %v; want true, false", allowed.Allowed, denied.Allowed)
	}
	lines := stop()
	if len(lines) != 2 {
		t.Fatalf("%d lines", len(lines))
	}
	if r, ok := lines[0]["reason"]; ok {
		t.Errorf("allowed request logged with reason %v", r)
	}
	reason, _ := lines[1]["reason"].(string)
	if !strings.Contains(reason, "policy.rego:10, `input.parsed_path == [\"hello\"]` was false; input.parsed_path is [\"admin\"]") {
		t.Errorf("reason %q: want the failing expression at policy.rego:10 and the path seen", reason)
	}
	rev := e.Policy().Revision
	for i, l := range lines {
		if l["revision"] != rev {
			t.Errorf("line %d revision %v, want %s", i, l["revision"], rev)
		}
	}
	kept, err := revs.Load(rev)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(kept.LastLogged) > time.Minute || kept.RegoVersion != "v1" {
		t.Errorf("kept %+v", kept)
	}
}

// BenchmarkExplainDenials is a Check of the demo request with a decision
// log, with authz.decision_log_explain off and on: an allowed request
// should cost the same either way (the reason is only worked out for
// denials, by the log, after the response). docs/authz.md gives the
// ratios.
func BenchmarkExplainDenials(b *testing.B) {
	e, err := authz.NewEngine(context.Background(), authz.Config{PolicyDir: "../policies/envoy"})
	if err != nil {
		b.Fatal(err)
	}
	for _, path := range []string{"/hello?lang=fr", "/admin"} {
		for _, explain := range []bool{false, true} {
			name := map[bool]string{true: "allow", false: "deny"}[path != "/admin"] + map[bool]string{true: "/explain", false: "/off"}[explain]
			b.Run(name, func(b *testing.B) {
				d := decisionlog.New(decisionlog.Options{})
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- d.Run(ctx, discard{}) }()
				defer func() { cancel(); <-done }()
				srv := newServer(b, e, authz.Options{DecisionLog: d, ExplainDenials: explain})
				req := authztest.DemoCheck(path)
				b.ReportAllocs()
				for b.Loop() {
					if _, err := srv.Check(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

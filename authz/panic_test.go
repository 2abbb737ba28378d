package authz_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/types"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshid/meshid/authz"
)

// A builtin that panics stands for any bug the evaluator may hit: the
// request is denied, the panic logged with its stack and counted, the
// server keeps deciding, and nothing is cached for the request.
func init() {
	rego.RegisterBuiltin1(&rego.Function{Name: "meshid_test.panic", Decl: types.NewFunction(types.Args(types.S), types.B)},
		func(_ rego.BuiltinContext, a *ast.Term) (*ast.Term, error) {
			if s, ok := a.Value.(ast.String); ok && s == "/boom" {
				panic("evaluator bug")
			}
			return ast.BooleanTerm(true), nil
		})
}

func TestPanicIsADeny(t *testing.T) {
	e := engine(t, "package envoy.authz\n\nallow if meshid_test.panic(input.attributes.request.http.path)\n", authz.Config{})
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	s := newServer(t, e, authz.Options{Log: slog.New(slog.NewTextHandler(&logs, nil)), Metrics: reg,
		Cache: authz.CacheOptions{Enabled: true, MaxEntries: 100}})
	ctx := context.Background()
	for range 2 { // the second is not answered from a cache
		r := s.Decide(ctx, checkRequest(frontend, backend, "GET", "/boom"))
		if r.Allowed || r.Err == nil || !strings.Contains(r.Err.Error(), "internal error while deciding") {
			t.Fatalf("panicking decision: allowed=%v err=%v, want a deny with an internal error", r.Allowed, r.Err)
		}
		if r.Response.GetDeniedResponse().GetStatus().GetCode() != 403 {
			t.Errorf("denied with %v, want the deny status", r.Response.GetDeniedResponse().GetStatus())
		}
	}
	if got := counterValue(t, reg, "meshid_authz_panics_total", ""); got != 2 {
		t.Errorf("meshid_authz_panics_total = %v, want 2", got)
	}
	if !strings.Contains(logs.String(), "deciding panicked") || !strings.Contains(logs.String(), "evaluator bug") || !strings.Contains(logs.String(), "goroutine") {
		t.Errorf("no log line with the panic and its stack:\n%.2000s", logs.String())
	}
	if r := s.Decide(ctx, checkRequest(frontend, backend, "GET", "/fine")); !r.Allowed || r.Err != nil {
		t.Errorf("after the panics: allowed=%v err=%v, want the server still deciding", r.Allowed, r.Err)
	}
}

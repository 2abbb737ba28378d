package authz_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshid/meshid/authz"
)

const (
	frontend = "spiffe://example.org/ns/demo/sa/frontend"
	backend  = "spiffe://example.org/ns/demo/sa/backend"
)

// slowPolicy takes seconds (a minute under -race) to find allow undefined:
// long enough to trip any eval timeout used in tests, short enough that a
// broken timeout fails the test instead of hanging it.
const slowPolicy = `package envoy.authz

allow if {
	some i in numbers.range(1, 2000)
	some j in numbers.range(1, 2000)
	i == j + 2000
}
`

// writeFiles creates files (relative name → content) in a new temp dir.
func writeFiles(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// engine compiles one policy file with cfg's other fields.
func engine(t testing.TB, policy string, cfg authz.Config) *authz.Engine {
	t.Helper()
	cfg.PolicyDir = writeFiles(t, map[string]string{"policy.rego": policy})
	e, err := authz.NewEngine(context.Background(), cfg)
	if err != nil {
		t.Fatalf("NewEngine: %v", err)
	}
	return e
}

// checkRequest is what Envoy sends for method+path from source to
// destination over mTLS; an empty principal is left out.
func checkRequest(source, destination, method, path string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Principal: source},
		Destination: &authv3.AttributeContext_Peer{Principal: destination},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method:   method,
			Path:     path,
			Host:     "backend",
			Protocol: "HTTP/1.1",
			Headers:  map[string]string{":method": method, ":path": path, ":authority": "backend"},
		}},
		ContextExtensions: map[string]string{"route": "demo"},
	}}
}

// newServer is authz.NewServer for options known to be valid.
func newServer(t testing.TB, e *authz.Engine, o authz.Options) *authz.Server {
	t.Helper()
	s, err := authz.NewServer(e, o)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	return s
}

// decide is what the server decides for req with e: allowed, or why no
// decision was reached.
func decide(t testing.TB, e *authz.Engine, req *authv3.CheckRequest) (bool, error) {
	t.Helper()
	r := newServer(t, e, authz.Options{}).Decide(context.Background(), req)
	return r.Allowed, r.Err
}

// counterValue reads a counter (with label value label, if not "") from reg.
func counterValue(t testing.TB, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if label == "" || (len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == label) {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no metric %s{%s} in the registry", name, label)
	return 0
}

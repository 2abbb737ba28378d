package input_test

import (
	"context"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/meshid/meshid/authz/input"
)

const (
	frontend = "spiffe://example.org/ns/demo/sa/frontend"
	backend  = "spiffe://example.org/ns/demo/sa/backend"
)

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

// newBuilder is input.NewBuilder for options known to be valid.
func newBuilder(t testing.TB, o input.Options) *input.Builder {
	t.Helper()
	b, err := input.NewBuilder(o)
	if err != nil {
		t.Fatalf("NewBuilder: %v", err)
	}
	return b
}

// allows evaluates data.envoy.authz.allow of policy, a Rego module, with
// doc as its input, as the policy engine does: whether it is true.
func allows(t testing.TB, policy string, doc ast.Value) bool {
	t.Helper()
	rs, err := rego.New(
		rego.Query("data.envoy.authz.allow"),
		rego.Module("policy.rego", policy),
		rego.ParsedInput(doc),
	).Eval(context.Background())
	if err != nil {
		t.Fatalf("evaluate: %v\n%s", err, policy)
	}
	return rs.Allowed()
}

// holds says whether expr, the body of a rule, holds for doc: what a
// policy sees of the input document.
func holds(t testing.TB, doc ast.Value, expr string) bool {
	t.Helper()
	return allows(t, "package envoy.authz\n\ndefault allow := false\n\nallow if {\n"+expr+"\n}\n", doc)
}

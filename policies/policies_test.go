package policies

import (
	"context"
	"testing"
	"time"

	"github.com/meshid/meshid/test/grpctest"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/open-policy-agent/opa/v1/tester"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/meshid/meshid/authz"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRego runs every Rego unit test (test_ rules) of every policy the
// project ships: those under this directory and the compose mesh's (each
// set on its own, as each is its own policy_dir). Each test is a subtest,
// so a failing or erroring Rego test fails go test.
func TestRego(t *testing.T) {
	for _, dir := range []string{"envoy", "../compose/policies"} {
		t.Run(dir, func(t *testing.T) { runRegoTests(t, dir) })
	}
}

func runRegoTests(t *testing.T, dir string) {
	ctx := context.Background()
	modules, store, err := tester.Load([]string{dir}, nil)
	if err != nil {
		t.Fatalf("load policies: %v", err)
	}
	txn, err := store.NewTransaction(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Abort(ctx, txn)

	results, err := tester.NewRunner().
		SetStore(store).
		SetModules(modules).
		SetTimeout(time.Minute).
		RunTests(ctx, txn)
	if err != nil {
		t.Fatalf("compile policies and their tests: %v", err)
	}
	ran := 0
	for r := range results {
		ran++
		t.Run(r.Package+"."+r.Name, func(t *testing.T) {
			switch {
			case r.Error != nil:
				t.Errorf("%s: error: %v", r.Location, r.Error)
			case r.Fail:
				t.Errorf("%s: %s failed", r.Location, r.Name)
			case r.Skip:
				t.Skipf("%s: skipped (todo_ rule)", r.Location)
			}
		})
	}
	if ran == 0 {
		t.Fatal("found no Rego tests: every policy needs test_ rules")
	}
}

// TestDemoPolicyThroughServer loads envoy/ the way meshid does and asks
// it, over a real gRPC connection, about requests as Envoy sends them.
func TestDemoPolicyThroughServer(t *testing.T) {
	engine, err := authz.NewEngine(context.Background(), authz.Config{PolicyDir: "envoy"})
	if err != nil {
		t.Fatalf("NewEngine: %v", err)
	}
	srv, err := authz.NewServer(engine, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	client := serve(t, srv)

	const (
		frontend = "spiffe://example.org/ns/demo/sa/frontend"
		backend  = "spiffe://example.org/ns/demo/sa/backend"
	)
	tests := []struct {
		name                 string
		source, method, path string
		allowed              bool
	}{
		{"frontend GET /hello", frontend, "GET", "/hello", true},
		{"frontend GET /hello with a query", frontend, "GET", "/hello?lang=fr", true},
		{"frontend GET /admin", frontend, "GET", "/admin", false},
		{"frontend POST /hello", frontend, "POST", "/hello", false},
		{"other workload GET /hello", "spiffe://example.org/ns/demo/sa/admin", "GET", "/hello", false},
		{"no client certificate", "", "GET", "/hello", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := client.Check(ctx, envoyRequest(tt.source, backend, tt.method, tt.path))
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			code := codes.Code(resp.GetStatus().GetCode())
			if tt.allowed {
				if code != codes.OK || resp.GetOkResponse() == nil {
					t.Errorf("got %v %v, want OK with an ok_response", code, resp.GetHttpResponse())
				}
				return
			}
			if code != codes.PermissionDenied || resp.GetDeniedResponse().GetStatus().GetCode() != typev3.StatusCode_Forbidden {
				t.Errorf("got %v %v, want PermissionDenied with a 403", code, resp.GetHttpResponse())
			}
		})
	}
}

// envoyRequest is a CheckRequest shaped like the one Envoy's ext_authz
// filter sends from the backend's inbound listener.
func envoyRequest(source, destination, method, path string) *authv3.CheckRequest {
	p := &authv3.AttributeContext_Peer{
		Address: socket("10.0.0.7", 40112),
	}
	if source != "" {
		p.Principal = source
		p.Certificate = "-----BEGIN%20CERTIFICATE-----%0A..."
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: p,
		Destination: &authv3.AttributeContext_Peer{
			Address:   socket("10.0.0.8", 8443),
			Principal: destination,
		},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id:     "4242",
			Method: method,
			Path:   path,
			Host:   "backend:8443",
			Scheme: "https",
			Headers: map[string]string{
				":authority":        "backend:8443",
				":method":           method,
				":path":             path,
				":scheme":           "https",
				"user-agent":        "curl/8.5.0",
				"accept":            "*/*",
				"x-forwarded-proto": "https",
				"x-request-id":      "6f1c2d9e-0b7a-4c1e-9a55-1f0f2b3c4d5e",
			},
			Protocol: "HTTP/1.1",
		}},
	}}
}

func socket(addr string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       addr,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// serve runs srv on a real gRPC server on a loopback TCP port, as Envoy's
// ext_authz filter reaches it, and returns a client for it.
func serve(t *testing.T, srv *authz.Server) authv3.AuthorizationClient {
	t.Helper()
	conn := grpctest.Serve(t, "tcp", func(s *grpc.Server) { srv.Register(s) })
	return authv3.NewAuthorizationClient(conn)
}

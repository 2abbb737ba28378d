package authz_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshid/meshid/test/grpctest"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/test/syncbuf"
)

// serve runs srv on a real gRPC server on a loopback TCP port, as Envoy's
// ext_authz filter reaches it, and returns a client for it.
func serve(t *testing.T, srv *authz.Server) authv3.AuthorizationClient {
	t.Helper()
	conn := grpctest.Serve(t, "tcp", func(s *grpc.Server) { srv.Register(s) })
	return authv3.NewAuthorizationClient(conn)
}

func check(t *testing.T, c authv3.AuthorizationClient, req *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check returned a gRPC error, which Envoy may treat as allow: %v", err)
	}
	return resp
}

// assertAllowed and assertDenied check the whole answer Envoy acts on.
func assertAllowed(t *testing.T, resp *authv3.CheckResponse) {
	t.Helper()
	if got := codes.Code(resp.GetStatus().GetCode()); got != codes.OK {
		t.Errorf("status = %v, want OK", got)
	}
	if resp.GetOkResponse() == nil {
		t.Errorf("http_response = %v, want an ok_response", resp.GetHttpResponse())
	}
}

func assertDenied(t *testing.T, resp *authv3.CheckResponse) {
	t.Helper()
	assertDeniedWith(t, resp, typev3.StatusCode_Forbidden)
}

func assertDeniedWith(t *testing.T, resp *authv3.CheckResponse, status typev3.StatusCode) {
	t.Helper()
	if got := codes.Code(resp.GetStatus().GetCode()); got != codes.PermissionDenied {
		t.Errorf("status = %v, want PermissionDenied", got)
	}
	denied := resp.GetDeniedResponse()
	if denied == nil {
		t.Fatalf("http_response = %v, want a denied_response", resp.GetHttpResponse())
	}
	if got := denied.GetStatus().GetCode(); got != status {
		t.Errorf("denied http status = %v, want %v", got, status)
	}
}

func TestServerCheck(t *testing.T) {
	const demo = `package envoy.authz

default allow := false

allow if {
	input.spiffe.source.id == "` + frontend + `"
	input.parsed_path == ["hello"]
}
`
	tests := []struct {
		name    string
		policy  string
		timeout time.Duration
		req     *authv3.CheckRequest
		allowed bool
		logged  string            // "" means no warning may be logged
		status  typev3.StatusCode // of the deny; 0: 403
	}{
		{
			name:    "allowed",
			policy:  demo,
			req:     checkRequest(frontend, backend, "GET", "/hello?x=1"),
			allowed: true,
		},
		{
			name:   "denied by policy",
			policy: demo,
			req:    checkRequest(frontend, backend, "GET", "/admin"),
		},
		{
			name:   "denied without source",
			policy: demo,
			req:    checkRequest("", backend, "GET", "/hello"),
		},
		{
			name:   "undefined decision",
			policy: "package envoy.authz\n\nallow if input.parsed_path == [\"never\"]\n",
			req:    checkRequest(frontend, backend, "GET", "/hello"),
			logged: "undefined for this request",
		},
		{
			name:   "non-boolean decision",
			policy: "package envoy.authz\n\nallow := \"true\"\n",
			req:    checkRequest(frontend, backend, "GET", "/hello"),
			logged: "is a string",
		},
		{
			name:   "eval error",
			policy: "package envoy.authz\n\nallow if true\n\nallow := false if input.parsed_path == [\"hello\"]\n",
			req:    checkRequest(frontend, backend, "GET", "/hello"),
			logged: "eval_conflict_error",
		},
		{
			name:    "eval timeout",
			policy:  slowPolicy,
			timeout: 20 * time.Millisecond,
			req:     checkRequest(frontend, backend, "GET", "/hello"),
			logged:  "eval timeout",
		},
		{
			name:   "unparsable input",
			policy: "package envoy.authz\n\nallow := true\n",
			req:    checkRequest(frontend, backend, "GET", "/hello%zz"),
			logged: "request path",
			status: typev3.StatusCode_BadRequest, // as the plugin answers it
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncbuf.Buffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
			srv := newServer(t, engine(t, tt.policy, authz.Config{EvalTimeout: tt.timeout}), authz.Options{Log: log})
			resp := check(t, serve(t, srv), tt.req)
			switch {
			case tt.allowed:
				assertAllowed(t, resp)
			case tt.status != 0:
				assertDeniedWith(t, resp, tt.status)
			default:
				assertDenied(t, resp)
			}
			got := logs.String()
			if tt.logged == "" && got != "" {
				t.Errorf("unexpected log: %s", got)
			}
			if tt.logged != "" && !strings.Contains(got, tt.logged) {
				t.Errorf("log %q does not say %q", got, tt.logged)
			}
		})
	}
}

func TestServerWithoutEngineDenies(t *testing.T) {
	var logs syncbuf.Buffer
	srv := newServer(t, nil, authz.Options{Log: slog.New(slog.NewTextHandler(&logs, nil))})
	assertDenied(t, check(t, serve(t, srv), checkRequest(frontend, backend, "GET", "/hello")))
	if !strings.Contains(logs.String(), "no policy loaded") {
		t.Errorf("log %q does not say why", logs.String())
	}
}

func TestServerSetEngine(t *testing.T) {
	srv := newServer(t, engine(t, "package envoy.authz\n\nallow := false\n", authz.Config{}), authz.Options{})
	client := serve(t, srv)
	req := checkRequest(frontend, backend, "GET", "/hello")

	assertDenied(t, check(t, client, req))
	srv.SetEngine(engine(t, "package envoy.authz\n\nallow := true\n", authz.Config{}))
	assertAllowed(t, check(t, client, req))
	srv.SetEngine(nil)
	assertDenied(t, check(t, client, req))
}

// TestServerConcurrentChecks runs many decisions at once through one
// prepared query, so that -race sees the engine shared between requests.
func TestServerConcurrentChecks(t *testing.T) {
	srv := newServer(t, engine(t, `package envoy.authz

default allow := false

allow if input.attributes.request.http.method == "GET"
`, authz.Config{}), authz.Options{})
	client := serve(t, srv)

	var wg sync.WaitGroup
	for i := range 32 {
		method := "GET"
		if i%2 == 1 {
			method = "POST"
		}
		wg.Go(func() {
			resp, err := client.Check(context.Background(), checkRequest(frontend, backend, method, "/hello"))
			if err != nil {
				t.Errorf("Check: %v", err)
				return
			}
			want := codes.OK
			if method != "GET" {
				want = codes.PermissionDenied
			}
			if got := codes.Code(resp.GetStatus().GetCode()); got != want {
				t.Errorf("%s: status = %v, want %v", method, got, want)
			}
		})
	}
	wg.Wait()
}

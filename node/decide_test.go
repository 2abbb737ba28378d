package node

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/test/authztest"
)

// TestDecide: one request decided with the authz section as meshid run
// decides it, the section's settings included.
func TestDecide(t *testing.T) {
	policies := authztest.PolicyDir(t, map[string]string{"authz.rego": authztest.HelloPolicy, "data.json": authztest.HelloData})
	badProtos := filepath.Join(t.TempDir(), "api.pb")
	if err := os.WriteFile(badProtos, []byte("syntax = \"proto3\";\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		path       string
		set        func(*config.Authz)
		allowed    bool
		okResponse bool
		status     typev3.StatusCode // of a denied response
		errHas     string            // in the Result's Err
		wantErr    string            // Decide's own error
	}{
		{name: "allow", path: "/hello", allowed: true, okResponse: true},
		{name: "deny with authz.deny_status", path: "/other", set: func(c *config.Authz) { c.DenyStatus = 404 }, status: typev3.StatusCode_NotFound},
		{name: "the policy's own status", path: "/private", status: typev3.StatusCode_Unauthorized},
		{name: "dry run tells Envoy to allow what the policy denies", path: "/other", set: func(c *config.Authz) { c.DryRun = true }, okResponse: true},
		{name: "a request the plugin refuses is a 400 deny", path: "/bad%zz", status: typev3.StatusCode_BadRequest, errHas: "request path"},
		{name: "authz.decision", path: "/hello", set: func(c *config.Authz) { c.Decision = "data.envoy.authz.nothing" }, wantErr: "decision data.envoy.authz.nothing is not defined"},
		{name: "authz.proto_descriptor is read", path: "/hello", set: func(c *config.Authz) { c.ProtoDescriptor = badProtos }, wantErr: "authz.proto_descriptor: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := config.Default()
			c.DataDir = t.TempDir()
			c.Authz.PolicyDir = policies
			if tt.set != nil {
				tt.set(&c.Authz)
			}
			r, err := Decide(context.Background(), c, authztest.DemoCheck(tt.path))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.ID == "" || r.Allowed != tt.allowed || (r.Response.GetOkResponse() != nil) != tt.okResponse {
				t.Fatalf("id %q, allowed %v, response %v; want allowed %v, ok response %v", r.ID, r.Allowed, r.Response, tt.allowed, tt.okResponse)
			}
			if got := r.Response.GetDeniedResponse().GetStatus().GetCode(); !tt.okResponse && got != tt.status {
				t.Errorf("denied with %v, want %v", got, tt.status)
			}
			if tt.errHas != "" && (r.Err == nil || !strings.Contains(r.Err.Error(), tt.errHas)) {
				t.Errorf("Err = %v, want one containing %q", r.Err, tt.errHas)
			}
		})
	}
}

// xfccJWTPolicy allows the frontend when a trusted proxy says it is the
// caller and the request carries a valid JWT-SVID of the node's test
// workload: what policy eval must decide as the running node does.
const xfccJWTPolicy = `package envoy.authz

default allow := false

allow := {"allowed": true, "headers": {"x-jwt-subject": input.spiffe.jwt.subject}} if {
	input.spiffe.source.via == "xfcc"
	input.spiffe.source.id == "spiffe://example.org/ns/demo/sa/frontend"
	input.spiffe.jwt.valid
}

allow := {"allowed": false, "http_status": 401, "body": input.spiffe.jwt.error} if {
	input.spiffe.source.via == "xfcc"
	not input.spiffe.jwt.valid
}
`

// TestDecideAsRun: with XFCC trusted and JWT-SVIDs validated, policy
// eval (Decide on the node's own configuration) answers each request as
// the running node's ext_authz server does, with the JWT-SVID it minted.
func TestDecideAsRun(t *testing.T) {
	cfg := nodeConfig(t)
	cfg.Authz.PolicyDir = authztest.PolicyDir(t, map[string]string{"authz.rego": xfccJWTPolicy})
	cfg.Authz.XFCC.Trust = true
	cfg.Authz.JWTAudiences = []string{"backend"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := runNode(t, cfg)

	fetchCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	svid, err := workloadapi.FetchJWTSVID(fetchCtx, jwtsvid.Params{Audience: "backend"}, workloadapi.WithAddr("unix://"+cfg.SocketPath))
	if err != nil {
		t.Fatalf("fetch a JWT-SVID: %v", err)
	}
	conn, err := grpc.NewClient(cfg.Authz.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)

	const frontendXFCC = "By=spiffe://example.org/ns/demo/sa/backend;URI=spiffe://example.org/ns/demo/sa/frontend"
	tests := []struct {
		name    string
		headers map[string]string
		allowed bool
	}{
		{"xfcc and a valid JWT-SVID", map[string]string{"x-forwarded-client-cert": frontendXFCC, "authorization": "Bearer " + svid.Marshal()}, true},
		{"xfcc and a tampered JWT-SVID", map[string]string{"x-forwarded-client-cert": frontendXFCC, "authorization": "Bearer " + svid.Marshal() + "x"}, false},
		{"xfcc without a JWT-SVID", map[string]string{"x-forwarded-client-cert": frontendXFCC}, false},
		{"a JWT-SVID without xfcc", map[string]string{"authorization": "Bearer " + svid.Marshal()}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := authztest.DemoCheck("/hello")
			req.Attributes.Source.Principal = "spiffe://example.org/ns/demo/sa/gateway" // the proxy, not the caller
			maps.Copy(req.Attributes.Request.Http.Headers, tt.headers)
			run, err := client.Check(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			eval, err := Decide(ctx, cfg, req)
			if err != nil {
				t.Fatal(err)
			}
			if eval.Allowed != tt.allowed || (run.GetOkResponse() != nil) != tt.allowed {
				t.Errorf("eval allowed %v (%v), run %s; want %v", eval.Allowed, eval.Err, protojson.Format(run), tt.allowed)
			}
			a, _ := authztest.WithoutDecisionID(t, run)
			b, _ := authztest.WithoutDecisionID(t, eval.Response)
			if !proto.Equal(a, b) {
				t.Errorf("eval and run answer differently:\n eval: %s\n  run: %s", protojson.Format(b), protojson.Format(a))
			}
		})
	}
}

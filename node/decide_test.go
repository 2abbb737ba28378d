package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

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
		{name: "no decision is a deny", path: "/bad%zz", status: typev3.StatusCode_Forbidden, errHas: "request path"},
		{name: "authz.decision", path: "/hello", set: func(c *config.Authz) { c.Decision = "data.envoy.authz.nothing" }, wantErr: "decision data.envoy.authz.nothing is not defined"},
		{name: "authz.proto_descriptor is read", path: "/hello", set: func(c *config.Authz) { c.ProtoDescriptor = badProtos }, wantErr: "authz.proto_descriptor: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := config.Default().Authz
			c.PolicyDir = policies
			if tt.set != nil {
				tt.set(&c)
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

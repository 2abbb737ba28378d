package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshid/meshid/test/harness"
)

// TestAuthzOverMTLS runs the demo mesh with meshid's authz listener on
// mutual TLS (authz.tls): meshid presents an SVID of its own, the backend
// Envoy presents its sidecar's SVID and accepts only meshid's ID. Decisions
// flow as before; a plaintext caller gets none; an Envoy that is not in
// authz.tls.client_ids is refused, and its requests are denied.
func TestAuthzOverMTLS(t *testing.T) {
	const authzID = "spiffe://example.org/meshid/authz"
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	mesh, err := env.StartDemoMesh(ctx, harness.DemoOptions{AuthzTLSID: authzID})
	if err != nil {
		t.Fatal(err)
	}
	m := mesh.Meshid

	expect := func(path string, want int) {
		t.Helper()
		status, body, err := harness.Get(ctx, mesh.FrontendURL+path)
		if err != nil || status != want {
			env.Fail()
			t.Fatalf("GET %s through the mesh: %d %q %v, want %d", path, status, body, err, want)
		}
	}

	t.Run("decisions over mTLS", func(t *testing.T) {
		expect("hello", 200)
		expect("admin", 403)
		if n := envoyCounter(t, ctx, mesh.Backend, "cluster.meshid_authz.ssl.handshake"); n < 1 {
			t.Errorf("backend Envoy made %d TLS handshakes with meshid's authz, want at least 1", n)
		}
		t.Logf("GET /hello -> 200, /admin -> 403, decided over mTLS")
	})

	t.Run("meshid presents its own SVID", func(t *testing.T) {
		chain := presentedChain(t, m.AuthzAddr)
		if len(chain) == 0 {
			t.Fatal("meshid's authz listener presented no certificate")
		}
		leaf := chain[0]
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != authzID {
			t.Errorf("authz listener presents URIs %v, want [%s]", leaf.URIs, authzID)
		}
		if err := leaf.CheckSignatureFrom(activeCA(t, m)); err != nil {
			t.Errorf("authz certificate is not signed by meshid's CA: %v", err)
		}
		if !time.Now().Before(leaf.NotAfter) {
			t.Errorf("authz certificate expired at %s", leaf.NotAfter)
		}
		t.Logf("authz listener presents %s, serial %x, issued by meshid's CA", leaf.URIs[0], leaf.SerialNumber)
	})

	t.Run("plaintext callers get nothing", func(t *testing.T) {
		conn, err := grpc.NewClient(m.AuthzAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		callCtx, callCancel := context.WithTimeout(ctx, 5*time.Second)
		defer callCancel()
		if resp, err := authv3.NewAuthorizationClient(conn).Check(callCtx, &authv3.CheckRequest{}); err == nil {
			t.Errorf("plaintext Check answered %v", resp.GetStatus())
		}
	})

	t.Run("an Envoy outside client_ids is refused", func(t *testing.T) {
		served := strings.Count(mesh.BackendApp.Logs(), "/hello")
		if err := m.ConfigureAuthz(ctx, map[string]any{"tls": map[string]any{
			"spiffe_id": authzID, "client_ids": []string{harness.FrontendID},
		}}); err != nil {
			t.Fatal(err)
		}
		// Envoy's ext_authz fails closed: no decision is a 403.
		expect("hello", 403)
		if got := strings.Count(mesh.BackendApp.Logs(), "/hello"); got != served {
			t.Errorf("backend app logged /hello %d times while meshid refused its Envoy, want %d", got, served)
		}

		if err := m.ConfigureAuthz(ctx, map[string]any{"tls": map[string]any{
			"spiffe_id": authzID, "client_ids": []string{harness.BackendID},
		}}); err != nil {
			t.Fatal(err)
		}
		expect("hello", 200)
		t.Logf("client_ids without the backend: 403 and the app saw nothing; with it: 200")
	})
}

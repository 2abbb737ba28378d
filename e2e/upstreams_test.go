package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/test/harness"
)

// TestUpstreamsByName: a sidecar with several upstreams, given by host
// name (STRICT_DNS clusters resolving "localhost"), routes each request by
// the host the app names, and each upstream's SAN pin holds on its own:
// the backend answers as "backend", and the same backend behind a name
// that expects another ID is refused by the client sidecar.
func TestUpstreamsByName(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	mesh, err := env.StartDemoMesh(ctx, harness.DemoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(mesh.Backend.Sidecar.Inbound.ListenAddr)
	if err != nil {
		t.Fatal(err)
	}
	backendByName := "localhost:" + port
	out := env.FreeAddr()
	v, err := env.StartEnvoy(ctx, "multi-envoy", envoy.Sidecar{
		SDSSocket:   mesh.Meshid.SocketPath,
		SPIFFEID:    harness.FrontendID,
		TrustDomain: harness.DemoTrustDomain,
		Outbound: &envoy.Outbound{ListenAddr: out, Upstreams: []envoy.Upstream{
			{Name: "backend", SPIFFEID: harness.BackendID, Addr: backendByName},
			{Name: "imposter", SPIFFEID: harness.FrontendID, Addr: backendByName},
		}},
	}, harness.FrontendEnvoyUID)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WaitLive(ctx); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		host string
		want int
	}{
		{"backend", http.StatusOK},
		{"backend:8080", http.StatusOK},             // any port: the listener's, not the peer's
		{"imposter", http.StatusServiceUnavailable}, // the backend is not who "imposter" must be
		{"nobody", http.StatusNotFound},
	} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+out+"/hello", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = tt.host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("Host %s: %d %q, want %d", tt.host, resp.StatusCode, body, tt.want)
		}
		t.Logf("Host %s -> %d", tt.host, resp.StatusCode)
	}
}

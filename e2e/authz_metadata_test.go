package e2e

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/test/harness"
)

// metadataPolicy allows the frontend's GET /hello with dynamic metadata of
// its own, a decision_id among it, which meshid's id replaces.
const metadataPolicy = `package envoy.authz

default allow := false

allow := {"allowed": true, "dynamic_metadata": {"tenant": "t1", "decision_id": "the policy's"}} if {
	input.spiffe.source.id == "spiffe://example.org/ns/demo/sa/frontend"
	input.parsed_path == ["hello"]
}
`

// TestAuthzDynamicMetadataThroughEnvoy: the dynamic metadata of meshid's
// gRPC answers, whose decision_id entry goes out already encoded
// (response.ForWire), is what a real Envoy reads: the backend Envoy's
// route copies ext_authz's decision_id and tenant into request headers,
// and the upstream sees meshid's decision id (the one in
// x-meshid-decision-id, not the policy's) and the policy's tenant, for
// the first request and for those answered from the decision cache.
func TestAuthzDynamicMetadataThroughEnvoy(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	policyDir := writePolicies(t, env, map[string]string{"authz.rego": metadataPolicy})
	m, err := env.StartMeshid(ctx, harness.MeshidOptions{Entries: harness.DemoEntries(), PolicyDir: policyDir})
	if err != nil {
		t.Fatal(err)
	}
	up := startUpstream(t)
	in := envoy.Inbound{ListenAddr: env.FreeAddr(), AppAddr: up.addr, AuthzAddr: m.AuthzAddr}
	route := []byte("route: {cluster: local_app}")
	backend, err := env.StartEnvoyEdited(ctx, "backend-envoy", envoy.Sidecar{
		SDSSocket: m.SocketPath, SPIFFEID: harness.BackendID, TrustDomain: m.TrustDomain, Inbound: &in,
	}, harness.BackendEnvoyUID, func(b []byte) []byte {
		if bytes.Count(b, route) != 1 {
			t.Fatalf("the backend bootstrap has %d of %s, want 1; update the test's edit", bytes.Count(b, route), route)
		}
		return bytes.Replace(b, route, append(route, []byte(`
                request_headers_to_add:
                - header: {key: x-md-decision-id, value: "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision_id)%"}
                - header: {key: x-md-tenant, value: "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:tenant)%"}`)...), 1)
	})
	if err != nil {
		t.Fatal(err)
	}
	frontend, err := env.StartEnvoy(ctx, "frontend-envoy", envoy.Sidecar{
		SDSSocket: m.SocketPath, SPIFFEID: harness.FrontendID, TrustDomain: m.TrustDomain,
		Outbound: &envoy.Outbound{ListenAddr: env.FreeAddr(), PeerAddr: in.ListenAddr, PeerSPIFFEID: harness.BackendID},
	}, harness.FrontendEnvoyUID)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []*harness.Envoy{backend, frontend} {
		if err := v.WaitLive(ctx); err != nil {
			t.Fatal(err)
		}
	}
	client := newMeshClient(t, frontend)

	ids := map[string]bool{}
	for i := range 3 {
		resp, body := client.do(t, ctx, "/hello", nil)
		if resp.StatusCode != 200 {
			t.Fatalf("GET /hello #%d: %d %q, want 200", i+1, resp.StatusCode, body)
		}
		id := resp.Header.Get("x-meshid-decision-id")
		seen := up.last()
		if got := seen.Get("x-md-decision-id"); id == "" || got != id {
			t.Errorf("GET /hello #%d: ext_authz's dynamic metadata decision_id %q, want the decision id %q", i+1, got, id)
		}
		if got := seen.Get("x-md-tenant"); got != "t1" {
			t.Errorf("GET /hello #%d: ext_authz's dynamic metadata tenant %q, want the policy's t1", i+1, got)
		}
		ids[id] = true
	}
	if len(ids) != 3 {
		t.Errorf("decision ids %v: each request must have its own", ids)
	}
}

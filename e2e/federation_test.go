package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/internal/harness"
)

// TestALLAcrossTrustDomains: a frontend of trust domain partner.example
// (its own meshid) calls a backend of example.org. Each meshid is given the
// other's root as a federated bundle file, and each entry federates with
// the other domain, so the SDS "ALL" secret (the SPIFFE certificate
// validator) carries both bundles and each Envoy accepts the other's SVID.
func TestALLAcrossTrustDomains(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	const (
		partnerTD       = "partner.example"
		partnerFrontend = "spiffe://partner.example/ns/demo/sa/frontend"
	)
	policyDir, err := env.MkdirAll("federation-policy")
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(policyDir, "authz.rego"), `package envoy.authz

default allow := false

# The partner's frontend may GET /hello on our backend.
allow if {
	input.spiffe.source.id == "`+partnerFrontend+`"
	input.spiffe.destination.id == "`+harness.BackendID+`"
	input.attributes.request.http.method == "GET"
	input.parsed_path == ["hello"]
}
`)
	backendEntry := harness.Entry{SPIFFEID: harness.BackendID, Selectors: []string{fmt.Sprintf("unix:uid:%d", harness.BackendEnvoyUID)}}
	frontendEntry := harness.Entry{SPIFFEID: partnerFrontend, Selectors: []string{fmt.Sprintf("unix:uid:%d", harness.FrontendEnvoyUID)}}

	// Each side needs the other's root: start ours, then the partner's with
	// our root, then give ours the partner's root and restart it (the CA
	// survives restarts).
	ours, err := env.StartMeshid(ctx, harness.MeshidOptions{Name: "meshid-ours", Entries: []harness.Entry{backendEntry}, PolicyDir: policyDir})
	if err != nil {
		t.Fatal(err)
	}
	federation := func(td string, m *harness.Meshid) string {
		root := activeCAPath(t, m)
		return fmt.Sprintf("federation:\n  bundles:\n    - trust_domain: %s\n      bundle_file: %s\n", td, root)
	}
	frontendEntry.FederatesWith = []string{harness.DemoTrustDomain}
	partner, err := env.StartMeshid(ctx, harness.MeshidOptions{Name: "meshid-partner", TrustDomain: partnerTD,
		Entries: []harness.Entry{frontendEntry}, ExtraConfig: federation(harness.DemoTrustDomain, ours)})
	if err != nil {
		t.Fatal(err)
	}
	appendFile(t, ours.ConfigPath, federation(partnerTD, partner))
	backendEntry.FederatesWith = []string{partnerTD}
	if err := ours.WriteEntries([]harness.Entry{backendEntry}); err != nil {
		t.Fatal(err)
	}
	if err := ours.Restart(ctx); err != nil {
		t.Fatal(err)
	}

	app, err := env.StartApp(ctx, "backend", harness.BackendAppUID, "")
	if err != nil {
		t.Fatal(err)
	}
	backend, err := env.StartEnvoy(ctx, "backend-envoy", envoy.Sidecar{
		SDSSocket: ours.SocketPath, SPIFFEID: harness.BackendID, TrustDomain: harness.DemoTrustDomain, ValidationName: "ALL",
		Inbound: &envoy.Inbound{ListenAddr: env.FreeAddr(), AppAddr: app.Addr, AuthzAddr: ours.AuthzAddr},
	}, harness.BackendEnvoyUID)
	if err != nil {
		t.Fatal(err)
	}
	frontend, err := env.StartEnvoy(ctx, "frontend-envoy", envoy.Sidecar{
		SDSSocket: partner.SocketPath, SPIFFEID: partnerFrontend, TrustDomain: partnerTD, ValidationName: "ALL",
		Outbound: &envoy.Outbound{ListenAddr: env.FreeAddr(), PeerAddr: backend.Sidecar.Inbound.ListenAddr, PeerSPIFFEID: harness.BackendID},
	}, harness.FrontendEnvoyUID)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []*harness.Envoy{backend, frontend} {
		if err := v.WaitLive(ctx); err != nil {
			t.Fatal(err)
		}
	}

	status, body, err := harness.Get(ctx, "http://"+frontend.Sidecar.Outbound.ListenAddr+"/hello")
	if err != nil || status != http.StatusOK {
		t.Fatalf("GET /hello from partner.example to example.org: %d %s %v", status, body, err)
	}
	var seen struct{ Peer string }
	if err := json.Unmarshal(body, &seen); err != nil || seen.Peer != partnerFrontend {
		t.Fatalf("backend saw peer %q (%v), want %s", seen.Peer, err, partnerFrontend)
	}
	if _, roots := envoyCerts(t, ctx, backend); len(roots) != 2 {
		t.Fatalf("the backend Envoy trusts %d roots, want its own and the partner's", len(roots))
	}
	t.Logf("partner.example frontend -> example.org backend over ALL: 200, backend saw %s", seen.Peer)
}

// activeCAPath is the path of meshid's only CA certificate.
func activeCAPath(t *testing.T, m *harness.Meshid) string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(m.Dir, "data", "ca", "*", "ca.crt"))
	if err != nil || len(paths) != 1 {
		t.Fatalf("meshid's CA generations: %v %v, want exactly one", paths, err)
	}
	return paths[0]
}

func appendFile(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		t.Fatal(err)
	}
}

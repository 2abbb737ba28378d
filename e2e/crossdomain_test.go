package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/test/harness"
)

// The cross-domain pair of the federation tests: partner.example's frontend
// calls example.org's backend.
const (
	partnerFrontend = "spiffe://partner.example/ns/demo/sa/frontend"
)

// crossDomainPolicy writes example.org's policy for the pair into a new
// directory of env and returns it: the partner's frontend may GET /hello
// on our backend, nothing else.
func crossDomainPolicy(t *testing.T, env *harness.Env) string {
	t.Helper()
	dir, err := env.MkdirAll("federation-policy")
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "authz.rego"), `package envoy.authz

default allow := false

# The partner's frontend may GET /hello on our backend.
allow if {
	input.spiffe.source.id == "`+partnerFrontend+`"
	input.spiffe.destination.id == "`+harness.BackendID+`"
	input.attributes.request.http.method == "GET"
	input.parsed_path == ["hello"]
}
`)
	return dir
}

// crossDomainEntries are the pair's entries, by the demo's Envoy uids;
// neither federates yet.
func crossDomainEntries() (backend, frontend harness.Entry) {
	return harness.Entry{SPIFFEID: harness.BackendID, Selectors: []string{fmt.Sprintf("unix:uid:%d", harness.BackendEnvoyUID)}},
		harness.Entry{SPIFFEID: partnerFrontend, Selectors: []string{fmt.Sprintf("unix:uid:%d", harness.FrontendEnvoyUID)}}
}

// placer is where the harness runs a process: its own network namespace
// (*harness.Env) or a host's (*harness.Host).
type placer interface {
	StartApp(ctx context.Context, name string, uid uint32, upstream string) (*harness.App, error)
	StartEnvoy(ctx context.Context, name string, sc envoy.Sidecar, uid uint32) (*harness.Envoy, error)
	FreeAddr() string
}

// startCrossDomain starts the pair: our backend app and its Envoy at back,
// with their identity and decisions from ours, and the partner's frontend
// Envoy at front, from partner. Both validate peers with the SDS "ALL"
// bundle (every trust domain they federate with). It returns once both
// Envoys are live.
func startCrossDomain(t *testing.T, ctx context.Context, back, front placer, ours, partner *harness.Meshid) (backend, frontend *harness.Envoy) {
	t.Helper()
	app, err := back.StartApp(ctx, "backend", harness.BackendAppUID, "")
	if err != nil {
		t.Fatal(err)
	}
	backend, err = back.StartEnvoy(ctx, "backend-envoy", envoy.Sidecar{
		SDSSocket: ours.SocketPath, SPIFFEID: harness.BackendID, TrustDomain: ours.TrustDomain, ValidationName: "ALL",
		Inbound: &envoy.Inbound{ListenAddr: back.FreeAddr(), AppAddr: app.Addr, AuthzAddr: ours.AuthzAddr},
	}, harness.BackendEnvoyUID)
	if err != nil {
		t.Fatal(err)
	}
	frontend, err = front.StartEnvoy(ctx, "frontend-envoy", envoy.Sidecar{
		SDSSocket: partner.SocketPath, SPIFFEID: partnerFrontend, TrustDomain: partner.TrustDomain, ValidationName: "ALL",
		Outbound: &envoy.Outbound{ListenAddr: front.FreeAddr(), PeerAddr: backend.Sidecar.Inbound.ListenAddr, PeerSPIFFEID: harness.BackendID},
	}, harness.FrontendEnvoyUID)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []*harness.Envoy{backend, frontend} {
		if err := v.WaitLive(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return backend, frontend
}

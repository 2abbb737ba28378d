package node

import (
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/internal/config"
)

// TestBundleEndpointSPIFFEProfile serves the bundle endpoint with meshid's
// own SVID and fetches it as a federated partner would: authenticated by
// the SVID it presents against the bundle it then receives.
func TestBundleEndpointSPIFFEProfile(t *testing.T) {
	cfg := nodeConfig(t)
	addr := freeTCPAddr(t)
	cfg.Federation.BundleEndpoint = &config.BundleEndpoint{Address: addr, Profile: config.ProfileSPIFFE, RefreshHint: time.Minute}
	n, ctx := startNode(t, cfg)
	td := spiffeid.RequireTrustDomainFromString(cfg.TrustDomain)
	roots := x509bundle.NewSet(n.ca.X509Bundle())

	b, err := federation.FetchBundle(ctx, td, "https://"+addr, federation.WithSPIFFEAuth(roots, spiffeid.RequireFromPath(td, "/meshid")))
	if err != nil {
		t.Fatalf("fetch as a partner with https_spiffe: %v", err)
	}
	if !b.X509Bundle().Equal(n.ca.X509Bundle()) || len(b.JWTAuthorities()) != len(n.ca.JWTBundle().JWTAuthorities()) {
		t.Errorf("served bundle has %d roots and %d JWT keys, want the CA's", len(b.X509Authorities()), len(b.JWTAuthorities()))
	}
	if hint, ok := b.RefreshHint(); !ok || hint != time.Minute {
		t.Errorf("refresh hint %s %v, want 1m", hint, ok)
	}
	if _, err := federation.FetchBundle(ctx, td, "https://"+addr, federation.WithSPIFFEAuth(roots, spiffeid.RequireFromPath(td, "/someone"))); err == nil {
		t.Error("a partner expecting another endpoint ID accepted meshid's")
	}
}

package node

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/internal/config"
)

// loadFederation reads every bundle file (identity parses them; its tests
// cover the formats) and says which config entry a bad one is.
func TestLoadFederationNamesTheBadEntry(t *testing.T) {
	partner, err := ca.Open(ca.Options{TrustDomain: spiffeid.RequireTrustDomainFromString("partner.example"), Dir: t.TempDir(), TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	roots, err := partner.X509Bundle().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	good, empty := filepath.Join(dir, "good.pem"), filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(good, roots, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}

	set, err := loadFederation(config.Federation{Bundles: []config.FederatedBundle{{TrustDomain: "partner.example", BundleFile: good}}})
	if err != nil {
		t.Fatal(err)
	}
	if b, ok := set.Get(spiffeid.RequireTrustDomainFromString("partner.example")); !ok || !b.X509Authorities()[0].Equal(partner.X509Bundle().X509Authorities()[0]) {
		t.Errorf("partner.example's root not loaded: %v", b)
	}

	_, err = loadFederation(config.Federation{Bundles: []config.FederatedBundle{
		{TrustDomain: "partner.example", BundleFile: good},
		{TrustDomain: "other.example", BundleFile: empty},
	}})
	if want := "federation.bundles[1] (other.example): " + empty + ": empty file"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("err = %v, want it to start with %q", err, want)
	}
	missing := filepath.Join(dir, "nope.json")
	_, err = loadFederation(config.Federation{Bundles: []config.FederatedBundle{{TrustDomain: "partner.example", BundleFile: missing}}})
	if err == nil || !strings.HasPrefix(err.Error(), "federation.bundles[0] (partner.example): "+missing+": ") || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want the missing file named and fs.ErrNotExist", err)
	}
}

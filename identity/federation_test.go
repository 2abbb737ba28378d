package identity

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/ca"
)

var partner = spiffeid.RequireTrustDomainFromString("partner.example")

// partnerBundle is another trust domain's bundle, from a real CA of its own.
func partnerBundle(t *testing.T) *x509bundle.Bundle {
	t.Helper()
	other, err := ca.Open(ca.Options{TrustDomain: partner, Dir: t.TempDir(), TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return other.X509Bundle()
}

func federatedManager(t *testing.T, entriesYAML string) (*Manager, string) {
	t.Helper()
	authority, err := ca.Open(ca.Options{TrustDomain: td, Dir: t.TempDir(), TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "entries.yaml")
	if err := os.WriteFile(path, []byte(entriesYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	entries, err := LoadEntries(path, td)
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(Options{Entries: entries, DefaultTTL: time.Hour, DefaultJWTTTL: 5 * time.Minute,
		Minter: authority, Attestor: uidAttestor{}, EntriesFile: path, TrustDomain: td,
		Federated: x509bundle.NewSet(partnerBundle(t))})
	return m, path
}

func TestFederatedBundlesGoToEntriesThatFederate(t *testing.T) {
	m, _ := federatedManager(t, `entries:
  - spiffe_id: spiffe://example.org/backend
    selectors: ["unix:uid:1101"]
    federates_with: [partner.example]
  - spiffe_id: spiffe://example.org/frontend
    selectors: ["unix:uid:1102"]
`)
	for uid, want := range map[uint32]bool{1101: true, 1102: false} {
		sub, err := m.Watch(callerCtx(uid))
		if err != nil {
			t.Fatal(err)
		}
		x, err := sub.Current()
		sub.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := x.Bundles.Has(partner); got != want || !x.Bundles.Has(td) {
			t.Errorf("uid %d: has partner bundle = %v, want %v (own bundle present: %v)", uid, got, want, x.Bundles.Has(td))
		}
	}
}

func TestFederationChangesReachSubscribers(t *testing.T) {
	m, path := federatedManager(t, "entries:\n  - spiffe_id: spiffe://example.org/backend\n    selectors: [\"unix:uid:1101\"]\n")
	sub, _ := m.Watch(callerCtx(1101))
	defer sub.Close()
	os.WriteFile(path, []byte("entries:\n  - spiffe_id: spiffe://example.org/backend\n    selectors: [\"unix:uid:1101\"]\n    federates_with: [partner.example]\n"), 0o644)
	if err := m.ReloadEntries(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sub.Changed():
	default:
		t.Fatal("gaining a federated bundle did not notify the subscriber")
	}
	if x, _ := sub.Current(); !x.Bundles.Has(partner) {
		t.Fatal("the new federated bundle is not served")
	}
}

func TestFederationWithoutABundleIsRefused(t *testing.T) {
	yaml := "entries:\n  - spiffe_id: spiffe://example.org/backend\n    selectors: [\"unix:uid:1101\"]\n    federates_with: [partner.example, stranger.example]\n"
	entries, err := ParseEntries("entries.yaml", []byte(yaml), td)
	if err != nil {
		t.Fatal(err)
	}
	err = CheckFederation(entries, x509bundle.NewSet(partnerBundle(t)))
	if err == nil || !strings.Contains(err.Error(), `entries.yaml:2: federates_with "stranger.example", but federation.bundles has no bundle for it`) {
		t.Fatalf("err = %v", err)
	}

	// A reload naming it is rejected and the entries in force stay.
	m, path := federatedManager(t, "entries:\n  - spiffe_id: spiffe://example.org/backend\n    selectors: [\"unix:uid:1101\"]\n")
	os.WriteFile(path, []byte(yaml), 0o644)
	if err := m.ReloadEntries(); err == nil {
		t.Fatal("a reload federating with an unknown trust domain was accepted")
	}
	if got := m.Entries(); len(got) != 1 || len(got[0].FederatesWith) != 0 {
		t.Fatalf("entries in force after a rejected reload: %+v", got)
	}
}

func TestParseFederatesWith(t *testing.T) {
	for _, tc := range []struct{ value, want string }{
		{"[Partner Example]", `entries.yaml:4: federates_with "Partner Example"`},
		{"[example.org]", `entries.yaml:4: federates_with "example.org" is this node's own trust domain`},
	} {
		in := "entries:\n  - spiffe_id: spiffe://example.org/a\n    selectors: [\"unix:uid:1\"]\n    federates_with: " + tc.value + "\n"
		if _, err := ParseEntries("entries.yaml", []byte(in), td); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("federates_with %s: err = %v, want %q", tc.value, err, tc.want)
		}
	}
	entries, err := ParseEntries("entries.yaml", []byte("entries:\n  - spiffe_id: spiffe://example.org/a\n    selectors: [\"unix:uid:1\"]\n    federates_with: [partner.example]\n"), td)
	if err != nil || len(entries[0].FederatesWith) != 1 || entries[0].FederatesWith[0] != partner {
		t.Fatalf("entries = %+v, %v", entries, err)
	}
}

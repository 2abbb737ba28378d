package identity

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/meshid/meshid/ca"
)

var partner = spiffeid.RequireTrustDomainFromString("partner.example")

// partnerCA is another trust domain's CA, real keys of its own, so tests
// can both federate with its bundle and mint its JWT-SVIDs.
func partnerCA(t *testing.T) *ca.Authority {
	t.Helper()
	other, err := ca.Open(ca.Options{TrustDomain: partner, Dir: t.TempDir(), TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return other
}

// partnerBundle is partnerCA's bundle as a SPIFFE bundle file would give
// it: X.509 roots and JWT keys.
func partnerBundle(t *testing.T, other *ca.Authority) *spiffebundle.Bundle {
	t.Helper()
	b := spiffebundle.FromX509Bundle(other.X509Bundle())
	b.SetJWTAuthorities(other.JWTBundle().JWTAuthorities())
	return b
}

func federatedManager(t *testing.T, entriesYAML string) (*Manager, string) {
	t.Helper()
	return federatedManagerWith(t, entriesYAML, spiffebundle.NewSet(partnerBundle(t, partnerCA(t))))
}

func federatedManagerWith(t *testing.T, entriesYAML string, federated *spiffebundle.Set) (*Manager, string) {
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
		Federated: federated})
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
		sub, err := m.Watch(context.Background(), caller(uid))
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
	sub, _ := m.Watch(context.Background(), caller(1101))
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
	err = CheckFederation(entries, spiffebundle.NewSet(partnerBundle(t, partnerCA(t))))
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

// twoCallersYAML: uid 1101 federates with partner.example, uid 1102 does
// not; uid 1103 has no entry at all.
const twoCallersYAML = `entries:
  - spiffe_id: spiffe://example.org/backend
    selectors: ["unix:uid:1101"]
    federates_with: [partner.example]
  - spiffe_id: spiffe://example.org/frontend
    selectors: ["unix:uid:1102"]
`

func TestFederatedJWTBundlesGoToEntriesThatFederate(t *testing.T) {
	other := partnerCA(t)
	m, _ := federatedManagerWith(t, twoCallersYAML, spiffebundle.NewSet(partnerBundle(t, other)))
	// go-spiffe validates against the real clock, and so mints the partner.
	token, err := other.MintJWTSVID(ca.JWTRequest{ID: spiffeid.RequireFromString("spiffe://partner.example/client"), Audience: []string{"api"}, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for uid, want := range map[uint32]bool{1101: true, 1102: false, 1103: false} {
		sub, err := m.Watch(context.Background(), caller(uid))
		if err != nil {
			t.Fatal(err)
		}
		set := sub.JWTBundles()
		sub.Close()
		if !set.Has(td) {
			t.Errorf("uid %d: no JWT bundle of its own trust domain", uid)
		}
		b, got := set.Get(partner)
		if got != want {
			t.Errorf("uid %d: has partner JWT bundle = %v, want %v", uid, got, want)
		}
		if got && len(b.JWTAuthorities()) != 1 {
			t.Errorf("uid %d: partner JWT bundle has %d keys, want the partner CA's one", uid, len(b.JWTAuthorities()))
		}
		svid, err := jwtsvid.ParseAndValidate(token.Token, set, []string{"api"})
		if (err == nil) != want {
			t.Errorf("uid %d: partner JWT-SVID validates against its JWT bundles: %v (err %v), want %v", uid, err == nil, err, want)
		}
		if err == nil && svid.ID.String() != "spiffe://partner.example/client" {
			t.Errorf("uid %d: validated subject %s", uid, svid.ID)
		}
	}
}

// A trust domain may come with only JWT keys (its JWT-SVIDs are accepted,
// its X.509-SVIDs are not) or only X.509 roots (a PEM file): a caller
// federating with it gets only the kind there is, never an empty bundle of
// the other.
func TestFederationWithOneKindOfKey(t *testing.T) {
	other := partnerCA(t)
	jwtOnly := spiffebundle.FromJWTBundle(other.JWTBundle())
	x509Only := spiffebundle.FromX509Bundle(other.X509Bundle())
	for _, tc := range []struct {
		name              string
		bundle            *spiffebundle.Bundle
		wantX509, wantJWT bool
	}{
		{"JWT keys only", jwtOnly, false, true},
		{"X.509 roots only", x509Only, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, _ := federatedManagerWith(t, twoCallersYAML, spiffebundle.NewSet(tc.bundle))
			entries, _ := ParseEntries("entries.yaml", []byte(twoCallersYAML), td)
			if err := CheckFederation(entries, spiffebundle.NewSet(tc.bundle)); err != nil {
				t.Fatalf("federating with a bundle of one kind of key was refused: %v", err)
			}
			sub, err := m.Watch(context.Background(), caller(1101))
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			x, err := sub.Current()
			if err != nil {
				t.Fatal(err)
			}
			if got := x.Bundles.Has(partner); got != tc.wantX509 {
				t.Errorf("X.509 bundle for partner.example: %v, want %v", got, tc.wantX509)
			}
			for _, b := range x.Bundles.Bundles() {
				if len(b.X509Authorities()) == 0 {
					t.Errorf("an empty X.509 bundle is served for %s", b.TrustDomain())
				}
			}
			if got := sub.JWTBundles().Has(partner); got != tc.wantJWT {
				t.Errorf("JWT bundle for partner.example: %v, want %v", got, tc.wantJWT)
			}
		})
	}
}

// openCA is a trust domain's real CA, for its roots, JWT keys and tokens.
func openCA(t *testing.T, name string) *ca.Authority {
	t.Helper()
	a, err := ca.Open(ca.Options{TrustDomain: spiffeid.RequireTrustDomainFromString(name), Dir: t.TempDir(), TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// spiffeBundleDoc is a's SPIFFE bundle document, with its X.509 roots and
// its JWT keys as asked for.
func spiffeBundleDoc(t *testing.T, a *ca.Authority, x509, jwt bool) []byte {
	t.Helper()
	b := spiffebundle.New(a.X509Bundle().TrustDomain())
	if x509 {
		b.SetX509Authorities(a.X509Bundle().X509Authorities())
	}
	if jwt {
		b.SetJWTAuthorities(a.JWTBundle().JWTAuthorities())
	}
	doc, err := b.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

// spiffeBundleDocWithoutKid is a's JWT key in a SPIFFE bundle, with its
// key ID taken away: go-spiffe refuses a jwt-svid key without one.
func spiffeBundleDocWithoutKid(t *testing.T, a *ca.Authority) []byte {
	t.Helper()
	doc := string(spiffeBundleDoc(t, a, false, true))
	for kid := range a.JWTBundle().JWTAuthorities() {
		doc = strings.Replace(doc, `"kid":"`+kid+`",`, "", 1)
	}
	if strings.Contains(doc, `"kid"`) {
		t.Fatalf("could not take the kid out of %s", doc)
	}
	return []byte(doc)
}

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestReadBundleFileReadsBothFormats(t *testing.T) {
	pemCA, fullCA, jwtCA := openCA(t, "pem.example"), openCA(t, "full.example"), openCA(t, "jwt.example")
	roots, err := pemCA.X509Bundle().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		a              *ca.Authority
		file           string
		content        []byte
		roots, jwtKeys int
	}{
		{pemCA, "pem.pem", roots, 1, 0},
		// Leading whitespace and a trailing newline, as editors leave them.
		{fullCA, "full.json", append(append([]byte("\n  "), spiffeBundleDoc(t, fullCA, true, true)...), '\n'), 1, 1},
		{jwtCA, "jwt.json", spiffeBundleDoc(t, jwtCA, false, true), 0, 1},
	} {
		td := tc.a.X509Bundle().TrustDomain()
		b, err := ReadBundleFile(td, writeTemp(t, tc.file, tc.content))
		if err != nil {
			t.Errorf("%s: %v", tc.file, err)
			continue
		}
		if b.TrustDomain() != td {
			t.Errorf("%s: bundle of %s, want %s", tc.file, b.TrustDomain(), td)
		}
		if len(b.X509Authorities()) != tc.roots || len(b.JWTAuthorities()) != tc.jwtKeys {
			t.Errorf("%s: %d roots and %d JWT keys, want %d and %d", tc.file, len(b.X509Authorities()), len(b.JWTAuthorities()), tc.roots, tc.jwtKeys)
		}
		if tc.roots > 0 && !b.X509Authorities()[0].Equal(tc.a.X509Bundle().X509Authorities()[0]) {
			t.Errorf("%s: the root read is not the CA's", tc.file)
		}
		for kid := range tc.a.JWTBundle().JWTAuthorities() {
			if tc.jwtKeys > 0 && !b.HasJWTAuthority(kid) {
				t.Errorf("%s: JWT key %s of the CA not read", tc.file, kid)
			}
		}
	}
}

func TestReadBundleFileRefusesBadFiles(t *testing.T) {
	for _, tc := range []struct {
		name, content, want string
	}{
		{"empty", " \n", "empty file: want PEM X.509 roots or a SPIFFE bundle (JSON)"},
		{"neither", "partner.example roots go here\n", "not PEM and not a SPIFFE bundle: "},
		{"broken PEM", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "PEM: "},
		{"PEM without a certificate", "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n", "PEM holds no certificate"},
		{"broken JSON", `{"keys": [`, "not a valid SPIFFE bundle: "},
		{"JSON without keys", `{"spiffe_sequence": 1}`, "not a valid SPIFFE bundle: "},
		{"SPIFFE bundle without keys", `{"keys": []}`, `SPIFFE bundle has no "x509-svid" and no "jwt-svid" keys`},
		{"SPIFFE bundle of another use only", `{"keys": [{"use": "other", "kty": "oct", "k": "AAAA"}]}`, `SPIFFE bundle has no "x509-svid" and no "jwt-svid" keys`},
		{"JWT key without kid", string(spiffeBundleDocWithoutKid(t, partnerCA(t))), "not a valid SPIFFE bundle: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := ReadBundleFile(partner, writeTemp(t, "partner.json", []byte(tc.content)))
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("ReadBundleFile = %v, %v\nwant an error starting with %q", b, err, tc.want)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		if _, err := ReadBundleFile(partner, filepath.Join(t.TempDir(), "nope.json")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("err = %v, want fs.ErrNotExist", err)
		}
	})
}

// The Manager is authz's JWT bundle source: it validates JWT-SVIDs of its
// own trust domain and of every federated trust domain that has JWT keys,
// whatever the entries say.
func TestManagerIsTheNodeWideJWTBundleSource(t *testing.T) {
	other, pemOnly, stranger := partnerCA(t), openCA(t, "pem.example"), openCA(t, "stranger.example")
	impostor := partnerCA(t) // the partner's name, not its keys
	roots, _ := pemOnly.X509Bundle().Marshal()
	federated := spiffebundle.NewSet()
	for _, f := range []struct {
		td   spiffeid.TrustDomain
		file string
		doc  []byte
	}{
		{partner, "partner.json", spiffeBundleDoc(t, other, false, true)},
		{spiffeid.RequireTrustDomainFromString("pem.example"), "pem.pem", roots},
	} {
		b, err := ReadBundleFile(f.td, writeTemp(t, f.file, f.doc))
		if err != nil {
			t.Fatal(err)
		}
		federated.Add(b)
	}
	// No entry federates with anyone: authz is not a caller.
	m, _ := federatedManagerWith(t, "entries:\n  - spiffe_id: spiffe://example.org/backend\n    selectors: [\"unix:uid:1101\"]\n", federated)
	own := m.minter.(*ca.Authority)

	for name, want := range map[string]string{
		"example.org":      "",
		"partner.example":  "",
		"pem.example":      `no JWT bundle for trust domain "pem.example": neither meshid's own ("example.org") nor federated with JWT keys`,
		"stranger.example": `no JWT bundle for trust domain "stranger.example"`,
	} {
		b, err := m.GetJWTBundleForTrustDomain(spiffeid.RequireTrustDomainFromString(name))
		switch {
		case want == "" && (err != nil || b.TrustDomain().Name() != name || len(b.JWTAuthorities()) == 0):
			t.Errorf("JWT bundle for %s: %v, %v", name, b, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("JWT bundle for %s: err = %v, want %q", name, err, want)
		}
	}
	token := func(a *ca.Authority, id string) string {
		t.Helper()
		svid, err := a.MintJWTSVID(ca.JWTRequest{ID: spiffeid.RequireFromString(id), Audience: []string{"backend"}, TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return svid.Token
	}
	for _, tc := range []struct {
		token, want string // want: the subject, or part of the error
		valid       bool
	}{
		{token(own, "spiffe://example.org/frontend"), "spiffe://example.org/frontend", true},
		{token(other, "spiffe://partner.example/client"), "spiffe://partner.example/client", true},
		// Signed by pem.example's CA: its roots are known, its JWT keys not.
		{token(pemOnly, "spiffe://pem.example/client"), `no bundle found for trust domain "pem.example"`, false},
		{token(stranger, "spiffe://stranger.example/client"), `no bundle found for trust domain "stranger.example"`, false},
		{token(impostor, "spiffe://partner.example/client"), `jwtsvid: no JWT authority`, false},
	} {
		svid, err := jwtsvid.ParseAndValidate(tc.token, m, []string{"backend"})
		switch {
		case tc.valid && (err != nil || svid.ID.String() != tc.want):
			t.Errorf("%s: %v, %v; want valid", tc.want, svid, err)
		case !tc.valid && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("err = %v, want it to say %q", err, tc.want)
		}
	}
}

func TestSetFederatedBundleReachesThoseWhoFederate(t *testing.T) {
	m, _ := federatedManager(t, `entries:
  - spiffe_id: spiffe://example.org/backend
    selectors: ["unix:uid:1101"]
    federates_with: [partner.example]
  - spiffe_id: spiffe://example.org/frontend
    selectors: ["unix:uid:1102"]
`)
	federating, err := m.Watch(context.Background(), caller(1101))
	if err != nil {
		t.Fatal(err)
	}
	defer federating.Close()
	other, err := m.Watch(context.Background(), caller(1102))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	// The partner's endpoint now serves a bundle of another CA, X.509 only.
	rotated := spiffebundle.FromX509Bundle(partnerCA(t).X509Bundle())
	m.SetFederatedBundle(rotated)
	select {
	case <-federating.Changed():
	default:
		t.Fatal("a refreshed federated bundle did not notify the caller that federates with it")
	}
	select {
	case <-other.Changed():
		t.Error("a caller that does not federate was notified")
	default:
	}
	x, err := federating.Current()
	if err != nil {
		t.Fatal(err)
	}
	b, ok := x.Bundles.Get(partner)
	if !ok || !b.Equal(rotated.X509Bundle()) {
		t.Fatal("the caller is not served the refreshed partner roots")
	}
	// No JWT keys in the new bundle: the partner drops out of the JWT set.
	if federating.JWTBundles().Has(partner) {
		t.Error("the partner's old JWT keys are still served")
	}
}

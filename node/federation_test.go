package node

import (
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
	"github.com/meshid/meshid/internal/config"
)

// openCA is a trust domain's real CA, for its roots, JWT keys and tokens.
func openCA(t *testing.T, td string) *ca.Authority {
	t.Helper()
	a, err := ca.Open(ca.Options{TrustDomain: spiffeid.RequireTrustDomainFromString(td), Dir: t.TempDir(), TTL: 24 * time.Hour})
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

func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadFederationReadsBothFormats(t *testing.T) {
	pemCA, fullCA, jwtCA := openCA(t, "pem.example"), openCA(t, "full.example"), openCA(t, "jwt.example")
	roots, err := pemCA.X509Bundle().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Federation{Bundles: []config.FederatedBundle{
		{TrustDomain: "pem.example", BundleFile: writeTemp(t, "pem.pem", roots)},
		// Leading whitespace and a trailing newline, as editors leave them.
		{TrustDomain: "full.example", BundleFile: writeTemp(t, "full.json", append(append([]byte("\n  "), spiffeBundleDoc(t, fullCA, true, true)...), '\n'))},
		{TrustDomain: "jwt.example", BundleFile: writeTemp(t, "jwt.json", spiffeBundleDoc(t, jwtCA, false, true))},
	}}
	set, err := loadFederation(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		td        string
		a         *ca.Authority
		roots     int
		jwtKeys   int
		jwtBundle bool
	}{
		{"pem.example", pemCA, 1, 0, false},
		{"full.example", fullCA, 1, 1, true},
		{"jwt.example", jwtCA, 0, 1, true},
	} {
		b, ok := set.set.Get(spiffeid.RequireTrustDomainFromString(tc.td))
		if !ok {
			t.Errorf("%s: no bundle loaded", tc.td)
			continue
		}
		if len(b.X509Authorities()) != tc.roots || len(b.JWTAuthorities()) != tc.jwtKeys {
			t.Errorf("%s: %d roots and %d JWT keys, want %d and %d", tc.td, len(b.X509Authorities()), len(b.JWTAuthorities()), tc.roots, tc.jwtKeys)
		}
		if tc.roots > 0 && !b.X509Authorities()[0].Equal(tc.a.X509Bundle().X509Authorities()[0]) {
			t.Errorf("%s: the root loaded is not the CA's", tc.td)
		}
		for kid := range tc.a.JWTBundle().JWTAuthorities() {
			if tc.jwtKeys > 0 && !b.HasJWTAuthority(kid) {
				t.Errorf("%s: JWT key %s of the CA not loaded", tc.td, kid)
			}
		}
		if got := set.jwt.Has(b.TrustDomain()); got != tc.jwtBundle {
			t.Errorf("%s: in the federated JWT bundles: %v, want %v", tc.td, got, tc.jwtBundle)
		}
	}
}

func TestLoadFederationRefusesBadFiles(t *testing.T) {
	partnerCA := openCA(t, "partner.example")
	roots, _ := partnerCA.X509Bundle().Marshal()
	good := writeTemp(t, "good.pem", roots)
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
		{"JWT key without kid", string(spiffeBundleDocWithoutKid(t, partnerCA)), "not a valid SPIFFE bundle: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeTemp(t, "partner.json", []byte(tc.content))
			_, err := loadFederation(config.Federation{Bundles: []config.FederatedBundle{
				{TrustDomain: "other.example", BundleFile: good},
				{TrustDomain: "partner.example", BundleFile: path},
			}})
			want := "federation.bundles[1] (partner.example): " + path + ": " + tc.want
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("err = %v\nwant it to start with %q", err, want)
			}
		})
	}
	t.Run("missing", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "nope.json")
		_, err := loadFederation(config.Federation{Bundles: []config.FederatedBundle{{TrustDomain: "partner.example", BundleFile: path}}})
		if err == nil || !strings.HasPrefix(err.Error(), "federation.bundles[0] (partner.example): "+path+": ") || !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("err = %v", err)
		}
	})
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

// authz validates JWT-SVIDs of its own trust domain and of every federated
// trust domain that has JWT keys, whatever the entries say.
func TestAuthorityJWTBundles(t *testing.T) {
	own, partner, pemOnly, stranger := openCA(t, "example.org"), openCA(t, "partner.example"), openCA(t, "pem.example"), openCA(t, "stranger.example")
	impostor := openCA(t, "partner.example") // the partner's name, not its keys
	roots, _ := pemOnly.X509Bundle().Marshal()
	federated, err := loadFederation(config.Federation{Bundles: []config.FederatedBundle{
		{TrustDomain: "partner.example", BundleFile: writeTemp(t, "partner.json", spiffeBundleDoc(t, partner, false, true))},
		{TrustDomain: "pem.example", BundleFile: writeTemp(t, "pem.pem", roots)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	token := func(a *ca.Authority, id string) string {
		t.Helper()
		svid, err := a.MintJWTSVID(ca.JWTRequest{ID: spiffeid.RequireFromString(id), Audience: []string{"backend"}, TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return svid.Token
	}
	src := &nodeJWTBundles{ca: own, federated: federated.jwt}
	for td, want := range map[string]string{
		"example.org":      "",
		"partner.example":  "",
		"pem.example":      `no JWT bundle for trust domain "pem.example": neither meshid's own ("example.org") nor federated with JWT keys`,
		"stranger.example": `no JWT bundle for trust domain "stranger.example"`,
	} {
		b, err := src.GetJWTBundleForTrustDomain(spiffeid.RequireTrustDomainFromString(td))
		switch {
		case want == "" && (err != nil || b.TrustDomain().Name() != td):
			t.Errorf("JWT bundle for %s: %v, %v", td, b, err)
		case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("JWT bundle for %s: err = %v, want %q", td, err, want)
		}
	}
	for _, tc := range []struct {
		token, want string // want: the subject, or part of the error
		valid       bool
	}{
		{token(own, "spiffe://example.org/frontend"), "spiffe://example.org/frontend", true},
		{token(partner, "spiffe://partner.example/client"), "spiffe://partner.example/client", true},
		// Signed by pem.example's CA: its roots are known, its JWT keys not.
		{token(pemOnly, "spiffe://pem.example/client"), `no bundle found for trust domain "pem.example"`, false},
		{token(stranger, "spiffe://stranger.example/client"), `no bundle found for trust domain "stranger.example"`, false},
		{token(impostor, "spiffe://partner.example/client"), `jwtsvid: no JWT authority`, false},
	} {
		svid, err := jwtsvid.ParseAndValidate(tc.token, src, []string{"backend"})
		switch {
		case tc.valid && (err != nil || svid.ID.String() != tc.want):
			t.Errorf("%s: %v, %v; want valid", tc.want, svid, err)
		case !tc.valid && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("err = %v, want it to say %q", err, tc.want)
		}
	}
}

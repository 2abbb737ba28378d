package workloadcli

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/test/svidtest"
)

func TestSPIFFEBundle(t *testing.T) {
	ca := svidtest.NewCA(t, "example.org")
	other := svidtest.NewCA(t, "other.org")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x509Set := x509bundle.NewSet(
		x509bundle.FromX509Authorities(ca.TD, []*x509.Certificate{ca.Root}),
		x509bundle.FromX509Authorities(other.TD, []*x509.Certificate{other.Root}),
	)
	jwtSet := jwtbundle.NewSet(jwtbundle.FromJWTAuthorities(ca.TD, map[string]crypto.PublicKey{"k1": key.Public()}))

	doc, err := spiffeBundle(ca.TD, x509Set, jwtSet)
	if err != nil {
		t.Fatal(err)
	}
	b, err := spiffebundle.Parse(ca.TD, doc)
	if err != nil {
		t.Fatalf("%v:\n%s", err, doc)
	}
	if len(b.X509Authorities()) != 1 || !b.X509Authorities()[0].Equal(ca.Root) || !b.HasJWTAuthority("k1") {
		t.Fatalf("bundle document:\n%s", doc)
	}
	if !strings.Contains(string(doc), `"use": "x509-svid"`) && !strings.Contains(string(doc), `"use":"x509-svid"`) {
		t.Fatalf("no x509-svid key:\n%s", doc)
	}

	_, err = spiffeBundle(spiffeid.RequireTrustDomainFromString("nowhere.org"), x509Set, jwtSet)
	if err == nil || !strings.Contains(err.Error(), "no bundle for nowhere.org (it has: example.org, other.org)") {
		t.Fatalf("unknown trust domain: %v", err)
	}
}

func TestPrintPEMBundles(t *testing.T) {
	ca := svidtest.NewCA(t, "example.org")
	other := svidtest.NewCA(t, "other.org")
	set := x509bundle.NewSet(
		x509bundle.FromX509Authorities(ca.TD, []*x509.Certificate{ca.Root}),
		x509bundle.FromX509Authorities(other.TD, []*x509.Certificate{other.Root}),
	)
	var all bytes.Buffer
	if err := printPEMBundles(&all, set, spiffeid.TrustDomain{}); err != nil {
		t.Fatal(err)
	}
	if strings.Count(all.String(), "BEGIN CERTIFICATE") != 2 || !strings.HasPrefix(all.String(), "# spiffe://example.org\n-----BEGIN") || !strings.Contains(all.String(), "# spiffe://other.org\n") {
		t.Fatalf("all bundles:\n%s", all.String())
	}
	var one bytes.Buffer
	if err := printPEMBundles(&one, set, other.TD); err != nil {
		t.Fatal(err)
	}
	if got, err := x509bundle.Parse(other.TD, one.Bytes()); err != nil || !got.X509Authorities()[0].Equal(other.Root) || len(got.X509Authorities()) != 1 {
		t.Fatalf("-trust-domain other.org: %v\n%s", err, one.String())
	}
}

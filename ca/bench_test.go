package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Issuance is measured against a floor taken in the same run:
// bench/issuance.sh prints BenchmarkRawECDSAKeygenSign's ns/op divided by
// BenchmarkIssueX509SVID's, the fraction of the raw crypto rate that
// issuance keeps (goal: at least 0.8).

var benchID = spiffeid.RequireFromString("spiffe://example.org/ns/bench/sa/workload")

// BenchmarkIssueX509SVID mints one X509-SVID per op through the CA, as
// meshid does on every renewal: P-256 key generation, signing, parsing the
// result.
func BenchmarkIssueX509SVID(b *testing.B) {
	a, err := Open(Options{TrustDomain: benchID.TrustDomain(), Dir: b.TempDir(), TTL: 24 * time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	req := SVIDRequest{ID: benchID, TTL: time.Hour}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.MintX509SVID(req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawECDSAKeygenSign is the floor any issuer pays per certificate:
// a P-256 key, a fresh random serial, and x509.CreateCertificate of a
// template shaped like an X509-SVID (one URI SAN, the same key usages and
// EKUs) signed by a P-256 CA key. Nothing else: no parsing, no locking, no
// lifetime policy.
func BenchmarkRawECDSAKeygenSign(b *testing.B) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"meshid"}, CommonName: "example.org CA"},
		URIs:                  []*url.URL{benchID.TrustDomain().ID().URL()},
		NotBefore:             now,
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		b.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(der)
	if err != nil {
		b.Fatal(err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{Organization: []string{"meshid"}},
		URIs:                  []*url.URL{benchID.URL()},
		NotBefore:             now,
		NotAfter:              now.Add(time.Hour),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageKeyAgreement,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	b.ReportAllocs()
	for b.Loop() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		if tmpl.SerialNumber, err = rand.Int(rand.Reader, limit); err != nil {
			b.Fatal(err)
		}
		if _, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey); err != nil {
			b.Fatal(err)
		}
	}
}

// Package svidtest mints X509-SVIDs from a throwaway root and serves them
// on a fake SPIFFE Workload API, for the tests of meshid's Workload API
// clients (helper mode and the command line). It is test support that
// never ships: nothing outside tests imports it.
package svidtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// CA is a self-signed root of one trust domain that signs leaves with a
// chosen validity, as a test needs them: fresh, past renewal, expired.
type CA struct {
	TD     spiffeid.TrustDomain
	Root   *x509.Certificate
	key    *ecdsa.PrivateKey
	serial atomic.Int64
}

// NewCA is a root for td, valid from an hour ago for a day.
func NewCA(t testing.TB, td string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"meshid test"}, CommonName: "root"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{TD: spiffeid.RequireTrustDomainFromString(td), Root: root, key: key}
	ca.serial.Store(100)
	return ca
}

// SVID is a leaf for the SPIFFE ID of path in the CA's trust domain.
func (ca *CA) SVID(t testing.TB, path string, notBefore, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	key := newKey(t)
	id := spiffeid.RequireFromPath(ca.TD, path)
	u, err := url.Parse(id.String())
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial.Add(1)),
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		URIs:         []*url.URL{u},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Root, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}
}

// Fresh is an SVID for /app, issued 10s ago and valid for an hour.
func (ca *CA) Fresh(t testing.TB) *x509svid.SVID {
	return ca.SVID(t, "/app", time.Now().Add(-10*time.Second), time.Now().Add(time.Hour))
}

// Bundles is the CA's trust domain with its root.
func (ca *CA) Bundles() *x509bundle.Set {
	return x509bundle.NewSet(x509bundle.FromX509Authorities(ca.TD, []*x509.Certificate{ca.Root}))
}

// X509Context is what go-spiffe's client delivers for svids: them and
// the CA's bundle.
func (ca *CA) X509Context(svids ...*x509svid.SVID) *workloadapi.X509Context {
	return &workloadapi.X509Context{SVIDs: svids, Bundles: ca.Bundles()}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// WebCert writes a web PKI server certificate for hosts (DNS names or IP
// addresses), signed by the CA's root, and its key (0600) into dir, and
// returns their paths: for https servers that are not SPIFFE-authenticated,
// such as a bundle endpoint with the https_web profile. The root is then
// the client's web root (RootPEM).
func (ca *CA) WebCert(t testing.TB, dir string, hosts ...string) (certFile, keyFile string) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial.Add(1)),
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Root, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "web.crt"), filepath.Join(dir, "web.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// RootPEM is the CA's root certificate, PEM-encoded.
func (ca *CA) RootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Root.Raw})
}

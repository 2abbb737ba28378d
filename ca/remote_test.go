package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"
)

// testRoot is a root of a fake upstream: its certificate and key.
type testRoot struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestRoot(t *testing.T, name string, now time.Time) testRoot {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testRoot{cert: cert, key: key}
}

// fakeUpstream signs with signer and lists, at each Roots call, the next
// of listed (the last one from then on): an engine whose list of issuers
// lags behind the one it signs with.
type fakeUpstream struct {
	now    time.Time
	signer testRoot

	mu     sync.Mutex
	listed [][]*x509.Certificate
	calls  int
}

func (f *fakeUpstream) SignIntermediate(_ context.Context, csrDER []byte, ttl time.Duration) ([]*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(f.now.UnixNano()), Subject: csr.Subject, URIs: csr.URIs,
		NotBefore: f.now.Add(-time.Minute), NotAfter: f.now.Add(ttl),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.signer.cert, csr.PublicKey, f.signer.key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return []*x509.Certificate{cert}, nil
}

func (f *fakeUpstream) Roots(context.Context) ([]*x509.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := min(f.calls, len(f.listed)-1)
	f.calls++
	return f.listed[i], nil
}

func (f *fakeUpstream) String() string { return "fake upstream" }

// A root rotated between meshid's read of the roots and the signing (or
// an engine that lists its issuers a moment behind the one it signs with)
// is read again before the intermediate is refused; one that chains to no
// root the upstream lists even then is still refused.
func TestUpstreamRootsReadAgainBeforeRefusing(t *testing.T) {
	clk := newClock()
	old, rotated := newTestRoot(t, "old root", clk.Now()), newTestRoot(t, "new root", clk.Now())

	t.Run("lagging list", func(t *testing.T) {
		up := &fakeUpstream{now: clk.Now(), signer: rotated,
			listed: [][]*x509.Certificate{{old.cert}, {old.cert, rotated.cert}}}
		a, err := Open(Options{TrustDomain: td, Dir: t.TempDir(), TTL: 24 * time.Hour, Clock: clk.Now, UpstreamAuthority: up})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if err := a.Health(); err != nil {
			t.Fatalf("Health: %v", err)
		}
		roots := a.X509Bundle().X509Authorities()
		if len(roots) != 2 || !roots[1].Equal(rotated.cert) && !roots[0].Equal(rotated.cert) {
			t.Errorf("bundle holds %d roots, want the old and the rotated one", len(roots))
		}
		if up.calls != 2 {
			t.Errorf("roots read %d times, want 2 (before signing, and again for the answer)", up.calls)
		}
	})

	t.Run("no root of the upstream's", func(t *testing.T) {
		up := &fakeUpstream{now: clk.Now(), signer: rotated, listed: [][]*x509.Certificate{{old.cert}}}
		a, err := Open(Options{TrustDomain: td, Dir: t.TempDir(), TTL: 24 * time.Hour, Clock: clk.Now, UpstreamAuthority: up})
		if err == nil {
			err = a.Health()
		}
		if err == nil || !strings.Contains(err.Error(), "does not chain to the upstream's roots") {
			t.Fatalf("err = %v, want the intermediate refused as chaining to no root of the upstream's", err)
		}
	})
}

package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
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
	clock  func() time.Time // when set, the signing time instead of now
	maxTTL time.Duration    // when set, what the upstream signs for at most
	down   bool             // every call fails
}

func (f *fakeUpstream) SignIntermediate(_ context.Context, csrDER []byte, ttl time.Duration) ([]*x509.Certificate, error) {
	f.mu.Lock()
	now, down := f.now, f.down
	if f.clock != nil {
		now = f.clock()
	}
	if f.maxTTL > 0 {
		ttl = min(ttl, f.maxTTL)
	}
	f.mu.Unlock()
	if down {
		return nil, errors.New("fake upstream is down")
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: csr.Subject, URIs: csr.URIs,
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(ttl),
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
	if f.down {
		return nil, errors.New("fake upstream is down")
	}
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

// An upstream that signs for less than was asked (a role's max_ttl) and
// is down when the renewal comes: the retries grow no further apart than
// a tenth of the intermediate's remaining life, so an upstream back a
// minute before the intermediate expires still renews it in time.
func TestUpstreamRetriesBeforeTheIntermediateExpires(t *testing.T) {
	clk := newClock()
	root := newTestRoot(t, "root", clk.Now())
	up := &fakeUpstream{signer: root, listed: [][]*x509.Certificate{{root.cert}}, clock: clk.Now, maxTTL: 20 * time.Minute}
	a, err := Open(Options{TrustDomain: td, Dir: t.TempDir(), TTL: 24 * time.Hour, Clock: clk.Now, UpstreamAuthority: up})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	r := a.up.(*remoteCA)
	first := a.gens[len(a.gens)-1].cert()
	expires := first.NotAfter

	up.mu.Lock()
	up.down = true
	up.mu.Unlock()
	ctx := context.Background()
	clk.Set(renewAt(a.gens[0]))
	back := expires.Add(-time.Minute)
	tries := 0
	for {
		now := clk.Now()
		if !now.Before(expires) {
			t.Fatalf("the intermediate expired at %s, %d tries after its renewal point, still not renewed", expires.Format(time.TimeOnly), tries)
		}
		if !now.Before(back) {
			up.mu.Lock()
			up.down = false
			up.mu.Unlock()
		}
		err := a.rotate(ctx)
		tries++
		if err == nil && a.gens[len(a.gens)-1].cert() != first {
			t.Logf("renewed at %s after %d tries, %s before the first intermediate expired", now.Format(time.TimeOnly), tries, expires.Sub(now))
			return
		}
		if wait, most := r.nextTry.Sub(now), max(expires.Sub(now)/10, retryMin); wait <= 0 || wait > most {
			t.Fatalf("try %d at %s: next in %s, want at most %s (%s left)", tries, now.Format(time.TimeOnly), wait, most, expires.Sub(now))
		}
		clk.Set(r.nextTry)
	}
}

package ca

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var td = spiffeid.RequireTrustDomainFromString("example.org")

type fakeClock struct{ now time.Time }

func (f *fakeClock) Now() time.Time { return f.now }

func newCA(t *testing.T, dir string, clk *fakeClock) *CA {
	t.Helper()
	c, err := LoadOrCreate(Options{TrustDomain: td, Dir: dir, TTL: 24 * time.Hour, Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCreatePersistsWithTightPermissionsAndReloads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	first := newCA(t, dir, clk)

	for path, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, keyFile): 0o600} {
		info, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode().Perm(); got != want {
			t.Errorf("%s has mode %04o, want %04o", path, got, want)
		}
	}
	cert := first.Certificate()
	if !cert.IsCA || cert.URIs[0].String() != "spiffe://example.org" || !cert.NotAfter.Equal(clk.now.Add(24*time.Hour)) {
		t.Errorf("unexpected CA certificate: isCA=%v uris=%v notAfter=%v", cert.IsCA, cert.URIs, cert.NotAfter)
	}

	clk.now = clk.now.Add(time.Hour)
	second := newCA(t, dir, clk)
	if !second.Certificate().Equal(cert) {
		t.Fatal("restart created a new trust root instead of reusing the persisted CA")
	}
}

func TestLoadRefusesUnsafeOrForeignCA(t *testing.T) {
	clk := &fakeClock{now: time.Now()}
	t.Run("group-readable key", func(t *testing.T) {
		dir := t.TempDir()
		newCA(t, dir, clk)
		if err := os.Chmod(filepath.Join(dir, keyFile), 0o640); err != nil {
			t.Fatal(err)
		}
		_, err := LoadOrCreate(Options{TrustDomain: td, Dir: dir, TTL: time.Hour, Clock: clk.Now})
		if err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("err = %v, want a refusal that says how to fix it", err)
		}
	})
	t.Run("other trust domain", func(t *testing.T) {
		dir := t.TempDir()
		newCA(t, dir, clk)
		_, err := LoadOrCreate(Options{TrustDomain: spiffeid.RequireTrustDomainFromString("other.org"), Dir: dir, TTL: time.Hour, Clock: clk.Now})
		if err == nil || !strings.Contains(err.Error(), "another trust domain") {
			t.Fatalf("err = %v, want a trust domain mismatch", err)
		}
	})
	t.Run("certificate without key", func(t *testing.T) {
		dir := t.TempDir()
		newCA(t, dir, clk)
		os.Remove(filepath.Join(dir, keyFile))
		_, err := LoadOrCreate(Options{TrustDomain: td, Dir: dir, TTL: time.Hour, Clock: clk.Now})
		if err == nil || !strings.Contains(err.Error(), "CA key") {
			t.Fatalf("err = %v, want a missing-key error", err)
		}
	})
	t.Run("garbage certificate", func(t *testing.T) {
		dir := t.TempDir()
		newCA(t, dir, clk)
		os.WriteFile(filepath.Join(dir, certFile), []byte("not pem"), 0o644)
		_, err := LoadOrCreate(Options{TrustDomain: td, Dir: dir, TTL: time.Hour, Clock: clk.Now})
		if err == nil || !strings.Contains(err.Error(), "ca.crt: no PEM CERTIFICATE block") {
			t.Fatalf("err = %v, want a parse error naming the file", err)
		}
	})
}

func TestExpiredCAIsReplaced(t *testing.T) {
	dir := t.TempDir()
	clk := &fakeClock{now: time.Now()}
	old := newCA(t, dir, clk)
	clk.now = clk.now.Add(25 * time.Hour)
	fresh := newCA(t, dir, clk)
	if fresh.Certificate().Equal(old.Certificate()) {
		t.Fatal("an expired CA was reused")
	}
}

func TestMintX509SVID(t *testing.T) {
	clk := &fakeClock{now: time.Now().Truncate(time.Second)}
	c := newCA(t, t.TempDir(), clk)
	id := spiffeid.RequireFromString("spiffe://example.org/ns/demo/sa/frontend")

	svid, err := c.MintX509SVID(SVIDRequest{ID: id, TTL: time.Hour, DNSNames: []string{"frontend.demo"}})
	if err != nil {
		t.Fatal(err)
	}
	leaf := svid.Certificates[0]
	if !leaf.NotAfter.Equal(clk.now.Add(time.Hour)) || !leaf.NotBefore.Equal(clk.now.Add(-backdate)) {
		t.Errorf("validity %v..%v, want %v..%v", leaf.NotBefore, leaf.NotAfter, clk.now.Add(-backdate), clk.now.Add(time.Hour))
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Errorf("EKU = %v, want serverAuth+clientAuth", leaf.ExtKeyUsage)
	}
	if leaf.IsCA || leaf.DNSNames[0] != "frontend.demo" {
		t.Errorf("leaf isCA=%v dns=%v", leaf.IsCA, leaf.DNSNames)
	}
	// The SVID must verify as SPIFFE says, against the bundle we publish.
	gotID, _, err := x509svid.Verify(svid.Certificates, c.X509Bundle(), x509svid.WithTime(clk.now))
	if err != nil || gotID != id {
		t.Fatalf("Verify = %v, %v; want %v", gotID, err, id)
	}
	// And round-trip through go-spiffe's parser, which enforces the X509-SVID rules.
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509svid.Parse(certPEM, keyPEM); err != nil {
		t.Fatalf("go-spiffe rejects our SVID: %v", err)
	}
}

func TestMintCapsTTLAtCAExpiry(t *testing.T) {
	clk := &fakeClock{now: time.Now().Truncate(time.Second)}
	c := newCA(t, t.TempDir(), clk)
	clk.now = clk.now.Add(23*time.Hour + 30*time.Minute)
	svid, err := c.MintX509SVID(SVIDRequest{ID: spiffeid.RequireFromString("spiffe://example.org/a"), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := svid.Certificates[0].NotAfter, c.Certificate().NotAfter; !got.Equal(want) {
		t.Errorf("NotAfter = %v, want capped at the CA's %v", got, want)
	}
	clk.now = c.Certificate().NotAfter
	if _, err := c.MintX509SVID(SVIDRequest{ID: spiffeid.RequireFromString("spiffe://example.org/a"), TTL: time.Hour}); err == nil {
		t.Error("minted with an expired CA")
	}
}

func TestMintRejectsForeignID(t *testing.T) {
	c := newCA(t, t.TempDir(), &fakeClock{now: time.Now()})
	_, err := c.MintX509SVID(SVIDRequest{ID: spiffeid.RequireFromString("spiffe://other.org/a"), TTL: time.Hour})
	if err == nil || !strings.Contains(err.Error(), "not in trust domain") {
		t.Fatalf("err = %v", err)
	}
}

package ca

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// rootFiles makes a self-signed meshid root to act as the upstream, and
// returns its certificate and key files.
func rootFiles(t *testing.T, clk *fakeClock) (certPath, keyPath string) {
	t.Helper()
	dir := t.TempDir()
	open(t, dir, clk)
	gen := filepath.Join(dir, "ca", "000001")
	return filepath.Join(gen, certFile), filepath.Join(gen, keyFile)
}

func intermediate(t *testing.T, clk *fakeClock, rootCert, rootKey string) Upstream {
	t.Helper()
	out := filepath.Join(t.TempDir(), "node")
	if err := MintIntermediate(IntermediateOptions{
		RootCertFile: rootCert, RootKeyFile: rootKey, TrustDomain: td,
		TTL: 30 * 24 * time.Hour, OutDir: out, Clock: clk.Now,
	}); err != nil {
		t.Fatal(err)
	}
	return Upstream{
		CertFile:   filepath.Join(out, IntermediateCertFile),
		KeyFile:    filepath.Join(out, IntermediateKeyFile),
		BundleFile: filepath.Join(out, UpstreamBundleFile),
	}
}

func openUpstream(t *testing.T, up Upstream, clk *fakeClock) (*Authority, error) {
	t.Helper()
	return Open(Options{TrustDomain: td, Dir: t.TempDir(), TTL: 24 * time.Hour, Upstream: &up, Clock: clk.Now})
}

// TestTwoNodesUnderOneRoot is the point of upstream mode: SVIDs of two
// meshid nodes with intermediates from the same root verify against each
// other's bundles.
func TestTwoNodesUnderOneRoot(t *testing.T) {
	clk := newClock()
	rootCert, rootKey := rootFiles(t, clk)
	nodeA, err := openUpstream(t, intermediate(t, clk, rootCert, rootKey), clk)
	if err != nil {
		t.Fatal(err)
	}
	nodeB, err := openUpstream(t, intermediate(t, clk, rootCert, rootKey), clk)
	if err != nil {
		t.Fatal(err)
	}

	svidA := mint(t, nodeA, "spiffe://example.org/a")
	svidB := mint(t, nodeB, "spiffe://example.org/b")
	if len(svidA.Certificates) != 2 || !svidA.Certificates[1].IsCA {
		t.Fatalf("an upstream SVID chain must carry the intermediate: %d certificates", len(svidA.Certificates))
	}
	for _, c := range []struct {
		svid   *x509svid.SVID
		verify *Authority
	}{{svidA, nodeB}, {svidB, nodeA}} {
		if _, _, err := x509svid.Verify(c.svid.Certificates, c.verify.X509Bundle(), x509svid.WithTime(clk.Now())); err != nil {
			t.Fatalf("%s does not verify against the other node's bundle: %v", c.svid.ID, err)
		}
	}
	roots := nodeA.X509Bundle().X509Authorities()
	if len(roots) != 1 || roots[0].Equal(svidA.Certificates[1]) {
		t.Fatal("the bundle must hold the upstream root, not the node's intermediate")
	}

	// Restart: the same JWT key and intermediate, no new material.
	changed, err := nodeA.Rotate()
	if err != nil || changed {
		t.Fatalf("Rotate in upstream mode = %v, %v; want nothing to do", changed, err)
	}
}

func TestUpstreamBadInput(t *testing.T) {
	clk := newClock()
	rootCert, rootKey := rootFiles(t, clk)
	otherCert, otherKey := rootFiles(t, clk)
	good := intermediate(t, clk, rootCert, rootKey)
	other := intermediate(t, clk, otherCert, otherKey)
	leafDir := t.TempDir()
	leaf := mint(t, open(t, t.TempDir(), clk), "spiffe://example.org/leaf")
	leafCert, leafKey, _ := leaf.Marshal()
	os.WriteFile(filepath.Join(leafDir, "leaf.crt"), leafCert, 0o644)
	os.WriteFile(filepath.Join(leafDir, "leaf.key"), leafKey, 0o600)

	tests := []struct {
		name string
		up   Upstream
		now  time.Time
		want string
	}{
		{"not a CA", Upstream{filepath.Join(leafDir, "leaf.crt"), filepath.Join(leafDir, "leaf.key"), good.BundleFile}, clk.Now(), "cert_file " + filepath.Join(leafDir, "leaf.crt") + ": certificate is not a CA"},
		{"key of another intermediate", Upstream{good.CertFile, other.KeyFile, good.BundleFile}, clk.Now(), "private key does not match"},
		{"other root", Upstream{good.CertFile, good.KeyFile, other.BundleFile}, clk.Now(), "does not chain to a root in bundle_file"},
		{"expired", good, clk.Now().Add(31 * 24 * time.Hour), "expired at"},
		{"missing bundle", Upstream{good.CertFile, good.KeyFile, "/nonexistent/bundle.crt"}, clk.Now(), "ca.upstream.bundle_file /nonexistent/bundle.crt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := openUpstream(t, tt.up, &fakeClock{now: tt.now})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}

	t.Run("other trust domain", func(t *testing.T) {
		_, err := Open(Options{TrustDomain: spiffeid.RequireTrustDomainFromString("other.org"), Dir: t.TempDir(), TTL: time.Hour, Upstream: &good, Clock: clk.Now})
		if err == nil || !strings.Contains(err.Error(), `not "other.org"`) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestMintIntermediateNeverOverwrites(t *testing.T) {
	clk := newClock()
	rootCert, rootKey := rootFiles(t, clk)
	up := intermediate(t, clk, rootCert, rootKey)
	before, _ := os.ReadFile(up.KeyFile)
	err := MintIntermediate(IntermediateOptions{RootCertFile: rootCert, RootKeyFile: rootKey, TrustDomain: td, TTL: time.Hour, OutDir: filepath.Dir(up.KeyFile), Clock: clk.Now})
	if err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("err = %v, want a refusal to overwrite", err)
	}
	if after, _ := os.ReadFile(up.KeyFile); string(after) != string(before) {
		t.Fatal("an existing intermediate key was overwritten")
	}
}

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshid/meshid/test/harness"
)

// TestTwoNodesUnderOneRoot runs the demo mesh across two meshid daemons,
// each an intermediate of one organisation root minted with `meshid ca
// mint-intermediate`: the frontend's Envoy gets its SVID from node A, the
// backend's from node B, and they still complete mTLS because both chains
// lead to the same root. A restart of node B changes no trust root.
func TestTwoNodesUnderOneRoot(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	bin, err := env.Binary("meshid")
	if err != nil {
		t.Fatal(err)
	}

	rootDir, err := env.MkdirAll("org-root")
	if err != nil {
		t.Fatal(err)
	}
	root := writeOrgRoot(t, rootDir)
	nodeConfig := func(name string) string {
		out := filepath.Join(rootDir, name)
		cmd := exec.CommandContext(ctx, bin, "ca", "mint-intermediate",
			"-root-cert", filepath.Join(rootDir, "root.crt"), "-root-key", filepath.Join(rootDir, "root.key"),
			"-trust-domain", harness.DemoTrustDomain, "-out", out, "-ttl", "48h")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("meshid ca mint-intermediate: %v\n%s", err, b)
		}
		return fmt.Sprintf("ca:\n  upstream:\n    cert_file: %s\n    key_file: %s\n    bundle_file: %s\n",
			filepath.Join(out, "intermediate.crt"), filepath.Join(out, "intermediate.key"), filepath.Join(out, "bundle.crt"))
	}
	entries := harness.DemoEntries() // [backend, frontend]
	nodeA, err := env.StartMeshid(ctx, harness.MeshidOptions{Name: "meshid-a", Entries: entries[1:], ExtraConfig: nodeConfig("node-a")})
	if err != nil {
		t.Fatal(err)
	}
	nodeB, err := env.StartMeshid(ctx, harness.MeshidOptions{Name: "meshid-b", Entries: entries[:1], ExtraConfig: nodeConfig("node-b")})
	if err != nil {
		t.Fatal(err)
	}
	mesh, err := env.StartDemoWorkloads(ctx, nodeA, nodeB, harness.DemoOptions{})
	if err != nil {
		t.Fatal(err)
	}

	hello := func(when string) {
		t.Helper()
		status, body, err := harness.Get(ctx, mesh.FrontendURL+"hello")
		if err != nil || status != http.StatusOK {
			t.Fatalf("%s: GET /hello across the two nodes: %d %s %v", when, status, body, err)
		}
		var seen struct{ Peer string }
		if err := json.Unmarshal(body, &seen); err != nil || seen.Peer != harness.FrontendID {
			t.Fatalf("%s: backend saw peer %q (%v), want %s", when, seen.Peer, err, harness.FrontendID)
		}
	}
	hello("first request")

	chain := presentedChain(t, mesh.Backend.Sidecar.Inbound.ListenAddr)
	if len(chain) != 2 || !chain[1].IsCA {
		t.Fatalf("node B's SVID chain has %d certificates, want the leaf and node B's intermediate", len(chain))
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	inter.AddCert(chain[1])
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("backend SVID does not chain to the organisation root: %v", err)
	}
	bundleSerials := func(v *harness.Envoy) []string {
		certs, err := v.Certs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var serials []string
		for _, c := range certs {
			if c.CA {
				serials = append(serials, c.SerialNumber)
			}
		}
		return serials
	}
	want := fmt.Sprintf("%x", root.SerialNumber)
	for _, v := range []*harness.Envoy{mesh.Frontend, mesh.Backend} {
		if s := bundleSerials(v); len(s) == 0 || s[0] != want {
			t.Fatalf("%s trusts %v, want only the organisation root %s", v.Name, s, want)
		}
	}

	if err := nodeB.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "the backend Envoy to fetch from the restarted node", func() bool {
		status, _, err := harness.Get(ctx, mesh.FrontendURL+"hello")
		return err == nil && status == http.StatusOK
	})
	hello("after node B restarted")
	if s := bundleSerials(mesh.Backend); len(s) == 0 || s[0] != want {
		t.Fatalf("after a restart the backend trusts %v, want the same root %s", s, want)
	}
	t.Logf("frontend (node A) -> backend (node B): 200 before and after restarting node B; both chains verify to root %s", want)
}

// writeOrgRoot creates a self-signed P-384 root with a SEC 1 key, as an
// organisation's offline CA from another tool might look, and returns it.
func writeOrgRoot(t *testing.T, dir string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{Organization: []string{"Example Org"}, CommonName: "Example Org Root CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "root.crt"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	if err := os.WriteFile(filepath.Join(dir, "root.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

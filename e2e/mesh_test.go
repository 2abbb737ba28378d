// Package e2e holds the end-to-end tests: the real meshid binary, real
// Envoy processes and demo apps, each workload under its own uid, with real
// HTTP through the mesh. They run as root (see harness.ForTest).
package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/test/harness"
)

// TestDemoMesh is the walking skeleton: an SVID from meshid reaches two real
// Envoys, they speak mTLS, and meshid's Rego policy allows one request and
// denies another. A third Envoy, under a uid no entry names, gets nothing.
func TestDemoMesh(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	mesh, err := env.StartDemoMesh(ctx, harness.DemoOptions{})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("allowed request carries the frontend's identity", func(t *testing.T) {
		status, body, err := harness.Get(ctx, mesh.FrontendURL+"hello")
		if err != nil {
			t.Fatal(err)
		}
		if status != http.StatusOK {
			t.Fatalf("GET /hello through the mesh: %d %s, want 200", status, body)
		}
		var seen struct{ Service, Path, Peer string }
		if err := json.Unmarshal(body, &seen); err != nil {
			t.Fatalf("backend reply %q: %v", body, err)
		}
		if seen.Service != "backend" || seen.Path != "/hello" || seen.Peer != harness.FrontendID {
			t.Fatalf("backend saw %+v, want service backend, path /hello, peer %s", seen, harness.FrontendID)
		}
		t.Logf("GET /hello -> %d; backend saw peer %s", status, seen.Peer)
	})

	t.Run("other path is denied by the authz decision", func(t *testing.T) {
		deniedBefore := envoyCounter(t, ctx, mesh.Backend, "http.inbound.ext_authz.denied")
		status, body, err := harness.Get(ctx, mesh.FrontendURL+"admin")
		if err != nil {
			t.Fatal(err)
		}
		if status != http.StatusForbidden {
			t.Fatalf("GET /admin through the mesh: %d %s, want 403", status, body)
		}
		// The 403 must be meshid's decision, not some other failure: the
		// backend Envoy counts an ext_authz denial and the app never hears
		// of the request.
		if after := envoyCounter(t, ctx, mesh.Backend, "http.inbound.ext_authz.denied"); after != deniedBefore+1 {
			t.Fatalf("backend Envoy ext_authz.denied went %d -> %d, want +1", deniedBefore, after)
		}
		if logs := mesh.BackendApp.Logs(); strings.Contains(logs, "/admin") {
			t.Fatalf("the backend app received the denied request:\n%s", logs)
		}
		t.Logf("GET /admin -> %d; backend Envoy ext_authz.denied +1; backend app never saw it", status)
	})

	t.Run("Envoy presents the SVID meshid minted", func(t *testing.T) {
		caCert := activeCA(t, mesh.Meshid)
		chain := presentedChain(t, mesh.Backend.Sidecar.Inbound.ListenAddr)
		if len(chain) == 0 {
			t.Fatal("backend Envoy presented no certificate")
		}
		leaf := chain[0]
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != harness.BackendID {
			t.Fatalf("presented certificate has URI SANs %v, want exactly %s", leaf.URIs, harness.BackendID)
		}
		if err := leaf.CheckSignatureFrom(caCert); err != nil {
			t.Fatalf("presented certificate is not signed by meshid's CA: %v", err)
		}
		certs, err := mesh.Backend.Certs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var own *harness.Cert
		for i, c := range certs {
			if !c.CA {
				own = &certs[i]
			}
		}
		if own == nil || own.SerialNumber != fmt.Sprintf("%x", leaf.SerialNumber) || len(own.URIs) != 1 || own.URIs[0] != harness.BackendID {
			t.Fatalf("Envoy /certs = %+v, want the presented SVID (serial %x, URI %s)", certs, leaf.SerialNumber, harness.BackendID)
		}
		t.Logf("backend Envoy presents serial %s, URI %s, issued by %s (meshid's CA)", own.SerialNumber, own.URIs[0], caCert.Subject)

		// The frontend has no listener to dial; its /certs must show its own
		// SVID and meshid's root as the bundle it verifies the backend with.
		frontCerts, err := mesh.Frontend.Certs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var ownIDs, caSerials []string
		for _, c := range frontCerts {
			if c.CA {
				caSerials = append(caSerials, c.SerialNumber)
			} else {
				ownIDs = append(ownIDs, c.URIs...)
			}
		}
		if len(ownIDs) == 0 || ownIDs[0] != harness.FrontendID || len(caSerials) == 0 || caSerials[0] != fmt.Sprintf("%x", caCert.SerialNumber) {
			t.Fatalf("frontend Envoy holds SVID URIs %v and CA serials %v, want %s and meshid's root %x", ownIDs, caSerials, harness.FrontendID, caCert.SerialNumber)
		}
	})

	t.Run("an Envoy under an unregistered uid gets no identity", func(t *testing.T) {
		const rogueUID = 1103
		// It even asks for the backend's identity: meshid goes by the
		// kernel's word on who is calling, not by what the Envoy asks for.
		rogue, err := env.StartEnvoy(ctx, "rogue-envoy", envoy.Sidecar{
			SDSSocket:   mesh.Meshid.SocketPath,
			SPIFFEID:    harness.BackendID,
			TrustDomain: harness.DemoTrustDomain,
			Inbound: &envoy.Inbound{
				ListenAddr: env.FreeAddr(),
				AppAddr:    mesh.BackendApp.Addr,
				AuthzAddr:  mesh.Meshid.AuthzAddr,
			},
		}, rogueUID)
		if err != nil {
			t.Fatal(err)
		}
		selectors := fmt.Sprintf("unix:uid:%d", rogueUID)
		waitFor(t, ctx, "meshid to log the unregistered caller's selectors", func() bool {
			logs := mesh.Meshid.Logs()
			return strings.Contains(logs, "no entry matches caller") && strings.Contains(logs, selectors)
		})
		// meshid's refusal reaches the Envoy, so its operator sees why too.
		waitFor(t, ctx, "the unregistered Envoy to log meshid's refusal", func() bool {
			return strings.Contains(rogue.Logs(), "no identity issued")
		})
		certs, err := rogue.Certs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(certs) != 0 {
			t.Fatalf("the unregistered Envoy holds certificates: %+v", certs)
		}
		if chain, err := handshake(rogue.Sidecar.Inbound.ListenAddr); err == nil || len(chain) != 0 {
			t.Fatalf("TLS to the unregistered Envoy: err=%v, %d certificates presented; want a failure and none", err, len(chain))
		}
		for _, line := range strings.Split(mesh.Meshid.Logs(), "\n") {
			if strings.Contains(line, "no entry matches caller") && strings.Contains(line, selectors) {
				t.Logf("meshid: %s", line)
				break
			}
		}
	})

	t.Run("a restarted meshid serves the same trust root", func(t *testing.T) {
		before := activeCA(t, mesh.Meshid)
		oldSVID, oldRoots := envoyCerts(t, ctx, mesh.Backend)
		if err := mesh.Meshid.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		newSVID, newRoots := awaitNewSVID(t, ctx, mesh.Backend, oldSVID)
		if !activeCA(t, mesh.Meshid).Equal(before) || !slices.Equal(newRoots, oldRoots) {
			t.Fatalf("restart changed the trust root: bundle %v -> %v", oldRoots, newRoots)
		}
		if status, _, err := harness.Get(ctx, mesh.FrontendURL+"hello"); err != nil || status != http.StatusOK {
			t.Fatalf("GET /hello after the restart: %d %v", status, err)
		}
		t.Logf("restart: backend SVID %s -> %s, bundle %v unchanged", oldSVID[0], newSVID[0], newRoots)
	})

	// Last, because it stops meshid: SDS streams never end by themselves,
	// so SIGTERM must end them and exit cleanly, not hang or crash, and not
	// wait out the 2s grace unary calls get.
	t.Run("SIGTERM stops meshid cleanly with Envoys connected", func(t *testing.T) {
		start := time.Now()
		if err := mesh.Meshid.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-mesh.Meshid.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("meshid still running 10s after SIGTERM")
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("meshid took %v to stop with only SDS streams open, want well under its 2s grace", took.Round(time.Millisecond))
		}
		if err := mesh.Meshid.Wait(); err != nil {
			t.Fatalf("meshid exited with %v after SIGTERM, want status 0", err)
		}
		if !strings.Contains(mesh.Meshid.Logs(), "meshid stopped") {
			t.Fatal("meshid did not log its stop")
		}
		if _, err := os.Stat(mesh.Meshid.SocketPath); err == nil {
			t.Error("meshid left its socket behind after a clean stop")
		}
	})
}

// envoyCerts returns the serials of an Envoy's own certificates and of the
// CA certificates it trusts, from /certs.
func envoyCerts(t *testing.T, ctx context.Context, v *harness.Envoy) (own, roots []string) {
	t.Helper()
	certs, err := v.Certs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range certs {
		if c.CA {
			roots = append(roots, c.SerialNumber)
		} else {
			own = append(own, c.SerialNumber)
		}
	}
	return own, roots
}

// awaitNewSVID waits until the Envoy holds an SVID other than old and
// returns its certificates as envoyCerts does. SVIDs live in meshid's
// memory, so after a restart a new one proves the Envoy fetched again from
// the new process.
func awaitNewSVID(t *testing.T, ctx context.Context, v *harness.Envoy, old []string) (own, roots []string) {
	t.Helper()
	waitFor(t, ctx, v.Name+" to receive an SVID from the new meshid", func() bool {
		own, roots = envoyCerts(t, ctx, v)
		return len(own) > 0 && own[0] != old[0]
	})
	return own, roots
}

// envoyCounter reads one counter from Envoy's admin /stats.
func envoyCounter(t *testing.T, ctx context.Context, v *harness.Envoy, name string) int {
	t.Helper()
	body, err := v.Admin(ctx, "/stats?filter=^"+name+"$")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if _, err := fmt.Sscanf(strings.TrimSpace(string(body)), name+": %d", &n); err != nil {
		t.Fatalf("counter %s in %q: %v", name, body, err)
	}
	return n
}

// presentedChain connects to an mTLS listener and returns the certificates
// the server presented, whatever becomes of the handshake afterwards (we
// hold no client certificate, so the server may well reject us).
func presentedChain(t *testing.T, addr string) []*x509.Certificate {
	t.Helper()
	chain, _ := handshake(addr)
	return chain
}

func handshake(addr string) ([]*x509.Certificate, error) {
	var chain []*x509.Certificate
	conf := &tls.Config{
		InsecureSkipVerify: true, // we verify by hand below, against meshid's CA
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			for _, der := range raw {
				c, err := x509.ParseCertificate(der)
				if err != nil {
					return err
				}
				chain = append(chain, c)
			}
			return nil
		},
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr, conf)
	if err == nil {
		conn.Close()
	}
	return chain, err
}

// activeCA reads meshid's CA certificate from its data_dir. A fresh meshid
// has exactly one CA generation.
func activeCA(t *testing.T, m *harness.Meshid) *x509.Certificate {
	t.Helper()
	return readCert(t, activeCAPath(t, m))
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	return readChain(t, path)[0]
}

// readChain reads every certificate of a PEM file, in order.
func readChain(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var chain []*x509.Certificate
	for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		t.Fatalf("%s: no PEM certificate", path)
	}
	return chain
}

func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

package e2e

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/test/harness"
)

// TestSPIREStyleNames runs the mesh with the SPIRE agent's aliases for the
// trust bundle: "ALL" (the SPIFFE certificate validator carrying every
// bundle) and "ROOTCA". An Envoy configured for SPIRE must work unchanged.
func TestSPIREStyleNames(t *testing.T) {
	for _, name := range []string{"ALL", "ROOTCA"} {
		t.Run(name, func(t *testing.T) {
			env := harness.ForTest(t)
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			mesh, err := env.StartDemoMesh(ctx, harness.DemoOptions{ValidationName: name})
			if err != nil {
				t.Fatal(err)
			}
			for path, want := range map[string]int{"hello": http.StatusOK, "admin": http.StatusForbidden} {
				if status, body, err := harness.Get(ctx, mesh.FrontendURL+path); err != nil || status != want {
					t.Fatalf("GET /%s with the bundle named %s: %d %s %v, want %d", path, name, status, body, err, want)
				}
			}
			t.Logf("validation context %q: /hello 200, /admin 403", name)
		})
	}
}

// TestNodeIdentityIsNotTrusted: an Envoy running as the frontend's uid but
// claiming to be the backend (node id and cluster) and asking for the
// backend's certificate gets nothing; the same uid asking honestly gets the
// frontend's. meshid goes by the kernel's word only.
func TestNodeIdentityIsNotTrusted(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	m, err := env.StartMeshid(ctx, harness.MeshidOptions{Entries: harness.DemoEntries()})
	if err != nil {
		t.Fatal(err)
	}
	sidecar := func(node, id string) envoy.Sidecar {
		return envoy.Sidecar{
			Node: node, SDSSocket: m.SocketPath, SPIFFEID: id, TrustDomain: harness.DemoTrustDomain,
			Inbound: &envoy.Inbound{ListenAddr: env.FreeAddr(), AppAddr: env.FreeAddr(), AuthzAddr: m.AuthzAddr},
		}
	}
	liar, err := env.StartEnvoy(ctx, "liar-envoy", sidecar("backend-envoy", harness.BackendID), harness.FrontendEnvoyUID)
	if err != nil {
		t.Fatal(err)
	}
	honest, err := env.StartEnvoy(ctx, "honest-envoy", sidecar("frontend-envoy", harness.FrontendID), harness.FrontendEnvoyUID)
	if err != nil {
		t.Fatal(err)
	}
	if err := honest.WaitLive(ctx); err != nil {
		t.Fatal(err)
	}
	if own, _ := envoyCerts(t, ctx, honest); len(own) == 0 {
		t.Fatal("the honest Envoy got no certificate")
	}
	waitFor(t, ctx, "the lying Envoy to log meshid's refusal", func() bool {
		return strings.Contains(liar.Logs(), `resource \"`+harness.BackendID+`\": not an identity or trust domain this caller is entitled to`) ||
			strings.Contains(liar.Logs(), `resource "`+harness.BackendID+`": not an identity or trust domain this caller is entitled to`)
	})
	if certs, err := liar.Certs(ctx); err != nil || len(certs) != 0 {
		t.Fatalf("the Envoy claiming to be the backend holds %d certificates (%v), want none", len(certs), err)
	}
	t.Logf("uid %d claiming node %q and asking for %s: refused; asking for %s: served",
		harness.FrontendEnvoyUID, "backend-envoy", harness.BackendID, harness.FrontendID)
}

// TestEnvoySurvivesMeshidCrash kills meshid with SIGKILL while Envoys are
// connected. Meanwhile the Envoys keep their certificates (mTLS still
// works; requests fail closed, because meshid is also the authz server),
// and once meshid is back they reconnect by themselves, receive SVIDs from
// the new process, and keep the same trust root.
func TestEnvoySurvivesMeshidCrash(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	mesh, err := env.StartDemoMesh(ctx, harness.DemoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oldSVID, oldRoots := envoyCerts(t, ctx, mesh.Backend)

	if err := mesh.Meshid.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-mesh.Meshid.Done()

	// While meshid is down: the Envoy still holds and presents its SVID.
	if own, _ := envoyCerts(t, ctx, mesh.Backend); !slices.Equal(own, oldSVID) {
		t.Fatalf("while meshid is down the backend holds %v, want its last good %v", own, oldSVID)
	}
	if chain := presentedChain(t, mesh.Backend.Sidecar.Inbound.ListenAddr); len(chain) == 0 || chain[0].URIs[0].String() != harness.BackendID {
		t.Fatal("while meshid is down the backend Envoy stopped presenting its SVID")
	}
	if status, _, err := harness.Get(ctx, mesh.FrontendURL+"hello"); err != nil || status != http.StatusForbidden {
		t.Fatalf("while meshid (the authz server) is down: %d %v, want 403: ext_authz fails closed", status, err)
	}

	if err := mesh.Meshid.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	newSVID, newRoots := awaitNewSVID(t, ctx, mesh.Backend, oldSVID)
	if !slices.Equal(newRoots, oldRoots) {
		t.Fatalf("after the crash the trust bundle changed: %v -> %v", oldRoots, newRoots)
	}
	waitFor(t, ctx, "requests to pass again", func() bool {
		status, _, err := harness.Get(ctx, mesh.FrontendURL+"hello")
		return err == nil && status == http.StatusOK
	})
	t.Logf("kill -9: SVID %s kept while down, %s after the restart; bundle %v unchanged", oldSVID[0], newSVID[0], newRoots)
}

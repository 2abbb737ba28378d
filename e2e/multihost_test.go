package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/meshid/meshid/test/authztest"
	"github.com/meshid/meshid/test/harness"
)

// The chain mesh's services, one per host, and who may call whom.
const (
	webID = "spiffe://example.org/mesh/web"
	apiID = "spiffe://example.org/mesh/api"
	dbID  = "spiffe://example.org/mesh/db"

	chainPolicy = `package envoy.authz

default allow := false

# web may GET anything on api; api may GET /hello on db; nothing else.
allow if {
	input.spiffe.source.id == "` + webID + `"
	input.spiffe.destination.id == "` + apiID + `"
	input.attributes.request.http.method == "GET"
}

allow if {
	input.spiffe.source.id == "` + apiID + `"
	input.spiffe.destination.id == "` + dbID + `"
	input.parsed_path == ["hello"]
}
`
)

// chainServices are web, api and db: Envoy uids 1301-1303, app uids
// 1401-1403, service i on hosts[i] with nodes[i] as its meshid.
func chainServices(hosts []*harness.Host, nodes []*harness.Meshid) []harness.ChainService {
	ids := []string{webID, apiID, dbID}
	names := []string{"web", "api", "db"}
	services := make([]harness.ChainService, len(names))
	for i, name := range names {
		services[i] = harness.ChainService{
			Name:     name,
			SPIFFEID: ids[i],
			EnvoyUID: uint32(1301 + i),
			AppUID:   uint32(1401 + i),
			Host:     hosts[i],
			Meshid:   nodes[i],
		}
	}
	return services
}

// chainEntry is the one entry a node needs: its service's Envoy.
func chainEntry(s harness.ChainService) []harness.Entry {
	return []harness.Entry{{SPIFFEID: s.SPIFFEID, Selectors: []string{fmt.Sprintf("unix:uid:%d", s.EnvoyUID)}}}
}

// TestMeshAcrossHosts runs web → api → db on three hosts (network
// namespaces on a bridge), each with its own meshid whose intermediate is
// signed by one organisation root: every call crosses the bridge over
// mTLS, every SVID chains to the root through its own node's intermediate,
// and killing one node's meshid stops only what needs that node.
func TestMeshAcrossHosts(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	bin, err := env.Binary("meshid")
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := env.Hosts(ctx, "host1", "host2", "host3")
	if err != nil {
		t.Fatal(err)
	}
	rootDir, err := env.MkdirAll("org-root")
	if err != nil {
		t.Fatal(err)
	}
	root := writeOrgRoot(t, rootDir)
	policy := authztest.PolicyDir(t, map[string]string{"chain.rego": chainPolicy})

	services := chainServices(hosts, make([]*harness.Meshid, len(hosts)))
	nodes := make([]*harness.Meshid, len(hosts))
	for i, h := range hosts {
		out := filepath.Join(rootDir, h.Name)
		cmd := exec.CommandContext(ctx, bin, "ca", "mint-intermediate",
			"-root-cert", filepath.Join(rootDir, "root.crt"), "-root-key", filepath.Join(rootDir, "root.key"),
			"-trust-domain", harness.DemoTrustDomain, "-out", out, "-ttl", "48h")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("meshid ca mint-intermediate: %v\n%s", err, b)
		}
		ca := fmt.Sprintf("ca:\n  upstream:\n    cert_file: %s\n    key_file: %s\n    bundle_file: %s\n",
			filepath.Join(out, "intermediate.crt"), filepath.Join(out, "intermediate.key"), filepath.Join(out, "bundle.crt"))
		nodes[i], err = h.StartMeshid(ctx, harness.MeshidOptions{
			Name:        "meshid-" + h.Name,
			Entries:     chainEntry(services[i]),
			PolicyDir:   policy,
			ExtraConfig: ca,
		})
		if err != nil {
			t.Fatal(err)
		}
		services[i].Meshid = nodes[i]
	}
	chain, err := env.StartChain(ctx, services)
	if err != nil {
		t.Fatal(err)
	}

	webToDB := func() (int, string, error) {
		status, body, err := harness.Get(ctx, chain.URL(2, "hello"))
		if err != nil || status != http.StatusOK {
			return status, string(body), err
		}
		var seen struct{ Peer string }
		if err := json.Unmarshal(body, &seen); err != nil {
			return status, string(body), err
		}
		return status, seen.Peer, nil
	}
	webToAPI := func() int {
		status, _, err := harness.Get(ctx, chain.URL(1, "healthz"))
		if err != nil {
			return 0
		}
		return status
	}
	if status, peer, err := webToDB(); err != nil || status != http.StatusOK || peer != apiID {
		t.Fatalf("web → api → db: %d %q %v, want 200 with db seeing %s", status, peer, err, apiID)
	}
	if status := webToAPI(); status != http.StatusOK {
		t.Fatalf("web → api: %d, want 200", status)
	}
	// api may call db only for /hello: the policy of db's node decides.
	if status, _, err := harness.Get(ctx, chain.URL(2, "other")); err != nil || status != http.StatusForbidden {
		t.Fatalf("web → api → db /other: %d %v, want 403 from db's node", status, err)
	}

	// Each inbound Envoy presents leaf + its own node's intermediate, and
	// the chain verifies to the one organisation root.
	roots := x509.NewCertPool()
	roots.AddCert(root)
	seenIntermediates := map[string]string{}
	for i := 1; i < len(services); i++ {
		presented := presentedChain(t, chain.Envoys[i].Sidecar.Inbound.ListenAddr)
		if len(presented) != 2 {
			t.Fatalf("%s presents %d certificates, want leaf and its node's intermediate", services[i].Name, len(presented))
		}
		mine := readCert(t, filepath.Join(rootDir, hosts[i].Name, "intermediate.crt"))
		if !presented[1].Equal(mine) {
			t.Errorf("%s's SVID is not issued through %s's intermediate", services[i].Name, hosts[i].Name)
		}
		inter := x509.NewCertPool()
		inter.AddCert(presented[1])
		if _, err := presented[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Errorf("%s's SVID does not chain to the organisation root: %v", services[i].Name, err)
		}
		if other, dup := seenIntermediates[string(presented[1].Raw)]; dup {
			t.Errorf("%s and %s share an intermediate", other, services[i].Name)
		}
		seenIntermediates[string(presented[1].Raw)] = services[i].Name
	}

	// Killing db's node stops only what db's node decides: db's Envoy can
	// no longer ask for a decision and fails closed, while web → api, whose
	// nodes are up, goes on.
	db := nodes[2]
	if err := db.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-db.Done()
	if status := webToAPI(); status != http.StatusOK {
		t.Errorf("web → api with db's meshid dead: %d, want 200", status)
	}
	if status, _, err := webToDB(); err == nil && status == http.StatusOK {
		t.Errorf("web → api → db with db's meshid dead: 200, want a failure (no authz decision)")
	}
	if err := db.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "web → api → db after db's meshid restarted", func() bool {
		status, peer, err := webToDB()
		return err == nil && status == http.StatusOK && peer == apiID
	})
	t.Logf("web (%s) → api (%s) → db (%s): 200 across the bridge; killing db's meshid failed only db's hop; it recovered after the restart",
		hosts[0].IP, hosts[1].IP, hosts[2].IP)
}

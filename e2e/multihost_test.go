package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
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
// namespaces on a bridge), each with its own meshid whose intermediate one
// OpenBao PKI engine signs: every call crosses the bridge over mTLS, every
// SVID chains to the engine's root through its own node's intermediate.
// Requests keep passing while the engine is down and while each node
// renews its intermediate, and killing one node's meshid stops only what
// needs that node.
func TestMeshAcrossHosts(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	hosts, err := env.Hosts(ctx, "host1", "host2", "host3")
	if err != nil {
		t.Fatal(err)
	}
	// The engine runs beside the harness, on the bridge: every node
	// reaches it there, over TLS.
	_, port, _ := net.SplitHostPort(env.FreeAddr())
	bao, err := env.StartOpenBao(ctx, harness.OpenBaoOptions{TLS: true, Listen: net.JoinHostPort(hosts[0].HarnessIP, port)})
	if err != nil {
		t.Fatal(err)
	}
	// Intermediates of a minute: each node renews its own at about 30s.
	if err := bao.Call(ctx, "POST", "sys/mounts/pki/tune", map[string]any{"max_lease_ttl": "60s"}, nil); err != nil {
		t.Fatal(err)
	}
	roots, err := bao.Roots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	policy := authztest.PolicyDir(t, map[string]string{"chain.rego": chainPolicy})

	services := chainServices(hosts, make([]*harness.Meshid, len(hosts)))
	nodes := make([]*harness.Meshid, len(hosts))
	for i, h := range hosts {
		token, err := bao.Token(ctx, "meshid-"+h.Name, harness.MeshidPolicy(bao.Mount), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		nodes[i], err = h.StartMeshid(ctx, harness.MeshidOptions{
			Name:        "meshid-" + h.Name,
			Entries:     chainEntry(services[i]),
			PolicyDir:   policy,
			X509TTL:     20 * time.Second,
			ExtraConfig: bao.MeshidConfig(token, 10*time.Second),
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

	// Each inbound Envoy presents leaf + its own node's intermediate, one
	// per node, and the chain verifies to the engine's root.
	intermediates := func() []*x509.Certificate {
		var out []*x509.Certificate
		for i := 1; i < len(services); i++ {
			presented := presentedChain(t, chain.Envoys[i].Sidecar.Inbound.ListenAddr)
			if len(presented) != 2 {
				t.Fatalf("%s presents %d certificates, want leaf and its node's intermediate", services[i].Name, len(presented))
			}
			verifyTo(t, presented, roots)
			out = append(out, presented[1])
		}
		return out
	}
	first := intermediates()
	if first[0].Equal(first[1]) {
		t.Fatal("api's and db's nodes present the same intermediate")
	}
	// web has no inbound listener: fetch its identity as its Envoy's uid,
	// on its host, from its node.
	dir, err := env.OwnedDir(services[0].EnvoyUID, "web-svid")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := nodes[0].CLI(ctx, services[0].EnvoyUID, "svid", "fetch", "--write", dir); err != nil {
		t.Fatalf("web's SVID from its node: %v\n%s", err, out)
	}
	web := readChain(t, filepath.Join(dir, "svid.pem"))
	if len(web) != 2 || web[1].Equal(first[0]) || web[1].Equal(first[1]) {
		t.Fatalf("web's SVID chain has %d certificates, want leaf and web's node's own intermediate", len(web))
	}
	verifyTo(t, web, roots)

	// The engine stops: nodes keep serving with the intermediates they
	// hold. It comes back, and each node renews at half its intermediate's
	// life; requests cross the whole chain all along.
	traffic := startLoad(ctx, chain.URL(2, "hello"), apiID, 2, 50*time.Millisecond)
	if err := bao.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	if err := bao.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// Renewal is due at 45-55 % of the intermediate's minute, later by the
	// backoff of the calls that failed while the engine was down.
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		now := intermediates()
		if !now[0].Equal(first[0]) && !now[1].Equal(first[1]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("api's and db's nodes did not both renew their intermediates within 90s")
		}
	}
	if res := traffic.stop(); res.failed > 0 || res.total == 0 {
		t.Fatalf("%d of %d requests across the chain failed while the engine was down and the intermediates renewed: %v", res.failed, res.total, res.firstErrors)
	} else {
		t.Logf("%d requests across the chain, 0 failed, while the engine was down 5s and every node renewed its intermediate", res.total)
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
	t.Logf("web (%s) → api (%s) → db (%s): 200 across the bridge under one OpenBao root; killing db's meshid failed only db's hop; it recovered after the restart",
		hosts[0].IP, hosts[1].IP, hosts[2].IP)
}

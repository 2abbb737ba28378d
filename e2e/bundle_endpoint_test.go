package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/meshid/meshid/test/harness"
	"github.com/meshid/meshid/test/svidtest"
)

// TestFederationOverBundleEndpoints: example.org on host1 and
// partner.example on host2 each serve their bundle on a SPIFFE bundle
// endpoint and learn the other's from it, nothing copied by hand. Before
// the exchange the partner's frontend cannot reach our backend; after it,
// it can. What a node fetched survives its restart with the other domain
// unreachable, and a new CA generation of example.org reaches partner's
// Envoy through the endpoint while requests go on.
func TestFederationOverBundleEndpoints(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	const (
		partnerTD = "partner.example"
		// example.org's CA reaches half its life this long after the
		// start, when it publishes its successor.
		successorIn = 45 * time.Second
	)
	hosts, err := env.Hosts(ctx, "host1", "host2")
	if err != nil {
		t.Fatal(err)
	}
	h1, h2 := hosts[0], hosts[1]

	// A web PKI both endpoints present (https_web): no SPIFFE bundle needs
	// to be handed over first.
	webDir, err := env.MkdirAll("web-pki")
	if err != nil {
		t.Fatal(err)
	}
	web := svidtest.NewCA(t, "web.test")
	webRoot := filepath.Join(webDir, "root.pem")
	write(t, webRoot, string(web.RootPEM()))
	endpoint := func(h *harness.Host) (addr, config string) {
		dir, err := env.MkdirAll("web-pki", h.Name)
		if err != nil {
			t.Fatal(err)
		}
		cert, key := web.WebCert(t, dir, h.IP)
		addr = h.FreeAddr()
		return addr, fmt.Sprintf("federation:\n  bundle_endpoint:\n    address: %s\n    profile: https_web\n    cert_file: %s\n    key_file: %s\n    refresh_hint: 1s\n", addr, cert, key)
	}
	ourAddr, ourEndpoint := endpoint(h1)
	partnerAddr, partnerEndpoint := endpoint(h2)
	fetch := func(td, addr string) string {
		return fmt.Sprintf("  bundles:\n    - trust_domain: %s\n      endpoint_url: https://%s/\n      endpoint_ca_file: %s\n", td, addr, webRoot)
	}

	policyDir := crossDomainPolicy(t, env)
	backendEntry, frontendEntry := crossDomainEntries()

	data, err := env.MeshidDataDir("meshid-ours")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := harness.SeedCA(data, harness.DemoTrustDomain, time.Hour, 30*time.Minute-successorIn); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	ours, err := h1.StartMeshid(ctx, harness.MeshidOptions{Name: "meshid-ours", Entries: []harness.Entry{backendEntry},
		PolicyDir: policyDir, ExtraConfig: "ca:\n  ttl: 1h\n" + ourEndpoint})
	if err != nil {
		t.Fatal(err)
	}
	partner, err := h2.StartMeshid(ctx, harness.MeshidOptions{Name: "meshid-partner", TrustDomain: partnerTD,
		Entries: []harness.Entry{frontendEntry}, ExtraConfig: partnerEndpoint})
	if err != nil {
		t.Fatal(err)
	}
	_, frontend := startCrossDomain(t, ctx, h1, h2, ours, partner)
	hello := func() (int, error) {
		status, _, err := harness.Get(ctx, "http://"+frontend.Sidecar.Outbound.ListenAddr+"/hello")
		return status, err
	}
	if status, err := hello(); err == nil && status == http.StatusOK {
		t.Fatal("partner.example → example.org succeeded before the bundles were exchanged")
	}

	// The exchange: each node fetches the other's endpoint, across the
	// bridge, and each entry federates with the other domain.
	appendFile(t, ours.ConfigPath, fetch(partnerTD, partnerAddr))
	appendFile(t, partner.ConfigPath, fetch(harness.DemoTrustDomain, ourAddr))
	backendEntry.FederatesWith = []string{partnerTD}
	frontendEntry.FederatesWith = []string{harness.DemoTrustDomain}
	if err := ours.WriteEntries([]harness.Entry{backendEntry}); err != nil {
		t.Fatal(err)
	}
	if err := partner.WriteEntries([]harness.Entry{frontendEntry}); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*harness.Meshid{ours, partner} {
		if err := m.Restart(ctx); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, ctx, "partner.example → example.org after the exchange", func() bool {
		status, err := hello()
		return err == nil && status == http.StatusOK
	})
	if time.Since(started) > successorIn-5*time.Second {
		t.Fatalf("the exchange took %s, past the moment example.org's CA publishes its successor (%s): raise successorIn", time.Since(started).Round(time.Second), successorIn)
	}
	_, before := envoyCerts(t, ctx, frontend)
	if len(before) != 2 {
		t.Fatalf("partner's frontend Envoy trusts %d roots, want its own and example.org's", len(before))
	}
	for _, m := range []*harness.Meshid{ours, partner} {
		if _, err := os.Stat(filepath.Join(m.Dir, "data", "federation")); err != nil {
			t.Fatalf("%s kept no fetched bundle: %v", m.Name, err)
		}
	}

	// Restarted while example.org is down, partner starts from the bundle it
	// stored: its frontend's identity is still handed example.org's roots.
	ourRoots := func() string {
		out, err := partner.CLI(ctx, harness.FrontendEnvoyUID, "bundle", "show", "-trust-domain", harness.DemoTrustDomain)
		if err != nil {
			t.Fatalf("partner's frontend gets no example.org bundle: %v\n%s", err, out)
		}
		return out
	}
	fetched := ourRoots()
	if err := ours.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-ours.Done()
	if err := partner.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := ourRoots(); got != fetched {
		t.Fatalf("after a restart with example.org unreachable, partner hands out\n%s\nwant what it fetched before\n%s", got, fetched)
	}
	if err := ours.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "partner.example → example.org after both restarts", func() bool {
		status, err := hello()
		return err == nil && status == http.StatusOK
	})

	// example.org's CA publishes its successor: partner.example's Envoy gets
	// the new root through the endpoint, and every request meanwhile passes.
	failed, sent := 0, 0
	deadline := time.Now().Add(successorIn + time.Minute)
	for {
		status, err := hello()
		sent++
		if err != nil || status != http.StatusOK {
			failed++
		}
		if _, roots := envoyCerts(t, ctx, frontend); len(roots) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("partner's frontend never got example.org's new CA generation (roots %v)", before)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if failed > 0 {
		t.Errorf("%d of %d requests failed while example.org's new root went across", failed, sent)
	}
	t.Logf("bundles exchanged over https_web endpoints across the bridge; partner kept example.org's bundle over a restart; the successor root arrived %s after start with %d requests, 0 failed",
		time.Since(started).Round(time.Second), sent)
}

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshid/meshid/test/authztest"
	"github.com/meshid/meshid/test/harness"
	"github.com/meshid/meshid/test/svidtest"
)

// The policies the bundle service publishes, one after the other: web may
// GET /hello on api, then /goodbye only.
const (
	helloBundlePolicy = `package envoy.authz

default allow := false

allow if {
	input.spiffe.source.id == "` + webID + `"
	input.parsed_path == ["hello"]
}
`
	goodbyeBundlePolicy = `package envoy.authz

default allow := false

allow if {
	input.spiffe.source.id == "` + webID + `"
	input.parsed_path == ["goodbye"]
}
`
	// Polling of every node: a new bundle is fetched within maxPoll.
	minPoll, maxPoll = time.Second, 2 * time.Second
	// bundleSlack is what a node may take beyond its polling interval to
	// download, verify, compile and activate a bundle and for the test to
	// see it through Envoy, on a loaded 2-core machine under -race.
	bundleSlack = 3 * time.Second
)

// bundleNode is one node of the bundle test: its meshid and the chain web
// → api on its host, whose api Envoy asks that meshid.
type bundleNode struct {
	host   *harness.Host
	meshid *harness.Meshid
	chain  *harness.Chain
	etag   bool // polls with If-None-Match (else from the server's no-ETag path)
}

// decision is what api's Envoy on n answers web's GET of path: 200 or
// 403 (0 when the request failed).
func (n *bundleNode) decision(ctx context.Context, path string) int {
	status, _, err := harness.Get(ctx, n.chain.URL(1, path))
	if err != nil {
		return 0
	}
	return status
}

// failures is the node's meshid_authz_bundle_failures_total for the mesh
// bundle, summed over reasons unless one is given.
func (n *bundleNode) failures(t *testing.T, ctx context.Context, reason ...string) float64 {
	t.Helper()
	s, err := n.meshid.Scrape(ctx)
	if err != nil {
		t.Fatal(err)
	}
	labels := []string{"name", "mesh"}
	if len(reason) > 0 {
		labels = append(labels, "reason", reason[0])
	}
	v, _ := s.Value("meshid_authz_bundle_failures_total", labels...)
	return v
}

// expectRevision checks that the node's metrics name revision as the
// mesh bundle's active one, and no other.
func (n *bundleNode) expectRevision(t *testing.T, ctx context.Context, revision string) {
	t.Helper()
	s, err := n.meshid.Scrape(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := s.Value("meshid_authz_bundle_active_revision_info", "name", "mesh", "revision", revision); !ok || v != 1 {
		t.Errorf("%s: meshid_authz_bundle_active_revision_info{name=mesh,revision=%s} = %v (present %v), want 1", n.host.Name, revision, v, ok)
	}
	if all, _ := s.Value("meshid_authz_bundle_active_revision_info", "name", "mesh"); all != 1 {
		t.Errorf("%s: %v active revisions of the mesh bundle, want one", n.host.Name, all)
	}
}

// TestBundlesAcrossNodes is issue 18's end to end: nginx (on a host of its
// own, over TLS with a bearer token) serves a bundle signed by `meshid
// policy build`, and three meshid nodes on three other hosts, each with a
// real Envoy in front of an app, download, verify and enforce it. A new
// signed bundle changes every node's decision within its polling
// interval; a corrupted, a wrongly signed and an unsigned bundle change
// nothing and are counted; with the service stopped, restarted nodes
// enforce the bundle they kept. Convergence per node and bytes per poll,
// with and without ETag, are measured from nginx's access log.
func TestBundlesAcrossNodes(t *testing.T) {
	env := harness.ForTest(t)
	if _, err := harness.NginxPath(); err != nil {
		t.Skipf("%v (`make test` installs it)", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	hosts, err := env.Hosts(ctx, "bundles", "node1", "node2", "node3")
	if err != nil {
		t.Fatal(err)
	}

	// The bundle service: HTTPS with a web PKI certificate for its host's
	// address, and a bearer token.
	webCA := svidtest.NewCA(t, "bundles.example")
	certDir, err := env.MkdirAll("bundle-service-tls")
	if err != nil {
		t.Fatal(err)
	}
	cert, key := webCA.WebCert(t, certDir, hosts[0].IP)
	caFile := filepath.Join(certDir, "ca.crt")
	if err := os.WriteFile(caFile, webCA.RootPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	server, err := env.StartBundleServer(ctx, harness.BundleServerOptions{
		Host: hosts[0], CertFile: cert, KeyFile: key, CAFile: caFile, Token: "mesh-bundles-token",
	})
	if err != nil {
		t.Fatal(err)
	}
	signingKey, publicKey, err := env.SigningKeyPair("mesh")
	if err != nil {
		t.Fatal(err)
	}
	intruderKey, _, err := env.SigningKeyPair("intruder")
	if err != nil {
		t.Fatal(err)
	}
	hello := authztest.PolicyDir(t, map[string]string{"envoy/authz.rego": helloBundlePolicy})
	goodbye := authztest.PolicyDir(t, map[string]string{"envoy/authz.rego": goodbyeBundlePolicy})
	build := func(dir string, b harness.BundleBuild) []byte {
		t.Helper()
		data, err := env.BuildBundle(ctx, dir, b)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	const resource = "bundles/mesh.tar.gz"
	publish := func(data []byte) time.Time {
		t.Helper()
		at := time.Now()
		if err := server.Publish(resource, data); err != nil {
			t.Fatal(err)
		}
		return at
	}
	v1 := build(hello, harness.BundleBuild{Revision: "v1", SigningKey: signingKey})
	publish(v1)

	// Three nodes, each its own meshid (own CA, own data_dir) with web
	// and api on its host; node3 polls the path without ETags.
	nodes := make([]*bundleNode, 3)
	for i := range nodes {
		h := hosts[i+1]
		n := &bundleNode{host: h, etag: i < 2}
		res := resource
		if !n.etag {
			res = strings.TrimPrefix(harness.NoETagPrefix, "/") + resource
		}
		n.meshid, err = h.StartMeshid(ctx, harness.MeshidOptions{
			Name: "meshid-" + h.Name,
			Entries: []harness.Entry{
				{SPIFFEID: webID, Selectors: []string{"unix:uid:1301"}},
				{SPIFFEID: apiID, Selectors: []string{"unix:uid:1302"}},
			},
			Bundles: []harness.MeshidBundle{server.Source("mesh", res, "global", publicKey, minPoll, maxPoll)},
		})
		if err != nil {
			t.Fatal(err)
		}
		n.chain, err = env.StartChain(ctx, []harness.ChainService{
			{Name: h.Name + "-web", SPIFFEID: webID, EnvoyUID: 1301, AppUID: 1401, Host: h, Meshid: n.meshid},
			{Name: h.Name + "-api", SPIFFEID: apiID, EnvoyUID: 1302, AppUID: 1402, Host: h, Meshid: n.meshid},
		})
		if err != nil {
			t.Fatal(err)
		}
		nodes[i] = n
	}
	expect := func(when string, want map[string]int) {
		t.Helper()
		for _, n := range nodes {
			for path, status := range want {
				if got := n.decision(ctx, path); got != status {
					t.Fatalf("%s: %s: GET /%s through Envoy: %d, want %d\n%s", when, n.host.Name, path, got, status, n.meshid.LogTail(15))
				}
			}
		}
	}
	expect("bundle v1", map[string]int{"hello": 200, "goodbye": 403})

	// A new signed bundle: every node enforces it within its polling
	// interval. Each node is watched on its own through its Envoy.
	v2 := build(goodbye, harness.BundleBuild{Revision: "v2", SigningKey: signingKey})
	published := publish(v2)
	var wg sync.WaitGroup
	converged := make([]time.Duration, len(nodes))
	for i, n := range nodes {
		wg.Go(func() {
			for time.Since(published) < maxPoll+bundleSlack {
				if n.decision(ctx, "hello") == http.StatusForbidden && n.decision(ctx, "goodbye") == http.StatusOK {
					converged[i] = time.Since(published)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	for i, n := range nodes {
		if converged[i] == 0 {
			t.Fatalf("%s still decides with v1 %s after v2 was published (polling every %s-%s)\n%s",
				n.host.Name, maxPoll+bundleSlack, minPoll, maxPoll, n.meshid.LogTail(20))
		}
		t.Logf("%s enforces v2 %s after it was published (polling every %s-%s)", n.host.Name, converged[i].Round(time.Millisecond), minPoll, maxPoll)
		if !strings.Contains(n.meshid.Logs(), "revision=v2") {
			t.Errorf("%s's log never says it activated revision v2", n.host.Name)
		}
		n.expectRevision(t, ctx, "v2")
	}

	// Bytes per poll while nothing changes, from nginx's log: a 304 where
	// the node sends the ETag it holds, the whole bundle where none is.
	quiet := time.Now()
	time.Sleep(3*maxPoll + time.Second)
	lines, err := server.AccessLog()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		var polls, bytes, notModified int64
		for _, l := range lines {
			if l.Remote != n.host.IP || l.Time.Before(quiet) {
				continue
			}
			polls++
			bytes += l.Bytes
			if l.Status == http.StatusNotModified {
				notModified++
			}
		}
		if polls < 2 {
			t.Fatalf("%s polled %d times in %s, polling every %s-%s", n.host.Name, polls, 3*maxPoll+time.Second, minPoll, maxPoll)
		}
		kind := "with ETag"
		if !n.etag {
			kind = "without ETag"
		}
		t.Logf("%s, %s: %d polls in %s, %d bytes per poll (%d of them 304), bundle %d bytes",
			n.host.Name, kind, polls, 3*maxPoll+time.Second, bytes/polls, notModified, len(v2))
		switch {
		case n.etag && notModified != polls:
			t.Errorf("%s sends If-None-Match, yet %d of its %d unchanged polls were not 304", n.host.Name, polls-notModified, polls)
		case n.etag && bytes/polls >= int64(len(v2)):
			t.Errorf("%s: %d bytes per 304 poll, not less than the bundle's %d", n.host.Name, bytes/polls, len(v2))
		case !n.etag && (notModified != 0 || bytes/polls <= int64(len(v2))):
			t.Errorf("%s has no ETag to send, yet %d of %d polls were 304 (%d bytes per poll)", n.host.Name, notModified, polls, bytes/polls)
		}
	}

	// Bundles that must change nothing: each is fetched and refused by
	// every node (its failure count rises), and v2 still decides.
	v3 := build(hello, harness.BundleBuild{Revision: "v3", SigningKey: signingKey})
	var bads []publication
	for _, bad := range []struct {
		name string
		data []byte
	}{
		{"truncated", v3[:len(v3)/2]},
		{"signed by another key", build(hello, harness.BundleBuild{Revision: "v3-intruder", SigningKey: intruderKey})},
		{"unsigned", build(hello, harness.BundleBuild{Revision: "v3-unsigned"})},
	} {
		before := make([]float64, len(nodes))
		logged := make([]int, len(nodes))
		for i, n := range nodes {
			before[i] = n.failures(t, ctx)
			logged[i] = strings.Count(n.meshid.Logs(), "bundle refused")
		}
		badAt := publish(bad.data)
		// The count rises just before the log line is written: wait for both.
		for i, n := range nodes {
			refused := func() bool {
				return n.failures(t, ctx) > before[i] && strings.Count(n.meshid.Logs(), "bundle refused") > logged[i]
			}
			for deadline := time.Now().Add(maxPoll + bundleSlack); !refused(); time.Sleep(100 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%s bundle: %s did not count and log it as refused within %s\n%s", bad.name, n.host.Name, maxPoll+bundleSlack, n.meshid.LogTail(20))
				}
			}
		}
		expect(bad.name+" bundle published", map[string]int{"hello": 403, "goodbye": 200})
		// A few more polls of it change nothing either.
		time.Sleep(2 * maxPoll)
		expect(bad.name+" bundle polled again", map[string]int{"hello": 403, "goodbye": 200})
		t.Logf("%s bundle: refused by every node, v2 still decides; %s says: %s", bad.name, nodes[0].host.Name, lastLine(nodes[0].meshid.Logs(), "bundle refused"))
		bads = append(bads, publication{bad.name, badAt, len(bad.data)})
	}
	for _, n := range nodes {
		s, err := n.meshid.Scrape(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var reasons []string
		for _, m := range s["meshid_authz_bundle_failures_total"].GetMetric() {
			reason := "?"
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					reason = l.GetValue()
				}
			}
			reasons = append(reasons, fmt.Sprintf("%s=%g", reason, m.GetCounter().GetValue()))
		}
		t.Logf("%s: meshid_authz_bundle_failures_total{name=mesh} by reason: %s", n.host.Name, strings.Join(reasons, " "))
	}

	// How often each node fetched each refused bundle while it was the
	// one published (a node that keeps a refused bundle's ETag fetches it
	// once).
	republished := publish(v2)
	lines, err = server.AccessLog()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		var counts []string
		for k, b := range bads {
			until := republished
			if k+1 < len(bads) {
				until = bads[k+1].at
			}
			downloads := 0
			for _, l := range lines {
				if l.Remote == n.host.IP && l.Status == http.StatusOK && l.BodyBytes == int64(b.size) && !l.Time.Before(b.at) && l.Time.Before(until) {
					downloads++
				}
			}
			counts = append(counts, fmt.Sprintf("%s %d× in %s", b.name, downloads, until.Sub(b.at).Round(100*time.Millisecond)))
		}
		t.Logf("%s downloaded the refused bundles: %s", n.host.Name, strings.Join(counts, ", "))
	}

	// v2 again (a new file, so a new ETag): every node downloads it and
	// keeps it on disk. Then the service goes away and every node
	// restarts: each enforces the copy it kept.
	for _, n := range nodes {
		for deadline := time.Now().Add(maxPoll + bundleSlack); !fetched(t, server, n.host.IP, republished, len(v2)); time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not download v2 again within %s", n.host.Name, maxPoll+bundleSlack)
			}
		}
	}
	time.Sleep(time.Second) // activated and written to data_dir
	downloads := make([]float64, len(nodes))
	for i, n := range nodes {
		downloads[i] = n.failures(t, ctx, "download")
	}
	if err := server.Stop(); err != nil {
		t.Fatal(err)
	}
	// Each node finds the service gone and keeps deciding with v2.
	for i, n := range nodes {
		wctx, wcancel := context.WithTimeout(ctx, maxPoll+bundleSlack)
		waitUntil(t, wctx, n.host.Name+" to count a failed download", func() bool { return n.failures(t, ctx, "download") > downloads[i] })
		wcancel()
	}
	expect("service down", map[string]int{"hello": 403, "goodbye": 200})
	for _, n := range nodes {
		if err := n.meshid.Restart(ctx); err != nil {
			t.Fatalf("%s restarted with the bundle service down: %v", n.host.Name, err)
		}
	}
	for _, n := range nodes {
		// Envoy reconnects to the new meshid's ext_authz listener.
		wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
		waitUntil(t, wctx, n.host.Name+" to allow GET /goodbye after a restart with the service down", func() bool {
			return n.decision(ctx, "goodbye") == http.StatusOK
		})
		wcancel()
	}
	expect("restarted offline", map[string]int{"hello": 403, "goodbye": 200})
	for _, n := range nodes {
		n.expectRevision(t, ctx, "v2")
	}
	t.Log("restarted with the bundle service down, every node enforces the v2 it kept")

	// The service comes back: a node that sends the kept copy's ETag gets
	// a 304 for the bundle it already has.
	back := time.Now()
	if err := server.Start(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(maxPoll + bundleSlack)
	lines, err = server.AccessLog()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		first := 0
		for _, l := range lines {
			if l.Remote == n.host.IP && !l.Time.Before(back) {
				first = l.Status
				break
			}
		}
		want := http.StatusNotModified
		if !n.etag {
			want = http.StatusOK
		}
		if first != want {
			t.Errorf("%s's first poll after the service came back: %d, want %d", n.host.Name, first, want)
		}
	}
	expect("service back", map[string]int{"hello": 403, "goodbye": 200})
}

// publication is a bundle published at at, of size bytes.
type publication struct {
	name string
	at   time.Time
	size int
}

// lastLine is the last line of logs holding sub.
func lastLine(logs, sub string) string {
	lines := strings.Split(logs, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], sub) {
			return lines[i]
		}
	}
	return ""
}

// fetched says whether the bundle server's log has a 200 of size bytes to
// ip at or after since.
func fetched(t *testing.T, s *harness.BundleServer, ip string, since time.Time, size int) bool {
	t.Helper()
	lines, err := s.AccessLog()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		if l.Remote == ip && l.Status == http.StatusOK && l.BodyBytes == int64(size) && !l.Time.Before(since.Truncate(time.Millisecond)) {
			return true
		}
	}
	return false
}

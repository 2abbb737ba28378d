package bundles

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/test/authztest"
)

// key is a bundle signing key pair, the public half in a PEM file.
type key struct {
	id      string
	private string // PEM
	pubFile string
}

func newKey(t *testing.T, id string) key {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(t.TempDir(), id+".pub")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		t.Fatal(err)
	}
	priv := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	return key{id: id, private: string(priv), pubFile: f}
}

// allowing is a policy allowing the one path given.
func allowing(path string) string {
	return "package envoy.authz\n\ndefault allow := false\n\nallow if input.attributes.request.http.path == \"" + path + "\"\n"
}

// spec is a bundle a test builds with OPA's bundle package.
type spec struct {
	revision string
	roots    []string // nil: OPA's default, all of data
	modules  map[string]string
	data     map[string]any
	signer   *key // nil: unsigned
}

func build(t *testing.T, s spec) []byte {
	t.Helper()
	b := bundle.Bundle{Manifest: bundle.Manifest{Revision: s.revision}, Data: s.data}
	if s.roots != nil {
		b.Manifest.Roots = &s.roots
	}
	if b.Data == nil {
		b.Data = map[string]any{}
	}
	for p, src := range s.modules {
		// The parse is for the writer; a module that does not parse is
		// written as it is, for the reader to refuse.
		m, _ := ast.ParseModuleWithOpts(p, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		b.Modules = append(b.Modules, bundle.ModuleFile{Path: p, URL: p, Raw: []byte(src), Parsed: m})
	}
	if s.signer != nil {
		if err := b.GenerateSignature(bundle.NewSigningConfig(s.signer.private, "RS256", ""), s.signer.id, true); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).UseModulePath(true).DisableFormat(true).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// bundleServer is a bundle service: it serves body with its ETag (unless
// ignoreETag), answers If-None-Match with 304, or status, or stalls.
type bundleServer struct {
	*httptest.Server
	mu         sync.Mutex
	body       []byte
	status     int           // 0: serve body
	stall      time.Duration // before answering
	ignoreETag bool
	epoch      string // part of the ETag, as a file's mtime is of nginx's
	requests   int
	bytes      int      // response body bytes written
	ifNoneMtch []string // what each request sent
}

func newBundleServer(t *testing.T) *bundleServer {
	s := &bundleServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *bundleServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	s.ifNoneMtch = append(s.ifNoneMtch, r.Header.Get("If-None-Match"))
	body, status, stall, ignore, epoch := s.body, s.status, s.stall, s.ignoreETag, s.epoch
	s.mu.Unlock()
	if stall > 0 {
		select {
		case <-time.After(stall):
		case <-r.Context().Done():
			return
		}
	}
	if status != 0 {
		http.Error(w, "broken", status)
		return
	}
	sum := sha256.Sum256(body)
	etag := `"` + epoch + hex.EncodeToString(sum[:8]) + `"`
	if !ignore {
		w.Header().Set("ETag", etag)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	w.Header().Set("Content-Type", "application/gzip")
	n, _ := w.Write(body)
	s.mu.Lock()
	s.bytes += n
	s.mu.Unlock()
}

func (s *bundleServer) set(f func(s *bundleServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *bundleServer) counts() (requests, bytes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests, s.bytes
}

// node is what a test runs: an authz server, its activator and the
// bundle manager in front of them.
type node struct {
	srv *authz.Server
	mgr *Manager
	reg *prometheus.Registry
}

func sourceConfig(url string, k *key) config.Bundle {
	b := config.Bundle{
		Name: "mesh", Resource: "bundles/mesh.tar.gz",
		Service:        config.Service{URL: url, Timeout: time.Second},
		Polling:        config.BundlePolling{MinDelay: time.Second, MaxDelay: time.Second},
		SizeLimitBytes: 1 << 20,
	}
	if k != nil {
		b.Signing = &config.BundleSigning{KeyID: k.id, Algorithm: "RS256", PublicKeyFile: k.pubFile}
	} else {
		b.Unsigned = true
	}
	return b
}

func startNode(t *testing.T, dataDir, policyDir string, sources ...config.Bundle) *node {
	t.Helper()
	srv, err := authz.NewServer(nil, authz.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range sources {
		names = append(names, s.Name)
	}
	act, err := authz.NewActivator(srv, authz.Config{PolicyDir: policyDir}, names, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	mgr, err := New(Options{Bundles: sources, DataDir: dataDir, RegoVersion: ast.RegoV1, Activator: act, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	return &node{srv: srv, mgr: mgr, reg: reg}
}

// run runs the manager's downloaders, as the daemon does, until the
// test ends.
func (n *node) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.mgr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
}

// poll asks the service once for each bundle, as one tick of the
// downloader's loop does.
func (n *node) poll(t *testing.T) {
	t.Helper()
	for _, s := range n.mgr.sources {
		if s.d == nil {
			d, err := s.downloader(plugins.TriggerManual)
			if err != nil {
				t.Fatal(err)
			}
			s.d = d
		}
		_ = s.d.Trigger(context.Background()) // failures are in the status
	}
}

// allows says whether the active policy allows path; no policy active is
// an error.
func (n *node) allows(t *testing.T, path string) bool {
	t.Helper()
	r := n.srv.Decide(context.Background(), authztest.DemoCheck(path))
	if r.Err != nil {
		t.Fatalf("decide %s: %v", path, r.Err)
	}
	return r.Allowed
}

func (n *node) status(t *testing.T) Status {
	t.Helper()
	st := n.mgr.Status()
	if len(st) != 1 {
		t.Fatalf("status = %+v", st)
	}
	return st[0]
}

func (n *node) failures(name, reason string) float64 {
	return testutil.ToFloat64(n.mgr.metrics.failures.WithLabelValues(name, reason))
}

func good(k *key, revision, path string) spec {
	return spec{revision: revision, roots: []string{"envoy"}, modules: map[string]string{"/envoy/authz.rego": allowing(path)}, signer: k}
}

// A signed bundle is downloaded, verified, activated and kept; the next
// poll sends its ETag and is a 304 with no body.
func TestDownloadActivateKeep(t *testing.T) {
	k := newKey(t, "global")
	bs := newBundleServer(t)
	first := build(t, good(&k, "r1", "/a"))
	bs.set(func(s *bundleServer) { s.body = first })
	data := t.TempDir()
	n := startNode(t, data, "", sourceConfig(bs.URL, &k))

	if err := n.mgr.Ready(); err == nil || !strings.Contains(err.Error(), "authz bundle mesh: not activated yet") {
		t.Errorf("Ready before any download = %v", err)
	}
	if n.srv.Engine() != nil {
		t.Fatal("an engine before any bundle")
	}
	n.poll(t)
	if err := n.mgr.Ready(); err != nil {
		t.Fatalf("Ready = %v", err)
	}
	if !n.allows(t, "/a") || n.allows(t, "/b") {
		t.Error("bundle r1 not enforced")
	}
	st := n.status(t)
	if !st.Active || st.Revision != "r1" || st.ETag == "" || st.FromDisk || st.LastActivation.IsZero() || st.LastFailure != nil {
		t.Errorf("status = %+v", st)
	}
	p := n.srv.Engine().Policy()
	if p.Bundles["mesh"] != "r1" || !strings.Contains(string(p.Files[".bundles/mesh/envoy/authz.rego"]), `"/a"`) {
		t.Errorf("policy set: bundles %v, files %v", p.Bundles, keys(p.Files))
	}

	raw, err := os.ReadFile(filepath.Join(data, "bundles", "mesh", keptBundle))
	if err != nil || !bytes.Equal(raw, first) {
		t.Fatalf("kept bundle: %v (%d bytes, want %d)", err, len(raw), len(first))
	}
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{filepath.Join(data, "bundles", "mesh"), 0o700 | os.ModeDir}, {filepath.Join(data, "bundles", "mesh", keptBundle), 0o600}, {filepath.Join(data, "bundles", "mesh", keptMeta), 0o600}} {
		if fi, err := os.Stat(f.path); err != nil || fi.Mode() != f.mode {
			t.Errorf("%s: %v %v, want mode %v", f.path, fi.Mode(), err, f.mode)
		}
	}
	var meta kept
	if b, err := os.ReadFile(filepath.Join(data, "bundles", "mesh", keptMeta)); err != nil || json.Unmarshal(b, &meta) != nil || meta.ETag != st.ETag || meta.Revision != "r1" {
		t.Errorf("bundle.json = %+v (%v)", meta, err)
	}

	_, before := bs.counts()
	n.poll(t)
	reqs, after := bs.counts()
	if reqs != 2 || after != before || bs.ifNoneMtch[1] != st.ETag {
		t.Errorf("second poll: %d requests, %d body bytes (then %d), If-None-Match %q: want a 304 for ETag %s", reqs, after, before, bs.ifNoneMtch[1], st.ETag)
	}
	if got := testutil.ToFloat64(n.mgr.metrics.bytes.WithLabelValues("mesh")); got != float64(len(first)) {
		t.Errorf("downloaded bytes metric = %v, want %d", got, len(first))
	}

	// A new revision replaces it.
	bs.set(func(s *bundleServer) { s.body = build(t, good(&k, "r2", "/b")) })
	n.poll(t)
	if n.allows(t, "/a") || !n.allows(t, "/b") || n.status(t).Revision != "r2" {
		t.Errorf("r2 not enforced: %+v", n.status(t))
	}
	if got := testutil.ToFloat64(n.mgr.metrics.revision.WithLabelValues("mesh", "r2")); got != 1 {
		t.Errorf("revision info r2 = %v", got)
	}
	if c := testutil.CollectAndCount(n.mgr.metrics.revision); c != 1 {
		t.Errorf("%d revision info series, want the active one only", c)
	}
}

// Bytes per poll of an unchanged bundle, with and without ETags, on the
// wire (headers included, both ways), for a small bundle and one with
// 256 KiB of data.
func TestBytesPerPoll(t *testing.T) {
	k := newKey(t, "global")
	big := good(&k, "r1", "/a")
	noise := make([]byte, 128<<10) // random, so that gzip leaves it about as large
	rand.Read(noise)
	big.data = map[string]any{"envoy": map[string]any{"blob": hex.EncodeToString(noise)}}
	for _, sp := range []spec{good(&k, "r1", "/a"), big} {
		body := build(t, sp)
		var wire [2]float64
		for i, ignore := range []bool{false, true} {
			bs := &bundleServer{}
			bs.Server = httptest.NewUnstartedServer(http.HandlerFunc(bs.serve))
			counted := &countingListener{Listener: bs.Listener}
			bs.Listener = counted
			bs.Start()
			t.Cleanup(bs.Close)
			bs.set(func(s *bundleServer) { s.body, s.ignoreETag = body, ignore })
			n := startNode(t, t.TempDir(), "", sourceConfig(bs.URL, &k))
			n.poll(t)
			first := counted.total()
			const polls = 10
			for range polls {
				n.poll(t)
			}
			_, bodyBytes := bs.counts()
			wire[i] = float64(counted.total()-first) / polls
			t.Logf("bundle %d bytes gzipped, ETag honoured %v: first poll %d bytes on the wire; then %.0f bytes per poll (%d body bytes in %d polls)",
				len(body), !ignore, first, wire[i], bodyBytes-len(body), polls)
			if !ignore && bodyBytes != len(body) {
				t.Errorf("with ETags, %d body bytes after the first poll, want 0", bodyBytes-len(body))
			}
			if ignore && bodyBytes != (polls+1)*len(body) {
				t.Errorf("without ETags, %d body bytes in %d polls, want the whole bundle each time", bodyBytes, polls+1)
			}
		}
		t.Logf("bundle %d bytes: an unchanged poll costs %.0f bytes with ETags, %.0f without (%.1fx)", len(body), wire[0], wire[1], wire[1]/wire[0])
	}
}

// countingListener counts the bytes of its connections, both ways.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &l.n}, nil
}

func (l *countingListener) total() int { return int(l.n.Load()) }

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func authztestCheck(path string) *authv3.CheckRequest { return authztest.DemoCheck(path) }

// A service back from an outage is asked with the active copy's ETag, so
// an unchanged bundle is a 304, not the whole bundle again. (OPA's
// downloader forgets its ETag on every error, and its client happens to
// keep sending the last one anyway; keepETag makes that meshid's rule
// rather than an accident of OPA's header handling.)
func TestOutageKeepsTheETag(t *testing.T) {
	k := newKey(t, "global")
	bs := newBundleServer(t)
	body := build(t, good(&k, "r1", "/a"))
	bs.set(func(s *bundleServer) { s.body = body })
	n := startNode(t, t.TempDir(), "", sourceConfig(bs.URL, &k))
	n.poll(t)
	etag := n.status(t).ETag
	if etag == "" {
		t.Fatalf("no ETag after the first download: %+v", n.status(t))
	}
	bs.set(func(s *bundleServer) { s.status = http.StatusServiceUnavailable })
	n.poll(t)
	if f := n.status(t).LastFailure; f == nil || f.Reason != ReasonDownload {
		t.Fatalf("last failure = %+v, want a download failure", f)
	}
	bs.set(func(s *bundleServer) { s.status = 0 })
	_, before := bs.counts()
	n.poll(t)
	reqs, after := bs.counts()
	if sent := bs.ifNoneMtch[reqs-1]; sent != etag || after != before {
		t.Errorf("poll after the outage sent If-None-Match %q (want %q) and got %d body bytes (want a 304, none)", sent, etag, after-before)
	}
	if !n.allows(t, "/a") {
		t.Error("r1 no longer enforced")
	}
}

// A bundle refused at compile because it needs what another bundle has
// not published yet (here a function of lib's next revision) is
// downloaded and tried again at the next poll: once lib's revision is
// out, it is in force. On a running node the last good stays until then;
// a node that starts so has no policy (every request denied) until then,
// and not for good. The refused bundle's ETag is never what the node
// asks with.
func TestCompileRefusedIsTriedAgain(t *testing.T) {
	const (
		libV1  = "package lib\n\nx := 1\n"
		libV2  = "package lib\n\nok(p) if p == \"/b\"\n"
		meshV2 = "package envoy.authz\n\nimport data.lib\n\ndefault allow := false\n\nallow if lib.ok(input.attributes.request.http.path)\n"
	)
	k := newKey(t, "global")
	lib := func(revision, src string) []byte {
		return build(t, spec{revision: revision, roots: []string{"lib"}, modules: map[string]string{"/lib/lib.rego": src}, signer: &k})
	}
	m2 := build(t, spec{revision: "m2", roots: []string{"envoy"}, modules: map[string]string{"/envoy/authz.rego": meshV2}, signer: &k})
	for _, running := range []bool{true, false} {
		t.Run(map[bool]string{true: "running node", false: "starting node"}[running], func(t *testing.T) {
			meshSrv, libSrv := newBundleServer(t), newBundleServer(t)
			meshSrv.set(func(s *bundleServer) { s.body = m2 })
			if running {
				meshSrv.set(func(s *bundleServer) { s.body = build(t, good(&k, "m1", "/a")) })
			}
			libSrv.set(func(s *bundleServer) { s.body = lib("l1", libV1) })
			libCfg := sourceConfig(libSrv.URL, &k)
			libCfg.Name, libCfg.Resource = "lib", "bundles/lib.tar.gz"
			n := startNode(t, t.TempDir(), "", sourceConfig(meshSrv.URL, &k), libCfg)
			n.poll(t)
			if running {
				if !n.allows(t, "/a") {
					t.Fatal("m1 not in force")
				}
				meshSrv.set(func(s *bundleServer) { s.body = m2 })
				n.poll(t)
			}
			st := n.mgr.Status()[0]
			if f := st.LastFailure; f == nil || f.Reason != ReasonCompile || !strings.Contains(f.Error, "lib.ok") {
				t.Fatalf("m2 with lib l1: last failure %+v, want refused at compile for lib.ok", f)
			}
			if running && !n.allows(t, "/a") {
				t.Error("m1 no longer in force after m2 was refused")
			}
			if !running && n.srv.Engine() != nil {
				t.Error("a policy in force with m2 refused and nothing kept")
			}
			refused := meshSrv.ifNoneMtch // what m2's download was asked with
			libSrv.set(func(s *bundleServer) { s.body = lib("l2", libV2) })
			n.poll(t) // mesh first: m2 again, still with l1; then l2
			n.poll(t) // m2 again, with l2
			if st := n.mgr.Status()[0]; st.Revision != "m2" || !n.allows(t, "/b") || n.allows(t, "/a") {
				t.Errorf("m2 not in force once lib l2 is: %+v", st)
			}
			sum := sha256.Sum256(m2)
			m2ETag := `"` + hex.EncodeToString(sum[:8]) + `"`
			for i, sent := range meshSrv.ifNoneMtch[len(refused):] {
				if sent == m2ETag {
					t.Errorf("poll %d after the refusal asked with the refused bundle's ETag: answered 304, never tried again", i+1)
				}
			}
		})
	}
}

// The same bundle published again gets a new ETag from a service such
// as nginx (whose ETag is the file's mtime and size). The node downloads
// it once, changes nothing, and from then on asks with the new ETag, and
// so does the node restarted from its data_dir: an unchanged bundle is a
// 304 again, not the whole bundle at every start and after every outage.
func TestSameBytesWithANewETag(t *testing.T) {
	k := newKey(t, "global")
	bs := newBundleServer(t)
	body := build(t, good(&k, "r1", "/a"))
	bs.set(func(s *bundleServer) { s.body, s.epoch = body, "1-" })
	data := t.TempDir()
	n := startNode(t, data, "", sourceConfig(bs.URL, &k))
	n.poll(t)
	first := n.status(t)
	engine := n.srv.Engine()
	bs.set(func(s *bundleServer) { s.epoch = "2-" })
	n.poll(t)
	st := n.status(t)
	if st.ETag == first.ETag || !strings.HasPrefix(st.ETag, `"2-`) {
		t.Fatalf("ETag after the republished bundle = %s, want the new one (was %s)", st.ETag, first.ETag)
	}
	if n.srv.Engine() != engine || !st.LastActivation.Equal(first.LastActivation) || st.LastFailure != nil {
		t.Errorf("the same bytes under a new ETag were activated again or failed: %+v", st)
	}
	var meta kept
	if b, err := os.ReadFile(filepath.Join(data, "bundles", "mesh", keptMeta)); err != nil || json.Unmarshal(b, &meta) != nil || meta.ETag != st.ETag || meta.Revision != "r1" {
		t.Errorf("bundle.json = %+v (%v), want ETag %s", meta, err, st.ETag)
	}

	restarted := startNode(t, data, "", sourceConfig(bs.URL, &k))
	restarted.mgr.LoadKept(context.Background())
	_, before := bs.counts()
	restarted.poll(t)
	reqs, after := bs.counts()
	if sent := bs.ifNoneMtch[reqs-1]; sent != st.ETag || after != before {
		t.Errorf("restarted node sent If-None-Match %q (want %q) and got %d body bytes (want a 304, none)", sent, st.ETag, after-before)
	}
	if !restarted.allows(t, "/a") {
		t.Error("restarted node does not enforce r1")
	}
}

// bundle.json's ETag is sent at start only for the tarball it was given
// for, and to the address it came from: a tarball left from before (its
// successor could not be written, a full disk) under a newer ETag, or a
// copy of another service's bundle, would otherwise be answered 304 and
// stay in force. The revision is no guide: bundles built without one all
// have "".
func TestKeptETagOnlyForItsTarballAndSource(t *testing.T) {
	k := newKey(t, "global")
	first, second := build(t, good(&k, "", "/a")), build(t, good(&k, "", "/b"))
	restart := func(t *testing.T, data, url string) (*node, string) {
		t.Helper()
		n := startNode(t, data, "", sourceConfig(url, &k))
		n.mgr.LoadKept(context.Background())
		return n, n.status(t).ETag
	}

	t.Run("another tarball", func(t *testing.T) {
		bs := newBundleServer(t)
		bs.set(func(s *bundleServer) { s.body, s.epoch = first, "1-" })
		data := t.TempDir()
		n := startNode(t, data, "", sourceConfig(bs.URL, &k))
		n.poll(t)
		bs.set(func(s *bundleServer) { s.body = second })
		n.poll(t)
		// As if writing the second bundle's tarball had failed: the first
		// one is still on disk. Then the second is published again.
		if err := os.WriteFile(filepath.Join(data, "bundles", "mesh", keptBundle), first, 0o600); err != nil {
			t.Fatal(err)
		}
		bs.set(func(s *bundleServer) { s.epoch = "2-" })
		n.poll(t)
		if st := n.status(t); !strings.HasPrefix(st.ETag, `"2-`) || !n.allows(t, "/b") {
			t.Fatalf("the second bundle under its new ETag: %+v", st)
		}
		restarted, etag := restart(t, data, bs.URL)
		if etag != "" {
			t.Errorf("restarted on the first tarball with ETag %s (the second's): it would be answered 304 and kept", etag)
		}
		restarted.poll(t)
		if !restarted.allows(t, "/b") || restarted.allows(t, "/a") {
			t.Errorf("restarted node does not enforce the second bundle after its first poll: %+v", restarted.status(t))
		}
	})

	t.Run("another address", func(t *testing.T) {
		old, moved := newBundleServer(t), newBundleServer(t)
		old.set(func(s *bundleServer) { s.body = first })
		moved.set(func(s *bundleServer) { s.body = second })
		data := t.TempDir()
		n := startNode(t, data, "", sourceConfig(old.URL, &k))
		n.poll(t)
		restarted, etag := restart(t, data, moved.URL)
		if etag != "" {
			t.Errorf("kept copy of %s: ETag %s sent to %s", old.URL, etag, moved.URL)
		}
		if !restarted.allows(t, "/a") {
			t.Error("the kept copy is not in force until the new address answers")
		}
		restarted.poll(t)
		if sent := moved.ifNoneMtch[0]; sent != noCopyETag && sent != "" {
			t.Errorf("first poll of the new address sent If-None-Match %q", sent)
		}
		if !restarted.allows(t, "/b") {
			t.Errorf("the new address's bundle not in force: %+v", restarted.status(t))
		}
		// The same address, written with a trailing slash, is the same.
		again, etag := restart(t, data, moved.URL+"/")
		if etag == "" || !again.allows(t, "/b") {
			t.Errorf("restart on the same address with a trailing slash: ETag %q, %+v", etag, again.status(t))
		}
	})
}

// A 304 that names the copy in force with another ETag (a proxy that
// weakens ETags, a service that renamed them) makes that ETag the one
// kept and sent.
func TestNotModifiedWithANewETag(t *testing.T) {
	k := newKey(t, "global")
	body := build(t, good(&k, "r1", "/a"))
	var mu sync.Mutex
	var sent []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sent = append(sent, r.Header.Get("If-None-Match"))
		mu.Unlock()
		switch r.Header.Get("If-None-Match") {
		case `"a"`, `W/"a"`:
			w.Header().Set("ETag", `W/"a"`)
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("ETag", `"a"`)
			_, _ = w.Write(body)
		}
	}))
	t.Cleanup(srv.Close)
	data := t.TempDir()
	n := startNode(t, data, "", sourceConfig(srv.URL, &k))
	n.poll(t)
	n.poll(t)
	if st := n.status(t); st.ETag != `W/"a"` {
		t.Errorf("ETag after the 304 = %s, want the one it named", st.ETag)
	}
	var meta kept
	if b, err := os.ReadFile(filepath.Join(data, "bundles", "mesh", keptMeta)); err != nil || json.Unmarshal(b, &meta) != nil || meta.ETag != `W/"a"` || meta.Downloaded.IsZero() {
		t.Errorf("bundle.json = %+v (%v)", meta, err)
	}
	restarted := startNode(t, data, "", sourceConfig(srv.URL, &k))
	restarted.mgr.LoadKept(context.Background())
	restarted.poll(t)
	mu.Lock()
	defer mu.Unlock()
	if last := sent[len(sent)-1]; last != `W/"a"` {
		t.Errorf("restarted node asked with %q", last)
	}
}

// A service that sends no ETag sends the whole bundle at every poll; the
// same bytes again are no change: the policy set in force (and with it
// the decision cache) stays, and no activation is logged. Other bytes are
// a new bundle, activated.
func TestSameBytesWithoutETagAreNoChange(t *testing.T) {
	k := newKey(t, "global")
	bs := newBundleServer(t)
	bs.set(func(s *bundleServer) { s.body, s.ignoreETag = build(t, good(&k, "r1", "/a")), true })
	n := startNode(t, t.TempDir(), "", sourceConfig(bs.URL, &k))
	n.poll(t)
	engine, activation := n.srv.Engine(), n.status(t).LastActivation
	if engine == nil {
		t.Fatalf("r1 not active: %+v", n.status(t))
	}
	for range 3 {
		n.poll(t)
	}
	if reqs, _ := bs.counts(); reqs != 4 {
		t.Fatalf("%d requests, want 4 polls", reqs)
	}
	if n.srv.Engine() != engine || !n.status(t).LastActivation.Equal(activation) {
		t.Errorf("the same bundle again was activated again (engine replaced: %v)", n.srv.Engine() != engine)
	}
	if st := n.status(t); !st.LastSuccess.After(activation) && !st.LastSuccess.Equal(activation) {
		t.Errorf("last success %v, want the polls counted as successes", st.LastSuccess)
	}
	bs.set(func(s *bundleServer) { s.body = build(t, good(&k, "r2", "/b")) })
	n.poll(t)
	if n.srv.Engine() == engine || n.status(t).Revision != "r2" || !n.allows(t, "/b") {
		t.Errorf("r2 not activated: %+v", n.status(t))
	}
}

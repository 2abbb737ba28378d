package bundles

import (
	"bytes"
	"compress/gzip"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/test/syncbuf"
)

// Every bad bundle, and every failing service, is refused with a precise
// error and counted; the last good bundle is still enforced and still the
// one kept on disk.
func TestBadBundlesKeepTheLastGood(t *testing.T) {
	k := newKey(t, "global")
	other := newKey(t, "global") // the same key id, another key
	otherID := newKey(t, "other")
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return buf.Bytes()
	}
	tests := []struct {
		name   string
		serve  func(s *bundleServer)
		reason string
		want   string
	}{
		{"not gzip", func(s *bundleServer) { s.body = []byte("<html>not a bundle</html>") }, ReasonVerify, "gzip"},
		{"gzip, not a tarball", func(s *bundleServer) {
			s.body = gz([]byte("just text, no tar headers at all, long enough to be read as one"))
		}, ReasonVerify, "bundle mesh from " /* any reader error, named */},
		{"overlapping roots", func(s *bundleServer) {
			sp := good(&k, "bad", "/x")
			sp.roots = []string{"envoy", "envoy/authz"}
			s.body = build(t, sp)
		}, ReasonVerify, "manifest has overlapped roots: 'envoy' and 'envoy/authz'"},
		{"signed with another key", func(s *bundleServer) { s.body = build(t, good(&other, "bad", "/x")) }, ReasonVerify, "verification error"},
		{"signed under another key id", func(s *bundleServer) { s.body = build(t, good(&otherID, "bad", "/x")) }, ReasonVerify, "verification error"}, // OPA verifies with the configured key whatever the signature names
		{"unsigned", func(s *bundleServer) { s.body = build(t, good(nil, "bad", "/x")) }, ReasonVerify, "bundle missing .signatures.json file"},
		{"too large", func(s *bundleServer) {
			sp := good(&k, "bad", "/x")
			sp.data = map[string]any{"envoy": map[string]any{"blob": strings.Repeat("x", 2<<20)}}
			s.body = build(t, sp)
		}, ReasonVerify, "exceeds"},
		{"500", func(s *bundleServer) { s.status = http.StatusInternalServerError }, ReasonDownload, "server replied with Internal Server Error"},
		{"404", func(s *bundleServer) { s.status = http.StatusNotFound }, ReasonDownload, "server replied with Not Found"},
		{"timeout", func(s *bundleServer) { s.stall = 3 * time.Second }, ReasonDownload, "timeout"},
		{"does not compile", func(s *bundleServer) {
			sp := good(&k, "bad", "/x")
			sp.modules["/envoy/authz.rego"] = "package envoy.authz\n\nallow if {\n\tx == 1\n}\n"
			s.body = build(t, sp)
		}, ReasonCompile, `revision "bad" refused: rego files of bundle mesh do not compile:` + "\nmesh:/envoy/authz.rego:4:2: rego_unsafe_var_error: var x is unsafe"},
		{"does not parse", func(s *bundleServer) {
			sp := good(&k, "bad", "/x")
			sp.modules["/envoy/authz.rego"] = "package envoy.authz\n\nallow if {{\n"
			s.body = build(t, sp)
		}, ReasonVerify, "rego_parse_error"},
		{"no decision rule", func(s *bundleServer) {
			sp := good(&k, "bad", "/x")
			sp.modules["/envoy/authz.rego"] = "package envoy.authz\n\npermit := true\n"
			s.body = build(t, sp)
		}, ReasonCompile, "decision data.envoy.authz.allow is not defined by any rule of bundle mesh"},
		{"module outside the roots", func(s *bundleServer) {
			sp := good(&k, "bad", "/x")
			sp.roots = []string{"other"}
			s.body = build(t, sp)
		}, ReasonVerify, "manifest roots [other] do not permit 'package envoy.authz'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := newBundleServer(t)
			goodBody := build(t, good(&k, "r1", "/a"))
			bs.set(func(s *bundleServer) { s.body = goodBody })
			data := t.TempDir()
			n := startNode(t, data, "", sourceConfig(bs.URL, &k))
			n.poll(t)
			if !n.status(t).Active {
				t.Fatalf("good bundle not active: %+v", n.status(t))
			}
			bs.set(tt.serve)
			n.poll(t)

			st := n.status(t)
			if f := st.LastFailure; f == nil || f.Reason != tt.reason || !strings.Contains(f.Error, tt.want) || !strings.Contains(f.Error, "bundle mesh") {
				t.Fatalf("last failure = %+v, want reason %s and an error naming the bundle, containing %q", st.LastFailure, tt.reason, tt.want)
			}
			if got := n.failures("mesh", tt.reason); got != 1 {
				t.Errorf("failures{reason=%s} = %v, want 1", tt.reason, got)
			}
			if !st.Active || st.Revision != "r1" || !n.allows(t, "/a") || n.allows(t, "/x") {
				t.Errorf("last good not kept in force: %+v", st)
			}
			if err := n.mgr.Ready(); err != nil {
				t.Errorf("a failure after activation made the node unready: %v", err)
			}
			if raw, err := os.ReadFile(filepath.Join(data, "bundles", "mesh", keptBundle)); err != nil || !bytes.Equal(raw, goodBody) {
				t.Errorf("kept bundle changed: %v", err)
			}
			t.Logf("%s: %s", tt.reason, st.LastFailure.Error)
		})
	}
}

// A signing scope in the config must be the signature's.
func TestSigningScope(t *testing.T) {
	k := newKey(t, "global")
	bs := newBundleServer(t)
	bs.set(func(s *bundleServer) { s.body = build(t, good(&k, "r1", "/a")) }) // no scope claim
	src := sourceConfig(bs.URL, &k)
	src.Signing.Scope = "mesh-write"
	n := startNode(t, t.TempDir(), "", src)
	n.poll(t)
	st := n.status(t)
	if st.Active || st.LastFailure == nil || st.LastFailure.Reason != ReasonVerify || !strings.Contains(st.LastFailure.Error, "scope") {
		t.Errorf("a signature without the configured scope: %+v %+v", st, st.LastFailure)
	}
}

// Until the first good bundle, nothing is enforced and /readyz says why.
func TestNothingEnforcedBeforeAGoodBundle(t *testing.T) {
	k := newKey(t, "global")
	bs := newBundleServer(t)
	bs.set(func(s *bundleServer) { s.body = build(t, good(nil, "unsigned", "/a")) })
	n := startNode(t, t.TempDir(), "", sourceConfig(bs.URL, &k))
	n.poll(t)
	if n.srv.Engine() != nil {
		t.Fatal("an unsigned bundle was put in force")
	}
	r := n.srv.Decide(t.Context(), authztestCheck("/a"))
	if r.Allowed || r.Err == nil {
		t.Errorf("decision without a policy: allowed %v, err %v; want a denial with an error", r.Allowed, r.Err)
	}
	err := n.mgr.Ready()
	if err == nil || !strings.Contains(err.Error(), "authz bundle mesh: not activated yet: verify: ") || !strings.Contains(err.Error(), ".signatures.json") {
		t.Errorf("Ready = %v", err)
	}
}

// Restarted with the service down, a node enforces the bundle it kept;
// with the service up, its first poll sends the kept ETag and gets a 304.
func TestRestartUsesKeptBundle(t *testing.T) {
	k := newKey(t, "global")
	bs := newBundleServer(t)
	bs.set(func(s *bundleServer) { s.body = build(t, good(&k, "r1", "/a")) })
	data := t.TempDir()
	first := startNode(t, data, "", sourceConfig(bs.URL, &k))
	first.poll(t)
	etag := first.status(t).ETag

	// The service up: one request, a 304.
	n := startNode(t, data, "", sourceConfig(bs.URL, &k))
	n.mgr.LoadKept(t.Context())
	if st := n.status(t); !st.Active || !st.FromDisk || st.Revision != "r1" || st.ETag != etag {
		t.Fatalf("status after start = %+v", st)
	}
	_, before := bs.counts()
	n.poll(t)
	reqs, after := bs.counts()
	if reqs != 2 || after != before || bs.ifNoneMtch[1] != etag {
		t.Errorf("first poll after restart: If-None-Match %q, %d body bytes: want the kept ETag %s and a 304", bs.ifNoneMtch[1], after-before, etag)
	}

	// The service down: the kept bundle is enforced.
	bs.Close()
	n = startNode(t, data, "", sourceConfig(bs.URL, &k))
	n.mgr.LoadKept(t.Context())
	n.poll(t)
	st := n.status(t)
	if !st.Active || !st.FromDisk || !n.allows(t, "/a") || n.allows(t, "/b") {
		t.Errorf("kept bundle not enforced with the service down: %+v", st)
	}
	if st.LastFailure == nil || st.LastFailure.Reason != ReasonDownload {
		t.Errorf("last failure = %+v, want the download", st.LastFailure)
	}
}

// A kept bundle that no longer verifies (altered, or the key changed) is
// refused at start: nothing is enforced until the service answers.
func TestKeptBundleRefusedAtStart(t *testing.T) {
	k := newKey(t, "global")
	tests := []struct {
		name   string
		alter  func(t *testing.T, path string)
		key    func() key
		reason string
		want   string
	}{
		{"tampered byte", func(t *testing.T, path string) {
			raw, _ := os.ReadFile(path)
			raw[len(raw)/2] ^= 0xff
			os.WriteFile(path, raw, 0o600)
		}, func() key { return k }, ReasonVerify, "refused (verified with the current signing settings)"},
		{"other policy, old signature", func(t *testing.T, path string) {
			// The signed files list of r1's signature with other content.
			sp := good(nil, "r1", "/evil")
			os.WriteFile(path, build(t, sp), 0o600)
		}, func() key { return k }, ReasonVerify, ".signatures.json"},
		{"key changed", func(*testing.T, string) {}, func() key { return newKey(t, "global") }, ReasonVerify, "verification error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs := newBundleServer(t)
			bs.set(func(s *bundleServer) { s.body = build(t, good(&k, "r1", "/a")) })
			data := t.TempDir()
			startNode(t, data, "", sourceConfig(bs.URL, &k)).poll(t)
			tt.alter(t, filepath.Join(data, "bundles", "mesh", keptBundle))
			bs.Close()

			nk := tt.key()
			n := startNode(t, data, "", sourceConfig(bs.URL, &nk))
			n.mgr.LoadKept(t.Context())
			st := n.status(t)
			if st.Active || n.srv.Engine() != nil {
				t.Fatalf("a kept bundle that does not verify was put in force: %+v", st)
			}
			if f := st.LastFailure; f == nil || f.Reason != tt.reason || !strings.Contains(f.Error, tt.want) || !strings.Contains(f.Error, keptBundle) {
				t.Errorf("last failure = %+v, want %s naming the file, containing %q", st.LastFailure, tt.reason, tt.want)
			}
		})
	}
}

// A service that stays down is logged once, not at every retry; after a
// success, the same failure is logged again.
func TestFailureLoggedOnceWhileItLasts(t *testing.T) {
	k := newKey(t, "global")
	bs := newBundleServer(t)
	bs.set(func(s *bundleServer) { s.status = http.StatusBadGateway })
	n := startNode(t, t.TempDir(), "", sourceConfig(bs.URL, &k))
	var logs syncbuf.Buffer
	for _, s := range n.mgr.sources {
		s.log = slog.New(slog.NewTextHandler(&logs, nil))
	}
	count := func() int { return strings.Count(logs.String(), "authz: bundle download failed") }
	for range 3 {
		n.poll(t)
	}
	if got := count(); got != 1 {
		t.Errorf("3 failed polls logged %d times, want once:\n%s", got, logs.String())
	}
	if got := n.failures("mesh", ReasonDownload); got != 3 {
		t.Errorf("failures = %v, want 3", got)
	}
	bs.set(func(s *bundleServer) { s.status, s.body = 0, build(t, good(&k, "r1", "/a")) })
	n.poll(t)
	bs.set(func(s *bundleServer) { s.status = http.StatusBadGateway })
	n.poll(t)
	if got := count(); got != 2 {
		t.Errorf("the failure after a success logged %d times in all, want 2", got)
	}
	// Back, with the bundle in force unchanged (a 304): said once.
	bs.set(func(s *bundleServer) { s.status = 0 })
	n.poll(t)
	n.poll(t)
	if got := strings.Count(logs.String(), "bundle service answers again"); got != 1 {
		t.Errorf("the end of the outage logged %d times, want once:\n%s", got, logs.String())
	}
}

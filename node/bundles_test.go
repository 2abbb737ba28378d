package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/test/authztest"
)

// signedBundle is a bundle allowing path, signed with priv (PEM) as key id.
func signedBundle(t *testing.T, revision, path, priv, id string) []byte {
	t.Helper()
	src := "package envoy.authz\n\ndefault allow := false\n\nallow if input.attributes.request.http.path == \"" + path + "\"\n"
	return signedBundleOf(t, revision, []string{"envoy"}, map[string]string{"/envoy/authz.rego": src}, map[string]any{}, priv, id)
}

// signedBundleOf is a bundle of modules and data under roots, signed.
func signedBundleOf(t *testing.T, revision string, roots []string, modules map[string]string, data map[string]any, priv, id string) []byte {
	t.Helper()
	b := bundle.Bundle{Manifest: bundle.Manifest{Revision: revision, Roots: &roots}, Data: data}
	for p, src := range modules {
		m, err := ast.ParseModuleWithOpts(p, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatal(err)
		}
		b.Modules = append(b.Modules, bundle.ModuleFile{Path: p, URL: p, Raw: []byte(src), Parsed: m})
	}
	if err := b.GenerateSignature(bundle.NewSigningConfig(priv, "RS256", ""), id, true); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).UseModulePath(true).DisableFormat(true).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestNodeBundles runs a node whose only policy is a signed bundle: until
// the bundle service answers, every request is denied and /readyz names
// the bundle; then its policy decides, /metrics and /status show its
// revision; a restart with the service gone decides with the kept copy.
func TestNodeBundles(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	pubFile := filepath.Join(t.TempDir(), "bundle.pub")
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	priv := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))

	var mu sync.Mutex
	var body []byte // nil: 503
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		b := body
		mu.Unlock()
		if r.URL.Path != "/bundles/mesh.tar.gz" || b == nil {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		w.Write(b)
	}))
	defer srv.Close()

	cfg := nodeConfig(t)
	cfg.Authz.PolicyDir = ""
	cfg.Authz.Bundles = []config.Bundle{{
		Name: "mesh", Service: config.Service{URL: srv.URL, Timeout: time.Second}, Resource: "bundles/mesh.tar.gz",
		Polling:        config.BundlePolling{MinDelay: time.Second, MaxDelay: time.Second},
		SizeLimitBytes: 1 << 20,
		Signing:        &config.BundleSigning{KeyID: "mesh", Algorithm: "RS256", PublicKeyFile: pubFile},
	}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	n, stop := startStoppable(t, cfg)

	admin := "http://" + n.adminLis.Addr().String()
	check := func(path string) bool {
		t.Helper()
		conn, err := grpc.NewClient(cfg.Authz.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		resp, err := authv3.NewAuthorizationClient(conn).Check(t.Context(), authztest.DemoCheck(path))
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetStatus().GetCode() == 0
	}
	waitReady := func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, _ := httpGet(t, http.DefaultClient, admin+"/readyz")
			if code == http.StatusOK {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("not ready 10s after the bundle was published")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	code, ready := httpGet(t, http.DefaultClient, admin+"/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(ready, "authz bundle mesh: not activated yet") {
		t.Errorf("/readyz before the bundle = %d %q", code, ready)
	}
	if check("/a") {
		t.Error("allowed with no bundle")
	}

	mu.Lock()
	body = signedBundle(t, "r1", "/a", priv, "mesh")
	mu.Unlock()
	published := time.Now()
	waitReady()
	t.Logf("bundle enforced %v after it was published (polling 1s)", time.Since(published).Round(time.Millisecond))
	if !check("/a") || check("/b") {
		t.Error("the bundle's policy does not decide")
	}
	_, metrics := httpGet(t, http.DefaultClient, admin+"/metrics")
	for _, want := range []string{`meshid_authz_bundle_active_revision_info{name="mesh",revision="r1"} 1`, `meshid_authz_bundle_failures_total{name="mesh",reason="download"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
	st := n.status()
	if len(st.Policy.Bundles) != 1 || st.Policy.Bundles[0].Revision != "r1" || !st.Policy.Bundles[0].Active {
		t.Errorf("status policy = %+v", st.Policy)
	}
	raw, _ := json.Marshal(st)
	if !strings.Contains(string(raw), `"bundles":[{"name":"mesh","url":"`+srv.URL+`","resource":"bundles/mesh.tar.gz","active":true,"revision":"r1"`) {
		t.Errorf("status JSON: %s", raw)
	}

	// Restarted with the bundle service gone: the kept copy decides
	// from the start.
	stop()
	srv.Close()
	n, _ = startStoppable(t, cfg)
	admin = "http://" + n.adminLis.Addr().String()
	if !check("/a") || check("/b") {
		t.Error("the kept bundle does not decide after a restart offline")
	}
	waitReady()
	if b := n.status().Policy.Bundles[0]; !b.FromDisk || b.Revision != "r1" {
		t.Errorf("bundle status after restart = %+v", b)
	}

	// meshid policy eval --config decides with the kept copy too.
	for path, want := range map[string]bool{"/a": true, "/b": false} {
		r, err := Decide(t.Context(), cfg, authztest.DemoCheck(path))
		if err != nil || r.Err != nil || r.Allowed != want {
			t.Errorf("Decide %s: %v %+v, want allowed %v", path, err, r, want)
		}
	}
	other := cfg
	other.DataDir = t.TempDir()
	if _, err := Decide(t.Context(), other, authztest.DemoCheck("/a")); err == nil || !strings.Contains(err.Error(), "authz.bundles: bundle mesh: no copy kept in") {
		t.Errorf("Decide without a kept copy = %v", err)
	}
}

// startStoppable is startNode with a stop the test calls (and Cleanup
// again, harmlessly).
func startStoppable(t *testing.T, cfg config.Config) (*Node, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n, err := New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run = %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return n, stop
}

// A bundle whose signing key file is missing stops the start before
// data_dir is written.
func TestNodeBundleKeyMissing(t *testing.T) {
	cfg := nodeConfig(t)
	cfg.Authz.PolicyDir = ""
	cfg.Authz.Bundles = []config.Bundle{{
		Name: "mesh", Service: config.Service{URL: "http://127.0.0.1:1", Timeout: time.Second}, Resource: "bundles/mesh",
		Polling: config.BundlePolling{MinDelay: time.Second, MaxDelay: time.Second}, SizeLimitBytes: 1 << 20,
		Signing: &config.BundleSigning{KeyID: "mesh", Algorithm: "RS256", PublicKeyFile: filepath.Join(t.TempDir(), "missing.pub")},
	}}
	_, err := New(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "authz.bundles[0] (mesh): signing: public_key_file: open ") {
		t.Fatalf("New = %v, want the missing key file named", err)
	}
	if _, err := os.Stat(cfg.DataDir); !os.IsNotExist(err) {
		t.Errorf("data_dir written before the start was refused: %v", err)
	}
}

// TestNodePolicyDirAndBundle: the policy dir decides with a bundle's data;
// an edit of the dir is compiled with the bundle, a new bundle with the
// dir.
func TestNodePolicyDirAndBundle(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	pubFile := filepath.Join(t.TempDir(), "bundle.pub")
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	priv := string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
	paths := func(rev string, ps ...string) []byte {
		return signedBundleOf(t, rev, []string{"lists"}, nil, map[string]any{"lists": map[string]any{"paths": ps}}, priv, "mesh")
	}
	var mu sync.Mutex
	body := paths("r1", "/a")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.Write(body)
	}))
	defer srv.Close()

	cfg := nodeConfig(t)
	cfg.Authz.PolicyDir = authztest.PolicyDir(t, map[string]string{"authz.rego": "package envoy.authz\n\ndefault allow := false\n\nallow if input.attributes.request.http.path in data.lists.paths\n"})
	cfg.Authz.ReloadInterval = time.Second
	cfg.Authz.Bundles = []config.Bundle{{
		Name: "lists", Service: config.Service{URL: srv.URL, Timeout: time.Second}, Resource: "lists.tar.gz",
		Polling: config.BundlePolling{MinDelay: time.Second, MaxDelay: time.Second}, SizeLimitBytes: 1 << 20,
		Signing: &config.BundleSigning{KeyID: "mesh", Algorithm: "RS256", PublicKeyFile: pubFile},
	}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	n, _ := startStoppable(t, cfg)
	allows := func(path string) bool {
		r := n.authz.srv.Decide(t.Context(), authztest.DemoCheck(path))
		return r.Err == nil && r.Allowed
	}
	eventually := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("not within 10s: %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	eventually("r1 decides", func() bool { return allows("/a") && !allows("/b") })

	mu.Lock()
	body = paths("r2", "/b")
	mu.Unlock()
	eventually("r2 decides with the dir", func() bool { return allows("/b") && !allows("/a") })

	// The dir edited: compiled with r2.
	path := filepath.Join(cfg.Authz.PolicyDir, "authz.rego")
	if err := os.WriteFile(path, []byte("package envoy.authz\n\ndefault allow := false\n\nallow if not input.attributes.request.http.path in data.lists.paths\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually("the edited dir decides with r2", func() bool { return allows("/a") && !allows("/b") })
	if p := n.authz.srv.Engine().Policy(); p.Bundles["lists"] != "r2" || p.Dir != cfg.Authz.PolicyDir {
		t.Errorf("policy set %s: bundles %v, dir %s", p.Revision, p.Bundles, p.Dir)
	}
}

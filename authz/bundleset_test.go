package authz_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/authz/decisionlog"
	"github.com/meshid/meshid/test/authztest"
)

// mkBundle is a verified bundle as the bundle reader hands it over.
func mkBundle(t *testing.T, name, revision string, roots []string, modules map[string]string, data map[string]any) authz.Bundle {
	t.Helper()
	b := &bundle.Bundle{Manifest: bundle.Manifest{Revision: revision}, Data: data}
	if roots != nil {
		b.Manifest.Roots = &roots
	}
	for p, src := range modules {
		m, err := ast.ParseModuleWithOpts(p, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatal(err)
		}
		b.Modules = append(b.Modules, bundle.ModuleFile{Path: p, RelativePath: p, Raw: []byte(src), Parsed: m})
	}
	return authz.Bundle{Name: name, Bundle: b}
}

const dirPolicy = "package envoy.authz\n\ndefault allow := false\n\nallow if data.mesh.open\n"

func allowsDemo(t *testing.T, srv *authz.Server) bool {
	t.Helper()
	r := srv.Decide(context.Background(), authztest.DemoCheck("/hello"))
	if r.Err != nil {
		t.Fatalf("decide: %v", r.Err)
	}
	return r.Allowed
}

// The policy dir and a bundle are one policy set; each source's change is
// compiled with the other's latest good.
func TestActivatorCombinesPolicyDirAndBundle(t *testing.T) {
	dir := writeFiles(t, map[string]string{"envoy/authz.rego": dirPolicy})
	srv := newServer(t, nil, authz.Options{})
	a, err := authz.NewActivator(srv, authz.Config{PolicyDir: dir}, []string{"mesh"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if srv.Engine() != nil || len(a.Pending()) != 1 {
		t.Fatalf("engine %v, pending %v before the bundle", srv.Engine(), a.Pending())
	}
	open := func(rev string, v bool) authz.Bundle {
		return mkBundle(t, "mesh", rev, []string{"mesh"}, nil, map[string]any{"mesh": map[string]any{"open": v}})
	}
	if err := a.Activate(t.Context(), open("r1", true)); err != nil {
		t.Fatal(err)
	}
	if !allowsDemo(t, srv) || srv.Engine().Policy().Bundles["mesh"] != "r1" || srv.Engine().Policy().Dir != dir {
		t.Fatalf("r1: policy %+v", srv.Engine().Policy())
	}
	if err := a.Activate(t.Context(), open("r2", false)); err != nil {
		t.Fatal(err)
	}
	if allowsDemo(t, srv) {
		t.Error("r2 (closed) not in force")
	}

	// A bundle whose root holds the policy dir's package is refused,
	// naming both; r2 stays.
	bad := mkBundle(t, "mesh", "r3", []string{"envoy"}, map[string]string{"/envoy/x.rego": "package envoy.x\n\ny := 1\n"}, nil)
	err = a.Activate(t.Context(), bad)
	want := `bundle "mesh" root "envoy" overlaps package envoy.authz of ` + filepath.Join(dir, "envoy/authz.rego")
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("overlapping bundle: %v, want %q", err, want)
	}
	if srv.Engine().Policy().Bundles["mesh"] != "r2" {
		t.Error("the refused bundle replaced the last good")
	}

	// The dir changes: compiled with r2. Then broken: refused, and a
	// bundle update still compiles with the last good dir.
	r := a.Reloader(0, nil)
	if err := os.WriteFile(filepath.Join(dir, "envoy/authz.rego"), []byte("package envoy.authz\n\ndefault allow := false\n\nallow if not data.mesh.open\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if !r.Check(t.Context()) || !allowsDemo(t, srv) || srv.Engine().Policy().Bundles["mesh"] != "r2" {
		t.Fatal("policy dir change not compiled with the bundle")
	}
	if err := os.WriteFile(filepath.Join(dir, "envoy/authz.rego"), []byte("package envoy.authz\n\nallow if {{\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r.Check(t.Context()) {
		t.Fatal("a broken policy dir was put in force")
	}
	if err := a.Activate(t.Context(), open("r4", true)); err != nil {
		t.Fatalf("bundle with the last good dir: %v", err)
	}
	if allowsDemo(t, srv) || srv.Engine().Policy().Bundles["mesh"] != "r4" {
		t.Error("r4 not compiled with the last good policy dir (allow if not open)")
	}
}

func TestBundleRoots(t *testing.T) {
	policy := map[string]string{"/envoy/authz.rego": "package envoy.authz\n\nallow := true\n"}
	tests := []struct {
		name    string
		dir     map[string]string // nil: no policy dir
		bundles []authz.Bundle
		want    string
	}{
		{"two bundles overlap", nil, []authz.Bundle{
			mkBundle(t, "a", "1", []string{"envoy"}, policy, nil),
			mkBundle(t, "b", "1", []string{"envoy/authz/extra"}, nil, nil),
		}, `bundles "a" and "b" have overlapping roots "envoy" and "envoy/authz/extra": a path of data belongs to one bundle only`},
		{"a rootless bundle overlaps every other", nil, []authz.Bundle{
			mkBundle(t, "a", "1", []string{"envoy"}, policy, nil),
			mkBundle(t, "b", "1", nil, nil, nil),
		}, `bundles "a" and "b" have overlapping roots "envoy" and ""`},
		{"a rootless bundle and a policy dir", map[string]string{"other/p.rego": "package other\n\nx := 1\n"}, []authz.Bundle{
			mkBundle(t, "a", "1", nil, policy, nil),
		}, `bundle "a" root "" overlaps package other of `},
		{"policy dir data under a root", map[string]string{"lists/data.json": `{"ips": []}`, "p.rego": "package other\n\nx := 1\n"}, []authz.Bundle{
			mkBundle(t, "a", "1", []string{"envoy", "lists/ips"}, policy, nil),
		}, `bundle "a" root "lists/ips" overlaps data.lists.ips of `},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := authz.Config{Bundles: tt.bundles}
			if tt.dir != nil {
				cfg.PolicyDir = writeFiles(t, tt.dir)
			}
			_, err := authz.NewEngine(t.Context(), cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewEngine = %v, want %q", err, tt.want)
			}
		})
	}
	// Roots apart: fine, with the data of both.
	cfg := authz.Config{Bundles: []authz.Bundle{
		mkBundle(t, "a", "1", []string{"envoy"}, map[string]string{"/envoy/authz.rego": "package envoy.authz\n\nallow if data.lists.open\n"}, nil),
		mkBundle(t, "b", "1", []string{"lists"}, nil, map[string]any{"lists": map[string]any{"open": true}}),
	}}
	e, err := authz.NewEngine(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := decide(t, e, authztest.DemoCheck("/hello")); err != nil || !ok {
		t.Errorf("two bundles: %v %v", ok, err)
	}
}

// A policy set with bundles keeps their files so that a decision can be
// replayed with them: the kept files are a policy dir plus .bundles/.
func TestBundlePolicySetReplays(t *testing.T) {
	dir := writeFiles(t, map[string]string{"envoy/authz.rego": dirPolicy})
	cfg := authz.Config{PolicyDir: dir, Bundles: []authz.Bundle{
		mkBundle(t, "mesh", "r1", []string{"mesh"}, map[string]string{"/mesh/helpers.rego": "package mesh\n\nopen := data.mesh.flags.open\n"}, map[string]any{"mesh": map[string]any{"flags": map[string]any{"open": true}}}),
	}}
	e, err := authz.NewEngine(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := e.Policy()
	// Kept as the decision log keeps revisions, and read back.
	store := decisionlog.NewRevisions(t.TempDir())
	if err := store.Keep(p, time.Now()); err != nil {
		t.Fatal(err)
	}
	k, err := store.Load(p.Revision)
	if err != nil {
		t.Fatal(err)
	}
	kept := k.FilesDir
	files := p.Files
	bundles, err := authz.LoadKeptBundles(kept, ast.RegoV1)
	if err != nil || len(bundles) != 1 || bundles[0].Name != "mesh" || bundles[0].Revision() != "r1" {
		t.Fatalf("kept bundles = %+v, %v (files %v)", bundles, err, len(files))
	}
	replay, err := authz.NewEngine(t.Context(), authz.Config{PolicyDir: kept, Bundles: bundles})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := decide(t, replay, authztest.DemoCheck("/hello")); err != nil || !ok {
		t.Errorf("replayed: %v %v", ok, err)
	}
	if replay.Policy().Revision != p.Revision {
		t.Errorf("replayed revision %s, want %s", replay.Policy().Revision, p.Revision)
	}
}

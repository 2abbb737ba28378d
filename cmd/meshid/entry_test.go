package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshid/meshid/attestor"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/node"
)

func TestEntryLint(t *testing.T) {
	dir := t.TempDir()
	entries := filepath.Join(dir, "entries.yaml")
	os.WriteFile(entries, []byte(`entries:
  - spiffe_id: spiffe://example.org/backend
    selectors: ["unix:uid:1101"]
  - spiffe_id: spiffe://example.org/any-envoy
    selectors: ["unix:path:/usr/local/bin/envoy"]
  - spiffe_id: spiffe://example.org/ops
    selectors: ["unix:gid:50"]
`), 0o644)
	clean := filepath.Join(dir, "clean.yaml")
	os.WriteFile(clean, []byte("entries:\n  - spiffe_id: spiffe://example.org/a\n    selectors: [\"unix:uid:1\"]\n"), 0o644)
	warnOnly := filepath.Join(dir, "warn.yaml")
	os.WriteFile(warnOnly, []byte("entries:\n  - spiffe_id: spiffe://example.org/a\n    selectors: [\"unix:gid:1\"]\n"), 0o644)

	tests := []struct {
		name    string
		args    []string
		wantErr bool
		want    []string
	}{
		{"errors fail the command", []string{"-entries", entries}, true, []string{
			entries + ":4: error [path-without-uid] spiffe://example.org/any-envoy:",
			entries + ":6: warning [group-only]",
			"1 errors, 1 warnings",
		}},
		{"a clean file", []string{"-entries", clean}, false, []string{"0 errors, 0 warnings"}},
		{"warnings alone pass", []string{"-entries", warnOnly}, false, []string{"0 errors, 1 warnings"}},
		{"json", []string{"-entries", entries, "-json"}, true, []string{`"check": "path-without-uid"`, `"errors": 1`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := dispatch(context.Background(), append([]string{"entry", "lint"}, tt.args...), &out, &errOut)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v\n%s", err, tt.wantErr, out.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if strings.HasSuffix(tt.name, "json") {
				var v struct{ Findings []identity.Finding }
				if err := json.Unmarshal(out.Bytes(), &v); err != nil || len(v.Findings) != 2 {
					t.Errorf("-json output %q: %v", out.String(), err)
				}
			}
		})
	}
	if err := dispatch(context.Background(), []string{"entry", "lint", "-entries", filepath.Join(dir, "nope.yaml")}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
		t.Error("linting a missing file succeeded")
	}
}

// TestEntryExplain runs the admin handler on a real socket with a real
// identity manager and asks it about this test process, as the CLI does.
func TestEntryExplain(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	authority, err := ca.Open(ca.Options{TrustDomain: td, Dir: t.TempDir(), TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	uid := strconv.Itoa(os.Geteuid())
	entries, err := identity.ParseEntries("entries.yaml", []byte(`entries:
  - spiffe_id: spiffe://example.org/me
    selectors: ["unix:uid:`+uid+`"]
  - spiffe_id: spiffe://example.org/someone-else
    selectors: ["unix:uid:`+uid+`", "unix:path:/nonexistent"]
`), td)
	if err != nil {
		t.Fatal(err)
	}
	att, _ := attestor.New(attestor.Options{})
	ids := identity.NewManager(identity.Options{Entries: entries, DefaultTTL: time.Hour, DefaultJWTTTL: time.Minute, Minter: authority, Attestor: att})

	admin := filepath.Join(t.TempDir(), "admin.sock")
	lis, err := net.Listen("unix", admin)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /explain", node.ExplainHandler(ids))
	srv := &http.Server{Handler: mux}
	go srv.Serve(lis)
	defer srv.Close()

	var out bytes.Buffer
	if err := dispatch(context.Background(), []string{"entry", "explain", "-admin-socket", admin, "-pid", strconv.Itoa(os.Getpid())}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{
		"pid " + strconv.Itoa(os.Getpid()) + " (uid " + uid,
		"  unix:uid:" + uid + "\n",
		"  match     spiffe://example.org/me (entries.yaml:2)",
		"  no match  spiffe://example.org/someone-else (entries.yaml:4): lacks unix:path:/nonexistent",
	} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out.String())
		}
	}
	t.Logf("meshid entry explain:\n%s", out.String())

	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-pid", "0"}, "-pid is required"},
		{[]string{"-pid", "2147483647"}, "explain: pid 2147483647 exited"},
	} {
		err := dispatch(context.Background(), append([]string{"entry", "explain", "-admin-socket", admin}, tt.args...), &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("explain %v = %v, want %q", tt.args, err, tt.want)
		}
	}
	srv.Close()
	if err := dispatch(context.Background(), []string{"entry", "explain", "-admin-socket", admin, "-pid", "1"}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "is it running") {
		t.Errorf("explain with no daemon = %v", err)
	}
}

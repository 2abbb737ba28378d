package main

import (
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/authz/bundles"
	"github.com/meshid/meshid/node"
)

// The text status names each bundle, its address, state, revision and
// last failure.
func TestPrintStatusBundles(t *testing.T) {
	now := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	st := node.Status{Time: now, Started: now.Add(-time.Hour), Policy: node.PolicyStatus{
		Revision: "5b1c0e9f6a2d4c38b7e1f0a9d3c2b1a0", Files: 3, RegoVersion: "v1",
		Bundles: []bundles.Status{
			{Name: "mesh", URL: "https://b.example:8443/", Resource: "bundles/mesh.tar.gz", Active: true, FromDisk: true, Revision: "42", ETag: `"5f3a"`,
				LastActivation: now.Add(-3 * time.Minute), LastFailure: &bundles.Failure{At: now.Add(-12 * time.Second), Reason: "download", Error: "server replied with Internal Server Error"}},
			{Name: "extra", URL: "https://b.example:8443", Resource: "bundles/extra"},
		},
	}}
	var b strings.Builder
	if err := printStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"policy revision 5b1c0e9f6a2d4c38b7e1f0a9d3c2b1a0 (3 files from 2 bundles, rego v1)\n",
		`  bundle mesh from https://b.example:8443/bundles/mesh.tar.gz: active, kept copy read at start, revision 42, etag "5f3a"` + "\n",
		"    last download -, activation 3m0s ago, success -\n",
		"    last failure  12s ago (download): server replied with Internal Server Error\n",
		"  bundle extra from https://b.example:8443/bundles/extra: NOT ACTIVE (every request is denied), revision -, etag -\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}

	st.Policy.Revision = ""
	b.Reset()
	if err := printStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	if want := "no policy in force: every request is denied until each bundle below has a copy\n"; !strings.Contains(b.String(), want) {
		t.Errorf("status output with no policy lacks %q:\n%s", want, b.String())
	}
}

package identity

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// sampleEntries is the kind of file lint is for: mostly fine, with the
// mistakes people make.
const sampleEntries = `entries:
  - spiffe_id: spiffe://example.org/ns/demo/sa/backend
    selectors: ["unix:uid:1101", "unix:path:/usr/local/bin/envoy"]
  - spiffe_id: spiffe://example.org/ns/demo/sa/frontend
    selectors: ["unix:uid:1102"]
  - spiffe_id: spiffe://example.org/ops
    selectors: ["unix:gid:50"]
  - spiffe_id: spiffe://example.org/any-envoy
    selectors: ["unix:path:/usr/local/bin/envoy"]
  - spiffe_id: spiffe://example.org/web
    selectors: ["docker:label:app:web"]
  - spiffe_id: spiffe://example.org/web-k8s
    selectors: ["k8s:pod-label:app:web"]
  - spiffe_id: spiffe://example.org/ns/demo/sa/backend-admin
    selectors: ["unix:uid:1101"]
  - spiffe_id: spiffe://example.org/ns/demo/sa/frontend
    selectors: ["unix:uid:1102", "unix:gid:1102"]
  - spiffe_id: spiffe://example.org/long
    selectors: ["unix:uid:1300"]
    x509_ttl: 48h
  - spiffe_id: spiffe://evil.org/x
    selectors: ["unix:uid:1400"]
  - spiffe_id: spiffe://example.org/k8s
    selectors: ["k8s:ns:prod", "k8s:sa:web"]
  - spiffe_id: spiffe://example.org/a
    selectors: ["unix:uid:1500", "unix:supplementary_gid:10"]
  - spiffe_id: spiffe://example.org/b
    selectors: ["unix:uid:1500", "unix:supplementary_gid:20"]
  - spiffe_id: spiffe://example.org/c
    selectors: ["unix:uid:1600"]
`

func TestLintFindsWhatOtherToolsDoNot(t *testing.T) {
	got := LintEntries("entries.yaml", []byte(sampleEntries), LintOptions{TrustDomain: td, CATTL: 24 * time.Hour, Types: []string{"unix", "docker"}})
	var lines []string
	for _, f := range got {
		lines = append(lines, fmt.Sprintf("%s %s %s", f.Source, f.Level, f.Check))
		t.Logf("%s: %s [%s] %s", f.Source, f.Level, f.Check, f.Message)
	}
	want := []string{
		"entries.yaml:6 warning group-only",
		"entries.yaml:8 error path-without-uid",
		"entries.yaml:8 warning subset", // any-envoy's selectors are within backend's
		"entries.yaml:10 error settable-by-anyone",
		"entries.yaml:12 error settable-by-anyone",
		"entries.yaml:12 error never-matches",
		"entries.yaml:14 warning subset",
		"entries.yaml:16 warning duplicate-id",
		"entries.yaml:18 error ttl-above-ca",
		"entries.yaml:21 error invalid",
		"entries.yaml:23 error never-matches",
		"entries.yaml:27 warning overlap",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if n := Errors(got); n != 7 {
		t.Errorf("Errors = %d, want 7", n)
	}
}

func TestLintCleanFile(t *testing.T) {
	clean := "entries:\n  - spiffe_id: spiffe://example.org/a\n    selectors: [\"unix:uid:1\"]\n  - spiffe_id: spiffe://example.org/b\n    selectors: [\"unix:uid:2\", \"unix:path:/bin/b\"]\n"
	if got := LintEntries("e.yaml", []byte(clean), LintOptions{TrustDomain: td, Types: []string{"unix"}}); len(got) != 0 {
		t.Fatalf("findings on a clean file: %+v", got)
	}
}

func TestLintTemplates(t *testing.T) {
	in := `entries:
  - spiffe_id_template: spiffe://example.org/ns/{k8s:ns}/sa/{k8s:sa}
  - spiffe_id: spiffe://example.org/ns/prod/sa/web
    selectors: ["k8s:ns:prod", "k8s:sa:web"]
  - spiffe_id_template: spiffe://example.org/compose/{docker:label:com.docker.compose.service}
  - spiffe_id_template: spiffe://example.org/mesh/{docker:label:com.docker.compose.service}
    selectors: ["unix:uid:101"]
  - spiffe_id_template: spiffe://example.org/uid/{unix:uid}
  - spiffe_id_template: spiffe://example.org/{k8s:ns}/{k8s:nope}
`
	got := LintEntries("entries.yaml", []byte(in), LintOptions{TrustDomain: td, Types: []string{"unix", "docker"}})
	var lines []string
	for _, f := range got {
		lines = append(lines, fmt.Sprintf("%s %s %s", f.Source, f.Level, f.Check))
		t.Logf("%s: %s [%s] %s", f.Source, f.Level, f.Check, f.Message)
	}
	want := []string{
		"entries.yaml:2 error never-matches", // k8s is not attested here
		"entries.yaml:3 error never-matches",
		"entries.yaml:3 warning duplicate-id", // the template can make it
		"entries.yaml:3 warning subset",       // and every caller of it gets both
		"entries.yaml:5 error settable-by-anyone",
		"entries.yaml:5 warning workload-chosen-segment",
		"entries.yaml:6 warning workload-chosen-segment",
		"entries.yaml:6 warning subset", // the uid template's callers include the mesh's
		"entries.yaml:8 warning subset",
		"entries.yaml:9 error invalid",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("findings:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	for _, f := range got {
		if f.Source == "entries.yaml:5" && f.Check == "workload-chosen-segment" && !strings.Contains(f.Message, "whoever starts the container") {
			t.Errorf("the trust implication is not said: %s", f.Message)
		}
	}
}

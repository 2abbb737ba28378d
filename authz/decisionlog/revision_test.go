package decisionlog_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/authz/decisionlog"
)

func policySet(dir, rego string) *decisionlog.PolicySet {
	return decisionlog.NewPolicySet(dir, "v1", map[string][]byte{
		"envoy/authz.rego": []byte(rego),
		"data.json":        []byte(`{"methods": ["GET"]}`),
	})
}

// TestPolicySetRevision: the revision is a hash of the files and the
// Rego version, whatever the dir they were read from.
func TestPolicySetRevision(t *testing.T) {
	a := policySet("/etc/a", "package p\nallow := true\n")
	tests := []struct {
		name string
		p    *decisionlog.PolicySet
		same bool
	}{
		{"same files elsewhere", policySet("/etc/b", "package p\nallow := true\n"), true},
		{"one byte changed", policySet("/etc/a", "package p\nallow := false\n"), false},
		{"other rego version", decisionlog.NewPolicySet("/etc/a", "v0", a.Files), false},
		{"a file renamed", decisionlog.NewPolicySet("/etc/a", "v1", map[string][]byte{"envoy/other.rego": a.Files["envoy/authz.rego"], "data.json": a.Files["data.json"]}), false},
	}
	for _, tt := range tests {
		if got := tt.p.Revision == a.Revision; got != tt.same || len(tt.p.Revision) != 32 {
			t.Errorf("%s: revision %s vs %s, same = %v, want %v", tt.name, tt.p.Revision, a.Revision, got, tt.same)
		}
	}
}

// TestRevisionsKeep: a kept revision holds the files as they were, 0600
// in 0700 directories, says where they came from, and when it was last
// logged; a revision never kept is ErrRevisionNotKept.
func TestRevisionsKeep(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "policies")
	revs := decisionlog.NewRevisions(dir)
	p := policySet("/etc/meshid/policies", "package envoy.authz\nallow := true\n")
	first := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	if err := revs.Keep(p, first); err != nil {
		t.Fatal(err)
	}
	if err := revs.Keep(p, first.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	k, err := revs.Load(p.Revision)
	if err != nil {
		t.Fatal(err)
	}
	if k.PolicyDir != "/etc/meshid/policies" || k.RegoVersion != "v1" || !k.LastLogged.Equal(first.Add(time.Hour)) {
		t.Errorf("kept %+v", k)
	}
	for name, want := range p.Files {
		path := filepath.Join(k.FilesDir, filepath.FromSlash(name))
		got, err := os.ReadFile(path)
		if err != nil || string(got) != string(want) {
			t.Errorf("%s = %q, %v; want %q", name, got, err, want)
		}
	}
	err = filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		want := os.FileMode(0o600)
		if info.IsDir() {
			want = 0o700 | os.ModeDir
		}
		if info.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, info.Mode(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	other := policySet("/etc/meshid/policies", "package envoy.authz\nallow := false\n")
	if _, err := revs.Load(other.Revision); !errors.Is(err, decisionlog.ErrRevisionNotKept) || !strings.Contains(err.Error(), dir) {
		t.Errorf("Load of a revision never kept: %v; want ErrRevisionNotKept naming %s", err, dir)
	}
	if _, err := revs.Load("../../etc"); err == nil || errors.Is(err, decisionlog.ErrRevisionNotKept) {
		t.Errorf("Load of a path: %v; want it refused as not a revision", err)
	}
}

// TestRevisionsPrune: Prune removes the revisions last logged before the
// time given, and what a stopped meshid left half-written; PruneTo keeps
// the ones logged last.
func TestRevisionsPrune(t *testing.T) {
	revs := decisionlog.NewRevisions(t.TempDir())
	t0 := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	var ps []*decisionlog.PolicySet
	for i, rego := range []string{"package a\n", "package b\n", "package c\n"} {
		p := policySet("/p", rego)
		if err := revs.Keep(p, t0.Add(time.Duration(i)*time.Hour)); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	half := filepath.Join(revs.Dir(), ".new-"+ps[0].Revision+"-0123")
	if err := os.MkdirAll(half, 0o700); err != nil {
		t.Fatal(err)
	}
	removed, err := revs.Prune(t0.Add(30 * time.Minute))
	if err != nil || len(removed) != 1 || removed[0] != ps[0].Revision {
		t.Errorf("Prune = %v, %v; want only %s", removed, err, ps[0].Revision)
	}
	if _, err := os.Stat(half); !os.IsNotExist(err) {
		t.Errorf("half-written revision left: %v", err)
	}
	removed, err = revs.PruneTo(1)
	if err != nil || len(removed) != 1 || removed[0] != ps[1].Revision {
		t.Errorf("PruneTo(1) = %v, %v; want only %s", removed, err, ps[1].Revision)
	}
	if _, err := revs.Load(ps[2].Revision); err != nil {
		t.Errorf("the revision logged last was removed: %v", err)
	}
}

// TestLogKeepsAndPrunesRevisions: the log keeps the revision of every line
// it writes, and once rotation has taken the last line of a revision out
// of the kept files, that revision goes too.
func TestLogKeepsAndPrunesRevisions(t *testing.T) {
	dir := t.TempDir()
	revs := decisionlog.NewRevisions(filepath.Join(dir, "policies"))
	path := filepath.Join(dir, "decisions.jsonl")
	old, current := policySet("/p", "package old\n"), policySet("/p", "package current\n")
	run := func(p *decisionlog.PolicySet, n int) {
		t.Helper()
		f, err := decisionlog.OpenFile(path, decisionlog.FileOptions{MaxBytes: 1000, MaxFiles: 1})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		d := decisionlog.New(decisionlog.Options{Revisions: revs, QueueSize: n})
		for range n {
			d.Add(&decisionlog.Record{ID: decisionlog.NewID(time.Now()), Time: time.Now(), Path: "data.p.allow", Policy: p, Allowed: true})
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := d.Run(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	run(old, 3)
	if _, err := revs.Load(old.Revision); err != nil {
		t.Fatalf("a logged revision is not kept: %v", err)
	}
	time.Sleep(2 * time.Millisecond) // the next lines are stamped after old was last logged
	// Each line is about 190 bytes: 20 of them fill the file and its one
	// rotated file twice over, leaving no line of old.
	run(current, 20)
	for _, p := range []string{path, path + ".1"} {
		if b, err := os.ReadFile(p); err != nil || strings.Contains(string(b), old.Revision) {
			t.Fatalf("%s still refers to the old revision (%v): the test's sizes are off", p, err)
		}
	}
	if _, err := revs.Load(old.Revision); !errors.Is(err, decisionlog.ErrRevisionNotKept) {
		t.Errorf("revision no kept file refers to: Load = %v, want it pruned", err)
	}
	if _, err := revs.Load(current.Revision); err != nil {
		t.Errorf("the revision of the kept lines: %v", err)
	}
}

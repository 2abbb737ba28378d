package decisionlog_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/authz/decisionlog"
)

// TestID: a decision id is a version 7 UUID that says when it was made.
func TestID(t *testing.T) {
	at := time.Date(2026, 12, 1, 23, 50, 1, 123456789, time.UTC)
	id := decisionlog.NewID(at)
	if !decisionlog.ValidID(id) || id[14] != '7' {
		t.Fatalf("NewID = %q: want a version 7 UUID", id)
	}
	if got, ok := decisionlog.IDTime(id); !ok || !got.Equal(at.Truncate(time.Millisecond)) {
		t.Errorf("IDTime(%s) = %v, %v; want %v", id, got, ok, at.Truncate(time.Millisecond))
	}
	if id2 := decisionlog.NewID(at); id2 == id {
		t.Errorf("two ids made at once are the same: %s", id)
	}
	for _, s := range []string{"3c9f5a52-5f5a-4d1e-9d2a-0c3f7e9b8a61", "not-an-id", strings.ToUpper(id)} {
		if _, ok := decisionlog.IDTime(s); ok {
			t.Errorf("IDTime(%q) found a time", s)
		}
	}
	if decisionlog.ValidID("0193a9c2-7f1e-7b3d-9c1a-4e2f6d8b0a1") || decisionlog.ValidID("0193a9c2x7f1e-7b3d-9c1a-4e2f6d8b0a17") {
		t.Error("ValidID took a malformed id")
	}
}

// TestFind: a decision is found in the log or a rotated file; one that is
// not says whether it was rotated away or never logged, from its id.
func TestFind(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	f, err := decisionlog.OpenFile(path, decisionlog.FileOptions{MaxBytes: 1000, MaxFiles: 1})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d := decisionlog.New(decisionlog.Options{QueueSize: 20})
	var ids []string
	for i := range 20 {
		at := start.Add(time.Duration(i) * time.Second)
		ids = append(ids, decisionlog.NewID(at))
		d.Add(&decisionlog.Record{ID: ids[i], Time: at, Path: "data.p.allow", Allowed: i%2 == 0})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Run(ctx, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	oldest := readLines(t, path+".1")[0]
	newest := ids[19]
	oldestAt, _ := decisionlog.IDTime(oldest)

	for _, id := range []string{newest, oldest} {
		l, err := decisionlog.Find(path, 1, id)
		if err != nil {
			t.Fatalf("Find(%s): %v", id, err)
		}
		if l.DecisionID != id || l.Path != "data.p.allow" || l.Number < 1 {
			t.Errorf("Find(%s) = %+v", id, l)
		}
	}
	if l, _ := decisionlog.Find(path, 1, oldest); l.File != path+".1" {
		t.Errorf("the oldest kept decision found in %s, want %s.1", l.File, path)
	}

	tests := []struct {
		name string
		id   string
		want error
		says string
	}{
		{"rotated away", ids[0], decisionlog.ErrRotatedAway, "before the oldest line kept"},
		{"never logged", decisionlog.NewID(oldestAt.Add(500 * time.Millisecond)), decisionlog.ErrUnknownDecision, "it was not logged: sampled out"},
		{"not meshid's", "3c9f5a52-5f5a-4d1e-9d2a-0c3f7e9b8a61", decisionlog.ErrUnknownDecision, "whether it was rotated away cannot be told"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decisionlog.Find(path, 1, tt.id)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.says) || !strings.Contains(err.Error(), tt.id) {
				t.Errorf("Find: %v; want %v saying %q and naming the id", err, tt.want, tt.says)
			}
		})
	}
	if _, err := decisionlog.Find(filepath.Join(filepath.Dir(path), "nope.jsonl"), 1, newest); err == nil || !strings.Contains(err.Error(), "nope.jsonl") {
		t.Errorf("Find in a missing log: %v", err)
	}
}

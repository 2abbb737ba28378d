package decisionlog_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshid/meshid/authz/decisionlog"
)

// readLines reads the decision ids of a decision log file, checking that
// every line is whole JSON; a missing file has none.
func readLines(t *testing.T, path string) []string {
	t.Helper()
	bs, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) > 0 && bs[len(bs)-1] != '\n' {
		t.Errorf("%s does not end with a whole line", path)
	}
	var ids []string
	sc := bufio.NewScanner(bytes.NewReader(bs))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct {
			ID string `json:"decision_id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil || line.ID == "" {
			t.Fatalf("%s: line %q is not a decision: %v", filepath.Base(path), sc.Text(), err)
		}
		ids = append(ids, line.ID)
	}
	return ids
}

// logDecisions writes n decisions through a Log into f and returns their
// ids in order.
func logDecisions(t *testing.T, f *decisionlog.File, n int) []string {
	t.Helper()
	var ids []string
	var rs []*decisionlog.Record
	for i := range n {
		ids = append(ids, fmt.Sprintf("decision-%04d", i))
		rs = append(rs, &decisionlog.Record{ID: ids[i], Path: "data.envoy.authz.allow", Input: requestInput(t, map[string]string{":path": "/hello"}, "", nil), Allowed: true})
	}
	if lines := written(t, decisionlog.Options{QueueSize: n}, f, rs...); len(lines) != n {
		t.Fatalf("%d of %d decisions written", len(lines), n)
	}
	return ids
}

// TestFileRotates: past MaxBytes the file is rotated to .1, .2, ...;
// MaxFiles of them are kept, each holds whole lines within MaxBytes, and
// together with the live file they hold the latest decisions in order,
// none lost.
func TestFileRotates(t *testing.T) {
	for _, keep := range []int{3, 1000} {
		t.Run(fmt.Sprintf("keep %d", keep), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "decisions.jsonl")
			f, err := decisionlog.OpenFile(path, decisionlog.FileOptions{MaxBytes: 4096, MaxFiles: keep})
			if err != nil {
				t.Fatal(err)
			}
			ids := logDecisions(t, f, 200)
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}

			var kept []string
			files := 0
			for i := keep + 1; i >= 0; i-- {
				name := path
				if i > 0 {
					name = fmt.Sprintf("%s.%d", path, i)
				}
				info, err := os.Stat(name)
				if i == keep+1 {
					if err == nil {
						t.Errorf("%s exists: more than %d rotated files kept", filepath.Base(name), keep)
					}
					continue
				}
				if os.IsNotExist(err) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				files++
				if info.Size() > 4096 {
					t.Errorf("%s is %d bytes, more than MaxBytes", filepath.Base(name), info.Size())
				}
				kept = append(kept, readLines(t, name)...)
			}
			if keep == 3 && files != 4 {
				t.Errorf("%d files, want the live one and 3 rotated", files)
			}
			if len(kept) == 0 || len(kept) > len(ids) || strings.Join(kept, ",") != strings.Join(ids[len(ids)-len(kept):], ",") {
				t.Fatalf("the files hold %d decisions, not the latest %d in order", len(kept), len(kept))
			}
			if keep == 1000 && len(kept) != len(ids) {
				t.Errorf("kept %d of %d decisions with room for all", len(kept), len(ids))
			}
		})
	}
}

// TestFileLongLine: a line longer than MaxBytes gets a file of its own,
// whole; an existing file is appended to and counts towards MaxBytes.
func TestFileLongLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	if err := os.WriteFile(path, []byte("old\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	f, err := decisionlog.OpenFile(path, decisionlog.FileOptions{MaxBytes: 10, MaxFiles: 5})
	if err != nil {
		t.Fatal(err)
	}
	for _, batch := range []string{"abc\n", strings.Repeat("x", 25) + "\nshort\n", "a\nb\n"} {
		if n, err := f.Write([]byte(batch)); err != nil || n != len(batch) {
			t.Fatalf("Write(%q) = %d, %v", batch, n, err)
		}
	}
	f.Close()
	// "short" filled the file that followed the long line to exactly
	// MaxBytes with "a" and "b".
	want := map[string]string{"": "short\na\nb\n", ".1": strings.Repeat("x", 25) + "\n", ".2": "old\nabc\n"}
	for suffix, content := range want {
		if got, err := os.ReadFile(path + suffix); err != nil || string(got) != content {
			t.Errorf("decisions.jsonl%s = %q (%v), want %q", suffix, got, err, content)
		}
	}
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Error("decisions.jsonl.3 exists: a file was rotated that did not need to be")
	}
}

// TestFileCannotRotate: when a rename fails, the lines go on into the
// file as it is, and the failure is logged once.
func TestFileCannotRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.jsonl")
	// A directory where the rotated file should go: rename refuses.
	if err := os.Mkdir(path+".1", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(path+".1", "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	f, err := decisionlog.OpenFile(path, decisionlog.FileOptions{MaxBytes: 1024, MaxFiles: 1, Log: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ids := logDecisions(t, f, 20)
	f.Close()
	if got := readLines(t, path); strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Errorf("decisions.jsonl holds %d of %d decisions", len(got), len(ids))
	}
	if n := strings.Count(logged.String(), "cannot rotate the decision log"); n != 1 {
		t.Errorf("logged the failure %d times, want once:\n%s", n, logged.String())
	}
}

func TestOpenFileRefuses(t *testing.T) {
	dir := t.TempDir()
	if _, err := decisionlog.OpenFile(filepath.Join(dir, "a.jsonl"), decisionlog.FileOptions{MaxBytes: 100}); err == nil {
		t.Error("rotating with no file to keep: accepted")
	}
	if _, err := decisionlog.OpenFile(filepath.Join(dir, "missing", "a.jsonl"), decisionlog.FileOptions{}); err == nil {
		t.Error("a file in a directory that does not exist: accepted")
	}
}

package attestor

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestUnixAttestFromFakeProcfs(t *testing.T) {
	proc := t.TempDir()
	os.MkdirAll(filepath.Join(proc, "42"), 0o755)
	if err := os.Symlink("/usr/local/bin/envoy", filepath.Join(proc, "42", "exe")); err != nil {
		t.Fatal(err)
	}
	got, err := Unix{ProcDir: proc}.Attest(context.Background(), Caller{PID: 42, UID: 1001, GID: 1002})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"unix:uid:1001", "unix:gid:1002", "unix:path:/usr/local/bin/envoy"}
	if s := selectorStrings(got); !slices.Equal(s, want) {
		t.Fatalf("selectors = %v, want %v", s, want)
	}

	if _, err := (Unix{ProcDir: proc}).Attest(context.Background(), Caller{PID: 43}); err == nil || !strings.Contains(err.Error(), "process is gone") {
		t.Fatalf("attesting a vanished pid: err = %v", err)
	}
}

func TestUnixAttestSelf(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unix{}.Attest(context.Background(), Caller{PID: int32(os.Getpid()), UID: uint32(os.Getuid()), GID: uint32(os.Getgid())})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(selectorStrings(got), "unix:path:"+exe) {
		t.Fatalf("selectors %v lack unix:path:%s", got, exe)
	}
}

func selectorStrings(sels []Selector) []string {
	out := make([]string, len(sels))
	for i, s := range sels {
		out[i] = s.String()
	}
	return out
}

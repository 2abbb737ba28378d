package attestor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeProc is one process in a fake procfs, written as the kernel would.
type fakeProc struct {
	pid      int32
	start    uint64
	uid, gid uint32
	groups   []uint32
	exe      string // symlink target; empty: no exe link
	cgroup   string // contents of /proc/PID/cgroup
}

// write puts the process into the fake procfs at dir, replacing what was
// there for its pid.
func (f fakeProc) write(t *testing.T, dir string) {
	t.Helper()
	pd := filepath.Join(dir, fmt.Sprint(f.pid))
	os.RemoveAll(pd)
	if err := os.MkdirAll(pd, 0o755); err != nil {
		t.Fatal(err)
	}
	// A command name with spaces and a ")" must not shift the fields.
	stat := fmt.Sprintf("%d (my (evil) cmd) S 1 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 %d 1000 10 18446744073709551615\n", f.pid, f.start)
	groups := make([]string, len(f.groups))
	for i, g := range f.groups {
		groups[i] = fmt.Sprint(g)
	}
	status := fmt.Sprintf("Name:\tcmd\nUid:\t%d\t%d\t%d\t%d\nGid:\t%d\t%d\t%d\t%d\nGroups:\t%s\n",
		f.uid, f.uid, f.uid, f.uid, f.gid, f.gid, f.gid, f.gid, strings.Join(groups, " "))
	for name, body := range map[string]string{"stat": stat, "status": status, "cgroup": f.cgroup} {
		if err := os.WriteFile(filepath.Join(pd, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if f.exe != "" {
		if err := os.Symlink(f.exe, filepath.Join(pd, "exe")); err != nil {
			t.Fatal(err)
		}
	}
}

func (f fakeProc) caller() Caller { return Caller{PID: f.pid, UID: f.uid, GID: f.gid} }

func selectorStrings(sels []Selector) []string {
	out := make([]string, len(sels))
	for i, s := range sels {
		out[i] = s.String()
	}
	return out
}

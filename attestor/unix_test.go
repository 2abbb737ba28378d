package attestor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestUnixSelectorsFromAFakeProcfs(t *testing.T) {
	proc := t.TempDir()
	exe := filepath.Join(t.TempDir(), "envoy")
	if err := os.WriteFile(exe, []byte("pretend ELF"), 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("pretend ELF"))
	tests := []struct {
		name    string
		proc    fakeProc
		sha     bool
		want    []string
		without []string
	}{
		{
			name: "root with names, groups, path and digest",
			proc: fakeProc{pid: 42, start: 9, uid: 0, gid: 0, groups: []uint32{10, 20}, exe: exe},
			sha:  true,
			want: []string{"unix:uid:0", "unix:gid:0", "unix:user:root", "unix:group:root",
				"unix:supplementary_gid:10", "unix:supplementary_gid:20", "unix:path:" + exe, "unix:sha256:" + hex.EncodeToString(sum[:])},
		},
		{
			name:    "a uid without a name and sha256 off",
			proc:    fakeProc{pid: 43, start: 9, uid: 4242, gid: 4343, exe: exe},
			want:    []string{"unix:uid:4242", "unix:gid:4343", "unix:path:" + exe},
			without: []string{"unix:user:", "unix:group:", "unix:sha256:", "unix:supplementary_gid:"},
		},
		{
			// meshid may not read another user's exe link: no path, no
			// digest, and entries that need them do not match.
			name:    "unreadable executable",
			proc:    fakeProc{pid: 44, start: 9, uid: 4242, gid: 4343, exe: "/nonexistent/envoy"},
			sha:     true,
			want:    []string{"unix:uid:4242", "unix:path:/nonexistent/envoy"},
			without: []string{"unix:sha256:"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.proc.write(t, proc)
			a, err := New(Options{ProcDir: proc, SHA256: tt.sha})
			if err != nil {
				t.Fatal(err)
			}
			got, err := a.Attest(context.Background(), tt.proc.caller())
			if err != nil {
				t.Fatal(err)
			}
			s := selectorStrings(got)
			for _, w := range tt.want {
				if !slices.Contains(s, w) {
					t.Errorf("selectors %v lack %s", s, w)
				}
			}
			for _, w := range tt.without {
				if slices.ContainsFunc(s, func(x string) bool { return len(x) >= len(w) && x[:len(w)] == w }) {
					t.Errorf("selectors %v hold a %s selector", s, w)
				}
			}
		})
	}
}

func TestSHA256IsReadOncePerFileVersion(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "app")
	os.WriteFile(exe, []byte("v1"), 0o755)
	h := &hashCache{sums: map[fileVersion]string{}}
	first, err := h.sum(exe)
	if err != nil {
		t.Fatal(err)
	}
	// Same inode, size and mtime: the cache answers, even though the bytes
	// changed behind its back (which a running executable's cannot).
	fi, _ := os.Stat(exe)
	os.WriteFile(exe, []byte("v2"), 0o755)
	os.Chtimes(exe, fi.ModTime(), fi.ModTime())
	if again, _ := h.sum(exe); again != first {
		t.Fatalf("cached digest not used: %s then %s", first, again)
	}
	// A new modification time is a new version.
	os.Chtimes(exe, fi.ModTime().Add(time.Second), fi.ModTime().Add(time.Second))
	v2 := sha256.Sum256([]byte("v2"))
	if got, _ := h.sum(exe); got != hex.EncodeToString(v2[:]) {
		t.Fatalf("digest after a change = %s, want %x", got, v2)
	}
}

func TestUnixAttestSelf(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	a, _ := New(Options{SHA256: true})
	got, err := a.Attest(context.Background(), Caller{PID: int32(os.Getpid()), UID: uint32(os.Geteuid()), GID: uint32(os.Getegid())})
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.ReadFile(exe)
	sum := sha256.Sum256(self)
	for _, want := range []string{"unix:path:" + exe, "unix:sha256:" + hex.EncodeToString(sum[:])} {
		if !slices.Contains(selectorStrings(got), want) {
			t.Errorf("selectors %v lack %s", got, want)
		}
	}
}

package harness

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTmpfsFills: a full Tmpfs refuses the smallest write until the filler
// goes, and Close unmounts it and removes the world dir.
func TestTmpfsFills(t *testing.T) {
	e := ForTest(t)
	w, err := New(t.Context(), Options{Logf: t.Logf, ParentDir: e.Dir})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := w.Tmpfs(256<<10, "data")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("tmpfs root: %v %v, want mode 0700", fi.Mode(), err)
	}
	if !mounted(t, dir) {
		t.Fatalf("%s is not a mount point", dir)
	}
	filler, n, err := Fill(dir, "filler")
	if err != nil {
		t.Fatal(err)
	}
	if n < 200<<10 || n > 256<<10 {
		t.Errorf("Fill wrote %d bytes into a 256 KiB tmpfs", n)
	}
	if err := os.WriteFile(filepath.Join(dir, "one-byte"), []byte("x"), 0o600); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("a 1-byte write into the full tmpfs: %v, want ENOSPC", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "after"), []byte("x"), 0o600); err != nil {
		t.Fatalf("write after removing the filler: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if mounted(t, dir) {
		t.Errorf("%s still mounted after Close", dir)
	}
	if _, err := os.Stat(w.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("world dir after Close: %v, want it removed", err)
	}
}

// TestSetImmutable: not even root may create a file in an immutable
// directory; Close clears the attribute and removes the world dir.
func TestSetImmutable(t *testing.T) {
	e := ForTest(t)
	w, err := New(t.Context(), Options{Logf: t.Logf, ParentDir: e.Dir})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := w.MkdirAll("ca")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SetImmutable(dir, true); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "next"), 0o700); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("mkdir in an immutable directory as uid %d: %v, want EPERM", os.Geteuid(), err)
	}
	if err := w.SetImmutable(dir, false); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "next"), 0o700); err != nil {
		t.Fatalf("mkdir once the attribute is cleared: %v", err)
	}
	if err := w.SetImmutable(dir, true); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(w.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("world dir after Close: %v, want it removed", err)
	}
}

// TestSeedCA: the seeded generation carries the past it was made in, and
// lives in the data dir StartMeshid will use.
func TestSeedCA(t *testing.T) {
	e := ForTest(t)
	data, err := e.MeshidDataDir("meshid")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(e.Dir, "meshid", "data"); data != want {
		t.Fatalf("MeshidDataDir = %s, want %s", data, want)
	}
	if fi, err := os.Stat(filepath.Dir(data)); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("meshid dir: %v %v, want 0755 so other uids reach the socket", fi.Mode(), err)
	}
	cert, err := SeedCA(data, DemoTrustDomain, time.Hour, 40*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if age := time.Since(cert.NotBefore); age < 40*time.Minute || age > 41*time.Minute {
		t.Errorf("seeded CA NotBefore is %v ago, want about 40m", age.Round(time.Second))
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life < time.Hour || life > time.Hour+time.Minute {
		t.Errorf("seeded CA lives %v, want about 1h", life)
	}
	if _, err := os.Stat(filepath.Join(data, "ca", "000001", "ca.crt")); err != nil {
		t.Errorf("no generation on disk: %v", err)
	}
}

// TestKill: SIGKILL gets through a process that ignores SIGTERM, and Run
// reports what a process printed and how it exited.
func TestKill(t *testing.T) {
	e := ForTest(t)
	p, err := e.Start(t.Context(), ProcSpec{Name: "stubborn", Path: "/bin/sh", Args: []string{"-c", "trap '' TERM; echo up; sleep 300"}})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(p.Logs(), "up"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the shell never started")
		}
	}
	start := time.Now()
	if err := p.Kill(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Kill took %v", took)
	}
	if err := p.Wait(); err == nil || !strings.Contains(err.Error(), "signal: killed") {
		t.Errorf("exit after Kill: %v, want signal: killed", err)
	}
	if err := p.Kill(time.Second); err != nil {
		t.Errorf("Kill of a dead process: %v", err)
	}

	out, err := e.Run(t.Context(), ProcSpec{Name: "once", Path: "/bin/sh", Args: []string{"-c", "echo refused; exit 3"}})
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || out != "refused\n" {
		t.Errorf("Run = %q, %v; want \"refused\\n\" and exit status 3", out, err)
	}
}

// mounted reports whether dir is a mount point of this mount namespace.
func mounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

package node

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListenWorkloadSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "meshid")
	path := filepath.Join(dir, "agent.sock")

	lis, err := listenUnix("socket_path", path)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o755, path: 0o777} {
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.Mode().Perm(); got != want {
			t.Errorf("%s has mode %04o, want %04o", p, got, want)
		}
	}

	// While it is served, a second daemon must not take it over.
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, err := listenUnix("socket_path", path); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second listen: err = %v, want 'in use'", err)
	}
	lis.Close()
}

func TestListenWorkloadSocketReplacesAStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	// A socket file nobody serves, as a killed meshid leaves behind.
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()

	lis, err := listenUnix("socket_path", path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	lis.Close()
}

func TestListenWorkloadSocketKeepsOtherFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := listenUnix("socket_path", path); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("err = %v, want a refusal to touch a regular file", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "precious" {
		t.Fatal("a regular file at socket_path was modified")
	}
}

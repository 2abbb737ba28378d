package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSVIDWatchGivesUpOnAMissingSocket runs svid watch as the command
// line does: socket, client, helper and the socket diagnosis wired up.
func TestSVIDWatchGivesUpOnAMissingSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	start := time.Now()
	_, stderr, err := runCmd(t, "svid", "watch", "-socket", sock, "-write", filepath.Join(dir, "svid"), "-unreachable-timeout", "1s")
	want := "(-unreachable-timeout): meshid at unix://" + sock + " is unreachable: no socket at " + sock +
		"; check that `meshid run` is running and that its socket_path is the one -socket names"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("svid watch = %v, want %q", err, want)
	}
	if took := time.Since(start); took < time.Second || took > 5*time.Second {
		t.Fatalf("gave up after %v, want just past 1s", took)
	}
	if n := strings.Count(stderr, "no SVID update from meshid; retrying"); n != 1 {
		t.Fatalf("%d retry lines, want 1:\n%s", n, stderr)
	}
}

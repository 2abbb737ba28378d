package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseWatchFlags(t *testing.T) {
	var stderr bytes.Buffer
	cfg, err := parseWatchFlags([]string{"-socket", "unix:///s.sock", "-write", "/d", "-renew-signal", "usr1", "-jwt-audience", "a", "-jwt-audience", "b",
		"-cmd", "nginx", "-g", "daemon off;"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	h := cfg.helper
	if h.RenewSignal != syscall.SIGUSR1 || strings.Join(h.Cmd, "|") != "nginx|-g|daemon off;" || h.UnreachableTimeout != 30*time.Second ||
		cfg.endpoint.Path() != "/s.sock" || h.Files.Dir != "/d" || h.Files.Cert != "svid.pem" || h.Files.Key != "svid_key.pem" ||
		h.Files.Bundle != "bundle.pem" || h.Files.JWT != "jwt_svid.token" || strings.Join(h.JWTAudiences, ",") != "a,b" || h.JWTTimeout != 10*time.Second {
		t.Fatalf("%+v", cfg)
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"-socket", "unix:///s"}, "-write DIR is required"},
		{[]string{"-write", "/d", "-renew-signal", "SIGNOPE"}, "not a signal name"},
		{[]string{"-write", "/d", "-cmd"}, "-cmd needs a program"},
		{[]string{"-write", "/d", "prog"}, "program arguments go after -cmd PROG"},
		{[]string{"-write", "/d", "-socket", "unix://s.sock"}, `-socket "unix://s.sock": "s.sock" is read as a host`},
	} {
		if _, err := parseWatchFlags(bad.args, &stderr); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: %v, want %q", bad.args, err, bad.want)
		}
	}
	if _, err := parseSignal("HUP"); err != nil {
		t.Error(err)
	}
}

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

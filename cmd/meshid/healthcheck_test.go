package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

func TestHealthcheckUnreachable(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	out, _, err := runCmd(t, "healthcheck", "-socket", "unix://"+sock)
	if err == nil {
		t.Fatal("healthy without a daemon")
	}
	if !strings.Contains(out, "FAIL  daemon    meshid at unix://"+sock+" is unreachable: no socket at "+sock) {
		t.Fatalf("output %q", out)
	}
	if strings.Contains(out, "svid") {
		t.Fatalf("checked the SVID of an unreachable daemon: %q", out)
	}

	out, _, err = runCmd(t, "healthcheck", "-json", "-daemon-only", "-socket", "unix://"+sock)
	var r struct {
		Healthy bool
		Checks  []struct {
			Name string
			OK   bool
		}
	}
	if err == nil || json.Unmarshal([]byte(out), &r) != nil || r.Healthy || len(r.Checks) != 1 || r.Checks[0].Name != "daemon" || r.Checks[0].OK {
		t.Fatalf("healthcheck -json: %v\n%s", err, out)
	}
}

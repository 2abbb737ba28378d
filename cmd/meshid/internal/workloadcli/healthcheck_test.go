package workloadcli

import (
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/test/svidtest"
)

func TestCheckSVIDFile(t *testing.T) {
	ca := svidtest.NewCA(t, "example.org")
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := ca.SVID(t, "/app", nb, nb.Add(40*time.Second))
	dir := t.TempDir()
	path := filepath.Join(dir, "svid.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificates[0].Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		at      time.Duration
		wantErr string
		wantMsg string
	}{
		{10 * time.Second, "", "svid.pem (spiffe://example.org/app) expires in 30s"},
		{31 * time.Second, "past 3/4 of its life and was not renewed (expires in 9s): rotation has stalled; is `meshid svid watch` still running", ""},
		{45 * time.Second, "expired 5s ago", ""},
	}
	for _, tt := range tests {
		msg, err := checkSVIDFile(path, nb.Add(tt.at))
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("at +%v: %v", tt.at, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("at +%v: error %v, want it to contain %q", tt.at, err, tt.wantErr)
		case tt.wantMsg != "" && !strings.Contains(msg, tt.wantMsg):
			t.Errorf("at +%v: %q, want %q", tt.at, msg, tt.wantMsg)
		}
	}
	if _, err := checkSVIDFile(filepath.Join(dir, "nope.pem"), nb); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

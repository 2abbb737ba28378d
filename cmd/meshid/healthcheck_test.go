package main

import (
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestPastRenewal(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(40 * time.Second) // 3/4 is at +30s
	tests := []struct {
		at   time.Duration
		want bool
	}{
		{0, false},
		{20 * time.Second, false}, // meshid renews about here
		{29*time.Second + 999*time.Millisecond, false},
		{30 * time.Second, true},
		{39 * time.Second, true},
		{time.Hour, true},
	}
	for _, tt := range tests {
		if got := pastRenewal(nb, na, nb.Add(tt.at)); got != tt.want {
			t.Errorf("at +%v: pastRenewal = %v, want %v", tt.at, got, tt.want)
		}
	}
}

func TestCheckSVIDFile(t *testing.T) {
	ca := newTestCA(t, "example.org")
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := ca.svid(t, "/app", nb, nb.Add(40*time.Second))
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
		Checks  []healthCheck
	}
	if err == nil || json.Unmarshal([]byte(out), &r) != nil || r.Healthy || len(r.Checks) != 1 || r.Checks[0].Name != "daemon" || r.Checks[0].OK {
		t.Fatalf("healthcheck -json: %v\n%s", err, out)
	}
}

func TestEndpointExplain(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	notSock := filepath.Join(dir, "file")
	os.WriteFile(notSock, nil, 0o644)

	unavailable := status.Error(codes.Unavailable, "connection error")
	tests := []struct {
		name string
		path string
		err  error
		want string
	}{
		{"refusal passes the daemon's message", stale,
			status.Error(codes.PermissionDenied, "no identity issued: no entry matches selectors [unix:uid:1301]; add an entry"),
			"refused: no identity issued: no entry matches selectors [unix:uid:1301]; add an entry"},
		{"no socket", filepath.Join(dir, "none.sock"), unavailable, "no socket at " + dir + "/none.sock; check that `meshid run` is running"},
		{"stale socket", stale, unavailable, "exists but nothing listens on it"},
		{"not a socket", notSock, unavailable, "is not a socket"},
		{"not meshid", stale, status.Error(codes.Unimplemented, "unknown service"), "does not serve the SPIFFE Workload API"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := parseEndpoint("unix://" + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			if got := e.explain(tt.err).Error(); !strings.Contains(got, tt.want) {
				t.Fatalf("%q lacks %q", got, tt.want)
			}
		})
	}
	if _, err := parseEndpoint("/tmp/agent.sock"); err == nil || !strings.Contains(err.Error(), "want unix:///path") {
		t.Fatalf("a bare path: %v", err)
	}
}

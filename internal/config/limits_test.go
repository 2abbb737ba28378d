package config

import (
	"strings"
	"testing"
	"time"
)

func TestLimitsDefaults(t *testing.T) {
	want := Limits{HandshakeTimeout: 5 * time.Second, IdleTimeout: 5 * time.Minute}
	if got := Default().Limits; got != want {
		t.Errorf("default limits = %+v, want %+v (connections derived at start)", got, want)
	}
	cfg, err := Load(writeConfig(t, "limits: {connections_per_uid: 10}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want.ConnectionsPerUID = 10
	if cfg.Limits != want {
		t.Errorf("limits = %+v, want %+v: keys not set keep their defaults", cfg.Limits, want)
	}
}

func TestLoadLimits(t *testing.T) {
	cfg, err := Load(writeConfig(t, "limits:\n  connections: 2000\n  connections_per_uid: 200\n  handshake_timeout: 2s\n  idle_timeout: 1m\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Limits{Connections: 2000, ConnectionsPerUID: 200, HandshakeTimeout: 2 * time.Second, IdleTimeout: time.Minute}
	if cfg.Limits != want {
		t.Errorf("limits = %+v, want %+v", cfg.Limits, want)
	}
}

func TestLoadRejectsBadLimitsWithFileAndLine(t *testing.T) {
	for _, tt := range []struct {
		name, body string
		want       []string
	}{
		{"unknown key", "limits:\n  conections: 10\n", []string{`meshid.yaml:2: unknown key "conections"`}},
		{"negative caps", "limits:\n  connections: -1\n  connections_per_uid: -2\n", []string{
			"meshid.yaml:2: limits.connections -1 must not be negative",
			"meshid.yaml:3: limits.connections_per_uid -2 must not be negative"}},
		{"per uid above the total", "limits:\n  connections: 100\n  connections_per_uid: 101\n", []string{
			"meshid.yaml:3: limits.connections_per_uid 101 is more than limits.connections 100: one uid could take every connection"}},
		{"short timeouts", "limits:\n  handshake_timeout: 10ms\n  idle_timeout: 0s\n", []string{
			"meshid.yaml:2: limits.handshake_timeout 10ms is shorter than the minimum 1s",
			"meshid.yaml:3: limits.idle_timeout 0s is shorter than the minimum 1s"}},
		{"not a number", "limits:\n  connections: many\n", []string{"meshid.yaml:2:"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(writeConfig(t, tt.body))
			if err == nil {
				t.Fatal("Load accepted bad limits")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// A per-uid cap equal to the total is allowed: one uid may then fill the
// socket, which is the operator's call on a single-tenant node.
func TestLoadLimitsPerUIDEqualToTotal(t *testing.T) {
	if _, err := Load(writeConfig(t, "limits: {connections: 100, connections_per_uid: 100}\n")); err != nil {
		t.Fatal(err)
	}
}

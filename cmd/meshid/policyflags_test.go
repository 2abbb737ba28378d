package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshid/meshid/test/authztest"
)

func TestDecisionRef(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr string
	}{
		{"data.envoy.authz.allow", "data.envoy.authz.allow", ""},
		{"envoy/authz/allow", "data.envoy.authz.allow", ""},
		{"/envoy/authz/allow", "data.envoy.authz.allow", ""},
		{"mesh/http-authz/allow", `data.mesh["http-authz"].allow`, ""},
		{`data.mesh["http-authz"].allow`, `data.mesh["http-authz"].allow`, ""},
		{"envoy.authz.allow", "", `decision "envoy.authz.allow": a reference starts at data: did you mean data.envoy.authz.allow?`},
		{"allow", "", `decision "allow": want a path such as envoy/authz/allow or a reference such as data.envoy.authz.allow`},
		{"data/envoy/authz/allow", "", "a path is relative to data: write envoy/authz/allow"},
		{"envoy//allow", "", "empty or padded path segment"},
		{"envoy/authz/", "", "empty or padded path segment"},
		{"data.envoy[x]", "", "not a reference into data"},
		{"data.", "", "not a reference into data"},
	}
	for _, tt := range tests {
		got, err := decisionRef(tt.in)
		switch {
		case tt.wantErr == "" && (err != nil || got != tt.want):
			t.Errorf("decisionRef(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("decisionRef(%q) = %q, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
		}
	}
}

// TestPolicyCommandsTakeOPAsFlags: -i, -d, the decision as a path or a
// reference, flags after the directory.
func TestPolicyCommandsTakeOPAsFlags(t *testing.T) {
	dir := authztest.PolicyDir(t, map[string]string{"authz.rego": authztest.HelloPolicy, "data.json": authztest.HelloData, "authz_test.rego": passingTests})
	mesh := authztest.PolicyDir(t, map[string]string{"mesh.rego": "package mesh.authz\n\nallow := true\n"})
	input := filepath.Join(t.TempDir(), "check.json")
	if err := os.WriteFile(input, []byte(`{"attributes": {"source": {"principal": "spiffe://example.org/ns/demo/sa/frontend"}, "request": {"http": {"method": "GET", "path": "/hello"}}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		allowed bool
		out     string // for the commands that do not print a decision
		status  int
		wantErr string
	}{
		{name: "eval -i -d", args: []string{"policy", "eval", "-i", input, "-d", dir}, allowed: true},
		{name: "eval --input --data", args: []string{"policy", "eval", "--input", input, "--data", dir}, allowed: true},
		{name: "eval --policy is -d", args: []string{"policy", "eval", "--input=" + input, "--policy=" + dir}, allowed: true},
		{name: "eval decision as a path", args: []string{"policy", "eval", "mesh/authz/allow", "-i", input, "-d", mesh}, allowed: true},
		{name: "eval decision as a reference", args: []string{"policy", "eval", "-i", input, "-d", mesh, "data.mesh.authz.allow"}, allowed: true},
		{name: "eval --decision as a path", args: []string{"policy", "eval", "-i", input, "-d", mesh, "--decision", "mesh/authz/allow"}, allowed: true},
		{name: "eval the same decision twice", args: []string{"policy", "eval", "-i", input, "-d", mesh, "--decision", "data.mesh.authz.allow", "mesh/authz/allow"}, allowed: true},
		{name: "eval a decision not defined", args: []string{"policy", "eval", "-i", input, "-d", dir, "mesh/authz/allow"}, status: 1, wantErr: "decision data.mesh.authz.allow is not defined"},
		{name: "eval two decisions", args: []string{"policy", "eval", "-i", input, "-d", mesh, "--decision", "envoy/authz/allow", "mesh/authz/allow"}, status: 2, wantErr: "two decisions"},
		{name: "eval a bad decision", args: []string{"policy", "eval", "-i", input, "-d", mesh, "mesh.authz.allow"}, status: 2, wantErr: "did you mean data.mesh.authz.allow?"},
		{name: "eval two arguments", args: []string{"policy", "eval", "-i", input, "a/b", "c/d"}, status: 2, wantErr: "want at most one DECISION"},
		{name: "test DIR -v", args: []string{"policy", "test", dir, "-v"}, out: "data.envoy.authz_test.test_get: PASS"},
		{name: "test --verbose --run", args: []string{"policy", "test", "--verbose", dir, "--run", "test_get"}, out: "PASS: 1/1"},
		{name: "check DIR --decision path", args: []string{"policy", "check", mesh, "--decision", "mesh/authz/allow"}, out: "decision data.mesh.authz.allow is defined"},
		{name: "check a bad decision", args: []string{"policy", "check", mesh, "-decision", "allow"}, status: 2, wantErr: `decision "allow": want a path`},
		{name: "check a bad rego version", args: []string{"policy", "check", mesh, "--rego-version", "v2"}, status: 2, wantErr: `-rego-version "v2": want v1 or v0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runCmd(t, tt.args...)
			if exitStatus(err) != tt.status || (tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("exit %d (%v), want %d and %q", exitStatus(err), err, tt.status, tt.wantErr)
			}
			if tt.status != 0 {
				return
			}
			if tt.out != "" {
				if !strings.Contains(out, tt.out) {
					t.Fatalf("output lacks %q:\n%s", tt.out, out)
				}
				return
			}
			var got struct{ Allowed bool }
			if err := json.Unmarshal([]byte(out), &got); err != nil || got.Allowed != tt.allowed {
				t.Fatalf("allowed %v (%v), want %v:\n%s", got.Allowed, err, tt.allowed, out)
			}
		})
	}
}

// TestPolicyEvalConfig: with --config, the authz section decides what the
// flags do not.
func TestPolicyEvalConfig(t *testing.T) {
	mesh := authztest.PolicyDir(t, map[string]string{"mesh.rego": "package mesh.authz\n\nallow := true\n\ndeny_all := false\n"})
	dir := t.TempDir()
	cfg := filepath.Join(dir, "meshid.yaml")
	if err := os.WriteFile(cfg, []byte("authz:\n  policy_dir: "+mesh+"\n  decision: data.mesh.authz.deny_all\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	input := filepath.Join(dir, "check.json")
	if err := os.WriteFile(input, []byte(`{"attributes": {"request": {"http": {"method": "GET", "path": "/"}}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args    []string
		allowed bool
	}{
		{[]string{"--config", cfg, "-i", input}, false},
		{[]string{"-config", cfg, "-input", input, "mesh/authz/allow"}, true},
	} {
		out, _, err := runCmd(t, append([]string{"policy", "eval"}, tt.args...)...)
		var got struct{ Allowed bool }
		if err != nil || json.Unmarshal([]byte(out), &got) != nil || got.Allowed != tt.allowed {
			t.Errorf("policy eval %q: %v, want allowed %v:\n%s", tt.args, err, tt.allowed, out)
		}
	}
}

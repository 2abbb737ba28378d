package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/authz/decisionlog"
	"github.com/meshid/meshid/cmd/meshid/internal/cli"
	"github.com/meshid/meshid/node"
	"github.com/meshid/meshid/test/authztest"
)

// loggedDecisions decides GET /hello and GET /admin with HelloPolicy as
// meshid run does with a decision log file, and returns the data dir, the
// log, the policy file and the two decision ids.
func loggedDecisions(t *testing.T) (dataDir, logPath, policyFile, allowed, denied string) {
	t.Helper()
	policies := authztest.PolicyDir(t, map[string]string{"envoy/authz.rego": authztest.HelloPolicy, "data.json": authztest.HelloData})
	dataDir = filepath.Join(t.TempDir(), "data")
	logPath = filepath.Join(t.TempDir(), "decisions.jsonl")
	e, err := authz.NewEngine(context.Background(), authz.Config{PolicyDir: policies})
	if err != nil {
		t.Fatal(err)
	}
	d := decisionlog.New(decisionlog.Options{Revisions: decisionlog.NewRevisions(node.RevisionsDir(dataDir))})
	srv, err := authz.NewServer(e, authz.Options{DecisionLog: d})
	if err != nil {
		t.Fatal(err)
	}
	allowed = srv.Decide(context.Background(), authztest.DemoCheck("/hello")).ID
	denied = srv.Decide(context.Background(), authztest.DemoCheck("/admin")).ID
	f, err := decisionlog.OpenFile(logPath, decisionlog.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Run(ctx, f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return dataDir, logPath, filepath.Join(policies, "envoy/authz.rego"), allowed, denied
}

// TestPolicyWhy: a logged decision is replayed against its policy
// revision and explained with the policy's own file:line; an id that is
// not in the log, one rotated away and a revision no longer kept each say
// which, and a malformed id is a usage error.
func TestPolicyWhy(t *testing.T) {
	dataDir, logPath, policyFile, allowed, denied := loggedDecisions(t)
	config := filepath.Join(t.TempDir(), "meshid.yaml")
	if err := os.WriteFile(config, []byte("data_dir: "+dataDir+"\nauthz:\n  decision_log: "+logPath+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	flags := []string{"-log", logPath, "-data-dir", dataDir}
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"denied", append(flags, denied), []string{
			"decision " + denied + ": denied at ",
			"request: GET /admin from spiffe://example.org/ns/demo/sa/frontend to spiffe://example.org/ns/demo/sa/backend",
			"data.envoy.authz.allow is false:",
			"rule allow at " + policyFile + ":5 did not apply: at " + policyFile + ":7, `input.parsed_path == [\"hello\"]` was false",
			`input.parsed_path is ["admin"]`,
			"so the default at " + policyFile + ":3 gave false",
		}},
		{"allowed, with -config", []string{"-config", config, allowed}, []string{
			"decision " + allowed + ": allowed at ",
			"rule allow at " + policyFile + ":5 applied",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runCmd(t, append([]string{"policy", "why"}, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("no %q in:\n%s", w, out)
				}
			}
			if strings.Contains(out, "note:") {
				t.Errorf("the replay differs from the log:\n%s", out)
			}
		})
	}

	failures := []struct {
		name  string
		args  []string
		want  error
		says  string
		usage bool
	}{
		{"unknown id", append(flags, decisionlog.NewID(time.Now())), decisionlog.ErrUnknownDecision, "it was not logged", false},
		{"rotated away", append(flags, decisionlog.NewID(time.Now().Add(-time.Hour))), decisionlog.ErrRotatedAway, "rotated out of " + logPath, false},
		{"malformed id", append(flags, "0193a9c2"), nil, "is not a decision id", true},
		{"no log given", []string{denied}, nil, "give -config, or -log and -data-dir", true},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runCmd(t, append([]string{"policy", "why"}, tt.args...)...)
			var u *cli.UsageError
			if err == nil || errors.As(err, &u) != tt.usage || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("err = %v; want %v saying %q, usage error %v", err, tt.want, tt.says, tt.usage)
			}
		})
	}

	// The revisions go (pruned, or the data dir replaced): the line is
	// still found, and says its revision is not kept.
	if err := os.RemoveAll(node.RevisionsDir(dataDir)); err != nil {
		t.Fatal(err)
	}
	_, _, err := runCmd(t, append([]string{"policy", "why"}, append(flags, denied)...)...)
	if !errors.Is(err, node.ErrNoRevision) || !strings.Contains(err.Error(), "no longer kept in "+node.RevisionsDir(dataDir)) {
		t.Errorf("revision gone: %v", err)
	}
}

// TestPolicyEvalExplain: -explain says how a request given on the command
// line is decided, at the policy's file:line.
func TestPolicyEvalExplain(t *testing.T) {
	dir := authztest.PolicyDir(t, map[string]string{"authz.rego": authztest.HelloPolicy, "data.json": authztest.HelloData})
	check := filepath.Join(t.TempDir(), "check.json")
	if err := os.WriteFile(check, []byte(`{"attributes": {"request": {"http": {"method": "POST", "path": "/hello"}}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCmd(t, "policy", "eval", "-i", check, "-d", dir, "-explain")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "authz.rego")
	for _, w := range []string{
		": denied\n",
		"rule allow at " + file + ":5 did not apply: at " + file + ":6, `input.attributes.request.http.method in data.methods` was false",
		`input.attributes.request.http.method is "POST"`,
	} {
		if !strings.Contains(out, w) {
			t.Errorf("no %q in:\n%s", w, out)
		}
	}
}

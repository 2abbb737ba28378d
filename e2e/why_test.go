package e2e

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/authz/decisionlog"
	"github.com/meshid/meshid/test/harness"
)

// TestPolicyWhy: a real Envoy gets a 403 from meshid's ext_authz, with
// the decision id in the response; the decision log line carries the
// denial's reason, and `meshid policy why ID` replays the decision against
// its kept policy revision and names the failing rule and expression at
// the shipped policy's file:line. Ids not in the log say why.
func TestPolicyWhy(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	mesh, err := env.StartDemoMesh(ctx, harness.DemoOptions{ExplainDenials: true})
	if err != nil {
		t.Fatal(err)
	}
	m := mesh.Meshid

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, mesh.FrontendURL+"admin", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	id := resp.Header.Get("x-meshid-decision-id")
	if resp.StatusCode != http.StatusForbidden || !decisionlog.ValidID(id) {
		t.Fatalf("GET /admin: %d, decision id %q; want 403 with a decision id", resp.StatusCode, id)
	}

	policy := filepath.Join(env.Root, "policies", "envoy", "authz.rego")
	failing := "at " + policy + ":24, `input.parsed_path == [\"hello\"]` was false"
	line, err := m.WaitDecision(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if line.Allowed || len(line.Revision) != 32 || !strings.Contains(line.Reason, failing) {
		t.Errorf("decision log line %+v: want a denial with its revision and the reason %q", line, failing)
	}

	out, err := m.PolicyWhy(ctx, id)
	if err != nil {
		t.Fatalf("policy why: %v\n%s", err, out)
	}
	for _, want := range []string{
		"decision " + id + ": denied at ",
		"request: GET /admin from " + harness.FrontendID + " to " + harness.BackendID,
		"policy revision " + line.Revision,
		"rule allow at " + policy + ":20 did not apply: " + failing,
		`input.parsed_path is ["admin"]`,
		"so the default at " + policy + ":8 gave false",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("policy why: no %q in:\n%s", want, out)
		}
	}

	for _, tt := range []struct{ name, id, says string }{
		{"never logged", decisionlog.NewID(time.Now()), "it was not logged"},
		{"rotated away", decisionlog.NewID(time.Now().Add(-time.Hour)), "rotated out of " + m.DecisionLogPath},
	} {
		out, err := m.PolicyWhy(ctx, tt.id)
		if err == nil || !strings.Contains(out, tt.says) || !strings.Contains(out, tt.id) {
			t.Errorf("policy why, %s: %v\n%s\nwant a failure saying %q", tt.name, err, out, tt.says)
		}
	}
}

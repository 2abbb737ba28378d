package authz_test

import (
	"bufio"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/authz/decisionlog"
	"github.com/meshid/meshid/test/syncbuf"
)

// runLog runs d until the test ends and returns a function that stops it
// and returns what it wrote, one decoded JSON object per line.
func runLog(t *testing.T, d *decisionlog.Log, out *syncbuf.Buffer) func() []map[string]any {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, out) }()
	stopped := false
	stop := func() []map[string]any {
		if !stopped {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			stopped = true
		}
		var lines []map[string]any
		sc := bufio.NewScanner(strings.NewReader(out.String()))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("decision log line %q: %v", sc.Text(), err)
			}
			lines = append(lines, m)
		}
		return lines
	}
	t.Cleanup(func() { stop() })
	return stop
}

// TestDecisionLog: every decision the server reaches, failures included,
// reaches the log as the server recorded it, and masking finds the
// headers where the input document has them.
func TestDecisionLog(t *testing.T) {
	var out syncbuf.Buffer
	d := decisionlog.New(decisionlog.Options{MaskHeaders: []string{"Authorization", "x-secret"}})
	stop := runLog(t, d, &out)

	e := engine(t, "package envoy.authz\n\ndefault allow := false\n\nallow if input.parsed_path == [\"hello\"]\n\nallow := {\"allowed\": false, \"body\": \"no\"} if input.parsed_path == [\"obj\"]\n", authz.Config{})
	srv := newServer(t, e, authz.Options{DecisionLog: d, DryRun: true})

	hello := checkRequest(frontend, backend, "GET", "/hello")
	hello.Attributes.Request.Http.Headers["authorization"] = "Bearer s3cret"
	hello.Attributes.Request.Http.Headers["x-secret"] = "hush"
	r1 := srv.Decide(t.Context(), hello)
	r2 := srv.Decide(t.Context(), checkRequest(frontend, backend, "GET", "/admin"))
	r3 := srv.Decide(t.Context(), checkRequest(frontend, backend, "GET", "/bad%zz"))
	r4 := srv.Decide(t.Context(), checkRequest(frontend, backend, "GET", "/obj"))

	lines := stop()
	if len(lines) != 4 {
		t.Fatalf("got %d decision log lines, want 4: %v", len(lines), lines)
	}
	for i, r := range []*authz.Result{r1, r2, r3, r4} {
		l := lines[i]
		if l["decision_id"] != r.ID || l["path"] != "data.envoy.authz.allow" || l["allowed"] != r.Allowed {
			t.Errorf("line %d = %v, want decision %s on data.envoy.authz.allow, allowed %v", i, l, r.ID, r.Allowed)
		}
		if ts, err := time.Parse(time.RFC3339Nano, l["timestamp"].(string)); err != nil || !ts.Equal(r.Time) {
			t.Errorf("line %d timestamp %v, want %v", i, l["timestamp"], r.Time)
		}
		if n, ok := l["duration_ns"].(float64); !ok || n <= 0 {
			t.Errorf("line %d duration_ns = %v", i, l["duration_ns"])
		}
		if r.Allowed == false && l["dry_run"] != true {
			t.Errorf("line %d: a dry-run deny is not marked dry_run: %v", i, l)
		}
	}

	headers := lines[0]["input"].(map[string]any)["attributes"].(map[string]any)["request"].(map[string]any)["http"].(map[string]any)["headers"].(map[string]any)
	if headers["authorization"] != "<masked>" || headers["x-secret"] != "<masked>" || headers[":authority"] != "backend" {
		t.Errorf("logged headers %v: want authorization and x-secret masked, the rest as sent", headers)
	}
	if lines[0]["result"] != true || lines[1]["result"] != false {
		t.Errorf("results %v, %v; want true, false", lines[0]["result"], lines[1]["result"])
	}
	if !strings.Contains(lines[2]["error"].(string), "request path") || lines[2]["input"] != nil || lines[2]["result"] != nil {
		t.Errorf("failed decision logged as %v: want the error and no input or result", lines[2])
	}
	if res, _ := lines[3]["result"].(map[string]any); res["body"] != "no" {
		t.Errorf("object result logged as %v", lines[3]["result"])
	}
	// The terms the server keeps using were not masked in place.
	if got := srv.Decide(t.Context(), hello).Input.String(); !strings.Contains(got, "Bearer s3cret") {
		t.Errorf("masking changed the input terms: %s", got)
	}
}

// TestDecisionLogHugeBody: the request that once wrote megabytes per line
// (a 3.8 MB body, logged raw and parsed) writes a line bounded by the
// default caps.
func TestDecisionLogHugeBody(t *testing.T) {
	var out syncbuf.Buffer
	d := decisionlog.New(decisionlog.Options{})
	stop := runLog(t, d, &out)
	srv := newServer(t, engine(t, "package envoy.authz\n\nallow := true\n", authz.Config{}), authz.Options{DecisionLog: d})
	for range 10 {
		if r := srv.Decide(t.Context(), hugeBodyRequest()); !r.Allowed {
			t.Fatalf("denied: %v", r.Err)
		}
	}
	lines := stop()
	if n := len(out.String()); len(lines) != 10 || n > 10*(decisionlog.DefaultMaxInputBytes+decisionlog.DefaultMaxFieldBytes) {
		t.Errorf("10 decisions on a %d-byte body wrote %d lines, %d bytes", len(hugeBodyRequest().Attributes.Request.Http.Body), len(lines), n)
	}
}

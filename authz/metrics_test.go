package authz_test

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshid/meshid/authz"
)

// TestDecisionMetricsByResult: each result is counted, and its latency
// observed, under its own label; every result's series exists before the
// first decision.
func TestDecisionMetricsByResult(t *testing.T) {
	reg := prometheus.NewRegistry()
	policy := `package envoy.authz

default allow := false

allow if input.parsed_path[0] == "ok"

# Two values for one complete rule: an evaluation error.
v := 1 if input.parsed_path[0] == "fail"

v := 2 if input.parsed_path[0] == "fail"

allow if v == 3
`
	srv := newServer(t, engine(t, policy, authz.Config{}), authz.Options{Metrics: reg})
	if got := histogramCounts(t, reg); len(got) != 3 || got["allow"] != 0 || got["deny"] != 0 || got["error"] != 0 {
		t.Fatalf("before any decision: %v, want allow, deny and error at 0", got)
	}
	for _, path := range []string{"/ok", "/ok", "/no", "/fail"} {
		if _, err := srv.Check(context.Background(), checkRequest(frontend, backend, "GET", path)); err != nil {
			t.Fatal(err)
		}
	}
	got := histogramCounts(t, reg)
	if got["allow"] != 2 || got["deny"] != 1 || got["error"] != 1 {
		t.Errorf("latency observations by result %v, want allow 2, deny 1, error 1", got)
	}
	for _, result := range []string{"allow", "deny", "error"} {
		if c := counterValue(t, reg, "meshid_authz_decisions_total", result); c != float64(got[result]) {
			t.Errorf("decisions{result=%s} = %v, but %d latencies observed", result, c, got[result])
		}
	}
}

// histogramCounts returns meshid_authz_duration_seconds' sample count by
// result.
func histogramCounts(t *testing.T, reg *prometheus.Registry) map[string]uint64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, f := range families {
		if f.GetName() != "meshid_authz_duration_seconds" {
			continue
		}
		for _, m := range f.GetMetric() {
			out[label(m, "result")] = m.GetHistogram().GetSampleCount()
		}
	}
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

package e2e

import (
	"bufio"
	"context"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshid/meshid/test/authztest"
	"github.com/meshid/meshid/test/harness"
)

const (
	metricsUID = 1321
	metricsID  = "spiffe://example.org/metrics/app"
)

// documentedSeries is one row of docs/metrics.md's table.
type documentedSeries struct {
	name        string
	conditional bool                // its type cell says "with …": only with a setting
	labels      map[string][]string // label → the values present from the start
}

var backticked = regexp.MustCompile("`([^`]+)`")

// readDocumentedSeries parses the series table of docs/metrics.md: rows
// whose first cell is a backticked series name; the labels cell lists
// "`label` = `v1`, `v2`" parts separated by ";".
func readDocumentedSeries(t *testing.T) []documentedSeries {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(root, "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []documentedSeries
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cells := strings.Split(sc.Text(), "|")
		if len(cells) < 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		s := documentedSeries{
			name:        strings.Trim(strings.TrimSpace(cells[1]), "`"),
			conditional: strings.Contains(cells[2], "with `"),
			labels:      map[string][]string{},
		}
		for part := range strings.SplitSeq(cells[3], ";") {
			name, values, _ := strings.Cut(part, "=")
			m := backticked.FindStringSubmatch(name)
			if m == nil {
				continue
			}
			s.labels[m[1]] = nil
			for _, v := range backticked.FindAllStringSubmatch(values, -1) {
				s.labels[m[1]] = append(s.labels[m[1]], v[1])
			}
		}
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) < 20 {
		t.Fatalf("docs/metrics.md: %d series rows found; the table's format changed?", len(out))
	}
	return out
}

// TestMetrics scrapes a freshly started meshid and holds its /metrics to
// docs/metrics.md both ways: every documented series (and documented label
// value) is there before any event, and every meshid_* or grpc_* series
// there is documented. Then real events (workloads fetching SVIDs, a
// stranger refused, an ext_authz check, entries reloads) move the counters
// they should.
func TestMetrics(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	entries := []harness.Entry{{SPIFFEID: metricsID, Selectors: []string{"unix:uid:" + strconv.Itoa(metricsUID)}}}
	m, err := env.StartMeshid(ctx, harness.MeshidOptions{Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	start, err := m.Scrape(ctx)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("documented series exist at start", func(t *testing.T) {
		documented := map[string]bool{}
		for _, d := range readDocumentedSeries(t) {
			documented[d.name] = true
			f := start[d.name]
			if f == nil {
				if !d.conditional {
					t.Errorf("%s is documented but not on /metrics at start", d.name)
				}
				continue
			}
			for label, values := range d.labels {
				for _, v := range values {
					if _, ok := start.Value(d.name, label, v); !ok {
						t.Errorf("%s{%s=%q} is documented but not on /metrics at start", d.name, label, v)
					}
				}
				if len(f.GetMetric()) > 0 && !hasLabel(f.GetMetric()[0].GetLabel(), label) {
					t.Errorf("%s has no label %q, which docs/metrics.md lists", d.name, label)
				}
			}
		}
		for name := range start {
			if (strings.HasPrefix(name, "meshid_") || strings.HasPrefix(name, "grpc_")) && !documented[name] {
				t.Errorf("%s is on /metrics but not in docs/metrics.md", name)
			}
		}
	})

	t.Run("values at start", func(t *testing.T) {
		info := start["meshid_build_info"].GetMetric()
		if len(info) != 1 || info[0].GetGauge().GetValue() != 1 {
			t.Fatalf("meshid_build_info: %v, want one series of value 1", info)
		}
		labels := map[string]string{}
		for _, l := range info[0].GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["go_version"] != runtime.Version() || labels["version"] == "" || labels["commit"] == "" {
			t.Errorf("meshid_build_info labels %v, want this toolchain (%s), a version and a commit", labels, runtime.Version())
		}
		if v, _ := start.Value("meshid_svid_expiry_seconds"); !math.IsInf(v, 1) {
			t.Errorf("meshid_svid_expiry_seconds = %v before any SVID, want +Inf", v)
		}
		if v, _ := start.Value("meshid_ca_expiry_seconds"); time.Unix(int64(v), 0).Before(time.Now().Add(12 * time.Hour)) {
			t.Errorf("meshid_ca_expiry_seconds = %v (%s), want a fresh 24h CA's expiry", v, time.Unix(int64(v), 0))
		}
		if v, _ := start.Value("meshid_entries"); v != 1 {
			t.Errorf("meshid_entries = %v, want 1", v)
		}
		if v, _ := start.Value("meshid_entries_reload_errors_total"); v != 0 {
			t.Errorf("meshid_entries_reload_errors_total = %v at start, want 0", v)
		}
	})

	cli := func(uid uint32, args ...string) {
		t.Helper()
		out, err := m.CLI(ctx, uid, args...)
		if uid == metricsUID && err != nil {
			t.Fatalf("meshid %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	cli(metricsUID, "svid", "fetch")
	cli(metricsUID, "jwt", "fetch", "-audience", "metrics-test")
	cli(strangerUID, "svid", "fetch") // refused: no entry

	conn, err := grpc.NewClient(m.AuthzAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := authv3.NewAuthorizationClient(conn).Check(ctx, authztest.DemoCheck("/")); err != nil {
		t.Fatal(err)
	}

	after, err := m.Scrape(ctx)
	if err != nil {
		t.Fatal(err)
	}
	moved := func(name string, want float64, labels ...string) {
		t.Helper()
		before, _ := start.Value(name, labels...)
		now, _ := after.Value(name, labels...)
		if now-before != want {
			t.Errorf("%s%v moved by %v, want %v", name, labels, now-before, want)
		}
	}
	moved("meshid_svid_issued_total", 1, "kind", "x509")
	moved("meshid_svid_issued_total", 1, "kind", "jwt")
	moved("meshid_unmatched_callers_total", 1)
	moved("meshid_workload_responses_total", 1, "method", "FetchX509SVID")
	moved("meshid_authz_decisions_total", 1)
	moved("meshid_authz_duration_seconds", 1)
	moved("grpc_server_handled_total", 1, "server", "authz", "grpc_method", "Check", "grpc_code", "OK")
	moved("grpc_server_handled_total", 1, "server", "agent", "grpc_method", "FetchJWTSVID", "grpc_code", "OK")
	moved("grpc_server_handled_total", 1, "server", "agent", "grpc_method", "FetchX509SVID", "grpc_code", "PermissionDenied")
	moved("grpc_server_started_total", 2, "server", "agent", "grpc_method", "FetchX509SVID")
	for _, result := range []string{"allow", "deny", "error"} {
		n, _ := after.Value("meshid_authz_decisions_total", "result", result)
		d, _ := after.Value("meshid_authz_duration_seconds", "result", result)
		if n != d {
			t.Errorf("result %s: %v decisions but %v latencies observed", result, n, d)
		}
	}
	expiry, _ := after.Value("meshid_svid_expiry_seconds")
	if at := time.Unix(int64(expiry), 0); math.IsInf(expiry, 1) || at.Before(time.Now()) || at.After(time.Now().Add(time.Hour+time.Minute)) {
		t.Errorf("meshid_svid_expiry_seconds = %v after an SVID was issued, want its expiry within the hour", expiry)
	}

	// Entries reloads: a good file and a bad one.
	waitFor := func(what string, ok func(harness.Scrape) bool) {
		t.Helper()
		for {
			s, err := m.Scrape(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if ok(s) {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("%s: not seen on /metrics", what)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	if err := m.WriteEntries(append(entries, harness.Entry{SPIFFEID: "spiffe://example.org/metrics/other", Selectors: []string{"unix:uid:1322"}})); err != nil {
		t.Fatal(err)
	}
	reloads, _ := after.Value("meshid_entries_reloads_total")
	waitFor("a reload to 2 entries", func(s harness.Scrape) bool {
		n, _ := s.Value("meshid_entries")
		r, _ := s.Value("meshid_entries_reloads_total")
		return n == 2 && r == reloads+1
	})
	if err := os.WriteFile(m.EntriesPath, []byte("entries: [{spiffe_id: nope}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor("a rejected reload", func(s harness.Scrape) bool {
		n, _ := s.Value("meshid_entries")
		e, _ := s.Value("meshid_entries_reload_errors_total")
		return n == 2 && e == 1 // none at start, as "values at start" checked
	})
}

func hasLabel(labels []*dto.LabelPair, name string) bool {
	for _, l := range labels {
		if l.GetName() == name {
			return true
		}
	}
	return false
}

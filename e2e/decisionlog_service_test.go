package e2e

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/test/harness"
)

// opaCollector is a decision log collector written for OPA's
// decision_logs plugin, as the test process runs one: HTTPS with its own
// certificate, a bearer token, gzipped JSON arrays of events POSTed to
// /logs. It refuses the first refuse uploads with 503, and while held it
// answers nothing.
type opaCollector struct {
	srv             *httptest.Server
	caFile, tokFile string

	mu       sync.Mutex
	refuse   int
	held     chan struct{} // non-nil: requests wait on it
	uploads  int
	bad      []string
	byID     map[string][]opaEvent
	received []time.Time // when each event arrived
}

// opaEvent is the part of OPA's decision log event the test reads.
type opaEvent struct {
	DecisionID string            `json:"decision_id"`
	Labels     map[string]string `json:"labels"`
	Path       string            `json:"path"`
	Revision   string            `json:"revision"`
	Input      struct {
		Attributes struct {
			Request struct {
				HTTP struct {
					Path    string            `json:"path"`
					Headers map[string]string `json:"headers"`
				} `json:"http"`
			} `json:"request"`
		} `json:"attributes"`
		Spiffe struct {
			Source struct {
				ID string `json:"id"`
			} `json:"source"`
		} `json:"spiffe"`
	} `json:"input"`
	Result    json.RawMessage  `json:"result"`
	Masked    []string         `json:"masked"`
	Timestamp time.Time        `json:"timestamp"`
	Metrics   map[string]int64 `json:"metrics"`
	Allowed   bool             `json:"allowed"`
}

const collectorToken = "collector-token-1"

func startOPACollector(t *testing.T, env *harness.Env, refuse int) *opaCollector {
	t.Helper()
	c := &opaCollector{refuse: refuse, byID: map[string][]opaEvent{}}
	c.srv = httptest.NewTLSServer(http.HandlerFunc(c.serve))
	t.Cleanup(func() {
		c.release()
		c.srv.Close()
	})
	c.caFile = filepath.Join(env.Dir, "collector-ca.pem")
	c.tokFile = filepath.Join(env.Dir, "collector.token")
	if err := os.WriteFile(c.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.tokFile, []byte(collectorToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *opaCollector) serve(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	held := c.held
	c.mu.Unlock()
	if held != nil {
		select {
		case <-held:
		case <-r.Context().Done():
			return
		}
	}
	fail := func(why string) {
		c.mu.Lock()
		c.bad = append(c.bad, why)
		c.mu.Unlock()
		http.Error(w, why, http.StatusBadRequest)
	}
	switch {
	case r.Method != http.MethodPost || r.URL.Path != "/logs":
		fail(r.Method + " " + r.URL.Path)
		return
	case r.Header.Get("Authorization") != "Bearer "+collectorToken:
		fail("authorization " + strconv.Quote(r.Header.Get("Authorization")))
		return
	case r.Header.Get("Content-Encoding") != "gzip" || r.Header.Get("Content-Type") != "application/json":
		fail("content " + r.Header.Get("Content-Type") + " " + r.Header.Get("Content-Encoding"))
		return
	}
	zr, err := gzip.NewReader(r.Body)
	if err != nil {
		fail("gunzip: " + err.Error())
		return
	}
	var events []json.RawMessage
	if err := json.NewDecoder(zr).Decode(&events); err != nil {
		fail("decode: " + err.Error())
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.uploads++
	if c.uploads <= c.refuse {
		http.Error(w, "not now", http.StatusServiceUnavailable)
		return
	}
	for _, raw := range events {
		var e opaEvent
		if err := json.Unmarshal(raw, &e); err != nil {
			c.bad = append(c.bad, "event: "+err.Error())
			continue
		}
		c.byID[e.DecisionID] = append(c.byID[e.DecisionID], e)
		c.received = append(c.received, time.Now())
	}
}

// hold makes the collector answer nothing until release.
func (c *opaCollector) hold() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held == nil {
		c.held = make(chan struct{})
	}
}

func (c *opaCollector) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.held != nil {
		close(c.held)
		c.held = nil
	}
}

// events returns the events received for id, failing the test on any
// upload that was not as OPA's plugin sends it.
func (c *opaCollector) events(t *testing.T, id string) []opaEvent {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.bad) > 0 {
		t.Fatalf("bad uploads: %v", c.bad)
	}
	return c.byID[id]
}

// TestDecisionLogShippedThroughEnvoy: decisions a real Envoy asks meshid
// for reach a collector written for OPA, over HTTPS with a CA file and a
// bearer token file, as OPA's events, after the collector refused the
// first uploads; the file has the same decisions; a collector that hangs
// holds meshid's exit no longer than the flush's bound.
func TestDecisionLogShippedThroughEnvoy(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	col := startOPACollector(t, env, 2)

	policyDir := writePolicies(t, env, map[string]string{"authz.rego": authzPolicy, "data.json": `{"version": "v1"}`})
	m, err := env.StartMeshid(ctx, harness.MeshidOptions{Entries: harness.DemoEntries(), PolicyDir: policyDir})
	if err != nil {
		t.Fatal(err)
	}
	decisionLog := filepath.Join(env.Dir, "decisions.jsonl")
	if err := m.ConfigureAuthz(ctx, map[string]any{
		"decision_log": map[string]any{
			"file": decisionLog,
			"service": map[string]any{
				"url": col.srv.URL, "ca_file": col.caFile, "bearer_token_file": col.tokFile,
				"min_delay": "100ms", "max_delay": "500ms", "labels": map[string]string{"cluster": "e2e"},
			},
		},
		"xfcc": map[string]any{"trust": true},
	}); err != nil {
		t.Fatal(err)
	}
	up := startUpstream(t)
	_, frontend := startEnvoyPair(t, ctx, env, m, envoy.Inbound{AppAddr: up.addr, AuthzAddr: m.AuthzAddr})
	client := newMeshClient(t, frontend)

	resp, _ := client.do(t, ctx, "/hello", map[string]string{"authorization": "Bearer s3cret"})
	allowID := resp.Header.Get("x-meshid-decision-id")
	resp, _ = client.do(t, ctx, "/private", nil)
	denyID := resp.Header.Get("x-meshid-decision-id")
	if allowID == "" || denyID == "" || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("decision ids %q %q, last status %d", allowID, denyID, resp.StatusCode)
	}
	waitFor(t, ctx, "both decisions at the collector", func() bool {
		return len(col.events(t, allowID)) > 0 && len(col.events(t, denyID)) > 0
	})
	host, _ := os.Hostname()
	allow, deny := col.events(t, allowID)[0], col.events(t, denyID)[0]
	for _, e := range []opaEvent{allow, deny} {
		if e.Path != "envoy/authz/allow" || e.Labels["id"] != host || e.Labels["version"] == "" || e.Labels["cluster"] != "e2e" ||
			e.Revision == "" || time.Since(e.Timestamp) > time.Minute || e.Metrics["timer_server_handler_ns"] <= 0 ||
			e.Input.Spiffe.Source.ID != harness.FrontendID {
			t.Errorf("event %+v: want OPA's keys, labels id %s, the frontend as the caller", e, host)
		}
	}
	if h := allow.Input.Attributes.Request.HTTP; h.Path != "/hello" || h.Headers["authorization"] != "<masked>" || len(allow.Masked) != 1 || !allow.Allowed {
		t.Errorf("allowed event: request %+v, masked %v", h, allow.Masked)
	}
	var denied struct {
		Status int `json:"http_status"`
	}
	if json.Unmarshal(deny.Result, &denied); denied.Status != 401 || deny.Allowed {
		t.Errorf("denied event: result %s, allowed %v", deny.Result, deny.Allowed)
	}
	if line := waitDecision(t, ctx, decisionLog, denyID); line.Allowed {
		t.Errorf("the file's line of %s says allowed", denyID)
	}
	sc, err := m.Scrape(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := sc.Value("meshid_authz_decision_log_upload_failures_total", "class", "5xx"); n != 2 {
		t.Errorf("upload failures 5xx = %v, want the 2 the collector refused", n)
	}
	if n, _ := sc.Value("meshid_authz_decision_log_events_shipped_total"); n < 2 {
		t.Errorf("events shipped = %v, want at least 2", n)
	}
	if logs := m.Logs(); !strings.Contains(logs, "the decision log collector did not take an upload") || !strings.Contains(logs, "the decision log collector takes uploads again") {
		t.Errorf("meshid's log lacks the refused upload and the recovery:\n%s", m.LogTail(30))
	}

	// A burst through Envoy: every decision arrives, once.
	const burst = 300
	ids := make([]string, 0, burst)
	start := time.Now()
	for range burst {
		resp, _ := client.do(t, ctx, "/hello", nil)
		ids = append(ids, resp.Header.Get("x-meshid-decision-id"))
	}
	sent := time.Since(start)
	waitFor(t, ctx, "the burst at the collector", func() bool {
		for _, id := range ids {
			if len(col.events(t, id)) == 0 {
				return false
			}
		}
		return true
	})
	arrived := time.Since(start)
	for _, id := range ids {
		if n := len(col.events(t, id)); n != 1 {
			t.Errorf("decision %s arrived %d times", id, n)
		}
	}
	t.Logf("%d decisions through Envoy in %v; all at the collector %v after the first", burst, sent.Round(time.Millisecond), arrived.Round(time.Millisecond))

	// meshid status shows the shipper (which counts an upload once the
	// collector's answer is back).
	var status struct {
		DecisionLog *struct {
			Collector     string    `json:"collector"`
			Shipped       uint64    `json:"shipped"`
			FailedUploads uint64    `json:"failed_uploads"`
			LastSuccess   time.Time `json:"last_success"`
			LastError     *string   `json:"last_error"`
		} `json:"decision_log"`
	}
	waitFor(t, ctx, "meshid status to count the burst", func() bool {
		out, err := m.CLI(ctx, 0, "status", "-config", m.ConfigPath, "-json")
		if err != nil {
			t.Fatalf("meshid status: %v\n%s", err, out)
		}
		if err := json.Unmarshal([]byte(out), &status); err != nil {
			t.Fatalf("meshid status --json: %v\n%s", err, out)
		}
		return status.DecisionLog == nil || status.DecisionLog.Shipped >= burst+2
	})
	if d := status.DecisionLog; d == nil || d.Collector != col.srv.URL+"/logs" || d.Shipped < burst+2 || d.FailedUploads != 2 || d.LastSuccess.IsZero() || d.LastError != nil {
		t.Errorf("meshid status decision_log = %+v, want the collector, %d shipped, 2 failed uploads, no error now", d, burst+2)
	}
	if out, err := m.CLI(ctx, 0, "status", "-config", m.ConfigPath); err != nil || !strings.Contains(out, "decision log to "+col.srv.URL+"/logs: ") {
		t.Errorf("meshid status does not show the collector (%v):\n%s", err, out)
	}

	// A collector that hangs: meshid still exits within the flush bound
	// (5 s) and its own shutdown.
	col.hold()
	client.do(t, ctx, "/hello", nil)
	time.Sleep(time.Second) // the upload is under way, and hangs
	stopStart := time.Now()
	if err := m.Stop(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(stopStart); took > 10*time.Second {
		t.Errorf("meshid took %v to exit with a hung collector, want at most about 5 s", took)
	} else {
		t.Logf("meshid exited %v after SIGTERM with a hung collector", took.Round(time.Millisecond))
	}
	if logs := m.Logs(); !strings.Contains(logs, "decision log events not shipped at shutdown") {
		t.Errorf("meshid's log does not say what it could not ship at shutdown:\n%s", m.LogTail(20))
	}
}

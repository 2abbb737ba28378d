package node

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshid/meshid/internal/buildinfo"
	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/test/authztest"
)

// TestAuthzShipsDecisions: with authz.decision_log.service alone (no
// file), the node's decisions reach the collector as OPA's events,
// labelled with the host name and meshid's version, masked as the file
// would be, and the shipper's metrics count them.
func TestAuthzShipsDecisions(t *testing.T) {
	var mu sync.Mutex
	var events []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		zr, err := gzip.NewReader(r.Body)
		var batch []map[string]any
		if err == nil {
			err = json.NewDecoder(zr).Decode(&batch)
		}
		if err != nil || r.URL.Path != "/v1/logs" {
			http.Error(w, "bad upload", http.StatusBadRequest)
			return
		}
		mu.Lock()
		events = append(events, batch...)
		mu.Unlock()
	}))
	defer srv.Close()

	dir := t.TempDir()
	cfg := config.Default().Authz
	cfg.Address = freeTCPAddr(t)
	cfg.PolicyDir = authztest.PolicyDir(t, map[string]string{"authz.rego": authztest.HelloPolicy, "data.json": authztest.HelloData})
	cfg.DecisionLog.Service = &config.DecisionLogService{
		Service:  config.Service{URL: srv.URL, Timeout: 5 * time.Second},
		Resource: "/v1/logs", MinDelay: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond,
		UploadSizeLimitBytes: 32 << 10, BufferSizeLimitBytes: 1 << 20,
		Labels: map[string]string{"region": "eu"},
	}
	reg := prometheus.NewRegistry()
	s, _ := newTestAuthz(t, cfg, reg)
	stop := runAuthz(t, s)

	conn, err := grpc.NewClient(cfg.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, path := range []string{"/hello", "/admin"} {
		if _, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: path, Headers: map[string]string{"authorization": "Bearer s3cret"}}},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := len(events)
		mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the collector got %d events, want 2", n)
		}
	}
	stop()
	if got := counterValue(t, reg, "meshid_authz_decision_log_events_shipped_total"); got != 2 {
		t.Errorf("meshid_authz_decision_log_events_shipped_total = %v, want 2", got)
	}

	host, _ := os.Hostname()
	for i, e := range events {
		labels, _ := e["labels"].(map[string]any)
		if labels["id"] != host || labels["version"] != buildinfo.Read().Version || labels["region"] != "eu" || e["path"] != "envoy/authz/allow" ||
			e["decision_id"] == "" || e["revision"] == "" || e["timestamp"] == nil || e["metrics"] == nil {
			t.Errorf("event %d = %v", i, e)
		}
		in, _ := e["input"].(map[string]any)
		raw, _ := json.Marshal(in)
		headers, _ := in["attributes"].(map[string]any)["request"].(map[string]any)["http"].(map[string]any)["headers"].(map[string]any)
		if strings.Contains(string(raw), "s3cret") || headers["authorization"] != "<masked>" {
			t.Errorf("event %d input %s: want authorization masked", i, raw)
		}
	}
	if allowed := []any{events[0]["allowed"], events[1]["allowed"]}; allowed[0] != true || allowed[1] != false {
		t.Errorf("allowed = %v, want /hello allowed, /admin denied", allowed)
	}
	// No file: no policy revisions kept for replay.
	if _, err := os.Stat(RevisionsDir(dir)); err == nil {
		t.Errorf("revisions kept without a decision log file")
	}
}

// counterValue is the value of the counter name, which has one series.
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no series %s", name)
	return 0
}

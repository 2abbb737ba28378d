package decisionlog_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/meshid/meshid/authz/decisionlog"
	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/internal/remote"
	"github.com/meshid/meshid/test/syncbuf"
)

// collector is a decision log collector as one written for OPA's plugin
// sees uploads: it checks the request, gunzips the body and decodes the
// JSON array. status, when set, chooses each answer (by the upload's
// number, from 0); hold, when set, is waited on before answering.
type collector struct {
	t      testing.TB
	srv    *httptest.Server
	status func(n int) int
	hold   chan struct{}

	mu      sync.Mutex
	uploads int
	sizes   []int // gzipped body sizes of the uploads taken
	events  []json.RawMessage
	bad     []string // what was wrong with requests
}

func newCollector(t testing.TB, status func(n int) int) *collector {
	c := &collector{t: t, status: status}
	c.srv = httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(c.srv.Close)
	return c
}

func (c *collector) serve(w http.ResponseWriter, r *http.Request) {
	if c.hold != nil {
		select {
		case <-c.hold:
		case <-r.Context().Done():
			return
		}
	}
	body, err := io.ReadAll(r.Body)
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.uploads
	c.uploads++
	problem := func(format string, args ...any) {
		c.bad = append(c.bad, strconv.Itoa(n)+": "+fmt.Sprintf(format, args...))
		w.WriteHeader(http.StatusBadRequest)
	}
	switch {
	case err != nil:
		problem("read: %v", err)
		return
	case r.Method != http.MethodPost || r.URL.Path != "/logs":
		problem("%s %s, want POST /logs", r.Method, r.URL.Path)
		return
	case r.Header.Get("Content-Type") != "application/json" || r.Header.Get("Content-Encoding") != "gzip":
		problem("Content-Type %q, Content-Encoding %q", r.Header.Get("Content-Type"), r.Header.Get("Content-Encoding"))
		return
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		problem("gunzip: %v", err)
		return
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		problem("gunzip: %v", err)
		return
	}
	var events []json.RawMessage
	if err := json.Unmarshal(raw, &events); err != nil {
		problem("not a JSON array: %v", err)
		return
	}
	status := http.StatusOK
	if c.status != nil {
		status = c.status(n)
	}
	if status/100 == 2 {
		c.sizes = append(c.sizes, len(body))
		c.events = append(c.events, events...)
	}
	w.WriteHeader(status)
}

// got returns the events taken so far, and fails the test on any request
// that was not as OPA's plugin sends it.
func (c *collector) got() []json.RawMessage {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.bad) > 0 {
		c.t.Fatalf("bad uploads: %v", c.bad)
	}
	return slices.Clone(c.events)
}

func (c *collector) shipper(t testing.TB, o decisionlog.ShipperOptions) *decisionlog.Shipper {
	t.Helper()
	client, err := remote.Client("decision_log", config.Service{URL: c.srv.URL, Timeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	o.Collector = decisionlog.RESTCollector(client, "/logs")
	if o.Labels == nil {
		o.Labels = map[string]string{"id": "node-1", "version": "v1.2.3"}
	}
	if o.MinDelay == 0 {
		o.MinDelay, o.MaxDelay = 10*time.Millisecond, 50*time.Millisecond
	}
	return decisionlog.NewShipper(o)
}

// running is a Log running in the background until stop.
type running struct {
	*decisionlog.Log
	cancel context.CancelFunc
	done   chan error
}

func runLog(o decisionlog.Options, out io.Writer) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Log: decisionlog.New(o), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- r.Run(ctx, out) }()
	return r
}

// stop ends Run and returns how long it took to return.
func (r *running) stop(t testing.TB) time.Duration {
	t.Helper()
	start := time.Now()
	r.cancel()
	if err := <-r.done; err != nil {
		t.Errorf("Run: %v", err)
	}
	return time.Since(start)
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// opaEvent is OPA's decision log event (plugins/logs EventV1), the keys
// and types a collector written for OPA reads; importing OPA's type
// would pull in OPA's whole plugin runtime.
type opaEvent struct {
	Labels     map[string]string `json:"labels"`
	DecisionID string            `json:"decision_id"`
	Revision   string            `json:"revision"`
	Bundles    map[string]struct {
		Revision string `json:"revision"`
	} `json:"bundles"`
	Path      string         `json:"path"`
	Input     *any           `json:"input"`
	Result    *any           `json:"result"`
	Masked    []string       `json:"masked"`
	Erased    []string       `json:"erased"`
	Error     *opaError      `json:"error"`
	Timestamp time.Time      `json:"timestamp"`
	Metrics   map[string]any `json:"metrics"`
}

// opaError is the shape of OPA's errors in events.
type opaError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// TestShipOPAEvents: shipped events are OPA's decision log events, with
// every field OPA's format requires, the input masked and capped as the
// file's, and meshid's extras beside.
func TestShipOPAEvents(t *testing.T) {
	c := newCollector(t, nil)
	in := requestInput(t, map[string]string{"authorization": "Bearer s3cret", ":authority": "backend", "x-long": strings.Repeat("x", 300)}, "", nil)
	at := time.Date(2026, 12, 2, 3, 4, 5, 6, time.UTC)
	policy := decisionlog.NewPolicySet("/p", "v1", map[string][]byte{"a.rego": []byte("package a")})
	policy.Bundles = map[string]string{"authz": "v7", "data": "2026-12-01"}
	var file bytes.Buffer
	l := runLog(decisionlog.Options{MaxFieldBytes: 100, Shipper: c.shipper(t, decisionlog.ShipperOptions{Labels: map[string]string{"id": "node-1", "version": "v1.2.3", "region": "eu"}})}, &file)
	l.Add(&decisionlog.Record{ID: "a", Path: "data.envoy.authz.allow", Time: at, Duration: 1500, Input: in, Decision: ast.Boolean(true), Allowed: true, Policy: policy})
	l.Add(&decisionlog.Record{ID: "b", Path: "data.envoy.authz.allow", Time: at, Duration: 2, Input: in, Decision: value(t, `{"allowed": false, "body": "no"}`), DryRun: true, Policy: policy})
	l.Add(&decisionlog.Record{ID: "c", Path: `data.envoy["authz"].allow`, Time: at, Err: errors.New("eval: timed out")})
	waitFor(t, "3 events", func() bool { return len(c.got()) == 3 })
	l.stop(t)

	got := c.got()
	var events []opaEvent
	for _, raw := range got {
		var e opaEvent
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("not an OPA event: %v: %s", err, raw)
		}
		events = append(events, e)
	}
	for i, e := range events[:2] {
		if e.DecisionID != string(rune('a'+i)) || e.Path != "envoy/authz/allow" || !e.Timestamp.Equal(at) ||
			e.Labels["id"] != "node-1" || e.Labels["version"] != "v1.2.3" || e.Labels["region"] != "eu" ||
			e.Revision != policy.Revision || len(e.Bundles) != 2 || e.Bundles["authz"].Revision != "v7" || e.Bundles["data"].Revision != "2026-12-01" ||
			!slices.Equal(e.Masked, []string{"/input/attributes/request/http/headers/authorization"}) {
			t.Errorf("event %d = %+v", i, e)
		}
		if e.Input == nil || e.Result == nil || e.Metrics == nil {
			t.Fatalf("event %d has no input, result or metrics: %s", i, got[i])
		}
		h := dig(*e.Input, "attributes", "request", "http", "headers")
		if dig(h, "authorization") != "<masked>" || dig(h, ":authority") != "backend" || dig(h, "x-long") != strings.Repeat("x", 100)+"...[truncated: 300 bytes]" {
			t.Errorf("event %d input headers = %v: want authorization masked, x-long cut as in the file", i, h)
		}
	}
	if *events[0].Result != true || events[0].Metrics["timer_server_handler_ns"] != float64(1500) {
		t.Errorf("event a: result %v, metrics %v", *events[0].Result, events[0].Metrics)
	}
	if r, _ := (*events[1].Result).(map[string]any); r["allowed"] != false || r["body"] != "no" {
		t.Errorf("event b: result %v", *events[1].Result)
	}

	if e := events[2]; e.DecisionID != "c" || e.Path != "envoy/authz/allow" || e.Error == nil || *e.Error != (opaError{"meshid_decision_error", "eval: timed out"}) ||
		e.Input != nil || e.Result != nil || e.Masked != nil || e.Bundles != nil || e.Labels["id"] != "node-1" || e.Timestamp.IsZero() {
		t.Errorf("failed decision's event = %+v", e)
	}
	// meshid's extras, as a collector that keeps every key sees them.
	var extras []map[string]any
	for _, raw := range got {
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		extras = append(extras, m)
	}
	if extras[0]["allowed"] != true || extras[0]["truncated"] != true || extras[1]["allowed"] != false || extras[1]["dry_run"] != true {
		t.Errorf("extras: %v / %v", extras[0], extras[1])
	}
	// The file has its lines as before.
	if n := strings.Count(file.String(), "\n"); n != 3 || !strings.Contains(file.String(), `"path":"data.envoy.authz.allow"`) {
		t.Errorf("the file has %d lines: %s", n, file.String())
	}
}

// randomRecords are n decisions with inputs that gzip poorly (random
// header values), about size bytes of JSON each.
func randomRecords(t testing.TB, n, size int) []*decisionlog.Record {
	rs := make([]*decisionlog.Record, n)
	for i := range rs {
		b := make([]byte, size/2)
		rand.Read(b)
		in := requestInput(t, map[string]string{"x-random": hex.EncodeToString(b)}, "", nil)
		rs[i] = &decisionlog.Record{ID: "r" + strconv.Itoa(i), Path: "data.envoy.authz.allow", Time: time.Now(), Input: in, Decision: ast.Boolean(true), Allowed: true}
	}
	return rs
}

// ids are the decision ids of events.
func ids(t testing.TB, events []json.RawMessage) []string {
	var out []string
	for _, raw := range events {
		var e struct {
			ID string `json:"decision_id"`
		}
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e.ID)
	}
	return out
}

func recordIDs(rs []*decisionlog.Record) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

// TestShipBatchSizeCap: no upload is larger than UploadSizeLimit gzipped,
// and every event arrives once, in order.
func TestShipBatchSizeCap(t *testing.T) {
	c := newCollector(t, nil)
	rs := randomRecords(t, 300, 400)
	const limit = 4096
	s := c.shipper(t, decisionlog.ShipperOptions{UploadSizeLimit: limit})
	l := runLog(decisionlog.Options{QueueSize: len(rs), Shipper: s}, nil)
	for _, r := range rs {
		l.Add(r)
	}
	waitFor(t, "300 events", func() bool { return len(c.got()) >= len(rs) })
	l.stop(t)
	if got, want := ids(t, c.got()), recordIDs(rs); !slices.Equal(got, want) {
		t.Errorf("collector got %d events %v..., want the %d in order", len(got), got[:min(5, len(got))], len(want))
	}
	c.mu.Lock()
	sizes := slices.Clone(c.sizes)
	c.mu.Unlock()
	if total := sumInts(sizes); len(sizes) < 2 || total < 2*limit || slices.Max(sizes) > limit {
		t.Errorf("%d uploads of %v bytes: want each at most %d", len(sizes), sizes, limit)
	}
	if st := s.Stats(); st.Shipped != 300 || st.DroppedBufferFull+st.DroppedTooLarge+st.DroppedShutdown != 0 || st.BufferedEvents != 0 {
		t.Errorf("stats = %+v", st)
	}
}

// TestShipRetries: a collector answering 500 gets the same events again
// until it takes them: none lost, none twice, the failures counted.
func TestShipRetries(t *testing.T) {
	c := newCollector(t, func(n int) int {
		if n < 3 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	rs := randomRecords(t, 50, 100)
	s := c.shipper(t, decisionlog.ShipperOptions{})
	l := runLog(decisionlog.Options{QueueSize: len(rs), Shipper: s}, nil)
	for _, r := range rs {
		l.Add(r)
	}
	// The shipper counts once the answer is back, after the collector
	// has the events.
	waitFor(t, "50 events shipped", func() bool { return len(c.got()) >= len(rs) && s.Stats().Shipped >= 50 })
	if st := s.Stats(); st.Failures5xx != 3 || st.Shipped != 50 || st.LastSuccess.IsZero() || st.LastError != "" {
		t.Errorf("stats = %+v, want 3 5xx failures, 50 shipped", st)
	}
	l.stop(t)
	if got, want := ids(t, c.got()), recordIDs(rs); !slices.Equal(got, want) {
		t.Errorf("collector got %v, want %v", got, want)
	}
}

// TestShipCollectorDown: with the collector down the whole time, memory
// stays within the buffer, the oldest are dropped and counted, and
// shutdown gives up within its bound.
func TestShipCollectorDown(t *testing.T) {
	for _, tc := range []struct {
		name  string
		class func(decisionlog.ShipperStats) uint64
		down  func(c *collector)
	}{
		{"503", func(st decisionlog.ShipperStats) uint64 { return st.Failures5xx }, func(c *collector) {
			c.status = func(int) int { return http.StatusServiceUnavailable }
		}},
		{"401", func(st decisionlog.ShipperStats) uint64 { return st.Failures4xx }, func(c *collector) {
			c.status = func(int) int { return http.StatusUnauthorized }
		}},
		{"refused", func(st decisionlog.ShipperStats) uint64 { return st.FailuresError }, func(c *collector) { c.srv.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCollector(t, nil)
			tc.down(c)
			const buffer = 16 << 10
			s := c.shipper(t, decisionlog.ShipperOptions{UploadSizeLimit: 4096, BufferSizeLimit: buffer, FlushTimeout: 300 * time.Millisecond})
			l := runLog(decisionlog.Options{QueueSize: 10000, Shipper: s}, nil)
			rs := randomRecords(t, 500, 200)
			for _, r := range rs {
				l.Add(r)
			}
			waitFor(t, "failures and drops", func() bool { st := s.Stats(); return tc.class(st) >= 2 && st.DroppedBufferFull > 0 })
			st := s.Stats()
			if st.BufferedBytes > buffer || st.Shipped != 0 || st.LastError == "" || !st.LastSuccess.IsZero() {
				t.Errorf("stats = %+v: want at most %d bytes buffered, nothing shipped", st, buffer)
			}
			if took := l.stop(t); took > 2*time.Second {
				t.Errorf("shutdown took %v with the collector down, want about the 300ms flush bound", took)
			}
			st = s.Stats()
			if total := st.DroppedBufferFull + st.DroppedShutdown; total != uint64(len(rs)) || st.BufferedEvents != 0 {
				t.Errorf("stats = %+v: want all %d dropped (buffer full or at shutdown)", st, len(rs))
			}
			if len(c.got()) != 0 {
				t.Errorf("the collector took events while down")
			}
		})
	}
}

// TestShipSlowCollector: a collector that never answers holds up
// neither the decision log's file nor the shutdown beyond its bound.
func TestShipSlowCollector(t *testing.T) {
	c := newCollector(t, nil)
	c.hold = make(chan struct{})
	defer close(c.hold)
	s := c.shipper(t, decisionlog.ShipperOptions{UploadSizeLimit: 4096, BufferSizeLimit: 64 << 10, FlushTimeout: 300 * time.Millisecond})
	var file syncbuf.Buffer
	rs := randomRecords(t, 2000, 200)
	l := runLog(decisionlog.Options{QueueSize: len(rs), Shipper: s}, &file)
	start := time.Now()
	for _, r := range rs {
		l.Add(r)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("2000 Adds took %v", took)
	}
	waitFor(t, "2000 lines in the file", func() bool { return len(file.Lines("")) == len(rs) })
	if l.Dropped() != 0 {
		t.Errorf("the queue dropped %d decisions while the collector hung", l.Dropped())
	}
	if took := l.stop(t); took > 2*time.Second {
		t.Errorf("shutdown took %v with a hung collector, want about the 300ms flush bound", took)
	}
	if st := s.Stats(); st.Shipped != 0 || st.DroppedBufferFull == 0 || st.FailuresError == 0 {
		t.Errorf("stats = %+v", st)
	}
}

// TestShipTooLarge: an event that alone gzips past the upload limit is
// dropped and counted; the others go.
func TestShipTooLarge(t *testing.T) {
	c := newCollector(t, nil)
	s := c.shipper(t, decisionlog.ShipperOptions{UploadSizeLimit: 1024})
	l := runLog(decisionlog.Options{Shipper: s}, nil)
	rs := randomRecords(t, 3, 100)
	big := randomRecords(t, 1, 4000)[0]
	big.ID = "big"
	l.Add(rs[0])
	l.Add(big)
	l.Add(rs[1])
	l.Add(rs[2])
	waitFor(t, "3 events", func() bool { return len(c.got()) >= 3 })
	l.stop(t)
	if got := ids(t, c.got()); !slices.Equal(got, recordIDs(rs)) {
		t.Errorf("collector got %v", got)
	}
	if st := s.Stats(); st.DroppedTooLarge != 1 || st.Shipped != 3 {
		t.Errorf("stats = %+v", st)
	}
}

func sumInts(xs []int) int {
	n := 0
	for _, x := range xs {
		n += x
	}
	return n
}

// countingCollector takes every upload, gunzips and decodes it as a
// collector would, and counts the events.
type countingCollector struct {
	mu     sync.Mutex
	events int
}

func (c *countingCollector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	zr, err := gzip.NewReader(r.Body)
	var events []json.RawMessage
	if err == nil {
		err = json.NewDecoder(zr).Decode(&events)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	c.events += len(events)
	c.mu.Unlock()
}

// BenchmarkShip: the rate at which a node ships decisions to a local
// collector (an httptest server that gunzips and decodes), with the
// default batch size and buffer, against the rate the same decisions are
// written to a file (io.Discard) in the same run. The decision is a
// typical one: an Envoy request of a dozen headers.
func BenchmarkShip(b *testing.B) {
	headers := map[string]string{
		":authority": "backend.demo.svc:8080", ":method": "GET", ":path": "/api/v1/items?page=2", ":scheme": "http",
		"accept": "application/json", "user-agent": "curl/8.5.0", "x-request-id": "5d5a1f3e-9a4e-4f6b-8f0c-2f7c1b3a9d11",
		"x-forwarded-proto": "http", "x-envoy-expected-rq-timeout-ms": "15000", "authorization": "Bearer eyJhbGciOiJFUzI1NiJ9.e30.sig",
		"x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7", "x-b3-spanid": "e457b5a2e4d86bd1",
	}
	top := map[string]any{
		"parsed_path": []string{"api", "v1", "items"}, "parsed_query": map[string][]string{"page": {"2"}},
		"spiffe": map[string]any{"source": "spiffe://example.org/ns/demo/sa/frontend", "destination": "spiffe://example.org/ns/demo/sa/backend"},
	}
	policy := decisionlog.NewPolicySet("/p", "v1", map[string][]byte{"a.rego": []byte("package a")})
	// Decisions differ as they do on a node: their ids, times, request
	// ids and durations.
	recs := make([]*decisionlog.Record, 1000)
	for i := range recs {
		headers["x-request-id"] = decisionlog.NewID(time.Now())
		in := requestInput(b, headers, "", top)
		recs[i] = &decisionlog.Record{ID: decisionlog.NewID(time.Now()), Path: "data.envoy.authz.allow", Time: time.Now(), Duration: time.Duration(50000 + i*37), Input: in, Decision: ast.Boolean(i%10 != 0), Allowed: i%10 != 0, Policy: policy}
	}

	// rate runs b.N decisions through a log and returns decisions a
	// second, from the first Add until Run returned.
	rate := func(o decisionlog.Options, out io.Writer) float64 {
		o.QueueSize = b.N
		start := time.Now()
		l := runLog(o, out)
		for i := range b.N {
			l.Add(recs[i%len(recs)])
		}
		l.stop(b)
		return float64(b.N) / time.Since(start).Seconds()
	}
	b.ResetTimer()
	file := rate(decisionlog.Options{}, io.Discard)

	c := &countingCollector{}
	srv := httptest.NewServer(c)
	defer srv.Close()
	client, err := remote.Client("decision_log", config.Service{URL: srv.URL, Timeout: 5 * time.Second}, nil)
	if err != nil {
		b.Fatal(err)
	}
	s := decisionlog.NewShipper(decisionlog.ShipperOptions{Collector: decisionlog.RESTCollector(client, "/logs"), Labels: map[string]string{"id": "n", "version": "v"}})
	start := time.Now()
	rate(decisionlog.Options{Shipper: s}, nil)
	elapsed := time.Since(start)
	st := s.Stats()
	c.mu.Lock()
	got := c.events
	c.mu.Unlock()
	if uint64(got) != st.Shipped {
		b.Fatalf("collector counted %d events, shipper %d", got, st.Shipped)
	}
	shipped := float64(st.Shipped) / elapsed.Seconds()
	b.ReportMetric(shipped, "shipped/s")
	b.ReportMetric(shipped/file, "shipped/file")
	b.ReportMetric(float64(st.DroppedBufferFull)/float64(b.N), "dropped/op")
	if st.Shipped > 0 {
		b.ReportMetric(float64(st.UploadedBytes)/float64(st.Shipped), "gzB/event")
	}
}

// TestShipDropsOldest: while the collector is down, a full buffer drops
// its oldest events; once it is back it gets the newest, in order, and
// every event is either shipped or counted as dropped.
func TestShipDropsOldest(t *testing.T) {
	up := make(chan struct{}) // closed: the collector takes uploads
	c := newCollector(t, func(int) int {
		select {
		case <-up:
			return http.StatusOK
		default:
			return http.StatusServiceUnavailable
		}
	})
	s := c.shipper(t, decisionlog.ShipperOptions{UploadSizeLimit: 4096, BufferSizeLimit: 16 << 10})
	rs := randomRecords(t, 400, 200)
	l := runLog(decisionlog.Options{QueueSize: len(rs), Shipper: s}, nil)
	for _, r := range rs {
		l.Add(r)
	}
	waitFor(t, "a failed upload and drops", func() bool {
		st := s.Stats()
		return st.Failures5xx > 0 && st.DroppedBufferFull > 0 && st.DroppedBufferFull+uint64(st.BufferedEvents) == uint64(len(rs))
	})
	close(up)
	waitFor(t, "the buffer shipped", func() bool { st := s.Stats(); return st.BufferedEvents == 0 && st.Shipped > 0 })
	l.stop(t)
	got := ids(t, c.got())
	st := s.Stats()
	if want := recordIDs(rs)[len(rs)-len(got):]; !slices.Equal(got, want) {
		t.Errorf("collector got %v, want the newest %d in order: %v", got, len(got), want)
	}
	if st.Shipped != uint64(len(got)) || st.Shipped+st.DroppedBufferFull != uint64(len(rs)) {
		t.Errorf("stats = %+v: want the %d received shipped and the other %d dropped", st, len(got), len(rs)-len(got))
	}
}

// At each tick the shipper uploads what was buffered then: under steady
// traffic it does not chase the events that come during the upload with
// one tiny upload after another.
func TestShipTickUploadsWhatWasBuffered(t *testing.T) {
	// A collector that takes 10ms to answer: time for more events to
	// come during each upload.
	c := newCollector(t, func(int) int { time.Sleep(10 * time.Millisecond); return http.StatusOK })
	s := c.shipper(t, decisionlog.ShipperOptions{MinDelay: 500 * time.Millisecond, MaxDelay: 500 * time.Millisecond})
	l := runLog(decisionlog.Options{Shipper: s, QueueSize: 10000}, nil)
	rs := randomRecords(t, 2000, 100)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for _, r := range rs { // about 1000 a second for 2 s
		<-tick.C
		l.Add(r)
	}
	waitFor(t, "every event", func() bool { return len(c.got()) == len(rs) })
	l.stop(t)
	c.mu.Lock()
	uploads := c.uploads
	c.mu.Unlock()
	t.Logf("%d events in about %s: %d uploads", len(rs), 2*time.Second, uploads)
	// Four or five ticks, and the flush; none full.
	if uploads > 10 {
		t.Errorf("%d uploads for %d events over 2 s with a tick every 500ms: uploads chase the events that come", uploads, len(rs))
	}
}

// restShipper ships to srv's /logs, a service with a 1s timeout, and
// closes srv at the test's end.
func restShipper(t *testing.T, srv *httptest.Server, o decisionlog.ShipperOptions) *decisionlog.Shipper {
	t.Helper()
	t.Cleanup(srv.Close)
	client, err := remote.Client("decision_log", config.Service{URL: srv.URL, Timeout: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	o.Collector = decisionlog.RESTCollector(client, "/logs")
	return decisionlog.NewShipper(o)
}

// A collector that sends its answer's headers and then stalls does not
// stop shipping: each upload has a deadline (reading what the collector
// answers included).
func TestShipStalledAnswerIsAFailure(t *testing.T) {
	var mu sync.Mutex
	requests := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		requests++
		first := requests == 1
		mu.Unlock()
		if first {
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done() // a proxy that stalls mid-answer
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	s := restShipper(t, srv, decisionlog.ShipperOptions{MinDelay: 10 * time.Millisecond, MaxDelay: 50 * time.Millisecond, UploadTimeout: 300 * time.Millisecond})
	l := runLog(decisionlog.Options{Shipper: s}, nil)
	for _, r := range randomRecords(t, 20, 200) {
		l.Add(r)
	}
	// The collector said 200 to the first upload before it stalled: its
	// events count as shipped, and the stall costs UploadTimeout.
	waitFor(t, "the 20 events of the stalled answer", func() bool { return s.Stats().Shipped == 20 })
	for _, r := range randomRecords(t, 20, 200) {
		l.Add(r)
	}
	waitFor(t, "20 more", func() bool { return s.Stats().Shipped == 40 })
	l.stop(t)
	mu.Lock()
	defer mu.Unlock()
	if requests < 2 {
		t.Errorf("%d requests: want the stalled one and more", requests)
	}
}

// A redirect that turns the upload into a GET (301, 302, 303) carries no
// events: its 2xx is a failure, never events shipped.
func TestShipRedirectToGETIsAFailure(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		if r.URL.Path == "/logs" {
			http.Redirect(w, r, "/v2/logs", http.StatusMovedPermanently)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	s := restShipper(t, srv, decisionlog.ShipperOptions{MinDelay: 10 * time.Millisecond, MaxDelay: 20 * time.Millisecond})
	l := runLog(decisionlog.Options{Shipper: s}, nil)
	for _, r := range randomRecords(t, 5, 200) {
		l.Add(r)
	}
	waitFor(t, "two failed uploads", func() bool { return s.Stats().FailuresError >= 2 })
	st := s.Stats()
	l.stop(t)
	mu.Lock()
	defer mu.Unlock()
	if st.Shipped != 0 || !strings.Contains(st.LastError, "redirected the upload to GET") {
		t.Errorf("requests %v: stats %+v, want failures saying the upload was redirected to a GET", seen, st)
	}
}

// An event too large to ship, dropped while the collector is down, is
// neither an upload nor a recovery: the failures go on being backed off
// and nothing says the collector takes uploads again.
func TestShipTooLargeIsNoRecovery(t *testing.T) {
	c := newCollector(t, func(int) int { return http.StatusServiceUnavailable })
	var logs syncbuf.Buffer
	// The buffer holds the large event, not it and one more: the first
	// small one is dropped for it, and it is the oldest to upload.
	s := c.shipper(t, decisionlog.ShipperOptions{UploadSizeLimit: 1024, BufferSizeLimit: 8600, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	l := runLog(decisionlog.Options{Shipper: s, MaxFieldBytes: 16 << 10}, nil)
	l.Add(randomRecords(t, 1, 100)[0])
	waitFor(t, "a failed upload", func() bool { return s.Stats().Failures5xx >= 1 })
	big := randomRecords(t, 1, 8000)[0]
	big.ID = "big"
	l.Add(big)
	waitFor(t, "the large event dropped", func() bool { return s.Stats().DroppedTooLarge == 1 })
	l.Add(randomRecords(t, 1, 100)[0])
	before := s.Stats().Failures5xx
	waitFor(t, "another failed upload", func() bool { return s.Stats().Failures5xx > before })
	l.stop(t)
	if lines := logs.Lines("takes uploads again"); len(lines) > 0 {
		t.Errorf("recovery logged while the collector refused every upload: %s", lines[0])
	}
}

package authz_test

import (
	"bufio"
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshid/meshid/authz"
)

// runLog runs d until the test ends and returns a function that stops it
// and returns what it wrote, one decoded JSON object per line.
func runLog(t *testing.T, d *authz.DecisionLog, out *syncBuffer) func() []map[string]any {
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

func TestDecisionLog(t *testing.T) {
	var out syncBuffer
	d := authz.NewDecisionLog(authz.DecisionLogOptions{MaskHeaders: []string{"Authorization", "x-secret"}})
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

// blockingWriter blocks every write until released.
type blockingWriter struct {
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.release
	return len(p), nil
}

// TestDecisionLogDropsWhenFull: a writer that never returns costs log
// lines, counted, and never blocks a decision.
func TestDecisionLogDropsWhenFull(t *testing.T) {
	w := &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
	d := authz.NewDecisionLog(authz.DecisionLogOptions{QueueSize: 2})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, w) }()

	srv := newServer(t, engine(t, "package envoy.authz\n\nallow := true\n", authz.Config{}), authz.Options{DecisionLog: d})
	req := checkRequest(frontend, backend, "GET", "/hello")
	srv.Decide(t.Context(), req) // taken by Run, which then blocks in Write
	<-w.entered
	start := time.Now()
	for range 10 {
		srv.Decide(t.Context(), req)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("10 decisions took %v with a stuck decision log", took)
	}
	if got := d.Dropped(); got != 8 {
		t.Errorf("Dropped() = %d, want 8 (10 decisions, room for 2)", got)
	}
	close(w.release)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestDecisionLogSampling(t *testing.T) {
	var out syncBuffer
	d := authz.NewDecisionLog(authz.DecisionLogOptions{SampleRate: 0.25, QueueSize: 10000})
	stop := runLog(t, d, &out)
	srv := newServer(t, engine(t, "package envoy.authz\n\nallow := true\n", authz.Config{}), authz.Options{DecisionLog: d})
	for range 2000 {
		srv.Decide(t.Context(), checkRequest(frontend, backend, "GET", "/hello"))
	}
	// Failures are always logged.
	for range 10 {
		srv.Decide(t.Context(), checkRequest(frontend, backend, "GET", "/%zz"))
	}
	lines := stop()
	errs := 0
	for _, l := range lines {
		if l["error"] != nil {
			errs++
		}
	}
	if n := len(lines) - errs; n < 350 || n > 650 || errs != 10 {
		t.Errorf("logged %d of 2000 allows at rate 0.25 (want about 500) and %d of 10 failures", n, errs)
	}
}

// dig walks a decoded JSON line down keys.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// TestDecisionLogCaps: what a request's sender makes large is cut in the
// log, with a marker saying how large it was, and the line says it was
// cut; masking still applies, and a line with nothing to cut is as it was.
func TestDecisionLogCaps(t *testing.T) {
	var out syncBuffer
	d := authz.NewDecisionLog(authz.DecisionLogOptions{MaxFieldBytes: 100, MaxInputBytes: 20_000})
	stop := runLog(t, d, &out)
	e := engine(t, "package envoy.authz\n\nallow := {\"allowed\": true, \"headers\": {\"x-echo\": input.attributes.request.http.headers[\"x-long\"]}} if input.parsed_path == [\"echo\"]\n\nallow := true if input.parsed_path == [\"small\"]\n", authz.Config{})
	srv := newServer(t, e, authz.Options{DecisionLog: d})

	var fields []string
	for i := range 40 {
		fields = append(fields, `"k`+strconv.Itoa(i)+`":"v"`)
	}
	parsedJSON := "{" + strings.Join(fields, ",") + "}"
	big := checkRequest(frontend, backend, "POST", "/echo")
	h := big.Attributes.Request.Http
	h.Headers["content-type"] = "application/json"
	h.Body = parsedJSON
	h.Headers["x-long"] = strings.Repeat("é", 150) // 300 bytes
	h.Headers["authorization"] = "Bearer " + strings.Repeat("t", 500)
	wide := checkRequest(frontend, backend, "GET", "/small")
	for i := range 400 {
		wide.Attributes.Request.Http.Headers["x-header-"+strconv.Itoa(i)] = strings.Repeat("v", 90)
	}
	long := checkRequest(frontend, backend, "GET", "/"+strings.Repeat("a", 200)+"%zz")

	srv.Decide(t.Context(), big)
	srv.Decide(t.Context(), checkRequest(frontend, backend, "GET", "/small"))
	srv.Decide(t.Context(), wide)
	rLong := srv.Decide(t.Context(), long)
	lines := stop()
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 4", len(lines))
	}

	http := dig(lines[0], "input", "attributes", "request", "http")
	cut := strings.Repeat("é", 50) + "...[truncated: 300 bytes]"
	if got := dig(http, "headers", "x-long"); got != cut {
		t.Errorf("a 300-byte header logged as %q, want %q", got, cut)
	}
	if got := dig(http, "headers", "authorization"); got != "<masked>" {
		t.Errorf("authorization logged as %q, want it masked", got)
	}
	if got, _ := dig(http, "body").(string); got != parsedJSON[:100]+"...[truncated: "+strconv.Itoa(len(parsedJSON))+" bytes]" {
		t.Errorf("body logged as %q", got)
	}
	if got, want := dig(lines[0], "input", "parsed_body"), "[truncated: "+strconv.Itoa(len(parsedJSON))+" bytes of JSON]"; got != want {
		t.Errorf("parsed_body logged as %v, want %q", got, want)
	}
	// The result as a whole, its header cut already, is over 100 bytes.
	if got, _ := lines[0]["result"].(string); !strings.HasPrefix(got, "[truncated: ") {
		t.Errorf("result logged as %v, want a marker", lines[0]["result"])
	}
	if lines[0]["truncated"] != true {
		t.Errorf("a line with cut fields does not say so: %v", lines[0])
	}

	if _, ok := lines[1]["truncated"]; ok || dig(lines[1], "input", "parsed_path") == nil {
		t.Errorf("a small decision logged as %v: want it whole, without truncated", lines[1])
	}

	if got, _ := dig(lines[2], "input").(string); !strings.HasPrefix(got, "[truncated: ") || !strings.HasSuffix(got, " bytes of JSON]") || lines[2]["truncated"] != true {
		t.Errorf("an input over 20000 bytes logged as %.100v, want a marker", lines[2]["input"])
	} else if n, err := strconv.Atoi(strings.Fields(got)[1]); err != nil || n < 400*100 {
		t.Errorf("the marker %q does not give the input's size (at least %d)", got, 400*100)
	}

	if got, _ := lines[3]["error"].(string); len(got) > 100+len("...[truncated: 9999 bytes]") || !strings.HasSuffix(got, "...[truncated: "+strconv.Itoa(len(rLong.Err.Error()))+" bytes]") {
		t.Errorf("error logged as %q (%d bytes), want it cut to 100 bytes and a marker", got, len(got))
	}
}

// TestDecisionLogHugeBody: the request that once wrote megabytes per line
// (a 3.8 MB body, logged raw and parsed) writes a line bounded by the
// default caps.
func TestDecisionLogHugeBody(t *testing.T) {
	var out syncBuffer
	d := authz.NewDecisionLog(authz.DecisionLogOptions{})
	stop := runLog(t, d, &out)
	srv := newServer(t, engine(t, "package envoy.authz\n\nallow := true\n", authz.Config{}), authz.Options{DecisionLog: d})
	for range 10 {
		if r := srv.Decide(t.Context(), hugeBodyRequest()); !r.Allowed {
			t.Fatalf("denied: %v", r.Err)
		}
	}
	lines := stop()
	if n := len(out.String()); len(lines) != 10 || n > 10*(authz.DefaultDecisionLogMaxInputBytes+authz.DefaultDecisionLogMaxFieldBytes) {
		t.Errorf("10 decisions on a %d-byte body wrote %d lines, %d bytes", len(hugeBodyRequest().Attributes.Request.Http.Body), len(lines), n)
	}
}

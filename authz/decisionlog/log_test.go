package decisionlog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/meshid/meshid/authz/decisionlog"
)

// value is the ast.Value of a JSON document.
func value(t testing.TB, doc string) ast.Value {
	t.Helper()
	v, err := ast.ParseTerm(doc)
	if err != nil {
		t.Fatalf("%s: %v", doc, err)
	}
	return v.Value
}

// requestInput is an input document as package input builds one, with
// the request's headers and body where it puts them and the top-level
// fields in top.
func requestInput(t testing.TB, headers map[string]string, body string, top map[string]any) ast.Value {
	t.Helper()
	h := map[string]any{"method": "POST", "headers": headers}
	if body != "" {
		h["body"] = body
	}
	doc := map[string]any{"attributes": map[string]any{"request": map[string]any{"http": h}}}
	for k, v := range top {
		doc[k] = v
	}
	v, err := ast.InterfaceToValue(doc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// written is what a log with o writes of rs: each record is added, then
// Run, its context ended already, writes what is queued and returns.
// Every line must be one JSON object.
func written(t testing.TB, o decisionlog.Options, out io.Writer, rs ...*decisionlog.Record) []map[string]any {
	t.Helper()
	d := decisionlog.New(o)
	for _, r := range rs {
		d.Add(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var buf bytes.Buffer
	if err := d.Run(ctx, io.MultiWriter(&buf, out)); err != nil {
		t.Fatalf("Run: %v", err)
	}
	var lines []map[string]any
	for line := range bytes.Lines(buf.Bytes()) {
		var m map[string]any
		if !bytes.HasSuffix(line, []byte("\n")) || json.Unmarshal(line, &m) != nil {
			t.Fatalf("not a line of one JSON object: %q", line)
		}
		lines = append(lines, m)
	}
	return lines
}

// TestLine: a record is written as the fields of OPA's decision log event
// that apply, in one line; request headers named by MaskHeaders (in any
// case) are masked where the input document has them, and only there.
func TestLine(t *testing.T) {
	in := requestInput(t, map[string]string{"authorization": "Bearer s3cret", "x-secret": "hush", ":authority": "backend"}, "", map[string]any{"context": map[string]any{"x-secret": "kept"}})
	at := time.Date(2025, 1, 2, 3, 4, 5, 6, time.FixedZone("CET", 3600))
	var out bytes.Buffer
	written(t, decisionlog.Options{MaskHeaders: []string{"Authorization", "x-secret"}}, &out,
		&decisionlog.Record{ID: "a", Path: "data.envoy.authz.allow", Time: at, Duration: 1500, Input: in, Decision: ast.Boolean(true), Allowed: true},
		&decisionlog.Record{ID: "b", Path: "data.envoy.authz.allow", Time: at, Duration: 2, Input: in, Decision: value(t, `{"allowed": false, "body": "no"}`), DryRun: true},
		&decisionlog.Record{ID: "c", Path: "data.envoy.authz.allow", Time: at, Err: errors.New("build policy input: request path \"/%zz\": invalid URL escape \"%zz\"")},
		&decisionlog.Record{ID: "d", Time: at},
	)
	loggedInput := `{"attributes":{"request":{"http":{"headers":{":authority":"backend","authorization":"<masked>","x-secret":"<masked>"},"method":"POST"}}},"context":{"x-secret":"kept"}}`
	want := `{"decision_id":"a","timestamp":"2025-01-02T02:04:05.000000006Z","path":"data.envoy.authz.allow","input":` + loggedInput + `,"result":true,"allowed":true,"duration_ns":1500}
{"decision_id":"b","timestamp":"2025-01-02T02:04:05.000000006Z","path":"data.envoy.authz.allow","input":` + loggedInput + `,"result":{"allowed":false,"body":"no"},"allowed":false,"dry_run":true,"duration_ns":2}
{"decision_id":"c","timestamp":"2025-01-02T02:04:05.000000006Z","path":"data.envoy.authz.allow","allowed":false,"error":"build policy input: request path \"/%zz\": invalid URL escape \"%zz\"","duration_ns":0}
{"decision_id":"d","timestamp":"2025-01-02T02:04:05.000000006Z","allowed":false,"duration_ns":0}
`
	if got := out.String(); got != want {
		t.Errorf("wrote\n%s\nwant\n%s", got, want)
	}
	// The terms the server keeps using were not masked in place.
	if !strings.Contains(in.String(), "Bearer s3cret") {
		t.Errorf("masking changed the input terms: %s", in)
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

// TestLogDropsWhenFull: a writer that never returns costs log lines,
// counted, and never blocks the one adding them.
func TestLogDropsWhenFull(t *testing.T) {
	w := &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
	d := decisionlog.New(decisionlog.Options{QueueSize: 2})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, w) }()

	d.Add(&decisionlog.Record{ID: "taken"}) // taken by Run, which then blocks in Write
	<-w.entered
	start := time.Now()
	for i := range 10 {
		d.Add(&decisionlog.Record{ID: strconv.Itoa(i)})
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

// TestLogSampling: SampleRate logs about that fraction of the decisions,
// and every failure.
func TestLogSampling(t *testing.T) {
	var rs []*decisionlog.Record
	for i := range 2000 {
		rs = append(rs, &decisionlog.Record{ID: strconv.Itoa(i), Allowed: true})
	}
	for range 10 {
		rs = append(rs, &decisionlog.Record{ID: "failed", Err: errors.New("no decision")})
	}
	lines := written(t, decisionlog.Options{SampleRate: 0.25, QueueSize: len(rs)}, io.Discard, rs...)
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

// TestLogCaps: what a request's sender makes large is cut in the log,
// with a marker saying how large it was, and the line says it was cut;
// masking still applies, and a line with nothing to cut is as it was.
func TestLogCaps(t *testing.T) {
	var fields []string
	for i := range 40 {
		fields = append(fields, `"k`+strconv.Itoa(i)+`":"v"`)
	}
	parsedJSON := "{" + strings.Join(fields, ",") + "}"
	long := strings.Repeat("é", 150) // 300 bytes
	big := requestInput(t, map[string]string{"content-type": "application/json", "x-long": long, "authorization": "Bearer " + strings.Repeat("t", 500)}, parsedJSON,
		map[string]any{"parsed_body": json.RawMessage(parsedJSON), "parsed_path": []string{"echo"}})
	echo := value(t, `{"allowed": true, "headers": {"x-echo": `+strconv.Quote(long)+`}}`)
	small := requestInput(t, map[string]string{}, "", map[string]any{"parsed_path": []string{"small"}})
	wideHeaders := map[string]string{}
	for i := range 400 {
		wideHeaders["x-header-"+strconv.Itoa(i)] = strings.Repeat("v", 90)
	}
	wide := requestInput(t, wideHeaders, "", nil)
	longErr := errors.New("request path " + strings.Repeat("a", 200) + ": invalid URL escape")

	lines := written(t, decisionlog.Options{MaxFieldBytes: 100, MaxInputBytes: 20_000}, io.Discard,
		&decisionlog.Record{ID: "big", Input: big, Decision: echo, Allowed: true},
		&decisionlog.Record{ID: "small", Input: small, Decision: ast.Boolean(true), Allowed: true},
		&decisionlog.Record{ID: "wide", Input: wide, Decision: ast.Boolean(true), Allowed: true},
		&decisionlog.Record{ID: "long", Err: longErr},
	)
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

	if got, _ := lines[3]["error"].(string); len(got) > 100+len("...[truncated: 9999 bytes]") || !strings.HasSuffix(got, "...[truncated: "+strconv.Itoa(len(longErr.Error()))+" bytes]") {
		t.Errorf("error logged as %q (%d bytes), want it cut to 100 bytes and a marker", got, len(got))
	}
}

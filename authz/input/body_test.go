package input_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshid/meshid/authz/input"
)

// TestBodiesSeenByPolicies: form and multipart bodies as parsed_body.
func TestBodiesSeenByPolicies(t *testing.T) {
	tests := []struct {
		name, contentType, body, holds string
	}{
		{"form", "application/x-www-form-urlencoded", "a=1&b=x%20y&a=2", `input.parsed_body == {"a": ["1", "2"], "b": ["x y"]}`},
		{"multipart", "multipart/form-data; boundary=foo",
			"--foo\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nada\r\n" +
				"--foo\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json\r\n\r\n{\"n\": 1}\r\n" +
				"--foo\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nlovelace\r\n--foo--\r\n",
			`input.parsed_body == {"name": ["ada", "lovelace"], "meta": [{"n": 1}]}`},
		{"multipart with LF line ends", "multipart/form-data; boundary=foo",
			"--foo\nContent-Disposition: form-data; name=\"foo\"\nContent-Type: text/plain\n\nbar\n--foo--\n",
			`input.parsed_body == {"foo": ["bar"]}`},
		{"multipart with a binary file", "multipart/form-data; boundary=foo",
			"--foo\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\r\n\xff\x00\xfe\r\n--foo--\r\n",
			`count(input.parsed_body.file[0]) == 3`},
		{"text is not parsed", "text/plain", "a=1", `input.parsed_body == null`},
		{"form truncated", "application/x-www-form-urlencoded", "a=1", `input.truncated_body`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := checkRequest(frontend, backend, "POST", "/form")
			req.Attributes.Request.Http.Headers["content-type"] = tt.contentType
			req.Attributes.Request.Http.Body = tt.body
			if tt.name == "multipart with a binary file" {
				// Binary bodies come as bytes (with_request_body.pack_as_bytes):
				// a string field must be UTF-8.
				req.Attributes.Request.Http.Body = ""
				req.Attributes.Request.Http.RawBody = []byte(tt.body)
			}
			if tt.name == "form truncated" {
				req.Attributes.Request.Http.Headers["content-length"] = "100"
			}
			doc, err := newBuilder(t, input.Options{}).Build(context.Background(), req, time.Time{})
			if err != nil || !holds(t, doc, tt.holds) {
				t.Errorf("does not hold: %s (%v)", tt.holds, err)
			}
		})
	}
}

// jsonRequest is a POST of body as JSON.
func jsonRequest(body string) *authv3.CheckRequest {
	req := checkRequest(frontend, backend, "POST", "/upload")
	req.Attributes.Request.Http.Headers["content-type"] = "application/json"
	req.Attributes.Request.Http.Body = body
	return req
}

// wideJSON is an object of n small fields: the shape that costs a JSON
// decoder the most per byte. 200000 fields are 3.8 MB.
func wideJSON(n int) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"field%06d":%d`, i, i%10)
	}
	b.WriteByte('}')
	return b.String()
}

// multipartBody is a multipart/form-data body (boundary "b") of parts.
func multipartBody(parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		b.WriteString("--b\r\n" + p + "\r\n")
	}
	b.WriteString("--b--\r\n")
	return b.String()
}

// TestBodyOverMaxBytes: a body longer than MaxBytes is not parsed, of any
// type, and not reported truncated: it arrived whole and is in
// attributes.request.http as sent, for the policy to decide on. A debug
// line says so. A cut body is still reported truncated.
func TestBodyOverMaxBytes(t *testing.T) {
	var logged bytes.Buffer
	b := newBuilder(t, input.Options{
		Body:             input.BodyLimits{MaxBytes: 1024},
		ProtoDescriptors: testProtos(t),
		Log:              slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	big := `{"a": "` + strings.Repeat("x", 1100) + `"}`
	raw := jsonRequest("")
	raw.Attributes.Request.Http.RawBody = []byte(big)
	form := checkRequest(frontend, backend, "POST", "/form")
	form.Attributes.Request.Http.Headers["content-type"] = "application/x-www-form-urlencoded"
	form.Attributes.Request.Http.Body = "a=" + strings.Repeat("x", 1100)
	health := marshal(t, &grpc_health_v1.HealthCheckRequest{Service: strings.Repeat("s", 1100)})
	cut := jsonRequest(big)
	cut.Attributes.Request.Http.Headers["content-length"] = "5000"

	tests := []struct {
		name      string
		req       *authv3.CheckRequest
		truncated bool
		holds     string
	}{
		{"JSON", jsonRequest(big), false, `count(input.attributes.request.http.body) == 1109`},
		{"JSON as bytes", raw, false, `input.attributes.request.http.rawBody`},
		{"form", form, false, `count(input.attributes.request.http.body) == 1102`},
		{"gRPC", grpcRequest("/grpc.health.v1.Health/Check", "application/grpc", grpcFrame(0, health)), false, `input.attributes.request.http.rawBody`},
		{"gRPC cut short", grpcRequest("/grpc.health.v1.Health/Check", "application/grpc", grpcFrame(0, health)[:1050]), true, `input.attributes.request.http.rawBody`},
		{"cut short", cut, true, `count(input.attributes.request.http.body) == 1109`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parsed, truncated, err := bodyOf(t, b, tt.req)
			if err != nil || parsed != "null" || truncated != tt.truncated {
				t.Fatalf("parsed_body %s, truncated_body %v (%v); want null, %v", parsed, truncated, err, tt.truncated)
			}
			doc, err := b.Build(context.Background(), tt.req, time.Time{})
			if err != nil || !holds(t, doc, tt.holds) {
				t.Errorf("does not hold: %s (%v)", tt.holds, err)
			}
		})
	}
	if n := strings.Count(logged.String(), "request body not parsed"); n != 8 {
		// Four skipped bodies, each built twice.
		t.Errorf("%d debug lines about unparsed bodies, want 8:\n%s", n, logged.String())
	}
	if !strings.Contains(logged.String(), "bytes=1109 max_body_bytes=1024") {
		t.Errorf("the debug line does not give the size and the limit:\n%s", logged.String())
	}
	if _, _, err := bodyOf(t, b, jsonRequest(big[:1000]+`"}`)); err != nil {
		t.Errorf("a body within the limit: %v", err)
	}
}

// TestBodyLimits: a body nesting deeper, or holding more values, than the
// limits allow is an error (a deny) naming the setting; one at the limits
// is parsed.
func TestBodyLimits(t *testing.T) {
	b := newBuilder(t, input.Options{Body: input.BodyLimits{MaxDepth: 5, MaxValues: 20}})
	nest := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	form := func(body string) *authv3.CheckRequest {
		req := jsonRequest(body)
		req.Attributes.Request.Http.Headers["content-type"] = "application/x-www-form-urlencoded"
		return req
	}
	multipart := func(parts ...string) *authv3.CheckRequest {
		req := jsonRequest(multipartBody(parts...))
		req.Attributes.Request.Http.Headers["content-type"] = "multipart/form-data; boundary=b"
		return req
	}
	field := "Content-Disposition: form-data; name=\"f\"\r\n\r\nv"
	jsonPart := func(s string) string {
		return "Content-Disposition: form-data; name=\"j\"\r\nContent-Type: application/json\r\n\r\n" + s
	}
	tests := []struct {
		name string
		req  *authv3.CheckRequest
		want string // "": parsed
	}{
		{"JSON at the depth", jsonRequest(nest(5)), ""},
		{"JSON too deep", jsonRequest(nest(6)), "too deep: nests more than 5 levels (limit: max_body_depth)"},
		{"JSON at the values", jsonRequest(wideJSON(19)), ""},
		{"JSON too many values", jsonRequest(wideJSON(20)), "too many values: more than 20 (limit: max_body_values)"},
		{"form at the values", form(strings.Repeat("a=1&", 18) + "a=1"), ""},
		{"form too many values", form(strings.Repeat("a=1&", 19) + "a=1"), "too many values: more than 20 (limit: max_body_values)"},
		{"form of empty pairs", form(strings.Repeat("&", 100)), "too many values"},
		{"multipart at the values", multipart(slices.Repeat([]string{field}, 19)...), ""},
		{"multipart too many parts", multipart(slices.Repeat([]string{field}, 20)...), "part 20: too many values: more than 20 (limit: max_body_values)"},
		{"multipart JSON at the depth", multipart(jsonPart(nest(3))), ""},
		{"multipart JSON too deep", multipart(jsonPart(nest(4))), `part "j": at byte 3: too deep: nests more than 5 levels (limit: max_body_depth)`},
		{"multipart JSON too many values", multipart(field, jsonPart(wideJSON(18))), `part "j": at byte`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := b.Build(context.Background(), tt.req, time.Time{})
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("refused within the limits: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Build = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// TestHugeWideBody: the 3.8 MB object of 200000 fields that took OPA's
// decoder half a second and hundreds of megabytes. Over the default
// MaxBytes it is not parsed at all; with MaxBytes raised past it, parsing
// stops at MaxValues, having read a fraction of it and allocated a
// fraction of its size.
func TestHugeWideBody(t *testing.T) {
	body := wideJSON(200_000)
	req := jsonRequest(body)
	parsed, _, err := bodyOf(t, newBuilder(t, input.Options{}), req)
	if err != nil || parsed != "null" {
		t.Fatalf("default limits: parsed_body %.40s (%v), want null", parsed, err)
	}

	b := newBuilder(t, input.Options{Body: input.BodyLimits{MaxBytes: 8 << 20}})
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = b.Build(context.Background(), req, time.Time{})
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "more than 10000") {
		t.Fatalf("Build = %v, want too many values", err)
	}
	// At most 10000 fields were read: the error says where it stopped.
	at := strings.Index(body, `"field010000"`)
	var offset int
	if _, scanErr := fmt.Sscanf(err.Error()[strings.Index(err.Error(), "at byte"):], "at byte %d:", &offset); scanErr != nil || offset > at {
		t.Errorf("stopped at byte %d (%v), want at most %d of %d", offset, scanErr, at, len(body))
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(len(body)) {
		t.Errorf("allocated %d bytes refusing a %d-byte body", alloc, len(body))
	}
}

// TestBodyDeadline: parsing stops, with ErrDeadline, once the clock
// passes the deadline given to Build, not when the body is done.
func TestBodyDeadline(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var calls atomic.Int64
	// Each look at the clock is a millisecond later than the last.
	clock := func() time.Time { return start.Add(time.Duration(calls.Add(1)) * time.Millisecond) }
	b := newBuilder(t, input.Options{Clock: clock, Body: input.BodyLimits{MaxBytes: 8 << 20, MaxValues: 1 << 30}})
	body := wideJSON(200_000)
	_, err := b.Build(context.Background(), jsonRequest(body), start.Add(10*time.Millisecond))
	if !errors.Is(err, input.ErrDeadline) {
		t.Fatalf("Build = %v, want ErrDeadline", err)
	}
	// The clock is read every 1024 values: ten reads, a few more at most.
	if n := calls.Load(); n > 12 {
		t.Errorf("read the clock %d times before stopping, want about 10", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Build(ctx, jsonRequest(body), time.Time{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Build with the caller gone = %v, want context.Canceled", err)
	}
	if _, err := b.Build(context.Background(), jsonRequest(`{"a": 1}`), start.Add(time.Hour)); err != nil {
		t.Errorf("a small body before the deadline: %v", err)
	}
}

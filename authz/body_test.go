package authz_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/authz/decisionlog"
	"github.com/meshid/meshid/authz/input"
	"github.com/meshid/meshid/authz/response"
	"github.com/meshid/meshid/test/authztest"
	"github.com/meshid/meshid/test/syncbuf"
)

// hugeBody is the body of the finding that opened issue 13: a 3.8 MB JSON
// object of 200000 small fields, the shape that costs a JSON decoder the
// most per byte.
var hugeBody = sync.OnceValue(func() string {
	var b strings.Builder
	b.WriteByte('{')
	for i := range 200_000 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"field%06d":%d`, i, i%10)
	}
	b.WriteByte('}')
	return b.String()
})

// hugeBodyRequest is a POST of hugeBody as JSON.
func hugeBodyRequest() *authv3.CheckRequest { return bodyRequest("application/json", hugeBody()) }

func bodyRequest(contentType, body string) *authv3.CheckRequest {
	req := checkRequest(frontend, backend, "POST", "/upload")
	req.Attributes.Request.Http.Headers["content-type"] = contentType
	req.Attributes.Request.Http.Body = body
	return req
}

// fastest is the shortest of a few runs of decide, which a loaded machine
// can only make slower.
func fastest(t *testing.T, srv *authz.Server, req *authv3.CheckRequest) time.Duration {
	t.Helper()
	best := time.Duration(1<<63 - 1)
	for range 5 {
		start := time.Now()
		srv.Decide(t.Context(), req)
		best = min(best, time.Since(start))
	}
	return best
}

// TestHugeBodyIsCheap: the huge body costs what the limits allow, not
// what its 200000 fields would. Over the default max_body_bytes the JSON
// is not parsed and the decision is made: it costs what the same bytes
// sent as text/plain (never parsed) cost. With the limit raised past it,
// parsing stops at max_body_values and the request is denied: it costs
// what a body of max_body_values fields, parsed whole, costs. Each is
// compared in the same run, as the fastest of a few tries.
func TestHugeBodyIsCheap(t *testing.T) {
	e := engine(t, allowAll, authz.Config{EvalTimeout: time.Minute})
	for _, tt := range []struct {
		name     string
		limits   input.BodyLimits
		allowed  bool
		baseline *authv3.CheckRequest
	}{
		{"default limits", input.BodyLimits{}, true, bodyRequest("text/plain", hugeBody())},
		{"max_body_bytes past it", input.BodyLimits{MaxBytes: 8 << 20}, false, bodyRequest("application/json", hugeBody()[:strings.Index(hugeBody(), `,"field009999"`)]+"}")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, e, authz.Options{Input: input.Options{Body: tt.limits}})
			r := srv.Decide(t.Context(), hugeBodyRequest())
			if r.Allowed != tt.allowed {
				t.Fatalf("allowed = %v (%v), want %v", r.Allowed, r.Err, tt.allowed)
			}
			if !tt.allowed && !strings.Contains(fmt.Sprint(r.Err), "too many values: more than 10000 (limit: max_body_values)") {
				t.Errorf("error %v, want too many values", r.Err)
			}
			if r := srv.Decide(t.Context(), tt.baseline); !r.Allowed {
				t.Fatalf("the baseline request is denied: %v", r.Err)
			}
			baseline, huge := fastest(t, srv, tt.baseline), fastest(t, srv, hugeBodyRequest())
			if huge > 3*baseline {
				t.Errorf("deciding the huge body took %v, the baseline %v: more than 3 times as long", huge, baseline)
			}
		})
	}
}

// TestHugeBodiesAtOnce: eight huge bodies decided at once, decision log
// included, allocate a bounded multiple of the bodies' own size (they once
// reached 3.7 GB of RSS together).
func TestHugeBodiesAtOnce(t *testing.T) {
	for _, limits := range []input.BodyLimits{{}, {MaxBytes: 8 << 20}} {
		t.Run(fmt.Sprintf("max_body_bytes %d", limits.MaxBytes), func(t *testing.T) {
			var out syncbuf.Buffer
			d := decisionlog.New(decisionlog.Options{})
			stop := runLog(t, d, &out)
			srv := newServer(t, engine(t, allowAll, authz.Config{EvalTimeout: time.Minute}), authz.Options{DecisionLog: d, Input: input.Options{Body: limits}})
			reqs := make([]*authv3.CheckRequest, 8)
			for i := range reqs {
				reqs[i] = hugeBodyRequest()
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			var wg sync.WaitGroup
			for _, req := range reqs {
				wg.Go(func() { srv.Decide(context.Background(), req) })
			}
			wg.Wait()
			if lines := stop(); len(lines) != len(reqs) {
				t.Errorf("%d decision log lines, want %d", len(lines), len(reqs))
			}
			runtime.ReadMemStats(&after)
			bodies := uint64(len(reqs) * len(hugeBody()))
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > bodies {
				t.Errorf("deciding %d bodies of %d bytes allocated %d MB, more than the bodies themselves", len(reqs), len(hugeBody()), alloc>>20)
			}
		})
	}
}

// TestBodyOverMaxBytes: a body past max_body_bytes is not parsed but the
// decision is made, and the policy can tell: parsed_body is null, the body
// is there as sent, and truncated_body is false.
func TestBodyOverMaxBytes(t *testing.T) {
	e := engine(t, `package envoy.authz

default allow := false

allow if {
	input.parsed_body == null
	not input.truncated_body
	count(input.attributes.request.http.body) > 1024
}
`, authz.Config{})
	srv := newServer(t, e, authz.Options{Input: input.Options{Body: input.BodyLimits{MaxBytes: 1024}}})
	if r := srv.Decide(t.Context(), bodyRequest("application/json", `{"a": "`+strings.Repeat("x", 2000)+`"}`)); !r.Allowed || r.Err != nil {
		t.Errorf("allowed = %v (%v), want the policy to see an unparsed body and allow", r.Allowed, r.Err)
	}
	if r := srv.Decide(t.Context(), bodyRequest("application/json", `{"a": 1}`)); r.Allowed || r.Err != nil {
		t.Errorf("a small body: allowed = %v (%v), want it parsed, and denied by the policy", r.Allowed, r.Err)
	}
}

// TestDeepBodyDenies: a body nesting deeper than max_body_depth is refused
// cleanly: a deny with a decision id that says why, however deep it goes.
func TestDeepBodyDenies(t *testing.T) {
	srv := newServer(t, engine(t, allowAll, authz.Config{}), authz.Options{})
	for _, depth := range []int{65, 100_000} {
		body := strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
		r := srv.Decide(t.Context(), bodyRequest("application/json", body))
		if r.Allowed || r.Err == nil || !strings.Contains(r.Err.Error(), "too deep: nests more than 64 levels (limit: max_body_depth)") {
			t.Errorf("depth %d: allowed %v, err %v; want a deny saying it is too deep", depth, r.Allowed, r.Err)
		}
		assertDeniedWithID(t, r)
	}
}

func assertDeniedWithID(t *testing.T, r *authz.Result) {
	t.Helper()
	d := r.Response.GetDeniedResponse()
	if d == nil || !authztest.IsDecisionID(r.ID) {
		t.Fatalf("response %v, id %q: want a deny with a decision id", r.Response, r.ID)
	}
	for _, h := range d.GetHeaders() {
		if h.GetHeader().GetKey() == response.DecisionIDHeader && h.GetHeader().GetValue() == r.ID {
			return
		}
	}
	t.Errorf("denied response headers %v lack %s: %s", d.GetHeaders(), response.DecisionIDHeader, r.ID)
}

// TestDeadlineWhileParsing: the eval timeout bounds the whole decision.
// A body still being parsed when it passes is a deny with a decision id
// (fail closed), stopped partway through, not after the body is done.
func TestDeadlineWhileParsing(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var calls atomic.Int64
	// Each look at the clock is a millisecond later than the last.
	clock := func() time.Time { return start.Add(time.Duration(calls.Add(1)) * time.Millisecond) }
	srv := newServer(t, engine(t, allowAll, authz.Config{EvalTimeout: 50 * time.Millisecond}), authz.Options{
		Clock: clock,
		Input: input.Options{Body: input.BodyLimits{MaxBytes: 8 << 20, MaxValues: 1 << 30}},
	})
	r := srv.Decide(t.Context(), hugeBodyRequest())
	if r.Allowed || !errors.Is(r.Err, input.ErrDeadline) || !strings.Contains(r.Err.Error(), "not decided within the eval timeout (50ms): build policy input: request body: at byte") {
		t.Fatalf("allowed %v, err %v; want a deny for the eval timeout while building the input", r.Allowed, r.Err)
	}
	assertDeniedWithID(t, r)
	var offset int
	if _, err := fmt.Sscanf(r.Err.Error()[strings.Index(r.Err.Error(), "at byte"):], "at byte %d:", &offset); err != nil || offset >= len(hugeBody())/2 {
		t.Errorf("stopped at byte %d of %d (%v), want well before the end", offset, len(hugeBody()), err)
	}

	// The same clock, a small body: decided.
	calls.Store(0)
	if r := srv.Decide(t.Context(), bodyRequest("application/json", `{"a": 1}`)); !r.Allowed {
		t.Errorf("a small body: %v", r.Err)
	}
}

// TestHugePathLogsLittle: a request meshid denies is warned about in its
// log, quoting the request only in part: a caller chooses how long its
// path and principal are, and could otherwise write megabytes a request.
func TestHugePathLogsLittle(t *testing.T) {
	var logs syncbuf.Buffer
	srv := newServer(t, engine(t, allowAll, authz.Config{}), authz.Options{Log: slog.New(slog.NewTextHandler(&logs, nil))})
	path := "/" + strings.Repeat("a", 1<<20) + "%zz"
	r := srv.Decide(t.Context(), checkRequest("spiffe://example.org/"+strings.Repeat("p", 1<<20), backend, "GET", path))
	if r.Allowed {
		t.Fatal("a path with a bad escape was allowed")
	}
	if got := logs.String(); !strings.Contains(got, "denied because the policy reached no decision") || len(got) > 4096 {
		t.Errorf("logged %d bytes about one request, want one warning of at most 4096: %.300s", len(got), got)
	}
	if !strings.Contains(logs.String(), fmt.Sprintf("...[truncated: %d bytes]", len(path))) {
		t.Errorf("the warning does not say how long the path was: %.600s", logs.String())
	}
}

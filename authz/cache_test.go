package authz_test

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/authz/decisionlog"
	"github.com/meshid/meshid/authz/input"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/test/authztest"
	"github.com/meshid/meshid/test/syncbuf"
)

// cachePolicy reads input in every way the cache must key by: fixed
// paths, the query iterated over, a path segment by index, an
// object passed to a builtin, a JWT-SVID's validity (which changes with
// the clock), an x-forwarded-client-cert caller; and its results include
// sets, headers from input, bodies from input, an evaluation error and a
// result meshid cannot carry out, which must never be cached.
const cachePolicy = `package envoy.authz

default allow := false

roles := {"frontend": {"read"}, "admin": {"read", "write"}}

caller := input.spiffe.source.segments[3]

allow := {
	"allowed": true,
	"headers": {"x-caller": caller, "x-roles": roles[caller], "x-lang": object.get(input.parsed_query, "lang", ["none"])},
	"request_headers_to_remove": {"x-internal", lower(input.attributes.request.http.method)},
	"dynamic_metadata": {"via": input.spiffe.source.via, "query": json.marshal(input.parsed_query)},
} if {
	input.attributes.request.http.method in {"GET", "HEAD"}
	input.parsed_path[0] == "api"
	"read" in roles[caller]
	not input.parsed_query.bad
}

allow := {"allowed": true, "headers": {"x-jwt": input.spiffe.jwt.subject, "x-tenant": tenant}} if {
	input.attributes.request.http.method == "POST"
	input.spiffe.jwt.valid
	tenant := input.attributes.request.http.headers["x-tenant"]
	startswith(tenant, "t")
}

allow := {"allowed": false, "http_status": 401, "body": object.get(input.spiffe, ["jwt", "error"], "no token")} if {
	input.attributes.request.http.method == "POST"
	not input.spiffe.jwt.valid
}

allow := {"allowed": false, "http_status": 204, "headers": {"access-control-allow-origin": input.attributes.request.http.headers.origin, "x-query": keys}} if {
	input.attributes.request.http.method == "OPTIONS"
	keys := {k | some k, _ in input.parsed_query}
}

# Two values for one complete rule: an evaluation error.
allow := true if input.parsed_query.bad == ["conflict"]

allow := false if input.parsed_query.bad == ["conflict"]

# A result meshid cannot carry out.
allow := {"allowed": true, "headers": {"x-n": 1}} if input.parsed_query.bad == ["shape"]
`

// cacheWorld is a pair of servers deciding with the same policy, options
// and clock, one with the decision cache and one without, and the
// requests the differential tests draw from. With byRequest the servers
// validate no JWT-SVIDs and keep no decision log, so the cache is looked
// up by request key before the input is built; else by input key only.
type cacheWorld struct {
	byRequest     bool
	fromRequest   atomic.Int64 // cached decisions reached without an input
	cached, plain *authz.Server
	reg           *prometheus.Registry
	offset        atomic.Int64 // added to the servers' clock
	tokens        []string     // authorization header values
	log           *decisionlog.Log
	logOut        *syncbuf.Buffer
	stopLog       func()
}

func newCacheWorld(t testing.TB, byRequest bool) *cacheWorld {
	w := &cacheWorld{byRequest: byRequest, reg: prometheus.NewRegistry(), logOut: &syncbuf.Buffer{}}
	e := engine(t, cachePolicy, authz.Config{EvalTimeout: 5 * time.Second})
	if ok, why := e.Cacheable(); !ok {
		t.Fatalf("the policy is not cacheable: %s", why)
	}
	authority, err := ca.Open(ca.Options{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), Dir: t.TempDir(), TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	mint := func(sub string, aud ...string) string {
		s, err := authority.MintJWTSVID(ca.JWTRequest{ID: spiffeid.RequireFromString(sub), Audience: aud, TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return "Bearer " + s.Token
	}
	w.tokens = []string{"", mint(frontend, "backend"), mint("spiffe://example.org/ns/demo/sa/admin", "backend"), mint(frontend, "other"), "Bearer a.b.c", "Basic Zm9vOmJhcg=="}
	clock := func() time.Time { return time.Now().Add(time.Duration(w.offset.Load())) }
	opts := authz.Options{
		Input: input.Options{
			TrustXFCC:    true,
			XFCCProxies:  []string{"spiffe://example.org/gateway"},
			JWTAudiences: []string{"backend"},
			JWTBundles:   jwtbundle.NewSet(authority.JWTBundle()),
		},
		Clock: clock,
	}
	if byRequest {
		opts.Input.JWTAudiences, opts.Input.JWTBundles = nil, nil
	}
	w.plain = newServer(t, e, opts)
	w.log = decisionlog.New(decisionlog.Options{QueueSize: 1 << 16})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.log.Run(ctx, w.logOut) }()
	var once sync.Once
	w.stopLog = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(w.stopLog)
	opts.Cache = authz.CacheOptions{Enabled: true, MaxEntries: 128, MaxBytes: 1 << 20} // small: evictions happen
	if !byRequest {
		opts.DecisionLog = w.log
	}
	opts.Metrics = w.reg
	w.cached = newServer(t, e, opts)
	return w
}

// request builds the request choice picks: callers direct or through the
// gateway's x-forwarded-client-cert, methods, paths and queries, headers
// that matter and headers that differ on every request, JWT-SVIDs.
func (w *cacheWorld) request(choice func(n int) int) *authv3.CheckRequest {
	callers := []string{frontend, "spiffe://example.org/ns/demo/sa/admin", "spiffe://example.org/ns/demo/sa/nobody", "spiffe://other.org/ns/demo/sa/frontend", ""}
	methods := []string{"GET", "HEAD", "POST", "OPTIONS", "DELETE"}
	paths := []string{"/api/items", "/api/items?lang=fr", "/api/items?lang=fr&lang=en", "/api", "/other", "/api/x?bad=conflict", "/api/x?bad=shape", "/api/x?bad=%zz", "/"}
	caller := callers[choice(len(callers))]
	req := checkRequest(caller, backend, methods[choice(len(methods))], paths[choice(len(paths))])
	h := req.Attributes.Request.Http.Headers
	if choice(2) == 0 && caller != "" {
		req.Attributes.Source.Principal = "spiffe://example.org/gateway"
		h["x-forwarded-client-cert"] = "By=" + backend + ";URI=" + caller
	}
	if tok := w.tokens[choice(len(w.tokens))]; tok != "" {
		h["authorization"] = tok
	}
	if tenants := []string{"", "t1", "t2", "x"}; choice(2) == 0 {
		h["x-tenant"] = tenants[choice(len(tenants))]
	}
	if origins := []string{"https://a.example", "https://b.example"}; choice(2) == 0 {
		h["origin"] = origins[choice(len(origins))]
	}
	h["x-request-id"] = strings.Repeat("r", choice(40)) // read by no rule
	req.Attributes.Request.Http.Id = h["x-request-id"]
	req.Attributes.Request.Time = timestamppb.New(time.Unix(int64(choice(1000)), 0))
	// Fields read by no rule that make the input fail: a decision from
	// the cache must not answer these.
	switch choice(12) {
	case 0:
		h["traceparent"] = "00-\xff-01"
	case 1:
		req.Attributes.Request.Time.Nanos = -1
	case 2:
		req.Attributes.Request.Http.Id = "\xfe"
	}
	// Fields of a newer API than this build knows, which the input leaves
	// out, as the request key does.
	if choice(4) == 0 {
		unknown := protowire.AppendVarint(protowire.AppendTag(nil, 999, protowire.VarintType), uint64(choice(3)))
		req.Attributes.Request.Http.ProtoReflect().SetUnknown(unknown)
		req.Attributes.Source.ProtoReflect().SetUnknown(unknown)
	}
	return req
}

// compare decides req with both servers and requires the same answer but
// for the decision ids, which must be each decision's own.
func (w *cacheWorld) compare(t testing.TB, req *authv3.CheckRequest) {
	t.Helper()
	a := w.cached.Decide(context.Background(), req)
	b := w.plain.Decide(context.Background(), req)
	ra, ida := authztest.WithoutDecisionID(t, a.Response)
	rb, idb := authztest.WithoutDecisionID(t, b.Response)
	if !proto.Equal(ra, rb) || a.Allowed != b.Allowed || (a.Err == nil) != (b.Err == nil) || (a.Err != nil && a.Err.Error() != b.Err.Error()) {
		t.Fatalf("with and without the cache the answers differ for\n%s\ncached: %s (err %v)\n plain: %s (err %v)",
			protojson.Format(req), protojson.Format(ra), a.Err, protojson.Format(rb), b.Err)
	}
	if ida == idb || ida != a.ID {
		t.Fatalf("decision ids %s and %s: each decision must have its own", ida, idb)
	}
	if a.Input == nil && a.Err == nil {
		w.fromRequest.Add(1)
	}
}

// TestDecisionCacheDifferential: the same requests, many of them repeats
// of each other in what the policy reads, decided by two servers with and
// without the cache, concurrently, across JWT-SVIDs expiring and evictions:
// identical responses; every decision its own id and decision log line;
// and the cache answers most of them.
func TestDecisionCacheDifferential(t *testing.T) {
	for _, byRequest := range []bool{false, true} {
		t.Run(map[bool]string{false: "by input, with JWT-SVIDs and a decision log", true: "by request"}[byRequest], func(t *testing.T) {
			testCacheDifferential(t, newCacheWorld(t, byRequest))
		})
	}
}

func testCacheDifferential(t *testing.T, w *cacheWorld) {
	const rounds, workers, perRound = 3, 4, 100
	var ids sync.Map
	for round := range rounds {
		if round == rounds-1 {
			w.offset.Store(int64(2 * time.Minute)) // the JWT-SVIDs expire
		}
		var wg sync.WaitGroup
		for worker := range workers {
			rng := rand.New(rand.NewPCG(uint64(round), uint64(worker)))
			wg.Go(func() {
				for range perRound {
					// Skewed to the first choices, as a mesh's traffic is
					// to a few callers and paths.
					w.compare(t, w.request(func(n int) int { return min(rng.IntN(n), rng.IntN(n), rng.IntN(n)) }))
				}
			})
		}
		wg.Wait()
	}

	hits := counterValue(t, w.reg, "meshid_authz_cache_hits_total", "")
	misses := counterValue(t, w.reg, "meshid_authz_cache_misses_total", "")
	t.Logf("cache: %.0f hits (%d before the input was built), %.0f misses (%.0f%% hits)", hits, w.fromRequest.Load(), misses, 100*hits/(hits+misses))
	if hits == 0 || misses == 0 {
		t.Errorf("hits %v, misses %v: the requests repeat, the cache should both hit and miss", hits, misses)
	}
	if got := w.fromRequest.Load(); (got > 0) != w.byRequest {
		t.Errorf("%d decisions from the cache by request key; want some only when the servers allow it (%v)", got, w.byRequest)
	}
	if w.byRequest {
		return
	}

	w.stopLog()
	n := 0
	sc := bufio.NewScanner(strings.NewReader(w.logOut.String()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var line struct {
			ID string `json:"decision_id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatal(err)
		}
		if _, dup := ids.LoadOrStore(line.ID, true); dup {
			t.Fatalf("decision id %s logged twice", line.ID)
		}
		n++
	}
	if want := rounds * workers * perRound; n != want || w.log.Dropped() != 0 {
		t.Errorf("%d decision log lines (%d dropped), want one per decision: %d", n, w.log.Dropped(), want)
	}
}

// FuzzDecisionCache: any sequence of requests gets the same answers with
// and without the cache. The cache lives across inputs, so later inputs
// meet what earlier ones left in it.
func FuzzDecisionCache(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte("the same request twice: the same request twice: "))
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})
	f.Add([]byte{255, 254, 253, 0, 1, 255, 254, 253, 0, 1, 9, 9, 9, 9})
	worlds := []*cacheWorld{newCacheWorld(f, false), newCacheWorld(f, true)}
	f.Fuzz(func(t *testing.T, choices []byte) {
		for _, w := range worlds {
			i := 0
			choice := func(n int) int {
				if i >= len(choices) {
					return 0
				}
				i++
				return int(choices[i-1]) % n
			}
			for i < len(choices) {
				w.compare(t, w.request(choice))
			}
		}
	})
}

// cacheCounts are the cache's hits, misses and entries in reg.
func cacheCounts(t *testing.T, reg *prometheus.Registry) (hits, misses, entries float64) {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "meshid_authz_cache_entries" {
			entries = f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return counterValue(t, reg, "meshid_authz_cache_hits_total", ""), counterValue(t, reg, "meshid_authz_cache_misses_total", ""), entries
}

// TestDecisionCacheReload: a new policy set starts with an empty cache,
// so a decision of the old one is never answered by the new.
func TestDecisionCacheReload(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := authz.Options{Cache: authz.CacheOptions{Enabled: true, MaxEntries: 10}, Metrics: reg}
	policy := "package envoy.authz\n\nallow if input.attributes.request.http.method in data.methods\n"
	withMethods := func(methods string) *authz.Engine {
		e, err := authz.NewEngine(t.Context(), authz.Config{PolicyDir: writeFiles(t, map[string]string{"policy.rego": policy, "data.json": `{"methods": ` + methods + `}`})})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	srv := newServer(t, withMethods(`["GET"]`), opts)
	req := checkRequest(frontend, backend, "GET", "/")
	for range 2 {
		if r := srv.Decide(t.Context(), req); !r.Allowed {
			t.Fatalf("GET denied: %v", r.Err)
		}
	}
	// Two entries: under the input key and the request key.
	if hits, misses, entries := cacheCounts(t, reg); hits != 1 || misses != 1 || entries != 2 {
		t.Fatalf("hits %v, misses %v, entries %v; want 1, 1, 2", hits, misses, entries)
	}

	srv.SetEngine(withMethods(`["POST"]`)) // what the Reloader does with new data

	if _, _, entries := cacheCounts(t, reg); entries != 0 {
		t.Errorf("%v entries after the reload, want 0", entries)
	}
	if r := srv.Decide(t.Context(), req); r.Allowed {
		t.Error("after the reload GET is still allowed: the old policy's decision was answered")
	}
}

// TestDecisionCacheNeverKeepsFailures: a decision that failed (a result
// meshid cannot carry out, a timeout) is reached anew every time.
func TestDecisionCacheNeverKeepsFailures(t *testing.T) {
	for name, policy := range map[string]string{
		"bad result": "package envoy.authz\n\nallow := {\"allowed\": true, \"headers\": {\"x\": 1}}\n",
		"timeout":    slowPolicy,
	} {
		t.Run(name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			srv := newServer(t, engine(t, policy, authz.Config{EvalTimeout: 20 * time.Millisecond}),
				authz.Options{Cache: authz.CacheOptions{Enabled: true, MaxEntries: 10}, Metrics: reg})
			for range 2 {
				if r := srv.Decide(t.Context(), checkRequest(frontend, backend, "GET", "/")); r.Allowed || r.Err == nil {
					t.Fatalf("allowed %v, err %v; want a failure", r.Allowed, r.Err)
				}
			}
			if hits, misses, entries := cacheCounts(t, reg); hits != 0 || misses != 2 || entries != 0 {
				t.Errorf("hits %v, misses %v, entries %v; want 0, 2, 0", hits, misses, entries)
			}
		})
	}
}

// TestDecisionCacheOffForImpurePolicies: a policy that reads the clock is
// evaluated for every request, and the reason is logged.
func TestDecisionCacheOffForImpurePolicies(t *testing.T) {
	e := engine(t, "package envoy.authz\n\nallow if time.now_ns() > 0\n", authz.Config{})
	if ok, why := e.Cacheable(); ok || !strings.Contains(why, "time.now_ns at ") {
		t.Fatalf("Cacheable = %v, %q", ok, why)
	}
	var logs syncbuf.Buffer
	reg := prometheus.NewRegistry()
	srv := newServer(t, e, authz.Options{Cache: authz.CacheOptions{Enabled: true, MaxEntries: 10}, Metrics: reg, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	for range 2 {
		if r := srv.Decide(t.Context(), checkRequest(frontend, backend, "GET", "/")); !r.Allowed {
			t.Fatal(r.Err)
		}
	}
	if hits, misses, _ := cacheCounts(t, reg); hits != 0 || misses != 0 {
		t.Errorf("hits %v, misses %v; want the cache not consulted", hits, misses)
	}
	if !strings.Contains(logs.String(), "decision cache off") || !strings.Contains(logs.String(), "time.now_ns") {
		t.Errorf("log %q does not say why the cache is off", logs.String())
	}
}

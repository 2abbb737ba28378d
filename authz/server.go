package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/meshid/meshid/authz/decisionlog"
	"github.com/meshid/meshid/authz/input"
	"github.com/meshid/meshid/authz/response"
)

// Options configure a Server. The zero value denies with 403, logs
// nowhere, trusts no x-forwarded-client-cert and reads no JWT-SVIDs.
type Options struct {
	Log *slog.Logger // nil discards
	// DenyStatus is the HTTP status of a deny the policy did not give a
	// status to, failures included. Zero means 403.
	DenyStatus int
	// DryRun allows every request; what would have happened goes to the
	// log and the decision log.
	DryRun bool
	// Input says what the input document may take from
	// x-forwarded-client-cert and JWT-SVIDs, how gRPC bodies are decoded,
	// and how large and deep a body is parsed. Its Log is Log unless set.
	Input input.Options
	// DecisionLog receives every decision; nil logs none.
	DecisionLog *decisionlog.Log
	// Metrics registers the authz series; nil registers none.
	Metrics prometheus.Registerer
	// ExplainDenials gives every denial's decision log line a one-line
	// reason (Engine.Explain), worked out by the decision log after the
	// response is sent; allowed requests are not touched.
	ExplainDenials bool
	// Clock is time.Now unless a test sets it; it is Input's Clock too
	// unless that is set, and the clock of the eval timeout.
	Clock func() time.Time
	// Cache keeps decisions for requests that agree on everything the
	// policy reads of input; its zero value keeps none.
	Cache CacheOptions
}

// Server answers Envoy's ext_authz Check calls (gRPC, and HTTP through
// HTTPHandler) with the current Engine. Checks run concurrently; SetEngine
// swaps the engine for later ones without stopping any.
type Server struct {
	authv3.UnimplementedAuthorizationServer

	current    atomic.Pointer[decider]
	cacheOpts  CacheOptions
	jwt        bool // whether JWT-SVIDs are validated
	inputs     *input.Builder
	log        *slog.Logger
	denyStatus typev3.StatusCode
	dryRun     bool
	decisions  *decisionlog.Log
	explain    bool
	metrics    *serverMetrics
	clock      func() time.Time
}

// NewServer returns a Server deciding with engine. A nil engine denies
// every request until SetEngine gives it one.
func NewServer(engine *Engine, o Options) (*Server, error) {
	s := &Server{
		log:        o.Log,
		denyStatus: typev3.StatusCode_Forbidden,
		dryRun:     o.DryRun,
		decisions:  o.DecisionLog,
		explain:    o.ExplainDenials && o.DecisionLog != nil,
		clock:      o.Clock,
		cacheOpts:  o.Cache,
		jwt:        len(o.Input.JWTAudiences) > 0,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	if o.DenyStatus != 0 {
		if err := response.CheckDenyStatus(o.DenyStatus); err != nil {
			return nil, errors.New("deny status " + err.Error())
		}
		s.denyStatus = typev3.StatusCode(o.DenyStatus)
	}
	if o.Input.Clock == nil {
		o.Input.Clock = s.clock
	}
	if o.Input.Log == nil {
		o.Input.Log = s.log
	}
	var err error
	if s.inputs, err = input.NewBuilder(o.Input); err != nil {
		return nil, err
	}
	m, err := newServerMetrics(o.Metrics, o.DecisionLog, s.cacheLen)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	s.SetEngine(engine)
	return s, nil
}

// decider is a policy set and the decisions cached for it.
type decider struct {
	engine *Engine
	cache  *decisionCache // nil: none
	// byRequest says whether the cache is looked up by request key, before
	// the input is built (requestkey.go).
	byRequest bool
}

// SetEngine makes every later Check use engine, with an empty decision
// cache: nothing decided by the last policies and data is answered by
// these. Checks already running finish with the engine they started with.
func (s *Server) SetEngine(engine *Engine) {
	d := &decider{engine: engine}
	if engine != nil && s.cacheOpts.Enabled {
		if ok, why := engine.Cacheable(); ok {
			d.cache = newDecisionCache(s.cacheOpts)
			d.byRequest = s.decisions == nil && (!s.jwt || !engine.readsJWT)
		} else {
			s.log.Info("authz: decision cache off for these policies", "reason", why)
		}
	}
	s.current.Store(d)
}

// Engine is the policy set Checks use now.
func (s *Server) Engine() *Engine { return s.current.Load().engine }

// cacheLen is the number of decisions cached now.
func (s *Server) cacheLen() int {
	if c := s.current.Load().cache; c != nil {
		return c.len()
	}
	return 0
}

// Register adds the Authorization service to r.
func (s *Server) Register(r grpc.ServiceRegistrar) { authv3.RegisterAuthorizationServer(r, s) }

// ReloadErrors counts policy reloads that failed; the reloader adds to it.
func (s *Server) ReloadErrors() prometheus.Counter { return s.metrics.reloadErrors }

// Result is one decision and everything known about how it was reached:
// the record the decision log writes, and what Envoy is told.
type Result struct {
	decisionlog.Record
	// Response is what Envoy is told, decision id included.
	Response *authv3.CheckResponse
	engine   *Engine // the engine that decided; nil when none was loaded
}

var errNoEngine = errors.New("no policy loaded")

// Decide evaluates the current policy for req. It never fails: anything
// but a clear allow is a deny, with Err saying why when no decision was
// reached.
func (s *Server) Decide(ctx context.Context, req *authv3.CheckRequest) *Result {
	return s.decideFor(ctx, req, nil, response.WithDecisionID)
}

// stampFunc stamps a response with its decision id: response.WithDecisionID
// for a response read in memory, response.ForWire for one only sent.
type stampFunc func(resp *authv3.CheckResponse, id string) *authv3.CheckResponse

// decideFor is Decide for a front door that cannot carry out every
// response: carry says why it cannot carry out this one, which makes the
// decision a failure like any other; stamp is how the response gets its
// decision id.
func (s *Server) decideFor(ctx context.Context, req *authv3.CheckRequest, carry func(*authv3.CheckResponse) error, stamp stampFunc) *Result {
	start := s.clock()
	r := &Result{Record: decisionlog.Record{ID: newDecisionID(start), Time: start, DryRun: s.dryRun}}
	r.Err = s.decideSafely(ctx, req, r, start)
	if r.Err == nil && carry != nil {
		r.Err = carry(r.Response)
	}
	s.finish(req, r, start, stamp)
	return r
}

// finish turns a failure into a deny, applies dry run, stamps the
// decision id, and records the decision in metrics and logs.
func (s *Server) finish(req *authv3.CheckRequest, r *Result, start time.Time, stamp stampFunc) {
	if r.Err != nil {
		r.Allowed = false
		r.Response = response.Denied(s.failureStatus(r.Err))
	}
	if s.dryRun && !r.Allowed {
		md := r.Response.GetDynamicMetadata()
		r.Response = response.OK()
		r.Response.DynamicMetadata = md
	}
	r.Response = stamp(r.Response, r.ID)
	r.Duration = s.clock().Sub(start)
	s.metrics.observe(r)
	s.logDecision(req, r)
}

// failureStatus is the HTTP status of a deny no decision was reached
// for: 400 for a request that is not what it claims to be, as the plugin
// answers it (without its error message as the body: that quotes the
// request back to its sender), deny_status for the rest.
func (s *Server) failureStatus(err error) typev3.StatusCode {
	var malformed *input.MalformedError
	if errors.As(err, &malformed) {
		return typev3.StatusCode_BadRequest
	}
	return s.denyStatus
}

// refuse is the decision on a request that could not even be read.
func (s *Server) refuse(err error) *Result {
	start := s.clock()
	r := &Result{Record: decisionlog.Record{ID: newDecisionID(start), Time: start, DryRun: s.dryRun, Err: err}}
	s.finish(nil, r, start, response.WithDecisionID)
	return r
}

// decideSafely is decide with a panic in it (a bug in meshid or in OPA's
// evaluator that some request or policy reaches) turned into a failed
// decision, hence a deny, logged with its stack and counted: one request
// must not take down the node, its SDS and every other decision with it.
// Nothing is cached for it: the cache is written only once a decision
// is reached.
func (s *Server) decideSafely(ctx context.Context, req *authv3.CheckRequest, r *Result, start time.Time) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.metrics.panics.Inc()
			s.log.Error("authz: deciding panicked; the request is denied (a bug: please report it with this stack)",
				"decision_id", r.ID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = fmt.Errorf("internal error while deciding (logged with its stack as decision %s): %v", r.ID, p)
		}
	}()
	return s.decide(ctx, req, r, start)
}

// decide reaches the decision on req, begun at start: the eval timeout
// bounds all of it, the input (a request body is the sender's to make
// large) as well as the evaluation.
func (s *Server) decide(ctx context.Context, req *authv3.CheckRequest, r *Result, start time.Time) error {
	d := s.current.Load()
	e := d.engine
	if e == nil {
		return errNoEngine
	}
	r.Path, r.Policy, r.engine = e.decision, e.policy, e
	bp := keyBufs.Get().(*[]byte)
	defer keyBufs.Put(bp)
	buf := (*bp)[:0]
	var reqKey []byte
	if d.byRequest {
		var ok bool
		if reqKey, ok = appendRequestKey(buf, req, e.volatile); ok {
			*bp = reqKey[:0] // keep the buffer grown for the next
			if hit, ok := d.cache.get(reqKey); ok {
				s.metrics.cacheHits.Inc()
				r.Decision, r.Response, r.Allowed = hit.decision, hit.resp, hit.allowed
				return nil
			}
		} else {
			reqKey = nil
		}
	}
	deadline := start.Add(e.timeout)
	in, err := s.inputs.Build(ctx, req, deadline)
	if errors.Is(err, input.ErrDeadline) {
		return fmt.Errorf("not decided within the eval timeout (%v): build policy input: %w", e.timeout, err)
	}
	if err != nil {
		return fmt.Errorf("build policy input: %w", err)
	}
	r.Input = in
	var key []byte
	if d.cache != nil {
		base := buf
		if reqKey != nil {
			base = reqKey[len(reqKey):] // after it, in the same buffer
		}
		key = appendKey(base, in, e.keys)
		if reqKey == nil {
			*bp = key[:0]
		}
		if hit, ok := d.cache.get(key); ok {
			s.metrics.cacheHits.Inc()
			if reqKey != nil {
				d.cache.put(reqKey, hit)
			}
			r.Decision, r.Response, r.Allowed = hit.decision, hit.resp, hit.allowed
			return nil
		}
		s.metrics.cacheMisses.Inc()
	}
	growStack() // only now: a decision from the cache needs no deep stack
	if r.Decision, err = e.eval(ctx, in, deadline, s.clock); err != nil {
		return err
	}
	r.Response, r.Allowed, err = response.FromDecision(r.Decision, s.denyStatus)
	if err != nil {
		return &resultError{decision: e.decision, err: err}
	}
	// Only a decision reached is kept: a failure (a timeout, a result
	// meshid cannot carry out) may not repeat, and is logged each time.
	if d.cache != nil {
		hit := cachedDecision{decision: r.Decision, resp: r.Response, allowed: r.Allowed}
		d.cache.put(key, hit)
		if reqKey != nil {
			d.cache.put(reqKey, hit)
		}
	}
	return nil
}

// keyBufs hold the cache keys of decisions under way: a request key is
// most of a kilobyte.
var keyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// resultError is a decision value meshid cannot act on.
type resultError struct {
	decision string
	err      error
}

func (e *resultError) Error() string { return "decision " + e.decision + " " + e.err.Error() }
func (e *resultError) Unwrap() error { return e.err }

// Check answers one ext_authz request. It never returns a gRPC error: Envoy
// configured with failure_mode_allow lets a request through when the
// authorization service fails, so a policy failure must arrive as a deny.
// Its response is made to be sent (response.ForWire): decoded, it is the
// response Decide gives.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return s.decideFor(ctx, req, nil, response.ForWire).Response, nil
}

func (s *Server) logDecision(req *authv3.CheckRequest, r *Result) {
	if s.explain && !r.Allowed && r.engine != nil && r.Input != nil {
		e, in := r.engine, r.Input
		r.Reason = func() string { return e.reason(in) }
	}
	if s.decisions != nil {
		s.decisions.Add(&r.Record)
	}
	if r.Err == nil && !s.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	attrs := []any{
		slog.String("decision_id", r.ID),
		slog.String("source", logShort(req.GetAttributes().GetSource().GetPrincipal())),
		slog.String("method", logShort(httpReq.GetMethod())),
		slog.String("path", logShort(httpReq.GetPath())),
	}
	if r.DryRun && !r.Allowed {
		attrs = append(attrs, slog.Bool("dry_run", true))
	}
	switch {
	case r.Err != nil:
		s.log.Warn("authz: denied because the policy reached no decision", append(attrs, slog.Any("err", r.Err))...)
	case !r.Allowed:
		s.log.Debug("authz: denied by policy", attrs...)
	default:
		s.log.Debug("authz: allowed by policy", attrs...)
	}
}

// maxLoggedValue bounds what a log line about a decision quotes of the
// request: a caller may send megabytes of path, one warning per request.
const maxLoggedValue = 512

// logShort is s cut to maxLoggedValue bytes (at a character boundary),
// with its length when it was longer.
func logShort(s string) string {
	if len(s) <= maxLoggedValue {
		return s
	}
	n := maxLoggedValue
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "...[truncated: " + strconv.Itoa(len(s)) + " bytes]"
}

// newDecisionID is a UUID, the form OPA's decision ids take, that also
// says when it was made (decisionlog.NewID): at the decision's start, the
// time its log line has.
func newDecisionID(start time.Time) string { return decisionlog.NewID(start) }

// evalStack is about the stack a Rego evaluation of a policy like the
// shipped one needs.
const evalStack = 32 << 10

// stackDepth keeps growStack's frame from being optimized away.
var stackDepth = 1

// growStack grows the calling goroutine's stack before a Rego evaluation
// does. Evaluation recurses deeply, and gRPC serves every call on a new
// goroutine with a small stack: left alone, the stack grows by doubling
// and copying every frame, several times per call, deep in the evaluator
// where copying is dearest (a quarter of the CPU of a loaded server).
// Growing it here, where the stack is shallow, costs one cheap copy.
//
//go:noinline
func growStack() byte {
	var frame [evalStack]byte
	return frame[stackDepth]
}

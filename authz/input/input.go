package input

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshid/meshid/authz/input/internal/bodyterm"
	"github.com/meshid/meshid/authz/input/internal/prototerm"
)

// The input document is OPA-Envoy's: input.attributes is the CheckRequest's
// attributes in one of two encodings (Encoding), next to parsed_path,
// parsed_query, parsed_body, truncated_body, source_principal and version;
// meshid adds spiffe. By default attributes are what the current plugin
// writes, walking the proto (camelCase names, zero scalars left out,
// 64-bit integers and enums as numbers, timestamps as {seconds, nanos},
// bytes as base64); EncodingProtoJSON is what protojson.Marshal writes,
// as older plugins did.
//
// It is built as an ast.Value straight from the proto instead of going
// through a Go map (and, for protojson, JSON text), which is what
// OPA-Envoy does and what costs it most of its time per request. The
// fields Envoy sends on every request are written by hand below; anything
// rarer (filter metadata, a header_map, a pipe or internal address) goes
// through prototerm.Map or protojson, so the document stays identical by
// construction. input_internal_test.go holds the plugin's rules as the
// oracle and fuzzes the two against each other in both encodings.
//
// Values that recur across requests (a sidecar's own peer, the paths and
// header values of a service) are turned into terms once and shared:
// terms are immutable once built and OPA never changes its input.

// Keys of the input document, built once.
var (
	kAttributes      = ast.StringTerm("attributes")
	kSource          = ast.StringTerm("source")
	kDestination     = ast.StringTerm("destination")
	kRequest         = ast.StringTerm("request")
	kContextExt      = ast.StringTerm("contextExtensions")
	kMetadataContext = ast.StringTerm("metadataContext")
	kRouteMetadata   = ast.StringTerm("routeMetadataContext")
	kTLSSession      = ast.StringTerm("tlsSession")
	kSNI             = ast.StringTerm("sni")
	kAddress         = ast.StringTerm("address")
	kSocketAddress   = ast.StringTerm("socketAddress")
	kPortValue       = ast.StringTerm("portValue")
	kService         = ast.StringTerm("service")
	kLabels          = ast.StringTerm("labels")
	kPrincipal       = ast.StringTerm("principal")
	kCertificate     = ast.StringTerm("certificate")
	kTime            = ast.StringTerm("time")
	kHTTP            = ast.StringTerm("http")
	kID              = ast.StringTerm("id")
	kMethod          = ast.StringTerm("method")
	kHeaders         = ast.StringTerm("headers")
	kHeaderMap       = ast.StringTerm("headerMap")
	kPath            = ast.StringTerm("path")
	kHost            = ast.StringTerm("host")
	kScheme          = ast.StringTerm("scheme")
	kQuery           = ast.StringTerm("query")
	kFragment        = ast.StringTerm("fragment")
	kSize            = ast.StringTerm("size")
	kProtocol        = ast.StringTerm("protocol")
	kBody            = ast.StringTerm("body")
	kRawBody         = ast.StringTerm("rawBody")
	kParsedPath      = ast.StringTerm("parsed_path")
	kParsedQuery     = ast.StringTerm("parsed_query")
	kParsedBody      = ast.StringTerm("parsed_body")
	kTruncatedBody   = ast.StringTerm("truncated_body")
	kSourcePrincipal = ast.StringTerm("source_principal")
	kVersion         = ast.StringTerm("version")
	kSPIFFE          = ast.StringTerm("spiffe")
	kTrustDomain     = ast.StringTerm("trust_domain")
	kSegments        = ast.StringTerm("segments")
	kVia             = ast.StringTerm("via")
	kJWT             = ast.StringTerm("jwt")
	kSeconds         = ast.StringTerm("seconds")
	kNanos           = ast.StringTerm("nanos")

	falseTerm   = ast.BooleanTerm(false)
	trueTerm    = ast.BooleanTerm(true)
	emptyObject = ast.ObjectTerm()
	viaMTLS     = ast.StringTerm("mtls")
	viaXFCC     = ast.StringTerm("xfcc")
	// The plugin says "protojson" whichever way it encodes.
	versionTerm   = ast.ObjectTerm(ast.Item(ast.StringTerm("ext_authz"), ast.StringTerm("v3")), ast.Item(ast.StringTerm("encoding"), ast.StringTerm("protojson")))
	rootPathTerms = pathTerms{path: ast.ArrayTerm(ast.StringTerm("")), query: emptyObject}
)

// Cache bounds: enough for every path and peer of a busy sidecar, small
// enough that a client sending random values costs a few megabytes.
const (
	maxCachedString = 256
	maxCachedPath   = 2048
	stringCacheSize = 8192
	pathCacheSize   = 4096
	peerCacheSize   = 1024
	idCacheSize     = 1024
)

// uncachedHeaders differ on every request or carry secrets that should
// not outlive the request in a cache.
var uncachedHeaders = map[string]bool{
	"authorization": true, "proxy-authorization": true, "cookie": true,
	"x-request-id": true, "traceparent": true, "tracestate": true,
	"x-b3-traceid": true, "x-b3-spanid": true, "x-b3-parentspanid": true, "b3": true,
	"x-amzn-trace-id": true, "x-cloud-trace-context": true,
	"x-forwarded-client-cert": true, "content-length": true,
}

// Encoding is how input.attributes is written.
type Encoding string

const (
	// EncodingProtomap is the current OPA-Envoy plugin's form (its
	// protomap walk, PR #631): timestamps as {"seconds", "nanos"}, 64-bit
	// integers and enums as numbers, Any as {"typeUrl", "value"} with the
	// value's bytes in base64, Struct numbers as OPA prints a Go float64
	// (2500000 is 2.5e+06), and no field it cannot write. The default.
	EncodingProtomap Encoding = "protomap"
	// EncodingProtoJSON is protojson.Marshal's form, which plugins before
	// the walk wrote: timestamps as RFC 3339 text, 64-bit integers as
	// strings, enums by name, Any as {"@type", ...its fields}. Metadata
	// protojson cannot write (NaN, ±Inf, a Value without a kind, an Any
	// of a type meshid does not know) is an error, hence a deny, as it was
	// in those plugins.
	EncodingProtoJSON Encoding = "protojson"
)

// Options say what input.spiffe may take from a request besides the mTLS
// peer Envoy verified, and how gRPC bodies are decoded. The zero value
// trusts no x-forwarded-client-cert, reads no JWT-SVIDs and leaves gRPC
// bodies null.
type Options struct {
	// TrustXFCC takes input.spiffe.source from x-forwarded-client-cert
	// (the URI of its last element) when the request has one, from any
	// caller if XFCCProxies is empty, else only when the mTLS peer is one
	// of XFCCProxies (SPIFFE IDs).
	TrustXFCC   bool
	XFCCProxies []string
	// JWTAudiences turns on input.spiffe.jwt: a bearer JWT-SVID is valid
	// when signed by a key of JWTBundles, unexpired, and meant for one of
	// these audiences.
	JWTAudiences []string
	JWTBundles   jwtbundle.Source
	// ProtoDescriptors (LoadProtoDescriptors) decode gRPC request bodies
	// (content-type application/grpc) into input.parsed_body, as
	// OPA-Envoy's proto-descriptor does; nil leaves them null.
	ProtoDescriptors *ProtoDescriptors
	// Body bounds the work of parsing request bodies.
	Body BodyLimits
	// Encoding is how input.attributes is written; empty is
	// EncodingProtomap.
	Encoding Encoding
	// Clock tells when a JWT-SVID has expired and when Build's deadline
	// has passed; nil is time.Now.
	Clock func() time.Time
	// Log gets a debug line for each body left unparsed for its size;
	// nil discards.
	Log *slog.Logger
}

// Builder turns CheckRequests into policy input. It is safe for
// concurrent use; its caches only ever hold immutable terms.
type Builder struct {
	xfcc *xfccTrust    // nil: input.spiffe.source only from mTLS
	jwt  *jwtValidator // nil: no input.spiffe.jwt
	// bodies parses request bodies within the limits, gRPC ones with the
	// proto descriptors.
	bodies bodyterm.Parser
	clock  func() time.Time
	log    *slog.Logger
	// protojson writes attributes as protojson does, not as the plugin's
	// walk.
	protojson bool

	strings cache[string, *ast.Term]
	paths   cache[string, pathTerms]
	peers   cache[peerKey, *ast.Term]
	ids     cache[idKey, *ast.Term]
	spiffes cache[spiffeKey, *ast.Term]
}

// NewBuilder returns a Builder for o. JWT audiences without bundles to
// validate against are an error, as are negative body limits.
func NewBuilder(o Options) (*Builder, error) {
	limits, err := o.Body.withDefaults()
	if err != nil {
		return nil, err
	}
	switch o.Encoding {
	case "", EncodingProtomap, EncodingProtoJSON:
	default:
		return nil, fmt.Errorf("input encoding %q: want %q or %q", o.Encoding, EncodingProtomap, EncodingProtoJSON)
	}
	if o.Clock == nil {
		o.Clock = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	var xfcc *xfccTrust
	if o.TrustXFCC {
		xfcc = &xfccTrust{proxies: map[string]bool{}}
		for _, p := range o.XFCCProxies {
			xfcc.proxies[p] = true
		}
	}
	var jwt *jwtValidator
	if len(o.JWTAudiences) > 0 {
		if o.JWTBundles == nil {
			return nil, errors.New("JWT audiences are set but there are no JWT bundles to validate against")
		}
		jwt = newJWTValidator(o.JWTBundles, o.JWTAudiences, o.Clock)
	}
	b := newBuilder(xfcc, jwt)
	b.bodies = bodyterm.Parser{Limits: bodyterm.Limits(limits), Protos: o.ProtoDescriptors, Clock: o.Clock}
	b.clock, b.log = o.Clock, o.Log
	b.protojson = o.Encoding == EncodingProtoJSON
	return b, nil
}

// newBuilder is a Builder with the default body limits and no proto
// descriptors.
func newBuilder(xfcc *xfccTrust, jwt *jwtValidator) *Builder {
	limits, _ := BodyLimits{}.withDefaults()
	return &Builder{
		xfcc:    xfcc,
		jwt:     jwt,
		bodies:  bodyterm.Parser{Limits: bodyterm.Limits(limits), Clock: time.Now},
		clock:   time.Now,
		log:     slog.New(slog.DiscardHandler),
		strings: newCache[string, *ast.Term](stringCacheSize),
		paths:   newCache[string, pathTerms](pathCacheSize),
		peers:   newCache[peerKey, *ast.Term](peerCacheSize),
		ids:     newCache[idKey, *ast.Term](idCacheSize),
		spiffes: newCache[spiffeKey, *ast.Term](idCacheSize),
	}
}

// MalformedError is a request that is not what it claims to be, which
// Build cannot describe faithfully: a path or query with a bad escape, a
// body that does not parse as its content-type says, a bad
// content-length, a string that is not UTF-8, or what the encoding cannot
// write. The plugin answers such a request with a 400, and so does the
// server. Build's errors wrap it, except those of the body limits and of
// the deadline or context, which are meshid's refusals, not the request's
// fault.
type MalformedError struct{ Err error }

func (e *MalformedError) Error() string { return e.Err.Error() }
func (e *MalformedError) Unwrap() error { return e.Err }

// Build returns the input document for req. An error means the request
// cannot be described faithfully (a malformed path, body or field: a
// *MalformedError; a body beyond the limits) or not in time, and must be
// denied: parsing a body stops with an error wrapping ErrDeadline once the
// clock passes deadline (the zero time never does), or with ctx's error
// once ctx ends. The deadline is a time, not ctx's, so that a decision is
// bounded without a timer for every request.
func (b *Builder) Build(ctx context.Context, req *authv3.CheckRequest, deadline time.Time) (ast.Value, error) {
	v, err := b.build(ctx, req, deadline)
	if err != nil && !bodyterm.BeyondLimits(err) {
		return nil, &MalformedError{Err: err}
	}
	return v, err
}

func (b *Builder) build(ctx context.Context, req *authv3.CheckRequest, deadline time.Time) (ast.Value, error) {
	a := getArena()
	defer putArena(a)

	attrs := req.GetAttributes()
	httpReq := attrs.GetRequest().GetHttp()
	top := a.begin()
	if attrs != nil {
		t, err := b.attributes(a, attrs)
		if err != nil {
			return nil, err
		}
		a.add(kAttributes, t)
	}

	pt, err := b.parsedPath(httpReq.GetPath())
	if err != nil {
		return nil, fmt.Errorf("request path %s: %w", bodyterm.QuoteShort(httpReq.GetPath()), err)
	}
	a.add(kParsedPath, pt.path)
	a.add(kParsedQuery, pt.query)

	body, truncated, skipped, err := b.bodies.Parse(ctx, httpReq, deadline)
	if err != nil {
		return nil, fmt.Errorf("request body: %w", err)
	}
	if skipped > 0 && b.log.Enabled(ctx, slog.LevelDebug) {
		b.log.DebugContext(ctx, "authz: request body not parsed: it is larger than max_body_bytes; parsed_body is null",
			"path", bodyterm.QuoteShort(httpReq.GetPath()), "content_type", bodyterm.QuoteShort(httpReq.GetHeaders()["content-type"]),
			"bytes", skipped, "max_body_bytes", b.bodies.Limits.MaxBytes)
	}
	a.add(kParsedBody, body)
	a.add(kTruncatedBody, ast.InternedTerm(truncated))
	if p := attrs.GetSource().GetPrincipal(); p != "" {
		a.add(kSourcePrincipal, b.str(a, p))
	}
	a.add(kVersion, versionTerm)
	a.add(kSPIFFE, b.spiffe(a, attrs))
	return a.endValue(top), nil
}

func (b *Builder) attributes(a *arena, attrs *authv3.AttributeContext) (*ast.Term, error) {
	o := a.begin()
	if p := attrs.GetSource(); p != nil {
		t, err := b.peer(a, p)
		if err != nil {
			return nil, fmt.Errorf("source: %w", err)
		}
		a.add(kSource, t)
	}
	if p := attrs.GetDestination(); p != nil {
		t, err := b.peer(a, p)
		if err != nil {
			return nil, fmt.Errorf("destination: %w", err)
		}
		a.add(kDestination, t)
	}
	if r := attrs.GetRequest(); r != nil {
		t, err := b.request(a, r)
		if err != nil {
			return nil, err
		}
		a.add(kRequest, t)
	}
	if m := attrs.GetContextExtensions(); len(m) > 0 {
		t, err := b.stringMap(a, m, nil)
		if err != nil {
			return nil, fmt.Errorf("context extensions: %w", err)
		}
		a.add(kContextExt, t)
	}
	for _, md := range []struct {
		key *ast.Term
		m   *corev3.Metadata
	}{{kMetadataContext, attrs.GetMetadataContext()}, {kRouteMetadata, attrs.GetRouteMetadataContext()}} {
		if md.m == nil {
			continue
		}
		if len(md.m.GetFilterMetadata()) == 0 && len(md.m.GetTypedFilterMetadata()) == 0 {
			a.add(md.key, emptyObject)
			continue
		}
		t, err := b.rareMessage(md.m)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", md.key.Value.(ast.String), err)
		}
		a.add(md.key, t)
	}
	if tls := attrs.GetTlsSession(); tls != nil {
		s := a.begin()
		if sni := tls.GetSni(); sni != "" {
			t, err := b.checkedStr(a, sni)
			if err != nil {
				return nil, fmt.Errorf("tls session sni: %w", err)
			}
			a.add(kSNI, t)
		}
		a.add(kTLSSession, a.end(s))
	}
	return a.end(o), nil
}

// peerKey identifies a peer the common way Envoy describes it: a TCP
// socket address and the certificate's principal. Keep-alive connections
// make the same source peer arrive many times in a row.
type peerKey struct {
	ip, principal, certificate, service string
	port                                uint32
	// What is set, not only its value: no address and an empty socket
	// address render differently, as do no port and port 0.
	hasAddress, hasPort bool
}

func (b *Builder) peer(a *arena, p *authv3.AttributeContext_Peer) (*ast.Term, error) {
	sock := p.GetAddress().GetSocketAddress()
	simple := len(p.GetLabels()) == 0 && (p.GetAddress() == nil || plainSocketAddress(sock))
	var key peerKey
	if simple {
		_, hasPort := sock.GetPortSpecifier().(*corev3.SocketAddress_PortValue)
		key = peerKey{ip: sock.GetAddress(), port: sock.GetPortValue(), principal: p.GetPrincipal(), certificate: p.GetCertificate(), service: p.GetService(),
			hasAddress: p.GetAddress() != nil, hasPort: hasPort}
		if t, ok := b.peers.get(key); ok {
			return t, nil
		}
	}
	// A cached peer outlives the request, so its terms must not come from
	// the request's arena.
	pa := a
	if simple {
		pa = getArena()
		defer putArena(pa)
	}
	o := pa.begin()
	if addr := p.GetAddress(); addr != nil {
		var t *ast.Term
		var err error
		if simple {
			t, err = socketAddressTerm(pa, sock)
		} else {
			t, err = b.rareMessage(addr)
		}
		if err != nil {
			return nil, fmt.Errorf("address: %w", err)
		}
		pa.add(kAddress, t)
	}
	for _, f := range []struct {
		key *ast.Term
		val string
	}{{kService, p.GetService()}, {kPrincipal, p.GetPrincipal()}, {kCertificate, p.GetCertificate()}} {
		if f.val == "" {
			continue
		}
		t, err := pa.checkedStr(f.val)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.key.Value.(ast.String), err)
		}
		pa.add(f.key, t)
	}
	if m := p.GetLabels(); len(m) > 0 {
		t, err := b.stringMap(pa, m, nil)
		if err != nil {
			return nil, fmt.Errorf("labels: %w", err)
		}
		pa.add(kLabels, t)
	}
	t := pa.end(o)
	if simple {
		b.peers.put(key, t)
	}
	return t, nil
}

// plainSocketAddress is a TCP address with a port number and nothing
// else: what Envoy sends for every TCP peer.
func plainSocketAddress(s *corev3.SocketAddress) bool {
	if s == nil {
		return false
	}
	_, isPort := s.GetPortSpecifier().(*corev3.SocketAddress_PortValue)
	return (isPort || s.GetPortSpecifier() == nil) &&
		s.GetProtocol() == corev3.SocketAddress_TCP &&
		s.GetResolverName() == "" && !s.GetIpv4Compat() && s.GetNetworkNamespaceFilepath() == ""
}

func socketAddressTerm(a *arena, s *corev3.SocketAddress) (*ast.Term, error) {
	o := a.begin()
	if ip := s.GetAddress(); ip != "" {
		t, err := a.checkedStr(ip)
		if err != nil {
			return nil, err
		}
		a.add(kAddress, t)
	}
	// port_value is in a oneof, so protojson writes it even when 0.
	if p, ok := s.GetPortSpecifier().(*corev3.SocketAddress_PortValue); ok {
		a.add(kPortValue, a.term(ast.Number(strconv.FormatUint(uint64(p.PortValue), 10))))
	}
	sa := a.end(o)
	o = a.begin()
	a.add(kSocketAddress, sa)
	return a.end(o), nil
}

func (b *Builder) request(a *arena, r *authv3.AttributeContext_Request) (*ast.Term, error) {
	o := a.begin()
	if ts := r.GetTime(); ts != nil {
		if !b.protojson {
			a.add(kTime, timestampTerm(a, ts))
		} else {
			s, err := timestampJSON(ts)
			if err != nil {
				return nil, fmt.Errorf("request time: %w", err)
			}
			a.add(kTime, a.str(s))
		}
	}
	if h := r.GetHttp(); h != nil {
		t, err := b.httpRequest(a, h)
		if err != nil {
			return nil, err
		}
		a.add(kHTTP, t)
	}
	return a.end(o), nil
}

func (b *Builder) httpRequest(a *arena, h *authv3.AttributeContext_HttpRequest) (*ast.Term, error) {
	o := a.begin()
	for _, f := range []struct {
		key    *ast.Term
		val    string
		shared bool // worth a place in the cache
	}{
		{kID, h.GetId(), false},
		{kMethod, h.GetMethod(), true},
		{kPath, h.GetPath(), true},
		{kHost, h.GetHost(), true},
		{kScheme, h.GetScheme(), true},
		{kQuery, h.GetQuery(), true},
		{kFragment, h.GetFragment(), true},
		{kProtocol, h.GetProtocol(), true},
		{kBody, h.GetBody(), false},
	} {
		if f.val == "" {
			continue
		}
		var t *ast.Term
		var err error
		if f.shared {
			t, err = b.checkedStr(a, f.val)
		} else {
			t, err = a.checkedStr(f.val)
		}
		if err != nil {
			return nil, fmt.Errorf("request %s: %w", f.key.Value.(ast.String), err)
		}
		a.add(f.key, t)
	}
	if m := h.GetHeaders(); len(m) > 0 {
		t, err := b.stringMap(a, m, uncachedHeaders)
		if err != nil {
			return nil, fmt.Errorf("request headers: %w", err)
		}
		a.add(kHeaders, t)
	}
	if hm := h.GetHeaderMap(); hm != nil {
		t, err := b.rareMessage(hm)
		if err != nil {
			return nil, fmt.Errorf("request header map: %w", err)
		}
		a.add(kHeaderMap, t)
	}
	if n := h.GetSize(); n != 0 {
		if b.protojson {
			a.add(kSize, a.str(strconv.FormatInt(n, 10)))
		} else {
			a.add(kSize, a.term(ast.Number(strconv.FormatInt(n, 10))))
		}
	}
	if raw := h.GetRawBody(); len(raw) > 0 {
		a.add(kRawBody, a.str(base64.StdEncoding.EncodeToString(raw)))
	}
	return a.end(o), nil
}

// stringMap is a map<string, string> field; values of keys in uncached
// are never shared through the cache.
func (b *Builder) stringMap(a *arena, m map[string]string, uncached map[string]bool) (*ast.Term, error) {
	o := a.begin()
	for k, v := range m {
		kt, err := b.checkedStr(a, k)
		if err != nil {
			return nil, err
		}
		var vt *ast.Term
		if uncached[k] {
			vt, err = a.checkedStr(v)
		} else {
			vt, err = b.checkedStr(a, v)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", bodyterm.QuoteShort(k), err)
		}
		a.add(kt, vt)
	}
	return a.end(o), nil
}

var errInvalidUTF8 = errors.New("invalid UTF-8")

// checkedStr is a string term shared through the cache when short. Like
// protojson, it refuses invalid UTF-8: a policy comparing strings must
// see what the request said, not a repaired version of it.
func (b *Builder) checkedStr(a *arena, s string) (*ast.Term, error) {
	if len(s) > maxCachedString {
		return a.checkedStr(s)
	}
	if t, ok := b.strings.get(s); ok {
		return t, nil
	}
	if !utf8.ValidString(s) {
		return nil, errInvalidUTF8
	}
	t := ast.StringTerm(s)
	b.strings.put(s, t)
	return t, nil
}

// str is checkedStr for strings already known to be valid.
func (b *Builder) str(a *arena, s string) *ast.Term {
	if len(s) <= maxCachedString {
		if t, ok := b.strings.get(s); ok {
			return t
		}
	}
	return a.str(s)
}

// timestampJSON formats ts as protojson does: UTC, "Z", and 0, 3, 6 or 9
// fractional digits.
func timestampJSON(ts *timestamppb.Timestamp) (string, error) {
	if err := ts.CheckValid(); err != nil {
		return "", err
	}
	s := time.Unix(ts.GetSeconds(), int64(ts.GetNanos())).UTC().Format("2006-01-02T15:04:05.000000000")
	s = strings.TrimSuffix(s, "000")
	s = strings.TrimSuffix(s, "000")
	s = strings.TrimSuffix(s, ".000")
	return s + "Z", nil
}

// timestampTerm is ts as the plugin's walk writes it: {"seconds", "nanos"},
// either left out at zero (the epoch is {}), out of range or not.
func timestampTerm(a *arena, ts *timestamppb.Timestamp) *ast.Term {
	// Both numbers' digits share one string: one allocation, not two.
	var buf [40]byte
	digits := strconv.AppendInt(buf[:0], ts.GetSeconds(), 10)
	cut := len(digits)
	digits = strconv.AppendInt(digits, int64(ts.GetNanos()), 10)
	text := string(digits)
	o := a.begin()
	if ts.GetSeconds() != 0 {
		a.add(kSeconds, a.term(ast.Number(text[:cut])))
	}
	if ts.GetNanos() != 0 {
		a.add(kNanos, a.term(ast.Number(text[cut:])))
	}
	return a.end(o)
}

// rareMessage is m, a field Envoy seldom sets, written the slow, exact
// way of the builder's encoding.
func (b *Builder) rareMessage(m proto.Message) (*ast.Term, error) {
	if !b.protojson {
		return prototerm.Map(m.ProtoReflect()), nil
	}
	return protoJSONTerm(m)
}

// protoJSONTerm is the slow, exact route for rarely set fields.
func protoJSONTerm(m proto.Message) (*ast.Term, error) {
	bs, err := protojson.Marshal(m)
	if err != nil {
		return nil, err
	}
	var doc any
	// util.UnmarshalJSON keeps numbers as json.Number, so large integers
	// in metadata survive exactly, as they do in OPA-Envoy.
	if err := util.UnmarshalJSON(bs, &doc); err != nil {
		return nil, err
	}
	v, err := ast.InterfaceToValue(doc)
	if err != nil {
		return nil, err
	}
	return ast.NewTerm(v), nil
}

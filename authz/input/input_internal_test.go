package input

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshid/meshid/authz/input/internal/bodyterm"
	"github.com/meshid/meshid/authz/input/internal/jsonterm"
	"github.com/meshid/meshid/test/authztest"
)

// referenceInput is the input document the slow, obvious way OPA-Envoy
// builds it: protojson text, decoded into a Go map, plus the extra keys.
// It is the oracle the fast builder is held to.
func referenceInput(t testing.TB, req *authv3.CheckRequest) (map[string]any, bool) {
	bs, err := protojson.Marshal(req)
	if err != nil {
		return nil, false
	}
	var doc map[string]any
	if err := util.UnmarshalJSON(bs, &doc); err != nil {
		t.Fatalf("decode protojson: %v", err)
	}
	httpReq := req.GetAttributes().GetRequest().GetHttp()

	rawPath, rawQuery, _ := strings.Cut(httpReq.GetPath(), "?")
	unescaped, err := url.PathUnescape(rawPath)
	// meshid refuses what decodes to invalid UTF-8, where OPA-Envoy
	// passes the bytes on (docs/authz.md, the differences).
	if err != nil || !utf8.ValidString(unescaped) {
		return nil, false
	}
	segments := []any{}
	for _, s := range strings.Split(strings.TrimLeft(unescaped, "/"), "/") {
		segments = append(segments, s)
	}
	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, false
	}
	query := map[string]any{}
	for k, vs := range values {
		list := []any{}
		for _, v := range vs {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return nil, false
			}
			list = append(list, v)
		}
		query[k] = list
	}
	body, truncated, err := referenceBody(httpReq)
	if err != nil {
		return nil, false
	}
	doc["parsed_body"] = body
	doc["parsed_path"] = segments
	doc["parsed_query"] = query
	doc["truncated_body"] = truncated
	doc["version"] = map[string]any{"ext_authz": "v3", "encoding": "protojson"}
	if p := req.GetAttributes().GetSource().GetPrincipal(); p != "" {
		doc["source_principal"] = p
	}
	spiffe := map[string]any{}
	if id, err := spiffeid.FromString(req.GetAttributes().GetSource().GetPrincipal()); err == nil {
		d := referenceID(id)
		d["via"] = "mtls"
		spiffe["source"] = d
	}
	if id, err := spiffeid.FromString(req.GetAttributes().GetDestination().GetPrincipal()); err == nil {
		spiffe["destination"] = referenceID(id)
	}
	doc["spiffe"] = spiffe
	return doc, true
}

// referenceBody is parsed_body and truncated_body the obvious way: JSON
// through OPA's decoder, forms through url.ParseQuery (multipart bodies,
// which OPA-Envoy parses with the standard library as the builder does,
// through the builder's own code), with the default limits' size.
func referenceBody(h *authv3.AttributeContext_HttpRequest) (any, bool, error) {
	text := h.GetBody()
	if text == "" {
		text = string(h.GetRawBody())
	}
	// Content types match by substring, JSON first, as in OPA-Envoy.
	contentType := h.GetHeaders()["content-type"]
	isJSON := strings.Contains(contentType, "application/json")
	isForm := !isJSON && strings.Contains(contentType, "application/x-www-form-urlencoded")
	isMultipart := !isJSON && !isForm && strings.Contains(contentType, "multipart/form-data")
	switch {
	case text == "":
		return nil, false, nil
	case h.GetHeaders()["x-envoy-auth-partial-body"] == "true":
		return nil, true, nil
	case !isJSON && !isForm && !isMultipart:
		return nil, false, nil
	}
	if cl, ok := h.GetHeaders()["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, err
		}
		if n > int64(len(text)) {
			return nil, true, nil
		}
	}
	if len(text) > DefaultMaxBodyBytes {
		return nil, false, nil
	}
	switch {
	case isJSON:
		var v any
		if err := util.UnmarshalJSON([]byte(text), &v); err != nil {
			return nil, false, err
		}
		// ast.InterfaceToValue refuses what OPA cannot represent.
		val, err := ast.InterfaceToValue(v)
		if err != nil {
			return nil, false, err
		}
		return ast.MustJSON(val), false, nil
	case isForm:
		values, err := url.ParseQuery(text)
		if err != nil {
			return nil, false, err
		}
		form := map[string]any{}
		for k, vs := range values {
			list := []any{}
			for _, v := range vs {
				if !utf8.ValidString(k) || !utf8.ValidString(v) {
					return nil, false, errInvalidUTF8
				}
				list = append(list, v)
			}
			form[k] = list
		}
		return form, false, nil
	}
	parser := bodyterm.Parser{Limits: bodyterm.Limits{MaxBytes: DefaultMaxBodyBytes, MaxDepth: DefaultMaxBodyDepth, MaxValues: DefaultMaxBodyValues}}
	t, _, _, err := parser.Parse(context.Background(), h, time.Time{})
	if err != nil {
		return nil, false, err
	}
	return ast.MustJSON(t.Value), false, nil
}

func referenceID(id spiffeid.ID) map[string]any {
	segments := []any{}
	if p := id.Path(); p != "" {
		for _, s := range strings.Split(p[1:], "/") {
			segments = append(segments, s)
		}
	}
	return map[string]any{"id": id.String(), "trust_domain": id.TrustDomain().Name(), "path": id.Path(), "segments": segments}
}

// assertSameInput builds req both ways and compares the JSON; it returns
// false when neither could (both refuse the request).
func assertSameInput(t testing.TB, b *Builder, req *authv3.CheckRequest) {
	t.Helper()
	want, wantOK := referenceInput(t, req)
	got, err := b.Build(context.Background(), req, time.Time{})
	if errors.Is(err, jsonterm.ErrTooDeep) || errors.Is(err, jsonterm.ErrTooMany) {
		// The reference knows no limits on a body's shape.
		return
	}
	if !wantOK {
		if err == nil {
			t.Fatalf("builder accepted a request the reference refuses: %v", req)
		}
		return
	}
	if err != nil {
		t.Fatalf("builder refused a request the reference accepts: %v\n%v", err, req)
	}
	gotJSON, err := json.Marshal(ast.MustJSON(got))
	if err != nil {
		t.Fatal(err)
	}
	wantJSON, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if g, w := canonical(t, string(gotJSON)), canonical(t, string(wantJSON)); g != w {
		t.Fatalf("input document differs from protojson's\n got: %s\nwant: %s", g, w)
	}
}

// envoyLike is what Envoy 1.40 sends from the demo backend's inbound
// listener, with a query that repeats a key.
func envoyLike() *authv3.CheckRequest { return authztest.DemoCheck("/hello?lang=fr&lang=en") }

func TestInputMatchesProtoJSON(t *testing.T) {
	full := envoyLike()
	a := full.Attributes
	a.Source.Service = "frontend"
	a.Source.Labels = map[string]string{"app": "frontend", "tier": "web"}
	a.ContextExtensions = map[string]string{"route": "demo", "": "empty key"}
	a.RouteMetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"envoy.lb": {Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(12345678901), "s": structpb.NewStringValue("x"), "l": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewBoolValue(true), structpb.NewNullValue()}})}},
	}}
	typed, err := anypb.New(wrapperspb.String("typed"))
	if err != nil {
		t.Fatal(err)
	}
	a.MetadataContext.TypedFilterMetadata = map[string]*anypb.Any{"x": typed}
	a.TlsSession = &authv3.AttributeContext_TLSSession{Sni: "backend.example.org"}
	h := a.Request.Http
	h.Query, h.Fragment, h.Size = "lang=fr", "top", 1<<40
	h.Headers["content-type"] = "application/json"
	h.Body = `{"big": 12345678901234567890, "f": 1.50, "s": "é\u0000"}`
	h.RawBody = []byte{0, 1, 2, 250, 255}
	h.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "k", Value: "v"}, {Key: "raw", RawValue: []byte("bytes")}}}

	pipe := envoyLike()
	pipe.Attributes.Source.Address = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/envoy.sock", Mode: 0o600}}}
	pipe.Attributes.Destination.Address = &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{ServerListenerName: "inner"}}}}

	udp := envoyLike()
	s := udp.Attributes.Source.Address.GetSocketAddress()
	s.Protocol, s.ResolverName, s.Ipv4Compat = corev3.SocketAddress_UDP, "dns", true
	named := envoyLike()
	named.Attributes.Destination.Address.GetSocketAddress().PortSpecifier = &corev3.SocketAddress_NamedPort{NamedPort: "https"}
	zeroPort := envoyLike()
	zeroPort.Attributes.Source.Address.GetSocketAddress().PortSpecifier = &corev3.SocketAddress_PortValue{}
	emptySock := envoyLike()
	emptySock.Attributes.Source.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{}}}
	emptyAddr := envoyLike()
	emptyAddr.Attributes.Source.Address = &corev3.Address{}

	wholeSeconds := envoyLike()
	wholeSeconds.Attributes.Request.Time = timestamppb.New(time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC))
	millis := envoyLike()
	millis.Attributes.Request.Time = timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.UTC))
	nanos := envoyLike()
	nanos.Attributes.Request.Time = timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 1, time.UTC))
	badTime := envoyLike()
	badTime.Attributes.Request.Time = &timestamppb.Timestamp{Seconds: -1 << 40}

	form := envoyLike()
	form.Attributes.Request.Http.Headers["content-type"] = "application/x-www-form-urlencoded"
	form.Attributes.Request.Http.Body = "a=1&b=2&a=3"

	tests := map[string]*authv3.CheckRequest{
		"envoy-like":                 envoyLike(),
		"every field":                full,
		"empty request":              {},
		"empty attributes":           {Attributes: &authv3.AttributeContext{}},
		"empty peers and request":    {Attributes: &authv3.AttributeContext{Source: &authv3.AttributeContext_Peer{}, Destination: &authv3.AttributeContext_Peer{}, Request: &authv3.AttributeContext_Request{}}},
		"empty http":                 {Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{}}}},
		"pipe and internal address":  pipe,
		"udp, resolver, ipv4 compat": udp,
		"named port":                 named,
		"zero port":                  zeroPort,
		"empty socket address":       emptySock,
		"empty address":              emptyAddr,
		"epoch time":                 wholeSeconds,
		"millisecond time":           millis,
		"nanosecond time":            nanos,
		"invalid time":               badTime,
		"form body":                  form,
	}
	b := newBuilder(nil, nil)
	for name, req := range tests {
		t.Run(name, func(t *testing.T) {
			// Twice: the second build comes from the caches.
			assertSameInput(t, b, req)
			assertSameInput(t, b, req)
		})
	}
}

// FuzzInput holds the fast builder to protojson's document for any
// CheckRequest the fuzzer can encode. The seeds run with go test.
func FuzzInput(f *testing.F) {
	for _, req := range []*authv3.CheckRequest{envoyLike(), {}} {
		bs, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(bs)
	}
	b := newBuilder(nil, nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		var req authv3.CheckRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return
		}
		assertSameInput(t, b, &req)
	})
}

// FuzzInputFields fuzzes what clients control through Envoy (path, one
// header, the body and its type, the caller's principal) against the
// protojson oracle; it also checks the builder neither panics nor accepts
// what the oracle refuses.
func FuzzInputFields(f *testing.F) {
	f.Add("/hello?lang=fr&x=%20", "x-a", "b", "application/json", `{"a": [1, 2.5e3, "\u00e9"]}`, "spiffe://example.org/ns/demo/sa/frontend")
	f.Add("//a/b/%2F?", "content-length", "3", "application/x-www-form-urlencoded", "a=1&a=2&b=", "CN=x")
	f.Add("/up", "x-envoy-auth-partial-body", "true", "multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv\r\n--b--\r\n", "")
	f.Add("/a%zz;b", "authorization", "Bearer a.b.c", "application/json", "{", "spiffe://td")
	b := newBuilder(nil, nil)
	f.Fuzz(func(t *testing.T, path, hk, hv, contentType, body, principal string) {
		req := envoyLike()
		h := req.Attributes.Request.Http
		h.Path = path
		h.Headers[hk] = hv
		h.Headers["content-type"] = contentType
		h.Body = body
		req.Attributes.Source.Principal = principal
		assertSameInput(t, b, req)
	})
}

// TestInputKnowsEveryField fails when go-control-plane adds a field the
// builder would leave out: the fast path writes fields by name, so a new
// field must be added to it (or to the protojson fallback) by hand.
func TestInputKnowsEveryField(t *testing.T) {
	tests := []struct {
		msg  proto.Message
		want []string // every field, as written by input.go
	}{
		{&authv3.CheckRequest{}, []string{"attributes"}},
		{&authv3.AttributeContext{}, []string{"source", "destination", "request", "context_extensions", "metadata_context", "route_metadata_context", "tls_session"}},
		{&authv3.AttributeContext_Peer{}, []string{"address", "service", "labels", "principal", "certificate"}},
		{&authv3.AttributeContext_Request{}, []string{"time", "http"}},
		{&authv3.AttributeContext_HttpRequest{}, []string{"id", "method", "headers", "header_map", "path", "host", "scheme", "query", "fragment", "size", "protocol", "body", "raw_body"}},
		{&authv3.AttributeContext_TLSSession{}, []string{"sni"}},
		{&corev3.Address{}, []string{"socket_address", "pipe", "envoy_internal_address"}},
		{&corev3.SocketAddress{}, []string{"protocol", "address", "port_value", "named_port", "resolver_name", "ipv4_compat", "network_namespace_filepath"}},
		{&corev3.Metadata{}, []string{"filter_metadata", "typed_filter_metadata"}},
	}
	for _, tt := range tests {
		fields := tt.msg.ProtoReflect().Descriptor().Fields()
		var got []string
		for i := range fields.Len() {
			got = append(got, string(fields.Get(i).Name()))
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s has fields %v; input.go handles %v", tt.msg.ProtoReflect().Descriptor().FullName(), got, tt.want)
		}
	}
}

// canonical re-encodes a JSON text with sorted keys and no spaces; numbers
// stay as written, so a large integer that lost precision does not match.
func canonical(t testing.TB, s string) string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%v in %s", err, s)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// BenchmarkInput builds the input document of an Envoy-like request the
// fast way (input) and OPA-Envoy's way, through protojson text and a Go map
// (protojson), in one run: the ratio is what building the ast.Value
// straight from the proto saves per request.
func BenchmarkInput(b *testing.B) {
	req := envoyLike()
	b.Run("input", func(b *testing.B) {
		ib := newBuilder(nil, nil)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ib.Build(context.Background(), req, time.Time{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("protojson", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			doc, ok := referenceInput(b, req)
			if !ok {
				b.Fatal("reference refused the request")
			}
			if _, err := ast.InterfaceToValue(doc); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestPeerCacheTellsPresenceApart: the peer cache (one builder serves
// every request) must not take a peer without an address for one with an
// empty socket address, nor a port of 0 for no port; each renders
// differently. FuzzInput found the first.
func TestPeerCacheTellsPresenceApart(t *testing.T) {
	b := newBuilder(nil, nil)
	peer := func(a *corev3.Address) *authv3.CheckRequest {
		return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Destination: &authv3.AttributeContext_Peer{Address: a}}}
	}
	sock := func(s *corev3.SocketAddress) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: s}}
	}
	for _, req := range []*authv3.CheckRequest{
		peer(sock(&corev3.SocketAddress{})),
		peer(nil),
		peer(sock(&corev3.SocketAddress{PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}})),
		peer(sock(&corev3.SocketAddress{})),
		peer(nil),
	} {
		assertSameInput(t, b, req)
	}
}

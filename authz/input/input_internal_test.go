package input

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"mime"
	"mime/multipart"
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
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshid/meshid/authz/input/internal/jsonterm"
	"github.com/meshid/meshid/test/authztest"
)

// referenceInput is the input document as the OPA-Envoy plugin builds it,
// the slow, obvious way, written from its rules: a Go map first, turned
// into a value by ast.InterfaceToValue, plus meshid's spiffe. attributes
// is the plugin's walk of the proto (pluginWalk) or, for
// EncodingProtoJSON, protojson text decoded into the map. It is the
// oracle the fast builder is held to; false means the plugin refuses the
// request (it answers 400).
func referenceInput(t testing.TB, req *authv3.CheckRequest, enc Encoding) (ast.Value, bool) {
	doc := map[string]any{}
	if enc == EncodingProtoJSON {
		bs, err := protojson.Marshal(req)
		if err != nil {
			return nil, false
		}
		if err := util.UnmarshalJSON(bs, &doc); err != nil {
			t.Fatalf("decode protojson: %v", err)
		}
	} else {
		doc = pluginWalk(req.ProtoReflect())
	}
	httpReq := req.GetAttributes().GetRequest().GetHttp()

	rawPath, rawQuery, _ := strings.Cut(httpReq.GetPath(), "?")
	unescaped, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, false
	}
	query, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, false
	}
	parsedQuery := map[string]any{}
	for k, vs := range query {
		parsedQuery[k] = vs
	}
	body, truncated, err := referenceBody(httpReq)
	if err != nil {
		return nil, false
	}
	doc["parsed_path"] = strings.Split(strings.TrimLeft(unescaped, "/"), "/")
	doc["parsed_query"] = parsedQuery
	doc["parsed_body"] = body
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
	v, err := ast.InterfaceToValue(doc)
	if err != nil {
		t.Fatalf("the plugin's map is not a value: %v", err)
	}
	return v, true
}

// pluginWalk is a message as the plugin's walk leaves it for
// ast.InterfaceToValue: an object of the populated fields by JSON name,
// messages nested the same way (a Struct as its AsMap), the values of
// other fields as the Go values protoreflect holds (int64, uint32, enum
// numbers, []byte...), which InterfaceToValue converts as it does.
func pluginWalk(m protoreflect.Message) map[string]any {
	if s, ok := m.Interface().(*structpb.Struct); ok {
		return s.AsMap()
	}
	out := map[string]any{}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		value := func(v protoreflect.Value) any {
			if k := fd.Kind(); k == protoreflect.MessageKind || k == protoreflect.GroupKind {
				return pluginWalk(v.Message())
			}
			return v.Interface()
		}
		switch {
		case fd.IsMap():
			entries := map[string]any{}
			value = func(v protoreflect.Value) any {
				if fd.MapValue().Kind() == protoreflect.MessageKind {
					return pluginWalk(v.Message())
				}
				return v.Interface()
			}
			v.Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
				entries[k.String()] = value(v)
				return true
			})
			out[fd.JSONName()] = entries
		case fd.IsList():
			var elems []any
			for i := range v.List().Len() {
				elems = append(elems, value(v.List().Get(i)))
			}
			out[fd.JSONName()] = elems
		default:
			out[fd.JSONName()] = value(v)
		}
		return true
	})
	return out
}

// referenceBody is parsed_body and truncated_body by the plugin's rules:
// x-envoy-auth-partial-body first; then by content-type, JSON first, gRPC
// (null: these builders have no descriptors), forms and multipart; a
// content-length longer than the body is truncated; JSON through OPA's
// decoder, forms through url.ParseQuery, multipart through mime/multipart
// (parts without a form name skipped, JSON parts decoded). What it returns
// is Go values, which ast.InterfaceToValue turns into the document as the
// plugin's does (through encoding/json, for forms and multipart). Bodies
// over the default max_body_bytes are null, meshid's limit.
func referenceBody(h *authv3.AttributeContext_HttpRequest) (any, bool, error) {
	headers := h.GetHeaders()
	if headers["x-envoy-auth-partial-body"] == "true" {
		return nil, true, nil
	}
	contentType, ok := headers["content-type"]
	if !ok {
		return nil, false, nil
	}
	text := h.GetBody()
	if text == "" {
		text = string(h.GetRawBody())
	}
	var kind string
	switch {
	case strings.Contains(contentType, "application/json"):
		kind = "json"
	case strings.Contains(contentType, "application/grpc"):
		return nil, false, nil
	case strings.Contains(contentType, "application/x-www-form-urlencoded"):
		kind = "form"
	case strings.Contains(contentType, "multipart/form-data"):
		kind = "multipart"
	default:
		return nil, false, nil
	}
	if text == "" {
		return nil, false, nil
	}
	if cl, ok := headers["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, err
		}
		if n != -1 && n > int64(len(text)) {
			return nil, true, nil
		}
	}
	if len(text) > DefaultMaxBodyBytes {
		return nil, false, nil
	}
	switch kind {
	case "json":
		var v any
		if err := util.UnmarshalJSON([]byte(text), &v); err != nil {
			return nil, false, err
		}
		return v, false, nil
	case "form":
		values, err := url.ParseQuery(text)
		if err != nil {
			return nil, false, err
		}
		return map[string][]string(values), false, nil
	}
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, false, err
	}
	boundary, ok := params["boundary"]
	if !ok {
		return nil, false, nil
	}
	values := map[string][]any{}
	r := multipart.NewReader(strings.NewReader(text), boundary)
	for {
		part, err := r.NextPart()
		if err == io.EOF { //nolint:errorlint // wrapped, it is a body cut short
			return values, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		name := part.FormName()
		if name == "" {
			continue
		}
		data, err := io.ReadAll(part)
		if err != nil {
			return nil, false, err
		}
		var v any = string(data)
		if strings.Contains(part.Header.Get("Content-Type"), "application/json") {
			if err := util.UnmarshalJSON(data, &v); err != nil {
				return nil, false, err
			}
		}
		values[name] = append(values[name], v)
	}
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

// encodings are the builders' encodings, each of which the oracle holds.
var encodings = []Encoding{EncodingProtomap, EncodingProtoJSON}

func builderFor(t testing.TB, enc Encoding) *Builder {
	t.Helper()
	b, err := NewBuilder(Options{Encoding: enc})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// assertSameInput builds req both ways, in encoding enc, and compares the
// values' text (exact: strings quoted byte for byte, numbers as written,
// keys sorted). When the oracle refuses the request, the builder must too.
func assertSameInput(t testing.TB, b *Builder, enc Encoding, req *authv3.CheckRequest) {
	t.Helper()
	got, err := b.Build(context.Background(), req, time.Time{})
	if _, merr := proto.Marshal(req); merr != nil {
		// Invalid UTF-8 in a string field: gRPC refuses to decode such a
		// request, so neither meshid's Check nor the plugin sees it (the
		// builder refuses it too, for the HTTP protocol's sake).
		if err == nil {
			t.Fatalf("%s: builder accepted a request gRPC cannot carry (%v): %v", enc, merr, req)
		}
		return
	}
	want, wantOK := referenceInput(t, req, enc)
	if errors.Is(err, jsonterm.ErrTooDeep) || errors.Is(err, jsonterm.ErrTooMany) {
		// The reference knows no limits on a body's shape.
		return
	}
	if !wantOK {
		if err == nil {
			t.Fatalf("%s: builder accepted a request the plugin refuses: %v", enc, req)
		}
		return
	}
	if err != nil {
		t.Fatalf("%s: builder refused a request the plugin accepts: %v\n%v", enc, err, req)
	}
	if g, w := got.String(), want.String(); g != w {
		t.Fatalf("%s: input document differs from the plugin's\n got: %s\nwant: %s", enc, g, w)
	}
}

// envoyLike is what Envoy 1.40 sends from the demo backend's inbound
// listener, with a query that repeats a key.
func envoyLike() *authv3.CheckRequest { return authztest.DemoCheck("/hello?lang=fr&lang=en") }

// inputCases are requests meant to reach every class of field and body
// the two encodings, and the plugin's body rules, treat apart.
func inputCases(t testing.TB) map[string]*authv3.CheckRequest {
	full := envoyLike()
	a := full.Attributes
	a.Source.Service = "frontend"
	a.Source.Labels = map[string]string{"app": "frontend", "tier": "web"}
	a.ContextExtensions = map[string]string{"route": "demo", "": "empty key"}
	a.RouteMetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"envoy.lb": {Fields: map[string]*structpb.Value{
			"n": structpb.NewNumberValue(12345678901), "big": structpb.NewNumberValue(2500000), "frac": structpb.NewNumberValue(0.000001),
			"s": structpb.NewStringValue("x"),
			"l": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewBoolValue(true), structpb.NewNullValue()}}),
			"o": structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"k": structpb.NewNumberValue(-1e21)}}),
		}},
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

	with := func(change func(*authv3.CheckRequest)) *authv3.CheckRequest {
		req := envoyLike()
		change(req)
		return req
	}
	metadata := func(fields map[string]*structpb.Value) *authv3.CheckRequest {
		return with(func(r *authv3.CheckRequest) {
			r.Attributes.MetadataContext.FilterMetadata = map[string]*structpb.Struct{"f": {Fields: fields}}
		})
	}
	// A text that is not UTF-8 is sent as bytes, as Envoy does.
	body := func(contentType, text string, headers ...string) *authv3.CheckRequest {
		return with(func(r *authv3.CheckRequest) {
			h := r.Attributes.Request.Http
			h.Headers["content-type"] = contentType
			if utf8.ValidString(text) {
				h.Body = text
			} else {
				h.RawBody = []byte(text)
			}
			for i := 0; i+1 < len(headers); i += 2 {
				h.Headers[headers[i]] = headers[i+1]
			}
		})
	}
	sock := func(r *authv3.CheckRequest) *corev3.SocketAddress {
		return r.Attributes.Source.Address.GetSocketAddress()
	}
	const mp = "multipart/form-data; boundary=b"

	return map[string]*authv3.CheckRequest{
		"envoy-like":              envoyLike(),
		"every field":             full,
		"empty request":           {},
		"empty attributes":        {Attributes: &authv3.AttributeContext{}},
		"empty peers and request": {Attributes: &authv3.AttributeContext{Source: &authv3.AttributeContext_Peer{}, Destination: &authv3.AttributeContext_Peer{}, Request: &authv3.AttributeContext_Request{}}},
		"empty http":              {Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{}}}},
		"pipe and internal address": with(func(r *authv3.CheckRequest) {
			r.Attributes.Source.Address = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/envoy.sock", Mode: 0o600}}}
			r.Attributes.Destination.Address = &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{ServerListenerName: "inner"}}}}
		}),
		"udp, resolver, ipv4 compat": with(func(r *authv3.CheckRequest) {
			s := sock(r)
			s.Protocol, s.ResolverName, s.Ipv4Compat = corev3.SocketAddress_UDP, "dns", true
		}),
		"named port": with(func(r *authv3.CheckRequest) {
			r.Attributes.Destination.Address.GetSocketAddress().PortSpecifier = &corev3.SocketAddress_NamedPort{NamedPort: "https"}
		}),
		"zero port":            with(func(r *authv3.CheckRequest) { sock(r).PortSpecifier = &corev3.SocketAddress_PortValue{} }),
		"empty socket address": with(func(r *authv3.CheckRequest) { r.Attributes.Source.Address = authztest.SocketAddress("", 0) }),
		"no port":              with(func(r *authv3.CheckRequest) { sock(r).PortSpecifier = nil }),
		"empty address":        with(func(r *authv3.CheckRequest) { r.Attributes.Source.Address = &corev3.Address{} }),
		"epoch time":           with(func(r *authv3.CheckRequest) { r.Attributes.Request.Time = timestamppb.New(time.Unix(0, 0)) }),
		"whole seconds":        with(func(r *authv3.CheckRequest) { r.Attributes.Request.Time = timestamppb.New(time.Unix(1767323045, 0)) }),
		"nanos only":           with(func(r *authv3.CheckRequest) { r.Attributes.Request.Time = &timestamppb.Timestamp{Nanos: 1} }),
		"millisecond time": with(func(r *authv3.CheckRequest) {
			r.Attributes.Request.Time = timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.UTC))
		}),
		"invalid time": with(func(r *authv3.CheckRequest) {
			r.Attributes.Request.Time = &timestamppb.Timestamp{Seconds: -1 << 40, Nanos: -5}
		}),
		"size":               with(func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Size = 36 }),
		"negative size":      with(func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Size = -1 }),
		"struct numbers":     metadata(map[string]*structpb.Value{"a": structpb.NewNumberValue(2500000), "b": structpb.NewNumberValue(1e100), "c": structpb.NewNumberValue(0.1), "d": structpb.NewNumberValue(math.Copysign(0, -1))}),
		"struct NaN":         metadata(map[string]*structpb.Value{"nan": structpb.NewNumberValue(math.NaN())}),
		"struct Inf":         metadata(map[string]*structpb.Value{"inf": structpb.NewNumberValue(math.Inf(1)), "-inf": structpb.NewNumberValue(math.Inf(-1))}),
		"value without kind": metadata(map[string]*structpb.Value{"none": {}, "nil": nil}),
		"any of an unknown type": with(func(r *authv3.CheckRequest) {
			r.Attributes.MetadataContext.TypedFilterMetadata = map[string]*anypb.Any{"x": {TypeUrl: "type.googleapis.com/acme.Unknown", Value: []byte{1, 2, 3}}}
		}),
		"empty any": with(func(r *authv3.CheckRequest) {
			r.Attributes.MetadataContext.TypedFilterMetadata = map[string]*anypb.Any{"x": {}}
		}),
		"form body":             body("application/x-www-form-urlencoded", "a=1&b=2&a=3"),
		"form bad escape":       body("application/x-www-form-urlencoded", "a=%zz"),
		"form semicolon":        body("application/x-www-form-urlencoded", "a=1;b=2"),
		"form not UTF-8":        body("application/x-www-form-urlencoded", "a=%ff%fe&%ff=1&%fe=2&\xef\xbf\xbd=3"),
		"partial, empty":        body("application/json", "", "x-envoy-auth-partial-body", "true"),
		"partial, text":         body("text/plain", "abc", "x-envoy-auth-partial-body", "true"),
		"partial, false":        body("application/json", "{}", "x-envoy-auth-partial-body", "false"),
		"json truncated":        body("application/json", `{"a":1}`, "content-length", "100"),
		"json cl -1":            body("application/json", `{"a":1}`, "content-length", "-1"),
		"json bad cl":           body("application/json", `{"a":1}`, "content-length", "x"),
		"json trailing":         body("application/json", `{"a":1} {}`),
		"json not UTF-8":        body("application/json", "{\"a\":\"\xff\"}"),
		"text body":             body("text/plain", "abc"),
		"grpc and form":         body("application/grpc+application/x-www-form-urlencoded", "a=1"),
		"json and form":         body("application/x-www-form-urlencoded; application/json", `{"a":1}`),
		"multipart":             body(mp, "--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv\r\n--b\r\nContent-Disposition: form-data; name=\"j\"\r\nContent-Type: application/json\r\n\r\n{\"n\": 1.50}\r\n--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nw\r\n--b--\r\n"),
		"multipart no name":     body(mp, "--b\r\nContent-Disposition: form-data\r\n\r\nv\r\n--b\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nw\r\n--b\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\nx\r\n--b--\r\n"),
		"multipart binary":      body(mp, "--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.bin\"\r\n\r\n\x00\xff\xfe\xc3\r\n--b--\r\n"),
		"multipart no boundary": body("multipart/form-data", "--b\r\n"),
		"multipart bad json":    body(mp, "--b\r\nContent-Disposition: form-data; name=\"j\"\r\nContent-Type: application/json\r\n\r\n{\r\n--b--\r\n"),
		"multipart bad":         body(mp, "no parts here"),
		"double slash path":     with(func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Path = "//a/b" }),
		"path not UTF-8":        with(func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Path = "/a%ff/b?q=%fe&%ff=1" }),
		"bad query":             with(func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Path = "/a?x=1;y=2" }),
		"bad path escape":       with(func(r *authv3.CheckRequest) { r.Attributes.Request.Http.Path = "/a%zz" }),
	}
}

// TestInputMatchesPlugin holds the builder to the plugin's rules for
// every case, in both encodings.
func TestInputMatchesPlugin(t *testing.T) {
	for _, enc := range encodings {
		b := builderFor(t, enc)
		for name, req := range inputCases(t) {
			t.Run(string(enc)+"/"+name, func(t *testing.T) {
				// Twice: the second build comes from the caches.
				assertSameInput(t, b, enc, req)
				assertSameInput(t, b, enc, req)
			})
		}
	}
}

// FuzzInput holds the fast builder to the plugin's document, in both
// encodings, for any CheckRequest the fuzzer can encode. The seeds (every
// case of inputCases) run with go test.
func FuzzInput(f *testing.F) {
	for _, req := range inputCases(f) {
		bs, err := proto.Marshal(req)
		if err != nil {
			f.Fatalf("%v: %v", err, req)
		}
		f.Add(bs)
	}
	builders := map[Encoding]*Builder{}
	for _, enc := range encodings {
		builders[enc] = builderFor(f, enc)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var req authv3.CheckRequest
		if err := proto.Unmarshal(data, &req); err != nil {
			return
		}
		for _, enc := range encodings {
			assertSameInput(t, builders[enc], enc, &req)
		}
	})
}

// FuzzInputFields fuzzes what clients control through Envoy (path, one
// header, the body and its type, the caller's principal) against the
// plugin's rules in both encodings; it also checks the builder neither
// panics nor accepts what the plugin refuses.
func FuzzInputFields(f *testing.F) {
	f.Add("/hello?lang=fr&x=%20", "x-a", "b", "application/json", `{"a": [1, 2.5e3, "\u00e9"]}`, "spiffe://example.org/ns/demo/sa/frontend")
	f.Add("//a/b/%2F?", "content-length", "3", "application/x-www-form-urlencoded", "a=1&a=2&b=", "CN=x")
	f.Add("/up", "x-envoy-auth-partial-body", "true", "multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nv\r\n--b--\r\n", "")
	f.Add("/a%zz;b", "authorization", "Bearer a.b.c", "application/json", "{", "spiffe://td")
	f.Add("/%ff?%fe=%fd", "x-envoy-auth-partial-body", "true", "text/plain", "", "")
	f.Add("/f", "x", "y", "multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"\xff\"\r\n\r\n\xfe\r\n--b\r\nContent-Disposition: form-data\r\n\r\nv\r\n--b--\r\n", "")
	builders := map[Encoding]*Builder{}
	for _, enc := range encodings {
		builders[enc] = builderFor(f, enc)
	}
	f.Fuzz(func(t *testing.T, path, hk, hv, contentType, body, principal string) {
		req := envoyLike()
		h := req.Attributes.Request.Http
		h.Path = path
		h.Headers[hk] = hv
		h.Headers["content-type"] = contentType
		h.Body = body
		req.Attributes.Source.Principal = principal
		for _, enc := range encodings {
			assertSameInput(t, builders[enc], enc, req)
		}
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

// BenchmarkInput builds the input document of an Envoy-like request the
// fast way (input, in each encoding) and the plugin's way, through a Go
// map and ast.InterfaceToValue (plugin; protojson: through protojson text
// too), in one run: the ratio is what building the ast.Value straight
// from the proto saves per request.
func BenchmarkInput(b *testing.B) {
	req := envoyLike()
	for _, enc := range encodings {
		name := "input"
		if enc != EncodingProtomap {
			name += "-" + string(enc)
		}
		b.Run(name, func(b *testing.B) {
			ib := builderFor(b, enc)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ib.Build(context.Background(), req, time.Time{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	for _, enc := range encodings {
		name := "plugin"
		if enc != EncodingProtomap {
			name = string(enc)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := referenceInput(b, req, enc); !ok {
					b.Fatal("reference refused the request")
				}
			}
		})
	}
}

// TestPeerCacheTellsPresenceApart: the peer cache (one builder serves
// every request) must not take a peer without an address for one with an
// empty socket address, nor a port of 0 for no port; each renders
// differently. FuzzInput found the first.
func TestPeerCacheTellsPresenceApart(t *testing.T) {
	b := builderFor(t, EncodingProtomap)
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
		assertSameInput(t, b, EncodingProtomap, req)
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

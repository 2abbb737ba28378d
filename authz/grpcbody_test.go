package authz_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshid/meshid/authz"
)

// descriptorSet is what protoc --include_imports --descriptor_set_out
// writes for files: them and everything they import, from the descriptors
// compiled into the test binary.
func descriptorSet(files ...protoreflect.FileDescriptor) *descriptorpb.FileDescriptorSet {
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(f protoreflect.FileDescriptor)
	add = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		for i := range f.Imports().Len() {
			add(f.Imports().Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(f))
	}
	for _, f := range files {
		add(f)
	}
	return set
}

// writeDescriptorSet writes m (a descriptor set, or anything to test
// refusals with) to a temp file and returns its path.
func writeDescriptorSet(t testing.TB, bs []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "services.pb")
	if err := os.WriteFile(path, bs, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	bs, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

// testProtos are the descriptors of grpc.health.v1 (unary and server
// streaming), grpc.reflection.v1 (bidirectional streaming) and Envoy's
// Authorization service (a request with maps, timestamps, 64-bit
// integers, bytes, enums and Any).
func testProtos(t testing.TB) *authz.ProtoDescriptors {
	t.Helper()
	set := descriptorSet(grpc_health_v1.File_grpc_health_v1_health_proto, grpc_reflection_v1.File_grpc_reflection_v1_reflection_proto, authv3.File_envoy_service_auth_v3_external_auth_proto)
	d, err := authz.LoadProtoDescriptors(writeDescriptorSet(t, marshal(t, set)))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestLoadProtoDescriptors(t *testing.T) {
	d := testProtos(t)
	for _, m := range []string{"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "/envoy.service.auth.v3.Authorization/Check"} {
		if !slices.Contains(d.Methods(), m) {
			t.Errorf("Methods() = %v, want %s among them", d.Methods(), m)
		}
	}

	withoutImports := descriptorSet(authv3.File_envoy_service_auth_v3_external_auth_proto)
	withoutImports.File = withoutImports.File[len(withoutImports.File)-1:]
	health := protodesc.ToFileDescriptorProto(grpc_health_v1.File_grpc_health_v1_health_proto)
	tests := []struct {
		name    string
		content []byte // nil: no file at all
		errHas  string
	}{
		{"no file", nil, "no such file or directory"},
		{"empty file", []byte{}, "is not a binary FileDescriptorSet"},
		{"text", []byte("file: {name: \"a.proto\"}\n"), "is not a binary FileDescriptorSet"},
		{"truncated", marshal(t, descriptorSet(grpc_health_v1.File_grpc_health_v1_health_proto))[:40], "is not a binary FileDescriptorSet"},
		{"one file descriptor instead of a set", marshal(t, health), "is not a binary FileDescriptorSet"},
		{"without imports", marshal(t, withoutImports), "external_auth.proto imports envoy/config/core/v3/base.proto, which is not in the set: build it with --include_imports"},
		{"no services", marshal(t, descriptorSet(timestamppb.File_google_protobuf_timestamp_proto)), "defines no gRPC service methods"},
		{"a file twice", marshal(t, &descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{health, health}}), "grpc/health/v1/health.proto"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "services.pb")
			if tt.content != nil {
				path = writeDescriptorSet(t, tt.content)
			}
			d, err := authz.LoadProtoDescriptors(path)
			if err == nil {
				t.Fatalf("loaded %v", d.Methods())
			}
			if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("error %q, want one naming %s and containing %q", err, path, tt.errHas)
			}
		})
	}
}

// grpcFrame is one gRPC message with its prefix.
func grpcFrame(compressed byte, msg []byte) []byte {
	f := make([]byte, 5, 5+len(msg))
	f[0] = compressed
	binary.BigEndian.PutUint32(f[1:], uint32(len(msg)))
	return append(f, msg...)
}

// grpcRequest is a gRPC call as Envoy describes it with
// with_request_body.pack_as_bytes: the body in raw_body.
func grpcRequest(path, contentType string, body []byte) *authv3.CheckRequest {
	req := checkRequest(frontend, backend, "POST", path)
	h := req.Attributes.Request.Http
	h.Protocol = "HTTP/2"
	h.Headers["content-type"] = contentType
	h.Headers["te"] = "trailers"
	h.RawBody = body
	return req
}

// bodyOf is what a policy sees of req's body: parsed_body as JSON and
// truncated_body, or the reason the request was denied.
func bodyOf(t testing.TB, srv *authz.Server, req *authv3.CheckRequest) (parsed string, truncated bool, err error) {
	t.Helper()
	r := srv.Decide(context.Background(), req)
	if r.Err != nil {
		if r.Allowed {
			t.Fatalf("allowed despite %v", r.Err)
		}
		return "", false, r.Err
	}
	if !r.Allowed {
		t.Fatal("denied without an error by a policy that allows everything")
	}
	in := r.Input.(ast.Object)
	bs, err := json.Marshal(ast.MustJSON(in.Get(ast.StringTerm("parsed_body")).Value))
	if err != nil {
		t.Fatal(err)
	}
	return string(bs), in.Get(ast.StringTerm("truncated_body")).Value.Compare(ast.Boolean(true)) == 0, nil
}

// protoJSON is the oracle: m as OPA-Envoy would put it in parsed_body.
func protoJSON(t testing.TB, m proto.Message) string {
	t.Helper()
	bs, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return canonicalJSON(t, string(bs))
}

func canonicalJSON(t testing.TB, s string) string {
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

// richCheckRequest exercises what protojson writes specially.
func richCheckRequest(t testing.TB) *authv3.CheckRequest {
	typed, err := anypb.New(wrapperspb.String("typed"))
	if err != nil {
		t.Fatal(err)
	}
	req := checkRequest(frontend, backend, "GET", "/hello")
	a := req.Attributes
	a.Source.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "10.0.0.7", Protocol: corev3.SocketAddress_UDP, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}}}}
	a.Request.Time = timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.UTC))
	a.Request.Http.Size = 1 << 40
	a.Request.Http.RawBody = []byte{0, 1, 250}
	a.MetadataContext = &corev3.Metadata{
		FilterMetadata:      map[string]*structpb.Struct{"lb": {Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(12345678901), "null": structpb.NewNullValue()}}},
		TypedFilterMetadata: map[string]*anypb.Any{"x": typed},
	}
	return req
}

func TestGRPCBodies(t *testing.T) {
	const (
		check  = "/grpc.health.v1.Health/Check"
		grpcCT = "application/grpc"
	)
	healthMsg := marshal(t, &grpc_health_v1.HealthCheckRequest{Service: "backend"})
	health := grpcFrame(0, healthMsg)
	rich := richCheckRequest(t)
	badUTF8 := append([]byte{0x0a, 2}, 0xff, 0xfe) // field 1 (string service), two bytes

	tests := []struct {
		name         string
		req          *authv3.CheckRequest
		parsed       string // JSON; "" when denied
		truncated    bool
		errHas       string
		unconfigured string // "truncated": truncated_body without descriptors
	}{
		{name: "unary request", req: grpcRequest(check, grpcCT, health), parsed: `{"service":"backend"}`},
		{name: "server streaming request", req: grpcRequest("/grpc.health.v1.Health/Watch", grpcCT, health), parsed: `{"service":"backend"}`},
		{name: "protojson's names and forms", req: grpcRequest("/envoy.service.auth.v3.Authorization/Check", grpcCT, grpcFrame(0, marshal(t, rich))), parsed: protoJSON(t, rich)},
		{name: "empty message", req: grpcRequest(check, grpcCT, grpcFrame(0, nil)), parsed: `{}`},
		{name: "unknown fields are left out", req: grpcRequest(check, grpcCT, grpcFrame(0, append(slices.Clone(healthMsg), 0x78, 1))), parsed: `{"service":"backend"}`},
		{name: "body instead of raw_body", req: func() *authv3.CheckRequest {
			r := grpcRequest(check, grpcCT, nil)
			r.Attributes.Request.Http.Body = string(health)
			return r
		}(), parsed: `{"service":"backend"}`},
		{name: "grpc+proto", req: grpcRequest(check, "application/grpc+proto", health), parsed: `{"service":"backend"}`},
		{name: "grpc-web", req: grpcRequest(check, "application/grpc-web+proto", health), parsed: `{"service":"backend"}`},
		{name: "query on the path", req: grpcRequest(check+"?x=1", grpcCT, health), parsed: `{"service":"backend"}`},
		{name: "no body", req: grpcRequest(check, grpcCT, nil), parsed: `null`},

		{name: "another codec", req: grpcRequest(check, "application/grpc+json", grpcFrame(0, []byte(`{"service":"backend"}`))), parsed: `null`},
		{name: "grpc-web-text", req: grpcRequest(check, "application/grpc-web-text", []byte("AAAAAAkKB2JhY2tlbmQ=")), parsed: `null`},
		{name: "unknown method", req: grpcRequest("/grpc.health.v1.Health/Nope", grpcCT, health), parsed: `null`},
		{name: "unknown service", req: grpcRequest("/pkg.Nope/Check", grpcCT, health), parsed: `null`},
		{name: "a message that is not a service", req: grpcRequest("/grpc.health.v1.HealthCheckRequest/Check", grpcCT, health), parsed: `null`},
		{name: "client streaming", req: grpcRequest("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", grpcCT, slices.Concat(health, health)), parsed: `null`},
		{name: "compressed", req: func() *authv3.CheckRequest {
			r := grpcRequest(check, grpcCT, grpcFrame(1, []byte("\x1f\x8b not really gzip")))
			r.Attributes.Request.Http.Headers["grpc-encoding"] = "gzip"
			return r
		}(), parsed: `null`},

		{name: "message longer than the body", req: grpcRequest(check, grpcCT, health[:len(health)-2]), parsed: `null`, truncated: true},
		{name: "Envoy says it cut the body", req: func() *authv3.CheckRequest {
			r := grpcRequest(check, grpcCT, health)
			r.Attributes.Request.Http.Headers["x-envoy-auth-partial-body"] = "true"
			return r
		}(), parsed: `null`, truncated: true, unconfigured: "truncated"},
		{name: "content-length longer than the body", req: func() *authv3.CheckRequest {
			r := grpcRequest(check, grpcCT, health)
			r.Attributes.Request.Http.Headers["content-length"] = "100"
			return r
		}(), parsed: `null`, truncated: true},

		{name: "shorter than a prefix", req: grpcRequest(check, grpcCT, []byte{0, 0, 0}), errHas: "shorter than a message prefix"},
		{name: "garbage", req: grpcRequest(check, grpcCT, grpcFrame(0, []byte("\xff\xff\xff\xff garbage"))), errHas: "gRPC request of /grpc.health.v1.Health/Check is not a grpc.health.v1.HealthCheckRequest"},
		{name: "invalid UTF-8 in a string", req: grpcRequest(check, grpcCT, grpcFrame(0, badUTF8)), errHas: "invalid UTF-8"},
		{name: "wrong type", req: grpcRequest(check, grpcCT, grpcFrame(0, marshal(t, rich))), errHas: "is not a grpc.health.v1.HealthCheckRequest"},
		{name: "JSON posing as protobuf", req: grpcRequest(check, grpcCT, []byte(`{"service":"backend"}`)), errHas: "compressed flag 123"},
		{name: "two messages to a unary method", req: grpcRequest(check, grpcCT, slices.Concat(health, health)), errHas: "14 bytes after the request message of /grpc.health.v1.Health/Check"},
		{name: "compressed without an encoding", req: grpcRequest(check, grpcCT, grpcFrame(1, healthMsg)), errHas: "flagged compressed without a grpc-encoding"},
		{name: "path is not service and method", req: grpcRequest("/grpc.health.v1.Health/Check/x", grpcCT, health), errHas: `path "/grpc.health.v1.Health/Check/x" is not /package.Service/Method`},
		{name: "path has no method", req: grpcRequest("/grpc.health.v1.Health", grpcCT, health), errHas: "is not /package.Service/Method"},
		{name: "bad content-length", req: func() *authv3.CheckRequest {
			r := grpcRequest(check, grpcCT, health)
			r.Attributes.Request.Http.Headers["content-length"] = "x"
			return r
		}(), errHas: "content-length"},
	}
	e := engine(t, "package envoy.authz\n\nallow := true\n", authz.Config{})
	srv := newServer(t, e, authz.Options{ProtoDescriptors: testProtos(t)})
	unconfigured := newServer(t, e, authz.Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parsed, truncated, err := bodyOf(t, srv, tt.req)
			switch {
			case tt.errHas != "":
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("parsed_body %s, error %v; want a deny for %q", parsed, err, tt.errHas)
				}
			case err != nil:
				t.Fatalf("denied: %v", err)
			case canonicalJSON(t, parsed) != canonicalJSON(t, tt.parsed) || truncated != tt.truncated:
				t.Fatalf("parsed_body %s, truncated_body %v\nwant %s, %v", parsed, truncated, tt.parsed, tt.truncated)
			}

			// Without descriptors, nothing changes from before gRPC bodies
			// were parsed: null, and truncated only on Envoy's word.
			parsed, truncated, err = bodyOf(t, unconfigured, tt.req)
			if err != nil {
				t.Fatalf("without descriptors: denied: %v", err)
			}
			if parsed != "null" || truncated != (tt.unconfigured == "truncated") {
				t.Fatalf("without descriptors: parsed_body %s, truncated_body %v", parsed, truncated)
			}
		})
	}
}

// TestGRPCBodySeenByPolicy: a policy decides on a field of the message.
// A field at its zero value is absent, as protojson leaves it out.
func TestGRPCBodySeenByPolicy(t *testing.T) {
	e := engine(t, `package envoy.authz

default allow := false

allow if object.get(input.parsed_body, "service", "") in {"", "backend"}
`, authz.Config{})
	srv := newServer(t, e, authz.Options{ProtoDescriptors: testProtos(t)})
	for service, want := range map[string]bool{"backend": true, "": true, "admin": false} {
		req := grpcRequest("/grpc.health.v1.Health/Check", "application/grpc", grpcFrame(0, marshal(t, &grpc_health_v1.HealthCheckRequest{Service: service})))
		if r := srv.Decide(context.Background(), req); r.Allowed != want || r.Err != nil {
			t.Errorf("service %q: allowed %v (%v), want %v", service, r.Allowed, r.Err, want)
		}
	}
}

// FuzzGRPCBody: any body, under any of a few paths and content types,
// is parsed as protojson would write the message, or reported truncated
// or unparsed, or denied; never half-parsed, never a panic.
func FuzzGRPCBody(f *testing.F) {
	rich := marshal(f, richCheckRequest(f))
	health := marshal(f, &grpc_health_v1.HealthCheckRequest{Service: "backend"})
	f.Add(uint8(0), uint8(0), grpcFrame(0, health))
	f.Add(uint8(1), uint8(1), grpcFrame(0, rich))
	f.Add(uint8(2), uint8(0), grpcFrame(0, rich)[:40])
	f.Add(uint8(0), uint8(2), grpcFrame(1, health))
	f.Add(uint8(3), uint8(0), slices.Concat(grpcFrame(0, health), grpcFrame(0, nil)))
	paths := []string{"/grpc.health.v1.Health/Check", "/envoy.service.auth.v3.Authorization/Check", "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "/a/b/c"}
	types := []string{"application/grpc", "application/grpc+proto", "application/grpc+json"}
	oracles := []func() proto.Message{
		func() proto.Message { return &grpc_health_v1.HealthCheckRequest{} },
		func() proto.Message { return &authv3.CheckRequest{} },
	}

	dir := f.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte("package envoy.authz\n\nallow := true\n"), 0o644); err != nil {
		f.Fatal(err)
	}
	e, err := authz.NewEngine(context.Background(), authz.Config{PolicyDir: dir})
	if err != nil {
		f.Fatal(err)
	}
	srv := newServer(f, e, authz.Options{ProtoDescriptors: testProtos(f)})
	f.Fuzz(func(t *testing.T, path, contentType uint8, body []byte) {
		p := paths[int(path)%len(paths)]
		req := grpcRequest(p, types[int(contentType)%len(types)], body)
		parsed, truncated, err := bodyOf(t, srv, req)
		if err != nil || parsed == "null" {
			return
		}
		if truncated {
			t.Fatalf("parsed_body %s of a truncated body", parsed)
		}
		i := int(path) % len(paths)
		if i >= len(oracles) {
			t.Fatalf("parsed_body %s for %s", parsed, p)
		}
		m := oracles[i]()
		if err := proto.Unmarshal(body[5:], m); err != nil {
			t.Fatalf("parsed_body %s of a message the generated type refuses: %v", parsed, err)
		}
		if want := protoJSON(t, m); canonicalJSON(t, parsed) != want {
			t.Fatalf("parsed_body %s\nwant %s", parsed, want)
		}
	})
}

// TestGRPCBodyAnyFromTheSet: an Any holding a type that only the
// descriptor set knows (not compiled into meshid) is written out with
// that type, which OPA-Envoy's global registry cannot do; an Any of a type
// nobody knows denies.
func TestGRPCBodyAnyFromTheSet(t *testing.T) {
	file := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("test/v1/svc.proto"),
		Package:    proto.String("test.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"google/protobuf/any.proto"},
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("Inner"), Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("user_name"), JsonName: proto.String("userName"), Number: proto.Int32(1), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()},
			}},
			{Name: proto.String("Req"), Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("a"), JsonName: proto.String("a"), Number: proto.Int32(1), Type: descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum(), TypeName: proto.String(".google.protobuf.Any"), Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()},
			}},
		},
		Service: []*descriptorpb.ServiceDescriptorProto{{Name: proto.String("Svc"), Method: []*descriptorpb.MethodDescriptorProto{
			{Name: proto.String("Do"), InputType: proto.String(".test.v1.Req"), OutputType: proto.String(".test.v1.Req")},
		}}},
	}
	set := descriptorSet(anypb.File_google_protobuf_any_proto)
	set.File = append(set.File, file)
	files, err := protodesc.NewFiles(set)
	if err != nil {
		t.Fatal(err)
	}
	d, err := authz.LoadProtoDescriptors(writeDescriptorSet(t, marshal(t, set)))
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(t, engine(t, "package envoy.authz\n\nallow := true\n", authz.Config{}), authz.Options{ProtoDescriptors: d})

	message := func(name protoreflect.FullName) *dynamicpb.Message {
		desc, err := files.FindDescriptorByName(name)
		if err != nil {
			t.Fatal(err)
		}
		return dynamicpb.NewMessage(desc.(protoreflect.MessageDescriptor))
	}
	request := func(typeURL string) *authv3.CheckRequest {
		inner := message("test.v1.Inner")
		inner.Set(inner.Descriptor().Fields().ByName("user_name"), protoreflect.ValueOfString("ada"))
		req := message("test.v1.Req")
		req.Set(req.Descriptor().Fields().ByName("a"), protoreflect.ValueOfMessage((&anypb.Any{TypeUrl: typeURL, Value: marshal(t, inner)}).ProtoReflect()))
		return grpcRequest("/test.v1.Svc/Do", "application/grpc", grpcFrame(0, marshal(t, req)))
	}

	parsed, _, err := bodyOf(t, srv, request("type.googleapis.com/test.v1.Inner"))
	if want := `{"a":{"@type":"type.googleapis.com/test.v1.Inner","userName":"ada"}}`; err != nil || canonicalJSON(t, parsed) != want {
		t.Errorf("parsed_body %s (%v), want %s", parsed, err, want)
	}
	if _, _, err := bodyOf(t, srv, request("type.googleapis.com/test.v1.Nope")); err == nil || !strings.Contains(err.Error(), "test.v1.Nope") {
		t.Errorf("Any of an unknown type: %v, want a deny naming it", err)
	}
}

// BenchmarkGRPCBody is a decision on a gRPC call, its body decoded: no
// body, a small message, and a large one (a CheckRequest with metadata),
// with an allow-all policy so that the body is most of the cost.
func BenchmarkGRPCBody(b *testing.B) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "policy.rego"), []byte("package envoy.authz\n\nallow := true\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	e, err := authz.NewEngine(context.Background(), authz.Config{PolicyDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	srv := newServer(b, e, authz.Options{ProtoDescriptors: testProtos(b)})
	for _, bc := range []struct {
		name string
		req  *authv3.CheckRequest
	}{
		{"no-body", grpcRequest("/grpc.health.v1.Health/Check", "application/grpc", nil)},
		{"health", grpcRequest("/grpc.health.v1.Health/Check", "application/grpc", grpcFrame(0, marshal(b, &grpc_health_v1.HealthCheckRequest{Service: "backend"})))},
		{"check-request", grpcRequest("/envoy.service.auth.v3.Authorization/Check", "application/grpc", grpcFrame(0, marshal(b, richCheckRequest(b))))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if r := srv.Decide(ctx, bc.req); !r.Allowed {
					b.Fatal(r.Err)
				}
			}
		})
	}
}

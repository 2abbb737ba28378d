package input_test

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
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshid/meshid/authz/input"
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

// testSet holds grpc.health.v1 (unary and server streaming),
// grpc.reflection.v1 (bidirectional streaming), Envoy's Authorization
// service (a request with maps, timestamps, 64-bit integers, bytes, enums
// and Any), and test.v1 (every kind of field, proto3 and proto2).
func testSet() *descriptorpb.FileDescriptorSet {
	set := descriptorSet(grpc_health_v1.File_grpc_health_v1_health_proto, grpc_reflection_v1.File_grpc_reflection_v1_reflection_proto, authv3.File_envoy_service_auth_v3_external_auth_proto)
	set.File = append(set.File, kindsFiles()...)
	return set
}

func testProtos(t testing.TB) *input.ProtoDescriptors {
	t.Helper()
	d, err := input.LoadProtoDescriptors(writeDescriptorSet(t, marshal(t, testSet())))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// kindsFiles describe test.v1.Kinds (proto3: a field of every kind, maps
// with every kind of key, repeated and nested fields, a well-known type)
// and test.v1.Legacy (proto2: unchecked strings, an extension, a group),
// each the input of a method test.v1.Test/Kinds and /Legacy.
func kindsFiles() []*descriptorpb.FileDescriptorProto {
	type fieldType = descriptorpb.FieldDescriptorProto_Type
	const (
		optional = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
		repeated = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
	)
	field := func(name string, n int32, typ fieldType, label descriptorpb.FieldDescriptorProto_Label, typeName string) *descriptorpb.FieldDescriptorProto {
		f := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(n), Type: typ.Enum(), Label: label.Enum()}
		if typeName != "" {
			f.TypeName = proto.String(typeName)
		}
		return f
	}
	mapEntry := func(name string, key fieldType, value fieldType, valueType string) *descriptorpb.DescriptorProto {
		return &descriptorpb.DescriptorProto{
			Name:    proto.String(name),
			Field:   []*descriptorpb.FieldDescriptorProto{field("key", 1, key, optional, ""), field("value", 2, value, optional, valueType)},
			Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
		}
	}
	var (
		i32, i64, u32, u64   = descriptorpb.FieldDescriptorProto_TYPE_INT32, descriptorpb.FieldDescriptorProto_TYPE_INT64, descriptorpb.FieldDescriptorProto_TYPE_UINT32, descriptorpb.FieldDescriptorProto_TYPE_UINT64
		s32, s64, f32, f64   = descriptorpb.FieldDescriptorProto_TYPE_SINT32, descriptorpb.FieldDescriptorProto_TYPE_SINT64, descriptorpb.FieldDescriptorProto_TYPE_FIXED32, descriptorpb.FieldDescriptorProto_TYPE_FIXED64
		sf32, sf64, fl, db   = descriptorpb.FieldDescriptorProto_TYPE_SFIXED32, descriptorpb.FieldDescriptorProto_TYPE_SFIXED64, descriptorpb.FieldDescriptorProto_TYPE_FLOAT, descriptorpb.FieldDescriptorProto_TYPE_DOUBLE
		boolean, str, byts   = descriptorpb.FieldDescriptorProto_TYPE_BOOL, descriptorpb.FieldDescriptorProto_TYPE_STRING, descriptorpb.FieldDescriptorProto_TYPE_BYTES
		enum, message, group = descriptorpb.FieldDescriptorProto_TYPE_ENUM, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, descriptorpb.FieldDescriptorProto_TYPE_GROUP
	)
	kinds := &descriptorpb.FileDescriptorProto{
		Name:       proto.String("test/v1/kinds.proto"),
		Package:    proto.String("test.v1"),
		Syntax:     proto.String("proto3"),
		Dependency: []string{"google/protobuf/timestamp.proto", "test/v1/legacy.proto"},
		EnumType: []*descriptorpb.EnumDescriptorProto{{Name: proto.String("Color"), Value: []*descriptorpb.EnumValueDescriptorProto{
			{Name: proto.String("COLOR_UNSPECIFIED"), Number: proto.Int32(0)}, {Name: proto.String("GREEN"), Number: proto.Int32(1)},
		}}},
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Kinds"),
			Field: []*descriptorpb.FieldDescriptorProto{
				field("i32", 1, i32, optional, ""), field("i64", 2, i64, optional, ""), field("u32", 3, u32, optional, ""), field("u64", 4, u64, optional, ""),
				field("s32", 5, s32, optional, ""), field("s64", 6, s64, optional, ""), field("f32", 7, f32, optional, ""), field("f64", 8, f64, optional, ""),
				field("sf32", 9, sf32, optional, ""), field("sf64", 10, sf64, optional, ""), field("float_value", 11, fl, optional, ""), field("double_value", 12, db, optional, ""),
				field("flag", 13, boolean, optional, ""), field("text", 14, str, optional, ""), field("data", 15, byts, optional, ""), field("color", 16, enum, optional, ".test.v1.Color"),
				field("doubles", 17, db, repeated, ""), field("colors", 18, enum, repeated, ".test.v1.Color"), field("texts", 19, str, repeated, ""),
				field("child", 20, message, optional, ".test.v1.Kinds"), field("children", 21, message, repeated, ".test.v1.Kinds"),
				field("when", 22, message, optional, ".google.protobuf.Timestamp"),
				field("by_int", 23, message, repeated, ".test.v1.Kinds.ByIntEntry"), field("by_bool", 24, message, repeated, ".test.v1.Kinds.ByBoolEntry"),
				field("by_u64", 25, message, repeated, ".test.v1.Kinds.ByU64Entry"), field("by_text", 26, message, repeated, ".test.v1.Kinds.ByTextEntry"),
				{Name: proto.String("custom"), Number: proto.Int32(27), Type: str.Enum(), Label: optional.Enum(), JsonName: proto.String("Custom-Name")},
			},
			NestedType: []*descriptorpb.DescriptorProto{
				mapEntry("ByIntEntry", s32, str, ""), mapEntry("ByBoolEntry", boolean, message, ".test.v1.Kinds"),
				mapEntry("ByU64Entry", f64, enum, ".test.v1.Color"), mapEntry("ByTextEntry", str, db, ""),
			},
		}},
		Service: []*descriptorpb.ServiceDescriptorProto{{Name: proto.String("Test"), Method: []*descriptorpb.MethodDescriptorProto{
			{Name: proto.String("Kinds"), InputType: proto.String(".test.v1.Kinds"), OutputType: proto.String(".test.v1.Kinds")},
			{Name: proto.String("Legacy"), InputType: proto.String(".test.v1.Legacy"), OutputType: proto.String(".test.v1.Legacy")},
		}}},
	}
	legacy := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("test/v1/legacy.proto"),
		Package: proto.String("test.v1"),
		Syntax:  proto.String("proto2"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("Legacy"),
			Field: []*descriptorpb.FieldDescriptorProto{
				field("text", 1, str, optional, ""), field("child", 2, message, optional, ".test.v1.Legacy"),
				field("item", 3, group, optional, ".test.v1.Legacy.Item"), field("color", 4, enum, optional, ".test.v1.Shade"),
			},
			NestedType:     []*descriptorpb.DescriptorProto{{Name: proto.String("Item"), Field: []*descriptorpb.FieldDescriptorProto{field("n", 5, i32, optional, "")}}},
			ExtensionRange: []*descriptorpb.DescriptorProto_ExtensionRange{{Start: proto.Int32(100), End: proto.Int32(200)}},
		}},
		EnumType:  []*descriptorpb.EnumDescriptorProto{{Name: proto.String("Shade"), Value: []*descriptorpb.EnumValueDescriptorProto{{Name: proto.String("DARK"), Number: proto.Int32(1)}}}},
		Extension: []*descriptorpb.FieldDescriptorProto{{Name: proto.String("tag"), Number: proto.Int32(100), Type: str.Enum(), Label: optional.Enum(), Extendee: proto.String(".test.v1.Legacy")}},
	}
	return []*descriptorpb.FileDescriptorProto{legacy, kinds}
}

// testFiles is testSet as a registry, for the oracle to decode with.
func testFiles(t testing.TB) *protoregistry.Files {
	t.Helper()
	files, err := protodesc.NewFiles(testSet())
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// dynamicOracle is what protojson writes for body decoded as name with
// files: what OPA-Envoy would put in parsed_body, ok false when the body
// does not decode.
func dynamicOracle(t testing.TB, files *protoregistry.Files, name protoreflect.FullName, body []byte) (string, bool) {
	t.Helper()
	desc, err := files.FindDescriptorByName(name)
	if err != nil {
		t.Fatal(err)
	}
	types := dynamicpb.NewTypes(files)
	m := dynamicpb.NewMessage(desc.(protoreflect.MessageDescriptor))
	if err := (proto.UnmarshalOptions{Resolver: types}).Unmarshal(body, m); err != nil {
		return "", false
	}
	bs, err := (protojson.MarshalOptions{Resolver: types}).Marshal(m)
	if err != nil {
		return "", false
	}
	return input.CanonicalJSON(t, string(bs)), true
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
			d, err := input.LoadProtoDescriptors(path)
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
// truncated_body, or the reason the request cannot be described (and is
// denied).
func bodyOf(t testing.TB, b *input.Builder, req *authv3.CheckRequest) (parsed string, truncated bool, err error) {
	t.Helper()
	doc, err := b.Build(context.Background(), req, time.Time{})
	if err != nil {
		return "", false, err
	}
	in := doc.(ast.Object)
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
	return input.CanonicalJSON(t, string(bs))
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
	b := newBuilder(t, input.Options{ProtoDescriptors: testProtos(t)})
	unconfigured := newBuilder(t, input.Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parsed, truncated, err := bodyOf(t, b, tt.req)
			switch {
			case tt.errHas != "":
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("parsed_body %s, error %v; want a deny for %q", parsed, err, tt.errHas)
				}
			case err != nil:
				t.Fatalf("denied: %v", err)
			case input.CanonicalJSON(t, parsed) != input.CanonicalJSON(t, tt.parsed) || truncated != tt.truncated:
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
	const policy = `package envoy.authz

default allow := false

allow if object.get(input.parsed_body, "service", "") in {"", "backend"}
`
	b := newBuilder(t, input.Options{ProtoDescriptors: testProtos(t)})
	for service, want := range map[string]bool{"backend": true, "": true, "admin": false} {
		req := grpcRequest("/grpc.health.v1.Health/Check", "application/grpc", grpcFrame(0, marshal(t, &grpc_health_v1.HealthCheckRequest{Service: service})))
		doc, err := b.Build(context.Background(), req, time.Time{})
		if err != nil {
			t.Errorf("service %q: %v", service, err)
			continue
		}
		if got := allows(t, policy, doc); got != want {
			t.Errorf("service %q: allowed %v, want %v", service, got, want)
		}
	}
}

// kindsMessage is a message of test.v1 from its protojson text.
func kindsMessage(t testing.TB, files *protoregistry.Files, name protoreflect.FullName, text string) []byte {
	t.Helper()
	desc, err := files.FindDescriptorByName(name)
	if err != nil {
		t.Fatal(err)
	}
	m := dynamicpb.NewMessage(desc.(protoreflect.MessageDescriptor))
	if err := (protojson.UnmarshalOptions{Resolver: dynamicpb.NewTypes(files)}).Unmarshal([]byte(text), m); err != nil {
		t.Fatalf("%s: %v", text, err)
	}
	return marshal(t, m)
}

// kindsCases are messages of test.v1 in the forms protojson writes in its
// own way: every integer kind at its limits, floats that need an exponent
// or are not numbers, unknown enum numbers, map keys of every kind,
// nesting, a well-known type, a custom JSON name, a proto2 group and an
// extension.
var kindsCases = []struct {
	name   protoreflect.FullName
	method string
	text   string
}{
	{"test.v1.Kinds", "Kinds", `{"i32": -2147483648, "i64": "-9223372036854775808", "u32": 4294967295, "u64": "18446744073709551615", "s32": -1, "s64": "-2", "f32": 7, "f64": "8", "sf32": -9, "sf64": "-10", "floatValue": 0.1, "doubleValue": 1e21, "flag": true, "text": "é\u0000", "data": "AAH6", "color": "GREEN", "Custom-Name": "c"}`},
	{"test.v1.Kinds", "Kinds", `{"doubles": [1e-7, 1e-6, 0.000001234, 123456789.125, -0, 5e-324, 1.7976931348623157e308, "NaN", "Infinity", "-Infinity", 1e20, 1e21, 2.5e-300], "floatValue": 3.4028235e38}`},
	{"test.v1.Kinds", "Kinds", `{"floatValue": 1e-7, "doubleValue": -1.5e-7}`},
	{"test.v1.Kinds", "Kinds", `{"floatValue": 16777217, "doubleValue": 9007199254740993}`},
	{"test.v1.Kinds", "Kinds", `{"colors": ["GREEN", 7, "COLOR_UNSPECIFIED"], "color": 9, "texts": ["a", "", "ü"]}`},
	{"test.v1.Kinds", "Kinds", `{"byInt": {"-1": "a", "2": "b"}, "byBool": {"true": {"i32": 1}, "false": {}}, "byU64": {"18446744073709551615": "GREEN", "0": 5}, "byText": {"x": 1.5, "": "NaN"}}`},
	{"test.v1.Kinds", "Kinds", `{"child": {"child": {"text": "deep", "when": "1970-01-01T00:00:00Z"}}, "children": [{}, {"flag": true}], "when": "2026-01-02T03:04:05.120Z"}`},
	{"test.v1.Legacy", "Legacy", `{"text": "", "item": {"n": 3}, "color": "DARK", "child": {"[test.v1.tag]": "x", "text": "in"}}`},
	{"test.v1.Legacy", "Legacy", `{"[test.v1.tag]": "top"}`},
}

// TestGRPCBodyKinds holds parsed_body to protojson's text for every kind
// of field.
func TestGRPCBodyKinds(t *testing.T) {
	files := testFiles(t)
	b := newBuilder(t, input.Options{ProtoDescriptors: testProtos(t)})
	for _, tt := range kindsCases {
		t.Run(tt.text, func(t *testing.T) {
			msg := kindsMessage(t, files, tt.name, tt.text)
			want, ok := dynamicOracle(t, files, tt.name, msg)
			if !ok {
				t.Fatal("protojson refuses the message")
			}
			parsed, _, err := bodyOf(t, b, grpcRequest("/test.v1.Test/"+tt.method, "application/grpc", grpcFrame(0, msg)))
			if err != nil {
				t.Fatal(err)
			}
			if got := input.CanonicalJSON(t, parsed); got != want {
				t.Fatalf("parsed_body %s\nwant        %s", got, want)
			}
		})
	}

	// proto2 does not check strings when decoding; protojson refuses to
	// write one that is not UTF-8, and so does meshid.
	_, _, err := bodyOf(t, b, grpcRequest("/test.v1.Test/Legacy", "application/grpc", grpcFrame(0, []byte{0x12, 4, 0x0a, 2, 0xff, 0xfe})))
	if err == nil || !strings.Contains(err.Error(), "invalid UTF-8") {
		t.Errorf("proto2 string of invalid UTF-8: %v, want a deny", err)
	}
}

// FuzzGRPCBody: any body, under any of a few paths and content types,
// is parsed as protojson writes the message, or reported truncated or
// unparsed, or denied; never half-parsed, never a panic. A well-formed
// message of a known unary method is never denied.
func FuzzGRPCBody(f *testing.F) {
	files := testFiles(f)
	methods := []struct {
		path  string
		input protoreflect.FullName // "": not decoded
	}{
		{"/grpc.health.v1.Health/Check", "grpc.health.v1.HealthCheckRequest"},
		{"/envoy.service.auth.v3.Authorization/Check", "envoy.service.auth.v3.CheckRequest"},
		{"/test.v1.Test/Kinds", "test.v1.Kinds"},
		{"/test.v1.Test/Legacy", "test.v1.Legacy"},
		{"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", ""},
		{"/a/b/c", ""},
	}
	types := []string{"application/grpc", "application/grpc+proto", "application/grpc+json"}

	rich := marshal(f, richCheckRequest(f))
	health := marshal(f, &grpc_health_v1.HealthCheckRequest{Service: "backend"})
	f.Add(uint8(0), uint8(0), grpcFrame(0, health))
	f.Add(uint8(1), uint8(1), grpcFrame(0, rich))
	f.Add(uint8(1), uint8(0), grpcFrame(0, rich)[:40])
	f.Add(uint8(0), uint8(2), grpcFrame(1, health))
	f.Add(uint8(4), uint8(0), slices.Concat(grpcFrame(0, health), grpcFrame(0, nil)))
	for _, c := range kindsCases {
		i := slices.IndexFunc(methods, func(m struct {
			path  string
			input protoreflect.FullName
		}) bool {
			return m.input == c.name
		})
		f.Add(uint8(i), uint8(0), grpcFrame(0, kindsMessage(f, files, c.name, c.text)))
	}

	b := newBuilder(f, input.Options{ProtoDescriptors: testProtos(f)})
	f.Fuzz(func(t *testing.T, method, contentType uint8, body []byte) {
		m := methods[int(method)%len(methods)]
		ct := types[int(contentType)%len(types)]
		parsed, truncated, err := bodyOf(t, b, grpcRequest(m.path, ct, body))
		if truncated && parsed != "null" {
			t.Fatalf("parsed_body %s of a truncated body", parsed)
		}
		var want string
		wellFormed := m.input != "" && ct != "application/grpc+json" && len(body) >= 5 && body[0] == 0 &&
			int(binary.BigEndian.Uint32(body[1:5])) == len(body)-5
		if wellFormed {
			var ok bool
			if want, ok = dynamicOracle(t, files, m.input, body[5:]); !ok {
				wellFormed = false
			}
		}
		switch {
		case wellFormed && err != nil:
			t.Fatalf("denied a message protojson writes as %s: %v", want, err)
		case wellFormed && input.CanonicalJSON(t, parsed) != want:
			t.Fatalf("parsed_body %s\nwant        %s", parsed, want)
		case !wellFormed && err == nil && parsed != "null":
			t.Fatalf("parsed_body %s of a body that is not one message of %s", parsed, m.path)
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
	d, err := input.LoadProtoDescriptors(writeDescriptorSet(t, marshal(t, set)))
	if err != nil {
		t.Fatal(err)
	}
	b := newBuilder(t, input.Options{ProtoDescriptors: d})

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

	parsed, _, err := bodyOf(t, b, request("type.googleapis.com/test.v1.Inner"))
	if want := `{"a":{"@type":"type.googleapis.com/test.v1.Inner","userName":"ada"}}`; err != nil || input.CanonicalJSON(t, parsed) != want {
		t.Errorf("parsed_body %s (%v), want %s", parsed, err, want)
	}
	if _, _, err := bodyOf(t, b, request("type.googleapis.com/test.v1.Nope")); err == nil || !strings.Contains(err.Error(), "test.v1.Nope") {
		t.Errorf("Any of an unknown type: %v, want a deny naming it", err)
	}
}

// BenchmarkGRPCBody is the input document of a gRPC call, its body
// decoded: no body, a small message, and a large one (a CheckRequest with
// metadata).
func BenchmarkGRPCBody(b *testing.B) {
	ib := newBuilder(b, input.Options{ProtoDescriptors: testProtos(b)})
	for _, bc := range []struct {
		name string
		req  *authv3.CheckRequest
	}{
		{"no-body", grpcRequest("/grpc.health.v1.Health/Check", "application/grpc", nil)},
		{"health", grpcRequest("/grpc.health.v1.Health/Check", "application/grpc", grpcFrame(0, marshal(b, &grpc_health_v1.HealthCheckRequest{Service: "backend"})))},
		{"check-request", grpcRequest("/envoy.service.auth.v3.Authorization/Check", "application/grpc", grpcFrame(0, marshal(b, richCheckRequest(b))))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ib.Build(context.Background(), bc.req, time.Time{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

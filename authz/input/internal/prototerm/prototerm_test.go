package prototerm_test

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshid/meshid/authz/input/internal/jsonterm"
	"github.com/meshid/meshid/authz/input/internal/prototerm"
)

// TestMessageIsProtoJSON holds Message to protojson's text for messages
// compiled into meshid; package input's grpcbody_test.go does the same
// for every kind of field, through descriptor sets.
func TestMessageIsProtoJSON(t *testing.T) {
	typed, err := anypb.New(wrapperspb.String("typed"))
	if err != nil {
		t.Fatal(err)
	}
	rich := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "10.0.0.7", Protocol: corev3.SocketAddress_UDP, PortSpecifier: &corev3.SocketAddress_PortValue{},
		}}}},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.UTC)),
			Http: &authv3.AttributeContext_HttpRequest{Size: 1 << 40, RawBody: []byte{0, 1, 250}, Headers: map[string]string{"b": "2", "a": "é"}},
		},
		MetadataContext: &corev3.Metadata{
			FilterMetadata:      map[string]*structpb.Struct{"lb": {Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(12345678901), "null": structpb.NewNullValue()}}},
			TypedFilterMetadata: map[string]*anypb.Any{"x": typed},
		},
	}}
	tests := map[string]proto.Message{
		"empty":                 &authv3.CheckRequest{},
		"check request":         rich,
		"small double":          &typev3.Percent{Value: 1e-7},
		"large double":          &typev3.Percent{Value: 1e21},
		"NaN":                   &typev3.Percent{Value: math.NaN()},
		"infinity":              &typev3.Percent{Value: math.Inf(-1)},
		"proto2 and extensions": protodesc.ToFileDescriptorProto(authv3.File_envoy_service_auth_v3_external_auth_proto),
	}
	for name, m := range tests {
		t.Run(name, func(t *testing.T) {
			want, err := protojson.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			b := roomy()
			got, err := prototerm.Message(m.ProtoReflect(), protoregistry.GlobalTypes, b)
			if err != nil {
				t.Fatalf("Message: %v", err)
			}
			// Written through protojson after all, the message was
			// drawn twice in part.
			if n := values(got.Value); b.Spent() != n && (name != "proto2 and extensions" || b.Spent() < n) {
				t.Errorf("drew %d values from the budget for a document of %d", b.Spent(), n)
			}
			gotJSON, err := json.Marshal(ast.MustJSON(got.Value))
			if err != nil {
				t.Fatal(err)
			}
			if g, w := canonical(t, gotJSON), canonical(t, want); g != w {
				t.Errorf("Message\n got: %s\nwant: %s", g, w)
			}
		})
	}
}

// TestMessageRefusesInvalidUTF8: a string that is not UTF-8 (proto2 does
// not check them when decoding) is an error, as protojson refuses to
// write one.
func TestMessageRefusesInvalidUTF8(t *testing.T) {
	m := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"\xff": {}}}
	if _, err := prototerm.Message(m.ProtoReflect(), protoregistry.GlobalTypes, roomy()); err == nil || !strings.Contains(err.Error(), "invalid UTF-8") {
		t.Errorf("Message of a map key that is not UTF-8: %v, want an error", err)
	}
}

// TestMessageBeyondBudget: a message with more values, or nesting deeper,
// than its budget allows is an error saying which, through the fast path
// and through protojson's (a Struct) alike.
func TestMessageBeyondBudget(t *testing.T) {
	wide := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
	for i := range 100 {
		wide.FilterMetadata[strings.Repeat("k", i+1)] = &structpb.Struct{}
	}
	nested := structpb.NewStructValue(&structpb.Struct{})
	for range 10 {
		nested = structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{nested}})
	}
	deep := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"a": {Fields: map[string]*structpb.Value{"b": nested}}}}
	deepMessages := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Id: "x"}}}}
	tests := []struct {
		name  string
		m     proto.Message
		b     *jsonterm.Budget
		want  error
		holds string
	}{
		{"many map entries", wide, jsonterm.NewBudget(64, 50, nil), jsonterm.ErrTooMany, "more than 50"},
		{"a deep Struct", deep, jsonterm.NewBudget(8, 1000, nil), jsonterm.ErrTooDeep, "more than 8 levels"},
		{"deep messages", deepMessages, jsonterm.NewBudget(3, 1000, nil), jsonterm.ErrTooDeep, "more than 3 levels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := prototerm.Message(tt.m.ProtoReflect(), protoregistry.GlobalTypes, roomy()); err != nil {
				t.Fatalf("with a roomy budget: %v", err)
			}
			_, err := prototerm.Message(tt.m.ProtoReflect(), protoregistry.GlobalTypes, tt.b)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.holds) {
				t.Errorf("Message = %v, want %v saying %q", err, tt.want, tt.holds)
			}
		})
	}
}

func roomy() *jsonterm.Budget { return jsonterm.NewBudget(1000, 1<<20, nil) }

// values counts the values of a JSON document as a budget does.
func values(v ast.Value) int {
	n := 1
	switch v := v.(type) {
	case *ast.Array:
		v.Foreach(func(t *ast.Term) { n += values(t.Value) })
	case ast.Object:
		v.Foreach(func(_, t *ast.Term) { n += values(t.Value) })
	}
	return n
}

// canonical re-encodes a JSON text with sorted keys and no spaces; numbers
// stay as written.
func canonical(t *testing.T, bs []byte) string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(bs)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%v in %s", err, bs)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

package input_test

import (
	"context"
	"math"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshid/meshid/authz/input"
)

// TestEncodings asserts each class of value the two encodings write
// apart, as a policy reads it: what the current OPA-Envoy plugin's
// policies see by default, what older plugins' policies saw with
// input_encoding: protojson. Each expression must hold.
func TestEncodings(t *testing.T) {
	req := checkRequest(frontend, backend, "POST", "/upload")
	a := req.Attributes
	a.Request.Time = timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 123456000, time.UTC))
	a.Request.Http.Size = 36
	a.Source.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol: corev3.SocketAddress_UDP, Address: "10.0.0.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 53},
	}}}
	typed, err := anypb.New(wrapperspb.String("typed"))
	if err != nil {
		t.Fatal(err)
	}
	a.MetadataContext = &corev3.Metadata{
		FilterMetadata:      map[string]*structpb.Struct{"f": {Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(2500000), "half": structpb.NewNumberValue(0.5)}}},
		TypedFilterMetadata: map[string]*anypb.Any{"t": typed},
	}
	epoch := checkRequest(frontend, backend, "GET", "/")
	epoch.Attributes.Request.Time = timestamppb.New(time.Unix(0, 0))

	// What protojson cannot write: the plugin's walk writes it all.
	odd := checkRequest(frontend, backend, "GET", "/")
	odd.Attributes.MetadataContext = &corev3.Metadata{
		FilterMetadata: map[string]*structpb.Struct{"f": {Fields: map[string]*structpb.Value{
			"nan": structpb.NewNumberValue(math.NaN()), "inf": structpb.NewNumberValue(math.Inf(1)), "none": {},
		}}},
		TypedFilterMetadata: map[string]*anypb.Any{"u": {TypeUrl: "type.googleapis.com/acme.Unknown", Value: []byte("\x01\x02")}},
	}

	tests := []struct {
		encoding input.Encoding
		req      *authv3.CheckRequest
		expr     string
	}{
		{"", req, `input.attributes.request.time == {"seconds": 1767323045, "nanos": 123456000}`},
		{"", epoch, `input.attributes.request.time == {}`},
		{"", req, `input.attributes.request.http.size == 36`},
		{"", req, `input.attributes.request.http.size < 1048576`},
		{"", req, `input.attributes.source.address.socketAddress.protocol == 1`},
		{"", req, `input.attributes.metadataContext.typedFilterMetadata.t == {"typeUrl": "type.googleapis.com/google.protobuf.StringValue", "value": "CgV0eXBlZA=="}`},
		{"", req, `input.attributes.metadataContext.filterMetadata.f.n == 2500000`},
		{"", req, `json.marshal(input.attributes.metadataContext.filterMetadata.f) == "{\"half\":0.5,\"n\":2.5e+06}"`},
		{"", odd, `input.attributes.metadataContext.filterMetadata.f == {"nan": "NaN", "inf": "Infinity", "none": null}`},
		{"", odd, `input.attributes.metadataContext.typedFilterMetadata.u == {"typeUrl": "type.googleapis.com/acme.Unknown", "value": "AQI="}`},
		{"", req, `input.version == {"encoding": "protojson", "ext_authz": "v3"}`},

		{input.EncodingProtoJSON, req, `input.attributes.request.time == "2026-01-02T03:04:05.123456Z"`},
		{input.EncodingProtoJSON, epoch, `input.attributes.request.time == "1970-01-01T00:00:00Z"`},
		{input.EncodingProtoJSON, req, `input.attributes.request.http.size == "36"`},
		{input.EncodingProtoJSON, req, `input.attributes.source.address.socketAddress.protocol == "UDP"`},
		{input.EncodingProtoJSON, req, `input.attributes.metadataContext.typedFilterMetadata.t == {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": "typed"}`},
		{input.EncodingProtoJSON, req, `json.marshal(input.attributes.metadataContext.filterMetadata.f) == "{\"half\":0.5,\"n\":2500000}"`},
		{input.EncodingProtoJSON, req, `input.version == {"encoding": "protojson", "ext_authz": "v3"}`},
	}
	builders := map[input.Encoding]*input.Builder{}
	for _, tt := range tests {
		b := builders[tt.encoding]
		if b == nil {
			b = newBuilder(t, input.Options{Encoding: tt.encoding})
			builders[tt.encoding] = b
		}
		doc, err := b.Build(context.Background(), tt.req, time.Time{})
		if err != nil {
			t.Fatalf("%q: %v", tt.encoding, err)
		}
		if !holds(t, doc, tt.expr) {
			t.Errorf("encoding %q: %s does not hold; attributes: %v", tt.encoding, tt.expr, doc.(interface{ Get(*ast.Term) *ast.Term }).Get(ast.StringTerm("attributes")))
		}
	}

	// protojson cannot write odd: the request is denied with the reason.
	if _, err := builders[input.EncodingProtoJSON].Build(context.Background(), odd, time.Time{}); err == nil {
		t.Error("protojson: metadata protojson cannot write was accepted")
	}
	if _, err := input.NewBuilder(input.Options{Encoding: "json"}); err == nil {
		t.Error(`NewBuilder accepted encoding "json"`)
	}
}

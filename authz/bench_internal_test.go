package authz

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/util"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshid/meshid/test/authztest"
)

// BenchmarkDecision sets meshid's whole decision beside the same decision
// taken the way the OPA-Envoy plugin takes it, in one run, on the demo
// backend's request and the shipped policy:
//
//   - meshid: Server.Check (input as an ast.Value straight from the proto,
//     the prepared query with pooled evaluation state, the CheckResponse).
//   - opa-envoy-way: the plugin's steps per request, rebuilt here since its
//     module cannot be fetched in this build environment: protojson.Marshal
//     of the request, decoded into a Go map with the parsed path, query and
//     body added, ast.InterfaceToValue, a prepared query evaluated with a
//     deadline context and OPA's default options, the result converted back
//     to Go values. Building the CheckResponse from that is left out, which
//     favours this side.
//
// bench/authz.md reports the ratio; the plugin itself may differ in detail.
func BenchmarkDecision(b *testing.B) {
	ctx := context.Background()
	e, err := NewEngine(ctx, Config{PolicyDir: "../policies/envoy"})
	if err != nil {
		b.Fatal(err)
	}
	req := authztest.DemoCheck("/hello?lang=fr&lang=en")

	b.Run("meshid", func(b *testing.B) {
		srv, err := NewServer(e, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := srv.Check(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})

	b.Run("opa-envoy-way", func(b *testing.B) {
		policies, err := LoadPolicies("../policies/envoy", ast.RegoV1)
		if err != nil {
			b.Fatal(err)
		}
		opts := []func(*rego.Rego){rego.Query(DefaultDecision), rego.Store(inmem.NewFromObject(policies.Data))}
		for _, m := range policies.Modules {
			opts = append(opts, rego.ParsedModule(m))
		}
		pq, err := rego.New(opts...).PrepareForEval(ctx)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			doc, ok := opaEnvoyInput(b, req)
			if !ok {
				b.Fatal("reference refused the request")
			}
			input, err := ast.InterfaceToValue(doc)
			if err != nil {
				b.Fatal(err)
			}
			evalCtx, cancel := context.WithTimeout(ctx, DefaultEvalTimeout)
			rs, err := pq.Eval(evalCtx, rego.EvalParsedInput(input))
			cancel()
			if err != nil || len(rs) == 0 {
				b.Fatalf("eval: %v %v", rs, err)
			}
		}
	})
}

// opaEnvoyInput is the input document built the plugin's way: protojson
// text, decoded into a Go map, plus the extra keys. It is the oracle of
// package input's tests (referenceInput there) for a request without a
// body, which is all BenchmarkDecision sends.
func opaEnvoyInput(b *testing.B, req *authv3.CheckRequest) (map[string]any, bool) {
	bs, err := protojson.Marshal(req)
	if err != nil {
		return nil, false
	}
	var doc map[string]any
	if err := util.UnmarshalJSON(bs, &doc); err != nil {
		b.Fatalf("decode protojson: %v", err)
	}
	httpReq := req.GetAttributes().GetRequest().GetHttp()

	rawPath, rawQuery, _ := strings.Cut(httpReq.GetPath(), "?")
	unescaped, err := url.PathUnescape(rawPath)
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
	if httpReq.GetBody() != "" || len(httpReq.GetRawBody()) > 0 {
		b.Fatal("opaEnvoyInput parses no bodies")
	}
	doc["parsed_body"] = nil
	doc["parsed_path"] = segments
	doc["parsed_query"] = query
	doc["truncated_body"] = false
	doc["version"] = map[string]any{"ext_authz": "v3", "encoding": "protojson"}
	if p := req.GetAttributes().GetSource().GetPrincipal(); p != "" {
		doc["source_principal"] = p
	}
	spiffe := map[string]any{}
	if id, err := spiffeid.FromString(req.GetAttributes().GetSource().GetPrincipal()); err == nil {
		d := opaEnvoyID(id)
		d["via"] = "mtls"
		spiffe["source"] = d
	}
	if id, err := spiffeid.FromString(req.GetAttributes().GetDestination().GetPrincipal()); err == nil {
		spiffe["destination"] = opaEnvoyID(id)
	}
	doc["spiffe"] = spiffe
	return doc, true
}

func opaEnvoyID(id spiffeid.ID) map[string]any {
	segments := []any{}
	if p := id.Path(); p != "" {
		for _, s := range strings.Split(p[1:], "/") {
			segments = append(segments, s)
		}
	}
	return map[string]any{"id": id.String(), "trust_domain": id.TrustDomain().Name(), "path": id.Path(), "segments": segments}
}

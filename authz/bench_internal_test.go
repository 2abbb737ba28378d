package authz

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
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
	req := envoyLike()

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
			doc, ok := referenceInput(b, req)
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

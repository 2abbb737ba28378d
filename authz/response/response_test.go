package response_test

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meshid/meshid/authz/response"
)

func hdr(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
}

// TestFromDecision: what of a decision reaches Envoy on an allow and on a
// deny. The authz Server's tests cover every field through gRPC.
func TestFromDecision(t *testing.T) {
	deny := response.Denied(typev3.StatusCode_Unauthorized)
	deny.GetDeniedResponse().Headers = []*corev3.HeaderValueOption{hdr("www-authenticate", "Bearer")}
	deny.GetDeniedResponse().Body = "who are you?"
	allow := response.OK()
	allow.GetOkResponse().Headers = []*corev3.HeaderValueOption{hdr("x-user", "ada")}
	allow.GetOkResponse().HeadersToRemove = []string{"x-spoofed"}
	tests := []struct {
		decision string
		allowed  bool
		want     *authv3.CheckResponse
	}{
		{`true`, true, response.OK()},
		{`false`, false, response.Denied(typev3.StatusCode_NotFound)},
		{`{"allowed": false}`, false, response.Denied(typev3.StatusCode_NotFound)},
		{`{"allowed": false, "http_status": 401, "body": "who are you?", "headers": {"www-authenticate": "Bearer"}, "request_headers_to_remove": ["x-a"]}`, false, deny},
		{`{"allowed": true, "headers": {"x-user": "ada"}, "request_headers_to_remove": ["x-spoofed"], "http_status": 401}`, true, allow},
	}
	for _, tt := range tests {
		t.Run(tt.decision, func(t *testing.T) {
			got, allowed, err := response.FromDecision(ast.MustParseTerm(tt.decision).Value, typev3.StatusCode_NotFound)
			if err != nil || allowed != tt.allowed || !proto.Equal(got, tt.want) {
				t.Errorf("FromDecision = %s, %v, %v\nwant %s, %v", protojson.Format(got), allowed, err, protojson.Format(tt.want), tt.allowed)
			}
		})
	}
}

func TestFromDecisionRefuses(t *testing.T) {
	for _, decision := range []string{`"yes"`, `{"headers": {}}`, `{"allowed": true, "headers": {"x-a": 1}}`, `{"allowed": false, "http_status": 0}`, `{"allowed": true, "request_headers_to_remove": {"a", 1}}`} {
		if got, allowed, err := response.FromDecision(ast.MustParseTerm(decision).Value, typev3.StatusCode_Forbidden); err == nil {
			t.Errorf("FromDecision(%s) = %v, %v; want an error", decision, got, allowed)
		}
	}
}

func TestCheckHTTPStatus(t *testing.T) {
	for code, ok := range map[int]bool{100: true, 200: true, 204: true, 302: true, 401: true, 503: true, 0: false, 99: false, 103: false, 1000: false, 1 << 32: false} {
		if err := response.CheckHTTPStatus(code); (err == nil) != ok {
			t.Errorf("CheckHTTPStatus(%d) = %v", code, err)
		}
	}
	for code, ok := range map[int]bool{302: true, 401: true, 503: true, 200: false, 204: false, 100: false, 103: false} {
		if err := response.CheckDenyStatus(code); (err == nil) != ok {
			t.Errorf("CheckDenyStatus(%d) = %v", code, err)
		}
	}
}

// TestWithDecisionID: the id goes to the upstream and the client on an
// allow, to the client on a deny, and to the dynamic metadata either way;
// the response stamped is left as it was.
func TestWithDecisionID(t *testing.T) {
	const id = "6f1c2d9e-0b7a-4c1e-9a55-1f0f2b3c4d5e"
	has := func(hs []*corev3.HeaderValueOption) bool {
		return len(hs) == 1 && hs[0].GetHeader().GetKey() == response.DecisionIDHeader && hs[0].GetHeader().GetValue() == id
	}
	allow, deny := response.OK(), response.Denied(typev3.StatusCode_Forbidden)
	allow = response.WithDecisionID(allow, id)
	deny = response.WithDecisionID(deny, id)
	if ok := allow.GetOkResponse(); !has(ok.GetHeaders()) || !has(ok.GetResponseHeadersToAdd()) {
		t.Errorf("allow %s lacks the decision id header", protojson.Format(allow))
	}
	if !has(deny.GetDeniedResponse().GetHeaders()) {
		t.Errorf("deny %s lacks the decision id header", protojson.Format(deny))
	}
	for _, r := range []*authv3.CheckResponse{allow, deny} {
		if got := r.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue(); got != id {
			t.Errorf("dynamic metadata decision_id = %q, want %s", got, id)
		}
	}
}

// TestWithDecisionIDShares: stamping a shared response, as the decision
// cache does for every hit, never changes it, however full its lists are.
func TestWithDecisionIDShares(t *testing.T) {
	resp, _, err := response.FromDecision(ast.MustParseTerm(`{"allowed": true, "headers": {"x-a": "1"}, "response_headers_to_add": {"x-b": "2"}, "dynamic_metadata": {"k": "v"}}`).Value, typev3.StatusCode_Forbidden)
	if err != nil {
		t.Fatal(err)
	}
	ok := resp.GetOkResponse()
	ok.Headers = append(make([]*corev3.HeaderValueOption, 0, 8), ok.Headers...) // room to append in place
	before := proto.Clone(resp)
	a := response.WithDecisionID(resp, "a")
	b := response.WithDecisionID(resp, "b")
	if !proto.Equal(resp, before) {
		t.Fatalf("stamping changed the shared response: %s", protojson.Format(resp))
	}
	for id, r := range map[string]*authv3.CheckResponse{"a": a, "b": b} {
		hs := r.GetOkResponse().GetHeaders()
		if got := hs[len(hs)-1].GetHeader().GetValue(); got != id || len(hs) != 2 {
			t.Errorf("response %s: headers %v", id, hs)
		}
		if got := r.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue(); got != id || r.GetDynamicMetadata().GetFields()["k"].GetStringValue() != "v" {
			t.Errorf("response %s: metadata %v", id, r.GetDynamicMetadata())
		}
	}
}

// TestForWireDecodesAsStamped: what ForWire sends decodes to the response
// WithDecisionID makes, for allows and denies with and without the
// policy's headers and metadata (a decision_id of its own included, which
// the id replaces), for ids short and long; the shared response is left
// as it was.
func TestForWireDecodesAsStamped(t *testing.T) {
	decisions := []string{
		`true`,
		`false`,
		`{"allowed": true, "headers": {"x-a": "1"}, "response_headers_to_add": {"x-b": "2"}, "request_headers_to_remove": ["x-c"]}`,
		`{"allowed": true, "dynamic_metadata": {"k": "v", "n": 2, "o": {"p": [true, null]}}}`,
		`{"allowed": true, "dynamic_metadata": {"decision_id": "the policy's", "k": "v"}}`,
		`{"allowed": false, "http_status": 401, "body": "who?", "headers": {"www-authenticate": "Bearer"}, "dynamic_metadata": {"k": "v"}}`,
		`{"allowed": false, "dynamic_metadata": {"decision_id": 7}}`,
	}
	ids := []string{"0192f0e4-1c2d-7abc-8def-0123456789ab", "", "x", strings.Repeat("i", 300)}
	for _, d := range decisions {
		resp, _, err := response.FromDecision(ast.MustParseTerm(d).Value, typev3.StatusCode_Forbidden)
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		before := proto.Clone(resp)
		for _, id := range ids {
			bs, err := proto.Marshal(response.ForWire(resp, id))
			if err != nil {
				t.Fatalf("%s: %v", d, err)
			}
			got := &authv3.CheckResponse{}
			if err := proto.Unmarshal(bs, got); err != nil {
				t.Fatalf("%s: %v", d, err)
			}
			if want := response.WithDecisionID(resp, id); !proto.Equal(got, want) {
				t.Errorf("%s, id %q: decodes to\n%s\nwant\n%s", d, id, protojson.Format(got), protojson.Format(want))
			}
		}
		if !proto.Equal(resp, before) {
			t.Errorf("%s: stamping changed the shared response", d)
		}
	}
}

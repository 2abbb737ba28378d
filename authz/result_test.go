package authz_test

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/test/authztest"
	"github.com/meshid/meshid/test/syncbuf"
)

// withoutDecisionID takes the decision id out of a response, checking it
// is where it belongs, so the rest can be compared with a fixed value.
func withoutDecisionID(t *testing.T, resp *authv3.CheckResponse) *authv3.CheckResponse {
	t.Helper()
	resp, _ = authztest.WithoutDecisionID(t, resp)
	return resp
}

func hdr(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
}

func sortHeaders(hs []*corev3.HeaderValueOption) {
	slices.SortStableFunc(hs, func(a, b *corev3.HeaderValueOption) int {
		return strings.Compare(a.GetHeader().GetKey()+"="+a.GetHeader().GetValue(), b.GetHeader().GetKey()+"="+b.GetHeader().GetValue())
	})
}

func allowed(ok *authv3.OkHttpResponse) *authv3.CheckResponse {
	return &authv3.CheckResponse{Status: statusOK, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok}}
}

func denied(d *authv3.DeniedHttpResponse) *authv3.CheckResponse {
	return &authv3.CheckResponse{Status: statusDenied, HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: d}}
}

// TestResponseMapping: every form of decision OPA-Envoy understands,
// through a real gRPC server, compared field by field with the
// CheckResponse OPA-Envoy builds for it.
func TestResponseMapping(t *testing.T) {
	meta := func(fields map[string]any) *structpb.Struct {
		s, err := structpb.NewStruct(fields)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name   string
		result string // the value of allow
		opts   authz.Options
		want   *authv3.CheckResponse
	}{
		{"true", `true`, authz.Options{}, allowed(&authv3.OkHttpResponse{})},
		{"false", `false`, authz.Options{}, denied(&authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}})},
		{"false with deny status", `false`, authz.Options{DenyStatus: 404}, denied(&authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_NotFound}})},
		{
			name:   "allowed object with every allow field",
			result: `{"allowed": true, "headers": {"x-user": "ada", "x-roles": ["a", "b"]}, "request_headers_to_remove": ["x-spoofed"], "response_headers_to_add": [{"x-served-by": "meshid"}, {"x-trace": "1"}], "query_parameters_to_set": {"lang": "fr", "tag": ["x", "y"]}, "query_parameters_to_remove": ["debug"], "dynamic_metadata": {"user": "ada", "n": 3}, "http_status": 404, "body": "ignored on allow"}`,
			want: func() *authv3.CheckResponse {
				r := allowed(&authv3.OkHttpResponse{
					Headers:                 []*corev3.HeaderValueOption{hdr("x-roles", "a"), hdr("x-roles", "b"), hdr("x-user", "ada")},
					HeadersToRemove:         []string{"x-spoofed"},
					ResponseHeadersToAdd:    []*corev3.HeaderValueOption{hdr("x-served-by", "meshid"), hdr("x-trace", "1")},
					QueryParametersToSet:    []*corev3.QueryParameter{{Key: "lang", Value: "fr"}, {Key: "tag", Value: "x"}, {Key: "tag", Value: "y"}},
					QueryParametersToRemove: []string{"debug"},
				})
				r.DynamicMetadata = meta(map[string]any{"user": "ada", "n": 3})
				return r
			}(),
		},
		{
			name:   "denied object with status body and headers",
			result: `{"allowed": false, "http_status": 401, "body": "who are you?", "headers": {"www-authenticate": "Bearer"}, "dynamic_metadata": {"reason": "no token"}, "request_headers_to_remove": ["ignored on deny"]}`,
			want: func() *authv3.CheckResponse {
				r := denied(&authv3.DeniedHttpResponse{
					Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
					Headers: []*corev3.HeaderValueOption{hdr("www-authenticate", "Bearer")},
					Body:    "who are you?",
				})
				r.DynamicMetadata = meta(map[string]any{"reason": "no token"})
				return r
			}(),
		},
		{
			name:   "sets wherever lists are taken, in sorted order",
			result: `{"allowed": true, "headers": {"x-roles": {"b", "a"}}, "request_headers_to_remove": {h | some h in ["x-b", "x-a"]}, "response_headers_to_add": {{"x-trace": "1"}, {"x-served-by": "meshid"}}, "query_parameters_to_set": {"tag": {"y", "x"}}, "query_parameters_to_remove": {"debug", "admin"}, "dynamic_metadata": {"groups": {"ops", "dev"}}}`,
			want: func() *authv3.CheckResponse {
				r := allowed(&authv3.OkHttpResponse{
					Headers:                 []*corev3.HeaderValueOption{hdr("x-roles", "a"), hdr("x-roles", "b")},
					HeadersToRemove:         []string{"x-a", "x-b"},
					ResponseHeadersToAdd:    []*corev3.HeaderValueOption{hdr("x-served-by", "meshid"), hdr("x-trace", "1")},
					QueryParametersToSet:    []*corev3.QueryParameter{{Key: "tag", Value: "x"}, {Key: "tag", Value: "y"}},
					QueryParametersToRemove: []string{"admin", "debug"},
				})
				r.DynamicMetadata = meta(map[string]any{"groups": []any{"dev", "ops"}})
				return r
			}(),
		},
		{
			name:   "keys that are not strings are their JSON text",
			result: `{"allowed": true, "headers": {1: "one"}, "query_parameters_to_set": {true: "t"}}`,
			want: allowed(&authv3.OkHttpResponse{
				Headers:              []*corev3.HeaderValueOption{hdr("1", "one")},
				QueryParametersToSet: []*corev3.QueryParameter{{Key: "true", Value: "t"}},
			}),
		},
		{
			name:   "a CORS preflight answered 204 with its headers",
			result: `{"allowed": false, "http_status": 204, "headers": {"access-control-allow-origin": "https://app.example", "access-control-allow-methods": {"GET", "POST"}}}`,
			want: denied(&authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_NoContent},
				Headers: []*corev3.HeaderValueOption{
					hdr("access-control-allow-methods", "GET"), hdr("access-control-allow-methods", "POST"),
					hdr("access-control-allow-origin", "https://app.example"),
				},
			}),
		},
		{
			name:   "a deny with 100 and 200, statuses Envoy's API names",
			result: `{"allowed": false, "http_status": 200, "body": "maintenance"}`,
			want:   denied(&authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_OK}, Body: "maintenance"}),
		},
		{
			name:   "denied object without status takes the deny status",
			result: `{"allowed": false}`,
			opts:   authz.Options{DenyStatus: 503},
			want:   denied(&authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}}),
		},
		{
			name:   "dry run allows a deny and keeps its metadata",
			result: `{"allowed": false, "http_status": 401, "headers": {"x-a": "b"}, "dynamic_metadata": {"k": "v"}}`,
			opts:   authz.Options{DryRun: true},
			want: func() *authv3.CheckResponse {
				r := allowed(&authv3.OkHttpResponse{})
				r.DynamicMetadata = meta(map[string]any{"k": "v"})
				return r
			}(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := engine(t, "package envoy.authz\n\nallow := "+tt.result+"\n", authz.Config{})
			got := withoutDecisionID(t, check(t, serve(t, newServer(t, e, tt.opts)), checkRequest(frontend, backend, "GET", "/hello")))
			if ok := got.GetOkResponse(); ok != nil {
				sortHeaders(ok.Headers)
				slices.SortFunc(ok.QueryParametersToSet, func(a, b *corev3.QueryParameter) int { return strings.Compare(a.Key+a.Value, b.Key+b.Value) })
			}
			if !proto.Equal(got, tt.want) {
				t.Errorf("response\n got: %s\nwant: %s", protojson.Format(got), protojson.Format(tt.want))
			}
		})
	}
}

// TestBadResultsDeny: a decision meshid cannot carry out is a deny with
// the deny status, never an allow, and the log says what is wrong.
func TestBadResultsDeny(t *testing.T) {
	tests := []struct{ result, logged string }{
		{`"yes"`, `is a string, want a boolean or an object`},
		{`1`, `is a number`},
		{`null`, `is a null`},
		{`[true]`, `is a array`},
		{`{"headers": {}}`, `without an "allowed" field`},
		{`{"allowed": "true"}`, `"allowed" that is a string`},
		{`{"allowed": true, "headers": {"x-a": 1}}`, `"headers" "x-a": is a number, want a string or a list of strings`},
		{`{"allowed": true, "headers": "x-a: b"}`, `"headers" that is a string, want an object or a list of objects`},
		{`{"allowed": true, "headers": [{"x-a": "b"}, "c"]}`, `"headers" list holding a string`},
		{`{"allowed": true, "request_headers_to_remove": "x-a"}`, `"request_headers_to_remove" that is a string, want a list of strings`},
		{`{"allowed": true, "request_headers_to_remove": [1]}`, `a list holding a number`},
		{`{"allowed": true, "response_headers_to_add": {"x": {"y": "z"}}}`, `"response_headers_to_add" "x": is a object`},
		{`{"allowed": true, "query_parameters_to_set": ["a"]}`, `"query_parameters_to_set" that is a array, want an object`},
		{`{"allowed": true, "query_parameters_to_remove": {"a": 1}}`, `"query_parameters_to_remove" that is a object`},
		{`{"allowed": true, "dynamic_metadata": "x"}`, `"dynamic_metadata" that is a string, want an object`},
		{`{"allowed": false, "http_status": "401"}`, `"http_status" that is a string, want a number`},
		{`{"allowed": false, "http_status": 0}`, `"http_status" 0 that Envoy cannot send`},
		{`{"allowed": false, "http_status": 103}`, `"http_status" 103 that Envoy cannot send`},
		{`{"allowed": true, "headers": {"x-a": {"b", 1}}}`, `"headers" "x-a": a list holding a number`},
		{`{"allowed": true, "request_headers_to_remove": {h | some i in numbers.range(1, 5000); h := sprintf("x-%d", [i])}}`, `more than 4096 headers and query parameters`},
		{`{"allowed": false, "body": concat("", [s | some _ in numbers.range(1, 1100); s := "` + strings.Repeat("x", 1000) + `"])}`, `more than 1048576 bytes`},
		{`{"allowed": false, "http_status": 999}`, `"http_status" 999 that Envoy cannot send`},
		{`{"allowed": false, "http_status": 401.5}`, `"http_status" 401.5 that is not an integer`},
		{`{"allowed": false, "body": {"a": 1}}`, `"body" that is a object, want a string`},
	}
	for _, tt := range tests {
		t.Run(tt.result, func(t *testing.T) {
			var logs syncbuf.Buffer
			e := engine(t, "package envoy.authz\n\nallow := "+tt.result+"\n", authz.Config{EvalTimeout: 10 * time.Second}) // the huge results take a while to build
			srv := newServer(t, e, authz.Options{DenyStatus: 429, Log: slog.New(slog.NewJSONHandler(&logs, nil))})
			req := checkRequest(frontend, backend, "GET", "/hello")
			got := withoutDecisionID(t, check(t, serve(t, srv), req))
			want := denied(&authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_TooManyRequests}})
			if !proto.Equal(got, want) {
				t.Errorf("response %s, want %s", protojson.Format(got), protojson.Format(want))
			}
			if !strings.Contains(logs.String(), "reached no decision") {
				t.Errorf("log %q does not say the policy reached no decision", logs.String())
			}
			if err := srv.Decide(t.Context(), req).Err; err == nil || !strings.Contains(err.Error(), tt.logged) {
				t.Errorf("error %v does not say %q", err, tt.logged)
			}
		})
	}
}

func TestDenyStatusMustBeSendable(t *testing.T) {
	for _, code := range []int{200, 99, 1000, 103} {
		if _, err := authz.NewServer(nil, authz.Options{DenyStatus: code}); err == nil {
			t.Errorf("NewServer accepted deny status %d", code)
		}
	}
}

var (
	statusOK     = &rpcstatus.Status{Code: int32(codes.OK)}
	statusDenied = &rpcstatus.Status{Code: int32(codes.PermissionDenied)}
)

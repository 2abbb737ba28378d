// Package response maps a policy's decision to the CheckResponse Envoy
// acts on, as OPA-Envoy does (its envoyauth/response.go): a boolean, or an
// object whose "allowed" decides and whose other fields become headers,
// query parameter changes, a status, a body and dynamic metadata. It also
// stamps decision ids on responses.
//
// It never evaluates a policy, never applies dry run or logs: a decision
// it cannot carry out is an error for its caller to deny.
package response

import (
	"errors"
	"fmt"
	"net/http"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
)

// DecisionIDHeader carries the decision id to the upstream and the client,
// so a request can be found in the decision log from either end.
const DecisionIDHeader = "x-meshid-decision-id"

// decisionIDKey is where the decision id goes in the dynamic metadata, the
// same key as OPA-Envoy's: Envoy's access log can print it with
// %DYNAMIC_METADATA(envoy.filters.http.ext_authz:decision_id)%.
const decisionIDKey = "decision_id"

// The fields of OPA-Envoy's object result.
var (
	rAllowed                 = ast.StringTerm("allowed")
	rHeaders                 = ast.StringTerm("headers")
	rResponseHeadersToAdd    = ast.StringTerm("response_headers_to_add")
	rRequestHeadersToRemove  = ast.StringTerm("request_headers_to_remove")
	rQueryParametersToSet    = ast.StringTerm("query_parameters_to_set")
	rQueryParametersToRemove = ast.StringTerm("query_parameters_to_remove")
	rHTTPStatus              = ast.StringTerm("http_status")
	rBody                    = ast.StringTerm("body")
	rDynamicMetadata         = ast.StringTerm("dynamic_metadata")
)

// FromDecision maps a decision to the CheckResponse Envoy acts on, the way
// OPA-Envoy does: a boolean allows or denies; an object's "allowed" does,
// and its other fields become headers for the upstream ("headers",
// "request_headers_to_remove", "query_parameters_to_set"/"_remove") and for
// the client ("response_headers_to_add" on an allow; "headers", "body" and
// "http_status" on a deny), and "dynamic_metadata" either way. A field of
// the wrong shape is an error: the policy asked for something meshid cannot
// do, and allowing without it could be worse than denying.
//
// denyStatus is the HTTP status of a deny whose policy names none.
func FromDecision(decision ast.Value, denyStatus typev3.StatusCode) (resp *authv3.CheckResponse, allowed bool, err error) {
	switch v := decision.(type) {
	case ast.Boolean:
		if v {
			return OK(), true, nil
		}
		return Denied(denyStatus), false, nil
	case ast.Object:
		return objectResponse(v, denyStatus)
	default:
		return nil, false, fmt.Errorf("is a %s, want a boolean or an object with a boolean \"allowed\"", ast.ValueName(decision))
	}
}

// OK is an allow.
func OK() *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}},
	}
}

// Denied is a deny with an HTTP status.
func Denied(status typev3.StatusCode) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: status},
		}},
	}
}

func objectResponse(obj ast.Object, denyStatus typev3.StatusCode) (*authv3.CheckResponse, bool, error) {
	a := obj.Get(rAllowed)
	if a == nil {
		return nil, false, errors.New("is an object without an \"allowed\" field")
	}
	allowed, ok := a.Value.(ast.Boolean)
	if !ok {
		return nil, false, fmt.Errorf("has an \"allowed\" that is a %s, want a boolean", ast.ValueName(a.Value))
	}
	headers, err := headerOptions(obj, rHeaders)
	if err != nil {
		return nil, false, err
	}
	var metadata *structpb.Struct
	if t := obj.Get(rDynamicMetadata); t != nil {
		m, ok := t.Value.(ast.Object)
		if !ok {
			return nil, false, fmt.Errorf("has a \"dynamic_metadata\" that is a %s, want an object", ast.ValueName(t.Value))
		}
		if metadata, err = structValue(m); err != nil {
			return nil, false, fmt.Errorf("\"dynamic_metadata\": %w", err)
		}
	}

	if !allowed {
		status := denyStatus
		if t := obj.Get(rHTTPStatus); t != nil {
			if status, err = httpStatus(t.Value); err != nil {
				return nil, false, err
			}
		}
		var body string
		if t := obj.Get(rBody); t != nil {
			s, ok := t.Value.(ast.String)
			if !ok {
				return nil, false, fmt.Errorf("has a \"body\" that is a %s, want a string", ast.ValueName(t.Value))
			}
			body = string(s)
		}
		resp := Denied(status)
		resp.GetDeniedResponse().Headers = headers
		resp.GetDeniedResponse().Body = body
		resp.DynamicMetadata = metadata
		return resp, false, nil
	}

	okr := &authv3.OkHttpResponse{Headers: headers}
	if okr.HeadersToRemove, err = stringList(obj, rRequestHeadersToRemove); err != nil {
		return nil, false, err
	}
	if okr.ResponseHeadersToAdd, err = headerOptions(obj, rResponseHeadersToAdd); err != nil {
		return nil, false, err
	}
	if okr.QueryParametersToRemove, err = stringList(obj, rQueryParametersToRemove); err != nil {
		return nil, false, err
	}
	if okr.QueryParametersToSet, err = queryParameters(obj); err != nil {
		return nil, false, err
	}
	resp := OK()
	resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: okr}
	resp.DynamicMetadata = metadata
	return resp, true, nil
}

// headerOptions reads a headers field: an object of name to a string or a
// list of strings (one header each), or a list of such objects.
func headerOptions(obj ast.Object, field *ast.Term) ([]*corev3.HeaderValueOption, error) {
	t := obj.Get(field)
	if t == nil {
		return nil, nil
	}
	var out []*corev3.HeaderValueOption
	add := func(o ast.Object) error {
		return o.Iter(func(k, v *ast.Term) error {
			name, ok := k.Value.(ast.String)
			if !ok {
				return fmt.Errorf("has a %s with a %s key, want strings", field, ast.ValueName(k.Value))
			}
			values, err := stringOrStrings(v.Value)
			if err != nil {
				return fmt.Errorf("has a %s %q: %w", field, string(name), err)
			}
			for _, s := range values {
				out = append(out, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: string(name), Value: s}})
			}
			return nil
		})
	}
	switch v := t.Value.(type) {
	case ast.Object:
		if err := add(v); err != nil {
			return nil, err
		}
	case *ast.Array:
		for i := range v.Len() {
			o, ok := v.Elem(i).Value.(ast.Object)
			if !ok {
				return nil, fmt.Errorf("has a %s list holding a %s, want objects", field, ast.ValueName(v.Elem(i).Value))
			}
			if err := add(o); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("has a %s that is a %s, want an object or a list of objects", field, ast.ValueName(t.Value))
	}
	return out, nil
}

func stringOrStrings(v ast.Value) ([]string, error) {
	switch v := v.(type) {
	case ast.String:
		return []string{string(v)}, nil
	case *ast.Array:
		out := make([]string, v.Len())
		for i := range v.Len() {
			s, ok := v.Elem(i).Value.(ast.String)
			if !ok {
				return nil, fmt.Errorf("a list holding a %s, want strings", ast.ValueName(v.Elem(i).Value))
			}
			out[i] = string(s)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("is a %s, want a string or a list of strings", ast.ValueName(v))
	}
}

func stringList(obj ast.Object, field *ast.Term) ([]string, error) {
	t := obj.Get(field)
	if t == nil {
		return nil, nil
	}
	arr, ok := t.Value.(*ast.Array)
	if !ok {
		return nil, fmt.Errorf("has a %s that is a %s, want a list of strings", field, ast.ValueName(t.Value))
	}
	out, err := stringOrStrings(arr)
	if err != nil {
		return nil, fmt.Errorf("has a %s: %w", field, err)
	}
	return out, nil
}

func queryParameters(obj ast.Object) ([]*corev3.QueryParameter, error) {
	t := obj.Get(rQueryParametersToSet)
	if t == nil {
		return nil, nil
	}
	o, ok := t.Value.(ast.Object)
	if !ok {
		return nil, fmt.Errorf("has a %s that is a %s, want an object", rQueryParametersToSet, ast.ValueName(t.Value))
	}
	var out []*corev3.QueryParameter
	err := o.Iter(func(k, v *ast.Term) error {
		key, ok := k.Value.(ast.String)
		if !ok {
			return fmt.Errorf("has a %s with a %s key, want strings", rQueryParametersToSet, ast.ValueName(k.Value))
		}
		values, err := stringOrStrings(v.Value)
		if err != nil {
			return fmt.Errorf("has a %s %q: %w", rQueryParametersToSet, string(key), err)
		}
		for _, s := range values {
			out = append(out, &corev3.QueryParameter{Key: string(key), Value: s})
		}
		return nil
	})
	return out, err
}

// httpStatus accepts what Envoy can send: a status its API knows.
func httpStatus(v ast.Value) (typev3.StatusCode, error) {
	n, ok := v.(ast.Number)
	if !ok {
		return 0, fmt.Errorf("has an \"http_status\" that is a %s, want a number", ast.ValueName(v))
	}
	code, ok := n.Int()
	if !ok {
		return 0, fmt.Errorf("has an \"http_status\" %s that is not an integer", n)
	}
	if err := CheckHTTPStatus(code); err != nil {
		return 0, fmt.Errorf("has an \"http_status\" %w", err)
	}
	return typev3.StatusCode(code), nil
}

// CheckHTTPStatus says whether Envoy can answer with code: its API only
// carries the statuses it names (no 1xx, no 200).
func CheckHTTPStatus(code int) error {
	if _, ok := typev3.StatusCode_name[int32(code)]; !ok || code < 300 || http.StatusText(code) == "" {
		return fmt.Errorf("%d that Envoy cannot send as a denial (want a 3xx, 4xx or 5xx status Envoy's API names)", code)
	}
	return nil
}

// structValue converts dynamic metadata to the protobuf Struct Envoy takes.
func structValue(o ast.Object) (*structpb.Struct, error) {
	v, err := ast.JSON(o)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("not an object")
	}
	return structpb.NewStruct(m)
}

// SetDecisionID stamps the decision id on a response: a header to the
// upstream and back to the client on an allow, to the client on a deny,
// and the dynamic metadata either way.
func SetDecisionID(resp *authv3.CheckResponse, id string) {
	h := &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: DecisionIDHeader, Value: id}}
	switch r := resp.GetHttpResponse().(type) {
	case *authv3.CheckResponse_OkResponse:
		r.OkResponse.Headers = append(r.OkResponse.Headers, h)
		r.OkResponse.ResponseHeadersToAdd = append(r.OkResponse.ResponseHeadersToAdd, h)
	case *authv3.CheckResponse_DeniedResponse:
		r.DeniedResponse.Headers = append(r.DeniedResponse.Headers, h)
	}
	if resp.DynamicMetadata == nil {
		resp.DynamicMetadata = &structpb.Struct{Fields: make(map[string]*structpb.Value, 1)}
	}
	resp.DynamicMetadata.Fields[decisionIDKey] = structpb.NewStringValue(id)
}

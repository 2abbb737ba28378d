package authz

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/meshid/meshid/authz/response"
)

// maxHTTPBody bounds the body read from an HTTP authorization request,
// the same as gRPC's default message limit on the Check path.
const maxHTTPBody = 4 << 20

// headersToRemoveHeader is how an HTTP authorization server asks Envoy to
// drop request headers before the upstream sees them.
const headersToRemoveHeader = "x-envoy-auth-headers-to-remove"

// HTTPHandler answers Envoy's HTTP ext_authz protocol (http_service) with
// the same policies and the same input document as Check. Envoy forwards
// the original method, path (path_prefix must be empty), headers it is
// told to (authorization_request.allowed_headers) and, with
// with_request_body, the body. There is no peer in this protocol, so
// input.attributes.source and destination are absent; input.spiffe.source
// can still come from a trusted x-forwarded-client-cert header.
//
// An allow is a 200 whose headers carry the policy's "headers" and
// "response_headers_to_add" (Envoy passes on the ones its
// allowed_upstream_headers and allowed_client_headers_on_success name)
// and request_headers_to_remove as x-envoy-auth-headers-to-remove. The
// protocol cannot set or remove query parameters: a decision that asks for
// it is denied rather than allowed without it. A deny is the policy's
// status, headers and body.
func (s *Server) HTTPHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := checkRequestFromHTTP(r)
		var res *Result
		if err != nil {
			res = s.refuse(err)
		} else {
			res = s.decideFor(r.Context(), req, httpCarries, response.WithDecisionID)
		}
		writeHTTPResponse(w, res.Response)
	})
}

var errQueryOverHTTP = errors.New("decision sets or removes query parameters, which Envoy's HTTP ext_authz protocol cannot carry (use the gRPC protocol)")

// errOKDenyOverHTTP: in this protocol the status is the decision, 200
// allows; and Go sends a 1xx as an interim answer followed by a 200.
var errOKDenyOverHTTP = errors.New("decision denies with a 1xx or 200 status, which Envoy's HTTP ext_authz protocol would take for an allow (use another status, or the gRPC protocol)")

func httpCarries(resp *authv3.CheckResponse) error {
	if ok := resp.GetOkResponse(); ok != nil && (len(ok.QueryParametersToSet) > 0 || len(ok.QueryParametersToRemove) > 0) {
		return errQueryOverHTTP
	}
	if d := resp.GetDeniedResponse(); d != nil && d.GetStatus().GetCode() <= typev3.StatusCode_OK {
		return errOKDenyOverHTTP
	}
	return nil
}

// checkRequestFromHTTP describes an HTTP authorization request the way
// Envoy's gRPC CheckRequest describes the original request: lower-case
// header names, pseudo-headers included, repeated headers joined by ",".
func checkRequestFromHTTP(r *http.Request) (*authv3.CheckRequest, error) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxHTTPBody))
	if err != nil {
		return nil, fmt.Errorf("read the request body: %w", err)
	}
	headers := make(map[string]string, len(r.Header)+3)
	for name, values := range r.Header {
		headers[strings.ToLower(name)] = strings.Join(values, ",")
	}
	path := r.URL.RequestURI()
	headers[":method"], headers[":path"], headers[":authority"] = r.Method, path, r.Host
	httpReq := &authv3.AttributeContext_HttpRequest{
		Method:   r.Method,
		Path:     path,
		Host:     r.Host,
		Headers:  headers,
		Protocol: r.Proto,
		Size:     int64(len(body)),
	}
	// A body that is not text goes where Envoy's gRPC protocol puts it
	// with pack_as_bytes, so binary uploads and gRPC messages reach the
	// policy as they do over gRPC instead of failing as invalid UTF-8.
	if utf8.Valid(body) {
		httpReq.Body = string(body)
	} else {
		httpReq.RawBody = body
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: httpReq},
	}}, nil
}

func writeHTTPResponse(w http.ResponseWriter, resp *authv3.CheckResponse) {
	h := w.Header()
	if ok := resp.GetOkResponse(); ok != nil {
		// Both lists share the one set of headers this protocol has; a
		// header in both (the decision id always is) is written once.
		seen := make(map[[2]string]bool, len(ok.GetHeaders())+len(ok.GetResponseHeadersToAdd()))
		for _, o := range append(ok.GetHeaders(), ok.GetResponseHeadersToAdd()...) {
			kv := [2]string{http.CanonicalHeaderKey(o.GetHeader().GetKey()), o.GetHeader().GetValue()}
			if !seen[kv] {
				seen[kv] = true
				h.Add(kv[0], kv[1])
			}
		}
		if len(ok.GetHeadersToRemove()) > 0 {
			h.Set(headersToRemoveHeader, strings.Join(ok.GetHeadersToRemove(), ","))
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	d := resp.GetDeniedResponse()
	for _, o := range d.GetHeaders() {
		h.Add(o.GetHeader().GetKey(), o.GetHeader().GetValue())
	}
	if d.GetBody() != "" && h.Get("Content-Type") == "" {
		h.Set("Content-Type", "text/plain; charset=utf-8")
	}
	w.WriteHeader(int(d.GetStatus().GetCode()))
	io.WriteString(w, d.GetBody())
}

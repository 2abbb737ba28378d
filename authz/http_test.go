package authz_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/authz/input"
	"github.com/meshid/meshid/authz/response"
	"github.com/meshid/meshid/test/authztest"
)

// TestHTTPHandler speaks Envoy's HTTP ext_authz protocol to the handler
// on a real loopback server: the original request's method, path and
// headers in, 200 or the deny out.
func TestHTTPHandler(t *testing.T) {
	const policy = `package envoy.authz

default allow := false

allow := {"allowed": true, "headers": {"x-user": "ada"}, "response_headers_to_add": {"x-served-by": "meshid"}, "request_headers_to_remove": ["x-spoofed", "x-other"]} if {
	input.parsed_path == ["hello"]
	input.attributes.request.http.headers[":authority"] == "backend"
	input.attributes.request.http.headers["x-multi"] == "a,b"
	input.spiffe.source.id == "` + frontend + `"
	input.spiffe.source.via == "xfcc"
}

allow := {"allowed": false, "http_status": 401, "body": "who are you?", "headers": {"www-authenticate": "Bearer"}} if input.parsed_path == ["private"]

allow := {"allowed": true, "query_parameters_to_set": {"a": "b"}} if input.parsed_path == ["query"]

allow := {"allowed": false, "http_status": 204, "headers": {"access-control-allow-origin": "*"}} if input.parsed_path == ["preflight"]

allow := {"allowed": false, "http_status": 200, "body": "looks like an allow"} if input.parsed_path == ["ok-deny"]

allow if {
	input.attributes.request.http.method == "POST"
	input.parsed_body == {"n": 1}
}

allow if {
	input.parsed_path == ["upload"]
	input.attributes.request.http.rawBody == "/wBiaW5hcnk=" # base64 of the body
	not input.attributes.request.http.body
}
`
	srv := newServer(t, engine(t, policy, authz.Config{}), authz.Options{Input: input.Options{TrustXFCC: true}, DenyStatus: 404})
	ts := httptest.NewServer(srv.HTTPHandler())
	t.Cleanup(ts.Close)

	tests := []struct {
		name, method, path, body string
		headers                  map[string]string
		status                   int
		wantHeaders              map[string]string
		wantBody                 string
	}{
		{
			name: "allow with headers", method: "GET", path: "/hello?x=1",
			headers: map[string]string{"Host": "backend", "X-Forwarded-Client-Cert": "By=spiffe://example.org/b;URI=" + frontend, "X-Multi": "a"},
			status:  200,
			wantHeaders: map[string]string{
				"X-User": "ada", "X-Served-By": "meshid", "X-Envoy-Auth-Headers-To-Remove": "x-spoofed,x-other",
			},
		},
		{name: "deny by default", method: "GET", path: "/hello", headers: map[string]string{"Host": "backend"}, status: 404},
		{
			name: "deny with status body and headers", method: "GET", path: "/private", status: 401,
			wantHeaders: map[string]string{"Www-Authenticate": "Bearer"}, wantBody: "who are you?",
		},
		{name: "query mutation cannot be carried", method: "GET", path: "/query", status: 404},
		{name: "a 204 deny is carried", method: "OPTIONS", path: "/preflight", status: 204, wantHeaders: map[string]string{"Access-Control-Allow-Origin": "*"}},
		{name: "a 200 deny cannot be carried: it would allow", method: "GET", path: "/ok-deny", status: 404},
		{name: "body", method: "POST", path: "/form", body: `{"n": 1}`, headers: map[string]string{"Content-Type": "application/json"}, status: 200},
		{name: "bad body", method: "POST", path: "/form", body: `{"n": `, headers: map[string]string{"Content-Type": "application/json"}, status: 400},
		{name: "binary body as rawBody", method: "POST", path: "/upload", body: "\xff\x00binary", headers: map[string]string{"Content-Type": "application/octet-stream"}, status: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tt.method, ts.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.headers {
				if k == "Host" {
					req.Host = v
					continue
				}
				req.Header.Set(k, v)
			}
			if tt.headers["X-Multi"] != "" {
				req.Header.Add("X-Multi", "b")
			}
			resp, err := ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tt.status)
			}
			for k, v := range tt.wantHeaders {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if ids := resp.Header.Values(response.DecisionIDHeader); len(ids) != 1 || !authztest.IsDecisionID(ids[0]) {
				t.Errorf("decision id headers %q, want exactly one", ids)
			}
			if string(body) != tt.wantBody {
				t.Errorf("body %q, want %q", body, tt.wantBody)
			}
		})
	}
}

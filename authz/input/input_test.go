package input_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshid/meshid/authz/input"
)

// TestInputSeenByPolicies asserts the input document the way policies see
// it: each expression is the body of a rule that must hold for the request.
func TestInputSeenByPolicies(t *testing.T) {
	full := checkRequest(frontend, backend, "POST", "/hello/big%20world/?a=1&b=&a=2")
	full.Attributes.Request.Http.Headers["content-type"] = "application/json; charset=utf-8"
	full.Attributes.Request.Http.Headers["x-request-id"] = "abc"
	full.Attributes.Request.Http.Body = `{"name": "ada", "tags": [1, 2.5]}`

	noPeers := checkRequest("", "", "GET", "/")

	certSubject := checkRequest("CN=frontend,O=demo", "spiffe://example.org", "GET", "/hello")

	truncated := checkRequest(frontend, backend, "POST", "/upload")
	truncated.Attributes.Request.Http.Headers["content-type"] = "application/json"
	truncated.Attributes.Request.Http.Headers["content-length"] = "1000"
	truncated.Attributes.Request.Http.Body = `{"a": `

	partial := checkRequest(frontend, backend, "POST", "/upload")
	partial.Attributes.Request.Http.Headers["content-type"] = "text/plain"
	partial.Attributes.Request.Http.Headers["x-envoy-auth-partial-body"] = "true"
	partial.Attributes.Request.Http.Body = "abc"

	rawJSON := checkRequest(frontend, backend, "POST", "/upload")
	rawJSON.Attributes.Request.Http.Headers["content-type"] = "application/json"
	rawJSON.Attributes.Request.Http.RawBody = []byte(`[true]`)

	notJSON := checkRequest(frontend, backend, "POST", "/upload")
	notJSON.Attributes.Request.Http.Headers["content-type"] = "text/plain"
	notJSON.Attributes.Request.Http.Body = `{"a": 1}`

	tests := []struct {
		name  string
		req   *authv3.CheckRequest
		holds []string
	}{
		{
			name: "full request",
			req:  full,
			holds: []string{
				`input.attributes.request.http.method == "POST"`,
				`input.attributes.request.http.path == "/hello/big%20world/?a=1&b=&a=2"`,
				`input.attributes.request.http.headers["x-request-id"] == "abc"`,
				`input.attributes.request.http.headers[":authority"] == "backend"`,
				`input.attributes.source.principal == "` + frontend + `"`,
				`input.attributes.destination.principal == "` + backend + `"`,
				// proto-JSON names are camelCase.
				`input.attributes.contextExtensions.route == "demo"`,
				`not input.attributes.context_extensions`,
				`input.parsed_path == ["hello", "big world", ""]`,
				`input.parsed_query == {"a": ["1", "2"], "b": [""]}`,
				`input.parsed_body == {"name": "ada", "tags": [1, 2.5]}`,
				`input.truncated_body == false`,
				`input.version == {"ext_authz": "v3", "encoding": "protojson"}`,
				`input.source_principal == "` + frontend + `"`,
				`input.spiffe.source == {
					"id": "` + frontend + `",
					"trust_domain": "example.org",
					"path": "/ns/demo/sa/frontend",
					"segments": ["ns", "demo", "sa", "frontend"],
					"via": "mtls",
				}`,
				`input.spiffe.destination == {
					"id": "` + backend + `",
					"trust_domain": "example.org",
					"path": "/ns/demo/sa/backend",
					"segments": ["ns", "demo", "sa", "backend"],
				}`,
			},
		},
		{
			name: "no peers, root path, no body",
			req:  noPeers,
			holds: []string{
				`input.parsed_path == [""]`,
				`input.parsed_query == {}`,
				`input.parsed_body == null`,
				`input.truncated_body == false`,
				`input.spiffe == {}`,
				`not input.source_principal`,
				`not input.attributes.source.principal`,
			},
		},
		{
			name: "principals that are not workload SPIFFE IDs",
			req:  certSubject,
			holds: []string{
				`not input.spiffe.source`,
				`input.source_principal == "CN=frontend,O=demo"`,
				// A trust domain ID is a SPIFFE ID with an empty path.
				`input.spiffe.destination == {"id": "spiffe://example.org", "trust_domain": "example.org", "path": "", "segments": []}`,
			},
		},
		{
			name:  "body shorter than content-length",
			req:   truncated,
			holds: []string{`input.truncated_body == true`, `input.parsed_body == null`},
		},
		{
			name:  "body Envoy marked partial",
			req:   partial,
			holds: []string{`input.truncated_body == true`, `input.parsed_body == null`},
		},
		{
			name:  "JSON in raw_body",
			req:   rawJSON,
			holds: []string{`input.parsed_body == [true]`, `input.truncated_body == false`},
		},
		{
			name:  "body of a type not parsed",
			req:   notJSON,
			holds: []string{`input.parsed_body == null`, `input.attributes.request.http.body == "{\"a\": 1}"`},
		},
	}
	for _, tt := range tests {
		for i, expr := range tt.holds {
			t.Run(fmt.Sprintf("%s/%d", tt.name, i), func(t *testing.T) {
				doc, err := newBuilder(t, input.Options{}).Build(context.Background(), tt.req, time.Time{})
				if err != nil {
					t.Fatalf("Build: %v", err)
				}
				if !holds(t, doc, expr) {
					t.Errorf("does not hold: %s", expr)
				}
			})
		}
	}
}

package authz_test

import (
	"fmt"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/meshid/meshid/authz"
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
				policy := "package envoy.authz\n\ndefault allow := false\n\nallow if {\n" + expr + "\n}\n"
				e := engine(t, policy, authz.Config{})
				allowed, err := decide(t, e, tt.req)
				if err != nil || !allowed {
					t.Errorf("does not hold: %s\n(Decide = %v, %v)", expr, allowed, err)
				}
			})
		}
	}
}

func TestInputErrorsDeny(t *testing.T) {
	badJSON := checkRequest(frontend, backend, "POST", "/upload")
	badJSON.Attributes.Request.Http.Headers["content-type"] = "application/json"
	badJSON.Attributes.Request.Http.Body = `{"a": }`

	badLength := checkRequest(frontend, backend, "POST", "/upload")
	badLength.Attributes.Request.Http.Headers["content-type"] = "application/json"
	badLength.Attributes.Request.Http.Headers["content-length"] = "many"
	badLength.Attributes.Request.Http.Body = `{}`

	tests := []struct {
		name string
		req  *authv3.CheckRequest
		want string
	}{
		{"bad path escape", checkRequest(frontend, backend, "GET", "/a%zz"), `request path "/a%zz"`},
		{"bad query escape", checkRequest(frontend, backend, "GET", "/a?b=%zz"), `request path "/a?b=%zz"`},
		{"bad JSON body", badJSON, "content-type is JSON but the body is not"},
		{"bad content-length", badLength, `content-length "many"`},
	}
	// The policy allows everything it can see: only the input can deny.
	e := engine(t, "package envoy.authz\n\nallow := true\n", authz.Config{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			allowed, err := decide(t, e, tt.req)
			if allowed || err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Decide = %v, %v; want false and an error containing %q", allowed, err, tt.want)
			}
		})
	}
}

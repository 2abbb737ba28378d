package authz_test

import (
	"context"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshid/meshid/authz"
)

// TestBadRequestsDeny: requests no well-behaved Envoy sends still get an
// answer, and it is a deny unless the input is sound and the policy allows.
// The policy allows anything it can see, so only the input can deny.
func TestBadRequestsDeny(t *testing.T) {
	withBody := func(contentType, body string) *authv3.CheckRequest {
		r := checkRequest(frontend, backend, "POST", "/upload")
		r.Attributes.Request.Http.Headers["content-type"] = contentType
		r.Attributes.Request.Http.Body = body
		return r
	}
	huge := checkRequest(frontend, backend, "GET", "/hello")
	huge.Attributes.Request.Http.Headers["x-huge"] = strings.Repeat("a", 4<<20)
	for i := range 5000 {
		huge.Attributes.Request.Http.Headers["x-many-"+strings.Repeat("b", i%50)+string(rune('a'+i%26))] = "v"
	}
	badUTF8Header := checkRequest(frontend, backend, "GET", "/hello")
	badUTF8Header.Attributes.Request.Http.Headers["x-bin"] = "\xff\xfe"
	badUTF8Principal := checkRequest("spiffe://example.org/\xff", backend, "GET", "/hello")
	badTime := checkRequest(frontend, backend, "GET", "/hello")
	badTime.Attributes.Request.Time = &timestamppb.Timestamp{Nanos: -1}

	tests := []struct {
		name    string
		req     *authv3.CheckRequest
		allowed bool
		errHas  string
	}{
		{"nil request", nil, true, ""},
		{"no attributes", &authv3.CheckRequest{}, true, ""},
		{"huge headers", huge, true, ""},
		{"invalid UTF-8 in a header", badUTF8Header, false, "invalid UTF-8"},
		{"invalid UTF-8 in a principal", badUTF8Principal, false, "invalid UTF-8"},
		{"path decoding to invalid UTF-8", checkRequest(frontend, backend, "GET", "/a%ff"), false, "invalid UTF-8"},
		{"invalid timestamp", badTime, false, "request time"},
		{"broken JSON", withBody("application/json", `{"a": [1, 2`), false, "content-type is JSON but the body is not"},
		{"JSON with trailing garbage", withBody("application/json", `{"a": 1} x`), false, "content-type is JSON but the body is not"},
		{"YAML posing as JSON", withBody("application/json", "a: 1\n"), false, "content-type is JSON but the body is not"},
		{"broken form", withBody("application/x-www-form-urlencoded", "a=%zz"), false, "form-urlencoded but the body is not"},
		{"form with a semicolon", withBody("application/x-www-form-urlencoded", "a=1;b=2"), false, "form-urlencoded"},
		{"multipart without boundary", withBody("multipart/form-data", "--x\r\n\r\n"), false, "no boundary"},
		{"broken multipart", withBody("multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nunterminated"), false, "multipart/form-data but the body is not"},
		{"multipart part claiming JSON", withBody("multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"a\"\r\nContent-Type: application/json\r\n\r\n{nope\r\n--x--\r\n"), false, `part "a" is declared JSON but is not`},
		{"bad content type parameters", withBody("multipart/form-data; boundary", "--x--"), false, "multipart/form-data but the body is not"},
	}
	e := engine(t, "package envoy.authz\n\nallow := true\n", authz.Config{})
	srv := newServer(t, e, authz.Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := srv.Decide(context.Background(), tt.req)
			if r.Allowed != tt.allowed {
				t.Fatalf("allowed = %v (err %v), want %v", r.Allowed, r.Err, tt.allowed)
			}
			if tt.errHas != "" && (r.Err == nil || !strings.Contains(r.Err.Error(), tt.errHas)) {
				t.Fatalf("error %v, want one containing %q", r.Err, tt.errHas)
			}
			if r.Response.GetDeniedResponse() == nil && !tt.allowed {
				t.Fatalf("response %v is not a deny", r.Response)
			}
		})
	}
}

// TestBodiesSeenByPolicies: form and multipart bodies as parsed_body.
func TestBodiesSeenByPolicies(t *testing.T) {
	tests := []struct {
		name, contentType, body, holds string
	}{
		{"form", "application/x-www-form-urlencoded", "a=1&b=x%20y&a=2", `input.parsed_body == {"a": ["1", "2"], "b": ["x y"]}`},
		{"multipart", "multipart/form-data; boundary=foo",
			"--foo\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nada\r\n" +
				"--foo\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json\r\n\r\n{\"n\": 1}\r\n" +
				"--foo\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nlovelace\r\n--foo--\r\n",
			`input.parsed_body == {"name": ["ada", "lovelace"], "meta": [{"n": 1}]}`},
		{"multipart with LF line ends", "multipart/form-data; boundary=foo",
			"--foo\nContent-Disposition: form-data; name=\"foo\"\nContent-Type: text/plain\n\nbar\n--foo--\n",
			`input.parsed_body == {"foo": ["bar"]}`},
		{"multipart with a binary file", "multipart/form-data; boundary=foo",
			"--foo\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\r\n\xff\x00\xfe\r\n--foo--\r\n",
			`count(input.parsed_body.file[0]) == 3`},
		{"text is not parsed", "text/plain", "a=1", `input.parsed_body == null`},
		{"form truncated", "application/x-www-form-urlencoded", "a=1", `input.truncated_body`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := checkRequest(frontend, backend, "POST", "/form")
			req.Attributes.Request.Http.Headers["content-type"] = tt.contentType
			req.Attributes.Request.Http.Body = tt.body
			if tt.name == "multipart with a binary file" {
				// Binary bodies come as bytes (with_request_body.pack_as_bytes):
				// a string field must be UTF-8.
				req.Attributes.Request.Http.Body = ""
				req.Attributes.Request.Http.RawBody = []byte(tt.body)
			}
			if tt.name == "form truncated" {
				req.Attributes.Request.Http.Headers["content-length"] = "100"
			}
			e := engine(t, "package envoy.authz\n\ndefault allow := false\n\nallow if {\n"+tt.holds+"\n}\n", authz.Config{})
			if allowed, err := decide(t, e, req); !allowed || err != nil {
				t.Errorf("does not hold: %s (%v)", tt.holds, err)
			}
		})
	}
}

// TestBadPolicies: what Rego refuses at compile time is refused with its
// position; what only fails at run time is a deny within the timeout.
func TestBadPolicies(t *testing.T) {
	_, err := authz.NewEngine(context.Background(), authz.Config{PolicyDir: writeFiles(t, map[string]string{
		"authz.rego": "package envoy.authz\n\nallow if loop\n\nloop if loop\n",
	})})
	if err == nil || !strings.Contains(err.Error(), "authz.rego:5:1: rego_recursion_error") {
		t.Errorf("recursive policy: %v, want a recursion error at authz.rego:5:1", err)
	}

	runaway := engine(t, `package envoy.authz

allow if {
	count([x | some x in numbers.range(1, 100000000)]) > 0
}
`, authz.Config{EvalTimeout: 50 * time.Millisecond})
	start := time.Now()
	allowed, err := decide(t, runaway, checkRequest(frontend, backend, "GET", "/"))
	if allowed || err == nil || !strings.Contains(err.Error(), "not decided within the eval timeout") {
		t.Errorf("runaway policy: allowed %v, err %v; want a timeout deny", allowed, err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the runaway policy ran for %v despite a 50ms timeout", took)
	}
}

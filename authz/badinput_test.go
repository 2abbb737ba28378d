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

package authz_test

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/authz/input"
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
	oddMetadata := checkRequest(frontend, backend, "GET", "/hello")
	oddMetadata.Attributes.MetadataContext = &corev3.Metadata{
		FilterMetadata:      map[string]*structpb.Struct{"f": {Fields: map[string]*structpb.Value{"nan": structpb.NewNumberValue(math.NaN()), "none": {}}}},
		TypedFilterMetadata: map[string]*anypb.Any{"t": {TypeUrl: "type.googleapis.com/acme.Unknown", Value: []byte{1}}},
	}

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
		// As the plugin: the bytes are passed on, the timestamp's numbers
		// written, metadata protojson cannot write is written as the
		// plugin's walk does.
		{"path decoding to invalid UTF-8", checkRequest(frontend, backend, "GET", "/a%ff"), true, ""},
		{"invalid timestamp", badTime, true, ""},
		{"metadata protojson cannot write", oddMetadata, true, ""},
		{"broken JSON", withBody("application/json", `{"a": [1, 2`), false, "content-type is JSON but the body is not"},
		{"JSON with trailing garbage", withBody("application/json", `{"a": 1} x`), false, "content-type is JSON but the body is not"},
		{"YAML posing as JSON", withBody("application/json", "a: 1\n"), false, "content-type is JSON but the body is not"},
		{"broken form", withBody("application/x-www-form-urlencoded", "a=%zz"), false, "form-urlencoded but the body is not"},
		{"form with a semicolon", withBody("application/x-www-form-urlencoded", "a=1;b=2"), false, "form-urlencoded"},
		{"multipart without boundary", withBody("multipart/form-data", "--x\r\n\r\n"), true, ""},
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
			// What the plugin refuses too is a 400, as it answers; the
			// rest (here, huge input) the deny status.
			if !tt.allowed {
				want := typev3.StatusCode_BadRequest
				if got := r.Response.GetDeniedResponse().GetStatus().GetCode(); got != want {
					t.Errorf("denied with %v, want %v", got, want)
				}
			}
		})
	}

	// Beyond meshid's own limits is not the request's fault: the deny
	// status, not a 400.
	deep := withBody("application/json", strings.Repeat("[", 100)+strings.Repeat("]", 100))
	if r := srv.Decide(context.Background(), deep); r.Allowed || r.Err == nil || !strings.Contains(r.Err.Error(), "max_body_depth") ||
		r.Response.GetDeniedResponse().GetStatus().GetCode() != typev3.StatusCode_Forbidden {
		t.Errorf("a body beyond max_body_depth: allowed %v, err %v, response %v; want a 403 deny naming max_body_depth", r.Allowed, r.Err, r.Response)
	}

	// With the older plugins' protojson form, what protojson cannot
	// write denies, as it did there, and says why.
	old := newServer(t, e, authz.Options{Input: input.Options{Encoding: input.EncodingProtoJSON}})
	for _, tt := range []struct {
		name   string
		req    *authv3.CheckRequest
		errHas string
	}{
		{"invalid timestamp", badTime, "request time"},
		{"metadata protojson cannot write", oddMetadata, "metadataContext"},
	} {
		t.Run("protojson/"+tt.name, func(t *testing.T) {
			r := old.Decide(context.Background(), tt.req)
			if r.Allowed || r.Err == nil || !strings.Contains(r.Err.Error(), tt.errHas) || r.Response.GetDeniedResponse() == nil {
				t.Fatalf("allowed = %v, err %v, response %v; want a deny whose error says %q", r.Allowed, r.Err, r.Response, tt.errHas)
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

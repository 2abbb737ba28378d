package authz

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestInputDocument pins the whole document, so that a key added or
// renamed by accident shows up here and not in someone's policy.
func TestInputDocument(t *testing.T) {
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Principal: "spiffe://example.org/ns/demo/sa/frontend"},
		Destination: &authv3.AttributeContext_Peer{Principal: "spiffe://example.org/ns/demo/sa/backend"},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)),
			Http: &authv3.AttributeContext_HttpRequest{
				Id:      "7",
				Method:  "GET",
				Path:    "/hello?x=1",
				Headers: map[string]string{":path": "/hello?x=1", "content-type": "application/json"},
				Body:    `{"n": 12345678901234567890}`,
				Size:    28,
			},
		},
	}}
	doc, err := inputDocument(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{
		"attributes": {
			"destination": {"principal": "spiffe://example.org/ns/demo/sa/backend"},
			"request": {"time": "2024-01-02T03:04:05Z", "http": {
				"body": "{\"n\": 12345678901234567890}",
				"headers": {":path": "/hello?x=1", "content-type": "application/json"},
				"id": "7",
				"method": "GET",
				"path": "/hello?x=1",
				"size": "28"
			}},
			"source": {"principal": "spiffe://example.org/ns/demo/sa/frontend"}
		},
		"parsed_body": {"n": 12345678901234567890},
		"parsed_path": ["hello"],
		"parsed_query": {"x": ["1"]},
		"source_principal": "spiffe://example.org/ns/demo/sa/frontend",
		"spiffe": {
			"destination": {"id": "spiffe://example.org/ns/demo/sa/backend", "path": "/ns/demo/sa/backend", "segments": ["ns", "demo", "sa", "backend"], "trust_domain": "example.org"},
			"source": {"id": "spiffe://example.org/ns/demo/sa/frontend", "path": "/ns/demo/sa/frontend", "segments": ["ns", "demo", "sa", "frontend"], "trust_domain": "example.org", "via": "mtls"}
		},
		"truncated_body": false,
		"version": {"encoding": "protojson", "ext_authz": "v3"}
	}`
	if canonical(t, string(got)) != canonical(t, want) {
		t.Errorf("input document\n got: %s\nwant: %s", canonical(t, string(got)), canonical(t, want))
	}
}

// canonical re-encodes a JSON text with sorted keys and no spaces; numbers
// stay as written, so a large integer that lost precision does not match.
func canonical(t *testing.T, s string) string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%v in %s", err, s)
	}
	out, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

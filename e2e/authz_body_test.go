package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/test/harness"
)

// authzBodyPolicy decides on input.parsed_body, for each kind of body
// meshid parses, and on truncated_body.
const authzBodyPolicy = `package envoy.authz

default allow := false

from_frontend if input.spiffe.source.id == "spiffe://example.org/ns/demo/sa/frontend"

allow if {
	from_frontend
	input.parsed_path == ["orders"]
	input.parsed_body.amount < 100
}

allow if {
	from_frontend
	input.parsed_path == ["form"]
	input.parsed_body.item == ["book"]
}

allow if {
	from_frontend
	input.parsed_path == ["upload"]
	input.parsed_body.note == ["hello"]
}

allow if {
	from_frontend
	input.parsed_path == ["grpc.health.v1.Health", "Check"]
	input.parsed_body.service == "orders"
}

allow := {"allowed": false, "http_status": 413, "body": "body too long to decide on"} if input.truncated_body
`

// authzBodyLimit is the backend sidecar's with_request_body limit.
const authzBodyLimit = 1024

// TestAuthzRequestBodiesThroughEnvoy sends bodies through the real Envoys
// with the backend sidecar configured to pass them to meshid
// (Inbound.AuthzBodyBytes): JSON, form, multipart and a gRPC message
// (decoded with authz.proto_descriptor) each decide by their content, and a
// body over the limit is reported truncated, never half parsed.
func TestAuthzRequestBodiesThroughEnvoy(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	policyDir := writePolicies(t, env, map[string]string{"authz.rego": authzBodyPolicy})
	m, err := env.StartMeshid(ctx, harness.MeshidOptions{Entries: harness.DemoEntries(), PolicyDir: policyDir})
	if err != nil {
		t.Fatal(err)
	}
	descriptors := filepath.Join(env.Dir, "health.pb")
	set := &descriptorpb.FileDescriptorSet{File: []*descriptorpb.FileDescriptorProto{protodesc.ToFileDescriptorProto(healthpb.File_grpc_health_v1_health_proto)}}
	raw, err := proto.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(descriptors, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.ConfigureAuthz(ctx, map[string]any{"proto_descriptor": descriptors}); err != nil {
		t.Fatal(err)
	}
	up := startUpstream(t)
	_, frontend := startEnvoyPair(t, ctx, env, m, envoy.Inbound{AppAddr: up.addr, AuthzAddr: m.AuthzAddr, AuthzBodyBytes: authzBodyLimit})
	base := "http://" + frontend.Sidecar.Outbound.ListenAddr

	post := func(path, contentType string, body []byte) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}, Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	expect := func(name, path, contentType string, body []byte, wantStatus int, wantBody string) {
		t.Helper()
		served := up.count()
		resp, got := post(path, contentType, body)
		if resp.StatusCode != wantStatus || got != wantBody {
			env.Fail()
			t.Fatalf("%s: POST %s: %d %q, want %d %q", name, path, resp.StatusCode, got, wantStatus, wantBody)
		}
		if reached := up.count() > served; reached != (wantStatus == http.StatusOK) {
			t.Errorf("%s: the upstream saw the request: %v", name, reached)
		}
	}

	expect("JSON under the policy's limit", "/orders", "application/json", []byte(`{"amount": 50}`), 200, "upstream: /orders")
	expect("JSON over the policy's limit", "/orders", "application/json", []byte(`{"amount": 500}`), 403, "")
	expect("form", "/form", "application/x-www-form-urlencoded", []byte("item=book"), 200, "upstream: /form")
	expect("form, other item", "/form", "application/x-www-form-urlencoded", []byte("item=knife"), 403, "")

	var mp bytes.Buffer
	w := multipart.NewWriter(&mp)
	w.WriteField("note", "hello")
	w.Close()
	expect("multipart", "/upload", w.FormDataContentType(), mp.Bytes(), 200, "upstream: /upload")

	long := []byte(`{"amount": 1, "pad": "` + strings.Repeat("x", 2*authzBodyLimit) + `"}`)
	expect("a body over the sidecar's limit", "/orders", "application/json", long, 413, "body too long to decide on")

	// A gRPC request: Envoy passes the framed message as bytes and meshid
	// decodes it with the descriptor set. Envoy answers a denied gRPC
	// request the gRPC way: HTTP 200 with grpc-status 7.
	grpcFrame := func(service string) []byte {
		msg, err := proto.Marshal(&healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatal(err)
		}
		frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
		return append(frame, msg...)
	}
	const method = "/grpc.health.v1.Health/Check"
	if resp, got := post(method, "application/grpc", grpcFrame("orders")); resp.StatusCode != 200 || got != "upstream: "+method {
		t.Fatalf("gRPC Check of service orders: %d %q, want the upstream's answer", resp.StatusCode, got)
	}
	if resp, _ := post(method, "application/grpc", grpcFrame("billing")); resp.Header.Get("grpc-status") != "7" {
		t.Fatalf("gRPC Check of service billing: %d, grpc-status %q, want 7 (permission denied)", resp.StatusCode, resp.Header.Get("grpc-status"))
	}
	t.Logf("bodies through Envoy: JSON, form, multipart and a gRPC message decided by content; %d bytes over a %d-byte limit -> 413 truncated", len(long), authzBodyLimit)
}

package e2e

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/test/harness"
)

// authzInputPolicy relies on the input document's form: /small allows a
// request whose size is a number under 64 and whose time is
// {seconds, nanos}, as the current OPA-Envoy plugin writes them; /legacy
// allows one whose size and time are strings, as older plugins (and
// authz.input_encoding: protojson) write them.
const authzInputPolicy = `package envoy.authz

default allow := false

allow if {
	input.parsed_path == ["small"]
	input.attributes.request.http.size < 64
	input.attributes.request.time.seconds > 1700000000
	is_number(input.attributes.request.time.nanos)
}

allow if {
	input.parsed_path == ["legacy"]
	is_string(input.attributes.request.http.size)
	is_string(input.attributes.request.time)
}
`

// TestAuthzInputEncodingThroughEnvoy: a policy that reads
// attributes.request.http.size and .time decides on a real Envoy's
// CheckRequests as the current plugin would (a small body allowed, a
// large one denied, the string forms absent); with input_encoding:
// protojson the same policy sees the older plugins' strings.
func TestAuthzInputEncodingThroughEnvoy(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	policyDir := writePolicies(t, env, map[string]string{"authz.rego": authzInputPolicy})
	m, err := env.StartMeshid(ctx, harness.MeshidOptions{Entries: harness.DemoEntries(), PolicyDir: policyDir})
	if err != nil {
		t.Fatal(err)
	}
	up := startUpstream(t)
	_, frontend := startEnvoyPair(t, ctx, env, m, envoy.Inbound{AppAddr: up.addr, AuthzAddr: m.AuthzAddr, AuthzBodyBytes: 1024})
	base := "http://" + frontend.Sidecar.Outbound.ListenAddr
	transport := &http.Transport{Proxy: nil}
	t.Cleanup(transport.CloseIdleConnections)
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}

	post := func(path string, size int) int {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader([]byte(strings.Repeat("x", size))))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "text/plain")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.ReadAll(resp.Body)
		return resp.StatusCode
	}
	expect := func(encoding, path string, size, want int) {
		t.Helper()
		if got := post(path, size); got != want {
			env.Fail()
			t.Fatalf("input_encoding %s: POST %s with %d bytes: %d, want %d", encoding, path, size, got, want)
		}
	}

	expect("protomap", "/small", 10, http.StatusOK)
	expect("protomap", "/small", 200, http.StatusForbidden)
	expect("protomap", "/legacy", 10, http.StatusForbidden)

	if err := m.ConfigureAuthz(ctx, map[string]any{"input_encoding": "protojson"}); err != nil {
		t.Fatal(err)
	}
	// The Envoys reconnect to the restarted meshid: wait for the allow
	// only the protojson form gives (a deny is also what Envoy answers
	// while meshid restarts, so it proves nothing until then).
	for post("/legacy", 10) != http.StatusOK {
		if ctx.Err() != nil {
			env.Fail()
			t.Fatal("input_encoding protojson: /legacy never allowed")
		}
		time.Sleep(100 * time.Millisecond)
	}
	expect("protojson", "/small", 10, http.StatusForbidden)
	t.Log("protomap: size and time are numbers (10 bytes allowed, 200 denied); protojson: strings")
}

package e2e

import (
	"bufio"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/test/harness"
)

// authzPolicy exercises every part of a decision Envoy acts on. data.json
// holds the version the reload test changes.
const authzPolicy = `package envoy.authz

default allow := false

frontend := "spiffe://example.org/ns/demo/sa/frontend"

# The backend Envoy sets x-forwarded-client-cert from the verified client
# certificate (SANITIZE_SET) before ext_authz runs, so with xfcc.trust the
# caller comes from the header Envoy wrote, whatever the client sent.
caller_is_frontend if {
	input.spiffe.source.id == frontend
	input.spiffe.source.via == "xfcc"
	input.attributes.source.principal == frontend
}

allow := {
	"allowed": true,
	"headers": {"x-meshid-caller": input.spiffe.source.id, "x-policy-version": data.version},
	"request_headers_to_remove": ["x-spoofed"],
	"response_headers_to_add": {"x-policy-version": data.version},
} if {
	caller_is_frontend
	input.parsed_path == ["hello"]
}

allow := {
	"allowed": false,
	"http_status": 401,
	"body": "who are you?",
	"headers": {"www-authenticate": "Bearer realm=\"meshid\""},
} if input.parsed_path == ["private"]

allow if {
	input.parsed_path == ["jwt"]
	input.spiffe.jwt.valid
	input.spiffe.jwt.subject == frontend
}
`

// authzUpstream is the backend app: it records the headers of every
// request it gets and answers 200.
type authzUpstream struct {
	mu   sync.Mutex
	seen []http.Header
	srv  *http.Server
	addr string
}

// startEnvoyPair starts the demo's two sidecars on meshid m without the
// demo apps: the backend Envoy with in (its listen address chosen here)
// and the frontend Envoy calling it, and waits until both are live.
func startEnvoyPair(t *testing.T, ctx context.Context, env *harness.Env, m *harness.Meshid, in envoy.Inbound) (backend, frontend *harness.Envoy) {
	t.Helper()
	in.ListenAddr = env.FreeAddr()
	backend, err := env.StartEnvoy(ctx, "backend-envoy", envoy.Sidecar{
		SDSSocket: m.SocketPath, SPIFFEID: harness.BackendID, TrustDomain: m.TrustDomain, Inbound: &in,
	}, harness.BackendEnvoyUID)
	if err != nil {
		t.Fatal(err)
	}
	frontend, err = env.StartEnvoy(ctx, "frontend-envoy", envoy.Sidecar{
		SDSSocket: m.SocketPath, SPIFFEID: harness.FrontendID, TrustDomain: m.TrustDomain,
		Outbound: &envoy.Outbound{ListenAddr: env.FreeAddr(), PeerAddr: in.ListenAddr, PeerSPIFFEID: harness.BackendID},
	}, harness.FrontendEnvoyUID)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []*harness.Envoy{backend, frontend} {
		if err := v.WaitLive(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return backend, frontend
}

func startUpstream(t *testing.T) *authzUpstream {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &authzUpstream{addr: lis.Addr().String()}
	u.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.seen = append(u.seen, r.Header.Clone())
		u.mu.Unlock()
		io.WriteString(w, "upstream: "+r.URL.Path)
	}), ReadHeaderTimeout: 5 * time.Second}
	go u.srv.Serve(lis)
	t.Cleanup(func() { u.srv.Close() })
	return u
}

func (u *authzUpstream) last() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		return nil
	}
	return u.seen[len(u.seen)-1]
}

func (u *authzUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

// meshClient sends plain HTTP to the frontend Envoy's outbound listener,
// which carries it over mTLS to the backend Envoy and its ext_authz.
type meshClient struct {
	base string
	c    *http.Client
}

// writePolicies writes files (name → content) into a policies dir of env
// and returns its path.
func writePolicies(t *testing.T, env *harness.Env, files map[string]string) string {
	t.Helper()
	dir, err := env.MkdirAll("policies")
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := harness.WritePolicy(dir, name, content); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// newMeshClient sends requests straight to a frontend Envoy's outbound
// listener, to set request headers and read response headers (the demo
// frontend app passes on neither). Its connections close with the test.
func newMeshClient(t *testing.T, frontend *harness.Envoy) meshClient {
	transport := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 16}
	t.Cleanup(transport.CloseIdleConnections)
	return meshClient{
		base: "http://" + frontend.Sidecar.Outbound.ListenAddr,
		c:    &http.Client{Transport: transport, Timeout: 10 * time.Second},
	}
}

func (m meshClient) do(t *testing.T, ctx context.Context, path string, headers map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := m.c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// TestAuthzThroughEnvoy runs meshid's ext_authz behind real Envoys: the
// frontend Envoy carries plain HTTP from the test over mTLS to the
// backend Envoy, whose ext_authz filter asks meshid, and whose app is an
// HTTP server in the test that shows what reached it.
func TestAuthzThroughEnvoy(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	policyDir := writePolicies(t, env, map[string]string{"authz.rego": authzPolicy, "data.json": `{"version": "v1"}`})
	m, err := env.StartMeshid(ctx, harness.MeshidOptions{Entries: harness.DemoEntries(), PolicyDir: policyDir})
	if err != nil {
		t.Fatal(err)
	}
	decisionLog := filepath.Join(env.Dir, "decisions.jsonl")
	if err := m.ConfigureAuthz(ctx, map[string]any{
		"decision_log":    decisionLog,
		"xfcc":            map[string]any{"trust": true},
		"jwt_audiences":   []string{"backend"},
		"reload_interval": "1s",
	}); err != nil {
		t.Fatal(err)
	}

	up := startUpstream(t)
	_, frontend := startEnvoyPair(t, ctx, env, m, envoy.Inbound{AppAddr: up.addr, AuthzAddr: m.AuthzAddr})
	client := newMeshClient(t, frontend)

	t.Run("allow injects headers upstream, strips one, answers with the decision id", func(t *testing.T) {
		resp, body := client.do(t, ctx, "/hello", map[string]string{
			"x-spoofed":               "let me in",
			"x-forwarded-client-cert": "URI=spiffe://example.org/ns/demo/sa/admin",
		})
		if resp.StatusCode != http.StatusOK || body != "upstream: /hello" {
			t.Fatalf("GET /hello: %d %q, want 200 from the upstream", resp.StatusCode, body)
		}
		id := resp.Header.Get("x-meshid-decision-id")
		if id == "" || resp.Header.Get("x-policy-version") != "v1" {
			t.Errorf("client got headers %v, want x-meshid-decision-id and x-policy-version: v1", resp.Header)
		}
		seen := up.last()
		if seen.Get("x-meshid-caller") != harness.FrontendID || seen.Get("x-policy-version") != "v1" || seen.Get("x-meshid-decision-id") != id {
			t.Errorf("upstream got %v, want x-meshid-caller %s, x-policy-version v1, x-meshid-decision-id %s", seen, harness.FrontendID, id)
		}
		if seen.Get("x-spoofed") != "" {
			t.Errorf("upstream got x-spoofed %q; the policy removes it", seen.Get("x-spoofed"))
		}
		// The decision log has the decision, the caller Envoy vouched for
		// (from XFCC, not the spoofed header), and the id both ends saw.
		line := waitDecision(t, ctx, decisionLog, id)
		src := line.Input.Spiffe.Source
		if !line.Allowed || src.ID != harness.FrontendID || src.Via != "xfcc" {
			t.Errorf("decision log: allowed %v, spiffe.source %+v; want allowed, the frontend via xfcc", line.Allowed, src)
		}
		t.Logf("GET /hello -> 200, decision %s: upstream saw x-meshid-caller=%s, no x-spoofed", id, seen.Get("x-meshid-caller"))
	})

	t.Run("deny with the policy's status, body and headers", func(t *testing.T) {
		before := up.count()
		resp, body := client.do(t, ctx, "/private", nil)
		if resp.StatusCode != http.StatusUnauthorized || body != "who are you?" || resp.Header.Get("www-authenticate") != `Bearer realm="meshid"` {
			t.Fatalf("GET /private: %d %q %v; want 401 who are you? with www-authenticate", resp.StatusCode, body, resp.Header)
		}
		id := resp.Header.Get("x-meshid-decision-id")
		if id == "" {
			t.Errorf("denied response lacks x-meshid-decision-id: %v", resp.Header)
		}
		if up.count() != before {
			t.Errorf("the upstream received a denied request")
		}
		if line := waitDecision(t, ctx, decisionLog, id); line.Allowed {
			t.Errorf("decision log says %s was allowed", id)
		}
		t.Logf("GET /private -> 401 %q, decision %s", body, id)
	})

	t.Run("default deny", func(t *testing.T) {
		resp, _ := client.do(t, ctx, "/admin", nil)
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("x-meshid-decision-id") == "" {
			t.Fatalf("GET /admin: %d %v, want 403 with a decision id", resp.StatusCode, resp.Header)
		}
	})

	t.Run("JWT-SVID protected route", func(t *testing.T) {
		if !strings.Contains(m.Logs(), "JWT-SVIDs are validated against the CA's JWT bundle") {
			t.Fatal("meshid run did not hand the CA's JWT bundle to authz")
		}
		key, kid := caJWTKey(t, m)
		token := func(aud string) string { return mintJWT(t, key, kid, harness.FrontendID, aud) }
		if resp, body := client.do(t, ctx, "/jwt", map[string]string{"authorization": "Bearer " + token("backend")}); resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /jwt with a JWT-SVID for backend: %d %q, want 200", resp.StatusCode, body)
		}
		if resp, _ := client.do(t, ctx, "/jwt", map[string]string{"authorization": "Bearer " + token("db")}); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("GET /jwt with a JWT-SVID for another audience: %d, want 403", resp.StatusCode)
		}
		if resp, _ := client.do(t, ctx, "/jwt", nil); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("GET /jwt without a token: %d, want 403", resp.StatusCode)
		}
	})

	t.Run("policy reload under traffic fails no request", func(t *testing.T) {
		reloadErrors := func() float64 {
			v, err := m.Metric(ctx, "meshid_authz_policy_reload_errors_total")
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		errorsBefore := reloadErrors()

		var sent, failed, v2 atomic.Int64
		var firstFailure atomic.Value
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, client.base+"/hello", nil)
					resp, err := client.c.Do(req)
					sent.Add(1)
					if err != nil {
						failed.Add(1)
						firstFailure.CompareAndSwap(nil, err.Error())
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					switch {
					case resp.StatusCode != http.StatusOK:
						failed.Add(1)
						firstFailure.CompareAndSwap(nil, fmt.Sprintf("status %d", resp.StatusCode))
					case resp.Header.Get("x-policy-version") == "v2":
						v2.Add(1)
					}
				}
			})
		}
		waitFor(t, ctx, "traffic to flow", func() bool { return sent.Load() > 50 })
		// A data document changes: the decision changes with it.
		if err := harness.WritePolicy(policyDir, "data.json", `{"version": "v2"}`); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, "responses from the reloaded policy", func() bool { return v2.Load() > 50 })
		// A broken file: the reload fails, the last good policy stays.
		if err := harness.WritePolicy(policyDir, "broken.rego", "package envoy.authz\n\nallow if {\n"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ctx, "the failed reload to be counted", func() bool { return reloadErrors() > errorsBefore })
		atBroken := v2.Load()
		waitFor(t, ctx, "more traffic on the last good policy", func() bool { return v2.Load() > atBroken+50 })
		if err := os.Remove(filepath.Join(policyDir, "broken.rego")); err != nil {
			t.Fatal(err)
		}
		close(stop)
		wg.Wait()

		if n := failed.Load(); n != 0 {
			t.Fatalf("%d of %d requests failed during reloads; first: %v", n, sent.Load(), firstFailure.Load())
		}
		logs := m.Logs()
		if !strings.Contains(logs, "authz: policies reloaded") || !strings.Contains(logs, "broken.rego:4:0: rego_parse_error") {
			t.Errorf("meshid's log lacks the reload and the failure with file:line:col")
		}
		t.Logf("%d requests through two reloads and a broken policy, 0 failed; %d answered by v2", sent.Load(), v2.Load())
	})
}

// decisionLine is the part of a decision log line the test reads.
type decisionLine struct {
	DecisionID string `json:"decision_id"`
	Allowed    bool   `json:"allowed"`
	Input      struct {
		Spiffe struct {
			Source struct {
				ID  string `json:"id"`
				Via string `json:"via"`
			} `json:"source"`
		} `json:"spiffe"`
	} `json:"input"`
}

// waitDecision finds decision id in the decision log (written
// asynchronously, so it may take a moment).
func waitDecision(t *testing.T, ctx context.Context, path, id string) decisionLine {
	t.Helper()
	var found *decisionLine
	waitFor(t, ctx, "decision "+id+" in the decision log", func() bool {
		f, err := os.Open(path)
		if err != nil {
			return false
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var l decisionLine
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.DecisionID == id {
				found = &l
				return true
			}
		}
		return false
	})
	return *found
}

// caJWTKey reads the JWT signing key of meshid's active CA generation and
// its key id (the RFC 7638 thumbprint meshid publishes it under).
func caJWTKey(t *testing.T, m *harness.Meshid) (crypto.Signer, string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(filepath.Dir(activeCAPath(t, m)), "jwt.key"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("jwt.key holds no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	signer := k.(crypto.Signer)
	tp, err := (&jose.JSONWebKey{Key: signer.Public()}).Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return signer, base64.RawURLEncoding.EncodeToString(tp)
}

func mintJWT(t *testing.T, key crypto.Signer, kid, sub, aud string) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{Subject: sub, Audience: jwt.Audience{aud}, IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(5 * time.Minute))}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

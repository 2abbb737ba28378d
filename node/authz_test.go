package node

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/authz/input"
	"github.com/meshid/meshid/ca"
	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/test/authztest"
)

func freeTCPAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// newTestAuthz builds the authz front door the way New does, over a CA of
// its own, which it returns too.
func newTestAuthz(t *testing.T, cfg config.Authz, reg prometheus.Registerer) (*authzService, *ca.Authority) {
	t.Helper()
	p, err := compilePolicies(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	authority, err := ca.Open(ca.Options{TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"), Dir: t.TempDir(), TTL: 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ids := identity.NewManager(identity.Options{Minter: authority, DefaultTTL: time.Hour})
	id := authzIdentity{jwtBundles: ids}
	if p.selfID != (spiffeid.ID{}) {
		id.self = ids.Self(p.selfID, time.Hour)
	}
	s, err := newAuthzService(cfg, t.TempDir(), p, id, tcpLimits{max: 64, idle: time.Minute}, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	return s, authority
}

// TestAuthzService runs the daemon's authz front door on a Unix socket
// and an HTTP address, with reflection and a decision log file, and asks
// it through each.
func TestAuthzService(t *testing.T) {
	dir := t.TempDir()
	policies := authztest.PolicyDir(t, map[string]string{"authz.rego": authztest.HelloPolicy, "data.json": authztest.HelloData})
	cfg := config.Default().Authz
	cfg.Address = "unix://" + filepath.Join(dir, "run", "authz.sock")
	cfg.HTTPAddress = freeTCPAddr(t)
	cfg.Reflection = true
	cfg.PolicyDir = policies
	cfg.DecisionLog.File = filepath.Join(dir, "logs", "decisions.jsonl")
	reg := prometheus.NewRegistry()

	s, _ := newTestAuthz(t, cfg, reg)
	stop := runAuthz(t, s)

	info, err := os.Stat(strings.TrimPrefix(cfg.Address, "unix://"))
	if err != nil || info.Mode().Perm() != 0o777 || info.Mode()&os.ModeSocket == 0 {
		t.Fatalf("authz socket: %v %v, want a socket with mode 0777", info.Mode(), err)
	}
	conn, err := grpc.NewClient(cfg.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	callCtx, callCancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer callCancel()

	for path, want := range map[string]codes.Code{"/hello": codes.OK, "/admin": codes.PermissionDenied} {
		resp, err := authv3.NewAuthorizationClient(conn).Check(callCtx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: path}},
		}})
		if err != nil || codes.Code(resp.GetStatus().GetCode()) != want {
			t.Errorf("Check %s over the Unix socket: %v %v, want %v", path, resp.GetStatus(), err, want)
		}
	}
	if h, err := healthpb.NewHealthClient(conn).Check(callCtx, &healthpb.HealthCheckRequest{}); err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health: %v %v", h, err)
	}
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(callCtx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil || !strings.Contains(r.String(), "envoy.service.auth.v3.Authorization") {
		t.Errorf("reflection lists %v (%v), want the Authorization service", r, err)
	}
	stream.CloseSend()

	for path, want := range map[string]int{"/hello": 200, "/admin": 403} {
		req, _ := http.NewRequestWithContext(callCtx, "GET", "http://"+cfg.HTTPAddress+path, nil)
		resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("HTTP ext_authz %s: %d, want %d", path, resp.StatusCode, want)
		}
	}

	stop() // the decision log is written out before run returns
	logged, err := os.ReadFile(cfg.DecisionLog.File)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(logged), "\n"); n != 4 {
		t.Errorf("decision log has %d lines, want 4 (two gRPC, two HTTP checks):\n%s", n, logged)
	}
}

// TestListenAddr: unix:// addresses get unixsock's rules (stale sockets,
// sockets in use, files that are not sockets, directories others could
// write), every error prefixed with the config key.
func TestListenAddr(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "authz.sock")

	// A stale socket (nobody serves it) is replaced.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	l, err := listenAddr("authz.address", "unix://"+sock)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}

	// A live one is not stolen.
	if _, err := listenAddr("authz.address", "unix://"+sock); err == nil || !strings.Contains(err.Error(), "authz.address: "+sock+" is in use") {
		t.Errorf("live socket: %v, want in use", err)
	}
	l.Close()

	// Nor is a file that is not a socket deleted.
	file := filepath.Join(dir, "plain")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := listenAddr("authz.http_address", "unix://"+file); err == nil || !strings.Contains(err.Error(), "authz.http_address: "+file+" exists and is not a socket") {
		t.Errorf("plain file: %v", err)
	}
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := listenAddr("socket_path", "unix://"+filepath.Join(open, "agent.sock")); err == nil || !strings.HasPrefix(err.Error(), "socket_path: ") || !strings.Contains(err.Error(), open) {
		t.Errorf("world-writable directory: %v, want a socket_path error naming it", err)
	}
	if _, err := listenAddr("authz.address", "127.0.0.1:notaport"); err == nil || !strings.HasPrefix(err.Error(), "authz.address: ") {
		t.Errorf("bad TCP address: %v", err)
	}
}

// TestAuthzServiceRefusesBadPolicies: a policy that does not compile
// stops the start, with its position, before anything is opened.
func TestAuthzServiceRefusesBadPolicies(t *testing.T) {
	cfg := config.Default().Authz
	cfg.PolicyDir = authztest.PolicyDir(t, map[string]string{"authz.rego": "package envoy.authz\n\nallow if {\n\tinput.x == y\n}\n"})
	cfg.DecisionLog.File = filepath.Join(t.TempDir(), "never", "decisions.jsonl")
	_, err := compilePolicies(context.Background(), cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "authz.policy_dir: ") || !strings.Contains(err.Error(), "authz.rego:4:2: rego_unsafe_var_error") {
		t.Fatalf("compilePolicies = %v, want the compile error with its position", err)
	}
	if _, err := os.Stat(filepath.Dir(cfg.DecisionLog.File)); err == nil {
		t.Error("a refused start created the decision log's directory")
	}
}

// TestAuthzServiceRefusesBadProtoDescriptor: a descriptor set that cannot
// be read stops the start and names the key and the file.
func TestAuthzServiceRefusesBadProtoDescriptor(t *testing.T) {
	cfg := config.Default().Authz
	cfg.PolicyDir = authztest.PolicyDir(t, map[string]string{"authz.rego": authztest.HelloPolicy})
	cfg.ProtoDescriptor = filepath.Join(t.TempDir(), "api.pb")
	if err := os.WriteFile(cfg.ProtoDescriptor, []byte("syntax = \"proto3\";\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := compilePolicies(context.Background(), cfg, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "authz.proto_descriptor: ") || !strings.Contains(err.Error(), cfg.ProtoDescriptor) {
		t.Fatalf("compilePolicies = %v, want an authz.proto_descriptor error naming the file", err)
	}
}

// TestAuthzSettingsLimits: the body limits and the cache bounds reach the
// server, for `meshid run` and `meshid policy eval` alike.
func TestAuthzSettingsLimits(t *testing.T) {
	cfg := config.Default().Authz
	cfg.MaxBodyBytes, cfg.MaxBodyDepth, cfg.MaxBodyValues = 4096, 8, 50
	cfg.Cache = config.AuthzCache{Enabled: true, MaxEntries: 7, MaxBytes: 1 << 10}
	_, opts, err := AuthzSettings(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := opts.Input.Body, (input.BodyLimits{MaxBytes: 4096, MaxDepth: 8, MaxValues: 50}); got != want {
		t.Errorf("Input.Body = %+v, want %+v", got, want)
	}
	if got, want := opts.Cache, (authz.CacheOptions{Enabled: true, MaxEntries: 7, MaxBytes: 1 << 10}); got != want {
		t.Errorf("Cache = %+v, want %+v", got, want)
	}
}

// TestAuthzSettingsInputEncoding: authz.input_encoding reaches the input
// builder, the current plugin's form by default.
func TestAuthzSettingsInputEncoding(t *testing.T) {
	cfg := config.Default().Authz
	for _, tt := range []struct {
		key  string
		want input.Encoding
	}{{cfg.InputEncoding, input.EncodingProtomap}, {"protojson", input.EncodingProtoJSON}} {
		cfg.InputEncoding = tt.key
		_, opts, err := AuthzSettings(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := opts.Input.Encoding; got != tt.want {
			t.Errorf("input_encoding %q: Input.Encoding = %q, want %q", tt.key, got, tt.want)
		}
	}
}

// runAuthz serves s until the test ends; the returned function stops it
// (writing out the decision log) and may be called again.
func runAuthz(t *testing.T, s *authzService) func() {
	t.Helper()
	if err := s.listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx) }()
	stopped := false
	stop := func() {
		if !stopped {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
			stopped = true
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestAuthzDecisionLogRotates: a decision log file is rotated at
// decision_log_max_bytes, decision_log_max_files kept, every line whole,
// each field within decision_log_max_field_bytes.
func TestAuthzDecisionLogRotates(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default().Authz
	cfg.Address = "unix://" + filepath.Join(dir, "authz.sock")
	cfg.PolicyDir = authztest.PolicyDir(t, map[string]string{"authz.rego": authztest.HelloPolicy, "data.json": authztest.HelloData})
	cfg.DecisionLog.File = filepath.Join(dir, "decisions.jsonl")
	cfg.DecisionLogMaxBytes, cfg.DecisionLogMaxFiles = 1<<20, 2
	cfg.DecisionLogMaxFieldBytes, cfg.DecisionLogMaxInputBytes = 64<<10, 128<<10
	s, _ := newTestAuthz(t, cfg, prometheus.NewRegistry())
	stop := runAuthz(t, s)

	conn, err := grpc.NewClient(cfg.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	// 100 KB of header each, cut to 64 KiB: about 3.8 MiB in all.
	for range 60 {
		if _, err := client.Check(t.Context(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Method: "GET", Path: "/hello", Headers: map[string]string{"x-big": strings.Repeat("b", 100_000)},
			}},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	stop()

	lines := 0
	for _, name := range []string{"decisions.jsonl", "decisions.jsonl.1", "decisions.jsonl.2"} {
		bs, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(bs) > 1<<20 {
			t.Errorf("%s is %d bytes, more than decision_log_max_bytes", name, len(bs))
		}
		for l := range strings.Lines(string(bs)) {
			var line struct {
				Input struct {
					Attributes struct {
						Request struct {
							HTTP struct {
								Headers map[string]string `json:"headers"`
							} `json:"http"`
						} `json:"request"`
					} `json:"attributes"`
				} `json:"input"`
			}
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatalf("%s: a line is not JSON: %v", name, err)
			}
			if h := line.Input.Attributes.Request.HTTP.Headers["x-big"]; !strings.HasSuffix(h, "...[truncated: 100000 bytes]") || len(h) > 64<<10+64 {
				t.Fatalf("%s: x-big logged as %d bytes ending %q", name, len(h), h[max(0, len(h)-40):])
			}
			lines++
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "decisions.jsonl.3")); err == nil {
		t.Error("decisions.jsonl.3 exists: more files kept than decision_log_max_files")
	}
	if lines == 0 || lines > 60 {
		t.Errorf("%d lines in the files kept", lines)
	}
}

// TestAuthzDecisionLogStderr: stderr is written as it is, never rotated,
// whatever decision_log_max_bytes says.
func TestAuthzDecisionLogStderr(t *testing.T) {
	cfg := config.Default().Authz
	cfg.Address = "unix://" + filepath.Join(t.TempDir(), "authz.sock")
	cfg.PolicyDir = authztest.PolicyDir(t, map[string]string{"authz.rego": authztest.HelloPolicy})
	cfg.DecisionLog.File = config.DecisionLogStderr
	cfg.DecisionLogMaxBytes = 1 << 20
	s, _ := newTestAuthz(t, cfg, prometheus.NewRegistry())
	if err := s.listen(); err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if w, ok := s.logFile.(nopCloser); !ok || w.Writer != os.Stderr {
		t.Errorf("the decision log writes to %T, want stderr as it is", s.logFile)
	}
}

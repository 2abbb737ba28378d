package node

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshid/meshid/identity"
	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/internal/connlimit"
	"github.com/meshid/meshid/test/authztest"
)

// nodeConfig is a node that gives this process's uid an SVID.
func nodeConfig(t *testing.T) config.Config {
	t.Helper()
	dir := t.TempDir()
	entries := filepath.Join(dir, "entries.yaml")
	uid := strconv.Itoa(os.Geteuid())
	if err := os.WriteFile(entries, []byte("entries:\n  - spiffe_id: spiffe://example.org/node-test\n    selectors: [\"unix:uid:"+uid+"\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.SocketPath = filepath.Join(dir, "sock", "agent.sock")
	cfg.EntriesFile = entries
	cfg.EntriesOptional = false
	cfg.Admin.Address = freeTCPAddr(t)
	cfg.Authz.Address = freeTCPAddr(t)
	cfg.Authz.PolicyDir = authztest.PolicyDir(t, map[string]string{"authz.rego": authztest.HelloPolicy, "data.json": authztest.HelloData})
	return cfg
}

// dialSilent connects without ever speaking and tells whether meshid took
// the connection (it sent its HTTP/2 settings) or closed it at once.
func dialSilent(t *testing.T, sock string) (net.Conn, bool) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = c.Read(make([]byte, 1))
	if os.IsTimeout(err) {
		t.Fatal("meshid neither took nor refused a connection in 5s")
	}
	return c, err == nil
}

// TestNodeCapsWorkloadSocket: the workload socket of a whole node holds at
// most connections_per_uid connections of one uid, root's included, says
// so in /metrics, and drops a connection that never sends its preface after
// handshake_timeout, which gives its place back to the next caller.
func TestNodeCapsWorkloadSocket(t *testing.T) {
	cfg := nodeConfig(t)
	cfg.Limits = config.Limits{Connections: 10, ConnectionsPerUID: 2, HandshakeTimeout: time.Second, IdleTimeout: time.Minute}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n, err := New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()

	start := time.Now()
	var silent []net.Conn
	for i := range 2 {
		c, took := dialSilent(t, cfg.SocketPath)
		if !took {
			t.Fatalf("connection %d of a share of 2 was refused", i+1)
		}
		silent = append(silent, c)
	}
	if _, took := dialSilent(t, cfg.SocketPath); took {
		t.Fatal("a third connection of the same uid was taken with connections_per_uid: 2")
	}
	metrics := adminGet(t, cfg.Admin.Address, "/metrics")
	for _, want := range []string{
		`meshid_socket_connections 2`,
		`meshid_socket_connections_refused_total{reason="per_uid"} 1`,
		`meshid_socket_connections_limit{scope="per_uid"} 2`,
		`meshid_socket_connections_limit{scope="total"} 10`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	for _, c := range silent {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("a connection that never spoke: %v, want it closed by meshid", err)
		}
	}
	if elapsed := time.Since(start); elapsed < 900*time.Millisecond || elapsed > 5*time.Second {
		t.Errorf("silent connections closed after %s, want about handshake_timeout (1s)", elapsed)
	}
	fetchCtx, fetchCancel := context.WithTimeout(ctx, 10*time.Second)
	defer fetchCancel()
	svid, err := workloadapi.FetchX509SVID(fetchCtx, workloadapi.WithAddr("unix://"+cfg.SocketPath))
	if err != nil {
		t.Fatalf("fetch once the silent connections were dropped: %v", err)
	}
	if got := svid.ID.String(); got != "spiffe://example.org/node-test" {
		t.Errorf("SVID for %s", got)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return 10s after its context ended")
	}
}

// TestNodeRefusesCapsBeyondItsFDs: connections the file descriptor limit
// cannot back stop the start before the socket exists.
func TestNodeRefusesCapsBeyondItsFDs(t *testing.T) {
	cfg := nodeConfig(t)
	cfg.Limits.Connections = 1 << 30
	cfg.Limits.ConnectionsPerUID = 1
	_, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "limits: 1073741824 connections need") || !strings.Contains(err.Error(), "RLIMIT_NOFILE") {
		t.Fatalf("New = %v, want the limits error", err)
	}
	for _, p := range []string{cfg.SocketPath, cfg.DataDir} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("a refused start created %s", p)
		}
	}
}

// The floors of entries' TTLs are those of the config's defaults.
func TestTTLFloorsAgree(t *testing.T) {
	if identity.MinX509TTL != config.MinX509TTL || identity.MinJWTTTL != config.MinJWTTTL {
		t.Errorf("entries' floors (x509 %s, jwt %s) differ from meshid.yaml's (x509 %s, jwt %s)",
			identity.MinX509TTL, identity.MinJWTTTL, config.MinX509TTL, config.MinJWTTTL)
	}
}

func adminGet(t *testing.T, addr, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// TestNodeBoundsStreamsPerConnection: one connection holds at most
// maxStreamsPerConn streams; the next waits for one of them to end.
func TestNodeBoundsStreamsPerConnection(t *testing.T) {
	cfg := nodeConfig(t)
	ctx := runNode(t, cfg)

	conn, err := grpc.NewClient("unix://"+cfg.SocketPath, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	watch := func(ctx context.Context) error {
		w, err := health.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		_, err = w.Recv()
		return err
	}
	cancels := make([]context.CancelFunc, maxStreamsPerConn)
	for i := range cancels {
		var streamCtx context.Context
		streamCtx, cancels[i] = context.WithCancel(ctx)
		if err := watch(streamCtx); err != nil {
			t.Fatalf("stream %d: %v", i+1, err)
		}
	}
	extra := make(chan error, 1)
	go func() { extra <- watch(ctx) }()
	select {
	case err := <-extra:
		t.Fatalf("stream %d answered (%v) while %d were open", maxStreamsPerConn+1, err, maxStreamsPerConn)
	case <-time.After(300 * time.Millisecond):
	}
	cancels[0]()
	select {
	case err := <-extra:
		if err != nil {
			t.Fatalf("stream %d after one ended: %v", maxStreamsPerConn+1, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("stream %d still waits after one ended", maxStreamsPerConn+1)
	}
	for _, c := range cancels {
		c()
	}
}

// TestNodeCapsAuthzAndAdminListeners: TCP tells nothing of a caller's uid,
// so the ext_authz listener holds at most limits.authz_connections in all;
// past them meshid stops accepting until one closes, and no caller can
// take the descriptors meshid keeps for itself through it. The admin
// endpoint has its own cap.
func TestNodeCapsAuthzAndAdminListeners(t *testing.T) {
	cfg := nodeConfig(t)
	cfg.Limits.AuthzConnections = 2
	ctx := runNode(t, cfg)

	check := func() error {
		conn, err := grpc.NewClient(cfg.Authz.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		callCtx, callCancel := context.WithTimeout(ctx, 500*time.Millisecond)
		defer callCancel()
		_, err = healthpb.NewHealthClient(conn).Check(callCtx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
		return err
	}
	if err := check(); err != nil {
		t.Fatalf("authz health with nothing held: %v", err)
	}
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", cfg.Authz.Address)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		defer c.Close()
	}
	time.Sleep(100 * time.Millisecond) // let meshid accept both
	if err := check(); err == nil {
		t.Fatal("a third authz connection was served while two held the cap of 2")
	}
	held[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for check() != nil {
		if time.Now().After(deadline) {
			t.Fatal("authz still refuses 10s after a held connection closed")
		}
	}

	var admin []net.Conn
	for range connlimit.AdminCap {
		c, err := net.Dial("tcp", cfg.Admin.Address)
		if err != nil {
			t.Fatal(err)
		}
		admin = append(admin, c)
		defer c.Close()
	}
	time.Sleep(100 * time.Millisecond)
	client := &http.Client{Timeout: 300 * time.Millisecond}
	if resp, err := client.Get("http://" + cfg.Admin.Address + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatalf("the admin endpoint answered while %d connections held its cap", connlimit.AdminCap)
	}
	admin[0].Close()
	client.Timeout = 5 * time.Second
	if code, _ := httpGet(t, client, "http://"+cfg.Admin.Address+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz after a held connection closed = %d", code)
	}
}

// runNode builds and runs a node on cfg until the test ends, and returns a
// context that ends with it.
func runNode(t *testing.T, cfg config.Config) context.Context {
	t.Helper()
	_, ctx := startNode(t, cfg)
	return ctx
}

// startNode is runNode for a test that needs the node itself.
func startNode(t *testing.T, cfg config.Config) (*Node, context.Context) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n, err := New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	})
	return n, ctx
}

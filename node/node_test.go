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

	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/test/authztest"
)

// TestNodeServesAndStops builds a whole node in this process, fetches this
// process's own SVID over the workload socket as a go-spiffe client does,
// asks the admin endpoint whether it is ready, and stops it: Run returns
// nil and nothing it started outlives it (TestMain checks).
func TestNodeServesAndStops(t *testing.T) {
	cfg := nodeConfig(t)
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

	fetchCtx, fetchCancel := context.WithTimeout(ctx, 10*time.Second)
	defer fetchCancel()
	svid, err := workloadapi.FetchX509SVID(fetchCtx, workloadapi.WithAddr("unix://"+cfg.SocketPath))
	if err != nil {
		t.Fatalf("fetch own SVID: %v", err)
	}
	if got := svid.ID.String(); got != "spiffe://example.org/node-test" {
		t.Errorf("SVID for %s, want spiffe://example.org/node-test", got)
	}
	resp, err := http.Get("http://" + cfg.Admin.Address + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "ready") {
		t.Errorf("/readyz = %d %q, want 200 ready", resp.StatusCode, body)
	}

	// What describes other processes is on the root-only socket, not TCP.
	adminSock := filepath.Join(filepath.Dir(cfg.SocketPath), "admin.sock")
	if info, err := os.Lstat(adminSock); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("admin socket %s: %v, %v; want mode 0600", adminSock, info, err)
	}
	explain := "/explain?pid=" + strconv.Itoa(os.Getpid())
	if code, body := httpGet(t, &http.Client{}, "http://"+cfg.Admin.Address+explain); code != http.StatusNotFound || !strings.Contains(body, "admin socket") {
		t.Errorf("TCP %s = %d %q, want 404 naming the admin socket", explain, code, body)
	}
	overSocket := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", adminSock)
	}}}
	if code, body := httpGet(t, overSocket, "http://meshid"+explain); code != http.StatusOK || !strings.Contains(body, "spiffe://example.org/node-test") {
		t.Errorf("admin socket %s = %d %q, want 200 with this process's entry", explain, code, body)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil after its context ends", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return 10s after its context ended")
	}
	if _, err := os.Stat(cfg.SocketPath); err == nil {
		t.Error("the workload socket outlived the node")
	}
}

// TestNodeRefusesBadInputBeforeWriting: a policy that does not compile
// stops New before the CA writes data_dir or a socket exists.
func TestNodeRefusesBadInputBeforeWriting(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.SocketPath = filepath.Join(dir, "sock", "agent.sock")
	cfg.EntriesFile = filepath.Join(dir, "entries.yaml")
	cfg.Authz.PolicyDir = authztest.PolicyDir(t, map[string]string{"authz.rego": "package envoy.authz\n\nallow if {\n"})
	_, err := New(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "authz.policy_dir: ") {
		t.Fatalf("New = %v, want the policy's compile error", err)
	}
	for _, p := range []string{cfg.DataDir, filepath.Dir(cfg.SocketPath)} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("a refused start created %s", p)
		}
	}
}

func httpGet(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

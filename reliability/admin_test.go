//go:build reliability

package reliability

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshid/meshid/test/harness"
)

// TestExplainIsRootOnly is finding 6 of issue 13: /explain, which tells
// what meshid sees of any process (its selectors, which entries match),
// was served on the TCP admin port that every local user can reach. It is
// now on a Unix socket of mode 0600: root gets the explanation, another
// uid cannot even connect, and the TCP port answers 404 saying where it
// went while keeping health, readiness and metrics.
func TestExplainIsRootOnly(t *testing.T) {
	env := harness.ForTest(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	m, err := env.StartMeshid(ctx, harness.MeshidOptions{Entries: harness.DemoEntries()})
	if err != nil {
		t.Fatal(err)
	}
	// A process worth explaining: the demo backend, under its own uid.
	app, err := env.StartApp(ctx, "backend", harness.BackendAppUID, "")
	if err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(app.Pid())
	adminSock := filepath.Join(filepath.Dir(m.SocketPath), "admin.sock")

	fi, err := os.Stat(adminSock)
	if err != nil {
		t.Fatalf("no admin socket beside the workload socket: %v", err)
	}
	if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o600 || st.Uid != 0 {
		t.Errorf("admin socket %s is mode %v, uid %d; want 0600, root's", adminSock, fi.Mode().Perm(), st.Uid)
	}

	status, body, err := harness.Get(ctx, "http://"+m.AdminAddr+"/explain?pid="+pid)
	if err != nil || status != http.StatusNotFound || !strings.Contains(string(body), "root-only admin socket") {
		t.Errorf("GET /explain on the TCP admin port: %d %q %v; want 404 saying where it went", status, body, err)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if status, _, err := harness.Get(ctx, "http://"+m.AdminAddr+path); err != nil || status != http.StatusOK {
			t.Errorf("GET %s on the TCP admin port: %d %v", path, status, err)
		}
	}

	explained, err := getUnix(ctx, adminSock, "/explain?pid="+pid)
	if err != nil || !strings.Contains(explained, "unix:uid:"+strconv.Itoa(harness.BackendAppUID)) {
		t.Errorf("root's /explain on the admin socket: %v, %.300q; want the app's selectors", err, explained)
	}
	out, err := m.CLI(ctx, 0, "entry", "explain", "--admin-socket", adminSock, "--pid", pid)
	if err != nil || !strings.Contains(out, "unix:uid:"+strconv.Itoa(harness.BackendAppUID)) {
		t.Errorf("meshid entry explain as root: %v\n%s", err, out)
	}
	// Another uid: the kernel refuses the connection (the socket's mode),
	// and the CLI says why.
	dial := runLoadgen(t, ctx, env, "dial-admin", 1301, "flood", "-socket", adminSock, "-conns", "1", "-for", "300ms")
	if dial.Peak != 0 || dial.Errors == 0 || !strings.Contains(dial.FirstError, "permission denied") {
		t.Errorf("uid 1301 connecting to the admin socket: held %d, %d dials failed (%s); want every connect refused", dial.Peak, dial.Errors, dial.FirstError)
	}
	out, err = m.CLI(ctx, 1301, "entry", "explain", "--admin-socket", adminSock, "--pid", pid)
	if err == nil || strings.Contains(out, "unix:uid:") || !strings.Contains(out, "run this as root") {
		t.Errorf("meshid entry explain as uid 1301: %v\n%s\nwant it refused, with nothing explained", err, out)
	}
	t.Logf("uid 1301: connect: %s; CLI: %s", dial.FirstError, lastLine(out))
	report(t, "/explain only on the 0600 admin socket: root gets the selectors, another uid is refused at connect, the TCP port 404s and keeps /healthz /readyz /metrics",
		"admin socket %v root's; uid 1301's connect: %s", fi.Mode().Perm(), dial.FirstError)
}

// getUnix sends GET path to an HTTP server on a Unix socket.
func getUnix(ctx context.Context, socket, path string) (string, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Proxy:             nil,
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://admin"+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = &httpError{resp.StatusCode}
	}
	return string(b), err
}

type httpError struct{ status int }

func (e *httpError) Error() string { return "status " + strconv.Itoa(e.status) }

package harness

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshid/meshid/envoy"
	"github.com/meshid/meshid/internal/unixsock"
)

func TestFreeAddrNeverRepeats(t *testing.T) {
	e := &Env{}
	seen := map[string]bool{}
	for range 200 {
		addr := e.FreeAddr()
		if seen[addr] {
			t.Fatalf("FreeAddr handed out %s twice", addr)
		}
		seen[addr] = true
		if !strings.HasPrefix(addr, "127.0.0.1:") {
			t.Fatalf("FreeAddr = %q, want 127.0.0.1:PORT", addr)
		}
		// Below the ephemeral range, where no client's connect can take it.
		if port, _ := strconv.Atoi(strings.TrimPrefix(addr, "127.0.0.1:")); port >= ephemeralLow() {
			t.Fatalf("FreeAddr = %q, inside the kernel's ephemeral range (from %d)", addr, ephemeralLow())
		}
	}
}

func TestWaitHTTPReportsLastAttempt(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "still warming", http.StatusServiceUnavailable)
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	err := WaitHTTP(ctx, srv.URL, 200)
	if err == nil {
		t.Fatal("WaitHTTP returned nil for a server that always says 503")
	}
	for _, want := range []string{srv.URL, "503", "still warming"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if err := WaitHTTP(t.Context(), srv.URL, 503); err != nil {
		t.Errorf("WaitHTTP(want 503) = %v", err)
	}
}

func TestProcessUnderOtherUID(t *testing.T) {
	e := ForTest(t)
	app, err := e.StartApp(t.Context(), "backend", BackendAppUID, "")
	if err != nil {
		t.Fatal(err)
	}
	if uid, gid := procIDs(t, app.Pid()); uid != BackendAppUID || gid != BackendAppUID {
		t.Errorf("demoapp runs as uid %d gid %d, want %d/%d", uid, gid, BackendAppUID, BackendAppUID)
	}
	status, body, err := Get(t.Context(), app.URL+"/some/path")
	if err != nil || status != 200 {
		t.Fatalf("GET = %d %s %v", status, body, err)
	}
	assertBody(t, "backend echo", body, `"service":"backend"`, `"path":"/some/path"`, `"peer":""`)

	if err := app.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := app.Wait(); err != nil {
		t.Errorf("demoapp exit after SIGTERM = %v, want a clean exit", err)
	}
	if logs := app.Logs(); !strings.Contains(logs, "uri=/some/path") {
		t.Errorf("log %s has no request line:\n%s", app.LogPath, logs)
	}
}

func TestStartFailureShowsLogTail(t *testing.T) {
	e := ForTest(t)
	_, err := e.StartApp(t.Context(), "broken", 0, "not-a-url")
	if err == nil {
		t.Fatal("StartApp succeeded with an invalid -upstream")
	}
	for _, want := range []string{"broken not ready", "exit status 1", "is not an absolute URL", filepath.Join(e.Dir, "logs", "broken.log")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
}

func TestReusedNameGetsOwnLog(t *testing.T) {
	e := ForTest(t)
	bin, err := e.Binary("demoapp")
	if err != nil {
		t.Fatal(err)
	}
	var logs []string
	for range 2 {
		p, err := e.Start(t.Context(), ProcSpec{Name: "twice", Path: bin, Args: []string{"-h"}})
		if err != nil {
			t.Fatal(err)
		}
		_ = p.Wait()
		logs = append(logs, filepath.Base(p.LogPath))
	}
	if logs[0] != "twice.log" || logs[1] != "twice-2.log" {
		t.Errorf("log files = %v, want [twice.log twice-2.log]", logs)
	}
}

// TestNoOrphansInTheGroup: children a process started die with it, whether
// it is stopped or exits on its own.
func TestNoOrphansInTheGroup(t *testing.T) {
	e := ForTest(t)
	tests := []struct {
		name, script string
		stop         bool
	}{
		// The ignored TERM is inherited by sleep: only SIGKILL ends them.
		{"stopped parent that ignores SIGTERM", "trap '' TERM; sleep 300 & echo child $!; wait", true},
		{"parent that exits on its own", "sleep 300 & echo child $!", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := e.Start(t.Context(), ProcSpec{Name: "parent", Path: "/bin/sh", Args: []string{"-c", tt.script}, UID: BackendAppUID})
			if err != nil {
				t.Fatal(err)
			}
			var child int
			for deadline := time.Now().Add(5 * time.Second); child == 0; time.Sleep(10 * time.Millisecond) {
				fmt.Sscanf(p.Logs(), "child %d", &child)
				if time.Now().After(deadline) {
					t.Fatalf("no child pid in %q", p.Logs())
				}
			}
			if tt.stop {
				if err := p.Stop(200 * time.Millisecond); err != nil {
					t.Fatal(err)
				}
			} else {
				_ = p.Wait()
			}
			// SIGKILL is delivered asynchronously: give the child a moment.
			for deadline := time.Now().Add(2 * time.Second); alive(child); time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					syscall.Kill(child, syscall.SIGKILL)
					t.Fatalf("child %d outlived its parent", child)
				}
			}
		})
	}
}

// TestEnvoyWithoutMeshid starts an Envoy whose SDS server does not exist: it
// must come up (admin answers) but never go live, and hold no certificate.
func TestEnvoyWithoutMeshid(t *testing.T) {
	e := ForTest(t)
	if _, err := EnvoyPath(); err != nil {
		t.Skipf("%v (`make test` installs it)", err)
	}
	v, err := e.StartEnvoy(t.Context(), "lonely-envoy", envoy.Sidecar{
		SDSSocket:   filepath.Join(e.Dir, "nobody-listens.sock"),
		SPIFFEID:    FrontendID,
		TrustDomain: DemoTrustDomain,
		Outbound: &envoy.Outbound{
			ListenAddr:   e.FreeAddr(),
			PeerAddr:     e.FreeAddr(),
			PeerSPIFFEID: BackendID,
		},
	}, FrontendEnvoyUID)
	if err != nil {
		t.Fatal(err)
	}
	if uid, _ := procIDs(t, v.Pid()); uid != FrontendEnvoyUID {
		t.Errorf("envoy runs as uid %d, want %d", uid, FrontendEnvoyUID)
	}
	info, err := v.Admin(t.Context(), "/server_info")
	if err != nil {
		t.Fatal(err)
	}
	assertBody(t, "/server_info", info, `"version"`, "1.40.")

	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if err := v.WaitLive(ctx); err == nil {
		t.Error("Envoy went live without any SDS server")
	}
	certs, err := v.Certs(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 0 {
		t.Errorf("Certs() = %+v, want none", certs)
	}
}

// TestNothingOutlivesAKilledHarness kills a process that started demoapp
// through the harness, with SIGKILL so no cleanup runs, and expects the
// kernel to take demoapp down with it.
func TestNothingOutlivesAKilledHarness(t *testing.T) {
	if os.Getenv("HARNESS_CHILD_DIR") != "" {
		runDoomedHarness(os.Getenv("HARNESS_CHILD_DIR"))
		return
	}
	_ = ForTest(t) // root check; also builds demoapp for the child
	parent, err := os.MkdirTemp("", "harness-doomed-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(parent)
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}

	child := exec.Command(os.Args[0], "-test.run=^TestNothingOutlivesAKilledHarness$")
	child.Env = append(os.Environ(), "HARNESS_CHILD_DIR="+parent)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Fscan(out, &pid); err != nil {
		child.Process.Kill()
		child.Wait()
		t.Fatalf("child harness did not report a pid: %v", err)
	}
	if !alive(pid) {
		t.Fatalf("demoapp %d is not running before the harness dies", pid)
	}
	child.Process.Kill()
	child.Wait()

	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("demoapp %d outlived its harness", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runDoomedHarness starts demoapp, prints its pid and waits to be killed.
func runDoomedHarness(parent string) {
	e, err := New(context.Background(), Options{ParentDir: parent})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	app, err := e.StartApp(context.Background(), "orphan", BackendAppUID, "")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(app.Pid())
	time.Sleep(time.Minute)
	os.Exit(1)
}

// alive reports whether pid runs and is not a zombie (in a container
// nothing may reap an orphan, but a zombie no longer runs).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) S ...": the state follows the last ')'.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z"
}

// procIDs returns the real uid and gid of a running process.
func procIDs(t *testing.T, pid int) (uid, gid int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "Uid:":
			uid, _ = strconv.Atoi(fields[1])
		case "Gid:":
			gid, _ = strconv.Atoi(fields[1])
		}
	}
	return uid, gid
}

// certsSample is what Envoy 1.40's /certs said for an outbound-only sidecar.
const certsSample = `{
 "certificates": [
  {
   "ca_cert": [
    {
     "path": "\u003cinline\u003e",
     "serial_number": "01",
     "subject_alt_names": [{"uri": "spiffe://example.org"}],
     "days_until_expiration": "1",
     "valid_from": "2026-11-23T11:30:58Z",
     "expiration_time": "2026-11-24T11:31:58Z"
    }
   ],
   "cert_chain": [
    {
     "path": "\u003cinline\u003e",
     "serial_number": "03ea",
     "subject_alt_names": [{"uri": "spiffe://example.org/ns/demo/sa/frontend"}, {"dns": "frontend.demo"}],
     "days_until_expiration": "0",
     "valid_from": "2026-11-23T11:31:48Z",
     "expiration_time": "2026-11-23T12:31:58Z"
    }
   ]
  }
 ]
}`

func TestParseCerts(t *testing.T) {
	got, err := parseCerts([]byte(certsSample))
	if err != nil {
		t.Fatal(err)
	}
	want := []Cert{
		{
			CA: true, Path: "<inline>", SerialNumber: "1", URIs: []string{"spiffe://example.org"},
			DaysUntilExpiration: 1,
			ValidFrom:           time.Date(2026, 11, 23, 11, 30, 58, 0, time.UTC),
			ExpirationTime:      time.Date(2026, 11, 24, 11, 31, 58, 0, time.UTC),
		},
		{
			Path: "<inline>", SerialNumber: "3ea", URIs: []string{FrontendID}, DNSNames: []string{"frontend.demo"},
			ValidFrom:      time.Date(2026, 11, 23, 11, 31, 48, 0, time.UTC),
			ExpirationTime: time.Date(2026, 11, 23, 12, 31, 58, 0, time.UTC),
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseCerts =\n%+v\nwant\n%+v", got, want)
	}
	if _, err := parseCerts([]byte(`{"certificates": 3}`)); err == nil {
		t.Error("parseCerts accepted garbage")
	}
}

// assertBody fails unless body contains every want.
func assertBody(t *testing.T, what string, body []byte, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(string(body), w) {
			t.Errorf("%s: body %q does not contain %q", what, body, w)
		}
	}
}

// The socket path StartMeshid configures must pass meshid's directory rules:
// Env.Dir and what the harness makes in it are root's 0755, under /tmp.
func TestMeshidSocketPathPassesSocketRules(t *testing.T) {
	e := ForTest(t)
	dir, err := e.MkdirAll("meshid")
	if err != nil {
		t.Fatal(err)
	}
	lis, err := unixsock.Listen(meshidSocketPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	lis.Close()
}

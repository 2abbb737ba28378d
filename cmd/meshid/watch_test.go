package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// fakeSource plays meshid's Workload API stream: what the test sends on
// updates or errs reaches the helper as go-spiffe would deliver it.
type fakeSource struct {
	updates chan *workloadapi.X509Context
	errs    chan error
	jwt     func() (*jwtsvid.SVID, error) // nil: Unimplemented
}

func newFakeSource() *fakeSource {
	return &fakeSource{updates: make(chan *workloadapi.X509Context), errs: make(chan error)}
}

func (f *fakeSource) WatchX509Context(ctx context.Context, w workloadapi.X509ContextWatcher) error {
	for {
		select {
		case <-ctx.Done():
			w.OnX509ContextWatchError(status.Error(codes.Canceled, "context canceled"))
			return ctx.Err()
		case u := <-f.updates:
			w.OnX509ContextUpdate(u)
		case err := <-f.errs:
			w.OnX509ContextWatchError(err)
		}
	}
}

func (f *fakeSource) FetchJWTSVID(context.Context, jwtsvid.Params) (*jwtsvid.SVID, error) {
	if f.jwt == nil {
		return nil, status.Error(codes.Unimplemented, "not in this test")
	}
	return f.jwt()
}

// testJWT signs a JWT-SVID for aud that expires after ttl.
func testJWT(t *testing.T, sub, aud string, ttl time.Duration) *jwtsvid.SVID {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	token, err := josejwt.Signed(signer).Claims(josejwt.Claims{
		Subject: sub, Audience: josejwt.Audience{aud},
		Expiry: josejwt.NewNumericDate(time.Now().Add(ttl)), IssuedAt: josejwt.NewNumericDate(time.Now()),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwtsvid.ParseInsecure(token, []string{aud})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// syncBuffer is a bytes.Buffer for a writer and a reader in different
// goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// counterScript counts SIGHUPs into $1 (rewritten atomically), exits 7 on
// SIGTERM, and writes $2 once its traps are set. It refuses to start without
// the SVID files, as a real program would.
const counterScript = `test -s "$3/svid.pem" && test -s "$3/svid_key.pem" && test -s "$3/bundle.pem" || exit 9
n=0
trap 'n=$((n+1)); echo $n > "$1.tmp"; mv "$1.tmp" "$1"' HUP
trap 'exit 7' TERM
echo ready > "$2"
while :; do sleep 0.02; done`

type watchWorld struct {
	dir, count, ready string
	src               *fakeSource
	log               *syncBuffer
	h                 *helper
}

func newWatchWorld(t *testing.T, cfgEdit func(*watchConfig, *watchWorld)) *watchWorld {
	t.Helper()
	tmp := t.TempDir()
	w := &watchWorld{
		dir:   filepath.Join(tmp, "out"),
		count: filepath.Join(tmp, "hups"),
		ready: filepath.Join(tmp, "ready"),
		src:   newFakeSource(),
		log:   &syncBuffer{},
	}
	if err := os.Mkdir(w.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cert, key, bundle, fed := "svid.pem", "svid_key.pem", "bundle.pem", false
	cfg := watchConfig{
		endpoint:    endpoint{addr: "unix:///test/agent.sock", path: "/test/agent.sock"},
		files:       svidFiles{dir: &w.dir, cert: &cert, key: &key, bundle: &bundle, federated: &fed},
		renewSignal: syscall.SIGHUP,
		unreachable: time.Minute,
		timeout:     10 * time.Second,
	}
	if cfgEdit != nil {
		cfgEdit(&cfg, w)
	}
	w.h = &helper{
		cfg: cfg, source: w.src, clock: time.Now, tick: 20 * time.Millisecond,
		log:    slog.New(slog.NewTextHandler(w.log, nil)),
		stdout: &syncBuffer{}, stderr: &syncBuffer{},
	}
	return w
}

type runResult struct {
	code int
	err  error
}

func (w *watchWorld) start(ctx context.Context) <-chan runResult {
	done := make(chan runResult, 1)
	go func() {
		code, err := w.h.run(ctx)
		done <- runResult{code, err}
	}()
	return done
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readInt(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func onDisk(t *testing.T, dir string) *x509svid.SVID {
	t.Helper()
	s, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestWatchRewritesAndSignalsTheProgram(t *testing.T) {
	w := newWatchWorld(t, func(c *watchConfig, w *watchWorld) {
		c.cmd = []string{"sh", "-c", counterScript, "counter", w.count, w.ready, w.dir}
	})
	ca := newTestCA(t, "example.org")
	now := time.Now()
	first := ca.svid(t, "/app", now.Add(-10*time.Second), now.Add(time.Hour))
	second := ca.svid(t, "/app", now.Add(-10*time.Second), now.Add(time.Hour))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := w.start(ctx)

	w.src.updates <- ca.context(first)
	waitFor(t, "the program to start on the written files", func() bool { return fileExists(w.ready) })
	if got := onDisk(t, w.dir); !got.Certificates[0].Equal(first.Certificates[0]) {
		t.Fatal("svid.pem is not the first SVID")
	}

	// A resend of what is on disk (say, after meshid restarted) is no rotation.
	w.src.updates <- ca.context(first)
	w.src.updates <- ca.context(second) // also proves the first was consumed
	rotated := time.Now()
	waitFor(t, "one SIGHUP", func() bool { return readInt(w.count) >= 1 })
	t.Logf("rotation to SIGHUP counted: %v", time.Since(rotated).Round(time.Millisecond))
	if got := onDisk(t, w.dir); !got.Certificates[0].Equal(second.Certificates[0]) {
		t.Fatal("svid.pem is not the second SVID")
	}
	time.Sleep(100 * time.Millisecond)
	if n := readInt(w.count); n != 1 {
		t.Fatalf("program got %d SIGHUPs for one rotation, want 1", n)
	}
	assertOnlyFiles(t, w.dir, "bundle.pem", "svid.pem", "svid_key.pem")

	cancel() // what SIGTERM to meshid does
	r := <-done
	if r.err != nil || r.code != 7 {
		t.Fatalf("run = %d, %v; want the program's status 7 after SIGTERM was forwarded", r.code, r.err)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestWatchExitsWithTheProgramsStatus(t *testing.T) {
	w := newWatchWorld(t, func(c *watchConfig, w *watchWorld) {
		c.cmd = []string{"sh", "-c", "exit 3"}
	})
	ca := newTestCA(t, "example.org")
	done := w.start(t.Context())
	w.src.updates <- ca.context(ca.svid(t, "/app", time.Now(), time.Now().Add(time.Hour)))
	if r := <-done; r.err != nil || r.code != 3 {
		t.Fatalf("run = %d, %v; want 3", r.code, r.err)
	}
}

func TestWatchSignalsThePidFile(t *testing.T) {
	tmp := t.TempDir()
	count, ready, pidFile := filepath.Join(tmp, "hups"), filepath.Join(tmp, "ready"), filepath.Join(tmp, "pid")
	w := newWatchWorld(t, func(c *watchConfig, w *watchWorld) { c.pidFile = pidFile })
	prog := exec.Command("sh", "-c", counterScript, "counter", count, ready, w.dir)
	// The program runs before the helper, on files of an earlier run.
	ca := newTestCA(t, "example.org")
	if _, err := w.h.cfg.files.write(ca.svid(t, "/app", time.Now(), time.Now().Add(time.Hour)), ca.context().Bundles); err != nil {
		t.Fatal(err)
	}
	if err := prog.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { prog.Process.Kill(); prog.Wait() }()
	os.WriteFile(pidFile, []byte(strconv.Itoa(prog.Process.Pid)+"\n"), 0o644)
	waitFor(t, "the program to be ready", func() bool { return fileExists(ready) })

	ctx, cancel := context.WithCancel(t.Context())
	done := w.start(ctx)
	w.src.updates <- ca.context(ca.svid(t, "/app", time.Now(), time.Now().Add(time.Hour)))
	waitFor(t, "a SIGHUP for the first write", func() bool { return readInt(count) == 1 })
	w.src.updates <- ca.context(ca.svid(t, "/app", time.Now(), time.Now().Add(time.Hour)))
	waitFor(t, "a SIGHUP for the rotation", func() bool { return readInt(count) == 2 })
	cancel()
	if r := <-done; r.err != nil || r.code != 0 {
		t.Fatalf("run = %d, %v", r.code, r.err)
	}
	if err := prog.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the pid-file program should outlive the helper: %v", err)
	}
}

func TestWatchGivesUpOnAnUnreachableDaemon(t *testing.T) {
	w := newWatchWorld(t, func(c *watchConfig, w *watchWorld) {
		c.unreachable = 300 * time.Millisecond
		c.cmd = []string{"sh", "-c", counterScript, "counter", w.count, w.ready, w.dir}
	})
	ca := newTestCA(t, "example.org")
	done := w.start(t.Context())
	w.src.updates <- ca.context(ca.svid(t, "/app", time.Now(), time.Now().Add(time.Hour)))
	waitFor(t, "the program", func() bool { return fileExists(w.ready) })
	lost := time.Now()
	stop := make(chan struct{})
	go func() { // go-spiffe retries and reports each failure
		for {
			select {
			case w.src.errs <- status.Error(codes.Unavailable, "connection refused"):
			case <-stop:
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	defer close(stop)
	r := <-done
	if r.err == nil || !strings.Contains(r.err.Error(), "(-unreachable-timeout): meshid at unix:///test/agent.sock is unreachable: no socket at /test/agent.sock") {
		t.Fatalf("run = %d, %v", r.code, r.err)
	}
	if r.code != 7 {
		t.Fatalf("program status %d, want 7 (stopped by SIGTERM)", r.code)
	}
	if took := time.Since(lost); took < 300*time.Millisecond || took > 2*time.Second {
		t.Fatalf("gave up after %v, want just past 300ms", took)
	}
	if n := strings.Count(w.log.String(), "no SVID update from meshid; retrying"); n != 1 {
		t.Fatalf("logged the same failure %d times, want once:\n%s", n, w.log.String())
	}
}

func TestWatchPermissionDeniedIsNotUnreachable(t *testing.T) {
	w := newWatchWorld(t, func(c *watchConfig, w *watchWorld) { c.unreachable = 100 * time.Millisecond })
	ctx, cancel := context.WithCancel(t.Context())
	done := w.start(ctx)
	for range 5 {
		w.src.errs <- status.Error(codes.PermissionDenied, "no identity issued: no entry matches [unix:uid:1301]")
		time.Sleep(40 * time.Millisecond)
	}
	cancel()
	if r := <-done; r.err != nil {
		t.Fatalf("a refusing daemon counted as unreachable: %v", r.err)
	}
	if !strings.Contains(w.log.String(), "refused: no identity issued: no entry matches [unix:uid:1301]") {
		t.Fatalf("log lacks the daemon's message:\n%s", w.log.String())
	}
}

func TestWatchUnwritableDirectory(t *testing.T) {
	w := newWatchWorld(t, func(c *watchConfig, w *watchWorld) {
		c.cmd = []string{"sh", "-c", "echo started > " + w.ready}
	})
	// The key's name is taken by a directory: cert is written, the key fails.
	if err := os.Mkdir(filepath.Join(w.dir, "svid_key.pem"), 0o755); err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t, "example.org")
	done := w.start(t.Context())
	w.src.updates <- ca.context(ca.svid(t, "/app", time.Now(), time.Now().Add(time.Hour)))
	r := <-done
	if r.err == nil || !strings.Contains(r.err.Error(), "svid_key.pem: replace it") {
		t.Fatalf("run = %d, %v", r.code, r.err)
	}
	if fileExists(w.ready) {
		t.Fatal("the program started without its files")
	}
	entries, _ := os.ReadDir(w.dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("left behind %s", e.Name())
		}
	}
}

func TestWatchWarnsOnStalledRotation(t *testing.T) {
	w := newWatchWorld(t, nil)
	ca := newTestCA(t, "example.org")
	now := time.Now()
	ctx, cancel := context.WithCancel(t.Context())
	done := w.start(ctx)
	w.src.updates <- ca.context(ca.svid(t, "/app", now.Add(-40*time.Second), now.Add(5*time.Second)))
	waitFor(t, "a stall warning", func() bool { return strings.Contains(w.log.String(), "rotation has stalled") })
	time.Sleep(100 * time.Millisecond)
	if n := strings.Count(w.log.String(), "rotation has stalled"); n != 1 {
		t.Fatalf("warned %d times for one SVID, want once", n)
	}
	cancel()
	<-done
}

func TestParseWatchFlags(t *testing.T) {
	var stderr bytes.Buffer
	cfg, err := parseWatchFlags([]string{"-socket", "unix:///s.sock", "-write", "/d", "-renew-signal", "usr1", "-cmd", "nginx", "-g", "daemon off;"}, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.renewSignal != syscall.SIGUSR1 || strings.Join(cfg.cmd, "|") != "nginx|-g|daemon off;" || cfg.unreachable != 30*time.Second || cfg.endpoint.path != "/s.sock" {
		t.Fatalf("%+v", cfg)
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"-socket", "unix:///s"}, "-write DIR is required"},
		{[]string{"-write", "/d", "-renew-signal", "SIGNOPE"}, "not a signal name"},
		{[]string{"-write", "/d", "-cmd"}, "-cmd needs a program"},
		{[]string{"-write", "/d", "prog"}, "program arguments go after -cmd PROG"},
	} {
		if _, err := parseWatchFlags(bad.args, &stderr); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%v: %v, want %q", bad.args, err, bad.want)
		}
	}
	if _, err := parseSignal("HUP"); err != nil {
		t.Error(err)
	}
}

func TestWatchKillsAProgramThatIgnoresSIGTERM(t *testing.T) {
	w := newWatchWorld(t, func(c *watchConfig, w *watchWorld) {
		c.cmd = []string{"sh", "-c", "trap '' TERM; echo ready > " + w.ready + "; while :; do sleep 0.02; done"}
	})
	w.h.stopGrace = 200 * time.Millisecond
	ca := newTestCA(t, "example.org")
	ctx, cancel := context.WithCancel(t.Context())
	done := w.start(ctx)
	w.src.updates <- ca.context(ca.svid(t, "/app", time.Now(), time.Now().Add(time.Hour)))
	waitFor(t, "the program", func() bool { return fileExists(w.ready) })
	cancel()
	if r := <-done; r.err != nil || r.code != 128+int(syscall.SIGKILL) {
		t.Fatalf("run = %d, %v; want 137", r.code, r.err)
	}
	if !strings.Contains(w.log.String(), "program ignored the signal; killing it") {
		t.Fatalf("log:\n%s", w.log.String())
	}
}

func TestWatchKeepsAJWTSVID(t *testing.T) {
	var (
		mu      sync.Mutex
		fetches int
	)
	w := newWatchWorld(t, func(c *watchConfig, w *watchWorld) {
		c.jwtAudience, c.jwtFile = []string{"payments"}, "token"
		c.cmd = []string{"sh", "-c", "test -s " + w.dir + "/token && echo ready > " + w.ready + "; exec sleep 30"}
	})
	w.src.jwt = func() (*jwtsvid.SVID, error) {
		mu.Lock()
		defer mu.Unlock()
		if fetches++; fetches == 1 { // meshid not ready for JWTs at first
			return nil, status.Error(codes.Unavailable, "issue JWT-SVID: no key yet")
		}
		return testJWT(t, "spiffe://example.org/app", "payments", 2*time.Second), nil
	}
	ca := newTestCA(t, "example.org")
	ctx, cancel := context.WithCancel(t.Context())
	done := w.start(ctx)
	w.src.updates <- ca.context(ca.svid(t, "/app", time.Now(), time.Now().Add(time.Hour)))
	// The program waits for the token, retried 2s after the failure.
	waitFor(t, "the program to start with its token", func() bool { return fileExists(w.ready) })
	first, _ := os.ReadFile(filepath.Join(w.dir, "token"))
	if fi, err := os.Stat(filepath.Join(w.dir, "token")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	// A 2s token is refetched after about 1s.
	waitFor(t, "the token to be refetched at half its life", func() bool {
		b, _ := os.ReadFile(filepath.Join(w.dir, "token"))
		return len(b) > 0 && !bytes.Equal(b, first)
	})
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if fetches < 3 {
		t.Fatalf("%d fetches, want a failure, a token and a refresh", fetches)
	}
}

func TestWatchExitAfter(t *testing.T) {
	w := newWatchWorld(t, func(c *watchConfig, w *watchWorld) {
		c.exitAfter = 300 * time.Millisecond
		c.cmd = []string{"sh", "-c", counterScript, "counter", w.count, w.ready, w.dir}
	})
	ca := newTestCA(t, "example.org")
	start := time.Now()
	done := w.start(t.Context())
	w.src.updates <- ca.context(ca.svid(t, "/app", time.Now(), time.Now().Add(time.Hour)))
	r := <-done
	// 7 from its trap, or 143 if SIGTERM came before the trap was set.
	if r.err != nil || (r.code != 7 && r.code != 128+int(syscall.SIGTERM)) {
		t.Fatalf("run = %d, %v; want the program stopped by SIGTERM", r.code, r.err)
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 3*time.Second {
		t.Fatalf("exited after %v, want about 300ms", took)
	}
}

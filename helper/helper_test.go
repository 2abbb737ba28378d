package helper

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshid/meshid/test/syncbuf"
)

// counterScript counts SIGHUPs into $1 (rewritten atomically), exits 7 on
// SIGTERM, and writes $2 once its traps are set. It refuses to start
// without the SVID files, as a real program would.
const counterScript = `test -s "$3/svid.pem" && test -s "$3/svid_key.pem" && test -s "$3/bundle.pem" || exit 9
n=0
trap 'n=$((n+1)); echo $n > "$1.tmp"; mv "$1.tmp" "$1"' HUP
trap 'exit 7' TERM
echo ready > "$2"
while :; do sleep 0.02; done`

// runWorld is one Run against a fake Workload API stream, with real files
// and a real program.
type runWorld struct {
	dir, count, ready string
	src               *fakeSource
	log               *syncbuf.Buffer
	cfg               Config
}

func newRunWorld(t *testing.T, edit func(*Config, *runWorld)) *runWorld {
	t.Helper()
	tmp := t.TempDir()
	w := &runWorld{
		dir:   filepath.Join(tmp, "out"),
		count: filepath.Join(tmp, "hups"),
		ready: filepath.Join(tmp, "ready"),
		src:   newFakeSource(),
		log:   &syncbuf.Buffer{},
	}
	w.cfg = Config{
		Files:              Files{Dir: w.dir},
		UnreachableTimeout: time.Minute,
		CheckEvery:         20 * time.Millisecond,
		Source:             w.src,
		Log:                slog.New(slog.NewTextHandler(w.log, nil)),
		Stdout:             &syncbuf.Buffer{},
		Stderr:             &syncbuf.Buffer{},
	}
	if edit != nil {
		edit(&w.cfg, w)
	}
	return w
}

func (w *runWorld) counter() []string {
	return []string{"sh", "-c", counterScript, "counter", w.count, w.ready, w.dir}
}

type runResult struct {
	code int
	err  error
}

func (w *runWorld) start(ctx context.Context) <-chan runResult {
	done := make(chan runResult, 1)
	go func() {
		code, err := Run(ctx, w.cfg)
		done <- runResult{code, err}
	}()
	return done
}

func readInt(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func TestRunRewritesAndSignalsTheProgram(t *testing.T) {
	w := newRunWorld(t, func(c *Config, w *runWorld) { c.Cmd = w.counter() })
	ca := newTestCA(t, "example.org")
	first, second := ca.fresh(t), ca.fresh(t)
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

	cancel() // what SIGTERM to the helper does
	if r := <-done; r.err != nil || r.code != 7 {
		t.Fatalf("Run = %d, %v; want the program's status 7 after SIGTERM was forwarded", r.code, r.err)
	}
}

func TestRunExitsWithTheProgramsStatus(t *testing.T) {
	w := newRunWorld(t, func(c *Config, w *runWorld) { c.Cmd = []string{"sh", "-c", "exit 3"} })
	ca := newTestCA(t, "example.org")
	done := w.start(t.Context())
	w.src.updates <- ca.context(ca.fresh(t))
	if r := <-done; r.err != nil || r.code != 3 {
		t.Fatalf("Run = %d, %v; want 3", r.code, r.err)
	}
}

func TestRunSignalsThePidFile(t *testing.T) {
	tmp := t.TempDir()
	count, ready, pidFile := filepath.Join(tmp, "hups"), filepath.Join(tmp, "ready"), filepath.Join(tmp, "pid")
	w := newRunWorld(t, func(c *Config, w *runWorld) { c.PIDFile = pidFile })
	// The program runs before the helper, on files of an earlier run.
	ca := newTestCA(t, "example.org")
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := w.cfg.Files.Write(ca.fresh(t), ca.bundles()); err != nil {
		t.Fatal(err)
	}
	prog := exec.Command("sh", "-c", counterScript, "counter", count, ready, w.dir)
	if err := prog.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { prog.Process.Kill(); prog.Wait() }()
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(prog.Process.Pid)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the program to be ready", func() bool { return fileExists(ready) })

	ctx, cancel := context.WithCancel(t.Context())
	done := w.start(ctx)
	w.src.updates <- ca.context(ca.fresh(t))
	waitFor(t, "a SIGHUP for the first write", func() bool { return readInt(count) == 1 })
	w.src.updates <- ca.context(ca.fresh(t))
	waitFor(t, "a SIGHUP for the rotation", func() bool { return readInt(count) == 2 })
	cancel()
	if r := <-done; r.err != nil || r.code != 0 {
		t.Fatalf("Run = %d, %v", r.code, r.err)
	}
	if err := prog.Process.Signal(syscall.Signal(0)); err != nil {
		t.Fatalf("the pid-file program should outlive the helper: %v", err)
	}
}

func TestRunGivesUpOnAnUnreachableDaemon(t *testing.T) {
	w := newRunWorld(t, func(c *Config, w *runWorld) {
		c.UnreachableTimeout = 300 * time.Millisecond
		c.Cmd = w.counter()
		c.Explain = func(err error) error { return errors.New("explained: " + status.Convert(err).Message()) }
	})
	ca := newTestCA(t, "example.org")
	done := w.start(t.Context())
	w.src.updates <- ca.context(ca.fresh(t))
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
	if r.err == nil || !strings.Contains(r.err.Error(), "giving up after 0s (-unreachable-timeout): explained: connection refused") {
		t.Fatalf("Run = %d, %v", r.code, r.err)
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
	if !strings.Contains(w.log.String(), `msg="stopped program" status=7`) {
		t.Fatalf("log:\n%s", w.log.String())
	}
}

func TestRunPermissionDeniedIsNotUnreachable(t *testing.T) {
	w := newRunWorld(t, func(c *Config, w *runWorld) { c.UnreachableTimeout = 100 * time.Millisecond })
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
	if !strings.Contains(w.log.String(), "no identity issued: no entry matches [unix:uid:1301]") {
		t.Fatalf("log lacks the daemon's message:\n%s", w.log.String())
	}
}

func TestRunUnwritableDirectory(t *testing.T) {
	w := newRunWorld(t, func(c *Config, w *runWorld) { c.Cmd = []string{"sh", "-c", "echo started > " + w.ready} })
	// The key's name is taken by a directory: the cert is written, the key fails.
	if err := os.MkdirAll(filepath.Join(w.dir, "svid_key.pem"), 0o755); err != nil {
		t.Fatal(err)
	}
	ca := newTestCA(t, "example.org")
	done := w.start(t.Context())
	w.src.updates <- ca.context(ca.fresh(t))
	r := <-done
	if r.err == nil || !strings.Contains(r.err.Error(), "svid_key.pem: replace it") {
		t.Fatalf("Run = %d, %v", r.code, r.err)
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

func TestRunWarnsOnStalledRotation(t *testing.T) {
	w := newRunWorld(t, nil)
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

func TestRunKeepsAJWTSVID(t *testing.T) {
	w := newRunWorld(t, func(c *Config, w *runWorld) {
		c.JWTAudiences, c.Files.JWT = []string{"payments"}, "token"
		c.Cmd = []string{"sh", "-c", "test -s " + w.dir + "/token && echo ready > " + w.ready + "; exec sleep 30"}
	})
	var failed bool
	w.src.jwt = func() (*jwtsvid.SVID, error) {
		if !failed { // meshid not ready for JWTs at first
			failed = true
			return nil, status.Error(codes.Unavailable, "issue JWT-SVID: no key yet")
		}
		return testJWT(t, "spiffe://example.org/app", "payments", 2*time.Second), nil
	}
	ca := newTestCA(t, "example.org")
	ctx, cancel := context.WithCancel(t.Context())
	done := w.start(ctx)
	w.src.updates <- ca.context(ca.fresh(t))
	// The program waits for the token, retried 2s after the failure.
	waitFor(t, "the program to start with its token", func() bool { return fileExists(w.ready) })
	token := filepath.Join(w.dir, "token")
	first, _ := os.ReadFile(token)
	if fi, err := os.Stat(token); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v", fi, err)
	}
	// A 2s token is refetched after about 1s.
	waitFor(t, "the token to be refetched at half its life", func() bool {
		b, _ := os.ReadFile(token)
		return len(b) > 0 && !bytes.Equal(b, first)
	})
	cancel()
	<-done
	if n := w.src.jwtFetches(); n < 3 {
		t.Fatalf("%d fetches, want a failure, a token and a refresh", n)
	}
}

func TestRunExitAfter(t *testing.T) {
	w := newRunWorld(t, func(c *Config, w *runWorld) {
		c.ExitAfter = 300 * time.Millisecond
		c.Cmd = w.counter()
	})
	ca := newTestCA(t, "example.org")
	start := time.Now()
	done := w.start(t.Context())
	w.src.updates <- ca.context(ca.fresh(t))
	r := <-done
	// 7 from its trap, or 143 if SIGTERM came before the trap was set.
	if r.err != nil || (r.code != 7 && r.code != 128+int(syscall.SIGTERM)) {
		t.Fatalf("Run = %d, %v; want the program stopped by SIGTERM", r.code, r.err)
	}
	if took := time.Since(start); took < 300*time.Millisecond || took > 3*time.Second {
		t.Fatalf("exited after %v, want about 300ms", took)
	}
}

func TestRunRefusesABadConfig(t *testing.T) {
	_, err := Run(t.Context(), Config{UnreachableTimeout: -time.Second, ExitAfter: -1})
	for _, want := range []string{"no Workload API source", "-write DIR is required", "-unreachable-timeout must be positive", "-exit-after must not be negative"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Run = %v; want it to say %q", err, want)
		}
	}
}

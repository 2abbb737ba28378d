package authz_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshid/meshid/authz"
	"github.com/meshid/meshid/test/syncbuf"
)

const (
	allowAll = "package envoy.authz\n\nallow := true\n"
	denyAll  = "package envoy.authz\n\nallow := false\n"
)

// reloadWorld is a server whose policy dir a test rewrites.
type reloadWorld struct {
	dir  string
	srv  *authz.Server
	r    *authz.Reloader
	reg  *prometheus.Registry
	logs *syncbuf.Buffer
}

func newReloadWorld(t *testing.T, files map[string]string, interval time.Duration) *reloadWorld {
	t.Helper()
	w := &reloadWorld{dir: writeFiles(t, files), reg: prometheus.NewRegistry(), logs: &syncbuf.Buffer{}}
	cfg := authz.Config{PolicyDir: w.dir}
	e, err := authz.NewEngine(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(w.logs, nil))
	w.srv = newServer(t, e, authz.Options{Metrics: w.reg, Log: log})
	w.r = authz.NewReloader(w.srv, cfg, interval, log)
	return w
}

func (w *reloadWorld) write(t *testing.T, name, content string) {
	t.Helper()
	path := filepath.Join(w.dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	// Write and rename, as editors and ConfigMap updates do, so the
	// watcher never sees half a file; the mtime moves on for sure.
	tmp := filepath.Join(w.dir, ".tmp-"+filepath.Base(name))
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Duration(len(content)) * time.Millisecond)
	if err := os.Chtimes(tmp, future, future); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func (w *reloadWorld) allowed(t *testing.T) bool {
	t.Helper()
	return w.srv.Decide(context.Background(), checkRequest(frontend, backend, "GET", "/hello")).Allowed
}

func (w *reloadWorld) reloadErrors(t *testing.T) float64 {
	t.Helper()
	return counterValue(t, w.reg, "meshid_authz_policy_reload_errors_total", "")
}

// TestReloaderCheck drives Check by hand through the life of a policy dir.
func TestReloaderCheck(t *testing.T) {
	w := newReloadWorld(t, map[string]string{"authz.rego": denyAll}, 0)
	ctx := context.Background()

	if w.r.Check(ctx) || w.allowed(t) {
		t.Fatal("an unchanged dir reloaded")
	}

	w.write(t, "authz.rego", allowAll)
	if !w.r.Check(ctx) || !w.allowed(t) {
		t.Fatal("a changed policy was not swapped in")
	}

	w.write(t, "authz.rego", "package envoy.authz\n\nallow if {\n\tinput.x ==\n}\n")
	if w.r.Check(ctx) || !w.allowed(t) {
		t.Fatal("a broken policy replaced the last good one")
	}
	if got := w.reloadErrors(t); got != 1 {
		t.Errorf("reload errors = %v, want 1", got)
	}
	if logs := w.logs.String(); !strings.Contains(logs, "policy reload failed") || !strings.Contains(logs, filepath.Join(w.dir, "authz.rego")+":5:1: rego_parse_error") {
		t.Errorf("log does not give the failure with file:line:col:\n%s", logs)
	}
	// The same broken tree is neither retried nor logged again.
	if w.r.Check(ctx); w.reloadErrors(t) != 1 || strings.Count(w.logs.String(), "policy reload failed") != 1 {
		t.Errorf("an unchanged broken dir was reloaded again")
	}

	w.write(t, "lib/data.json", `{"open": false}`)
	w.write(t, "authz.rego", "package envoy.authz\n\nimport data.lib\n\nallow := lib.open\n")
	if !w.r.Check(ctx) || w.allowed(t) {
		t.Fatal("policy with data.json not swapped in")
	}
	w.write(t, "lib/data.json", `{"open": true}`)
	if !w.r.Check(ctx) || !w.allowed(t) {
		t.Fatal("a changed data.json was not picked up")
	}

	if err := os.RemoveAll(w.dir); err != nil {
		t.Fatal(err)
	}
	if w.r.Check(ctx) || !w.allowed(t) || w.reloadErrors(t) != 2 {
		t.Fatalf("a deleted policy dir: allowed %v, reload errors %v; want the last policy kept and an error counted", w.allowed(t), w.reloadErrors(t))
	}
	w.write(t, "authz.rego", denyAll)
	if !w.r.Check(ctx) || w.allowed(t) {
		t.Fatal("a recreated policy dir was not picked up")
	}
}

// TestReloaderWatches: Run notices a change through the file-system
// watch alone, and another through the periodic check when the watch
// cannot see it (here: a file written through a path the watch misses).
func TestReloaderWatches(t *testing.T) {
	w := newReloadWorld(t, map[string]string{"authz.rego": denyAll, "sub/x.rego": "package x\n"}, 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.r.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	// Run sets the watch up after it starts: write again until a write
	// is noticed, each time leaving the dir quiet long enough to settle.
	eventually(t, "a policy change to be picked up by the watch", func() bool {
		w.write(t, "authz.rego", allowAll)
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if w.allowed(t) {
				return true
			}
		}
		return false
	})
	// A new subdirectory is watched too.
	w.write(t, "sub/deeper/extra.rego", "package envoy.authz\n\nallow := false\n")
	w.write(t, "authz.rego", "package other\n\ny := 1\n")
	eventually(t, "a change in a new subdirectory to be picked up", func() bool { return !w.allowed(t) })
}

func TestReloaderPeriodicCheck(t *testing.T) {
	w := newReloadWorld(t, map[string]string{"authz.rego": denyAll}, time.Second)
	// A watcher that never hears of the change: the file is replaced
	// before Run starts and its watch begins, so only the ticker sees it.
	w.write(t, "authz.rego", allowAll)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.r.Run(ctx) }()
	eventually(t, "the periodic check to reload", func() bool { return w.allowed(t) })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestReloadUnderLoad swaps policies while decisions run: every decision
// is the old policy's or the new one's, never a failure.
func TestReloadUnderLoad(t *testing.T) {
	w := newReloadWorld(t, map[string]string{"authz.rego": allowAll}, 0)
	var failures, decisions atomic.Int64
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
				if r := w.srv.Decide(context.Background(), checkRequest(frontend, backend, "GET", "/hello")); r.Err != nil {
					failures.Add(1)
				}
				decisions.Add(1)
			}
		})
	}
	for i := range 20 {
		policy := allowAll
		if i%2 == 0 {
			policy = denyAll
		}
		w.write(t, "authz.rego", policy)
		if !w.r.Check(context.Background()) {
			t.Fatalf("reload %d did not happen", i)
		}
	}
	close(stop)
	wg.Wait()
	if failures.Load() != 0 || decisions.Load() == 0 {
		t.Errorf("%d of %d decisions failed during reloads", failures.Load(), decisions.Load())
	}
}

// eventually polls cond for up to 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// logRecorder keeps every record, to count what was said at which level.
type logRecorder struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}

// messages returns the messages logged at level, in order.
func (l *logRecorder) messages(level slog.Level) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, r := range l.records {
		if r.Level == level {
			out = append(out, r.Message)
		}
	}
	return out
}

// switchableRand reads crypto/rand until broken, then fails the way a
// starved or broken entropy source does.
type switchableRand struct{ broken atomic.Bool }

func (r *switchableRand) Read(p []byte) (int, error) {
	if r.broken.Load() {
		return 0, errors.New("entropy source unavailable")
	}
	return rand.Read(p)
}

type fixture struct {
	a    *Authority
	dir  string
	clk  *fakeClock
	t0   time.Time
	logs *logRecorder
	reg  *prometheus.Registry
	rand *switchableRand
}

func openFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), clk: newClock(), logs: &logRecorder{}, reg: prometheus.NewRegistry(), rand: &switchableRand{}}
	f.t0 = f.clk.Now()
	a, err := Open(Options{TrustDomain: td, Dir: f.dir, TTL: 24 * time.Hour, Clock: f.clk.Now,
		Rand: f.rand, Log: slog.New(f.logs), Metrics: f.reg})
	if err != nil {
		t.Fatal(err)
	}
	f.a = a
	return f
}

func (f *fixture) at(d time.Duration) { f.clk.Set(f.t0.Add(d)) }

// rotateFailing rotates n times and expects every rotation to fail.
func (f *fixture) rotateFailing(t *testing.T, n int) {
	t.Helper()
	for range n {
		changed, err := f.a.Rotate()
		if err == nil || changed {
			t.Fatalf("at %s: Rotate() = %v, %v; want a failure that changes nothing", f.clk.Now().Sub(f.t0), changed, err)
		}
	}
}

// checkMint mints both kinds of SVID and expects either ErrNoValidCA or
// SVIDs that are valid now, signed by a CA that is valid now.
func (f *fixture) checkMint(t *testing.T, wantNoCA bool) {
	t.Helper()
	now := f.clk.Now()
	id := spiffeid.RequireFromString("spiffe://example.org/w")
	svid, err := f.a.MintX509SVID(SVIDRequest{ID: id, TTL: time.Hour})
	_, jwtErr := f.a.MintJWTSVID(JWTRequest{ID: id, Audience: []string{"api"}, TTL: 5 * time.Minute})
	if wantNoCA {
		if !errors.Is(err, ErrNoValidCA) || !errors.Is(jwtErr, ErrNoValidCA) {
			t.Fatalf("at %s: mint errors %v and %v, want ErrNoValidCA", now.Sub(f.t0), err, jwtErr)
		}
		return
	}
	if err != nil || jwtErr != nil {
		t.Fatalf("at %s: mint: %v, %v", now.Sub(f.t0), err, jwtErr)
	}
	leaf := svid.Certificates[0]
	if !leaf.NotAfter.After(now) {
		t.Fatalf("at %s: minted an SVID that expired at %s", now.Sub(f.t0), leaf.NotAfter)
	}
	signer := signerOf(t, leaf, f.a.X509Bundle().X509Authorities())
	if !now.Before(signer.NotAfter) || leaf.NotAfter.After(signer.NotAfter) {
		t.Fatalf("at %s: SVID until %s signed by a CA valid until %s", now.Sub(f.t0), leaf.NotAfter, signer.NotAfter)
	}
}

func signerOf(t *testing.T, leaf *x509.Certificate, roots []*x509.Certificate) *x509.Certificate {
	t.Helper()
	for _, r := range roots {
		if leaf.CheckSignatureFrom(r) == nil {
			return r
		}
	}
	t.Fatal("SVID signed by no root in the bundle")
	return nil
}

// metric reads a gauge's or counter's value, as a scrape would.
func (f *fixture) metric(m prometheus.Metric) float64 {
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		panic(err)
	}
	if c := out.GetCounter(); c != nil {
		return c.GetValue()
	}
	return out.GetGauge().GetValue()
}

// registered lists the names of the series in the registry.
func (f *fixture) registered(t *testing.T) []string {
	t.Helper()
	families, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range families {
		names = append(names, mf.GetName())
	}
	return names
}

// chattr sets or clears a file attribute; it skips the test where the
// tool or the filesystem cannot.
func chattr(t *testing.T, flag, path string) {
	t.Helper()
	if out, err := exec.Command("chattr", flag, path).CombinedOutput(); err != nil {
		t.Skipf("chattr %s %s: %v %s", flag, path, err, out)
	}
}

// TestLastGenerationExpiresWhileItsSuccessorCannotBeWritten is the hostile
// review's case: the successor cannot be written from half-life on, the
// last generation expires, and then the disk is fixed. The tests run as
// root, which ignores permission bits, so the store is broken in ways the
// kernel refuses to root too.
func TestLastGenerationExpiresWhileItsSuccessorCannotBeWritten(t *testing.T) {
	tests := []struct {
		name         string
		break_, fix  func(t *testing.T, caDir string)
		keptOnDiskIn func(caDir string) string // where generation 1 is while broken
	}{
		{
			// An immutable directory refuses new names to every user.
			name: "store directory immutable (chattr +i)",
			break_: func(t *testing.T, caDir string) {
				chattr(t, "+i", caDir)
				t.Cleanup(func() { exec.Command("chattr", "-i", caDir).Run() })
			},
			fix: func(t *testing.T, caDir string) { chattr(t, "-i", caDir) },
		},
		{
			// A file where the directory was: no directory entry can be made
			// under it, by anyone.
			name: "store directory replaced by a file",
			break_: func(t *testing.T, caDir string) {
				if err := os.Rename(caDir, caDir+".away"); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(caDir, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			fix: func(t *testing.T, caDir string) {
				if err := os.Remove(caDir); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(caDir+".away", caDir); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := openFixture(t)
			a := f.a
			gen1 := a.Certificate()
			caDir := filepath.Join(f.dir, "ca")
			tt.break_(t, caDir)

			// Half-life: the successor cannot be written; generation 1 signs on.
			f.at(12 * time.Hour)
			f.rotateFailing(t, 5)
			f.checkMint(t, false)
			health := a.Health()
			if health == nil || errors.Is(health, ErrNoValidCA) || !strings.Contains(health.Error(), "failing since") ||
				!strings.Contains(health.Error(), gen1.NotAfter.Format(time.RFC3339)) {
				t.Fatalf("Health() = %v, want rotation failing and when signing ends", health)
			}
			if errs := f.logs.messages(slog.LevelError); len(errs) != 1 {
				t.Fatalf("5 failing rotations logged %d errors, want 1: %q", len(errs), errs)
			}
			if got := f.metric(a.metrics.rotationFailures); got != 5 {
				t.Errorf("%s = %v, want 5", "meshid_ca_rotation_failures_total", got)
			}
			if got, want := f.metric(a.metrics.expiry), float64(gen1.NotAfter.Unix()); got != want {
				t.Errorf("meshid_ca_expiry_seconds = %v, want %v", got, want)
			}

			f.at(24*time.Hour - time.Second) // the last second of generation 1
			f.rotateFailing(t, 1)
			f.checkMint(t, false)

			// Generation 1 expires before the next rotation: nothing signs,
			// even before a rotation has noticed.
			f.at(24 * time.Hour)
			f.checkMint(t, true)
			f.rotateFailing(t, 5)
			f.checkMint(t, true)
			_, err := a.MintX509SVID(SVIDRequest{ID: spiffeid.RequireFromString("spiffe://example.org/w"), TTL: time.Hour})
			if !strings.Contains(err.Error(), "data_dir") {
				t.Errorf("mint error %q does not say what to fix", err)
			}
			if roots := a.X509Bundle().X509Authorities(); len(roots) != 1 || !roots[0].Equal(gen1) {
				t.Fatalf("bundle holds %d roots, want generation 1 until a successor is written", len(roots))
			}
			if n := len(a.JWTBundle().JWTAuthorities()); n != 1 {
				t.Fatalf("JWT bundle holds %d keys, want generation 1's", n)
			}
			if !a.Certificate().Equal(gen1) {
				t.Fatal("Certificate() is not generation 1")
			}
			if err := a.Health(); !errors.Is(err, ErrNoValidCA) {
				t.Fatalf("Health() = %v, want ErrNoValidCA", err)
			}
			if errs := f.logs.messages(slog.LevelError); len(errs) != 2 || !strings.Contains(errs[1], "no valid CA generation") {
				t.Fatalf("errors logged: %q; want the failure, then once that signing stopped", errs)
			}
			if got := f.metric(a.metrics.rotationFailures); got != 11 {
				t.Errorf("meshid_ca_rotation_failures_total = %v, want 11", got)
			}

			tt.fix(t, caDir)
			if _, err := os.Stat(filepath.Join(caDir, "000001")); err != nil {
				t.Fatalf("generation 1 left the disk before a successor was written: %v", err)
			}
			changed, err := a.Rotate()
			if err != nil || !changed {
				t.Fatalf("Rotate() after the fix = %v, %v; want a new generation", changed, err)
			}
			f.checkMint(t, false)
			if err := a.Health(); err != nil {
				t.Fatalf("Health() after recovery = %v", err)
			}
			roots := a.X509Bundle().X509Authorities()
			if len(roots) != 1 || roots[0].Equal(gen1) {
				t.Fatalf("after recovery the bundle holds %d roots, want only the successor", len(roots))
			}
			svid := mint(t, a, "spiffe://example.org/w")
			if _, _, err := x509svid.Verify(svid.Certificates, a.X509Bundle(), x509svid.WithTime(f.clk.Now())); err != nil {
				t.Fatalf("SVID after recovery does not verify: %v", err)
			}
			for name, want := range map[string]bool{"000001": false, "000002": true} {
				if _, err := os.Stat(filepath.Join(caDir, name)); (err == nil) != want {
					t.Errorf("%s on disk: %v, want %v", name, err == nil, want)
				}
			}
			if infos := f.logs.messages(slog.LevelInfo); !slices.Contains(infos, "CA rotation recovered") || !slices.Contains(infos, "CA signs again") {
				t.Errorf("recovery not logged at INFO: %q", infos)
			}
			if errs := f.logs.messages(slog.LevelError); len(errs) != 2 {
				t.Errorf("recovery logged errors: %q", errs)
			}
			if got, want := f.metric(a.metrics.expiry), float64(roots[0].NotAfter.Unix()); got != want {
				t.Errorf("meshid_ca_expiry_seconds = %v, want the successor's %v", got, want)
			}
			if got := f.registered(t); !slices.Equal(got, []string{"meshid_ca_expiry_seconds", "meshid_ca_rotation_failures_total", "meshid_svid_issued_total"}) {
				t.Errorf("registry holds %q, want the three CA series", got)
			}
		})
	}
}

// TestKeyGenerationFailureWritesNothing breaks the random source: the
// successor cannot even be generated, and no part of it reaches the disk.
func TestKeyGenerationFailureWritesNothing(t *testing.T) {
	f := openFixture(t)
	before := snapshot(t, f.dir)
	f.rand.broken.Store(true)
	f.at(12 * time.Hour)
	_, err := f.a.Rotate()
	if err == nil || !strings.Contains(err.Error(), "entropy source unavailable") {
		t.Fatalf("Rotate() = %v, want the key generation failure", err)
	}
	if err := f.a.Health(); err == nil {
		t.Fatal("Health() = nil while rotation fails")
	}
	if after := snapshot(t, f.dir); after != before {
		t.Fatalf("a failed rotation changed the disk:\n%s", after)
	}

	f.rand.broken.Store(false)
	if changed, err := f.a.Rotate(); err != nil || !changed {
		t.Fatalf("Rotate() = %v, %v after the random source came back", changed, err)
	}
	if err := f.a.Health(); err != nil {
		t.Fatalf("Health() = %v after recovery", err)
	}
}

// TestOpenWithNothingThatCanSign refuses to start rather than serve a trust
// domain that cannot sign.
func TestOpenWithNothingThatCanSign(t *testing.T) {
	r := &switchableRand{}
	r.broken.Store(true)
	dir := t.TempDir()
	_, err := Open(Options{TrustDomain: td, Dir: dir, TTL: time.Hour, Rand: r})
	if !errors.Is(err, ErrNoValidCA) || !strings.Contains(err.Error(), "first generation") {
		t.Fatalf("Open = %v, want ErrNoValidCA for the first generation", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, "ca")); len(entries) != 0 {
		t.Fatalf("a refused start left %d entries in the store", len(entries))
	}
}

// TestRotationFailureAtOpenStillStarts: a successor that cannot be written
// is no reason to stop a CA that can still sign.
func TestRotationFailureAtOpenStillStarts(t *testing.T) {
	dir, clk := t.TempDir(), newClock()
	open(t, dir, clk)
	clk.Set(clk.Now().Add(13 * time.Hour))
	r := &switchableRand{}
	r.broken.Store(true)
	a, err := Open(Options{TrustDomain: td, Dir: dir, TTL: 24 * time.Hour, Clock: clk.Now, Rand: r})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Health(); err == nil || errors.Is(err, ErrNoValidCA) {
		t.Fatalf("Health() = %v, want a rotation failure with a CA that still signs", err)
	}
	r.broken.Store(false)
	mint(t, a, "spiffe://example.org/w")
}

// TestRunSignalsBundleChanges drives Run across a half-life: one signal,
// the same change reported once to a Rotate caller, and Run ends with ctx.
func TestRunSignalsBundleChanges(t *testing.T) {
	clk := newClock()
	t0 := clk.Now()
	a, err := Open(Options{TrustDomain: td, Dir: t.TempDir(), TTL: 24 * time.Hour, Clock: clk.Now, RotateInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.BundleChanged():
		t.Fatal("BundleChanged signalled for the bundles Open published")
	default:
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	clk.Set(t0.Add(12 * time.Hour))
	select {
	case <-a.BundleChanged():
	case <-time.After(10 * time.Second):
		t.Fatal("no BundleChanged signal at half-life")
	}
	if n := len(a.X509Bundle().X509Authorities()); n != 2 {
		t.Fatalf("bundle holds %d roots after the signal, want 2", n)
	}
	// identity still calls Rotate on its own ticker: it must hear of the
	// change Run made, once.
	for i, want := range []bool{true, false} {
		if changed, err := a.Rotate(); err != nil || changed != want {
			t.Fatalf("Rotate() #%d = %v, %v; want %v", i+1, changed, err, want)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil when ctx ends", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop when ctx ended")
	}
	select {
	case <-a.BundleChanged():
		t.Fatal("a second signal without a second change")
	default:
	}
}

// TestRunRotateAndMintTogether runs every entry point at once across three
// CA lifetimes, for the race detector. The test's own rotation at each
// step keeps the timeline deterministic whatever Run and the Rotate loop
// manage in between.
func TestRunRotateAndMintTogether(t *testing.T) {
	clk := newClock()
	t0 := clk.Now()
	a, err := Open(Options{TrustDomain: td, Dir: t.TempDir(), TTL: 24 * time.Hour, Clock: clk.Now, RotateInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { a.Run(ctx) })
	wg.Go(func() {
		for ctx.Err() == nil {
			a.Rotate()
		}
	})
	for h := range 72 {
		clk.Set(t0.Add(time.Duration(h) * time.Hour))
		if err := a.rotate(ctx); err != nil {
			t.Fatalf("at %dh: %v", h, err)
		}
		if _, err := a.MintX509SVID(SVIDRequest{ID: spiffeid.RequireFromString("spiffe://example.org/w"), TTL: time.Hour}); err != nil {
			t.Fatalf("at %dh: %v", h, err)
		}
		if err := a.Health(); err != nil {
			t.Fatalf("at %dh: Health() = %v", h, err)
		}
	}
	cancel()
	wg.Wait()
	// Generations start every 12h and live 24h: at 71h, those of 48h and 60h.
	if n := len(a.X509Bundle().X509Authorities()); n != 2 {
		t.Fatalf("bundle holds %d roots at 71h, want 2", n)
	}
}

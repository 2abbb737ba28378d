package identity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshid/meshid/attestor"
)

// entriesYAML renders entries given as "ID=uid[,ttl]".
func entriesYAML(specs ...string) string {
	var b strings.Builder
	b.WriteString("entries:\n")
	for _, s := range specs {
		id, rest, _ := strings.Cut(s, "=")
		uid, ttl, _ := strings.Cut(rest, ",")
		fmt.Fprintf(&b, "  - spiffe_id: spiffe://example.org/%s\n    selectors: [\"unix:uid:%s\"]\n", id, uid)
		if ttl != "" {
			fmt.Fprintf(&b, "    x509_ttl: %s\n", ttl)
		}
	}
	return b.String()
}

func mustEntries(t *testing.T, specs ...string) []Entry {
	t.Helper()
	e, err := ParseEntries("entries.yaml", []byte(entriesYAML(specs...)), td)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func changed(sub *Subscription) bool {
	select {
	case <-sub.Changed():
		return true
	default:
		return false
	}
}

func ids(t *testing.T, sub *Subscription) []string {
	t.Helper()
	x, err := sub.Current()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range x.SVIDs {
		out = append(out, strings.TrimPrefix(s.ID.String(), "spiffe://example.org/"))
	}
	return out
}

// TestSetEntriesReachesExistingSubscriptions is the contract SDS relies
// on: new entries are matched against every open subscription, and only
// the ones whose SVIDs change are told.
func TestSetEntriesReachesExistingSubscriptions(t *testing.T) {
	tests := []struct {
		name        string
		next        []string
		wantNotify  map[uint32]bool
		wantCurrent map[uint32][]string
	}{
		{"an entry for the unregistered caller", []string{"backend=1101", "frontend=1102,10m", "rogue=1103"},
			map[uint32]bool{1101: false, 1102: false, 1103: true},
			map[uint32][]string{1101: {"backend"}, 1102: {"frontend"}, 1103: {"rogue"}}},
		{"an entry removed", []string{"backend=1101"},
			map[uint32]bool{1101: false, 1102: true, 1103: false},
			map[uint32][]string{1101: {"backend"}, 1102: nil, 1103: nil}},
		{"an entry's TTL changed", []string{"backend=1101,20m", "frontend=1102,10m"},
			map[uint32]bool{1101: true, 1102: false, 1103: false},
			map[uint32][]string{1101: {"backend"}, 1102: {"frontend"}}},
		{"a second identity", []string{"backend=1101", "frontend=1102,10m", "backend-admin=1101"},
			map[uint32]bool{1101: true, 1102: false, 1103: false},
			map[uint32][]string{1101: {"backend", "backend-admin"}, 1102: {"frontend"}}},
		{"the same file again", []string{"backend=1101", "frontend=1102,10m"},
			map[uint32]bool{1101: false, 1102: false, 1103: false},
			map[uint32][]string{1101: {"backend"}, 1102: {"frontend"}, 1103: nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t, &clock{now: time.Now()}, nil)
			subs := map[uint32]*Subscription{}
			for _, uid := range []uint32{1101, 1102, 1103} {
				sub, err := m.Watch(context.Background(), caller(uid))
				if err != nil {
					t.Fatal(err)
				}
				defer sub.Close()
				ids(t, sub)
				subs[uid] = sub
			}
			m.SetEntries(mustEntries(t, tt.next...))
			for uid, sub := range subs {
				if got := changed(sub); got != tt.wantNotify[uid] {
					t.Errorf("uid %d notified = %v, want %v", uid, got, tt.wantNotify[uid])
				}
				if got := ids(t, sub); !slicesEqual(got, tt.wantCurrent[uid]) {
					t.Errorf("uid %d holds %v, want %v", uid, got, tt.wantCurrent[uid])
				}
			}
			// A caller that subscribes now sees the new set too.
			late, _ := m.Watch(context.Background(), caller(1101))
			defer late.Close()
			if got := ids(t, late); !slicesEqual(got, tt.wantCurrent[1101]) {
				t.Errorf("a new caller of uid 1101 holds %v, want %v", got, tt.wantCurrent[1101])
			}
		})
	}
}

func slicesEqual(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

func TestSetEntriesStopsRenewingRemovedSVIDs(t *testing.T) {
	m := newManager(t, &clock{now: time.Now()}, nil)
	sub, _ := m.Watch(context.Background(), caller(1102))
	defer sub.Close()
	ids(t, sub)
	m.SetEntries(mustEntries(t, "backend=1101"))
	m.mu.Lock()
	n := len(m.svids)
	m.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d SVIDs still cached after their entry went away", n)
	}
}

// TestSetEntriesIsSafeWithConcurrentCallers runs under -race: reloads
// while callers subscribe, read and leave.
func TestSetEntriesIsSafeWithConcurrentCallers(t *testing.T) {
	m := newManager(t, &clock{now: time.Now()}, nil)
	a, b := mustEntries(t, "backend=1101"), mustEntries(t, "backend=1101", "frontend=1102")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				sub, err := m.Watch(context.Background(), caller(1101+uint32(i%2)))
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := sub.Current(); err != nil {
					t.Error(err)
				}
				sub.JWTSVIDs([]string{"x"})
				sub.Close()
			}
		})
	}
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			if i%2 == 0 {
				m.SetEntries(a)
			} else {
				m.SetEntries(b)
			}
			m.renewDue()
		}
	})
	wg.Wait()
}

type fileManager struct {
	*Manager
	path string
	reg  *prometheus.Registry
	logs *bytes.Buffer
	mu   *sync.Mutex
}

func (f fileManager) Logs() string { f.mu.Lock(); defer f.mu.Unlock(); return f.logs.String() }

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func newFileManager(t *testing.T, initial string) fileManager {
	t.Helper()
	path := filepath.Join(t.TempDir(), "entries.yaml")
	writeFile(t, path, initial)
	entries, err := LoadEntries(path, td)
	if err != nil {
		t.Fatal(err)
	}
	f := fileManager{path: path, reg: prometheus.NewRegistry(), logs: &bytes.Buffer{}, mu: &sync.Mutex{}}
	m := newManager(t, &clock{now: time.Now()}, slog.New(slog.NewTextHandler(lockedWriter{f.mu, f.logs}, nil)))
	f.Manager = NewManager(Options{Entries: entries, DefaultTTL: time.Hour, DefaultJWTTTL: 5 * time.Minute,
		Minter: m.minter, Attestor: uidAttestor{}, Log: m.log, EntriesFile: path, TrustDomain: td,
		ReloadInterval: time.Hour, Metrics: f.reg})
	return f
}

// writeFile replaces path the way careful tools do: write aside, rename.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

func TestReloadKeepsTheLastGoodEntries(t *testing.T) {
	f := newFileManager(t, entriesYAML("backend=1101"))
	sub, _ := f.Watch(context.Background(), caller(1101))
	defer sub.Close()
	ids(t, sub)

	writeFile(t, f.path, entriesYAML("backend=1101")+"  - spiffe_id: spiffe://evil.org/x\n    selectors: [\"unix:uid:1\"]\n")
	err := f.ReloadEntries()
	if err == nil || !strings.Contains(err.Error(), f.path+":4: spiffe_id \"spiffe://evil.org/x\" is outside the trust domain") {
		t.Fatalf("ReloadEntries = %v, want the file:line of the bad entry", err)
	}
	if !strings.Contains(f.Logs(), "entries file rejected") || !strings.Contains(f.Logs(), "entries.yaml:4") {
		t.Errorf("the rejection is not logged with file:line:\n%s", f.Logs())
	}
	if n := value(f.metrics.reloadErrors); n != 1 {
		t.Errorf("meshid_entries_reload_errors_total = %v, want 1", n)
	}
	if changed(sub) || !slicesEqual(ids(t, sub), []string{"backend"}) || len(f.Entries()) != 1 {
		t.Fatalf("a rejected file changed what is served")
	}

	// Garbage, an empty selector list, a missing file: all keep the last good set.
	for _, bad := range []string{"entries: [", "entries:\n  - spiffe_id: spiffe://example.org/a\n    selectors: []\n", ""} {
		if bad == "" {
			os.Remove(f.path)
			f.ReloadEntries()
		} else {
			writeFile(t, f.path, bad)
			if err := f.ReloadEntries(); err == nil {
				t.Errorf("accepted %q", bad)
			}
		}
		if len(f.Entries()) != 1 || !slicesEqual(ids(t, sub), []string{"backend"}) {
			t.Fatalf("after %q: entries %v", bad, f.Entries())
		}
	}

	writeFile(t, f.path, entriesYAML("backend=1101", "frontend=1102"))
	if err := f.ReloadEntries(); err != nil {
		t.Fatal(err)
	}
	if got := value(f.metrics.entries); got != 2 {
		t.Errorf("meshid_entries = %v, want 2", got)
	}
}

func TestWatchEntriesFollowsTheFile(t *testing.T) {
	f := newFileManager(t, entriesYAML("backend=1101"))
	rogue, _ := f.Watch(context.Background(), caller(1103))
	defer rogue.Close()
	hup := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.WatchEntries(ctx, hup) }()
	defer func() {
		cancel()
		<-done
	}()

	waitChanged := func(what string) {
		t.Helper()
		select {
		case <-rogue.Changed():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the subscription was not told", what)
		}
	}
	writeFile(t, f.path, entriesYAML("backend=1101", "rogue=1103"))
	waitChanged("an entry added")
	if got := ids(t, rogue); !slicesEqual(got, []string{"rogue"}) {
		t.Fatalf("after the entry was added the caller holds %v", got)
	}

	// An invalid file is rejected once, however often it is looked at.
	writeFile(t, f.path, "entries:\n  - spiffe_id: spiffe://example.org/rogue\n    selectors: [\"unix:uid\"]\n")
	deadline := time.Now().Add(10 * time.Second)
	for value(f.metrics.reloadErrors) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the invalid file was not noticed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.reloadEntries(false)
	if n := value(f.metrics.reloadErrors); n != 1 {
		t.Errorf("an unchanged invalid file counted %v times", n)
	}
	if !slicesEqual(ids(t, rogue), []string{"rogue"}) {
		t.Fatal("the invalid file took the identity away")
	}

	// SIGHUP re-reads even an unchanged file.
	hup <- os.Interrupt
	deadline = time.Now().Add(10 * time.Second)
	for value(f.metrics.reloadErrors) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not reload")
		}
		time.Sleep(10 * time.Millisecond)
	}

	writeFile(t, f.path, entriesYAML("backend=1101"))
	waitChanged("the entry removed")
	if got := ids(t, rogue); len(got) != 0 {
		t.Fatalf("after its entry was removed the caller still holds %v", got)
	}
}

// failingAttestor fails like the real one does when the caller died.
type failingAttestor struct{}

func (failingAttestor) Attest(context.Context, attestor.Caller) ([]attestor.Selector, error) {
	return nil, &attestor.Error{Reason: attestor.ReasonExited, Err: errors.New("pid 100 exited before it could be attested")}
}

func TestAttestationFailuresAreCountedByReason(t *testing.T) {
	f := newFileManager(t, entriesYAML("backend=1101"))
	f.attestor = failingAttestor{}
	if _, err := f.Watch(context.Background(), caller(1101)); err == nil {
		t.Fatal("Watch succeeded for a caller that could not be attested")
	}
	if n := value(f.metrics.attestFailures.WithLabelValues(attestor.ReasonExited)); n != 1 {
		t.Errorf("meshid_attestation_failures_total{reason=process_exited} = %v, want 1", n)
	}
	if !strings.Contains(f.Logs(), "reason=process_exited") {
		t.Errorf("failure not logged with its reason:\n%s", f.Logs())
	}
}

// value reads a counter or gauge.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func TestExplain(t *testing.T) {
	f := newFileManager(t, "entries:\n  - spiffe_id: spiffe://example.org/backend\n    selectors: [\"unix:uid:1101\"]\n"+
		"  - spiffe_id: spiffe://example.org/admin\n    selectors: [\"unix:uid:1101\", \"unix:uid:0\"]\n")
	x, err := f.Explain(context.Background(), attestor.Caller{PID: 100, UID: 1101, GID: 1101})
	if err != nil {
		t.Fatal(err)
	}
	if !slicesEqual(x.Selectors, []string{"unix:uid:1101"}) || len(x.Entries) != 2 {
		t.Fatalf("explanation %+v", x)
	}
	if e := x.Entries[0]; !e.Matched || len(e.Missing) != 0 || e.Source != f.path+":2" {
		t.Errorf("backend entry: %+v", e)
	}
	if e := x.Entries[1]; e.Matched || !slicesEqual(e.Missing, []string{"unix:uid:0"}) || e.Source != f.path+":4" {
		t.Errorf("admin entry: %+v", e)
	}
	f.attestor = failingAttestor{}
	if _, err := f.Explain(context.Background(), attestor.Caller{PID: 100}); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("Explain of a dead process = %v", err)
	}
}

// TestWatchEntriesFollowsAConfigMapSwap updates the file the way the
// kubelet updates a mounted ConfigMap: entries.yaml is a symlink through
// ..data, and ..data is swapped atomically to a new directory.
func TestWatchEntriesFollowsAConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	version := func(name, content string) {
		os.Mkdir(filepath.Join(dir, name), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name, "entries.yaml"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		os.Symlink(name, filepath.Join(dir, "..data_tmp"))
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..v1", entriesYAML("backend=1101"))
	path := filepath.Join(dir, "entries.yaml")
	if err := os.Symlink("..data/entries.yaml", path); err != nil {
		t.Fatal(err)
	}
	entries, err := LoadEntries(path, td)
	if err != nil {
		t.Fatal(err)
	}
	base := newManager(t, &clock{now: time.Now()}, nil)
	m := NewManager(Options{Entries: entries, DefaultTTL: time.Hour, DefaultJWTTTL: time.Minute, Minter: base.minter,
		Attestor: uidAttestor{}, EntriesFile: path, TrustDomain: td, ReloadInterval: time.Hour})
	sub, _ := m.Watch(context.Background(), caller(1103))
	defer sub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.WatchEntries(ctx, nil) }()
	defer func() {
		cancel()
		<-done
	}()
	// Let it take its first look, so that only the watch can see the swap.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		m.reload.mu.Lock()
		looked := m.reload.seen != ""
		m.reload.mu.Unlock()
		if looked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("WatchEntries never looked at the file")
		}
	}
	version("..v2", entriesYAML("backend=1101", "rogue=1103"))
	select {
	case <-sub.Changed():
	case <-time.After(10 * time.Second):
		t.Fatal("the ConfigMap-style swap was not noticed")
	}
	if got := ids(t, sub); !slicesEqual(got, []string{"rogue"}) {
		t.Fatalf("after the swap the caller holds %v", got)
	}
}

package identity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/ca"
)

// gatedMinter holds every mint for one SPIFFE ID, X.509 or JWT, until
// release is closed, and says on entered when one starts.
type gatedMinter struct {
	Minter
	id      string
	entered chan struct{}
	release chan struct{}
	opened  sync.Once
	mints   atomic.Int32 // X.509 mints for id
}

// gate makes m's minter hold id's mints from now on. The gate opens at the
// end of the test at the latest, so no goroutine outlives it.
func gate(t *testing.T, m *Manager, id string) *gatedMinter {
	t.Helper()
	g := &gatedMinter{Minter: m.minter, id: id, entered: make(chan struct{}, 16), release: make(chan struct{})}
	m.minter = g
	t.Cleanup(g.open)
	return g
}

func (g *gatedMinter) open() { g.opened.Do(func() { close(g.release) }) }

func (g *gatedMinter) hold(id string) {
	if id == g.id {
		g.entered <- struct{}{}
		<-g.release
	}
}

func (g *gatedMinter) MintX509SVID(req ca.SVIDRequest) (*x509svid.SVID, error) {
	if req.ID.String() == g.id {
		g.mints.Add(1)
	}
	g.hold(req.ID.String())
	return g.Minter.MintX509SVID(req)
}

func (g *gatedMinter) MintJWTSVID(req ca.JWTRequest) (*ca.JWTSVID, error) {
	g.hold(req.ID.String())
	return g.Minter.MintJWTSVID(req)
}

// within fails the test unless f returns within a few seconds. f runs on
// another goroutine, so it reports with t.Error, never t.Fatal.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Errorf("%s is held up by a mint of another identity", what)
	}
}

func watch(t *testing.T, m *Manager, uid uint32) *Subscription {
	t.Helper()
	sub, err := m.Watch(context.Background(), caller(uid))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	return sub
}

func mustCurrent(t *testing.T, sub *Subscription) *x509svid.SVID {
	t.Helper()
	svid, err := currentSVID(sub)
	if err != nil {
		t.Fatal(err)
	}
	return svid
}

// currentSVID is the one SVID of a caller of one entry.
func currentSVID(sub *Subscription) (*x509svid.SVID, error) {
	x, err := sub.Current()
	if err != nil {
		return nil, err
	}
	if len(x.SVIDs) != 1 {
		return nil, fmt.Errorf("%d SVIDs, want 1", len(x.SVIDs))
	}
	return x.SVIDs[0], nil
}

// served sends sub's SVID to got, nil if there is none.
func served(sub *Subscription, got chan<- *x509svid.SVID) {
	svid, _ := currentSVID(sub)
	got <- svid
}

// watchAndRead subscribes a caller and reads its identities, reporting
// with t.Error.
func watchAndRead(t *testing.T, m *Manager, uid uint32) {
	sub, err := m.Watch(context.Background(), caller(uid))
	if err != nil {
		t.Error(err)
		return
	}
	defer sub.Close()
	if _, err := sub.Current(); err != nil {
		t.Error(err)
	}
}

// A mint that hangs (a slow upstream, a stuck HSM) holds up the callers of
// its identity and no one else; and the callers of that identity share it
// rather than each minting their own.
func TestSlowMintHoldsUpOnlyItsOwnIdentity(t *testing.T) {
	m := newManager(t, &clock{now: time.Now()}, nil)
	g := gate(t, m, "spiffe://example.org/frontend")
	front1, front2, back := watch(t, m, 1102), watch(t, m, 1102), watch(t, m, 1101)

	got := make(chan *x509svid.SVID, 2)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer g.open()
	wg.Go(func() { served(front1, got) })
	<-g.entered
	wg.Go(func() { served(front2, got) })

	within(t, "Current of another identity", func() {
		if svid, err := currentSVID(back); err != nil || svid.ID.String() != "spiffe://example.org/backend" {
			t.Errorf("backend got %v, %v", svid, err)
		}
	})
	within(t, "JWTSVIDs of another identity", func() {
		if _, err := back.JWTSVIDs([]string{"api"}); err != nil {
			t.Error(err)
		}
	})
	within(t, "SetEntries", func() { m.SetEntries(m.Entries()) })
	within(t, "Watch", func() { watchAndRead(t, m, 1101) })
	within(t, "renewDue", m.renewDue)
	select {
	case <-g.entered:
		t.Fatal("a second mint of frontend started while the first was under way")
	case svid := <-got:
		t.Fatalf("frontend was served %v while its mint was held", svid)
	case <-time.After(100 * time.Millisecond):
	}

	g.open()
	a, b := <-got, <-got
	if a == nil || a != b {
		t.Errorf("two callers of frontend got %p and %p, want the one SVID", a, b)
	}
	if n := g.mints.Load(); n != 1 {
		t.Errorf("frontend minted %d times, want once", n)
	}
}

func TestSlowJWTMintHoldsUpOnlyItsOwnIdentity(t *testing.T) {
	m := newManager(t, &clock{now: time.Now()}, nil)
	front, back := watch(t, m, 1102), watch(t, m, 1101)
	g := gate(t, m, "spiffe://example.org/frontend")

	got := make(chan string, 2)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer g.open()
	jwt := func() {
		svids, err := front.JWTSVIDs([]string{"api"})
		if err != nil {
			t.Error(err)
			got <- ""
			return
		}
		got <- svids[0].Token
	}
	wg.Go(jwt)
	<-g.entered
	wg.Go(jwt)

	within(t, "JWTSVIDs of another identity", func() {
		if _, err := back.JWTSVIDs([]string{"api"}); err != nil {
			t.Error(err)
		}
	})
	within(t, "SetEntries", func() { m.SetEntries(m.Entries()) })
	select {
	case <-g.entered:
		t.Fatal("a second JWT mint for the same audience started while the first was under way")
	case <-time.After(100 * time.Millisecond):
	}
	g.open()
	if a, b := <-got, <-got; a == "" || a != b {
		t.Errorf("two askers of one audience got different tokens")
	}
}

// Run's renewals hold m.mu no more than a caller's first mint does.
func TestSlowRenewalHoldsUpNoOneElse(t *testing.T) {
	clk := &clock{now: time.Now().Truncate(time.Second)}
	m := newManager(t, clk, nil)
	front, back := watch(t, m, 1102), watch(t, m, 1101)
	old := mustCurrent(t, front)
	mustCurrent(t, back)
	g := gate(t, m, "spiffe://example.org/frontend")

	clk.Add(6 * time.Minute) // frontend (10m) is due, backend (1h) is not
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		m.renewDue()
	}()
	defer func() { <-renewed }()
	defer g.open()
	<-g.entered
	within(t, "Current of another identity", func() {
		if _, err := currentSVID(back); err != nil {
			t.Error(err)
		}
	})
	within(t, "SetEntries", func() { m.SetEntries(m.Entries()) })
	within(t, "Watch", func() { watchAndRead(t, m, 1101) })

	g.open()
	<-renewed
	select {
	case <-front.Changed():
	default:
		t.Fatal("frontend was not told of its renewal")
	}
	if svid := mustCurrent(t, front); svid == old {
		t.Fatal("the renewal was not kept")
	}
}

// An SVID minted for an entry that went away meanwhile goes to whoever
// asked, but stays out of the cache: nothing renews it for nobody.
func TestMintForARemovedEntryIsNotCached(t *testing.T) {
	m := newManager(t, &clock{now: time.Now()}, nil)
	front := watch(t, m, 1102)
	g := gate(t, m, "spiffe://example.org/frontend")
	got := make(chan *x509svid.SVID, 1)
	go served(front, got)
	defer g.open()
	<-g.entered
	m.SetEntries(mustEntries(t, "backend=1101"))
	g.open()
	if svid := <-got; svid == nil || svid.ID.String() != "spiffe://example.org/frontend" {
		t.Fatalf("the caller that asked got %v", svid)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.svids {
		t.Errorf("cached %+v, though no entry asks for it", k)
	}
}

// When a caller renews an SVID because Run was late, the other callers of
// the same entry hold the old one, and must hear of the new one.
func TestRenewalOnDemandReachesEveryHolder(t *testing.T) {
	clk := &clock{now: time.Now().Truncate(time.Second)}
	m := newManager(t, clk, nil)
	a, b := watch(t, m, 1102), watch(t, m, 1102)
	old := mustCurrent(t, a)
	mustCurrent(t, b)
	clk.Add(6 * time.Minute)
	if mustCurrent(t, a) == old {
		t.Fatal("not renewed on demand")
	}
	select {
	case <-b.Changed():
	default:
		t.Fatal("the other holder of the renewed SVID was not told")
	}
}

// failingMinter fails X.509 mints while failing is set.
type failingMinter struct {
	Minter
	failing atomic.Bool
}

func (f *failingMinter) MintX509SVID(req ca.SVIDRequest) (*x509svid.SVID, error) {
	if f.failing.Load() {
		return nil, errors.New("upstream CA unreachable")
	}
	return f.Minter.MintX509SVID(req)
}

func failing(m *Manager) *failingMinter {
	f := &failingMinter{Minter: m.minter}
	m.minter = f
	return f
}

func TestFailedRenewalServesTheValidSVIDNeverAnExpiredOne(t *testing.T) {
	var logs bytes.Buffer
	clk := &clock{now: time.Now().Truncate(time.Second)}
	m := newManager(t, clk, slog.New(slog.NewTextHandler(&logs, nil)))
	front := watch(t, m, 1102) // x509_ttl: 10m
	first := mustCurrent(t, front)
	f := failing(m)
	f.failing.Store(true)

	clk.Add(6 * time.Minute)
	m.renewDue()
	if svid := mustCurrent(t, front); svid != first {
		t.Fatal("a failed renewal replaced the SVID")
	}
	if !strings.Contains(logs.String(), "renew X509-SVID: serving the current one until it expires") {
		t.Errorf("the failed renewal is not logged:\n%s", logs.String())
	}

	clk.Add(4 * time.Minute) // now at its NotAfter
	if x, err := front.Current(); err == nil {
		t.Fatalf("served %v past its expiry", x.SVIDs)
	}

	f.failing.Store(false)
	if svid := mustCurrent(t, front); svid == first || !clk.Now().Before(svid.Certificates[0].NotAfter) {
		t.Fatal("no fresh SVID once the CA is back")
	}
}

package identity

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/meshid/meshid/attestor"
	"github.com/meshid/meshid/ca"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// uidAttestor attests a caller by uid only, like the unix attestor would.
type uidAttestor struct{}

func (uidAttestor) Attest(_ context.Context, c attestor.Caller) ([]attestor.Selector, error) {
	return []attestor.Selector{{Type: "unix", Value: "uid:" + strconv.FormatUint(uint64(c.UID), 10)}}, nil
}

// caller is a process of uid as the kernel would describe it.
func caller(uid uint32) attestor.Caller { return attestor.Caller{PID: 100, UID: uid, GID: uid} }

func newManager(t *testing.T, clk *clock, log *slog.Logger) *Manager {
	t.Helper()
	return newManagerWithJitter(t, clk, log, func() float64 { return 0 })
}

func newManagerWithJitter(t *testing.T, clk *clock, log *slog.Logger, jitter func() float64) *Manager {
	t.Helper()
	authority, err := ca.Open(ca.Options{TrustDomain: td, Dir: t.TempDir(), TTL: 24 * time.Hour, Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := ParseEntries("entries.yaml", []byte(`entries:
  - spiffe_id: spiffe://example.org/backend
    selectors: ["unix:uid:1101"]
  - spiffe_id: spiffe://example.org/frontend
    selectors: ["unix:uid:1102"]
    x509_ttl: 10m
    jwt_ttl: 2m
`), td)
	if err != nil {
		t.Fatal(err)
	}
	return NewManager(Options{Entries: entries, DefaultTTL: time.Hour, DefaultJWTTTL: 5 * time.Minute,
		Minter: authority, Attestor: uidAttestor{}, Clock: clk.Now, Jitter: jitter, Log: log})
}

func TestWatchIssuesTheMatchingIdentity(t *testing.T) {
	clk := &clock{now: time.Now().Truncate(time.Second)}
	m := newManager(t, clk, nil)

	sub, err := m.Watch(context.Background(), caller(1102))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	x, err := sub.Current()
	if err != nil {
		t.Fatal(err)
	}
	if len(x.SVIDs) != 1 || x.SVIDs[0].ID.String() != "spiffe://example.org/frontend" {
		t.Fatalf("SVIDs = %v", x.SVIDs)
	}
	leaf := x.SVIDs[0].Certificates[0]
	if got := leaf.NotAfter.Sub(clk.Now()); got != 10*time.Minute {
		t.Errorf("per-entry x509_ttl not applied: lifetime %s", got)
	}
	if _, _, err := x509svid.Verify(x.SVIDs[0].Certificates, x.Bundles, x509svid.WithTime(clk.Now())); err != nil {
		t.Fatalf("SVID does not verify against the bundle handed out with it: %v", err)
	}
}

func TestWatchUnknownCallerGetsNothingAndIsLogged(t *testing.T) {
	var logs bytes.Buffer
	m := newManager(t, &clock{now: time.Now()}, slog.New(slog.NewTextHandler(&logs, nil)))
	sub, err := m.Watch(context.Background(), caller(4242))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	x, err := sub.Current()
	if err != nil || len(x.SVIDs) != 0 {
		t.Fatalf("unknown caller got %v, %v", x, err)
	}
	if !strings.Contains(logs.String(), "no entry matches caller") || !strings.Contains(logs.String(), "unix:uid:4242") {
		t.Errorf("log does not say which selectors the caller presented:\n%s", logs.String())
	}
}

func TestCallersOfOneEntryShareAnSVID(t *testing.T) {
	m := newManager(t, &clock{now: time.Now()}, nil)
	a, _ := m.Watch(context.Background(), caller(1101))
	b, _ := m.Watch(context.Background(), caller(1101))
	defer a.Close()
	defer b.Close()
	xa, _ := a.Current()
	xb, _ := b.Current()
	if xa.SVIDs[0] != xb.SVIDs[0] {
		t.Error("two callers of the same entry got different SVIDs")
	}
}

func TestRenewalAtHalfLifeNotifiesSubscribers(t *testing.T) {
	clk := &clock{now: time.Now().Truncate(time.Second)}
	m := newManager(t, clk, nil)
	front, _ := m.Watch(context.Background(), caller(1102))
	back, _ := m.Watch(context.Background(), caller(1101))
	defer front.Close()
	defer back.Close()
	x1, _ := front.Current()
	back.Current()
	first := x1.SVIDs[0].Certificates[0].SerialNumber

	clk.Add(4 * time.Minute) // before half of 10m
	m.renewDue()
	select {
	case <-front.Changed():
		t.Fatal("renewed before half-life")
	default:
	}

	clk.Add(2 * time.Minute) // past half of 10m, well before half of 1h
	m.renewDue()
	select {
	case <-front.Changed():
	default:
		t.Fatal("subscriber not told about the renewal")
	}
	select {
	case <-back.Changed():
		t.Fatal("a subscriber whose SVID did not change was notified")
	default:
	}
	x2, _ := front.Current()
	if x2.SVIDs[0].Certificates[0].SerialNumber.Cmp(first) == 0 {
		t.Fatal("Current still returns the old SVID after renewal")
	}
}

func TestCurrentRenewsWhenTheTickerWasLate(t *testing.T) {
	clk := &clock{now: time.Now()}
	m := newManager(t, clk, nil)
	sub, _ := m.Watch(context.Background(), caller(1102))
	defer sub.Close()
	x1, _ := sub.Current()
	clk.Add(time.Hour) // the machine slept through renewal and expiry
	x2, err := sub.Current()
	if err != nil {
		t.Fatal(err)
	}
	if leaf := x2.SVIDs[0].Certificates[0]; !clk.Now().Before(leaf.NotAfter) || leaf.SerialNumber.Cmp(x1.SVIDs[0].Certificates[0].SerialNumber) == 0 {
		t.Fatalf("served an expired SVID (NotAfter %v, now %v)", leaf.NotAfter, clk.Now())
	}
}

func TestCloseUnsubscribes(t *testing.T) {
	m := newManager(t, &clock{now: time.Now()}, nil)
	sub, _ := m.Watch(context.Background(), caller(1101))
	sub.Close()
	m.mu.Lock()
	n := len(m.subs)
	m.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d subscriptions left after Close", n)
	}
}

func TestRenewalJitterStaysWithinTenPercent(t *testing.T) {
	for _, tc := range []struct {
		jitter      float64
		renewsAfter time.Duration // of a 10m SVID: half is 5m, 10% of that 30s
	}{{-1, 4*time.Minute + 30*time.Second}, {0, 5 * time.Minute}, {0.999, 5*time.Minute + 29*time.Second}} {
		clk := &clock{now: time.Now().Truncate(time.Second)}
		m := newManagerWithJitter(t, clk, nil, func() float64 { return tc.jitter })
		sub, _ := m.Watch(context.Background(), caller(1102))
		first, _ := sub.Current()
		clk.Add(tc.renewsAfter - time.Second)
		m.renewDue()
		if x, _ := sub.Current(); x.SVIDs[0] != first.SVIDs[0] {
			t.Errorf("jitter %v: renewed before %s", tc.jitter, tc.renewsAfter)
		}
		clk.Add(2 * time.Second)
		m.renewDue()
		if x, _ := sub.Current(); x.SVIDs[0] == first.SVIDs[0] {
			t.Errorf("jitter %v: not renewed by %s", tc.jitter, tc.renewsAfter+time.Second)
		}
		sub.Close()
	}
}

// runManager runs m until the test ends.
func runManager(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// TestCARotationReachesEverySubscriber: when the CA publishes its next
// root, Run must tell every watcher so that it pushes the new bundle.
func TestCARotationReachesEverySubscriber(t *testing.T) {
	clk := &clock{now: time.Now().Truncate(time.Second)}
	m := newManager(t, clk, nil)
	authority := m.minter.(*ca.Authority)
	clk.Add(12 * time.Hour) // the CA's half-life: its next root is due
	front, back := watch(t, m, 1102), watch(t, m, 1101)
	for _, sub := range []*Subscription{front, back} {
		x, _ := sub.Current()
		if n := len(x.Bundles.Bundles()[0].X509Authorities()); n != 1 {
			t.Fatalf("bundle starts with %d roots", n)
		}
	}
	// The clock stands still from here: no SVID comes due, so nothing but
	// the new root can tell them.
	runManager(t, m)
	if _, err := authority.Rotate(); err != nil {
		t.Fatal(err)
	}
	for name, sub := range map[string]*Subscription{"frontend": front, "backend": back} {
		select {
		case <-sub.Changed():
		case <-time.After(5 * time.Second):
			t.Fatalf("%s was not told about the new root", name)
		}
		x, err := sub.Current()
		if err != nil {
			t.Fatal(err)
		}
		if n := len(x.Bundles.Bundles()[0].X509Authorities()); n != 2 {
			t.Fatalf("%s sees %d roots after the CA prepared its successor, want 2", name, n)
		}
		if _, _, err := x509svid.Verify(x.SVIDs[0].Certificates, x.Bundles, x509svid.WithTime(clk.Now())); err != nil {
			t.Fatalf("%s SVID does not verify against its bundle: %v", name, err)
		}
	}
}

func TestJWTSVIDsAreCachedPerAudienceSetUntilHalfLife(t *testing.T) {
	clk := &clock{now: time.Now().Truncate(time.Second)}
	m := newManager(t, clk, nil)
	sub, _ := m.Watch(context.Background(), caller(1102)) // jwt_ttl: 2m
	defer sub.Close()

	first, err := sub.JWTSVIDs([]string{"api", "db"})
	if err != nil || len(first) != 1 {
		t.Fatalf("JWTSVIDs = %v, %v", first, err)
	}
	if got := first[0].Expiry.Sub(first[0].IssuedAt); got != 2*time.Minute {
		t.Errorf("per-entry jwt_ttl not applied: lifetime %s", got)
	}
	same, _ := sub.JWTSVIDs([]string{"db", "api", "db"})
	if same[0] != first[0] {
		t.Error("the same audience set in another order minted a new token")
	}
	other, _ := sub.JWTSVIDs([]string{"api"})
	if other[0] == first[0] {
		t.Error("another audience set got the cached token")
	}
	clk.Add(time.Minute) // half of 2m
	renewed, _ := sub.JWTSVIDs([]string{"api", "db"})
	if renewed[0] == first[0] {
		t.Error("a token past half its life was served from the cache")
	}

	if _, err := sub.JWTSVIDs(nil); err == nil {
		t.Error("a JWT-SVID without audience was issued")
	}
}

// A caller's JWT-SVIDs validate against the JWT bundles it is given, and
// only for their audience and with their signature intact.
func TestJWTSVIDsValidateAgainstJWTBundles(t *testing.T) {
	// go-spiffe validates against the real clock, so mint at real time.
	m := newManager(t, &clock{now: time.Now()}, nil)
	sub, _ := m.Watch(context.Background(), caller(1101))
	defer sub.Close()
	svids, err := sub.JWTSVIDs([]string{"api"})
	if err != nil {
		t.Fatal(err)
	}
	bundles := sub.JWTBundles()
	got, err := jwtsvid.ParseAndValidate(svids[0].Token, bundles, []string{"api"})
	if err != nil || got.ID.String() != "spiffe://example.org/backend" {
		t.Fatalf("ParseAndValidate = %v, %v", got, err)
	}
	if _, err := jwtsvid.ParseAndValidate(svids[0].Token, bundles, []string{"billing"}); err == nil {
		t.Error("validated a token for another audience")
	}
	if _, err := jwtsvid.ParseAndValidate(svids[0].Token+"x", bundles, []string{"api"}); err == nil {
		t.Error("validated a token with a broken signature")
	}
	if b := bundles.Bundles(); len(b) != 1 || len(b[0].JWTAuthorities()) != 1 {
		t.Errorf("JWT bundles = %v", b)
	}
}

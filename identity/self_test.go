package identity

import (
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var meshidID = spiffeid.RequireFromString("spiffe://example.org/meshid/authz")

// meshid's own SVID follows the rule of every SVID: renewed by Run at half
// its life, moved by the jitter.
func TestSelfSVIDIsRenewedByRunAtHalfLife(t *testing.T) {
	for _, tc := range []struct {
		jitter      float64
		renewsAfter time.Duration // of a 1h SVID: half is 30m, 10% of that 3m
	}{{-1, 27 * time.Minute}, {0, 30 * time.Minute}, {0.999, 32*time.Minute + 59*time.Second}} {
		clk := &clock{now: time.Now().Truncate(time.Second)}
		m := newManagerWithJitter(t, clk, nil, func() float64 { return tc.jitter })
		self := m.Self(meshidID, time.Hour)
		first, err := self.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		if first.ID != meshidID || first.Certificates[0].NotAfter.Sub(clk.Now()) != time.Hour {
			t.Fatalf("SVID for %s until %v, want %s for 1h", first.ID, first.Certificates[0].NotAfter, meshidID)
		}
		cached := func() *x509svid.SVID {
			m.mu.Lock()
			defer m.mu.Unlock()
			return m.svids[self.k].svid
		}
		clk.Add(tc.renewsAfter - time.Second)
		m.renewDue()
		if cached() != first {
			t.Errorf("jitter %v: renewed before %s", tc.jitter, tc.renewsAfter)
		}
		clk.Add(2 * time.Second)
		m.renewDue() // Run's round, not a handshake's ask
		renewed := cached()
		if renewed == first {
			t.Fatalf("jitter %v: Run did not renew it by %s", tc.jitter, tc.renewsAfter+time.Second)
		}
		if got, _ := self.GetX509SVID(); got != renewed {
			t.Errorf("jitter %v: GetX509SVID does not return what Run renewed", tc.jitter)
		}
	}
}

func TestSelfSVIDVerifiesAgainstItsBundle(t *testing.T) {
	clk := &clock{now: time.Now().Truncate(time.Second)}
	m := newManager(t, clk, nil)
	self := m.Self(meshidID, 0)
	if self.ID() != meshidID {
		t.Errorf("ID() = %s", self.ID())
	}
	svid, err := self.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if got := svid.Certificates[0].NotAfter.Sub(clk.Now()); got != time.Hour {
		t.Errorf("ttl 0: lifetime %s, want the default X509-SVID TTL 1h", got)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, self, x509svid.WithTime(clk.Now())); err != nil {
		t.Fatalf("meshid's SVID does not verify against its own bundle source: %v", err)
	}
	if _, err := self.GetX509BundleForTrustDomain(partner); err == nil {
		t.Error("a bundle for a trust domain that is not meshid's")
	}
}

// The entries say which workloads get what; meshid's own identity is not
// theirs to take away, and not theirs to share.
func TestSelfSVIDIsKeptAndKeptApartFromEntries(t *testing.T) {
	clk := &clock{now: time.Now().Truncate(time.Second)}
	m := newManager(t, clk, nil)
	// The same SPIFFE ID and TTL as the backend entry.
	self := m.Self(spiffeid.RequireFromString("spiffe://example.org/backend"), time.Hour)
	mine, err := self.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	theirs := mustCurrent(t, watch(t, m, 1101))
	if theirs == mine || theirs.PrivateKey == mine.PrivateKey {
		t.Fatal("a workload was handed meshid's own SVID and key")
	}

	m.SetEntries(nil)
	if got, _ := self.GetX509SVID(); got != mine {
		t.Fatal("dropping every entry dropped meshid's own SVID")
	}
	clk.Add(31 * time.Minute)
	m.renewDue()
	m.mu.Lock()
	renewed := m.svids[self.k].svid != mine
	m.mu.Unlock()
	if !renewed {
		t.Fatal("meshid's own SVID is no longer renewed once no entry is left")
	}
}

func TestSelfSVIDSurvivesAFailedRenewalUntilItExpires(t *testing.T) {
	clk := &clock{now: time.Now().Truncate(time.Second)}
	m := newManager(t, clk, nil)
	self := m.Self(meshidID, time.Hour)
	first, err := self.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	f := failing(m)
	f.failing.Store(true)
	clk.Add(45 * time.Minute)
	m.renewDue()
	if got, err := self.GetX509SVID(); err != nil || got != first {
		t.Fatalf("while the CA fails: %v, %v; want the SVID still valid", got, err)
	}
	clk.Add(15 * time.Minute)
	if got, err := self.GetX509SVID(); err == nil || !strings.Contains(err.Error(), "meshid's own SVID spiffe://example.org/meshid/authz: upstream CA unreachable") {
		t.Fatalf("past its expiry: %v, %v; want an error naming it", got, err)
	}
	f.failing.Store(false)
	if got, err := self.GetX509SVID(); err != nil || got == first {
		t.Fatalf("once the CA is back: %v, %v; want a new SVID", got, err)
	}
}

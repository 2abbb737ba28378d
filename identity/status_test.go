package identity

import (
	"context"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"

	"github.com/meshid/meshid/attestor"
)

func TestSVIDsDescribeTheCache(t *testing.T) {
	clk := &clock{now: time.Now().Truncate(time.Second)}
	m := newManager(t, clk, nil)
	if got := m.SVIDs(); len(got) != 0 {
		t.Fatalf("SVIDs before any caller = %v, want none (minted on demand)", got)
	}
	if got := m.earliestExpiry(); !math.IsInf(got, 1) {
		t.Fatalf("earliest expiry with no SVID = %v, want +Inf", got)
	}
	front := watch(t, m, 1102) // 10m
	back := watch(t, m, 1101)  // 1h
	fl, bl := mustCurrent(t, front).Certificates[0], mustCurrent(t, back).Certificates[0]

	got := m.SVIDs()
	if len(got) != 2 || got[0].SPIFFEID != "spiffe://example.org/backend" || got[1].SPIFFEID != "spiffe://example.org/frontend" {
		t.Fatalf("SVIDs = %+v, want backend then frontend", got)
	}
	if got[1].Serial != fl.SerialNumber.Text(16) || !got[1].NotAfter.Equal(fl.NotAfter) || got[0].Serial != bl.SerialNumber.Text(16) {
		t.Errorf("SVIDs = %+v; want the serials and expiry of the SVIDs served (%x, %x)", got, fl.SerialNumber, bl.SerialNumber)
	}
	if want := clk.Now().Add(5 * time.Minute); !got[1].RenewAt.Equal(want) {
		t.Errorf("frontend renews at %s, want %s (half of 10m, no jitter)", got[1].RenewAt, want)
	}
	if e := m.earliestExpiry(); e != float64(fl.NotAfter.Unix()) {
		t.Errorf("earliest expiry %v, want the frontend's %d", e, fl.NotAfter.Unix())
	}

	// A renewal moves both: the new serial, the later expiry.
	clk.Add(6 * time.Minute)
	m.renewDue()
	renewed := mustCurrent(t, front).Certificates[0]
	if renewed.SerialNumber.Cmp(fl.SerialNumber) == 0 {
		t.Fatal("not renewed past its renewal time")
	}
	got = m.SVIDs()
	if got[1].Serial != renewed.SerialNumber.Text(16) {
		t.Errorf("after renewal SVIDs say serial %s, want %x", got[1].Serial, renewed.SerialNumber)
	}
	if e := m.earliestExpiry(); e != float64(renewed.NotAfter.Unix()) {
		t.Errorf("earliest expiry after renewal %v, want %d", e, renewed.NotAfter.Unix())
	}
}

func TestSubscriptionStatusNamesCallerAndIdentities(t *testing.T) {
	m := newManager(t, &clock{now: time.Now()}, nil)
	sub, err := m.Watch(context.Background(), attestor.Caller{PID: 4321, UID: 1101, GID: 7})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	s := sub.Status()
	if s.PID != 4321 || s.UID != 1101 || s.GID != 7 {
		t.Errorf("status names pid %d uid %d gid %d, want 4321, 1101, 7", s.PID, s.UID, s.GID)
	}
	if !slices.Equal(s.Selectors, []string{"unix:uid:1101"}) || !slices.Equal(s.SPIFFEIDs, []string{"spiffe://example.org/backend"}) {
		t.Errorf("status = %+v", s)
	}
	// Entries change under a live subscription: its status follows.
	m.SetEntries(nil)
	if ids := sub.Status().SPIFFEIDs; len(ids) != 0 {
		t.Errorf("after the entries went, status still lists %v", ids)
	}
}

func TestMetricsExistFromTheStart(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewManager(Options{Attestor: uidAttestor{}, Metrics: reg})
	n, err := testutil.GatherAndCount(reg, "meshid_attestation_failures_total")
	if err != nil || n != len(attestor.Reasons()) {
		t.Errorf("meshid_attestation_failures_total has %d series (%v), want one per reason (%d) before any failure", n, err, len(attestor.Reasons()))
	}
	if n, err := testutil.GatherAndCount(reg, "meshid_svid_expiry_seconds"); err != nil || n != 1 {
		t.Errorf("meshid_svid_expiry_seconds: %d series (%v), want 1", n, err)
	}
}

// TestFederatedDescribesEachBundle: what Federated reports follows the
// bundle in force, and Since moves when a new one is put in force.
func TestFederatedDescribesEachBundle(t *testing.T) {
	m, _ := federatedManager(t, "entries: []\n")
	got := m.Federated()
	if len(got) != 1 || got[0].TrustDomain != "partner.example" || got[0].X509Roots != 1 || got[0].JWTKeys != 1 || got[0].Since.IsZero() || got[0].RootsExpire.IsZero() {
		t.Fatalf("Federated = %+v, want partner.example with one root and one JWT key", got)
	}
	first := got[0].Since
	time.Sleep(time.Millisecond) // Since is the manager's clock, time.Now here
	m.SetFederatedBundle(spiffebundle.FromX509Bundle(partnerCA(t).X509Bundle()))
	got = m.Federated()
	if len(got) != 1 || got[0].JWTKeys != 0 || !got[0].Since.After(first) {
		t.Errorf("after a refresh Federated = %+v, want no JWT keys and a later Since than %s", got, first)
	}
}

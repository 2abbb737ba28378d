package ca

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// TestGenerationsFollowTheTimeline walks one generation's life and checks
// the states Generations reports against the timeline of ca.go: prepared
// at half-life (next), signing from 5/6 (the old one retired), gone when
// it expires.
func TestGenerationsFollowTheTimeline(t *testing.T) {
	f := openFixture(t)
	states := func() []string {
		var s []string
		for _, g := range f.a.Generations() {
			s = append(s, g.State)
		}
		return s
	}
	check := func(want ...string) {
		t.Helper()
		if _, err := f.a.Rotate(); err != nil {
			t.Fatal(err)
		}
		got := states()
		if len(got) != len(want) {
			t.Fatalf("at %s: states %v, want %v", f.clk.Now().Sub(f.t0), got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("at %s: states %v, want %v", f.clk.Now().Sub(f.t0), got, want)
			}
		}
	}
	check(StateActive)
	first := f.a.Generations()[0]
	if first.Serial != f.a.Certificate().SerialNumber.Text(16) || first.JWTKeyID == "" || first.Name == "" {
		t.Fatalf("generation %+v does not describe the active CA %s", first, f.a.Certificate().SerialNumber.Text(16))
	}
	f.at(12 * time.Hour)
	check(StateActive, StateNext)
	gens := f.a.Generations()
	if want := first.NotBefore.Add(first.NotAfter.Sub(first.NotBefore) * 5 / 6); !gens[1].SignsFrom.Equal(want) {
		t.Errorf("next generation signs from %s, want %s (5/6 of the first's life)", gens[1].SignsFrom, want)
	}
	f.at(20 * time.Hour)
	check(StateRetired, StateActive)
	f.at(24 * time.Hour)
	check(StateActive, StateNext)
	if f.a.Generations()[0].Name == first.Name {
		t.Error("the expired first generation is still listed")
	}
}

func TestIssuedCountsByKind(t *testing.T) {
	f := openFixture(t)
	id := spiffeid.RequireFromString("spiffe://example.org/w")
	for range 2 {
		if _, err := f.a.MintX509SVID(SVIDRequest{ID: id, TTL: time.Hour}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.a.MintJWTSVID(JWTRequest{ID: id, Audience: []string{"a"}, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	// A refused mint is not an issue.
	if _, err := f.a.MintX509SVID(SVIDRequest{ID: spiffeid.RequireFromString("spiffe://other.org/w"), TTL: time.Hour}); err == nil {
		t.Fatal("minted for another trust domain")
	}
	if x, j := testutil.ToFloat64(f.a.metrics.issuedX509), testutil.ToFloat64(f.a.metrics.issuedJWT); x != 2 || j != 1 {
		t.Errorf("issued x509 %v, jwt %v; want 2 and 1", x, j)
	}
	if n, err := testutil.GatherAndCount(f.reg, "meshid_svid_issued_total"); err != nil || n != 2 {
		t.Errorf("meshid_svid_issued_total has %d series (%v), want x509 and jwt", n, err)
	}
}
